"""Evaluation reports as files: a confusion-matrix PNG, an error-gallery PNG and a metrics JSON.

Pillow only (no plotting library). Labels that the available fonts cannot draw (CJK without a CJK
font installed) are written as code points (``U+4E00``); install a CJK font (Debian:
``fonts-noto-cjk`` or ``fonts-wqy-microhei``) or set ``HTR_CJK_FONT=/path/font.ttf`` to see the
characters themselves. Every writer takes a storage URI (local path, ``file://`` or ``s3://``).
"""

from __future__ import annotations

import functools
import glob
import io
import json
import logging
import math
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

LATIN_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:/Windows/Fonts/arial.ttf",
)
CJK_FONT_GLOBS = (
    "/usr/share/fonts/**/NotoSansCJK*.tt[cf]",
    "/usr/share/fonts/**/NotoSerifCJK*.tt[cf]",
    "/usr/share/fonts/**/NotoSans*SC*.[ot]tf",
    "/usr/share/fonts/**/wqy-*.tt[cf]",
    "/usr/share/fonts/**/DroidSansFallback*.ttf",
    "/usr/share/fonts/**/uming.tt[cf]",
    "/usr/share/fonts/**/ukai.tt[cf]",
    "/usr/share/fonts/**/*[Ss]imHei*.tt[cf]",
    "/usr/share/fonts/**/*[Ss]imSun*.tt[cf]",
    "/System/Library/Fonts/PingFang.ttc",
)


# ------------------------------------------------------------------------------------------ fonts


@functools.lru_cache(maxsize=None)
def _font_path(cjk: bool) -> str | None:
    if cjk:
        env = os.environ.get("HTR_CJK_FONT")
        if env and os.path.exists(env):
            return env
        for pattern in CJK_FONT_GLOBS:
            hits = sorted(glob.glob(pattern, recursive=True))
            if hits:
                return hits[0]
        return None
    for p in LATIN_FONTS:
        if os.path.exists(p):
            return p
    return None


@functools.lru_cache(maxsize=None)
def font(size: int, cjk: bool = False) -> ImageFont.ImageFont:
    path = _font_path(cjk)
    if path is None:
        if cjk:
            return font(size, cjk=False)
        return ImageFont.load_default(size=size) if hasattr(ImageFont, "load_default") else ImageFont.load_default()
    return ImageFont.truetype(path, size)


def has_cjk_font() -> bool:
    return _font_path(True) is not None


def _is_wide(ch: str) -> bool:
    o = ord(ch)
    return 0x2E80 <= o <= 0x9FFF or 0xAC00 <= o <= 0xD7AF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FFFF


def displayable(text: str) -> tuple[str, bool]:
    """(text to draw, needs the CJK font). Without a CJK font, CJK characters become ``U+XXXX``."""
    if not any(_is_wide(ch) for ch in text):
        return text, False
    if has_cjk_font():
        return text, True
    return "".join(f"U+{ord(ch):04X}" if _is_wide(ch) else ch for ch in text), False


def _draw_text(draw: ImageDraw.ImageDraw, xy, text: str, size: int, fill=(0, 0, 0), anchor: str | None = None) -> None:
    shown, cjk = displayable(text)
    draw.text(xy, shown, fill=fill, font=font(size, cjk), anchor=anchor)


def _text_width(text: str, size: int) -> int:
    shown, cjk = displayable(text)
    f = font(size, cjk)
    box = f.getbbox(shown) if shown else (0, 0, 0, 0)
    return int(box[2] - box[0])


# ------------------------------------------------------------------------------------ PNG output


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_png(img: Image.Image, uri: str) -> str:
    from htr_ray.io import storage

    storage.write_bytes(uri, png_bytes(img))
    return uri


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite(o: Any):
    """NaN/inf are not JSON: write them as null."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def write_json(uri: str, obj: Any) -> str:
    """Write ``obj`` as pretty, strict JSON (numpy scalars converted, NaN -> null) to a URI."""
    from htr_ray.io import storage

    text = json.dumps(_finite(json.loads(json.dumps(obj, default=_json_default))), indent=2, ensure_ascii=False,
                      allow_nan=False)
    storage.write_bytes(uri, (text + "\n").encode("utf-8"))
    return uri


# ------------------------------------------------------------------------------ confusion matrix


def confusion_matrix_image(classes: Sequence, matrix: Sequence[Sequence[int]], title: str = "",
                           cell: int | None = None, normalize: bool = True) -> Image.Image:
    """A confusion matrix as an RGB image: rows = true class, columns = predicted class; cell colour
    is the row share (recall per class on the diagonal), the count is written in the cell.

    Layout: ``cell`` px per class (default 36, smaller for many classes), a label band of
    ``label_w`` px on the left and on top, a title band of 30 px. Size =
    (label_w + n*cell + 10, 30 + label_w + n*cell + 10).
    """
    n = len(classes)
    if n == 0:
        raise ValueError("no classes")
    m = np.asarray(matrix, dtype=np.int64)
    if m.shape != (n, n):
        raise ValueError(f"matrix shape {m.shape} does not match {n} classes")
    cell = cell or (36 if n <= 30 else max(8, 1080 // n))
    fsize = max(7, min(14, cell // 3))
    labels = [str(c) for c in classes]
    label_w = min(160, max(30, max(_text_width(lbl, fsize + 2) for lbl in labels) + 12))
    top = 30 + label_w
    width, height = label_w + n * cell + 10, top + n * cell + 10
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    _draw_text(d, (6, 6), title or f"confusion matrix ({int(m.sum())} samples; rows = truth, columns = prediction)", 14)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, np.maximum(rows, 1)) if normalize else m / max(int(m.max()), 1)
    for i in range(n):
        for j in range(n):
            x0, y0 = label_w + j * cell, top + i * cell
            v = float(share[i, j])
            if i == j:
                colour = (int(255 - 200 * v), int(255 - 90 * v), int(255 - 200 * v))  # green diagonal
            else:
                colour = (255, int(255 - 215 * v), int(255 - 215 * v))  # red off-diagonal
            d.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(220, 220, 220))
            if m[i, j] and cell >= 18:
                d.text((x0 + cell // 2, y0 + cell // 2), str(int(m[i, j])), fill=(0, 0, 0),
                       font=font(fsize), anchor="mm")
    for k, lbl in enumerate(labels):
        # row labels, right-aligned against the grid
        _draw_text(d, (label_w - 6, top + k * cell + cell // 2), lbl, fsize + 2, anchor="rm")
        # column labels: drawn horizontally into a small image, rotated to read bottom-up
        shown, cjk = displayable(lbl)
        f = font(fsize + 2, cjk)
        tw = max(1, _text_width(lbl, fsize + 2) + 4)
        tile = Image.new("RGB", (tw, cell), "white")
        ImageDraw.Draw(tile).text((2, cell // 2), shown, fill=(0, 0, 0), font=f, anchor="lm")
        tile = tile.rotate(90, expand=True)
        if tile.height > label_w - 4:
            tile = tile.crop((0, tile.height - (label_w - 4), tile.width, tile.height))
        img.paste(tile, (label_w + k * cell, top - 4 - tile.height))
    return img


def confusion_matrix_png(uri: str, classes: Sequence, matrix: Sequence[Sequence[int]], title: str = "") -> str:
    return save_png(confusion_matrix_image(classes, matrix, title), uri)


# ---------------------------------------------------------------------------------- error gallery


def _to_rgb_tile(gray: np.ndarray, height: int, max_width: int) -> Image.Image:
    g = np.asarray(gray)
    if g.dtype != np.uint8:  # a model input (float, ink = 1): back to ink-dark uint8
        g = np.clip((1.0 - g.astype(np.float32)) * 255.0, 0, 255).astype(np.uint8)
    h, w = g.shape[:2]
    new_w = max(1, min(max_width, int(round(w * height / max(h, 1)))))
    im = Image.fromarray(g).resize((new_w, height), Image.BILINEAR if h < height else Image.LANCZOS)
    return im.convert("RGB")


def error_gallery_image(items: Sequence[dict], title: str = "", columns: int = 1, image_height: int = 48,
                        tile_width: int = 900, text_size: int = 15) -> Image.Image:
    """A gallery of samples: each tile shows the image, then ``truth`` and ``pred`` (and ``note``,
    e.g. "CER 0.25, conf 0.41") under it. ``items`` are dicts with ``image`` (2-D uint8 gray or a float
    model input), ``truth``, ``pred`` and optional ``note``.

    Layout: ``columns`` tiles per row, each ``tile_width`` wide and ``image_height + 3 * (text_size + 6)
    + 12`` high; a 34 px title band on top. Size = (columns * tile_width,
    34 + rows * tile_height) with rows = ceil(len(items) / columns) (at least 1).
    """
    line_h = text_size + 6
    tile_h = image_height + 3 * line_h + 12
    rows = max(1, math.ceil(len(items) / max(columns, 1)))
    width, height = columns * tile_width, 34 + rows * tile_h
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    _draw_text(d, (8, 8), title or f"{len(items)} samples", 16)
    if not items:
        _draw_text(d, (8, 40), "no errors to show", text_size, fill=(0, 120, 0))
    for k, it in enumerate(items):
        r, c = divmod(k, columns)
        x0, y0 = c * tile_width, 34 + r * tile_h
        d.rectangle([x0 + 2, y0 + 2, x0 + tile_width - 3, y0 + tile_h - 3], outline=(200, 200, 200))
        if it.get("image") is not None:
            tile = _to_rgb_tile(it["image"], image_height, tile_width - 12)
            img.paste(tile, (x0 + 6, y0 + 6))
        ty = y0 + 8 + image_height
        truth, pred = str(it.get("truth", "")), str(it.get("pred", ""))
        _draw_text(d, (x0 + 8, ty), f"truth: {truth}", text_size, fill=(0, 100, 0))
        _draw_text(d, (x0 + 8, ty + line_h), f"pred:  {pred}", text_size,
                   fill=(0, 0, 0) if pred == truth else (190, 0, 0))
        if it.get("note"):
            _draw_text(d, (x0 + 8, ty + 2 * line_h), str(it["note"]), text_size - 2, fill=(90, 90, 90))
    return img


def error_gallery_png(uri: str, items: Sequence[dict], title: str = "", columns: int = 1, **layout) -> str:
    return save_png(error_gallery_image(items, title=title, columns=columns, **layout), uri)


def calibration_table_text(cal: dict) -> str:
    """The calibration bins and review table as a small fixed-width text table."""
    lines = ["bin  conf range           lines   CER     exact   | review below  share   CER kept"]
    for b, r in zip(cal.get("bins", []), cal.get("review_table", [])):
        lines.append(f"{b['bin']:>3}  {b['conf_min']:<8.3g}-{b['conf_max']:<8.3g}{b['lines']:>6}  {b['cer']:.4f}  "
                     f"{b['line_accuracy']:.3f}   | {r['threshold']:<8.3g}     {r['review_share']:.2f}    {r['cer_accepted']:.4f}")
    return "\n".join(lines)
