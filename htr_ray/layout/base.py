"""What a line finder returns: the page it analysed and its text lines, each with a box, a polygon, a
baseline, a kind and its place in reading order. Every line finder (the learned one in
:mod:`htr_ray.layout.finder`, the OpenCV one in :mod:`htr_ray.layout.segment`) returns a :class:`Layout`,
and the page reader (:mod:`htr_ray.pages.reader`) takes nothing else from it.

Coordinates are pixels of ``Layout.page``: the page as given, rotated by ``Layout.angle`` degrees to
deskew it (same size; :func:`to_input_coordinates` maps them back onto the scan as given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import cv2
import numpy as np

HANDWRITTEN, PRINTED = "handwritten", "printed"
KINDS = (HANDWRITTEN, PRINTED)


@dataclass
class FoundLine:
    box: list[int]  # [x0, y0, x1, y1]
    polygon: list[list[int]] = field(default_factory=list)  # [[x, y], ...] clockwise outline; [] = the box
    baseline: list[list[int]] = field(default_factory=list)  # [[x, y], ...] left to right; [] = unknown
    kind: str = HANDWRITTEN
    score: float = 1.0  # the finder's confidence that this is a text line

    def outline(self) -> list[list[int]]:
        if self.polygon:
            return self.polygon
        x0, y0, x1, y1 = self.box
        return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


class Layout:
    """A page's lines. ``page`` is the deskewed gray page they refer to (uint8, the input's size). A finder
    that deskews may hand over the page as given (``source``) instead: ``page`` is then rotated on first
    use, and :meth:`crop` rotates only the pixels of the box it is asked for (a page reader that crops
    its lines never pays for rotating the whole page)."""

    def __init__(self, page: np.ndarray | None = None, lines: list[FoundLine] | None = None, angle: float = 0.0,
                 seconds: float = 0.0, *, source: np.ndarray | None = None, border: int = 255):
        if page is None and source is None:
            raise ValueError("a Layout needs its page (deskewed) or its source page and angle")
        self._page = page
        self.lines = list(lines or [])  # in reading order
        self.angle = float(angle)  # degrees the input was rotated by to deskew it
        self.seconds = seconds
        self.source = source
        self.border = int(border)

    def __repr__(self) -> str:
        shape = (self._page if self._page is not None else self.source).shape
        return f"Layout({len(self.lines)} lines, page {shape[1]}x{shape[0]}, angle {self.angle:.2f})"

    def _matrix(self) -> np.ndarray:
        h, w = self.source.shape[:2]
        return cv2.getRotationMatrix2D((w / 2, h / 2), self.angle, 1.0)

    @property
    def page(self) -> np.ndarray:
        if self._page is None:
            h, w = self.source.shape[:2]
            if abs(self.angle) < 1e-3:
                self._page = self.source
            else:
                self._page = cv2.warpAffine(self.source, self._matrix(), (w, h), flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_CONSTANT, borderValue=self.border)
        return self._page

    def crop(self, box: Sequence[int]) -> np.ndarray:
        """The pixels of ``box`` (deskewed page coordinates) of the deskewed page: ``crop(layout.page, box)``
        without rotating more than the box."""
        if self._page is not None or abs(self.angle) < 1e-3:
            return crop(self.page, box)
        h, w = self.source.shape[:2]
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, max(0, x1)), min(h, max(0, y1))
        if x1 <= x0 or y1 <= y0:
            return self.source[:0, :0]
        m = self._matrix()
        m[0, 2] -= x0
        m[1, 2] -= y0
        return cv2.warpAffine(self.source, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=self.border)

    def crop_line(self, line: FoundLine) -> np.ndarray:
        """The line's box (:meth:`crop`) with everything outside its polygon painted paper: the ruling
        under the words and the ascenders and descenders of the lines above and below fall inside a
        padded box, and the recogniser reads them as characters (chosen on VAL pages,
        ``bench/page_quality.py --split val --finders learned learned-box``: docs/transcription.md).
        A line without a polygon is its box."""
        c = self.crop(line.box)
        if not line.polygon or c.size == 0:
            return c
        x0, y0 = int(line.box[0]), int(line.box[1])
        inside = np.zeros(c.shape[:2], np.uint8)
        cv2.fillPoly(inside, [np.round(np.asarray(line.polygon, np.float64) - (x0, y0)).astype(np.int32)], 1)
        if inside.all():
            return c
        c = np.array(c)  # a copy: never paint the page
        c[inside == 0] = paper_level(c)
        return c



class LineFinder(Protocol):
    name: str

    def find(self, gray: np.ndarray) -> Layout:
        """Lines of one gray page (2-D uint8), in reading order."""


def paper_level(gray: np.ndarray, quantile: float = 0.9) -> int:
    """The paper's gray level in a crop: its 90th percentile (ink is dark and covers far less than 10 %
    of a line's box), from a histogram: cheap at every line."""
    hist = np.bincount(np.asarray(gray, np.uint8).ravel(), minlength=256)
    return int(np.searchsorted(np.cumsum(hist), quantile * max(int(hist.sum()), 1)))


def crop(gray: np.ndarray, box: Sequence[int]) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    return gray[max(0, y0):max(0, y1), max(0, x0):max(0, x1)]


def rotate_points(points: Sequence[Sequence[float]], angle: float, size: tuple[int, int]) -> np.ndarray:
    """Points of the deskewed page (rotated by ``angle`` about the centre) back onto the page as given."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if abs(angle) < 1e-3 or pts.size == 0:
        return pts
    w, h = size
    m = cv2.getRotationMatrix2D((w / 2, h / 2), -angle, 1.0)
    return np.hstack([pts, np.ones((len(pts), 1))]) @ m.T


def to_input_coordinates(box: Sequence[int], angle: float, size: tuple[int, int]) -> list[int]:
    """A box of the deskewed page as the axis-aligned hull of its rotated corners on the page as given."""
    if abs(angle) < 1e-3:
        return [int(v) for v in box]
    w, h = size
    x0, y0, x1, y1 = box
    c = rotate_points([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], angle, size)
    return [max(0, int(np.floor(c[:, 0].min()))), max(0, int(np.floor(c[:, 1].min()))),
            min(w, int(np.ceil(c[:, 0].max()))), min(h, int(np.ceil(c[:, 1].max())))]


def points_to_input(points: Sequence[Sequence[float]], angle: float, size: tuple[int, int]) -> list[list[int]]:
    w, h = size
    p = rotate_points(points, angle, size)
    # one numpy call for all points, not one per coordinate: hundreds of points a page (np.rint rounds
    # half to even, as round() does)
    return np.clip(np.rint(p), 0, (w, h)).astype(np.int64).tolist()
