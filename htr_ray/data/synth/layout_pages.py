"""Pages whose every text line is known: the training and test data of the line finder, and the pages
the page-level benchmarks score on.

``compose_page(seed, split, kind)`` returns a :class:`ComposedPage` (uint8 gray image + one dict per
text line, printed and handwritten, in reading order). Kinds:

- ``iam_plain``, ``iam_ruled``: REAL IAM-OnDB lines of ``split``'s forms (the project's split by form,
  :func:`htr_ray.data.rows.load_rows`), one form after another in their order, on plain or ruled
  paper: mixed writing sizes, line pitches down to about twice the x-height (descenders of one line
  reach the ascenders of the next), paper tone and texture, varying ink, rotation of a few degrees, blur,
  noise, JPEG.
- ``iam_form_cheque``, ``iam_form_prescription``, ``iam_form_homework``: the printed forms of
  :mod:`htr_ray.data.synth.pages` (labels, rules, boxes, logos, security pattern, tinted paper) filled in
  with real IAM-OnDB lines instead of font handwriting; each field takes a line of the page's writer
  that fits it.
- ``generated``: a generated cheque, prescription or homework page (font handwriting; the ``test``
  split uses the unseen test fonts, as :class:`~htr_ray.data.synth.pages.PageGenerator` does).
- ``empty_form``: one of those forms with no handwriting at all (only printed lines);
  ``blank``: paper, sometimes ruled, and nothing written (no lines).

Each line dict: ``text``, ``kind`` ("handwritten" | "printed"), ``bbox`` [x0, y0, x1, y1] (hugs the
ink, pixels of ``image``), ``polygon`` (the line's rotated rectangle, 4 points clockwise),
``core`` (the x-height band between the baseline and the mean line, 4 points: what the line finder
learns to see), ``baseline`` ([[x, y], [x, y]], left to right) and ``source`` (IAM line id, or ""
for font text). Same seed, split and kind: same page, byte for byte.

>>> page = compose_page(0, "test", "iam_form_cheque")
>>> page.image.shape, page.handwritten_text
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from htr_ray import paths
from htr_ray.data.synth import fonts, render
from htr_ray.data.synth.pages import LAYOUTS, PAGE_DOMAINS, _Page, ink_on_paper

log = logging.getLogger(__name__)

IAM_KINDS = ("iam_plain", "iam_ruled", "iam_form_cheque", "iam_form_prescription", "iam_form_homework")
KINDS = IAM_KINDS + ("generated", "empty_form", "blank")
SPLITS = ("train", "val", "test")
HANDWRITTEN, PRINTED = "handwritten", "printed"


@dataclass
class ComposedPage:
    image: np.ndarray  # uint8 gray
    lines: list[dict]  # reading order; see the module docstring
    kind: str
    split: str
    seed: int
    meta: dict = field(default_factory=dict)

    @property
    def handwritten_lines(self) -> list[dict]:
        return [ln for ln in self.lines if ln["kind"] == HANDWRITTEN]

    @property
    def handwritten_text(self) -> str:
        """The ground truth a page CER is scored on: the handwritten lines in reading order."""
        return "\n".join(ln["text"] for ln in self.handwritten_lines)


# ------------------------------------------------------------------------------------ real IAM lines


@dataclass
class _Ink:
    alpha: np.ndarray  # float32 0..1 coverage, cropped to the ink
    core: tuple[float, float]  # rows of the mean line and the baseline in alpha
    text: str
    source: str


def core_band(alpha: np.ndarray) -> tuple[float, float]:
    """(top, bottom) rows of the x-height band of a line's ink: where the row profile of the ink is at
    least 40 % of its (smoothed) peak. The bottom is the baseline."""
    prof = (alpha > 0.3).sum(axis=1).astype(np.float32)
    if prof.max() <= 0:
        return 0.0, float(alpha.shape[0])
    k = max(1, alpha.shape[0] // 12) | 1
    prof = cv2.GaussianBlur(prof.reshape(-1, 1), (1, k), 0).ravel() if k > 1 else prof
    rows = np.flatnonzero(prof >= 0.4 * prof.max())
    return float(rows[0]), float(rows[-1] + 1)


@functools.lru_cache(maxsize=4)
def iam_pool(split: str) -> tuple[dict, ...]:
    """The IAM-OnDB lines of ``split`` (by form, the project's rule), read once per process with the
    project's labels.tsv reader: ({"id", "image" (PNG bytes), "text", "form"}, ...) in file order."""
    from htr_ray.data.datasets import iam_form_id
    from htr_ray.data.rows import load_rows

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    rows = load_rows(str(paths.shared_data() / "iam_ondb_lines"), split)
    out = tuple({**r, "form": iam_form_id(r["id"])} for r in rows if r.get("image"))
    if not out:
        raise RuntimeError(f"no IAM-OnDB lines in split {split!r} under {paths.shared_data()}")
    return out


@functools.lru_cache(maxsize=4)
def _forms(split: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    by: dict[str, list[int]] = {}
    for i, r in enumerate(iam_pool(split)):
        by.setdefault(r["form"], []).append(i)
    return tuple(sorted((f, tuple(ix)) for f, ix in by.items()))


@functools.lru_cache(maxsize=4096)
def _iam_ink(split: str, index: int) -> _Ink | None:
    r = iam_pool(split)[index]
    g = cv2.imdecode(np.frombuffer(r["image"], np.uint8), cv2.IMREAD_GRAYSCALE)
    if g is None:
        return None
    a = np.clip((255.0 - g.astype(np.float32)) / 255.0, 0, 1)
    ys, xs = np.nonzero(a > 0.1)
    if ys.size < 20:
        return None
    a = a[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    top, bot = core_band(a)
    if bot - top < 3:
        return None
    return _Ink(a, (top, bot), r["text"], r["id"])


@functools.lru_cache(maxsize=8192)
def _writer_core(split: str, index: int) -> float | None:
    """The x-height of line ``index``'s writer: the median over the lines of its form (one line's own
    estimate is noisy: dense capitals or a long descender move it)."""
    form = iam_pool(split)[index]["form"]
    return _form_core(split, form)


@functools.lru_cache(maxsize=2048)
def _form_core(split: str, form: str) -> float | None:
    ix = dict(_forms(split)).get(form, ())
    cores = [ink.core[1] - ink.core[0] for ink in (_iam_ink(split, i) for i in ix) if ink is not None]
    return float(np.median(cores)) if cores else None


def _scaled(ink: _Ink, scale: float, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """(alpha at ``scale`` with a random pen weight, core top, baseline) of one IAM line."""
    h, w = ink.alpha.shape
    a = cv2.resize(ink.alpha, (max(1, int(round(w * scale))), max(1, int(round(h * scale)))), interpolation=cv2.INTER_AREA)
    r = rng.random()
    if r < 0.3:
        a = cv2.dilate(a, np.ones((2, 2), np.uint8))
    elif r < 0.4 and min(a.shape) > 6:
        a = cv2.dilate(a, np.ones((3, 3), np.uint8))
    a = np.clip(a * rng.uniform(1.0, 1.6), 0, 1)
    return a, ink.core[0] * scale, ink.core[1] * scale


class _Sheet(_Page):
    """A page being composed (the printed layer and handwriting coverage of :class:`_Page`) that also
    records every printed text line and the geometry of every handwritten line."""

    def __init__(self, w, h, rng, face, split, cjk_face=None, iam: bool = False, empty: bool = False):
        super().__init__(w, h, rng, face, split, cjk_face)
        self.empty = empty
        self.all_lines: list[dict] = []  # both kinds, in the order they were written (reading order)
        self.iam = iam
        self.used: set[int] = set()
        forms = _forms(split) if iam else ()
        self.form_lines = list(forms[int(rng.integers(len(forms)))][1]) if forms else []
        self.core_px = self.size * float(rng.uniform(0.36, 0.5))  # x-height of the IAM writer on this form

    # printed text ---------------------------------------------------------------------------------
    def text(self, xy, s: str, size: int = 22, bold: bool = False, serif: bool = False, shade=None, anchor="ls"):
        super().text(xy, s, size, bold, serif, shade, anchor)
        font = self.font(size, bold, serif)
        x0, y0, x1, y1 = self.draw.textbbox(xy, s, font=font, anchor=anchor)
        if x1 <= x0 or y1 <= y0 or not s.strip():
            return
        if anchor == "ls":
            base = float(xy[1])
            lower = any(c.islower() for c in s)
            t = font.getbbox("x" if lower else "H", anchor="ls")[1]  # negative: x- or cap height above the baseline
            top = base + t
        else:
            top, base = y0 + 0.3 * (y1 - y0), y1 - 0.15 * (y1 - y0)
        self.all_lines.append({"text": s, "kind": PRINTED, "box0": [x0, y0, x1, y1], "core0": (top, base), "source": ""})

    # handwriting ----------------------------------------------------------------------------------
    def handwrite(self, s: str, x: int, baseline: int, max_w: int, *, cjk: bool = False, face=None) -> None:
        if self.empty:
            return
        if not self.iam:
            n = len(self.lines)
            super().handwrite(s, x, baseline, max_w, cjk=cjk, face=face)
            line = self.lines[n]
            x0, y0, x1, y1 = line["bbox"]
            top, bot = core_band(self.hand[y0:y1, x0:x1])
            self.all_lines.append({"text": line["text"], "kind": HANDWRITTEN, "box0": [x0, y0, x1, y1],
                                   "core0": (y0 + top, y0 + bot), "source": ""})
            return
        rng = self.rng
        core = self.core_px * float(rng.uniform(0.92, 1.08))
        target_w = max_w * float(rng.uniform(0.45, 1.0))
        # candidates: this writer's unused lines first, then random lines of the split
        own = [i for i in self.form_lines if i not in self.used]
        pool_n = len(iam_pool(self.split))
        cands = own + [int(i) for i in rng.integers(0, pool_n, 24)]
        best, best_cost = None, None
        for i in cands:
            ink = _iam_ink(self.split, i)
            wc = _writer_core(self.split, i)
            if ink is None or not wc:
                continue
            w = ink.alpha.shape[1] * core / wc
            cost = abs(w - target_w) / target_w + (2.0 if w > max_w else 0.0) + (0.0 if i in own else 0.3)
            if best_cost is None or cost < best_cost:
                best, best_cost = i, cost
        if best is None:
            raise ValueError("no usable IAM line")
        self.used.add(best)
        ink = _iam_ink(self.split, best)
        scale = core / _writer_core(self.split, best)
        if ink.alpha.shape[1] * scale > max_w:
            scale = max_w / ink.alpha.shape[1]
        a, top, bot = _scaled(ink, scale, rng)
        x = int(x + rng.integers(0, 12))
        y = int(round(baseline - bot - rng.uniform(0, 3)))
        self._place(a, x, y, top, bot, ink.text, ink.source)

    def _place(self, a: np.ndarray, x: int, y: int, top: float, bot: float, text: str, source: str) -> bool:
        h, w = a.shape
        if w >= self.w - 4 or h >= self.h - 4:
            return False
        box, y = self.put_ink(a, x, y)
        if box is None:
            return False
        self.lines.append({"text": text, "bbox": box})
        self.all_lines.append({"text": text, "kind": HANDWRITTEN, "box0": box, "core0": (y + top, y + bot), "source": source})
        return True


def _scan(p: _Page, rng: np.random.Generator, angle_sd: float, max_angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Ink on paper, then a scan (as :meth:`_Page.finish`, with a wider rotation): (gray page, the 3x3
    matrix that maps composition coordinates onto it)."""
    h, w = p.h, p.w
    img = ink_on_paper(p, rng, ink_range=(5, 110), pressure_spread=0.3, pressure_floor=0.55, shadow_p=0.5)
    angle = float(np.clip(rng.normal(0, angle_sd), -max_angle, max_angle))
    m = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), [0, 0, 1]])
    if rng.random() < 0.25:
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        jitter = rng.uniform(-0.012, 0.012, (4, 2)) * (w, h)
        m = cv2.getPerspectiveTransform(src, (src + jitter).astype(np.float32)) @ m
    bed = float(rng.uniform(150, 240))
    img = cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=bed)
    if rng.random() < 0.6:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.1))
    img += rng.standard_normal((h, w)).astype(np.float32) * rng.uniform(1, 8)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 92))])
        out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out, m


def _project(pts, m: np.ndarray) -> np.ndarray:
    return cv2.perspectiveTransform(np.float32(pts).reshape(1, -1, 2), m)[0]


def _finish_lines(p: _Sheet, m: np.ndarray) -> list[dict]:
    w, h = p.w, p.h
    out = []
    for ln in p.all_lines:
        x0, y0, x1, y1 = ln["box0"]
        top, base = ln["core0"]
        poly = _project([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], m)
        core = _project([[x0, top], [x1, top], [x1, base], [x0, base]], m)
        bl = _project([[x0, base], [x1, base]], m)
        box = [max(0, int(math.floor(poly[:, 0].min()))), max(0, int(math.floor(poly[:, 1].min()))),
               min(w, int(math.ceil(poly[:, 0].max()))), min(h, int(math.ceil(poly[:, 1].max())))]
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        rnd = lambda a: [[int(round(x)), int(round(y))] for x, y in a]  # noqa: E731
        out.append({"text": ln["text"], "kind": ln["kind"], "bbox": box, "polygon": rnd(poly), "core": rnd(core),
                    "baseline": rnd(bl), "source": ln["source"]})
    return out


def _faces(split: str):
    reg = fonts.registry()
    fs = "test" if split == "test" else "train"
    return reg.faces_for(fs, "latin"), reg.faces_for(fs, "cjk")


def _ruled_or_plain(rng: np.random.Generator, split: str, ruled: bool) -> tuple[_Sheet, dict]:
    w = int(rng.integers(1400, 1800))
    h = int(w * rng.uniform(1.25, 1.45))
    latin, _ = _faces(split)
    p = _Sheet(w, h, rng, render._pick_face(rng, latin), split, None, iam=True)
    core = float(rng.uniform(13, 32))  # x-height in pixels: writing size and scan resolution both vary
    pitch = core * (rng.uniform(2.4, 3.4) if ruled else rng.uniform(2.1, 3.8))
    left = int(rng.integers(40, 260))
    right = w - int(rng.integers(40, 200))
    y = float(rng.integers(70, 260))
    forms = _forms(split)
    order: list[int] = []
    while len(order) < 80:
        order += list(forms[int(rng.integers(len(forms)))][1])
    if ruled:
        shade = int(rng.integers(140, 215))
        for yv in np.arange(y + pitch, h - 40, pitch):
            p.rule(20, int(yv), w - 20, shade=shade, width=int(rng.choice([1, 1, 2])))
        if rng.random() < 0.6:
            xm = left - int(rng.integers(10, 40))
            p.draw.line([(xm, 20), (xm, h - 20)], fill=int(rng.integers(110, 200)), width=2)
    k = 0
    base = y + pitch
    while base < h - 60 and k < len(order):
        if ruled and rng.random() < 0.08:  # a skipped rule
            base += pitch
            continue
        ink = _iam_ink(split, order[k])
        wc = _writer_core(split, order[k])
        k += 1
        if ink is None or not wc:
            continue
        scale = core * float(rng.uniform(0.95, 1.05)) / wc
        x = left + int(rng.integers(0, 40)) + (int(rng.integers(40, 160)) if rng.random() < 0.1 else 0)
        scale = min(scale, (right - x) / ink.alpha.shape[1])
        a, top, bot = _scaled(ink, scale, rng)
        yb = base - (rng.uniform(1, 0.25 * core) if ruled else rng.normal(0, 0.1 * core))
        if yb - bot + a.shape[0] > h - 10:
            break
        p._place(a, x, int(round(yb - bot)), top, bot, ink.text, ink.source)
        base += pitch * (1.0 if ruled else float(rng.uniform(0.92, 1.08)))
        if not ruled and rng.random() < 0.07:  # paragraph break
            base += pitch * float(rng.uniform(0.5, 1.5))
    return p, {"x_height": core, "pitch": pitch}


def compose_page(seed: int, split: str, kind: str) -> ComposedPage:
    """One page with known lines; deterministic for (seed, split, kind). See the module docstring."""
    if kind not in KINDS:
        raise ValueError(f"unknown page kind {kind!r}; choose from {KINDS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, KINDS.index(kind), SPLITS.index(split), 7])
    meta: dict = {}
    if kind in ("iam_plain", "iam_ruled"):
        p, meta = _ruled_or_plain(rng, split, kind == "iam_ruled")
        angle_sd = 1.5
    elif kind == "blank":
        w = int(rng.integers(1200, 1800))
        h = int(w * rng.uniform(0.45, 1.45))
        latin, _ = _faces(split)
        p = _Sheet(w, h, rng, render._pick_face(rng, latin), split)
        if rng.random() < 0.5:
            pitch = int(rng.integers(40, 90))
            for yv in range(int(rng.integers(60, 200)), h - 40, pitch):
                p.rule(20, yv, w - 20, shade=int(rng.integers(140, 215)), width=1)
        angle_sd = 1.0
    else:
        fixed = kind.startswith("iam_form_")
        domain = kind.rsplit("_", 1)[1] if fixed else PAGE_DOMAINS[int(rng.integers(len(PAGE_DOMAINS)))]
        layout, (w, h) = LAYOUTS[domain]
        latin, cjk = _faces(split)
        if kind == "generated":
            from htr_ray.data.synth.pages import PageGenerator

            latin = PageGenerator(0, split, [domain]).latin
        for attempt in range(6):
            face = render._pick_face(rng, latin)
            cjk_face = render._pick_face(rng, cjk) if (cjk and kind == "generated") else None
            p = _Sheet(w, h, rng, face, split, cjk_face, iam=fixed, empty=kind == "empty_form")
            try:
                layout(p)
                break
            except ValueError as e:  # an uncovered glyph: another hand
                log.debug("page %d (%s) attempt %d: %s", seed, kind, attempt, e)
        else:
            raise RuntimeError(f"could not lay out page {seed} ({kind})")
        meta = {"domain": domain, "font": "iam-ondb" if fixed else face.name}
        angle_sd = 1.0
    img, m = _scan(p, rng, angle_sd, 4.0)
    lines = _finish_lines(p, m)
    return ComposedPage(img, lines, kind, split, int(seed), meta)
