"""Text-recognition metrics: character and word error rates, accuracy.

CER = (substitutions + deletions + insertions) / reference characters, summed over the corpus (not
averaged per line, so long lines weigh more, as in the IAM literature). WER likewise on
whitespace-separated words.
"""

from __future__ import annotations

from typing import Sequence

import editdistance


def edit_distance(a: Sequence, b: Sequence) -> int:
    return int(editdistance.eval(a, b))


def char_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance, reference length) in characters."""
    return edit_distance(ref, hyp), len(ref)


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    r, h = ref.split(), hyp.split()
    return edit_distance(r, h), len(r)


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus CER. An empty reference set gives 0.0; an empty reference with a non-empty hypothesis
    counts its insertions against a denominator of at least 1."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    errors = total = 0
    for r, h in zip(refs, hyps):
        e, n = char_errors(r, h)
        errors, total = errors + e, total + n
    return errors / max(total, 1) if (errors or total) else 0.0


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    errors = total = 0
    for r, h in zip(refs, hyps):
        e, n = word_errors(r, h)
        errors, total = errors + e, total + n
    return errors / max(total, 1) if (errors or total) else 0.0


def accuracy(labels: Sequence, predictions: Sequence) -> float:
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if not labels:
        return 0.0
    return sum(1 for a, b in zip(labels, predictions) if a == b) / len(labels)
