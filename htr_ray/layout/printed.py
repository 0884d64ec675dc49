"""Printed or handwritten: keep a form's printed labels from swamping its handwriting.

A line found on a cheque or a prescription often holds a printed label and the handwriting after it
("PAY TO THE ORDER OF  C. Garza"), and whole lines of a form are printed (the bank's name, the clinic's
address). The line recognizer reads both; only the handwriting is what the archive is transcribed for.

So every found line is cut into words at wide column gaps (:func:`word_spans`), a small CNN
(``word_kind_cnn``, :mod:`htr_ray.models.char_cnn`) says of each word whether it is printed, and
neighbouring words of one kind are joined again (:meth:`PrintedFilter.split_lines`). The page assembly
(:mod:`htr_ray.pages`) reads every piece and flags the printed ones; nothing is dropped.

This module is the inference side only. The classifier is trained, measured and its threshold set by
:mod:`htr_ray.training.printed_filter` (``python -m htr_ray.training.printed_filter``), on generated
pages whose printed and handwritten ink are known pixel by pixel. Its accuracy on pages in unseen handwriting fonts, and how many words of real IAM-OnDB handwriting it
would wrongly call printed, are written into the checkpoint's ``model.json`` (``metrics``).
"""

from __future__ import annotations

import functools
import logging
from typing import Sequence

import cv2
import numpy as np

from htr_ray.io import images
from htr_ray.layout import segment
from htr_ray import paths

log = logging.getLogger(__name__)

CLASSES = ["handwritten", "printed"]
DEFAULT_FILTER = paths.shipped_model("printed_filter", env="HTR_PRINTED_FILTER")


def word_spans(gray: np.ndarray, gap_factor: float = 0.5) -> list[tuple[int, int]]:
    """Column ranges ``(x0, x1)`` of the words of a line crop: runs of ink columns, joined across gaps
    narrower than ``gap_factor`` x the line's ink height. A crop without ink is one span."""
    h, w = gray.shape[:2]
    if h < 2 or w < 2:
        return [(0, w)]
    ink = segment.binarize(gray)
    ink = drop_specks(ink)
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if cols.size == 0:
        return [(0, w)]
    min_gap = max(3, int(gap_factor * (rows[-1] - rows[0] + 1)))
    spans: list[list[int]] = [[int(cols[0]), int(cols[0]) + 1]]
    for c in cols[1:]:
        if c - spans[-1][1] >= min_gap:
            spans.append([int(c), int(c) + 1])
        else:
            spans[-1][1] = int(c) + 1
    pad = max(1, min_gap // 3)
    return [(max(0, a - pad), min(w, b + pad)) for a, b in spans]


def drop_specks(ink: np.ndarray, min_area: int = 10) -> np.ndarray:
    """The ink mask without components smaller than ``min_area`` pixels (scan noise), so that specks
    neither bridge two words nor make words of their own."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    keep = np.zeros(n, np.uint8)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def word_input(gray: np.ndarray, height: int = 32, width: int = 128) -> np.ndarray:
    """A word crop as the classifier's input: :func:`images.normalize_line` at ``height``, then the
    middle ``width`` columns of a long word or zero (paper) padding on the right of a short one."""
    x = images.normalize_line(gray, height, max_width=4 * width, min_width=8)
    if x.shape[1] >= width:
        start = (x.shape[1] - width) // 2
        return x[:, start:start + width]
    out = np.zeros((height, width), np.float32)
    out[:, : x.shape[1]] = x
    return out


class PrintedFilter:
    """A loaded ``word_kind_cnn`` checkpoint: P(printed) per word, and line crops split by kind."""

    def __init__(self, model, meta: dict, threshold: float | None = None):
        import torch

        self.torch = torch
        self.model = model.eval()
        self.meta = meta
        self.height = int(meta["input"]["height"])
        self.width = int(meta["input"]["width"])
        # P(printed) from which a word counts as printed; the checkpoint carries the one chosen on
        # validation data (calling handwriting "printed" hides it from the page text: the worse mistake)
        self.threshold = float(threshold if threshold is not None else meta.get("threshold", 0.5))

    @classmethod
    def from_uri(cls, uri: str, threshold: float | None = None) -> "PrintedFilter":
        from htr_ray.models import checkpoint

        model, meta = checkpoint.load(uri)
        if meta.get("kind") != "word_kind":
            raise ValueError(f"{uri} is a {meta.get('kind')!r} model, not a printed-text filter (word_kind)")
        return cls(model, meta, threshold)

    def printed_probability(self, crops: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        if not len(crops):
            return np.zeros(0, np.float32)
        torch = self.torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(crops), batch_size):
                x = np.stack([word_input(c, self.height, self.width) for c in crops[i:i + batch_size]])[:, None]
                out.append(torch.softmax(self.model(torch.from_numpy(x)), -1)[:, 1].numpy())
        return np.concatenate(out)

    def split_lines(self, crops: Sequence[np.ndarray]) -> list[list[tuple[int, int, bool]]]:
        """Per line crop: its pieces ``(x0, x1, printed)``, left to right, neighbouring words of one
        kind joined. Every word of the line is in exactly one piece."""
        spans = [word_spans(c) for c in crops]
        words = [c[:, a:b] for c, sp in zip(crops, spans) for a, b in sp]
        probs = self.printed_probability(words)
        out, k = [], 0
        for crop, sp in zip(crops, spans):
            flags = [bool(p >= self.threshold) for p in probs[k:k + len(sp)]]
            k += len(sp)
            # a short word (a digit, a sign, a fragment) says little on its own: where both kinds are
            # on the line, it takes the kind of the nearest word at least as wide as the line is tall
            wide = [i for i, (a, b) in enumerate(sp) if b - a >= crop.shape[0]]
            if wide and len({flags[i] for i in range(len(sp))}) > 1:
                flags = [f if i in wide else flags[min(wide, key=lambda j: abs(j - i))] for i, f in enumerate(flags)]
            pieces: list[list] = []
            for (a, b), printed in zip(sp, flags):
                if pieces and pieces[-1][2] == printed:
                    pieces[-1][1] = b
                else:
                    pieces.append([a, b, printed])
            out.append([(a, b, p) for a, b, p in pieces])
        return out


@functools.lru_cache(maxsize=4)
def load_cached(uri: str) -> PrintedFilter:
    """One filter per process and URI (the bulk job's read stage calls this per batch)."""
    return PrintedFilter.from_uri(uri)
