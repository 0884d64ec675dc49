"""The OpenCV line finder behind the :class:`~htr_ray.layout.base.LineFinder` protocol.

The model-free segmenter (:func:`htr_ray.layout.segment.segment_page`: deskew, binarise, drop rules,
group ink into lines), optionally followed by the printed-text filter (:mod:`htr_ray.layout.printed`),
which cuts each found line into its printed and handwritten pieces and flags their kind. The page
reader (:mod:`htr_ray.pages.reader`) uses it when the learned finder (:mod:`htr_ray.layout.finder`) is
not there or when asked for by name (``--line-finder opencv``).

Each line gets a box, its rectangle as polygon, and a baseline estimated from the crop's ink profile
(the bottom of the densest band of rows: the writing's x-height band sits on the baseline).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from htr_ray.layout import segment
from htr_ray.layout.base import HANDWRITTEN, PRINTED, FoundLine, Layout, crop

log = logging.getLogger(__name__)


def estimate_baseline(gray_crop: np.ndarray, fraction: float = 0.4) -> int | None:
    """Row (in the crop) of the line's baseline: the lowest row whose darkness is at least ``fraction``
    of the darkest row's, smoothed over 3 rows. ``None`` for a crop without contrast."""
    if gray_crop.size == 0 or gray_crop.shape[0] < 3:
        return None
    dark = (255.0 - gray_crop.astype(np.float32)).sum(axis=1)
    dark -= dark.min()
    if dark.max() <= 0:
        return None
    dark = np.convolve(dark, np.ones(3, np.float32) / 3, mode="same")
    rows = np.flatnonzero(dark >= fraction * dark.max())
    return int(rows[-1]) if rows.size else None


class OpenCVLineFinder:
    """``find(gray) -> Layout`` with :func:`segment.segment_page`, then (when ``printed_filter`` is a
    :class:`~htr_ray.layout.printed.PrintedFilter` or its URI) each line split into pieces of one kind.
    Should the filter fail on a page, its lines stay whole and handwritten (logged): the page is still
    read."""

    name = "opencv"

    def __init__(self, printed_filter=None, deskew: bool = True):
        if isinstance(printed_filter, str):
            from htr_ray.layout.printed import load_cached

            printed_filter = load_cached(printed_filter)
        self.printed_filter = printed_filter
        self.deskew = deskew

    def find(self, gray: np.ndarray) -> Layout:
        t0 = time.perf_counter()
        seg = segment.segment_page(gray, deskew=self.deskew)
        pieces: list[tuple[list[int], str]] = [(list(b), HANDWRITTEN) for b in seg.boxes]
        if self.printed_filter is not None and seg.boxes:
            pieces = self._split(seg.page, seg.boxes) or pieces
        lines = []
        for box, kind in pieces:
            x0, y0, x1, y1 = box
            base = estimate_baseline(crop(seg.page, box))
            baseline = [[x0, y0 + base], [x1, y0 + base]] if base is not None else []
            lines.append(FoundLine(box=box, polygon=[[x0, y0], [x1, y0], [x1, y1], [x0, y1]], baseline=baseline,
                                   kind=kind))
        return Layout(page=seg.page, lines=lines, angle=seg.angle, seconds=time.perf_counter() - t0)

    def _split(self, page: np.ndarray, boxes: list[list[int]]) -> list[tuple[list[int], str]] | None:
        try:
            split = self.printed_filter.split_lines([crop(page, b) for b in boxes])
        except Exception:  # a filter fault must not cost the page its transcription
            log.exception("printed-text filter failed; the page's lines are kept whole")
            return None
        out = []
        for (x0, y0, x1, y1), parts in zip(boxes, split):
            for a, b, printed in parts:
                out.append(([x0 + int(a), y0, x0 + int(b), y1], PRINTED if printed else HANDWRITTEN))
        return out
