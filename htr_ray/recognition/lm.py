"""Character n-gram language model for steering CTC beam search.

A :class:`CharNgramLM` is learned from a plain text file (one line or sentence per line): a drug list,
cheque amount phrases, or running English text. Smoothing is interpolated Kneser-Ney (default) or
Witten-Bell, both interpolating down to a uniform distribution over the vocabulary plus one unknown
symbol, so every character (even one never seen in training) gets a finite log-probability.

Scores are natural logarithms. A line starts with ``order - 1`` start symbols (``BOS``) and ends with
the end symbol (``EOS``); :meth:`CharNgramLM.logprob` scores one character after a context string,
and :meth:`CharNgramLM.end_logprob` the end of the line.

Train and save from the command line::

    python -m htr_ray.recognition.lm --train text.txt --order 5 --out lm.json [--smoothing kn|wb]

Both the input and the output may be any storage URI (local path, ``file://``, ``s3://``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections import defaultdict
from typing import Iterable

log = logging.getLogger(__name__)

BOS = "\x02"  # start of line (never a real character of a transcription)
EOS = "\x03"  # end of line
FORMAT = "htr-ray-char-ngram/1"


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
        ctx = self._context(history)
        key = (ctx, ch)
        v = self._cache.get(key)
        if v is None:
            v = math.log(self._prob(ctx, ch))
            if len(self._cache) < 2_000_000:
                self._cache[key] = v
        return v

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m htr_ray.recognition.lm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True, help="text file (URI), one line per line of handwriting")
    ap.add_argument("--order", type=int, default=5, help="n-gram order (characters)")
    ap.add_argument("--smoothing", choices=["kn", "wb"], default="kn", help="Kneser-Ney or Witten-Bell")
    ap.add_argument("--out", required=True, help="where to write the model JSON (URI)")
    ap.add_argument("--heldout", default=None, help="optional text file to report perplexity on")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    lm = CharNgramLM.train_file(args.train, order=args.order, smoothing=args.smoothing)
    lm.save(args.out)
    print(f"wrote {args.out}: order {lm.order}, {lm.smoothing}, vocabulary {len(lm.vocab)} characters")
    if args.heldout:
        from htr_ray.io import storage

        print(f"held-out perplexity per character: {lm.perplexity(storage.read_text(args.heldout).splitlines()):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
