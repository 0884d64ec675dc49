"""The learned line finder: a page in, its text lines out (box, polygon, baseline, kind, reading order).

The net (:mod:`htr_ray.models.line_finder`) sees the page shrunk to 1/4 and predicts three maps: the
x-height *body* of every line, the line's whole *extent* and whether it is *printed*. Post-processing
(:func:`maps_to_lines`, OpenCV and numpy on the small maps) turns them into lines:

1. connected components of the thresholded body map are line seeds; seeds too small or too faint go;
   a component whose printed map changes along it (a label fused to its field) is cut where it changes;
2. seeds on one row with a gap of at most about one x-height, and of the same kind, join (a line
   broken between two words); a printed label beside a handwritten field stays its own line;
3. each pixel of the extent map goes to its nearest seed (a distance transform with labels): the line
   grows back to its ascenders and descenders without taking its neighbour's;
4. per line: the box and polygon of its pixels, the baseline fitted along the bottom of its body, the
   kind from the mean printed probability over it, a score from the body probability;
5. skew: the width-weighted median slope of the baselines; when it is above 0.3 degrees the page is
   rotated (``Layout.page``, ``Layout.angle``) and the lines' geometry with it;
6. reading order: rows of lines whose bodies overlap vertically, top to bottom, left to right in a row.

    finder = load_line_finder()            # models/line_finder (or $HTR_LINE_FINDER)
    layout = finder.find(gray)             # Layout: page, lines, angle

No Ray here; one thread is enough (bench/layout.py measures it).
"""

from __future__ import annotations

import functools
import logging
import math
import statistics
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from htr_ray import paths
from htr_ray.layout.base import HANDWRITTEN, PRINTED, FoundLine, Layout

log = logging.getLogger(__name__)

DEFAULT_LINE_FINDER = paths.shipped_model("line_finder", env="HTR_LINE_FINDER")


@dataclass
class FinderOptions:
    body_threshold: float = 0.5
    extent_threshold: float = 0.5
    printed_threshold: float = 0.5
    min_area: int = 6  # body pixels at map scale: smaller seeds are specks
    min_score: float = 0.6  # mean body probability of a seed
    join_gap: float = 1.5  # x-heights between two seeds of one row that still make one line
    reach: float = 2.5  # x-heights from its body that a line's extent may grow
    side: float = 1.0  # x-heights beyond its body's left and right ends that a line's extent may grow
    label_width: float = 0.75  # x-heights: a clearly printed run this wide at a component's end is a label
    join_contrast: float = 0.3  # printed probability between two seeds of one row that keeps them apart
    pad: float = 0.15  # x-heights of paper added around each box (recognisers read better with some)
    deskew: bool = True
    min_angle: float = 0.3  # degrees: below this the page is not rotated


@dataclass
class _Seed:
    ids: list[int]  # component labels
    x0: int
    x1: int  # body columns x0 .. x1 - 1
    slope: float
    icept: float  # baseline y = slope * x + icept (map pixels)
    height: float  # body thickness (x-height), map pixels
    printed: float
    score: float
    y0: int = 0  # body rows y0 .. y1 - 1
    y1: int = 0

    def y_at(self, x: float) -> float:
        return self.slope * x + self.icept


def _group_median(groups: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """np.median of ``values`` per group ``0..n-1`` (groups with no value: 0)."""
    order = np.lexsort((values, groups))
    g, v = groups[order], values[order]
    cnt = np.bincount(g, minlength=n)
    start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    lo = start + (cnt - 1) // 2
    hi = start + cnt // 2
    out = np.zeros(n, np.float64)
    ok = cnt > 0
    out[ok] = (v[lo[ok]] + v[hi[ok]]) / 2
    return out


def _line_fits(groups: np.ndarray, x: np.ndarray, y: np.ndarray, n: int, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares y = a x + b per group (at least 3 points: fitted; fewer: flat through the mean);
    (a, b, fitted)."""
    w = np.ones_like(x) if w is None else w
    s0 = np.bincount(groups, w, minlength=n)
    sx = np.bincount(groups, w * x, minlength=n)
    sy = np.bincount(groups, w * y, minlength=n)
    sxx = np.bincount(groups, w * x * x, minlength=n)
    sxy = np.bincount(groups, w * x * y, minlength=n)
    det = s0 * sxx - sx * sx
    fit = (s0 >= 3) & (det > 1e-9)
    a = np.where(fit, (s0 * sxy - sx * sy) / np.where(fit, det, 1.0), 0.0)
    b = np.where(s0 > 0, (sy - a * sx) / np.maximum(s0, 1e-9), 0.0)
    return a, b, fit


def _fit_baselines(labels: np.ndarray, xs: np.ndarray, ys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per label ``1..n-1``: least squares y = a x + b through the row below the lowest body pixel of each
    column; one refit without the worst outliers (a descender blob fused to the body); fewer than three
    columns: flat. Pixels in raster order (as np.nonzero gives them)."""
    width = int(xs.max()) + 1
    key = labels.astype(np.int64) * width + xs
    bottom = np.full(n * width, -1, np.int64)
    np.maximum.at(bottom, key, ys)
    cols = np.flatnonzero(bottom >= 0)
    g, cx = cols // width, (cols % width).astype(np.float64)
    cy = bottom[cols].astype(np.float64) + 1.0
    a, b, fit = _line_fits(g, cx, cy, n)
    res = np.abs(cy - (a[g] * cx + b[g]))
    med = _group_median(g, res, n)
    keep = res <= np.maximum(1.0, 2.5 * med)[g]
    kept = np.bincount(g, keep, minlength=n)
    redo = fit & (kept >= 3) & (kept < np.bincount(g, minlength=n))
    if redo.any():
        a2, b2, _ = _line_fits(g, cx, cy, n, keep.astype(np.float64))
        a, b = np.where(redo, a2, a), np.where(redo, b2, b)
    return a, b


def _seeds(prob: np.ndarray, opts: FinderOptions) -> tuple[np.ndarray, list[_Seed]]:
    """Body components that are lines: ``(labels, seeds)``, each seed with its own label. Vectorised over
    components (a page has a hundred or more)."""
    body = (prob[0] > opts.body_threshold).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(body, connectivity=8)
    if n <= 1:
        return lab, []
    mw = prob.shape[2]
    flat = np.flatnonzero(body)  # raster order
    ys, xs = np.divmod(flat, mw)
    ls = lab.ravel()[flat]
    bp = prob[0].ravel()[flat]
    area = stats[:, cv2.CC_STAT_AREA]
    score = np.bincount(ls, bp, minlength=n) / np.maximum(area, 1)
    good = (area >= opts.min_area) & (score >= opts.min_score)
    good[0] = False
    if not good.any():
        return np.zeros_like(lab), []
    # compact labels 1..k of the good components, in label order
    remap = np.zeros(n, np.int32)
    remap[good] = np.arange(1, int(good.sum()) + 1)
    sel = good[ls]
    flat, ys, xs, ls, bp = flat[sel], ys[sel], xs[sel], remap[ls[sel]], bp[sel]
    st = stats[good]
    k = len(st) + 1
    pp = prob[2].ravel()[flat]
    # a component whose printed map changes along it is cut where it changes (a label fused to its field)
    key = ls.astype(np.int64) * mw + xs
    cnt = np.bincount(key, minlength=k * mw).reshape(k, mw)
    pm = np.bincount(key, pp, minlength=k * mw).reshape(k, mw) / np.maximum(cnt, 1)
    has = cnt > 0
    kind = (pm > opts.printed_threshold) & has
    mixed = np.flatnonzero(kind.any(axis=1) & ((kind | ~has).sum(axis=1) < mw) & (np.arange(k) > 0))
    for c in mixed:
        x0, w = int(st[c - 1, cv2.CC_STAT_LEFT]), int(st[c - 1, cv2.CC_STAT_WIDTH])
        height = max(1.0, int(st[c - 1, cv2.CC_STAT_AREA]) / max(1, w))
        parts = _kind_runs(kind[c, x0:x0 + w], pm[c, x0:x0 + w], height, opts.label_width)
        if len(parts) < 2:
            continue
        mine = np.flatnonzero(ls == c)
        for c0, c1 in parts[1:]:
            ls[mine[(xs[mine] >= x0 + c0) & (xs[mine] < x0 + c1)]] = k
            k += 1
    # parts too small go; the rest are seeds
    area = np.bincount(ls, minlength=k)
    ok = area >= opts.min_area
    ok[0] = False
    remap = np.zeros(k, np.int32)
    remap[ok] = np.arange(1, int(ok.sum()) + 1)
    sel = ok[ls]
    flat, ys, xs, ls, bp, pp = flat[sel], ys[sel], xs[sel], remap[ls[sel]], bp[sel], pp[sel]
    k = int(ok.sum()) + 1
    out = np.zeros_like(lab)
    out.ravel()[flat] = ls
    if k == 1:
        return out, []
    area = np.bincount(ls, minlength=k).astype(np.float64)
    x0 = np.full(k, np.iinfo(np.int64).max, np.int64)
    x1 = np.full(k, -1, np.int64)
    y0 = np.full(k, np.iinfo(np.int64).max, np.int64)
    y1 = np.full(k, -1, np.int64)
    np.minimum.at(x0, ls, xs)
    np.maximum.at(x1, ls, xs)
    np.minimum.at(y0, ls, ys)
    np.maximum.at(y1, ls, ys)
    height = np.maximum(1.0, area / np.maximum(1, x1 - x0 + 1))
    printed = np.bincount(ls, pp, minlength=k) / np.maximum(area, 1)
    score = np.bincount(ls, bp, minlength=k) / np.maximum(area, 1)
    slope, icept = _fit_baselines(ls, xs, ys, k)
    mh = prob.shape[1]
    seeds = []
    for i in range(1, k):
        wide = x1[i] + 1 - x0[i]
        if (x0[i] == 0 or y0[i] == 0 or x1[i] == mw - 1 or y1[i] == mh - 1) and wide < 3 * height[i]:
            continue  # a short blob on the page's edge: the scanner bed, a torn edge, not a line
        seeds.append(_Seed([i], int(x0[i]), int(x1[i]) + 1, float(slope[i]), float(icept[i]), float(height[i]),
                           float(printed[i]), float(score[i]), int(y0[i]), int(y1[i]) + 1))
    return out, seeds


def _absorb(seeds: list[_Seed]) -> list[_Seed]:
    """A small seed inside a longer line's band (a descender or an ascender loop that the body map
    caught on its own) becomes part of that line: it is not a line of its own."""
    order = sorted(range(len(seeds)), key=lambda i: seeds[i].x1 - seeds[i].x0, reverse=True)
    gone: set[int] = set()
    for i in order[::-1]:  # the smallest first
        s = seeds[i]
        ws = s.x1 - s.x0
        xc, yc = (s.x0 + s.x1) / 2, (s.y0 + s.y1) / 2
        for j in order:
            t = seeds[j]
            if j == i or j in gone or t.x1 - t.x0 < 4 * ws:
                if t.x1 - t.x0 < 4 * ws:
                    break  # the rest are shorter still
                continue
            if not (t.x0 <= xc <= t.x1) or (s.printed > 0.5) != (t.printed > 0.5):
                continue
            base = t.y_at(xc)
            if base - 1.5 * t.height <= yc <= base + 1.3 * t.height and s.height <= 1.2 * t.height:
                t.ids = t.ids + s.ids
                t.y0, t.y1 = min(t.y0, s.y0), max(t.y1, s.y1)
                gone.add(i)
                break
    return [s for i, s in enumerate(seeds) if i not in gone]


def _kind_runs(kind: np.ndarray, printed: np.ndarray, height: float, label_width: float = 0.75) -> list[tuple[int, int]]:
    """Column ranges of one body component (``kind``: whether each of its columns is printed, ``printed``:
    their mean printed probability) that are of one kind, each at least two x-heights wide, or, if
    clearly printed (mean probability 0.75 or more), ``label_width`` x-heights (a "$" or "No." before a
    field); the whole component when it is of one kind."""
    width = len(kind)
    if kind.all() or not kind.any():
        return [(0, width)]
    edges = np.flatnonzero(np.diff(kind.astype(np.int8))) + 1
    runs = [(int(a), int(b)) for a, b in zip(np.r_[0, edges], np.r_[edges, width])]
    min_w, min_label = max(3, int(2 * height)), max(3, int(math.ceil(label_width * height)))

    def short(a: int, b: int) -> bool:
        if b - a >= min_w:
            return False
        return not (kind[a] and b - a >= min_label and printed[a:b].mean() >= 0.75)

    # runs too short to be a line of their own go to their left neighbour (or take the next one in)
    out: list[list[int]] = []
    for a, b in runs:
        if out and short(a, b):
            out[-1][1] = b
        elif out and short(*out[-1]):
            out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _join(seeds: list[_Seed], opts: FinderOptions) -> list[_Seed]:
    """Join seeds of one row separated by a small gap (a line broken between words), same kind only."""
    seeds = sorted(seeds, key=lambda s: s.x0)
    out: list[_Seed] = []
    changed = True
    while changed:
        changed = False
        out = []
        for s in seeds:
            best = None
            for j, t in enumerate(out):
                h = max(s.height, t.height)
                gap = s.x0 - t.x1
                if gap > opts.join_gap * h:
                    continue
                if gap < -0.5 * min(s.x1 - s.x0, t.x1 - t.x0):  # side by side, not one above the other
                    continue
                if (s.printed > opts.printed_threshold) != (t.printed > opts.printed_threshold):
                    continue
                if abs(s.printed - t.printed) >= opts.join_contrast:  # an unsure label beside its field
                    continue
                xm = (min(s.x0, t.x1) + max(s.x0, t.x1)) / 2
                if abs(s.y_at(xm) - t.y_at(xm)) > 0.6 * h:
                    continue
                best = j
                break
            if best is None:
                out.append(s)
                continue
            t = out[best]
            wa, wb = t.x1 - t.x0, s.x1 - s.x0
            wsum = max(1, wa + wb)
            out[best] = _Seed(t.ids + s.ids, min(t.x0, s.x0), max(t.x1, s.x1),
                              (t.slope * wa + s.slope * wb) / wsum, 0.0, (t.height * wa + s.height * wb) / wsum,
                              (t.printed * wa + s.printed * wb) / wsum, (t.score * wa + s.score * wb) / wsum,
                              min(t.y0, s.y0), max(t.y1, s.y1))
            # the joined baseline passes through both parts' baselines at their centres
            ca, cb = (t.x0 + t.x1) / 2, (s.x0 + s.x1) / 2
            ya, yb = t.y_at(ca), s.y_at(cb)
            m = out[best]
            m.slope = (yb - ya) / (cb - ca) if abs(cb - ca) > 4 else m.slope
            m.icept = (ya * wa + yb * wb) / wsum - m.slope * (ca * wa + cb * wb) / wsum
            changed = True
        seeds = out
    return out


def maps_to_lines(prob: np.ndarray, opts: FinderOptions | None = None) -> list[dict]:
    """Lines in MAP pixels from the net's probabilities ``(3, h, w)``: dicts with ``box`` (float
    x0, y0, x1, y1), ``polygon`` (Nx2), ``baseline`` (2x2), ``kind``, ``score``, ``height`` (x-height),
    ``slope``. Unordered, not deskewed: :meth:`LearnedLineFinder.find` does both."""
    opts = opts or FinderOptions()
    lab, seeds = _seeds(prob, opts)
    if not seeds:
        return []
    seeds = _absorb(_join(seeds, opts))
    h, w = lab.shape
    lut = np.zeros(int(lab.max()) + 1, np.int32)
    for i, s in enumerate(seeds, start=1):
        lut[s.ids] = i
    body_ids = lut[lab]
    # every extent pixel goes to the nearest kept body pixel
    inv = (body_ids == 0).astype(np.uint8)
    dist, near = cv2.distanceTransformWithLabels(inv, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    # labels of zero pixels, in raster order: index -> (y, x)
    kept = body_ids[body_ids > 0]
    owner = np.zeros(kept.size + 1, np.int32)
    owner[1:] = kept
    region = owner[near]
    heights = np.array([0.0] + [s.height for s in seeds], np.float32)
    grow = (prob[1] > opts.extent_threshold) & (dist <= opts.reach * heights[region])
    region[~(grow | (body_ids > 0))] = 0
    printed_p = prob[2]
    out = []
    for i, s in enumerate(seeds, start=1):
        # a line's pixels lie within ``reach`` x-heights of its body
        r = int(math.ceil(opts.reach * s.height / 0.95)) + 2  # the 3x3 L2 distance counts 0.955 per step
        wy0, wy1 = max(0, s.y0 - r), min(h, s.y1 + r)
        # ... and, sideways, within ``side`` x-heights of its body's ends (not along a rule or a box edge)
        r_side = int(math.ceil(opts.side * s.height)) + 1
        wx0, wx1 = max(0, s.x0 - r_side), min(w, s.x1 + r_side)
        win = region[wy0:wy1, wx0:wx1] == i
        contours, _ = cv2.findContours(cv2.copyMakeBorder(win.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0),
                                       cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            continue
        if len(contours) > 1:  # pieces of extent that do not touch the body (a page edge, a box corner) are not the line's
            n_cc, cc = cv2.connectedComponents(win.view(np.uint8), connectivity=8)
            touches = np.zeros(n_cc, bool)
            touches[cc[body_ids[wy0:wy1, wx0:wx1] == i]] = True
            keep = touches[cc]
            if (keep != win).any():
                win = keep
                contours, _ = cv2.findContours(cv2.copyMakeBorder(win.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0),
                                               cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        bx, by, bw, bh = cv2.boundingRect(win.view(np.uint8))
        x0, y0 = wx0 + bx, wy0 + by
        x1, y1 = x0 + bw, y0 + bh
        printed = float(printed_p[wy0:wy1, wx0:wx1][win].mean())
        # a line joined across a word gap has several pieces: their hull is its outline
        c = contours[0] if len(contours) == 1 else cv2.convexHull(np.vstack(contours))
        c = cv2.approxPolyDP(c, 1.0, True).reshape(-1, 2).astype(np.float32) + (wx0 - 1, wy0 - 1)
        # pixel centres -> the outline of the pixels
        cx, cy = c[:, 0].mean(), c[:, 1].mean()
        c = c + np.sign(c - (cx, cy)) * 0.5 + 0.5
        bx0, bx1 = float(s.x0), float(s.x1)
        baseline = np.float32([[bx0, s.y_at(bx0)], [bx1, s.y_at(bx1)]])
        out.append({"box": [float(x0), float(y0), float(x1), float(y1)], "polygon": c, "baseline": baseline,
                    "kind": PRINTED if printed > opts.printed_threshold else HANDWRITTEN,
                    "printed": printed, "score": s.score, "height": s.height, "slope": s.slope,
                    "width": float(s.x1 - s.x0)})
    return out


def skew_angle(lines: list[dict]) -> float:
    """Degrees to rotate the page by (cv2 convention: positive = counter-clockwise) to level the text:
    the width-weighted median of the baselines' slopes."""
    long = [(ln["slope"], ln["width"]) for ln in lines if ln["width"] >= 6 * ln["height"]]
    if not long:
        return 0.0
    sl = np.array([s for s, _ in long])
    wt = np.array([w for _, w in long])
    order = np.argsort(sl)
    cum = np.cumsum(wt[order])
    med = float(sl[order][np.searchsorted(cum, cum[-1] / 2)])
    return math.degrees(math.atan(med))


def reading_order(lines: list[FoundLine], heights: list[float]) -> list[int]:
    """Indices in reading order: rows of lines whose x-height bands (the band just above the baseline)
    overlap by half, top to bottom; left to right within a row."""
    items = []
    for i, (ln, h) in enumerate(zip(lines, heights)):
        if ln.baseline:
            yb = (ln.baseline[0][1] + ln.baseline[-1][1]) / 2
        else:
            yb = ln.box[3]
        items.append((yb - h, yb, ln.box[0], i))
    items.sort(key=lambda t: (t[1], t[2]))
    rows: list[list[tuple]] = []
    bands: list[tuple[float, float]] = []  # each row's median band top and bottom
    for it in items:
        top, bot = it[0], it[1]
        for r, (rt, rb) in enumerate(bands):
            ov = min(bot, rb) - max(top, rt)
            if ov >= 0.5 * min(bot - top, rb - rt):
                rows[r].append(it)
                bands[r] = (statistics.median(t[0] for t in rows[r]), statistics.median(t[1] for t in rows[r]))
                break
        else:
            rows.append([it])
            bands.append((top, bot))
    order = sorted(range(len(rows)), key=lambda r: statistics.median(t[1] for t in rows[r]))
    return [t[3] for r in order for t in sorted(rows[r], key=lambda t: t[2])]


def _fuse_bn(model):
    """Fold every BatchNorm that follows a conv into the conv (inference only: fewer passes over memory)."""
    import torch

    for name, mod in list(model.named_children()):
        if isinstance(mod, torch.nn.Sequential):
            layers = list(mod.children())
            new = []
            i = 0
            while i < len(layers):
                lyr = layers[i]
                if (isinstance(lyr, torch.nn.Conv2d) and i + 1 < len(layers)
                        and isinstance(layers[i + 1], torch.nn.BatchNorm2d)):
                    new.append(torch.nn.utils.fusion.fuse_conv_bn_eval(lyr, layers[i + 1]))
                    i += 2
                else:
                    new.append(_fuse_bn(lyr))
                    i += 1
            setattr(model, name, torch.nn.Sequential(*new))
        else:
            _fuse_bn(mod)
    return model


ONNX_FILE = "net.onnx"  # the net + sigmoid, shipped beside weights.pt (export_onnx)


def onnx_bytes(model) -> bytes:
    """The net with its sigmoid as ONNX (any page size). On one core onnxruntime runs this small net
    about 1.5x faster than torch (bench/layout.py)."""
    import io
    import warnings

    import torch

    class Probabilities(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.sigmoid(self.net(x))

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Probabilities(model).eval(), torch.zeros(1, 1, 64, 48), buf, dynamo=False, opset_version=17,
                          input_names=["page"], output_names=["maps"],
                          dynamic_axes={"page": {2: "height", 3: "width"}, "maps": {2: "height", 3: "width"}})
    return buf.getvalue()


def _onnx_session(net: bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(net, so, providers=["CPUExecutionProvider"])


def _weights_digest(uri: str) -> str:
    import hashlib

    from htr_ray.io import storage

    return hashlib.sha256(storage.read_bytes(storage.join(uri, "weights.pt"))).hexdigest()


def shipped_onnx(uri: str, meta: dict) -> bytes | None:
    """The ``net.onnx`` beside a checkpoint, if ``model.json`` says it was exported from these very
    weights (their SHA-256): a finder then runs without importing torch. Else None."""
    from htr_ray.io import storage

    info = meta.get("onnx") or {}
    if info.get("file") != ONNX_FILE:
        return None
    try:
        if info.get("weights_sha256") != _weights_digest(uri):
            log.warning("%s: %s is stale (exported from other weights); exporting in memory", uri, ONNX_FILE)
            return None
        return storage.read_bytes(storage.join(uri, ONNX_FILE))
    except storage.StorageError:
        return None


def export_onnx(uri: str) -> str:
    """Write ``net.onnx`` beside a local line-finder checkpoint and record it in its ``model.json``
    (``python -m htr_ray.layout.finder --export-onnx models/line_finder``; rerun after retraining)."""
    import json
    from pathlib import Path

    from htr_ray.models import checkpoint

    model, meta = checkpoint.load(uri)
    (Path(uri) / ONNX_FILE).write_bytes(onnx_bytes(_fuse_bn(model.eval())))
    path = Path(uri) / "model.json"
    raw = json.loads(path.read_text())
    raw["onnx"] = {"file": ONNX_FILE, "weights_sha256": _weights_digest(uri), "opset": 17,
                   "what": "the net + sigmoid, batch-norm fused, for onnxruntime without torch"}
    path.write_text(json.dumps(raw, indent=1) + "\n")
    return str(Path(uri) / ONNX_FILE)


BACKENDS = ("auto", "onnx", "torch")


class LearnedLineFinder:
    """``find(gray) -> Layout`` with the line-finder net and :func:`maps_to_lines`. ``backend``: what runs
    the net: ``onnx`` (onnxruntime, the net exported in memory on first use), ``torch``, or ``auto``
    (onnx when onnxruntime imports, else torch); ``threads``: the net's threads (None: torch's setting,
    one for onnxruntime)."""

    name = "learned"

    def __init__(self, model=None, meta: dict | None = None, uri: str = "",
                 options: FinderOptions | None = None, threads: int | None = None, backend: str = "auto",
                 onnx: bytes | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")
        if model is None and onnx is None:
            raise ValueError("a line finder needs its torch model or its ONNX net")
        self.model = _fuse_bn(model.eval()) if model is not None else None
        self.onnx = onnx  # the shipped net.onnx: no torch needed (else exported from the model on first use)
        self.meta = meta or {}
        self.uri = uri
        self.scale = float(getattr(model, "scale", self.meta.get("input", {}).get("scale", 0.25)))
        self.options = options or FinderOptions(**self.meta.get("finder_options", {}))
        self.threads = threads
        if backend == "auto":
            try:
                import onnxruntime  # noqa: F401

                backend = "onnx"
            except ImportError:
                backend = "torch"
        if backend == "torch" and self.model is None:
            raise ValueError("backend torch needs the torch model (this finder was loaded from its ONNX net)")
        self.backend = backend
        self._session = None
        self._lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: str, **kw) -> "LearnedLineFinder":
        """A checkpoint's finder. With the onnx backend and a ``net.onnx`` exported from these weights
        beside it (the shipped finder has one), torch is not imported at all: an actor or replica
        starts seconds sooner and ~180 MB smaller."""
        import json

        from htr_ray.io import storage

        try:
            meta = json.loads(storage.read_bytes(storage.join(uri, "model.json")))
        except (storage.StorageError, ValueError) as exc:
            raise ValueError(f"{uri}: not a readable line-finder checkpoint ({exc})") from exc
        if meta.get("kind") != "line_finder":
            raise ValueError(f"{uri} is a {meta.get('kind')!r} model, not a line finder")
        if kw.get("backend", "auto") in ("auto", "onnx"):
            net = shipped_onnx(uri, meta)
            if net is not None:
                try:
                    import onnxruntime  # noqa: F401

                    return cls(None, meta, uri, onnx=net, **{**kw, "backend": "onnx"})
                except ImportError:
                    pass
        from htr_ray.models import checkpoint

        model, meta = checkpoint.load(uri)
        return cls(model, meta, uri, **kw)

    def predict(self, gray: np.ndarray) -> np.ndarray:
        """The net's maps for one gray page: float32 ``(3, h, w)`` probabilities at ``self.scale``."""
        from htr_ray.layout.net_input import page_input

        x = page_input(gray, self.scale)[None, None]
        if self.backend == "onnx":
            if self._session is None:
                with self._lock:
                    if self._session is None:
                        self._session = _onnx_session(self.onnx or onnx_bytes(self.model), self.threads or 1)
            return self._session.run(None, {"page": x})[0][0]
        import torch

        prev = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return torch.sigmoid(self.model(torch.from_numpy(x)))[0].numpy()
        finally:
            if self.threads:
                torch.set_num_threads(prev)

    def find(self, gray: np.ndarray) -> Layout:
        """The lines of one gray page (2-D uint8). Timings of the last call's parts (seconds of this
        thread's CPU) are in ``self.last_timings``: ``net`` (shrink + network), ``lines`` (maps to lines),
        ``geometry`` (deskew, page coordinates, reading order). The page itself is rotated only when
        ``Layout.page`` is asked for; ``Layout.crop`` rotates just a line's box."""
        t0, c0 = time.perf_counter(), time.thread_time()
        if gray.ndim != 2:
            raise ValueError(f"find() takes a 2-D gray page, got shape {gray.shape}")
        h, w = gray.shape
        prob = self.predict(gray)
        c1 = time.thread_time()
        mh, mw = prob.shape[1:]
        sx, sy = w / mw, h / mh
        opts = self.options
        found = maps_to_lines(prob, opts)
        c2 = time.thread_time()
        angle = skew_angle(found) if opts.deskew else 0.0
        m = None
        if abs(angle) >= opts.min_angle:
            m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0).astype(np.float32)
        else:
            angle = 0.0
        lines, heights = [], []
        for ln in found:
            poly = ln["polygon"] * np.float32([sx, sy])
            base = ln["baseline"] * np.float32([sx, sy])
            if m is not None:
                poly = poly @ m[:, :2].T + m[:, 2]
                base = base @ m[:, :2].T + m[:, 2]
            xh = ln["height"] * sy
            pad = opts.pad * xh
            x0, y0 = poly[:, 0].min() - pad, poly[:, 1].min() - pad
            x1, y1 = poly[:, 0].max() + pad, poly[:, 1].max() + pad
            box = [max(0, int(math.floor(x0))), max(0, int(math.floor(y0))), min(w, int(math.ceil(x1))), min(h, int(math.ceil(y1)))]
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            lim = np.float32([w, h])
            lines.append(FoundLine(box=box, polygon=np.clip(np.round(poly), 0, lim).astype(int).tolist(),
                                   baseline=np.clip(np.round(base), 0, lim).astype(int).tolist(), kind=ln["kind"],
                                   score=round(ln["score"], 4)))
            heights.append(xh)
        order = reading_order(lines, heights)
        lines = [lines[i] for i in order]
        self.last_timings = {"net": c1 - c0, "lines": c2 - c1, "geometry": time.thread_time() - c2}
        if m is None:
            return Layout(page=gray, lines=lines, angle=0.0, seconds=time.perf_counter() - t0)
        border = int(np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])))
        return Layout(lines=lines, angle=float(angle), seconds=time.perf_counter() - t0, source=gray, border=border)


@functools.lru_cache(maxsize=4)
def _cached(uri: str) -> LearnedLineFinder:
    return LearnedLineFinder.from_uri(uri)


def load_line_finder(name_or_uri: str | None = None) -> LearnedLineFinder:
    """The learned line finder of a checkpoint URI (default: the shipped ``models/line_finder`` or
    ``$HTR_LINE_FINDER``), loaded once per process."""
    uri = name_or_uri or DEFAULT_LINE_FINDER
    if uri in ("learned", "default"):
        uri = DEFAULT_LINE_FINDER
    return _cached(uri)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Line-finder utilities.")
    ap.add_argument("--export-onnx", metavar="CHECKPOINT_DIR", required=True,
                    help="write net.onnx beside a line-finder checkpoint (rerun after retraining)")
    print("wrote", export_onnx(ap.parse_args().export_onnx))
