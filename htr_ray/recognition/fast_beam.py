"""Compiled CTC prefix beam search with a character n-gram LM (numba), the fast path of
:func:`htr_ray.recognition.decode.beam_search`.

It runs the same search as the Python implementation in ``decode.py`` step for step (same candidate
classes per frame, same pruning, same tie-breaks, the same order of the beams), over arrays instead of
dicts, and reads the LM from :class:`htr_ray.recognition.lm.CompiledLM` tables. So it returns the same
n-best list (``tests/test_decode.py`` compares the two on random and on hand-built outputs); scores
can differ in the last bits where a sum is taken in another order. A lexicon is not handled here:
beam search with a lexicon runs the Python path.

Two ways to run the same kernels, chosen at import (:data:`ENGINE`):

- ``aot``: compiled ahead of time into a small C extension, ``_beam_aot*.so`` beside this file, by
  ``python -m htr_ray.recognition.fast_beam`` (``scripts/setup`` and the image build run it; it needs
  a C compiler). A process that decodes then imports neither numba nor LLVM: about 110 MB less
  resident memory in every Serve replica and bulk actor, and nothing to compile on the first line.
  The extension records a hash of this file; after an edit it is ignored (stale) until rebuilt.
- ``jit``: numba compiles the kernels on first use (a few seconds) and caches the machine code beside
  this file (``__pycache__``). The fallback where the extension is missing or stale, or where
  ``HTR_BEAM_ENGINE=jit`` asks for it.

Without numba and without the extension, :data:`AVAILABLE` is False and ``decode.py`` uses its Python
search.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

AOT_MODULE = "_beam_aot"


def source_id() -> int:
    """A 62-bit hash of this file: the extension built from it carries the same number."""
    return int.from_bytes(hashlib.sha256(Path(__file__).read_bytes()).digest()[:8], "little") >> 2


def _load_aot():
    if os.environ.get("HTR_BEAM_ENGINE", "auto") == "jit":
        return None
    try:
        from htr_ray.recognition import _beam_aot as aot
    except ImportError:
        return None
    return aot if aot.source_id() == source_id() else None  # stale: built from another version of this file


_aot = _load_aot()
numba = None
if _aot is not None:
    ENGINE, AVAILABLE = "aot", True
else:
    try:  # pragma: no cover - exercised by whichever environment runs the suite
        import numba

        ENGINE, AVAILABLE = "jit", True
    except Exception:  # numba missing or broken: the Python decoder runs instead
        ENGINE, AVAILABLE = "python", False

NEG = -math.inf


def _njit(fn):
    return numba.njit(cache=True, nogil=True)(fn) if ENGINE == "jit" else fn


@_njit
def _lse(a, b):
    if a == -np.inf:
        return b
    if b == -np.inf:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


@_njit
def lm_logprob(s, sym, ent_start, ent_sym, ent_lp, backoff, log_gamma, log_uniform):
    acc = 0.0
    while True:
        lo = ent_start[s]
        hi = ent_start[s + 1]
        while lo < hi:  # binary search: entries are sorted by symbol
            mid = (lo + hi) // 2
            if ent_sym[mid] < sym:
                lo = mid + 1
            else:
                hi = mid
        if lo < ent_start[s + 1] and ent_sym[lo] == sym:
            return acc + ent_lp[lo]
        acc += log_gamma[s]
        if s == 0:
            return acc + log_uniform
        s = backoff[s]


@_njit
def lm_next(s, sym, backoff, edge_start, edge_sym, edge_to, depth, order):
    if order == 1:
        return 0
    if s != 0 and depth[s] >= order - 1:
        s = backoff[s]
    while True:
        lo = edge_start[s]
        hi = edge_start[s + 1]
        while lo < hi:
            mid = (lo + hi) // 2
            if edge_sym[mid] < sym:
                lo = mid + 1
            else:
                hi = mid
        if lo < edge_start[s + 1] and edge_sym[lo] == sym:
            return edge_to[lo]
        if s == 0:
            return 0
        s = backoff[s]


@_njit
def _grow_i(a, n):
    b = np.empty(n, a.dtype)
    b[: len(a)] = a
    return b


@_njit
def beam_kernel(lp, beam_width, top_k, log_min, prune, histogram_prune, log_skip, lm_w, bonus, use_lm,
                cls_sym, eos_sym, start_state, ent_start, ent_sym, ent_lp, backoff, log_gamma, log_uniform,
                edge_start, edge_sym, edge_to, depth, order):
    """Prefix beam search over (T, C) float32 log-probabilities. Returns (final prefix ids in beam order,
    their scores with the end-of-line LM term, parent and last-class arrays of the prefix tree)."""
    T, C = lp.shape
    cap = 1024
    parent = np.empty(cap, np.int64)
    last = np.empty(cap, np.int64)
    state = np.empty(cap, np.int64)
    extra = np.empty(cap, np.float64)
    first_child = np.empty(cap, np.int64)
    sibling = np.empty(cap, np.int64)
    slot = np.empty(cap, np.int64)
    stamp = np.full(cap, -1, np.int64)
    parent[0] = -1
    last[0] = 0
    state[0] = start_state
    extra[0] = 0.0
    first_child[0] = -1
    sibling[0] = -1
    n_pref = 1

    k = min(top_k, C - 1)
    maxn = beam_width * (k + 1) + beam_width + 1
    b_pid = np.empty(maxn, np.int64)
    b_pb = np.empty(maxn, np.float64)
    b_pnb = np.empty(maxn, np.float64)
    n_beams = 1
    b_pid[0] = 0
    b_pb[0] = 0.0
    b_pnb[0] = -np.inf
    x_pid = np.empty(maxn, np.int64)
    x_pb = np.empty(maxn, np.float64)
    x_pnb = np.empty(maxn, np.float64)
    totals = np.empty(maxn, np.float64)
    keys = np.empty(maxn, np.float64)
    taken = np.zeros(maxn, np.bool_)
    cand_c = np.empty(C, np.int64)
    cand_p = np.empty(C, np.float64)
    top_c = np.empty(k + 1, np.int64)
    top_v = np.empty(k + 1, np.float64)

    for t in range(T):
        blank = np.float64(lp[t, 0])
        if blank >= log_skip:
            for i in range(n_beams):
                pid = b_pid[i]
                pb = b_pb[i]
                pnb = b_pnb[i]
                b_pb[i] = _lse(pb, pnb) + blank
                b_pnb[i] = pnb + np.float64(lp[t, last[pid]]) if pid != 0 else -np.inf
            continue
        # the k most probable non-blank classes (the same set as argpartition), in class order, kept
        # where at least min_prob
        nk = 0
        for c in range(1, C):
            v = np.float64(lp[t, c])
            if nk < k:
                top_c[nk] = c
                top_v[nk] = v
                nk += 1
            else:
                m = 0
                for j in range(1, nk):
                    if top_v[j] < top_v[m]:
                        m = j
                if v > top_v[m]:
                    top_c[m] = c
                    top_v[m] = v
        n_cand = 0
        for c in range(1, C):
            for j in range(nk):
                if top_c[j] == c and top_v[j] >= log_min:
                    cand_c[n_cand] = c
                    cand_p[n_cand] = top_v[j]
                    n_cand += 1
                    break
        best = -np.inf
        worst = np.inf
        for i in range(n_beams):
            totals[i] = _lse(b_pb[i], b_pnb[i])
            sc = totals[i] + extra[b_pid[i]]
            if sc > best:
                best = sc
            if sc < worst:
                worst = sc
        cutoff = best - prune
        if histogram_prune and n_beams >= beam_width and worst > cutoff:
            cutoff = worst
        nx = 0
        for i in range(n_beams):
            pid = b_pid[i]
            pb = b_pb[i]
            pnb = b_pnb[i]
            total = totals[i]
            if stamp[pid] != t:
                stamp[pid] = t
                slot[pid] = nx
                x_pid[nx] = pid
                x_pb[nx] = -np.inf
                x_pnb[nx] = -np.inf
                nx += 1
            sl = slot[pid]
            x_pb[sl] = _lse(x_pb[sl], total + blank)
            lst = last[pid] if pid != 0 else 0
            if lst != 0:
                x_pnb[sl] = _lse(x_pnb[sl], pnb + np.float64(lp[t, lst]))
            base = total + extra[pid]
            for j in range(n_cand):
                c = cand_c[j]
                p_c = cand_p[j]
                if base + p_c < cutoff:
                    continue
                # child prefix pid + c, made on first use
                cid = first_child[pid]
                while cid != -1 and last[cid] != c:
                    cid = sibling[cid]
                if cid == -1:
                    if n_pref == len(parent):
                        ncap = 2 * len(parent)
                        parent = _grow_i(parent, ncap)
                        last = _grow_i(last, ncap)
                        state = _grow_i(state, ncap)
                        extra = _grow_i(extra, ncap)
                        first_child = _grow_i(first_child, ncap)
                        sibling = _grow_i(sibling, ncap)
                        slot = _grow_i(slot, ncap)
                        stamp2 = np.full(ncap, -1, np.int64)
                        stamp2[: len(stamp)] = stamp
                        stamp = stamp2
                    cid = n_pref
                    n_pref += 1
                    parent[cid] = pid
                    last[cid] = c
                    e = extra[pid] + bonus
                    st = 0
                    if use_lm:
                        sym = cls_sym[c]
                        e += lm_w * lm_logprob(state[pid], sym, ent_start, ent_sym, ent_lp, backoff, log_gamma,
                                               log_uniform)
                        st = lm_next(state[pid], sym, backoff, edge_start, edge_sym, edge_to, depth, order)
                    extra[cid] = e
                    state[cid] = st
                    first_child[cid] = -1
                    sibling[cid] = first_child[pid]
                    first_child[pid] = cid
                add = (pb if c == lst else total) + p_c
                if stamp[cid] != t:
                    stamp[cid] = t
                    slot[cid] = nx
                    x_pid[nx] = cid
                    x_pb[nx] = -np.inf
                    x_pnb[nx] = add
                    nx += 1
                else:
                    s2 = slot[cid]
                    x_pnb[s2] = _lse(x_pnb[s2], add)
        if nx > beam_width:
            # keep the beam_width best by (score, prefix id), best first: the Python sort's order
            for i in range(nx):
                keys[i] = _lse(x_pb[i], x_pnb[i]) + extra[x_pid[i]]
                taken[i] = False
            for r in range(beam_width):
                m = -1
                for i in range(nx):
                    if taken[i]:
                        continue
                    if m == -1 or keys[i] > keys[m] or (keys[i] == keys[m] and x_pid[i] > x_pid[m]):
                        m = i
                taken[m] = True
                b_pid[r] = x_pid[m]
                b_pb[r] = x_pb[m]
                b_pnb[r] = x_pnb[m]
            n_beams = beam_width
        else:
            for i in range(nx):
                b_pid[i] = x_pid[i]
                b_pb[i] = x_pb[i]
                b_pnb[i] = x_pnb[i]
            n_beams = nx

    out_pid = np.empty(n_beams, np.int64)
    out_score = np.empty(n_beams, np.float64)
    for i in range(n_beams):
        pid = b_pid[i]
        sc = _lse(b_pb[i], b_pnb[i]) + extra[pid]
        if use_lm:
            sc += lm_w * lm_logprob(state[pid], eos_sym, ent_start, ent_sym, ent_lp, backoff, log_gamma, log_uniform)
        out_pid[i] = pid
        out_score[i] = sc
    return out_pid, out_score, parent[:n_pref].copy(), last[:n_pref].copy()


@_njit
def align_kernel(lp, labels):
    """Viterbi alignment of ``labels`` (class ids, no blanks) to the frames: (sum of the best path's
    log-probabilities, per-label highest frame probability on it). The same recursion and tie-breaks
    as ``decode.align``."""
    T = lp.shape[0]
    L = len(labels)
    S = 2 * L + 1
    ext = np.zeros(S, np.int64)
    for i in range(L):
        ext[2 * i + 1] = labels[i]
    skip = np.zeros(S, np.bool_)
    for s in range(3, S, 2):
        skip[s] = ext[s] != ext[s - 2]
    delta = np.full(S, -np.inf)
    nd = np.empty(S)
    delta[0] = lp[0, ext[0]]
    if S > 1:
        delta[1] = lp[0, ext[1]]
    back = np.zeros((T, S), np.int8)
    for t in range(1, T):
        for s in range(S):
            v = delta[s]
            a = 0
            if s >= 1 and delta[s - 1] > v:
                v = delta[s - 1]
                a = 1
            if s >= 2 and skip[s] and delta[s - 2] > v:
                v = delta[s - 2]
                a = 2
            nd[s] = v + lp[t, ext[s]]
            back[t, s] = a
        for s in range(S):
            delta[s] = nd[s]
    end = S - 1
    if S > 1 and delta[S - 1] < delta[S - 2]:
        end = S - 2
    best = delta[end]
    confs = np.zeros(L)
    if best == -np.inf:
        return best, confs
    s = end
    for t in range(T - 1, -1, -1):
        if s % 2 == 1:
            i = s // 2
            p = math.exp(lp[t, ext[s]])
            if p > confs[i]:
                confs[i] = p
        s -= back[t, s]
    return best, confs


@_njit
def paths_kernel(parent, last, pids):
    """The class sequence of each prefix in ``pids``: (matrix padded with zeros, lengths)."""
    n = len(pids)
    lens = np.zeros(n, np.int64)
    for i in range(n):
        p = pids[i]
        while p > 0:
            lens[i] += 1
            p = parent[p]
    width = 1
    for i in range(n):
        if lens[i] > width:
            width = lens[i]
    out = np.zeros((n, width), np.int64)
    for i in range(n):
        p = pids[i]
        j = lens[i] - 1
        while p > 0:
            out[i, j] = last[p]
            j -= 1
            p = parent[p]
    return out, lens


@_njit
def agreement_kernel(labs, lens, weights, min_weight):
    """Per position of candidate 0 (the chosen text) the summed weight of the candidates that a minimal
    edit alignment matches there: the common prefix and suffix are matched outright and the middle is
    aligned with ``metrics.align_chars``' tie-breaks (substitution or match, then deletion, then
    insertion), as ``decode._agreeing`` does. Candidates below ``min_weight`` are skipped."""
    n = lens[0]
    conf = np.zeros(n)
    for c in range(len(lens)):
        w = weights[c]
        m = lens[c]
        same = m == n
        if same:
            for i in range(n):
                if labs[c, i] != labs[0, i]:
                    same = False
                    break
        if same:
            for i in range(n):
                conf[i] += w
            continue
        if w < min_weight:
            continue
        a = 0
        while a < n and a < m and labs[0, a] == labs[c, a]:
            a += 1
        b = 0
        while b < n - a and b < m - a and labs[0, n - 1 - b] == labs[c, m - 1 - b]:
            b += 1
        for i in range(a):
            conf[i] += w
        for i in range(n - b, n):
            conf[i] += w
        R = n - a - b
        H = m - a - b
        d = np.zeros((R + 1, H + 1), np.int64)
        for i in range(R + 1):
            d[i, 0] = i
        for j in range(H + 1):
            d[0, j] = j
        for i in range(1, R + 1):
            for j in range(1, H + 1):
                cost = 0 if labs[0, a + i - 1] == labs[c, a + j - 1] else 1
                v = d[i - 1, j - 1] + cost
                if d[i - 1, j] + 1 < v:
                    v = d[i - 1, j] + 1
                if d[i, j - 1] + 1 < v:
                    v = d[i, j - 1] + 1
                d[i, j] = v
        i = R
        j = H
        while i > 0 or j > 0:
            if i > 0 and j > 0:
                eq = labs[0, a + i - 1] == labs[c, a + j - 1]
                if d[i, j] == d[i - 1, j - 1] + (0 if eq else 1):
                    if eq:
                        conf[a + i - 1] += w
                    i -= 1
                    j -= 1
                    continue
            if i > 0 and d[i, j] == d[i - 1, j] + 1:
                i -= 1
            else:
                j -= 1
    return conf


# The kernels' types as decode.py calls them (lp float32 C-contiguous; LM tables as CompiledLM holds
# them; the no-LM call passes arrays of the same types).
AOT_SIGNATURES = {
    "beam_kernel": "Tuple((i8[::1], f8[::1], i8[::1], i8[::1]))(f4[:, ::1], i8, i8, f8, f8, b1, f8, f8, f8, b1, "
                   "i8[::1], i8, i8, i8[::1], i4[::1], f8[::1], i4[::1], f8[::1], f8, i8[::1], i4[::1], i4[::1], "
                   "i4[::1], i8)",
    "align_kernel": "Tuple((f8, f8[::1]))(f4[:, ::1], i8[::1])",
    "paths_kernel": "Tuple((i8[:, ::1], i8[::1]))(i8[::1], i8[::1], i8[::1])",
    "agreement_kernel": "f8[::1](i8[:, ::1], i8[::1], f8[::1], f8)",
}

if _aot is not None:  # the same kernels, compiled ahead of time
    beam_kernel, align_kernel = _aot.beam_kernel, _aot.align_kernel
    paths_kernel, agreement_kernel = _aot.paths_kernel, _aot.agreement_kernel


def build_aot(out_dir: str | None = None) -> str:
    """Compile the kernels of this file into the C extension :data:`AOT_MODULE` (numba.pycc and a C
    compiler); returns its path. Run in a process where :data:`ENGINE` is ``jit``."""
    if ENGINE != "jit":
        raise RuntimeError(f"building the extension needs the numba kernels (engine is {ENGINE}): "
                           "run with HTR_BEAM_ENGINE=jit")
    import warnings

    with warnings.catch_warnings():  # numba.pycc is deprecated in favour of a successor not yet released
        warnings.simplefilter("ignore")
        from numba.pycc import CC

        cc = CC(AOT_MODULE)
        cc.output_dir = out_dir or os.path.dirname(os.path.abspath(__file__))
        cc.verbose = False
        for name, signature in AOT_SIGNATURES.items():
            cc.export(name, signature)(globals()[name].py_func)
        ident = source_id()
        cc.export("source_id", "i8()")(lambda: ident)
        cc.compile()
    return os.path.join(cc.output_dir, cc.output_file if hasattr(cc, "output_file") else AOT_MODULE)


def warm() -> float:
    """Compile (or load from the cache) every kernel now, on a tiny input; returns the seconds it took.
    ``python -m htr_ray.recognition.fast_beam`` does this, e.g. in a container image build, so that the
    first line a fresh process decodes does not wait for the compiler."""
    import time

    from htr_ray.recognition.decode import beam_search
    from htr_ray.recognition.lm import CharNgramLM

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 4)).astype(np.float32)
    x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
    beam_search(x, "abc")
    beam_search(x, "abc", lm=CharNgramLM.train(["abc cab"], order=2))
    return time.perf_counter() - t0


def main() -> int:
    """Warm numba's cache (the fallback), then build the ahead-of-time extension and check that a fresh
    process loads it; a machine without a C compiler keeps the numba kernels."""
    import subprocess
    import sys

    if ENGINE == "python":
        raise SystemExit("numba is not installed: beam search runs in Python")
    if ENGINE == "jit":
        print(f"compiled beam search (numba) ready in {warm():.1f} s (cache: {numba.config.CACHE_DIR or 'beside the module'})")
    if ENGINE == "aot":
        print("compiled beam search: ahead-of-time extension up to date")
        return 0
    import time

    t0 = time.perf_counter()
    try:
        build_aot()
    except Exception as exc:  # no compiler, no Python headers: the numba kernels stay in use
        print(f"ahead-of-time beam search not built ({type(exc).__name__}: {exc}); numba compiles it instead")
        return 0
    check = subprocess.run([sys.executable, "-c", "from htr_ray.recognition import fast_beam as f; "
                            "f.warm(); print(f.ENGINE)"], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "HTR_BEAM_ENGINE"})
    engine = check.stdout.strip().splitlines()[-1] if check.stdout.strip() else f"failed: {check.stderr[-500:]}"
    print(f"ahead-of-time beam search built in {time.perf_counter() - t0:.1f} s; a fresh process runs: {engine}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
