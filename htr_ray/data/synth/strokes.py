"""Re-render the real IAM-OnDB pen strokes (``iam_ondb_lines/strokes.npz``) with other pens, slants and scales.

This is real handwriting with new looks: pen width, slant, scale, a little per-stroke wobble, elastic
distortion, and the same paper/scan model as the font lines. Only lines of forms in the requested split
are used (the IAM split rule of ``htr_ray.datasets``), so train never sees held-out forms' writing.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path

import cv2
import numpy as np

from htr_ray.data.synth import render, texts
from htr_ray import paths

log = logging.getLogger(__name__)
BASE_SCALE = 0.12  # px per tablet unit of the shipped renderings


def _data_dir() -> Path:
    return paths.shared_data() / "iam_ondb_lines"


@functools.lru_cache(maxsize=1)
def load() -> dict | None:
    """points, offsets, line_ids, texts and per-split indices; None when the data is absent."""
    d = _data_dir()
    from htr_ray.data import labels as label_file

    if not (d / "strokes.npz").is_file() or not label_file.has_labels(str(d)):
        log.warning("no IAM-OnDB strokes under %s: stroke re-rendering disabled", d)
        return None
    z = np.load(d / "strokes.npz", allow_pickle=False)
    labels = {r.line_id: r.text for r in label_file.read_rows(str(d))}
    ids = [str(x) for x in z["line_ids"]]
    by_split: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, lid in enumerate(ids):
        if labels.get(lid, "").strip():
            by_split[texts.iam_form_split(lid)].append(i)
    return {"points": z["points"], "offsets": z["offsets"], "ids": ids, "labels": labels,
            "split": {k: np.array(v, np.int64) for k, v in by_split.items()}}


def ink_from_strokes(pts: np.ndarray, rng: np.random.Generator, scale: float, thickness: int,
                     wobble: float = 0.0, margin: int = 6) -> render.InkLayer:
    """Draw pen points (x, y, end_of_stroke) as anti-aliased polylines: float32 ink layer."""
    xy = pts[:, :2].astype(np.float32) * scale
    xy -= xy.min(axis=0)
    ends = np.flatnonzero(pts[:, 2] > 0)
    starts = np.concatenate([[0], ends[:-1] + 1]) if ends.size else np.array([0])
    stops = ends + 1 if ends.size else np.array([len(pts)])
    pad = margin + thickness + int(math.ceil(3 * wobble))
    w = int(math.ceil(xy[:, 0].max())) + 2 * pad + 1
    h = int(math.ceil(xy[:, 1].max())) + 2 * pad + 1
    canvas = np.zeros((h, w), np.uint8)
    shift = 3  # sub-pixel precision of cv2 drawing
    polys = []
    for a, b in zip(starts, stops):
        seg = xy[a:b] + pad
        if wobble:
            seg = seg + rng.normal(0, wobble, 2).astype(np.float32)
        polys.append(np.round(seg * (1 << shift)).astype(np.int32).reshape(-1, 1, 2))
    cv2.polylines(canvas, polys, False, 255, thickness, cv2.LINE_AA, shift)
    baseline = float(np.percentile(xy[:, 1], 80)) + pad
    x_height = float(np.percentile(xy[:, 1], 80) - np.percentile(xy[:, 1], 20)) or 20.0
    return render.InkLayer(canvas.astype(np.float32) * (1 / 255.0), [], [], baseline=baseline, x_height=x_height)


def render_index(i: int, rng: np.random.Generator, split: str, clean_fraction: float = 0.3) -> render.LineSample:
    d = load()
    if d is None:
        raise FileNotFoundError("IAM-OnDB strokes not available")
    pts = d["points"][d["offsets"][i]:d["offsets"][i + 1]]
    lid = d["ids"][i]
    scale = BASE_SCALE * float(rng.uniform(0.65, 1.35))
    thickness = int(rng.choice([1, 2, 2, 3, 3, 4]))
    layer = ink_from_strokes(pts, rng, scale, thickness, wobble=float(rng.uniform(0, 1.0)))
    layer = render.affine(layer, float(np.clip(rng.normal(0, 0.12), -0.3, 0.3)), float(rng.normal(0, 1.0)))
    if rng.random() < 0.6:
        layer = render.elastic(layer, rng, float(rng.uniform(0.5, 2.5)), float(rng.uniform(20, 60)))
    layer = render.crop_ink(layer, int(rng.integers(2, 20)), int(rng.integers(2, 14)))
    clean = bool(rng.random() < clean_fraction)
    img = render.compose(layer, rng, clean=clean)
    return render.LineSample(img, d["labels"][lid], f"iam-strokes/{lid}", "generic", split, layer,
                             meta={"line_id": lid, "scale": scale, "thickness": thickness})


def render_random(rng: np.random.Generator, split: str, clean_fraction: float = 0.3) -> render.LineSample | None:
    """A random line of ``split``'s forms re-rendered; None when the stroke data is absent."""
    d = load()
    if d is None or not len(d["split"].get(split, ())):
        return None
    pool = d["split"][split]
    return render_index(int(pool[int(rng.integers(len(pool)))]), rng, split, clean_fraction)
