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
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

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
    pad: float = 0.15  # x-heights of paper added around each box (recognisers read better with some)
    deskew: bool = True
    min_angle: float = 0.3  # degrees: below this the page is not rotated


@dataclass
class _Seed:
    ids: list[int]  # component labels
    x0: int
    x1: int
    slope: float
    icept: float  # baseline y = slope * x + icept (map pixels)
    height: float  # body thickness (x-height), map pixels
    printed: float
    score: float

    def y_at(self, x: float) -> float:
        return self.slope * x + self.icept


def _fit_baseline(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """Least squares y = a x + b through the lowest body pixel of each column; a single column: flat."""
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    cols, first = np.unique(xs, return_index=True)
    bottom = np.maximum.reduceat(ys, first).astype(np.float64) + 1.0  # the row below the body
    if cols.size < 3:
        return 0.0, float(bottom.mean())
    a, b = np.polyfit(cols.astype(np.float64), bottom, 1)
    # one refit without the worst outliers (a descender blob fused to the body)
    res = bottom - (a * cols + b)
    keep = np.abs(res) <= max(1.0, 2.5 * np.median(np.abs(res)))
    if keep.sum() >= 3 and not keep.all():
        a, b = np.polyfit(cols[keep].astype(np.float64), bottom[keep], 1)
    return float(a), float(b)


def _seeds(prob: np.ndarray, opts: FinderOptions) -> tuple[np.ndarray, list[_Seed]]:
    body = (prob[0] > opts.body_threshold).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(body, connectivity=8)
    if n <= 1:
        return lab, []
    ys, xs = np.nonzero(lab)
    ls = lab[ys, xs]
    order = np.argsort(ls, kind="stable")
    ys, xs, ls = ys[order], xs[order], ls[order]
    bounds = np.searchsorted(ls, np.arange(1, n + 1))
    bp, pp = prob[0][ys, xs], prob[2][ys, xs]
    seeds = []
    next_label = n
    for k in range(1, n):
        s, e = bounds[k - 1], bounds[k]
        area = e - s
        if area < opts.min_area:
            continue
        score = float(bp[s:e].mean())
        if score < opts.min_score:
            continue
        x0, y0, w, h = stats[k, :4]
        height = max(1.0, area / max(1, w))
        parts = _kind_runs(xs[s:e] - x0, pp[s:e], int(w), height, opts.printed_threshold)
        for j, (c0, c1) in enumerate(parts):
            sel = slice(s, e) if len(parts) == 1 else np.flatnonzero((xs[s:e] >= x0 + c0) & (xs[s:e] < x0 + c1)) + s
            px, py = xs[sel], ys[sel]
            if px.size < opts.min_area:
                continue
            label = k
            if j > 0:  # a printed label fused to its handwritten field: its own seed
                label = next_label
                next_label += 1
                lab[py, px] = label
            a, b = _fit_baseline(px, py)
            seeds.append(_Seed([label], int(px.min()), int(px.max()) + 1, a, b, max(1.0, px.size / max(1, px.max() - px.min() + 1)),
                               float(pp[sel].mean()), float(bp[sel].mean())))
    return lab, seeds


def _kind_runs(cols: np.ndarray, printed: np.ndarray, width: int, height: float, threshold: float) -> list[tuple[int, int]]:
    """Column ranges of one body component that are of one kind (printed or handwritten), each at least
    two x-heights wide; the whole component when it is of one kind."""
    cnt = np.bincount(cols, minlength=width)
    pm = np.bincount(cols, weights=printed, minlength=width) / np.maximum(cnt, 1)
    kind = pm > threshold
    if kind.all() or not kind.any():
        return [(0, width)]
    edges = np.flatnonzero(np.diff(kind.astype(np.int8))) + 1
    runs = list(zip(np.r_[0, edges], np.r_[edges, width]))
    min_w = max(3, int(2 * height))
    # runs too short to be a line of their own go to their left neighbour (or take the next one in)
    out: list[list[int]] = []
    for a, b in ((int(a), int(b)) for a, b in runs):
        if out and b - a < min_w:
            out[-1][1] = b
        elif out and out[-1][1] - out[-1][0] < min_w:
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
                xm = (min(s.x0, t.x1) + max(s.x0, t.x1)) / 2
                if abs(s.y_at(xm) - t.y_at(xm)) > 0.6 * h:
                    continue
                if (s.printed > opts.printed_threshold) != (t.printed > opts.printed_threshold):
                    continue
                if gap < -0.5 * min(s.x1 - s.x0, t.x1 - t.x0):  # side by side, not one above the other
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
                              (t.printed * wa + s.printed * wb) / wsum, (t.score * wa + s.score * wb) / wsum)
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
    seeds = _join(seeds, opts)
    h, w = lab.shape
    lut = np.zeros(int(lab.max()) + 1, np.int32)
    for i, s in enumerate(seeds, start=1):
        lut[s.ids] = i
    body_ids = lut[lab]
    # every extent pixel goes to the nearest kept body pixel
    inv = (body_ids == 0).astype(np.uint8)
    dist, near = cv2.distanceTransformWithLabels(inv, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    # labels of zero pixels, in raster order: index -> (y, x)
    zy, zx = np.nonzero(inv == 0)
    owner = np.zeros(zy.size + 1, np.int32)
    owner[1:] = body_ids[zy, zx]
    region = owner[near]
    heights = np.array([0.0] + [s.height for s in seeds], np.float32)
    grow = (prob[1] > opts.extent_threshold) & (dist <= opts.reach * heights[region])
    region = np.where(grow | (body_ids > 0), region, 0)
    ys, xs = np.nonzero(region)
    rs = region[ys, xs]
    order = np.argsort(rs, kind="stable")
    ys, xs, rs = ys[order], xs[order], rs[order]
    bounds = np.searchsorted(rs, np.arange(1, len(seeds) + 2))
    printed_p = prob[2]
    out = []
    for i, s in enumerate(seeds, start=1):
        a, e = bounds[i - 1], bounds[i]
        if e <= a:
            continue
        yy, xx = ys[a:e], xs[a:e]
        x0, x1, y0, y1 = int(xx.min()), int(xx.max()) + 1, int(yy.min()), int(yy.max()) + 1
        printed = float(printed_p[yy, xx].mean())
        mask = np.zeros((y1 - y0 + 2, x1 - x0 + 2), np.uint8)
        mask[yy - y0 + 1, xx - x0 + 1] = 1
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if contours:
            # a line joined across a word gap has several pieces: their hull is its outline
            c = max(contours, key=cv2.contourArea) if len(contours) == 1 else cv2.convexHull(np.vstack(contours))
            c = cv2.approxPolyDP(c, 1.0, True).reshape(-1, 2).astype(np.float32) + (x0 - 1, y0 - 1)
            # pixel centres -> the outline of the pixels
            cx, cy = c[:, 0].mean(), c[:, 1].mean()
            c = c + np.sign(c - (cx, cy)) * 0.5 + 0.5
        else:
            c = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
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
    for it in items:
        top, bot = it[0], it[1]
        for row in rows:
            rt = np.median([r[0] for r in row])
            rb = np.median([r[1] for r in row])
            ov = min(bot, rb) - max(top, rt)
            if ov >= 0.5 * min(bot - top, rb - rt):
                row.append(it)
                break
        else:
            rows.append([it])
    rows.sort(key=lambda r: np.median([t[1] for t in r]))
    return [t[3] for row in rows for t in sorted(row, key=lambda t: t[2])]


def _fuse_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every BatchNorm that follows a conv into the conv (inference only: fewer passes over memory)."""
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


class LearnedLineFinder:
    """``find(gray) -> Layout`` with the line-finder net and :func:`maps_to_lines`."""

    name = "learned"

    def __init__(self, model: torch.nn.Module, meta: dict | None = None, uri: str = "",
                 options: FinderOptions | None = None, threads: int | None = None):
        self.model = _fuse_bn(model.eval())
        self.meta = meta or {}
        self.uri = uri
        self.scale = float(getattr(model, "scale", self.meta.get("input", {}).get("scale", 0.25)))
        self.options = options or FinderOptions(**self.meta.get("finder_options", {}))
        self.threads = threads

    @classmethod
    def from_uri(cls, uri: str, **kw) -> "LearnedLineFinder":
        from htr_ray.models import checkpoint

        model, meta = checkpoint.load(uri)
        if meta.get("kind") != "line_finder":
            raise ValueError(f"{uri} is a {meta.get('kind')!r} model, not a line finder")
        return cls(model, meta, uri, **kw)

    def predict(self, gray: np.ndarray) -> np.ndarray:
        """The net's maps for one gray page: float32 ``(3, h, w)`` probabilities at ``self.scale``."""
        from htr_ray.models.line_finder import page_input

        x = torch.from_numpy(page_input(gray, self.scale))[None, None]
        prev = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return torch.sigmoid(self.model(x))[0].numpy()
        finally:
            if self.threads:
                torch.set_num_threads(prev)

    def find(self, gray: np.ndarray) -> Layout:
        t0 = time.perf_counter()
        if gray.ndim != 2:
            raise ValueError(f"find() takes a 2-D gray page, got shape {gray.shape}")
        h, w = gray.shape
        prob = self.predict(gray)
        mh, mw = prob.shape[1:]
        sx, sy = w / mw, h / mh
        opts = self.options
        found = maps_to_lines(prob, opts)
        angle = skew_angle(found) if opts.deskew else 0.0
        m = None
        page = gray
        if abs(angle) >= opts.min_angle:
            m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
            border = int(np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])))
            page = cv2.warpAffine(gray, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border)
        else:
            angle = 0.0
        lines, heights = [], []
        for ln in found:
            poly = ln["polygon"] * (sx, sy)
            base = ln["baseline"] * (sx, sy)
            if m is not None:
                poly = np.hstack([poly, np.ones((len(poly), 1), np.float32)]) @ m.T
                base = np.hstack([base, np.ones((2, 1), np.float32)]) @ m.T
            xh = ln["height"] * sy
            pad = opts.pad * xh
            x0, y0 = poly[:, 0].min() - pad, poly[:, 1].min() - pad
            x1, y1 = poly[:, 0].max() + pad, poly[:, 1].max() + pad
            box = [max(0, int(math.floor(x0))), max(0, int(math.floor(y0))), min(w, int(math.ceil(x1))), min(h, int(math.ceil(y1)))]
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            clip = lambda p: [[int(np.clip(round(float(a)), 0, w)), int(np.clip(round(float(b)), 0, h))] for a, b in p]  # noqa: E731
            lines.append(FoundLine(box=box, polygon=clip(poly), baseline=clip(base), kind=ln["kind"], score=round(ln["score"], 4)))
            heights.append(xh)
        order = reading_order(lines, heights)
        return Layout(page=page, lines=[lines[i] for i in order], angle=float(angle), seconds=time.perf_counter() - t0)


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
