"""The page reader: page bytes -> page results, the one way every runtime reads a page.

    reader = PageReader()                               # the learned line finder if shipped, else OpenCV
    results = reader.read(uri, data, recognizer)        # one process: list[PageResult], one per page

Split in two for runtimes that recognise elsewhere (the bulk job's actor pool, Serve's batched
replicas):

    prepared = reader.prepare(uri, data)                # decode every page, find lines, deskew, crop
    for p in prepared:                                  # a PreparedPage, or a PageResult for an error
        line_results = recognizer.recognize(p.crops)    # anywhere: only the crops need to travel
        result = reader.assemble(p, line_results)       # -> PageResult

A :class:`PreparedPage` carries the line crops (small uint8 arrays), each line's geometry already in
the input's coordinates, its kind, and the page's size, deskew angle and stage timings; never the page
itself. :meth:`PageReader.assemble` needs nothing but that (the crops may be dropped once read), so
the bulk job assembles on its driver from the actors' line results. Ray-free.

Bad input is data: an unreadable object gives one :class:`~htr_ray.pages.results.PageResult` with
``status == "error"`` and an ``error_kind`` (:mod:`htr_ray.io.images`: empty, truncated, undecodable,
too_small, too_large; ``read_error`` from storage); a blank page gives an ok result with no lines.

Photos and pages fed in the wrong way round: a dark surround around the paper is painted paper before
the lines are found (:mod:`htr_ray.layout.paper`); a page whose handwriting reads unsure
(:meth:`PageReader.unsure`) is read turned 180 degrees as well and the surer reading is kept
(:meth:`PageReader.pick_orientation`; ``angle`` then says 180 more). ``read`` / ``read_many`` and Serve
do that; the GPU path of the bulk job, which assembles on its driver without the crops, reads pages
as found. A page turned 90 degrees is not detected: its lines come back few and unsure.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from htr_ray.io import images, storage
from htr_ray.layout import paper
from htr_ray.layout.base import HANDWRITTEN, FoundLine, LineFinder, points_to_input, to_input_coordinates
from htr_ray.pages.results import PageResult, TextLine

log = logging.getLogger(__name__)

SCAN_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
MIN_PAGE_SIDE = 16  # smaller than this cannot hold a line of handwriting
LINE_FINDERS = ("auto", "learned", "opencv")
RECOGNITION_FAILED = "recognition_failed"
TURN_CHECK_BELOW = 0.35  # see PageReader.unsure
TURN_MARGIN = 0.1


# ------------------------------------------------------------------------------------ line finders


def learned_finder_uri() -> str | None:
    """The shipped learned line finder's URI, or None when its module or model is not there."""
    try:
        from htr_ray.layout import finder
    except ImportError:
        return None
    uri = getattr(finder, "DEFAULT_LINE_FINDER", None)
    if not uri or not hasattr(finder, "load_line_finder"):
        return None
    try:
        return uri if storage.exists(storage.join(uri, "model.json")) or storage.exists(uri) else None
    except Exception:  # an unreachable model store: fall back, do not fail the page
        return None


@functools.lru_cache(maxsize=8)
def load_line_finder(name: str | None = "auto", printed_filter: str | None = None) -> LineFinder:
    """A line finder by name, once per process: ``learned`` (:mod:`htr_ray.layout.finder`, its shipped
    model or the URI after ``learned:``), ``opencv`` (:class:`~htr_ray.layout.opencv.OpenCVLineFinder`,
    with the printed-text filter at ``printed_filter`` unless None), or ``auto``: learned when shipped,
    else opencv."""
    name = (name or "auto").strip()
    if name == "auto":
        name = "learned" if learned_finder_uri() else "opencv"
    if name == "learned" or name.startswith("learned:"):
        from htr_ray.layout import finder

        uri = name.split(":", 1)[1] if ":" in name else (learned_finder_uri() or finder.DEFAULT_LINE_FINDER)
        return finder.load_line_finder(uri)
    if name == "opencv":
        from htr_ray.layout.opencv import OpenCVLineFinder

        return OpenCVLineFinder(printed_filter=printed_filter or None)
    raise ValueError(f"unknown line finder {name!r}: one of {', '.join(LINE_FINDERS)} (or learned:<uri>)")


# ------------------------------------------------------------------------------------ the page


@dataclass
class PreparedPage:
    """One page, decoded and cut into line crops, ready for a recogniser. ``lines[i]`` is the geometry
    of ``crops[i]`` in the page *as given* (box, polygon, baseline) and its kind."""

    uri: str
    page: int
    pages: int
    width: int
    height: int
    angle: float
    lines: list[FoundLine]
    crops: list[np.ndarray] = field(default_factory=list)
    finder: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # decode, find_lines (crop included)

    def meta(self) -> dict[str, Any]:
        """Everything but the crops, as plain JSON-able values (what travels beside them)."""
        return {"uri": self.uri, "page": self.page, "pages": self.pages, "width": self.width, "height": self.height,
                "angle": self.angle, "finder": self.finder, "timings": dict(self.timings),
                "lines": [dataclasses.asdict(ln) for ln in self.lines]}

    def turned(self) -> "PreparedPage":
        """The page read upside down: each crop turned 180 degrees and the lines in reverse order (the
        bottom line of a page fed in upside down is its first). Boxes and polygons cover the same pixels;
        a baseline found on the upside-down text is not the text's, so it is dropped."""
        lines = [dataclasses.replace(ln, baseline=[]) for ln in reversed(self.lines)]
        crops = [np.ascontiguousarray(c[::-1, ::-1]) for c in reversed(self.crops)]
        angle = (self.angle + 180.0) % 360.0
        return dataclasses.replace(self, lines=lines, crops=crops, angle=round(angle - 360.0 if angle > 180.0 else angle, 3))

    @classmethod
    def from_meta(cls, meta: dict, crops: Sequence[np.ndarray] | None = None) -> "PreparedPage":
        return cls(uri=meta["uri"], page=int(meta["page"]), pages=int(meta["pages"]), width=int(meta["width"]),
                   height=int(meta["height"]), angle=float(meta["angle"]),
                   lines=[FoundLine(**ln) for ln in meta["lines"]], crops=list(crops or []),
                   finder=meta.get("finder", ""), timings=dict(meta.get("timings") or {}))


def _field(result, name: str, default=None):
    return result.get(name, default) if isinstance(result, dict) else getattr(result, name, default)


def _mean_confidence(prepared: PreparedPage, line_results: Sequence) -> float | None:
    """Mean confidence of the handwritten lines read with text; None if there are none."""
    confs = [float(_field(r, "confidence", 0.0)) for ln, r in zip(prepared.lines, line_results)
             if ln.kind != "printed" and not _field(r, "error") and (_field(r, "text") or "").strip()]
    return sum(confs) / len(confs) if confs else None


def _recognize(recognizer, crops: Sequence[np.ndarray]) -> list:
    """The recogniser's results for ``crops``; if the model fails, one error per line (the pages become
    errors, the caller goes on)."""
    try:
        return list(recognizer.recognize(crops)) if len(crops) else []
    except Exception as exc:
        log.exception("recognition failed on %d lines", len(crops))
        return [{"text": "", "error": f"{RECOGNITION_FAILED}: {type(exc).__name__}: {exc}"}] * len(crops)


class PageReader:
    """Page bytes -> :class:`PageResult` s. ``line_finder``: a :class:`~htr_ray.layout.base.LineFinder`
    or its name (:func:`load_line_finder`); ``printed_filter``: the printed-text filter URI the OpenCV
    finder uses (None: lines whole). ``model``: the recogniser's name written into results."""

    def __init__(self, line_finder: str | LineFinder | None = "auto", printed_filter: str | None = None,
                 max_pixels: int = images.DEFAULT_MAX_PIXELS, min_side: int = MIN_PAGE_SIDE, model: str = "",
                 mask_lines: bool = True, turn_check_below: float = TURN_CHECK_BELOW):
        self._finder = line_finder if line_finder is not None else "auto"
        # pages read with a mean handwritten confidence below this are also read turned 180 degrees
        # (0: never); costs a second reading of those pages only
        self.turn_check_below = turn_check_below
        # crops painted paper outside their line's polygon (Layout.crop_line); False: the padded box as is
        self.mask_lines = mask_lines
        self.printed_filter = printed_filter
        self.max_pixels = max_pixels
        self.min_side = min_side
        self.model = model

    @property
    def finder(self) -> LineFinder:
        """The line finder, loaded on first use (assembling needs none)."""
        if isinstance(self._finder, str):
            self._finder = load_line_finder(self._finder, self.printed_filter)
        return self._finder

    @property
    def finder_name(self) -> str:
        return getattr(self.finder, "name", type(self.finder).__name__)

    # ------------------------------------------------------------------------------------ prepare

    def prepare(self, uri: str, data: bytes | None, read_error: str | None = None) -> list[PreparedPage | PageResult]:
        """Decode every page of one object, find its lines and crop them. Whatever cannot be read is an
        error :class:`PageResult`, so every input gives at least one item: inputs in = rows out."""
        if read_error is not None:
            return [PageResult.failed(uri, "read_error", read_error, model=self.model)]
        t0 = time.perf_counter()
        try:
            decoded = images.decode_pages(data or b"", max_pixels=self.max_pixels, min_side=self.min_side)
        except images.ImageError as exc:
            return [PageResult.failed(uri, exc.kind, str(exc), model=self.model)]
        decode_s = (time.perf_counter() - t0) / len(decoded)
        return [self.prepare_gray(gray, uri, i, len(decoded), decode_seconds=decode_s) for i, gray in enumerate(decoded)]

    def prepare_gray(self, gray: np.ndarray, uri: str = "page", page: int = 0, pages: int = 1,
                     decode_seconds: float = 0.0) -> PreparedPage | PageResult:
        """Find and crop the lines of one decoded gray page (2-D uint8)."""
        t0 = time.perf_counter()
        h, w = gray.shape[:2]
        try:
            gray = paper.clear_surround(gray)  # a photo's dark surround: painted paper, not lines of its own
            layout = self.finder.find(gray)
        except Exception as exc:  # a finder fault is this page's error, not the job's
            log.exception("line finder %s failed on %s page %d", self.finder_name, uri, page)
            return PageResult.failed(uri, "find_lines_failed", f"{type(exc).__name__}: {exc}", page, pages, self.model)
        lines, crops = [], []
        for ln in layout.lines:
            # only the box of a deskewed page is rotated; outside the line's polygon is painted paper
            c = layout.crop_line(ln) if self.mask_lines else layout.crop(ln.box)
            if c.size == 0 or min(c.shape) < 2:
                continue
            crops.append(np.ascontiguousarray(c).copy())  # a copy: the page itself must not travel with it
            lines.append(FoundLine(
                box=to_input_coordinates(ln.box, layout.angle, (w, h)),
                polygon=points_to_input(ln.outline(), layout.angle, (w, h)),
                baseline=points_to_input(ln.baseline, layout.angle, (w, h)) if ln.baseline else [],
                kind=ln.kind, score=float(ln.score)))
        return PreparedPage(uri=uri, page=page, pages=pages, width=w, height=h, angle=round(float(layout.angle), 3),
                            lines=lines, crops=crops, finder=self.finder_name,
                            timings={"decode": decode_seconds, "find_lines": time.perf_counter() - t0})

    # ------------------------------------------------------------------------------------ assemble

    def assemble(self, prepared: PreparedPage, line_results: Sequence, recognize_seconds: float = 0.0,
                 model: str | None = None) -> PageResult:
        """Line results (``LineResult`` s or dicts with text, confidence, char_confidences, error), one per
        line of ``prepared`` in order -> the page's :class:`PageResult`. Lines the recogniser could not use
        or read as empty are left out; printed lines are kept, flagged, and left out of ``text``. A line
        whose error starts with ``recognition_failed`` (the model failed on its batch) fails the page."""
        t0 = time.perf_counter()
        model = self.model if model is None else model
        if len(line_results) != len(prepared.lines):
            raise ValueError(f"{len(line_results)} line results for {len(prepared.lines)} lines of "
                             f"{prepared.uri} page {prepared.page}")
        failed = [str(_field(r, "error")) for r in line_results
                  if str(_field(r, "error") or "").startswith(RECOGNITION_FAILED)]
        if failed:
            return PageResult.failed(prepared.uri, RECOGNITION_FAILED, failed[0], prepared.page, prepared.pages, model)
        out = []
        for ln, r in zip(prepared.lines, line_results):
            text = _field(r, "text") or ""
            if _field(r, "error") or not text.strip():
                continue
            out.append(TextLine(text=text, confidence=float(_field(r, "confidence", 0.0)),
                                char_confidences=[float(c) for c in _field(r, "char_confidences", None) or []],
                                bbox=list(ln.box), polygon=[list(p) for p in ln.polygon],
                                baseline=[list(p) for p in ln.baseline], kind=ln.kind or HANDWRITTEN,
                                char_x=[int(x) for x in _field(r, "char_x", None) or []]))
        timings = {"decode": prepared.timings.get("decode", 0.0), "find_lines": prepared.timings.get("find_lines", 0.0),
                   "recognize": float(recognize_seconds)}
        timings["assemble"] = time.perf_counter() - t0
        return PageResult(uri=prepared.uri, page=prepared.page, pages=prepared.pages, lines=out, model=model,
                          seconds=round(sum(timings.values()), 6), width=prepared.width, height=prepared.height,
                          angle=prepared.angle, timings=timings)

    # ------------------------------------------------------------------------------------ orientation

    def unsure(self, prepared: PreparedPage, line_results: Sequence) -> bool:
        """Whether a page's reading is unsure enough to read it turned 180 degrees as well: the mean
        confidence of its handwritten lines is below ``turn_check_below`` (a page fed in upside down
        reads at about 0.2-0.25, an upright page of real handwriting at about 0.45-0.6)."""
        if not self.turn_check_below:
            return False
        conf = _mean_confidence(prepared, line_results)
        return conf is not None and conf < self.turn_check_below

    def pick_orientation(self, prepared: PreparedPage, line_results: Sequence, turned: PreparedPage,
                         turned_results: Sequence) -> tuple[PreparedPage, Sequence]:
        """The upright or the turned reading of an unsure page: the turned one when its handwritten lines
        read with a mean confidence at least ``TURN_MARGIN`` higher."""
        upright = _mean_confidence(prepared, line_results) or 0.0
        other = _mean_confidence(turned, turned_results)
        if other is not None and other >= upright + TURN_MARGIN:
            log.info("%s page %d reads better turned 180 degrees (confidence %.2f against %.2f)",
                     prepared.uri, prepared.page, other, upright)
            return turned, turned_results
        return prepared, line_results

    # ------------------------------------------------------------------------------------ one process

    def read(self, uri: str, data: bytes | None, recognizer, read_error: str | None = None) -> list[PageResult]:
        """One object's bytes -> one result per page (errors included), recognised here."""
        return self.read_many([(uri, data, read_error)], recognizer)

    def read_many(self, items: Sequence[tuple], recognizer) -> list[PageResult]:
        """Several objects ``(uri, data[, read_error])`` at once: the lines of all their pages go to the
        recogniser in one call (it sorts them by width and batches them), as the bulk job batches lines
        across pages. Results in input order, one per page."""
        prepared: list[PreparedPage | PageResult] = []
        for item in items:
            uri, data = item[0], item[1]
            prepared.extend(self.prepare(uri, data, item[2] if len(item) > 2 else None))
        pages = [p for p in prepared if isinstance(p, PreparedPage)]
        crops = [c for p in pages for c in p.crops]
        t0 = time.perf_counter()
        results = _recognize(recognizer, crops)
        per_line = (time.perf_counter() - t0) / max(len(crops), 1)
        model = self.model or str(getattr(recognizer, "uri", "") or "")
        out, k = [], 0
        for p in prepared:
            if isinstance(p, PageResult):
                out.append(p)
                continue
            n = len(p.crops)
            lines, spent = results[k:k + n], per_line * n
            k += n
            if self.unsure(p, lines):
                turned = p.turned()
                t1 = time.perf_counter()
                p, lines = self.pick_orientation(p, lines, turned, _recognize(recognizer, turned.crops))
                spent += time.perf_counter() - t1
            out.append(self.assemble(p, lines, spent, model=model))
        return out


def is_scan(uri: str) -> bool:
    """Whether a listed object is a scan the jobs read (by its suffix)."""
    return uri.lower().endswith(SCAN_SUFFIXES)


def list_scans(prefix: str) -> tuple[list[str], list[str]]:
    """(scans, other files) under a prefix: scans are what the job reads; the others are reported."""
    everything = storage.list_uris(prefix)
    return [u for u in everything if is_scan(u)], [u for u in everything if not is_scan(u)]
