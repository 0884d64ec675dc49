"""Character n-gram language model for steering CTC beam search.

A :class:`CharNgramLM` is learned from a plain text file (one line or sentence per line): a drug list,
cheque amount phrases, or running English text. Smoothing is interpolated Kneser-Ney (default) or
Witten-Bell, both interpolating down to a uniform distribution over the vocabulary plus one unknown
symbol, so every character (even one never seen in training) gets a finite log-probability.

Scores are natural logarithms. A line starts with ``order - 1`` start symbols (``BOS``) and ends with
the end symbol (``EOS``); :meth:`CharNgramLM.logprob` scores one character after a context string,
and :meth:`CharNgramLM.end_logprob` the end of the line.

Two file formats, both read by :func:`load_lm` (any storage URI):

- ``*.json``: the counts (:class:`CharNgramLM`), the form to inspect or retrain from;
- ``*.npz``: the compiled tables (:class:`CompiledLM`: per context state its backoff state and
  weight, the interpolated log-probabilities of the characters seen after it, and the transitions),
  what beam search reads. It loads in milliseconds, where the JSON counts take seconds to parse and
  compile; a model ships its LM in this form (``models/en_line_crnn_small/lm.npz``).

Train and save from the command line::

    python -m htr_ray.recognition.lm --train text.txt --order 5 --out lm.json [--smoothing kn|wb]

or build a model's LM from the IAM-OnDB lines of TRAIN forms (the project's labels reader and split
rule, :func:`htr_ray.data.rows.load_rows`) plus the domain texts of :mod:`htr_ray.data.lexicons`,
leaving out every train line that shares a word trigram with a val or test line::

    python -m htr_ray.recognition.lm --iam ../shared/data/iam_ondb_lines --domain --order 6 \
        --out models/en_line_crnn_small/lm.npz

Both the input and the output may be any storage URI (local path, ``file://``, ``s3://``).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
from collections import defaultdict
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)

BOS = "\x02"  # start of line (never a real character of a transcription)
EOS = "\x03"  # end of line
FORMAT = "htr-ray-char-ngram/1"
COMPILED_FORMAT = "htr-ray-char-ngram-tables/1"


class LMError(ValueError):
    """An LM file that cannot be used; the message names the file."""


class CharNgramLM:
    """Interpolated character n-gram model.

    ``counts[n][context][char]`` holds, for n = order, the raw counts of ``context + char`` (context of
    ``order - 1`` characters); for lower orders Kneser-Ney uses continuation counts (in how many distinct
    left contexts the n-gram occurs) and Witten-Bell raw counts.
    """

    def __init__(self, order: int = 5, smoothing: str = "kn"):
        if order < 1:
            raise ValueError("order must be >= 1")
        if smoothing not in ("kn", "wb"):
            raise ValueError(f"smoothing must be 'kn' or 'wb', not {smoothing!r}")
        self.order = order
        self.smoothing = smoothing
        self.counts: list[dict[str, dict[str, int]]] = [dict() for _ in range(order)]  # index n-1 for n-grams
        self.vocab: set[str] = set()
        self.discounts: list[float] = [0.75] * order
        self._stats: list[dict[str, tuple[int, int]]] = []  # per order: context -> (total, distinct followers)
        self._cache: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------------------------------ training

    @classmethod
    def train(cls, lines: Iterable[str], order: int = 5, smoothing: str = "kn") -> "CharNgramLM":
        lm = cls(order, smoothing)
        lower_raw: list[dict[str, dict[str, int]]] = [defaultdict(lambda: defaultdict(int)) for _ in range(order)]
        n_lines = 0
        for line in lines:
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            n_lines += 1
            lm.vocab.update(line)
            seq = BOS * (order - 1) + line + EOS
            for i in range(order - 1, len(seq)):
                ch = seq[i]
                for n in range(1, order + 1):
                    ctx = seq[i - n + 1:i]
                    lower_raw[n - 1][ctx][ch] += 1
        if smoothing == "kn" and order > 1:
            # continuation counts for orders below the highest: N1+(. ctx ch) = distinct left extensions
            cont: list[dict[str, dict[str, set]]] = [defaultdict(lambda: defaultdict(set)) for _ in range(order)]
            for n in range(2, order + 1):
                for ctx, followers in lower_raw[n - 1].items():
                    if not ctx:
                        continue
                    left, short = ctx[0], ctx[1:]
                    for ch in followers:
                        cont[n - 2][short][ch].add(left)
            for n in range(1, order):
                lm.counts[n - 1] = {ctx: {ch: len(s) for ch, s in d.items()} for ctx, d in cont[n - 1].items()}
                # n-grams whose context is all start symbols have no left extension: keep their raw counts
                for ctx, d in lower_raw[n - 1].items():
                    if ctx and set(ctx) == {BOS}:
                        lm.counts[n - 1][ctx] = dict(d)
            lm.counts[order - 1] = {ctx: dict(d) for ctx, d in lower_raw[order - 1].items()}
        else:
            lm.counts = [{ctx: dict(d) for ctx, d in lower_raw[n].items()} for n in range(order)]
        lm._estimate_discounts()
        lm._finish()
        log.info("trained a %d-gram %s model on %d lines, %d characters in the vocabulary",
                 order, smoothing, n_lines, len(lm.vocab))
        return lm

    @classmethod
    def train_file(cls, uri: str, order: int = 5, smoothing: str = "kn") -> "CharNgramLM":
        from htr_ray.io import storage

        return cls.train(storage.read_text(uri).splitlines(), order=order, smoothing=smoothing)

    def _estimate_discounts(self) -> None:
        """Absolute discount per order, D = n1 / (n1 + 2 n2) (Ney et al.), clipped to a sane range."""
        for n in range(self.order):
            n1 = n2 = 0
            for d in self.counts[n].values():
                for c in d.values():
                    n1 += c == 1
                    n2 += c == 2
            d_est = n1 / (n1 + 2 * n2) if (n1 + 2 * n2) else 0.75
            self.discounts[n] = min(max(d_est, 0.1), 0.95)

    def _finish(self) -> None:
        self._stats = [{ctx: (sum(d.values()), len(d)) for ctx, d in self.counts[n].items()} for n in range(self.order)]
        self._cache = {}
        self._uniform = 1.0 / (len(self.vocab) + 2)  # vocabulary + EOS + one unknown symbol

    # ------------------------------------------------------------------------------------- scoring

    def _prob(self, ctx: str, ch: str) -> float:
        """Interpolated probability of ``ch`` after ``ctx`` (ctx already cut to at most order-1)."""
        p = self._uniform
        for n in range(0, len(ctx) + 1):  # from unigram up to the full context
            c = ctx[len(ctx) - n:] if n else ""
            stats = self._stats[n].get(c)
            if stats is None:
                continue  # unseen context: the lower-order estimate stands
            total, distinct = stats
            count = self.counts[n][c].get(ch, 0)
            if self.smoothing == "kn":
                d = self.discounts[n]
                p = max(count - d, 0.0) / total + (d * distinct / total) * p
            else:
                p = (count + distinct * p) / (total + distinct)
        return p

    def _context(self, history: str) -> str:
        k = self.order - 1
        if k == 0:
            return ""
        padded = BOS * k + history
        return padded[len(padded) - k:]

    def logprob(self, history: str, ch: str) -> float:
        """ln P(ch | the last order-1 characters of ``history``); history is the text so far."""
        return self.context_logprob(self._context(history), ch)

    # context-based interface used by beam search (the context is carried with each prefix)
    def start_context(self) -> str:
        return BOS * (self.order - 1)

    def next_context(self, ctx: str, ch: str) -> str:
        if self.order == 1:
            return ""
        return (ctx + ch)[-(self.order - 1):]

    def context_logprob(self, ctx: str, ch: str) -> float:
        """ln P(ch | ctx) for a context made by :meth:`start_context` / :meth:`next_context`."""
        key = (ctx, ch)
        v = self._cache.get(key)
        if v is None:
            v = math.log(self._prob(ctx, ch))
            if len(self._cache) < 2_000_000:
                self._cache[key] = v
        return v

    def context_end_logprob(self, ctx: str) -> float:
        return self.context_logprob(ctx, EOS)

    def end_logprob(self, history: str) -> float:
        return self.logprob(history, EOS)

    def score(self, text: str, eos: bool = True) -> float:
        """ln P(text) as one line."""
        total = sum(self.logprob(text[:i], ch) for i, ch in enumerate(text))
        return total + (self.end_logprob(text) if eos else 0.0)

    def perplexity(self, lines: Iterable[str]) -> float:
        lp = n = 0
        for line in lines:
            line = line.rstrip("\n")
            if not line:
                continue
            lp += self.score(line)
            n += len(line) + 1
        return math.exp(-lp / max(n, 1))

    def compile(self) -> "CompiledLM":
        """The same model as :class:`CompiledLM` tables (what beam search reads); made once."""
        compiled = getattr(self, "_compiled", None)
        if compiled is None:
            compiled = self._compiled = CompiledLM.from_ngram(self)
        return compiled

    # -------------------------------------------------------------------------------- persistence

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "order": self.order,
            "smoothing": self.smoothing,
            "discounts": self.discounts,
            "vocab": "".join(sorted(self.vocab)),
            "counts": self.counts,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "CharNgramLM":
        if d.get("format") != FORMAT:
            raise ValueError(f"not a character n-gram model (format {d.get('format')!r}, expected {FORMAT!r})")
        lm = cls(int(d["order"]), d["smoothing"])
        lm.discounts = [float(x) for x in d["discounts"]]
        lm.vocab = set(d["vocab"])
        lm.counts = [{ctx: {ch: int(c) for ch, c in m.items()} for ctx, m in level.items()} for level in d["counts"]]
        lm._finish()
        return lm

    def save(self, uri: str) -> None:
        from htr_ray.io import storage

        storage.write_bytes(uri, json.dumps(self.to_dict(), ensure_ascii=False).encode("utf-8"))

    @classmethod
    def load(cls, uri: str) -> "CharNgramLM":
        from htr_ray.io import storage

        return cls.from_dict(json.loads(storage.read_bytes(uri).decode("utf-8")))


class CompiledLM:
    """A :class:`CharNgramLM` as arrays: the form beam search reads, and the one a model ships.

    A *state* is a context the model has seen (the longest seen suffix of the last ``order - 1``
    characters: an unseen longer context scores exactly as its longest seen suffix). Per state:
    ``backoff`` (the next shorter seen suffix), ``log_gamma`` (its interpolation weight, natural log)
    and, for the symbols seen after it, the interpolated log-probability (``ent_*``, sorted by
    symbol). ln P(sym | s) is the entry of s if there is one, else ``log_gamma[s]`` + ln P(sym |
    backoff[s]), down to the empty context (state 0), where an unseen symbol gets
    ``log_gamma[0] + log_uniform``. Transitions: ``edge_*`` lists, per state x, the seen contexts x + c.

    Symbols: the vocabulary's characters in sorted order (0 .. V-1), then EOS (V), then UNK (V+1: any
    character never seen in training). The interface beam search uses (``start_context``,
    ``next_context``, ``context_logprob``, ``context_end_logprob``) takes and returns state ids.
    """

    def __init__(self, order: int, smoothing: str, vocab: str, arrays: dict[str, np.ndarray], source: dict | None = None):
        self.order = int(order)
        self.smoothing = smoothing
        self.vocab_chars = vocab
        self.vocab = set(vocab)
        self.source = source or {}
        self.sym = {ch: i for i, ch in enumerate(vocab)}
        self.eos_sym = len(vocab)
        self.unk_sym = len(vocab) + 1
        a = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        self.backoff = a["backoff"].astype(np.int32)
        self.depth = a["depth"].astype(np.int32)
        self.log_gamma = a["log_gamma"].astype(np.float64)
        self.ent_start = a["ent_start"].astype(np.int64)
        self.ent_sym = a["ent_sym"].astype(np.int32)
        self.ent_lp = a["ent_lp"].astype(np.float64)
        self.edge_start = a["edge_start"].astype(np.int64)
        self.edge_sym = a["edge_sym"].astype(np.int32)
        self.edge_to = a["edge_to"].astype(np.int32)
        self.log_uniform = float(a["log_uniform"][0])
        self.start_state = int(a["start_state"][0])
        self._class_syms: dict[str, np.ndarray] = {}
        self._check()

    def _check(self) -> None:
        S = len(self.backoff)
        ok = (S >= 1 and len(self.depth) == S and len(self.log_gamma) == S and len(self.ent_start) == S + 1
              and len(self.edge_start) == S + 1 and self.ent_start[-1] == len(self.ent_sym) == len(self.ent_lp)
              and self.edge_start[-1] == len(self.edge_sym) == len(self.edge_to) and 0 <= self.start_state < S
              and (S == 1 or (self.backoff[1:].min() >= 0 and self.backoff.max() < S))
              and (len(self.edge_to) == 0 or (self.edge_to.min() >= 0 and self.edge_to.max() < S))
              and np.all(np.diff(self.ent_start) >= 0) and np.all(np.diff(self.edge_start) >= 0))
        if not ok:
            raise ValueError("inconsistent LM tables")

    # ------------------------------------------------------------------------------ compiling

    @classmethod
    def from_ngram(cls, lm: CharNgramLM) -> "CompiledLM":
        k = lm.order - 1
        contexts = [""] + sorted({c for level in lm.counts for c in level if c}, key=lambda c: (len(c), c))
        ids = {c: i for i, c in enumerate(contexts)}
        vocab = "".join(sorted(lm.vocab))
        sym = {ch: i for i, ch in enumerate(vocab)}
        sym[EOS] = len(vocab)
        S = len(contexts)
        backoff = np.zeros(S, np.int32)
        depth = np.zeros(S, np.int32)
        log_gamma = np.zeros(S, np.float64)
        ent_start = np.zeros(S + 1, np.int64)
        ent_sym: list[int] = []
        ent_lp: list[float] = []
        children: list[list[tuple[int, int]]] = [[] for _ in range(S)]
        probs: dict[tuple[int, int], float] = {}
        for i, ctx in enumerate(contexts):
            depth[i] = len(ctx)
            if ctx:
                j = 1
                while ctx[j:] not in ids:
                    j += 1
                backoff[i] = ids[ctx[j:]]
                if ctx[:-1] in ids and ctx[-1] in sym:
                    children[ids[ctx[:-1]]].append((sym[ctx[-1]], i))
            stats = lm._stats[len(ctx)].get(ctx) if len(ctx) < len(lm._stats) else None
            if stats is None:  # a context only known as a prefix of longer ones: pure backoff
                log_gamma[i] = 0.0
                followers = []
            else:
                total, distinct = stats
                if lm.smoothing == "kn":
                    gamma = lm.discounts[len(ctx)] * distinct / total
                else:
                    gamma = distinct / (total + distinct)
                log_gamma[i] = math.log(gamma) if gamma > 0 else -1e30
                followers = sorted(lm.counts[len(ctx)][ctx], key=lambda ch: sym.get(ch, len(sym)))
            counts = lm.counts[len(ctx)].get(ctx, {}) if stats is not None else {}
            d_n = lm.discounts[len(ctx)]
            b = int(backoff[i])
            for ch in followers:
                if ch not in sym:
                    continue
                # P(ch | ctx) interpolates with P(ch | backoff), an entry already made (contexts go by
                # length, and a seen n-gram's suffix is seen); anything else is computed in full
                lower = probs.get((b, sym[ch])) if ctx else lm._uniform
                if lower is None:
                    p = lm._prob(ctx, ch)
                elif lm.smoothing == "kn":
                    p = max(counts[ch] - d_n, 0.0) / stats[0] + (d_n * stats[1] / stats[0]) * lower
                else:
                    p = (counts[ch] + stats[1] * lower) / (stats[0] + stats[1])
                probs[(i, sym[ch])] = p
                ent_sym.append(sym[ch])
                ent_lp.append(math.log(p))
            ent_start[i + 1] = len(ent_sym)
        edge_start = np.zeros(S + 1, np.int64)
        edge_sym: list[int] = []
        edge_to: list[int] = []
        for i in range(S):
            for c, to in sorted(children[i]):
                edge_sym.append(c)
                edge_to.append(to)
            edge_start[i + 1] = len(edge_sym)
        start = BOS * k
        while start not in ids:
            start = start[1:]
        arrays = {"backoff": backoff, "depth": depth, "log_gamma": log_gamma, "ent_start": ent_start,
                  "ent_sym": np.array(ent_sym, np.int32), "ent_lp": np.array(ent_lp, np.float64),
                  "edge_start": edge_start, "edge_sym": np.array(edge_sym, np.int32),
                  "edge_to": np.array(edge_to, np.int32), "log_uniform": np.array([math.log(lm._uniform)]),
                  "start_state": np.array([ids[start]], np.int64)}
        return cls(lm.order, lm.smoothing, vocab, arrays)

    # -------------------------------------------------------------------------------- scoring

    def symbol(self, ch: str) -> int:
        return self.eos_sym if ch == EOS else self.sym.get(ch, self.unk_sym)

    def state_logprob(self, state: int, sym: int) -> float:
        acc = 0.0
        s = state
        while True:
            lo, hi = int(self.ent_start[s]), int(self.ent_start[s + 1])
            j = lo + int(np.searchsorted(self.ent_sym[lo:hi], sym))
            if j < hi and self.ent_sym[j] == sym:
                return acc + float(self.ent_lp[j])
            acc += float(self.log_gamma[s])
            if s == 0:
                return acc + self.log_uniform
            s = int(self.backoff[s])

    def next_state(self, state: int, sym: int) -> int:
        if self.order == 1:
            return 0
        s = int(self.backoff[state]) if self.depth[state] >= self.order - 1 and state else state
        while True:
            lo, hi = int(self.edge_start[s]), int(self.edge_start[s + 1])
            j = lo + int(np.searchsorted(self.edge_sym[lo:hi], sym))
            if j < hi and self.edge_sym[j] == sym:
                return int(self.edge_to[j])
            if s == 0:
                return 0
            s = int(self.backoff[s])

    # the context interface of CharNgramLM (contexts are state ids here)
    def start_context(self) -> int:
        return self.start_state

    def next_context(self, ctx: int, ch: str) -> int:
        return self.next_state(ctx, self.symbol(ch))

    def context_logprob(self, ctx: int, ch: str) -> float:
        return self.state_logprob(ctx, self.symbol(ch))

    def context_end_logprob(self, ctx: int) -> float:
        return self.state_logprob(ctx, self.eos_sym)

    def score(self, text: str, eos: bool = True) -> float:
        s, total = self.start_state, 0.0
        for ch in text:
            total += self.context_logprob(s, ch)
            s = self.next_context(s, ch)
        return total + (self.context_end_logprob(s) if eos else 0.0)

    def perplexity(self, lines: Iterable[str]) -> float:
        lp = n = 0
        for line in lines:
            line = line.rstrip("\n")
            if line:
                lp += self.score(line)
                n += len(line) + 1
        return math.exp(-lp / max(n, 1))

    def compile(self) -> "CompiledLM":
        return self

    def class_symbols(self, charset) -> np.ndarray:
        """The LM symbol of each CTC class (class 0, the blank, maps to UNK and is never looked up)."""
        key = "".join(charset)
        cached = self._class_syms.get(key)
        if cached is None:
            cached = np.array([self.unk_sym] + [self.symbol(ch) for ch in key], dtype=np.int64)
            self._class_syms[key] = cached
        return cached

    def kernel_args(self) -> tuple:
        """The arrays the compiled beam search takes, in its order."""
        return (self.ent_start, self.ent_sym, self.ent_lp, self.backoff, self.log_gamma, self.log_uniform,
                self.edge_start, self.edge_sym, self.edge_to, self.depth, self.order)

    # ---------------------------------------------------------------------------- persistence

    def to_bytes(self) -> bytes:
        meta = {"format": COMPILED_FORMAT, "order": self.order, "smoothing": self.smoothing,
                "vocab": self.vocab_chars, "source": self.source}
        buf = io.BytesIO()
        np.savez_compressed(
            buf, meta=np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), np.uint8),
            backoff=self.backoff, depth=self.depth.astype(np.int8), log_gamma=self.log_gamma.astype(np.float32),
            ent_start=self.ent_start.astype(np.int32), ent_sym=self.ent_sym.astype(np.int16),
            ent_lp=self.ent_lp.astype(np.float32), edge_start=self.edge_start.astype(np.int32),
            edge_sym=self.edge_sym.astype(np.int16), edge_to=self.edge_to,
            log_uniform=np.array([self.log_uniform]), start_state=np.array([self.start_state], np.int64))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "CompiledLM":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            if meta.get("format") != COMPILED_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {COMPILED_FORMAT!r}")
            arrays = {k: z[k] for k in z.files if k != "meta"}
        return cls(meta["order"], meta["smoothing"], meta["vocab"], arrays, meta.get("source"))

    def save(self, uri: str) -> None:
        from htr_ray.io import storage

        storage.write_bytes(uri, self.to_bytes())


def load_lm(uri: str) -> "CompiledLM":
    """An LM file (``.npz`` compiled tables or ``.json`` counts, any URI) ready for beam search.
    Raises :class:`LMError` naming the file when it is missing, truncated or not an LM."""
    from htr_ray.io import storage

    try:
        data = storage.read_bytes(uri)
    except Exception as exc:
        raise LMError(f"language model {uri}: cannot be read ({exc})") from exc
    try:
        if data[:2] == b"PK":  # a zip: the compiled tables
            return CompiledLM.from_bytes(data)
        return CharNgramLM.from_dict(json.loads(data.decode("utf-8"))).compile()
    except Exception as exc:
        raise LMError(f"language model {uri}: not a usable character n-gram LM "
                      f"({type(exc).__name__}: {exc})") from exc


def _word_trigrams(text: str) -> set[tuple[str, ...]]:
    w = text.split()
    return {tuple(w[i:i + 3]) for i in range(len(w) - 2)}


def iam_text(uri: str, exclude_heldout: bool = True) -> tuple[list[str], dict]:
    """The transcriptions of the IAM-style data at ``uri`` (a folder with labels.tsv, or sample
    shards) from TRAIN forms only, read with the training loader and its split rule
    (:func:`htr_ray.data.rows.load_rows`). With ``exclude_heldout`` a train line that shares a
    word trigram with any val or test line is left out too (IAM-OnDB forms of different writers copy
    the same LOB sentences), so the LM never saw a sentence the model is tuned or measured on."""
    from htr_ray.data.rows import load_rows

    train = [r["text"] for r in load_rows(uri, "train") if r.get("text", "").strip()]
    info = {"train_lines": len(train)}
    if exclude_heldout:
        held: set = set()
        for split in ("val", "test"):
            for r in load_rows(uri, split):
                held |= _word_trigrams(r.get("text", ""))
        train = [t for t in train if not (_word_trigrams(t) & held)]
        info["kept_lines"] = len(train)
    return train, info


def build(iam: str | None = None, text: str | None = None, domain: bool = False, order: int = 6,
          smoothing: str = "kn", exclude_heldout: bool = True) -> CompiledLM:
    """Train a character LM on IAM train-form text (``iam``), a text file (``text``) and/or the
    domain texts of :mod:`htr_ray.data.lexicons` (``domain``); the result records what it was built from."""
    from htr_ray.io import storage

    lines: list[str] = []
    source: dict = {"order": order, "smoothing": smoothing}
    if iam:
        iam_lines, info = iam_text(iam, exclude_heldout=exclude_heldout)
        lines += iam_lines
        source["iam"] = {"uri": iam, "exclude_heldout_trigrams": exclude_heldout, **info}
    if text:
        extra = [ln for ln in storage.read_text(text).splitlines() if ln.strip()]
        lines += extra
        source["text"] = {"uri": text, "lines": len(extra)}
    if domain:
        from htr_ray.data import lexicons

        dom = lexicons.domain_texts()
        lines += dom
        source["domain_texts"] = {"module": "htr_ray.data.lexicons.domain_texts", "lines": len(dom)}
    if not lines:
        raise ValueError("no training text: give --iam, --train and/or --domain")
    compiled = CharNgramLM.train(lines, order=order, smoothing=smoothing).compile()
    compiled.source = source
    return compiled


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m htr_ray.recognition.lm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", default=None, help="text file (URI), one line per line of handwriting")
    ap.add_argument("--iam", default=None, help="IAM-style data (folder with labels.tsv, or shards): the text "
                                                "of its TRAIN forms")
    ap.add_argument("--keep-heldout-trigrams", action="store_true",
                    help="with --iam: keep train lines that share a word trigram with a val or test line")
    ap.add_argument("--domain", action="store_true", help="add the cheque, prescription and homework texts of "
                                                          "htr_ray.data.lexicons")
    ap.add_argument("--order", type=int, default=5, help="n-gram order (characters)")
    ap.add_argument("--smoothing", choices=["kn", "wb"], default="kn", help="Kneser-Ney or Witten-Bell")
    ap.add_argument("--out", required=True, help="where to write the model (URI): .npz compiled tables (what a "
                                                 "model ships), else JSON counts")
    ap.add_argument("--heldout", default=None, help="optional text file to report perplexity on")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.out.endswith(".npz"):
        lm = build(iam=args.iam, text=args.train, domain=args.domain, order=args.order, smoothing=args.smoothing,
                   exclude_heldout=not args.keep_heldout_trigrams)
        lm.save(args.out)
        print(f"wrote {args.out}: order {lm.order}, {lm.smoothing}, vocabulary {len(lm.vocab)} characters, "
              f"{len(lm.backoff)} context states, from {json.dumps(lm.source)}")
    else:
        if args.iam or args.domain:
            ap.error("--iam and --domain write compiled tables: give an --out ending in .npz")
        if not args.train:
            ap.error("--train is required")
        lm = CharNgramLM.train_file(args.train, order=args.order, smoothing=args.smoothing)
        lm.save(args.out)
        print(f"wrote {args.out}: order {lm.order}, {lm.smoothing}, vocabulary {len(lm.vocab)} characters")
    if args.heldout:
        from htr_ray.io import storage

        print(f"held-out perplexity per character: {lm.perplexity(storage.read_text(args.heldout).splitlines()):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
