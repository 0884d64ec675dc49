"""Scores of a line finder against known lines, in the same pixels. A line is a polygon (``[[x, y],
...]``, e.g. a rotated line's rectangle) or a box ``[x0, y0, x1, y1]``; areas and overlaps are those
of the filled polygons (rasterised at half resolution), so the hull boxes of tilted lines, which overlap
their neighbours, do not count as overlaps.

- **precision / recall / F1 at IoU 0.5**: found and true lines matched one to one, greedily by IoU;
- **split**: a true line that comes back in two or more pieces (pieces that lie at least half inside
  it, and inside no other true line more);
- **merge**: a true line that shares one found piece with another true line (the piece covers at least
  half of each);
- **one line** (for form fields): a true line matched at IoU 0.5, neither split nor merged.

:func:`score_page` returns counts; :func:`summarise` adds them up over pages and gives the rates.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

RASTER_SCALE = 0.5


def _raster(shapes, scale: float = RASTER_SCALE) -> list[tuple[int, int, np.ndarray]]:
    out = []
    for sh in shapes:
        a = np.asarray(sh, np.float64)
        if a.ndim == 1:  # a box
            x0, y0, x1, y1 = a
            a = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
        a = a.reshape(-1, 2) * scale
        ox, oy = int(np.floor(a[:, 0].min())), int(np.floor(a[:, 1].min()))
        w = int(np.ceil(a[:, 0].max())) - ox + 1
        h = int(np.ceil(a[:, 1].max())) - oy + 1
        m = np.zeros((max(1, h), max(1, w)), np.uint8)
        cv2.fillPoly(m, [np.round(a - (ox, oy)).astype(np.int32)], 1)
        out.append((ox, oy, m))
    return out


def overlap_matrix(truth, found) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(areas of truth, areas of found, intersections truth x found) of filled shapes."""
    rt, rf = _raster(truth), _raster(found)
    at = np.array([m.sum() for _, _, m in rt], np.float64)
    af = np.array([m.sum() for _, _, m in rf], np.float64)
    inter = np.zeros((len(rt), len(rf)), np.float64)
    for i, (tx, ty, tm) in enumerate(rt):
        th, tw = tm.shape
        for j, (fx, fy, fm) in enumerate(rf):
            fh, fw = fm.shape
            x0, y0 = max(tx, fx), max(ty, fy)
            x1, y1 = min(tx + tw, fx + fw), min(ty + th, fy + fh)
            if x1 <= x0 or y1 <= y0:
                continue
            a = tm[y0 - ty:y1 - ty, x0 - tx:x1 - tx]
            b = fm[y0 - fy:y1 - fy, x0 - fx:x1 - fx]
            inter[i, j] = np.count_nonzero(a & b)
    return at, af, inter


def _areas(b: np.ndarray) -> np.ndarray:
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    return ix * iy


def match(truth: Sequence[Sequence[float]], found: Sequence[Sequence[float]], threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by IoU: (truth index, found index, IoU) for pairs >= threshold."""
    if not len(truth) or not len(found):
        return []
    at, af, inter = overlap_matrix(truth, found)
    return _match(at, af, inter, threshold)


def _match(at, af, inter, threshold):
    iou = inter / np.maximum(at[:, None] + af[None, :] - inter, 1e-9)
    pairs = np.argwhere(iou >= threshold)
    order = np.argsort(-iou[pairs[:, 0], pairs[:, 1]], kind="stable")
    used_t, used_f, out = set(), set(), []
    for i, j in pairs[order]:
        if i in used_t or j in used_f:
            continue
        used_t.add(int(i))
        used_f.add(int(j))
        out.append((int(i), int(j), float(iou[i, j])))
    return out


def score_page(truth: Sequence[Sequence[float]], found: Sequence[Sequence[float]], threshold: float = 0.5,
               truth_kinds: Sequence[str] | None = None, found_kinds: Sequence[str] | None = None) -> dict:
    """Counts for one page, plus per-true-line flags (``one_line``: matched, not split, not merged)."""
    nt, nf = len(truth), len(found)
    pairs = []
    split = np.zeros(nt, bool)
    merged = np.zeros(nt, bool)
    if nt and nf:
        at, af, inter = overlap_matrix(truth, found)
        pairs = _match(at, af, inter, threshold)
        of_piece = inter / np.maximum(af[None, :], 1e-9)  # share of each piece inside each true line
        of_truth = inter / np.maximum(at[:, None], 1e-9)  # share of each true line inside each piece
        owner = of_piece.argmax(axis=0)
        inside = of_piece[owner, np.arange(nf)] >= 0.5
        pieces = np.bincount(owner[inside], minlength=nt)
        split = pieces >= 2
        covers = of_truth >= 0.5
        multi = covers.sum(axis=0) >= 2
        merged = (covers & multi[None, :]).any(axis=1)
    matched = np.zeros(nt, bool)
    kind_ok = 0
    for i, j, _ in pairs:
        matched[i] = True
        if truth_kinds is not None and found_kinds is not None and truth_kinds[i] == found_kinds[j]:
            kind_ok += 1
    return {"truth": nt, "found": nf, "tp": len(pairs), "split": int(split.sum()), "merged": int(merged.sum()),
            "kind_ok": kind_ok, "one_line": (matched & ~split & ~merged).tolist()}


def summarise(pages: Iterable[dict]) -> dict:
    """Totals and rates over page scores."""
    tot = {"pages": 0, "truth": 0, "found": 0, "tp": 0, "split": 0, "merged": 0, "kind_ok": 0}
    for p in pages:
        tot["pages"] += 1
        for k in ("truth", "found", "tp", "split", "merged", "kind_ok"):
            tot[k] += p[k]
    prec = tot["tp"] / tot["found"] if tot["found"] else (1.0 if not tot["truth"] else 0.0)
    rec = tot["tp"] / tot["truth"] if tot["truth"] else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {**tot, "precision": prec, "recall": rec, "f1": f1,
            "split_rate": tot["split"] / tot["truth"] if tot["truth"] else 0.0,
            "merge_rate": tot["merged"] / tot["truth"] if tot["truth"] else 0.0,
            "kind_accuracy": tot["kind_ok"] / tot["tp"] if tot["tp"] else 0.0}
