"""Whole pages: scan bytes -> pages -> text lines -> one result row per page.

The bulk job (``htr_ray.transcribe``) and the HTTP endpoint (``htr_ray.serving``) both call these
functions, so a page gives the same lines and text in both. Ray-free.

A result row (DESIGN.md): ``uri``, ``page`` (0-based), ``pages`` (pages in the file), ``status``
(``ok`` or ``error``), ``error_kind``, ``error``, ``text`` (the handwritten lines joined by newlines),
``lines`` (``{text, confidence, bbox, printed}``, bbox in the input page's pixels; ``printed`` marks the
pieces a printed-text filter (:mod:`htr_ray.printed`) took for form print: they are read and kept, but
left out of ``text``), ``model``, ``seconds``, ``width``, ``height``, ``angle`` (deskew rotation, degrees).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from htr_ray.io import images, storage
from htr_ray.layout import segment

log = logging.getLogger(__name__)

SCAN_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
MIN_PAGE_SIDE = 16  # smaller than this cannot hold a line of handwriting


@dataclass
class PageJob:
    """A decoded, deskewed page with its line boxes, ready for the recognizer."""

    uri: str
    page: int
    pages: int
    gray: np.ndarray  # deskewed page
    boxes: list[list[int]]  # in deskewed coordinates
    angle: float
    size: tuple[int, int]  # (width, height) of the page as given
    seconds: float = 0.0
    printed: list[bool] | None = None  # per box, when a printed-text filter has split the lines


def split_printed(job: PageJob, printed_filter) -> PageJob:
    """Cut each line box into its printed and handwritten pieces (:meth:`htr_ray.layout.printed.PrintedFilter.split_lines`)
    and flag them, in place. The pieces cover every word of the line: nothing is dropped here. Should
    the filter fail on a page, its lines stay whole and unflagged (logged): the page is still read."""
    try:
        split = printed_filter.split_lines([segment.crop(job.gray, b) for b in job.boxes])
    except Exception:  # a filter fault must not cost the page its transcription
        log.exception("printed-text filter failed on %s page %d; lines kept whole", job.uri, job.page)
        return job
    boxes, flags = [], []
    for (x0, y0, x1, y1), pieces in zip(job.boxes, split):
        for a, b, printed in pieces:
            boxes.append([x0 + a, y0, x0 + b, y1])
            flags.append(bool(printed))
    job.boxes, job.printed = boxes, flags
    return job


def error_row(uri: str, kind: str, message: str, page: int = 0, pages: int = 1, model: str = "") -> dict:
    return {"uri": uri, "page": page, "pages": pages, "status": "error", "error_kind": kind, "error": message,
            "text": "", "lines": [], "model": model, "seconds": 0.0, "width": 0, "height": 0, "angle": 0.0}


def prepare_pages(uri: str, data: bytes | None, read_error: str | None = None,
                  max_pixels: int = images.DEFAULT_MAX_PIXELS, printed_filter=None) -> list[PageJob | dict]:
    """Decode every page of one scan and find its lines (split into printed and handwritten pieces
    when a ``printed_filter`` is given). Whatever cannot be read becomes an error row (a dict), so the
    caller gets at least one item per input: inputs in = rows out."""
    if read_error is not None:
        return [error_row(uri, "read_error", read_error)]
    started = time.time()
    try:
        decoded = images.decode_pages(data or b"", max_pixels=max_pixels, min_side=MIN_PAGE_SIDE)
    except images.ImageError as exc:
        return [error_row(uri, exc.kind, str(exc))]
    out: list[PageJob | dict] = []
    for i, gray in enumerate(decoded):
        t0 = time.time()
        seg = segment.segment_page(gray)
        job = PageJob(uri, i, len(decoded), seg.page, seg.boxes, seg.angle, (gray.shape[1], gray.shape[0]))
        if printed_filter is not None:
            split_printed(job, printed_filter)
        job.seconds = (t0 - started) / len(decoded) + time.time() - t0
        out.append(job)
    return out


def to_input_coordinates(box: Sequence[int], angle: float, size: tuple[int, int]) -> list[int]:
    """Map a box found on the deskewed page back onto the page as given (the axis-aligned hull of the
    rotated corners), so users can draw it on their own scan."""
    if abs(angle) < 1e-3:
        return [int(v) for v in box]
    w, h = size
    m = cv2.getRotationMatrix2D((w / 2, h / 2), -angle, 1.0)
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64) @ m.T
    return [max(0, int(np.floor(corners[:, 0].min()))), max(0, int(np.floor(corners[:, 1].min()))),
            min(w, int(np.ceil(corners[:, 0].max()))), min(h, int(np.ceil(corners[:, 1].max())))]


def recognize_pages(jobs: Sequence[PageJob], recognizer, model_name: str = "") -> list[dict]:
    """Recognise the lines of several pages in one call (the recognizer sorts all their lines by
    width and batches them), then assemble one result row per page."""
    crops, owners = [], []
    for j, job in enumerate(jobs):
        for b, box in enumerate(job.boxes):
            crops.append(segment.crop(job.gray, box))
            owners.append((j, b))
    started = time.time()
    results = recognizer.recognize(crops) if crops else []
    per_line = (time.time() - started) / max(len(crops), 1)
    lines_of: list[list[dict]] = [[] for _ in jobs]
    for (j, b), res in zip(owners, results):
        job = jobs[j]
        if res.error:
            continue
        lines_of[j].append({"text": res.text, "confidence": float(res.confidence),
                            "bbox": to_input_coordinates(job.boxes[b], job.angle, job.size),
                            "printed": bool(job.printed[b]) if job.printed else False})
    rows = []
    for job, lines in zip(jobs, lines_of):
        kept = [ln for ln in lines if ln["text"].strip()]
        rows.append({
            "uri": job.uri, "page": job.page, "pages": job.pages, "status": "ok", "error_kind": "", "error": "",
            "text": "\n".join(ln["text"] for ln in kept if not ln["printed"]), "lines": kept, "model": model_name,
            "seconds": round(job.seconds + per_line * len(job.boxes), 4),
            "width": job.size[0], "height": job.size[1], "angle": round(job.angle, 3),
        })
    return rows


def transcribe_bytes(data: bytes, recognizer, uri: str = "upload", model_name: str = "",
                     printed_filter=None) -> list[dict]:
    """One scan's bytes -> result rows (one per page), errors included: the single-process path."""
    prepared = prepare_pages(uri, data, printed_filter=printed_filter)
    jobs = [p for p in prepared if isinstance(p, PageJob)]
    rows = [p for p in prepared if isinstance(p, dict)]
    return rows + recognize_pages(jobs, recognizer, model_name)


def list_scans(prefix: str) -> tuple[list[str], list[str]]:
    """(scans, other files) under a prefix: scans are what the job reads; the others are reported."""
    everything = storage.list_uris(prefix)
    scans = [u for u in everything if u.lower().endswith(SCAN_SUFFIXES)]
    return scans, [u for u in everything if not u.lower().endswith(SCAN_SUFFIXES)]


def score_page(truth: Sequence[dict], found: Sequence[dict], iou_threshold: float = 0.3) -> dict:
    """Character errors of a transcribed page against its handwritten ground truth lines.

    Lines are paired one to one by box overlap (IoU >= ``iou_threshold``; a found line often also
    holds a printed label beside the handwriting, hence the low threshold). A truth line with no
    partner counts all its characters as deleted. Found lines with no partner (printed form text,
    stray marks) are counted as ``extra`` but not charged: the ground truth covers handwriting only.
    Lines flagged ``printed`` are left out: what a user reads as the page's handwriting is scored.
    """
    from htr_ray.evaluation.metrics import char_errors

    found = [f for f in found if not f.get("printed")]

    pairs = segment.match_boxes([t["bbox"] for t in truth], [f["bbox"] for f in found], threshold=iou_threshold)
    errors = chars = 0
    matched = set()
    for ti, fi, _ in pairs:
        e, n = char_errors(truth[ti]["text"], found[fi]["text"])
        errors, chars = errors + e, chars + n
        matched.add(ti)
    missed = [t for i, t in enumerate(truth) if i not in matched]
    for t in missed:
        errors, chars = errors + len(t["text"]), chars + len(t["text"])
    return {"errors": errors, "chars": chars, "lines": len(truth), "matched": len(pairs), "missed": len(missed),
            "extra": len(found) - len(pairs)}
