"""CTC decoding: greedy (best path) and prefix beam search with an optional lexicon and an optional
character n-gram language model, with per-character and per-line confidences for both.

Convention shared by every line model: class 0 is the CTC blank, class k >= 1 is ``charset[k - 1]``.
Inputs are per-frame log-probabilities (natural log, log-softmax output) of shape (T, C) for one line.

Confidences (chosen by measuring calibration, see docs/decoding.md):

- greedy: a character's confidence is the highest frame probability of that character among the
  frames that produced it; the line's confidence is the mean of its characters' confidences (for an
  empty line, the geometric mean of the best frame probabilities);
- beam search: the final beams are an n-best list whose scores include the LM and lexicon terms; the
  line's confidence is the posterior of the chosen text among them (softmax of the scores), and a
  character's confidence is the posterior mass of the candidates that agree with that character
  (edit alignment against the chosen text). So a character that the LM or lexicon corrected is
  confident when the alternatives are clearly worse *after* the LM, which acoustic probabilities alone
  would not say. ``Decoded.acoustic_confidences`` keeps the acoustic per-character confidences
  (Viterbi alignment of the chosen text), for reference.

Beam search without a lexicon runs compiled (:mod:`htr_ray.recognition.fast_beam`, numba, with the LM
as :class:`htr_ray.recognition.lm.CompiledLM` tables): the same search step for step as the Python one
below, which runs with a lexicon, without numba, or with ``engine="python"``.

Beam search scoring of a prefix = ln P_ctc(prefix) + lm_weight * ln P_lm(prefix) + char_bonus * len
- oov_penalty * (number of words not in the lexicon). With ``lexicon_mode="constrain"`` a word that is
not a prefix of some lexicon word is never extended. Words are maximal runs of characters that occur in
the lexicon's words, plus letters (so digits and punctuation pass freely when the lexicon holds only
letters).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np


class _LazyFastBeam:
    """:mod:`htr_ray.recognition.fast_beam` imported on first use: greedy decoding never needs it (and
    where its ahead-of-time build is missing it imports numba, ~150 MB of RSS)."""

    def __getattr__(self, name):
        from htr_ray.recognition import fast_beam as module

        return getattr(module, name)


fast_beam = _LazyFastBeam()

NEG_INF = float("-inf")


@dataclass
class Decoded:
    text: str
    confidence: float  # line confidence in [0, 1]
    char_confidences: list[float] = field(default_factory=list)  # one per character of ``text``
    candidates: list[tuple[str, float]] = field(default_factory=list)  # beam search: n-best (text, score)
    acoustic_confidences: list[float] | None = None  # beam search: per-character CTC confidences


def _check(log_probs: np.ndarray) -> np.ndarray:
    lp = np.asarray(log_probs, dtype=np.float32)
    if lp.ndim != 2:
        raise ValueError(f"expected (T, C) log-probabilities, got shape {lp.shape}")
    return lp


def line_confidence(path_logprob_mean: float, char_confidences: Sequence[float]) -> float:
    """A line's confidence from its characters' (greedy and the fallbacks; see the module docstring)."""
    if len(char_confidences):
        return float(sum(char_confidences) / len(char_confidences))
    if not np.isfinite(path_logprob_mean):
        return 0.0
    return float(math.exp(path_logprob_mean))


def _consensus(best: str, cands: Sequence[tuple[str, float]]) -> tuple[float, list[float]]:
    """(posterior of ``best``, per-character agreement mass) over n-best (text, log-score) pairs."""
    scores = np.array([s for _, s in cands], dtype=np.float64)
    post = np.exp(scores - scores.max())
    post /= post.sum()
    conf = np.zeros(len(best))
    p_best = 0.0
    for (text, _), p in zip(cands, post):
        if text == best:
            conf += p
            p_best += p
            continue
        if p < 1e-4:
            continue
        for j in _agreeing(best, text):
            conf[j] += p
    return float(p_best), [float(min(1.0, c)) for c in conf]


def _agreeing(best: str, text: str) -> list[int]:
    """Indices of the characters of ``best`` that a minimal edit alignment with ``text`` matches. The
    common prefix and suffix are matched outright (some minimal alignment always does) and only the
    middle, where n-best candidates differ, is aligned."""
    n, m = len(best), len(text)
    a = 0
    while a < n and a < m and best[a] == text[a]:
        a += 1
    b = 0
    while b < n - a and b < m - a and best[n - 1 - b] == text[m - 1 - b]:
        b += 1
    out = list(range(a))
    j = a
    for op, _, _ in _align_ops(best[a:n - b], text[a:m - b]):
        if op == "I":
            continue
        if op == "=":
            out.append(j)
        j += 1
    out.extend(range(n - b, n))
    return out


def _align_ops(ref: str, hyp: str) -> list[tuple[str, str, str]]:
    from htr_ray.evaluation.metrics import align_chars

    return align_chars(ref, hyp)


def greedy(log_probs: np.ndarray, charset: str) -> Decoded:
    """Best path: the most likely class per frame, repeats merged, blanks removed. A character's
    confidence is the highest probability among the frames that produced it; the line's is their mean
    (:func:`line_confidence`)."""
    lp = _check(log_probs)
    if lp.shape[0] == 0:
        return Decoded("", 0.0, [])
    best = lp.argmax(axis=1)
    best_lp = lp[np.arange(len(best)), best]
    chars: list[str] = []
    confs: list[float] = []
    prev = 0
    for t, k in enumerate(best):
        k = int(k)
        if k != 0 and k != prev:
            chars.append(charset[k - 1])
            confs.append(float(np.exp(best_lp[t])))
        elif k != 0 and k == prev and confs:
            confs[-1] = max(confs[-1], float(np.exp(best_lp[t])))
        prev = k
    return Decoded("".join(chars), line_confidence(float(best_lp.mean()), confs), confs)


# ------------------------------------------------------------------------------- forced alignment


def align(log_probs: np.ndarray, labels: Sequence[int]) -> tuple[float, list[float]]:
    """Viterbi alignment of a label sequence (class ids, no blanks) to the frames.

    Returns (mean log-probability per frame of the best alignment, per-label confidences = the highest
    probability of the label among its aligned frames). An impossible alignment (too few frames) gives
    (-inf, zeros)."""
    lp = _check(log_probs)
    T = lp.shape[0]
    L = len(labels)
    if L == 0:
        return (float(lp[:, 0].mean()) if T else NEG_INF), []
    if fast_beam.AVAILABLE and T:
        best, confs = fast_beam.align_kernel(np.ascontiguousarray(lp), np.asarray(labels, dtype=np.int64))
        if not np.isfinite(best):
            return NEG_INF, [0.0] * L
        return float(best / T), [float(c) for c in confs]
    ext = np.zeros(2 * L + 1, dtype=np.int64)
    ext[1::2] = labels
    S = len(ext)
    # transition from s-2 allowed where ext[s] is a label different from ext[s-2]
    skip = np.zeros(S, dtype=bool)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    emit = lp[:, ext]  # (T, S)
    delta = np.full(S, NEG_INF, dtype=np.float64)
    delta[0] = emit[0, 0]
    if S > 1:
        delta[1] = emit[0, 1]
    back = np.zeros((T, S), dtype=np.int8)
    for t in range(1, T):
        stay = delta
        one = np.concatenate(([NEG_INF], delta[:-1]))
        two = np.concatenate(([NEG_INF, NEG_INF], delta[:-2]))
        two = np.where(skip, two, NEG_INF)
        stacked = np.stack([stay, one, two])
        arg = stacked.argmax(axis=0)
        delta = stacked[arg, np.arange(S)] + emit[t]
        back[t] = arg
    end = S - 1 if S == 1 or delta[S - 1] >= delta[S - 2] else S - 2
    best = delta[end]
    if not np.isfinite(best):
        return NEG_INF, [0.0] * L
    confs = [0.0] * L
    s = end
    for t in range(T - 1, -1, -1):
        if s % 2 == 1:
            i = s // 2
            confs[i] = max(confs[i], float(math.exp(lp[t, ext[s]])))
        s -= int(back[t, s])
    return float(best / T), confs


# ------------------------------------------------------------------------------------ lexicon


class Lexicon:
    """A set of words as a character trie, for steering beam search.

    ``case_sensitive=False`` matches ignoring case (the trie holds lower case). A word on the line is a
    maximal run of letters and of the other characters the lexicon's words contain (a hyphen or an
    apostrophe, if some entry has one); digits and punctuation outside the words split words and are
    never constrained.
    """

    END = "\x00"

    def __init__(self, words: Iterable[str], case_sensitive: bool = False):
        self.case_sensitive = case_sensitive
        self.root: dict = {}
        self.words: set[str] = set()
        for w in words:
            w = w.strip()
            if not w:
                continue
            for part in w.split():  # multi-word entries ("twenty five") contribute each word
                key = part if case_sensitive else part.lower()
                self.words.add(key)
                node = self.root
                for ch in key:
                    node = node.setdefault(ch, {})
                node[self.END] = True
        self.alphabet = {ch for w in self.words for ch in w}
        if not case_sensitive:
            self.alphabet |= {ch.upper() for ch in self.alphabet}

    @classmethod
    def from_file(cls, uri: str, case_sensitive: bool = False) -> "Lexicon":
        """A word-per-line file at any URI, or a built-in list: ``builtin:drugs`` (generic drug names),
        ``builtin:prescription`` (drugs + dosage forms, routes, frequencies), ``builtin:cheque``
        (amount words, months)."""
        if uri.startswith("builtin:"):
            return cls(builtin_words(uri.split(":", 1)[1]), case_sensitive=case_sensitive)
        from htr_ray.io import storage

        return cls(storage.read_text(uri).splitlines(), case_sensitive=case_sensitive)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return (word if self.case_sensitive else word.lower()) in self.words

    def is_word_char(self, ch: str) -> bool:
        return ch.isalpha() or ch in self.alphabet

    def step(self, node: dict | None, ch: str) -> dict | None:
        if node is None:
            return None
        return node.get(ch if self.case_sensitive else ch.lower())

    def nearest(self, word: str, max_distance: int | None = None) -> tuple[str | None, int]:
        """The lexicon word closest to ``word`` by edit distance (ties: the first in sorted order)."""
        import editdistance

        key = word if self.case_sensitive else word.lower()
        best, best_d = None, None
        for w in sorted(self.words):
            d = editdistance.eval(key, w)
            if best_d is None or d < best_d:
                best, best_d = w, d
        if best_d is None or (max_distance is not None and best_d > max_distance):
            return None, (best_d if best_d is not None else len(word))
        return best, int(best_d)


def builtin_words(name: str) -> list[str]:
    """Word lists that come with the project (see :meth:`Lexicon.from_file`; :func:`htr_ray.data.lexicons.builtin`)."""
    from htr_ray.data import lexicons

    return lexicons.builtin(name)


# ------------------------------------------------------------------------------- beam search


def _lse(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


@dataclass
class BeamConfig:
    beam_width: int = 16
    top_k: int = 8  # at most this many non-blank classes tried per frame
    min_prob: float = 1e-3  # ... and only those at least this probable
    prune: float = 12.0  # an extension this far (log) below the frame's best prefix is not tried
    histogram_prune: bool = True  # ... nor one scoring below the weakest prefix kept at the last frame
    blank_skip: float = 0.999  # frames where the blank is this sure only extend existing prefixes
    lm_weight: float = 0.5
    # added per emitted character, balancing the LM's and the lexicon penalty's preference for short
    # text; None = 2.0 with an LM, 0.5 with a lexicon only, 0 otherwise (tuned on IAM-OnDB val lines)
    char_bonus: float | None = None
    # subtracted once per word that is not in the lexicon; None = 2.0 with an LM, 4.0 without (tuned on
    # IAM-OnDB val lines)
    oov_penalty: float | None = None
    lexicon_mode: str = "favour"  # or "constrain"
    nbest: int = 5  # candidates kept in Decoded.candidates
    # "auto": the compiled search (htr_ray.recognition.fast_beam, numba) where it applies (no lexicon),
    # else the Python one; "python": always the Python one (the reference the compiled one is tested against)
    engine: str = "auto"


class _Prefixes:
    """Prefix tree of the search: prefix = int id; per id the parent, last class, text, the score terms
    that depend on the text only (LM + bonus + lexicon: ``extra``), the LM context and lexicon node."""

    __slots__ = ("parent", "last", "text", "extra", "ctx", "node", "in_word", "children")

    def __init__(self, root_node):
        self.parent = [-1]
        self.last = [0]
        self.text = [""]
        self.extra = [0.0]
        self.ctx = [""]
        self.node = [root_node]
        self.in_word = [False]
        self.children: dict[int, int] = {}

    def labels(self, pid: int) -> list[int]:
        out = []
        while pid > 0:
            out.append(self.last[pid])
            pid = self.parent[pid]
        return out[::-1]


def beam_search(
    log_probs: np.ndarray,
    charset: str,
    beam_width: int | None = None,
    lexicon: Lexicon | None = None,
    lm=None,
    config: BeamConfig | None = None,
    **overrides,
) -> Decoded:
    """CTC prefix beam search over (T, C) log-probabilities.

    ``lexicon``: a :class:`Lexicon` (or any iterable of words) to favour (default) or constrain to;
    ``lm``: an :class:`htr_ray.recognition.lm.CharNgramLM` (anything with ``context_logprob(ctx, ch)``,
    ``next_context(ctx, ch)`` and ``order``). Other settings come from ``config`` / keyword overrides
    (see :class:`BeamConfig`). Without lexicon and LM the result is the most probable labelling found.
    """
    cfg = config or BeamConfig()
    if beam_width is not None and beam_width != cfg.beam_width:  # (a config's own width used to be overridden by 16)
        overrides = {"beam_width": beam_width, **overrides}
    if overrides:
        cfg = BeamConfig(**{**cfg.__dict__, **overrides})
    if lexicon is not None and not isinstance(lexicon, Lexicon):
        lexicon = Lexicon(lexicon)
    if cfg.lexicon_mode not in ("favour", "constrain"):
        raise ValueError(f"lexicon_mode must be 'favour' or 'constrain', not {cfg.lexicon_mode!r}")
    lp = _check(log_probs)
    T, C = lp.shape
    if C != len(charset) + 1:
        raise ValueError(f"{C} classes but the charset has {len(charset)} characters (+1 blank expected)")
    if T == 0:
        return Decoded("", 0.0, [])
    if cfg.engine not in ("auto", "python"):
        raise ValueError(f"engine must be 'auto' or 'python', not {cfg.engine!r}")
    if lm is not None and not hasattr(lm, "context_logprob"):
        raise TypeError(f"lm must be a character n-gram LM, not {type(lm).__name__}")
    bonus = cfg.char_bonus
    if bonus is None:
        bonus = 2.0 if lm is not None else 0.5 if lexicon is not None else 0.0
    if cfg.engine == "auto" and lexicon is None and fast_beam.AVAILABLE and (lm is None or hasattr(lm, "compile")):
        return _beam_search_compiled(lp, charset, cfg, lm, bonus)
    constrain = lexicon is not None and cfg.lexicon_mode == "constrain"
    lm_w = cfg.lm_weight if lm is not None else 0.0
    oov_penalty = cfg.oov_penalty if cfg.oov_penalty is not None else (2.0 if lm is not None else 4.0)
    oov = NEG_INF if constrain else -oov_penalty
    log_min = math.log(cfg.min_prob)
    log_skip = math.log(cfg.blank_skip)
    END = Lexicon.END
    P = _Prefixes(lexicon.root if lexicon is not None else None)
    if lm is not None:
        P.ctx[0] = lm.start_context()
    children = P.children
    extra_of = P.extra

    def extend(pid: int, c: int) -> int:
        """Child prefix id of ``pid`` + class ``c`` (created on first use); -1 when not allowed."""
        key = pid * C + c
        cid = children.get(key)
        if cid is not None:
            return cid if extra_of[cid] > NEG_INF else -1
        ch = charset[c - 1]
        extra = extra_of[pid] + bonus
        ctx = ""
        if lm is not None:
            pctx = P.ctx[pid]
            extra += lm_w * lm.context_logprob(pctx, ch)
            ctx = lm.next_context(pctx, ch)
        node, in_word = None, False
        if lexicon is not None:
            pnode, p_in_word = P.node[pid], P.in_word[pid]
            if lexicon.is_word_char(ch):
                in_word = True
                if not p_in_word:  # a new word starts at the root
                    node = lexicon.step(lexicon.root, ch)
                    if node is None:
                        extra += oov
                elif pnode is not None:
                    node = lexicon.step(pnode, ch)
                    if node is None:
                        extra += oov
                # else: already out of the lexicon, penalised once
            elif p_in_word and pnode is not None and END not in pnode:
                extra += oov  # the word ended as a proper prefix of lexicon words
        cid = len(P.parent)
        P.parent.append(pid)
        P.last.append(c)
        P.text.append(P.text[pid] + ch)
        extra_of.append(extra)
        P.ctx.append(ctx)
        P.node.append(node)
        P.in_word.append(in_word)
        children[key] = cid
        return cid if extra > NEG_INF else -1

    def final_extra(pid: int) -> float:
        extra = extra_of[pid]
        if lm is not None:
            extra += lm_w * lm.context_end_logprob(P.ctx[pid])
        if lexicon is not None and P.in_word[pid] and P.node[pid] is not None and END not in P.node[pid]:
            extra += oov
        return extra

    # beams: prefix id -> [log P(ending in blank), log P(ending in non-blank)]
    beams: dict[int, list[float]] = {0: [0.0, NEG_INF]}
    k = min(cfg.top_k, C - 1)
    last_of = P.last
    for t in range(T):
        row = lp[t]
        blank = float(row[0])
        if blank >= log_skip:
            # the blank is near certain: no new characters, only blank / repeat transitions
            for pid, cell in beams.items():
                pb, pnb = cell
                total = _lse(pb, pnb)
                cell[0] = total + blank
                cell[1] = pnb + float(row[last_of[pid]]) if pid else NEG_INF
            continue
        cand = np.argpartition(row[1:], C - 1 - k)[C - 1 - k:] + 1 if k < C - 1 else np.arange(1, C)
        cand = [(int(c), float(row[c])) for c in np.sort(cand) if row[c] >= log_min]
        totals = {pid: _lse(pb, pnb) for pid, (pb, pnb) in beams.items()}
        scores = [totals[p] + extra_of[p] for p in totals]
        cutoff = max(scores) - cfg.prune
        if cfg.histogram_prune and len(scores) >= cfg.beam_width:
            cutoff = max(cutoff, min(scores))  # an extension below every kept prefix rarely survives
        nxt: dict[int, list[float]] = {}
        for pid, (pb, pnb) in beams.items():
            total = totals[pid]
            cell = nxt.get(pid)
            if cell is None:
                cell = nxt[pid] = [NEG_INF, NEG_INF]
            cell[0] = _lse(cell[0], total + blank)
            last = last_of[pid] if pid else 0
            if last:
                cell[1] = _lse(cell[1], pnb + float(row[last]))
            base = total + extra_of[pid]
            for c, p_c in cand:
                if base + p_c < cutoff:
                    continue
                cid = extend(pid, c)
                if cid < 0:
                    continue
                add = (pb if c == last else total) + p_c
                ncell = nxt.get(cid)
                if ncell is None:
                    nxt[cid] = [NEG_INF, add]
                else:
                    ncell[1] = _lse(ncell[1], add)
        if len(nxt) > cfg.beam_width:
            scored = sorted(((_lse(v[0], v[1]) + extra_of[p], p) for p, v in nxt.items()), reverse=True)
            beams = {p: nxt[p] for _, p in scored[: cfg.beam_width]}
        else:
            beams = nxt

    scored = []
    for pid, (pb, pnb) in beams.items():
        score = _lse(pb, pnb) + final_extra(pid)
        if score > NEG_INF:
            scored.append((score, pid))
    if not scored:  # everything was constrained away: fall back to the plain best path
        out = greedy(lp, charset)
        out.candidates = [(out.text, NEG_INF)]
        return out
    scored.sort(key=lambda x: x[0], reverse=True)
    best = scored[0][1]
    _, acoustic = align(lp, P.labels(best))
    cands = [(P.text[p], float(s)) for s, p in scored]
    line_conf, char_confs = _consensus(P.text[best], cands)
    return Decoded(P.text[best], line_conf, char_confs, cands[: cfg.nbest], acoustic)


_NO_LM = tuple(np.zeros(n, dt) for n, dt in ((2, np.int64), (1, np.int32), (1, np.float64), (1, np.int32),
                                              (1, np.float64)))


def _beam_search_compiled(lp: np.ndarray, charset: str, cfg: BeamConfig, lm, bonus: float) -> Decoded:
    """:func:`beam_search` through :func:`htr_ray.recognition.fast_beam.beam_kernel` (no lexicon)."""
    if lm is not None:
        clm = lm.compile()
        cls_sym = clm.class_symbols(charset)
        lm_args = clm.kernel_args()
        eos, start = clm.eos_sym, clm.start_state
    else:
        cls_sym = np.zeros(len(charset) + 1, np.int64)
        ent_start, ent_sym, ent_lp, backoff, log_gamma = _NO_LM
        lm_args = (ent_start, ent_sym, ent_lp, backoff, log_gamma, 0.0, ent_start, ent_sym, backoff, backoff, 1)
        eos, start = 0, 0
    pids, scores, parent, last = fast_beam.beam_kernel(
        np.ascontiguousarray(lp), int(cfg.beam_width), int(cfg.top_k), math.log(cfg.min_prob), float(cfg.prune),
        bool(cfg.histogram_prune), math.log(cfg.blank_skip), float(cfg.lm_weight if lm is not None else 0.0),
        float(bonus), lm is not None, cls_sym, int(eos), int(start), *lm_args)
    scored = [(float(sc), int(p)) for sc, p in zip(scores, pids) if sc > NEG_INF]
    if not scored:
        out = greedy(lp, charset)
        out.candidates = [(out.text, NEG_INF)]
        return out
    scored.sort(key=lambda x: x[0], reverse=True)
    labs, lens = fast_beam.paths_kernel(parent, last, np.array([p for _, p in scored], np.int64))
    chars = np.array([""] + list(charset), dtype=object)
    texts = ["".join(chars[labs[i, : lens[i]]]) for i in range(len(scored))]
    cands = [(t, sc) for t, (sc, _) in zip(texts, scored)]
    _, acoustic = align(lp, labs[0, : lens[0]].tolist())
    # line and character confidences: the n-best posterior (as _consensus)
    sc = np.array([s for s, _ in scored], dtype=np.float64)
    post = np.exp(sc - sc.max())
    post /= post.sum()
    p_best = float(post[[i for i, t in enumerate(texts) if t == texts[0]]].sum())
    conf = fast_beam.agreement_kernel(labs, lens, post, 1e-4)
    return Decoded(texts[0], p_best, [float(min(1.0, c)) for c in conf], cands[: cfg.nbest], acoustic)


# ------------------------------------------------------------------------------ one front door


def make_decoder(kind: str = "greedy", charset: str = "", lexicon=None, lm=None,
                 **beam_options) -> Callable[[np.ndarray], Decoded]:
    """A decoder function ``log_probs (T, C) -> Decoded``: ``kind`` is ``greedy`` or ``beam``.

    ``lexicon`` may be a :class:`Lexicon`, a list of words or a URI of a word-per-line file; ``lm`` a
    :class:`htr_ray.recognition.lm.CharNgramLM` or the URI of its JSON file. Giving either implies beam search.
    """
    if isinstance(lexicon, str):
        lexicon = Lexicon.from_file(lexicon)
    elif lexicon is not None and not isinstance(lexicon, Lexicon):
        lexicon = Lexicon(lexicon)
    if isinstance(lm, str):
        from htr_ray.recognition.lm import load_lm

        lm = load_lm(lm)
    elif lm is not None and hasattr(lm, "compile"):
        lm = lm.compile()
    if kind == "greedy" and lexicon is None and lm is None:
        return lambda log_probs: greedy(log_probs, charset)
    if kind not in ("greedy", "beam"):
        raise ValueError(f"unknown decoder {kind!r} (greedy or beam)")
    config = BeamConfig(**beam_options)
    return lambda log_probs: beam_search(log_probs, charset, beam_width=config.beam_width,
                                         lexicon=lexicon, lm=lm, config=config)


def decode_batch(log_probs: np.ndarray, lengths: Sequence[int], decoder: Callable[[np.ndarray], Decoded]) -> list[Decoded]:
    """Decode (N, T, C) (batch first) log-probabilities with true frame counts ``lengths``."""
    lp = np.asarray(log_probs)
    return [decoder(lp[i, : int(n)]) for i, n in enumerate(lengths)]
