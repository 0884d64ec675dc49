"""The line renderer: text + handwriting font + seed -> a gray line image that looks written and scanned.

Pipeline (all numpy/OpenCV on small arrays, glyph bitmaps cached per font and size):

1. *ink layer*: every glyph placed on its own with jitter in baseline, size, rotation and spacing, on a
   baseline that drifts slowly (:func:`ink_layer`);
2. *geometry*: per-line slant (shear) and skew, elastic distortion, stroke width (dilate / erode); the
   canvas grows with every transform, so no glyph is ever cut off (the tests check it);
3. *paper and scan* (:func:`compose`): paper tone and texture, ruled lines, ink colour and pressure,
   blur, noise, JPEG and scanner artefacts. A share of lines stays "clean" (black pen on white, like the
   IAM-OnDB renderings the recogniser is evaluated on).

Everything is drawn from one ``numpy.random.Generator``: same seed, same bytes.
:class:`LineGenerator` is the on-the-fly API: ``LineGenerator(seed, split, domains).sample(i)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from htr_ray.data.synth import fonts, texts

log = logging.getLogger(__name__)


@dataclass
class InkLayer:
    """Ink coverage (float32, 0..1) with, per glyph, the corners of its ink's convex hull (``points``, Kx2
    x/y in layer coordinates) that every transform carries along: ``boxes`` are exact to about a pixel."""

    alpha: np.ndarray
    points: list[np.ndarray] = field(default_factory=list)
    chars: list[str] = field(default_factory=list)
    baseline: float = 0.0
    x_height: float = 0.0
    grow: float = 0.0  # stroke thickening applied after the points were taken

    @property
    def boxes(self) -> list[list[float]]:
        """Per-glyph [x0, y0, x1, y1] (computed on demand: rendering itself never needs them)."""
        g = self.grow
        h, w = self.alpha.shape
        return [[max(0.0, float(p[:, 0].min() - g)), max(0.0, float(p[:, 1].min() - g)),
                 min(float(w), float(p[:, 0].max() + g)), min(float(h), float(p[:, 1].max() + g))] for p in self.points]


@dataclass
class LineSample:
    image: np.ndarray  # uint8 gray, ink dark
    text: str
    font: str  # family/file, or "iam-strokes/<line_id>"
    domain: str
    split: str
    ink: InkLayer | None = None  # final-coordinates ink layer (boxes after geometry)
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------- ink layer


def _map_points(points: list[np.ndarray], fn) -> list[np.ndarray]:
    """Apply ``fn`` (Nx2 -> Nx2) to all glyphs' points at once (one numpy call instead of one per glyph)."""
    if not points:
        return []
    allp = fn(np.concatenate(points))
    return np.split(allp, np.cumsum([len(p) for p in points])[:-1])


def _rot(a: np.ndarray, deg: float, scale: float, pts: np.ndarray) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Rotate/scale a glyph bitmap about its centre into a canvas big enough to hold it; returns the
    new bitmap, the shift of its top-left corner and ``pts`` mapped the same way."""
    h, w = a.shape
    if abs(deg) < 0.5 and abs(scale - 1) < 0.02:
        return a, 0.0, 0.0, pts
    rad = math.radians(deg)
    c, s = abs(math.cos(rad)) * scale, abs(math.sin(rad)) * scale
    nw, nh = int(math.ceil(w * c + h * s)) + 2, int(math.ceil(w * s + h * c)) + 2
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, scale)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    out = cv2.warpAffine(a, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0)
    m32 = m.astype(np.float32)
    return out, w / 2 - nw / 2, h / 2 - nh / 2, pts @ m32[:, :2].T + m32[:, 2]


KEEP_FILLED = set(".,;:'\"`!?-_·。，、！？")  # pen mode: small marks are slimmed, not thinned (a comma stays a comma)


def ink_layer(text: str, face_path: str, size: int, rng: np.random.Generator, *, jitter: float = 1.0,
              margin: int = 4, skeleton: bool = False, joins: bool = False) -> InkLayer:
    """Place each glyph with its own jitter; returns the ink layer (nothing clipped). ``skeleton``: draw
    the glyphs' centre lines (to be redrawn with a pen by :func:`pen_stroke`); ``joins``: with skeletons,
    link neighbouring lower-case letters of a word with a connecting stroke, as in cursive writing."""
    sp_w = max(fonts.glyph(face_path, size, " ")[3], size * 0.32)  # some fonts have a hairline space
    pen_x = 0.0
    drift_amp = rng.uniform(0, 0.06) * size * jitter
    drift_period = rng.uniform(8, 30) * size
    drift_phase = rng.uniform(0, 2 * math.pi)
    spacing = rng.uniform(0.92, 1.12)  # this writer's letter spacing
    word_gap = rng.uniform(0.9, 1.7)
    placed: list[tuple] = []
    after_space = True
    # all per-glyph random draws at once (scalar Generator calls dominate otherwise)
    noise = rng.standard_normal((len(text), 4)).tolist()
    gaps = rng.uniform(0.8, 1.25, len(text)).tolist()
    two_pi_over = 2 * math.pi / drift_period
    for k, ch in enumerate(text):
        if ch.isspace():
            pen_x += sp_w * word_gap * gaps[k]
            after_space = True
            continue
        n_scale, n_rot, n_dy, n_adv = noise[k]
        gscale = min(1.15, max(0.85, 1 + n_scale * 0.045 * jitter))
        a, ox, oy, adv = fonts.glyph(face_path, size, ch)
        if skeleton and a.size:
            a = fonts.glyph_slim(face_path, size, ch) if ch in KEEP_FILLED else fonts.glyph_skeleton(face_path, size, ch)
        if a.size == 0:
            pen_x += adv * spacing
            continue
        a2, sx, sy, pts = _rot(a, n_rot * 3.0 * jitter, gscale, fonts.glyph_hull(face_path, size, ch))
        adv *= gscale  # scaled about the glyph's centre: a bigger letter also dips a little
        base_dy = drift_amp * math.sin(pen_x * two_pi_over + drift_phase) + n_dy * 0.025 * size * jitter
        placed.append((a2, pen_x + ox + sx, oy + sy + base_dy, ch, pts, base_dy, after_space))
        after_space = False
        pen_x += adv * spacing + n_adv * 0.03 * size * jitter
    if not placed:
        raise ValueError(f"nothing to draw for text {text!r}")
    x0 = min(p[1] for p in placed)
    y0 = min(p[2] for p in placed)
    x1 = max(p[1] + p[0].shape[1] for p in placed)
    y1 = max(p[2] + p[0].shape[0] for p in placed)
    W = int(math.ceil(x1 - x0)) + 2 * margin + 1
    H = int(math.ceil(y1 - y0)) + 2 * margin + 1
    canvas = np.zeros((H, W), np.float32)
    points, chars = [], []
    xh = fonts.glyph(face_path, size, "x")[0].shape[0] or size * 0.5
    prev = None  # (exit x, exit y) of the previous letter when it can be joined
    for a, x, y, ch, pts, base_dy, after_space in placed:
        xi, yi = int(round(x - x0)) + margin, int(round(y - y0)) + margin
        h, w = a.shape
        region = canvas[yi:yi + h, xi:xi + w]
        np.maximum(region, a[: region.shape[0], : region.shape[1]].astype(np.float32) * (1 / 255.0), out=region)
        p = pts + np.float32((xi, yi))
        if joins and skeleton and ch.isalpha() and ch.islower():
            bl = base_dy - y0 + margin  # this letter's baseline on the canvas
            ys, xs = np.nonzero(a)
            band = (ys + yi > bl - 0.75 * xh) & (ys + yi < bl + 0.1 * xh)
            if band.any():
                bx, by = xs[band] + xi, ys[band] + yi
                j_in, j_out = int(np.argmin(bx)), int(np.argmax(bx * 4 + by))
                if prev is not None and not after_space and -2 <= bx[j_in] - prev[0] < 0.7 * size:
                    sag = min(H - 2.0, max(prev[1], by[j_in]) + 0.12 * xh)
                    mid = ((prev[0] + bx[j_in]) / 2, sag)
                    curve = np.array([prev, mid, (bx[j_in], by[j_in])], np.float32)
                    cv2.polylines(canvas, [np.round(curve * 8).astype(np.int32).reshape(-1, 1, 2)], False, 1.0, 1,
                                  cv2.LINE_8, 3)
                    p = np.concatenate([p, curve])  # the joining stroke belongs to the letter it leads into
                prev = (float(bx[j_out]), float(by[j_out]))
            else:
                prev = None
        else:
            prev = None
        points.append(p)
        chars.append(ch)
    return InkLayer(canvas, points, chars, baseline=-y0 + margin, x_height=float(xh))


# ---------------------------------------------------------------------------------------- geometry


def transform_boxes(boxes: Sequence[Sequence[float]], m: np.ndarray) -> list[list[float]]:
    """Axis-aligned hulls of boxes [x0, y0, x1, y1] mapped by the 2x3 / 3x3 affine ``m``."""
    if not len(boxes):
        return []
    b = np.asarray(boxes, np.float64)
    xs = b[:, [0, 2, 0, 2]]
    ys = b[:, [1, 1, 3, 3]]
    tx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    ty = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    return np.stack([tx.min(1), ty.min(1), tx.max(1), ty.max(1)], 1).tolist()


def affine(layer: InkLayer, shear: float, angle_deg: float, scale: float = 1.0, margin: int = 3,
           xscale: float = 1.0) -> InkLayer:
    """Slant (x += shear * (baseline - y)), skew, scale and horizontal stretch (narrow or wide writing);
    the output canvas holds every input pixel."""
    h, w = layer.alpha.shape
    sh = np.array([[xscale, -shear, shear * layer.baseline], [0, 1, 0], [0, 0, 1]], np.float64)
    rad = math.radians(angle_deg)
    ca, sa = math.cos(rad) * scale, math.sin(rad) * scale
    rot = np.array([[ca, sa, 0], [-sa, ca, 0], [0, 0, 1]], np.float64)
    m = rot @ sh
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64).T
    tc = m @ corners
    mnx, mny = tc[0].min(), tc[1].min()
    W = int(math.ceil(tc[0].max() - mnx)) + 2 * margin
    H = int(math.ceil(tc[1].max() - mny)) + 2 * margin
    m[0, 2] += margin - mnx
    m[1, 2] += margin - mny
    out = cv2.warpAffine(layer.alpha, m[:2], (W, H), flags=cv2.INTER_LINEAR, borderValue=0)
    m32 = m[:2].astype(np.float32)
    points = _map_points(layer.points, lambda p: p @ m32[:, :2].T + m32[:, 2])
    base = float((m @ np.array([0, layer.baseline, 1]))[1])
    return InkLayer(out, points, layer.chars, baseline=base, x_height=layer.x_height * scale, grow=layer.grow * scale)


def elastic(layer: InkLayer, rng: np.random.Generator, amplitude: float, cell: float) -> InkLayer:
    """Smooth random displacement (amplitude in px, correlation length ``cell`` px). The canvas is padded
    by the amplitude first, so nothing leaves it."""
    pad = int(math.ceil(amplitude)) + 2
    a = cv2.copyMakeBorder(layer.alpha, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    h, w = a.shape
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    dx = cv2.resize(rng.uniform(-1, 1, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC) * amplitude
    dy = cv2.resize(rng.uniform(-1, 1, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC) * amplitude
    np.clip(dx, -amplitude, amplitude, out=dx)
    np.clip(dy, -amplitude, amplitude, out=dy)
    mx = dx + np.arange(w, dtype=np.float32)[None, :]
    my = dy + np.arange(h, dtype=np.float32)[:, None]
    out = cv2.remap(a, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    points = []
    if layer.points:  # remap pulls dst(x) from src(x + d(x)): a source point moves by about -d
        q = np.concatenate(layer.points) + np.float32(pad)
        xi = np.clip(np.rint(q[:, 0]).astype(np.int64), 0, w - 1)
        yi = np.clip(np.rint(q[:, 1]).astype(np.int64), 0, h - 1)
        q[:, 0] -= dx[yi, xi]
        q[:, 1] -= dy[yi, xi]
        points = np.split(q, np.cumsum([len(p) for p in layer.points])[:-1])
    return InkLayer(out, points, layer.chars, baseline=layer.baseline + pad, x_height=layer.x_height, grow=layer.grow)


def pen_stroke(alpha: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """Redraw a centre-line layer with a round pen of ``width`` px, anti-aliased like a drawn polyline."""
    m = (alpha > 0.15).astype(np.uint8)
    if width > 1:
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width)))
    return cv2.GaussianBlur(m.astype(np.float32), (0, 0), float(rng.uniform(0.45, 0.75)))


def stroke_width(alpha: np.ndarray, rng: np.random.Generator, x_height: float, stroke_px: float = 3.0) -> np.ndarray:
    """Thicker or thinner pen: dilate / erode with a small ellipse. ``stroke_px`` is the font's own stroke
    width here: a bold face is never made bolder (it would blot), thin writing is never eroded away."""
    r = rng.random()
    if r < 0.35 and stroke_px < 4.5:
        k = 2 if x_height < 30 or stroke_px > 3 or rng.random() < 0.6 else 3
        return cv2.dilate(alpha, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    if (r < 0.5 or stroke_px > 5) and x_height > 22 and stroke_px > 3:
        eroded = cv2.erode(alpha, np.ones((2, 2), np.uint8))
        if eroded.sum() > 0.5 * alpha.sum():
            return eroded
    return alpha


def crop_ink(layer: InkLayer, margin_x: int, margin_y: int, threshold: float = 0.02) -> InkLayer:
    """Crop to the ink plus margins (adds paper where the margin goes beyond the canvas)."""
    a = layer.alpha
    rows = np.flatnonzero(a.max(axis=1) > threshold)
    cols = np.flatnonzero(a.max(axis=0) > threshold)
    if rows.size == 0:
        return layer
    y0, y1, x0, x1 = rows[0] - margin_y, rows[-1] + 1 + margin_y, cols[0] - margin_x, cols[-1] + 1 + margin_x
    oy, ox = y0, x0  # crop origin in the layer's coordinates (before any padding)
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y1 - a.shape[0]), max(0, x1 - a.shape[1])
    if top or left or bottom or right:
        a = cv2.copyMakeBorder(a, top, bottom, left, right, cv2.BORDER_CONSTANT, value=0)
        y0, y1, x0, x1 = y0 + top, y1 + top, x0 + left, x1 + left
    out = np.ascontiguousarray(a[y0:y1, x0:x1])
    shift = np.float32((ox, oy))
    points = _map_points(layer.points, lambda p: p - shift)
    return InkLayer(out, points, layer.chars, baseline=layer.baseline - oy, x_height=layer.x_height, grow=layer.grow)


# ------------------------------------------------------------------------------------ paper + scan


def _low_freq(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    return cv2.resize(rng.standard_normal((gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def paper(rng: np.random.Generator, h: int, w: int, clean: bool = False) -> np.ndarray:
    """Paper tone with texture (float32 0..255)."""
    if clean:
        return np.full((h, w), 255.0, np.float32)
    tone = rng.uniform(225, 254) if rng.random() < 0.8 else rng.uniform(190, 230)
    p = np.full((h, w), tone, np.float32)
    p += _low_freq(rng, h, w, rng.uniform(20, 80)) * rng.uniform(0, 5)  # blotches, uneven light
    if rng.random() < 0.5:
        p += rng.standard_normal((h, w)).astype(np.float32) * rng.uniform(1, 5)  # fibres / grain
    return p


def ruled_lines(p: np.ndarray, rng: np.random.Generator, baseline: float, x_height: float) -> None:
    """Ruled notebook lines through (and around) the writing, drawn into the paper in place."""
    h, w = p.shape
    spacing = x_height * rng.uniform(2.6, 3.6)
    y = baseline + rng.uniform(-1, 4)
    shade = rng.uniform(140, 215)
    thick = 1 if rng.random() < 0.8 else 2
    ys = []
    yy = y
    while yy > 0:
        ys.append(yy)
        yy -= spacing
    yy = y + spacing
    while yy < h:
        ys.append(yy)
        yy += spacing
    for yv in ys:
        cv2.line(p, (0, int(round(yv))), (w, int(round(yv + rng.uniform(-1, 1)))), float(shade), thick, cv2.LINE_AA)
    if rng.random() < 0.15:  # margin rule
        x = int(rng.uniform(0, min(40, w / 4)))
        cv2.line(p, (x, 0), (x, h), float(rng.uniform(120, 200)), 1, cv2.LINE_AA)


def compose(layer: InkLayer, rng: np.random.Generator, *, clean: bool = False, ruled: bool | None = None) -> np.ndarray:
    """Put the ink on paper and scan it: returns uint8 gray."""
    a = layer.alpha
    h, w = a.shape
    p = paper(rng, h, w, clean)
    if ruled is None:
        ruled = (not clean) and rng.random() < 0.2
    if ruled:
        ruled_lines(p, rng, layer.baseline, layer.x_height)
    if clean:
        ink_val = rng.uniform(0, 30)
        pressure = np.float32(1.0)
    else:
        ink_val = rng.uniform(0, 80) if rng.random() < 0.85 else rng.uniform(70, 130)  # pen / pencil
        pressure = np.clip(1 - np.abs(_low_freq(rng, h, w, rng.uniform(15, 60))) * rng.uniform(0, 0.3), 0.62, 1)
    cov = np.clip(a * pressure, 0, 1)
    img = p * (1 - cov) + ink_val * cov
    if not clean:
        if rng.random() < 0.5:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.1))
        if rng.random() < 0.6:
            img += rng.standard_normal((h, w)).astype(np.float32) * rng.uniform(1, 9)
        if rng.random() < 0.08:  # scanner streak
            x = int(rng.integers(0, w))
            img[:, x:x + int(rng.integers(1, 3))] -= rng.uniform(20, 60)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if not clean and rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))])
        out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


# ---------------------------------------------------------------------------------------- renderer


@dataclass
class Style:
    size: int
    jitter: float
    shear: float
    angle: float
    elastic_amp: float
    elastic_cell: float
    clean: bool
    margin_x: int
    margin_y: int
    pen: int = 0  # 0: the font's filled outlines; >0: centre lines redrawn with a round pen this wide
    joins: bool = False  # pen mode: cursive joining strokes between lower-case letters
    xscale: float = 1.0  # narrow (<1) or wide (>1) writing

    @classmethod
    def sample(cls, rng: np.random.Generator, clean_fraction: float = 0.3, cjk: bool = False,
               pen_fraction: float = 0.45) -> "Style":
        size = 3 * int(rng.integers(13, 22)) if not cjk else 3 * int(rng.integers(11, 19))  # few sizes: glyph cache
        return cls(
            size=size,
            jitter=float(rng.uniform(0.5, 1.6)),
            shear=float(np.clip(rng.normal(0.12, 0.15), -0.25, 0.5)),
            angle=float(rng.normal(0, 1.0)),
            elastic_amp=float(rng.uniform(0.5, 0.12 * size)) if rng.random() < 0.85 else 0.0,
            elastic_cell=float(rng.uniform(0.5, 1.4) * size),
            clean=bool(rng.random() < clean_fraction),
            margin_x=int(rng.integers(2, 24)),
            margin_y=int(rng.integers(2, 16)),
            pen=int(rng.choice([1, 2, 2, 2, 3, 3, 4])) if rng.random() < pen_fraction else 0,
            xscale=float(np.clip(rng.normal(1.0, 0.1), 0.75, 1.25)),
            joins=bool(rng.random() < 0.6),
        )


def render_ink(text: str, face: fonts.FontFace, rng: np.random.Generator, style: Style) -> InkLayer:
    """Text -> final ink layer (glyph jitter, slant, skew, elastic, stroke width, crop)."""
    layer = ink_layer(text, face.path, style.size, rng, jitter=style.jitter, skeleton=style.pen > 0,
                      joins=style.joins)
    layer = affine(layer, style.shear, style.angle, xscale=style.xscale)
    if style.elastic_amp > 0.3:
        layer = elastic(layer, rng, style.elastic_amp, style.elastic_cell)
    if style.pen:
        pen = min(style.pen, max(1, int(round(layer.x_height / 8))))  # small writing, fine pen: no blots
        layer.alpha = pen_stroke(layer.alpha, pen, rng)
        layer.grow += pen / 2 + 1
    else:
        thick = stroke_width(layer.alpha, rng, layer.x_height, fonts.stroke_width_ratio(face.path) * style.size)
        if thick.sum() > layer.alpha.sum():
            layer.grow += 1.5
        layer.alpha = thick
    return crop_ink(layer, style.margin_x, style.margin_y)


def render_line(text: str, face: fonts.FontFace, rng: np.random.Generator, style: Style | None = None,
                clean_fraction: float = 0.3) -> tuple[np.ndarray, InkLayer]:
    style = style or Style.sample(rng, clean_fraction, cjk="latin" not in face.scripts)
    layer = render_ink(text, face, rng, style)
    return compose(layer, rng, clean=style.clean), layer


def _pick_face(rng: np.random.Generator, faces: Sequence[fonts.FontFace]) -> fonts.FontFace:
    """Uniform over families first (a family with three files is not three times as likely)."""
    fams = sorted({f.family for f in faces})
    fam = fams[int(rng.integers(len(fams)))]
    members = [f for f in faces if f.family == fam]
    return members[int(rng.integers(len(members)))]


def sample_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of sample ``index`` of a run: independent of how samples are spread over workers."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), int(stream)])


DEFAULT_WEIGHTS = {"generic": 0.4, "cheque": 0.15, "prescription": 0.15, "homework": 0.15, "hanzi": 0.15}


class LineGenerator:
    """Synthetic text lines on demand, deterministic per (seed, split, index).

    >>> gen = LineGenerator(seed=0, split="train")
    >>> gray, text = gen.sample(17)

    ``domains``: text sources to draw from (``texts.LINE_DOMAINS``), weighted by ``weights``.
    ``strokes_fraction``: share of *generic* lines taken from re-rendered real IAM-OnDB pen strokes
    (forms of the same split only; 0 disables). Train and val use the train fonts, test the test fonts.
    """

    def __init__(self, seed: int = 0, split: str = "train", domains: Sequence[str] | None = None,
                 weights: dict[str, float] | None = None, clean_fraction: float = 0.3, strokes_fraction: float = 0.0):
        self.seed, self.split = int(seed), split
        self.domains = list(domains or DEFAULT_WEIGHTS)
        for d in self.domains:
            if d not in texts.SOURCES:
                raise ValueError(f"unknown domain {d!r}; choose from {sorted(texts.SOURCES)}")
        w = np.array([(weights or DEFAULT_WEIGHTS).get(d, 0.1) for d in self.domains], np.float64)
        self.p = w / w.sum()
        self.clean_fraction = clean_fraction
        self.strokes_fraction = strokes_fraction
        self.registry = fonts.registry()
        font_split = "test" if split == "test" else "train"
        self.latin = self.registry.faces_for(font_split, "latin")
        self.cjk = self.registry.faces_for(font_split, "cjk")
        self.font_split = font_split

    def sample(self, index: int) -> tuple[np.ndarray, str]:
        s = self.sample_full(index)
        return s.image, s.text

    def sample_full(self, index: int) -> LineSample:
        rng = sample_rng(self.seed, index, {"train": 0, "val": 1, "test": 2}.get(self.split, 3))
        domain = self.domains[int(rng.choice(len(self.domains), p=self.p))]
        if domain == "generic" and self.strokes_fraction > 0 and rng.random() < self.strokes_fraction:
            from htr_ray.data.synth import strokes

            got = strokes.render_random(rng, self.split, clean_fraction=self.clean_fraction)
            if got is not None:
                return got
        if domain == "hanzi":
            if not self.cjk:
                raise fonts.FontError(f"no CJK font for split {self.split}")
            face = _pick_face(rng, self.cjk)
            allowed = fonts.coverage(face.path, set(texts.HANZI) | set("".join(texts.HANZI_WORDS)) | set("。，！？"))
            text = " ".join(texts.hanzi_line(rng, allowed).split())
        else:
            for _ in range(20):
                text = texts.line_text(domain, rng)
                need = set(text.replace(" ", ""))
                faces = [f for f in self.latin if fonts.covers_all(f.path, need)]
                if faces:
                    break
            else:
                raise fonts.FontError(f"no {self.font_split} font covers the texts of domain {domain}")
            face = _pick_face(rng, faces)
        style = Style.sample(rng, self.clean_fraction, cjk=domain == "hanzi")
        img, layer = render_line(text, face, rng, style)
        return LineSample(img, text, face.name, domain, self.split, layer, meta=dict(style.__dict__))
