"""Contact sheets: one PNG grid of samples with their ground truth, so anyone can look at what is generated.

``lines_sheet`` puts each line image above its text; ``pages_sheet`` shows page thumbnails with the
handwritten-line boxes drawn in red and the first lines of the text under them. Both return PNG bytes;
``write`` puts them at any URI.
"""

from __future__ import annotations

import io
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw

from htr_ray.data.synth import fonts


def _caption_font(size: int, cjk: bool):
    reg = fonts.registry()
    if cjk:
        faces = [f for f in reg.faces if "cjk" in f.scripts]
        if faces:
            return fonts.load(faces[0].path, size)
    printed = [f.path for f in reg.printed if "Sans" in f.path and "Bold" not in f.path]
    return fonts.load(printed[0] if printed else reg.faces[0].path, size)


def _is_cjk(s: str) -> bool:
    return any(ord(c) >= 0x2E80 for c in s)


def lines_sheet(items: Sequence[tuple[np.ndarray, str]], columns: int = 2, cell_w: int = 760, max_h: int = 120,
                title: str = "") -> bytes:
    """Grid of (gray line image, text) pairs; each image scaled to fit ``cell_w`` x ``max_h``."""
    cap_h, pad = 26, 10
    thumbs = []
    for gray, text in items:
        h, w = gray.shape
        f = min(1.0, (cell_w - 2 * pad) / w, max_h / h)
        thumbs.append((cv2.resize(gray, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA), text))
    rows = (len(thumbs) + columns - 1) // columns
    cell_h = max_h + cap_h + pad
    top = 40 if title else 0
    sheet = Image.new("RGB", (columns * cell_w, top + rows * cell_h), (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 8), title, font=_caption_font(22, _is_cjk(title)), fill=(0, 0, 0))
    for k, (t, text) in enumerate(thumbs):
        r, c = divmod(k, columns)
        x, y = c * cell_w + pad, top + r * cell_h + pad // 2
        sheet.paste(Image.fromarray(t).convert("RGB"), (x, y))
        draw.rectangle([x - 1, y - 1, x + t.shape[1], y + t.shape[0]], outline=(160, 160, 160))
        draw.text((x, y + t.shape[0] + 3), text[:90], font=_caption_font(16, _is_cjk(text)), fill=(0, 0, 160))
    return _png(sheet)


def pages_sheet(items: Sequence[tuple[np.ndarray, list[dict], str]], columns: int = 3, cell_w: int = 560,
                caption_lines: int = 4, title: str = "") -> bytes:
    """Grid of (gray page, line dicts, label): thumbnails with the line boxes in red."""
    pad, cap_line = 10, 20
    thumbs = []
    for gray, lines, label in items:
        h, w = gray.shape
        f = (cell_w - 2 * pad) / w
        small = cv2.cvtColor(cv2.resize(gray, (int(w * f), int(h * f)), interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2RGB)
        for line in lines:
            x0, y0, x1, y1 = (int(round(v * f)) for v in line["bbox"])
            cv2.rectangle(small, (x0, y0), (x1, y1), (220, 0, 0), 1)
        thumbs.append((small, lines, label))
    rows = (len(thumbs) + columns - 1) // columns
    cell_h = max(t[0].shape[0] for t in thumbs) + (caption_lines + 1) * cap_line + 2 * pad
    top = 40 if title else 0
    sheet = Image.new("RGB", (columns * cell_w, top + rows * cell_h), (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 8), title, font=_caption_font(22, False), fill=(0, 0, 0))
    for k, (t, lines, label) in enumerate(thumbs):
        r, c = divmod(k, columns)
        x, y = c * cell_w + pad, top + r * cell_h + pad
        sheet.paste(Image.fromarray(t), (x, y))
        yy = y + t.shape[0] + 4
        draw.text((x, yy), f"{label}: {len(lines)} handwritten lines", font=_caption_font(15, False), fill=(0, 0, 0))
        for line in lines[:caption_lines]:
            yy += cap_line
            draw.text((x, yy), line["text"][:60], font=_caption_font(15, _is_cjk(line["text"])), fill=(0, 0, 160))
    return _png(sheet)


def _png(im: Image.Image, colors: int = 64) -> bytes:
    """PNG with a small palette: gray scans, red boxes and blue captions need few colours (3-4x smaller)."""
    buf = io.BytesIO()
    im.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write(uri: str, png: bytes) -> None:
    from htr_ray.io import storage

    storage.write_bytes(uri, png)
