"""Image basics shared by every runtime: decode anything to 8-bit grayscale, refuse bombs, and the one
line pre-processing function that training, evaluation, the bulk job and Serve all call.

Conventions: a *gray* image is a 2-D ``uint8`` array, ink dark on a light background (as scanned).
A *model input* is ``float32`` in [0, 1] with ink = 1 (inverted), height fixed, aspect kept.
"""

from __future__ import annotations

import io
import logging
import os
from typing import Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

# A4 at 600 dpi is ~35 Mpx; anything far beyond that is a mistake or an attack (decompression bomb).
DEFAULT_MAX_PIXELS = int(os.environ.get("HTR_MAX_PIXELS", 100_000_000))
MIN_SIDE = 2  # a 1x1 "image" carries no text; callers may ask for more


class ImageError(ValueError):
    """An input that is not a usable image. ``kind`` is a short stable tag used in error counts:
    ``empty``, ``undecodable``, ``truncated``, ``too_large``, ``too_small``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# ----------------------------------------------------------------------------------------- decoding


def _sniff_size(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, frames) read from the header only, without decoding pixels; None when Pillow
    does not know the format (cv2 may still)."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit, before any pixel is decoded
    try:
        with Image.open(io.BytesIO(data)) as im:
            frames = getattr(im, "n_frames", 1)
            return im.size[0], im.size[1], int(frames)
    except Exception:
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _looks_truncated(data: bytes) -> bool:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-64:]
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" not in data[-1024:]
    return False


def to_gray(img: np.ndarray) -> np.ndarray:
    """Any decoded array (gray, gray+alpha, BGR, BGRA; uint8, uint16, float, bool) → 2-D uint8 gray.
    Transparent pixels become white paper, as they would print."""
    a = np.asarray(img)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = (a.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif a.dtype.kind == "f":
        hi = float(np.nanmax(a)) if a.size else 1.0
        scale = 255.0 if hi <= 1.0 else 1.0
        a = np.clip(np.nan_to_num(a) * scale, 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return a
    if a.ndim != 3:
        raise ImageError("undecodable", f"unexpected image array of shape {a.shape}")
    channels = a.shape[2]
    if channels == 1:
        return a[:, :, 0]
    if channels == 2:  # gray + alpha
        gray, alpha = a[:, :, 0].astype(np.float32), a[:, :, 1].astype(np.float32) / 255.0
        return (gray * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    if channels == 4:  # BGRA
        bgr, alpha = a[:, :, :3].astype(np.float32), a[:, :, 3:4].astype(np.float32) / 255.0
        a = (bgr * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    return cv2.cvtColor(a[:, :, :3], cv2.COLOR_BGR2GRAY)


def decode_pages(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE) -> list[np.ndarray]:
    """Decode PNG, JPEG, TIFF (every page), BMP, WebP, ... bytes into a list of gray pages.

    Raises :class:`ImageError` with a ``kind`` for empty, undecodable, truncated, too large (checked
    from the header before decoding) and too small inputs.
    """
    if not data:
        raise ImageError("empty", "empty file (0 bytes)")
    sniffed = _sniff_size(data)
    if sniffed is not None:
        w, h, frames = sniffed
        if w * h > max_pixels:
            raise ImageError("too_large", f"image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}")
    if _looks_truncated(data):
        raise ImageError("truncated", "image data ends early (truncated file)")
    buf = np.frombuffer(data, np.uint8)
    pages: list[np.ndarray] = []
    if sniffed is not None and sniffed[2] > 1:
        ok, decoded = cv2.imdecodemulti(buf, cv2.IMREAD_UNCHANGED)
        if ok:
            pages = list(decoded)
    if not pages:
        one = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if one is None:
            one = _decode_with_pillow(data) if sniffed is not None else None
        if one is None:
            raise ImageError("undecodable", "not a readable image (unknown format or corrupt data)")
        pages = [one]
    out = []
    for page in pages:
        gray = to_gray(page)
        if gray.shape[0] * gray.shape[1] > max_pixels:
            raise ImageError("too_large", f"image is {gray.shape[1]}x{gray.shape[0]} pixels, over the limit of {max_pixels:,}")
        if min(gray.shape) < min_side:
            raise ImageError("too_small", f"image is {gray.shape[1]}x{gray.shape[0]} pixels; at least {min_side} px per side needed")
        out.append(gray)
    return out


def _decode_with_pillow(data: bytes) -> np.ndarray | None:
    """Fallback for what OpenCV's codecs refuse but Pillow reads (some CMYK/LAB TIFFs, palette GIFs)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(im).astype(np.uint16)
            return np.asarray(im.convert("L"))
    except Exception:
        return None


def decode_gray(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """The first page of an image file as 2-D uint8 gray."""
    return decode_pages(data, max_pixels=max_pixels, min_side=min_side)[0]


def encode_png(gray: np.ndarray, compression: int = 3) -> bytes:
    ok, buf = cv2.imencode(".png", gray, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ImageError("undecodable", "PNG encoding failed")
    return buf.tobytes()


# ------------------------------------------------------------------------------ line pre-processing


def resize_to_height(gray: np.ndarray, height: int, max_width: int | None = None, min_width: int = 1) -> np.ndarray:
    """Scale to ``height`` keeping the aspect ratio (width clipped to [min_width, max_width])."""
    h, w = gray.shape[:2]
    new_w = max(min_width, int(round(w * height / max(h, 1))))
    if max_width:
        new_w = min(new_w, max_width)
    interp = cv2.INTER_AREA if h > height else cv2.INTER_LINEAR
    return cv2.resize(gray, (new_w, height), interpolation=interp)


def crop_to_ink(gray: np.ndarray, margin: int = 2, threshold: int | None = None) -> np.ndarray:
    """Trim the paper around the ink. The threshold is Otsu's unless given; a page with no ink is
    returned as it is."""
    if threshold is None:
        threshold, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        # a blank or nearly uniform image has an Otsu threshold inside the noise: demand real contrast
        if int(gray.max()) - int(gray.min()) < 40:
            return gray
    ink = gray <= threshold  # Otsu: values above the threshold are paper
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return gray
    y0, y1 = max(0, rows[0] - margin), min(gray.shape[0], rows[-1] + 1 + margin)
    x0, x1 = max(0, cols[0] - margin), min(gray.shape[1], cols[-1] + 1 + margin)
    return gray[y0:y1, x0:x1]


def percentiles(gray: np.ndarray, qs: tuple[float, ...]) -> list:
    """``np.percentile(gray.astype(float32), q)`` for each q (linear interpolation), as float32. A uint8
    image is counted into a 256-bin histogram instead of sorted: 5x faster on a line crop, where the
    sort was a sixth of a Serve replica's CPU per line (docs/serving.md), and the same values."""
    if gray.dtype != np.uint8 or gray.size == 0:
        g = gray.astype(np.float32)
        return [np.percentile(g, q) for q in qs]
    cum = np.cumsum(np.bincount(gray.ravel(), minlength=256))
    n = int(cum[-1])
    out = []
    for q in qs:
        index = q / 100.0 * (n - 1)
        below = int(index)
        frac = index - below
        a = int(np.searchsorted(cum, below, side="right"))  # the sorted image's value at `below`
        b = int(np.searchsorted(cum, min(below + 1, n - 1), side="right"))
        out.append(np.float32(a + (b - a) * frac))
    return out


def normalize_line(gray: np.ndarray, height: int, max_width: int = 2048, min_width: int = 16) -> np.ndarray:
    """The single pre-processing of a text-line image for the recognizer (training and inference alike):
    contrast-stretch, crop to the ink, scale to ``height`` with the aspect kept, invert so ink = 1.
    Returns float32 of shape (height, width)."""
    g = gray.astype(np.float32)
    lo, hi = percentiles(gray, (1, 99))
    if hi - lo < 1:
        hi = lo + 1
    stretched = np.clip((g - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    cropped = crop_to_ink(stretched, margin=max(2, gray.shape[0] // 20))
    resized = resize_to_height(cropped, height, max_width=max_width, min_width=min_width)
    return 1.0 - resized.astype(np.float32) / 255.0


def normalize_char(gray: np.ndarray, size: int) -> np.ndarray:
    """Pre-processing of an isolated character: crop to ink, fit into ``size`` x ``size`` keeping the
    aspect, centred, ink = 1. float32 (size, size)."""
    cropped = crop_to_ink(gray, margin=1)
    h, w = cropped.shape
    inner = max(1, int(round(size * 0.8))) if size > 28 else size - 4
    scale = inner / max(h, w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    small = cv2.resize(cropped, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.full((size, size), 255, np.uint8)
    y, x = (size - nh) // 2, (size - nw) // 2
    canvas[y:y + nh, x:x + nw] = small
    return 1.0 - canvas.astype(np.float32) / 255.0


def pad_batch(arrays: Sequence[np.ndarray], width_multiple: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Stack (H, W_i) float arrays into (N, 1, H, W_max) with zero (paper) padding on the right;
    also returns the true widths. W_max is rounded up to ``width_multiple``."""
    if not arrays:
        raise ValueError("empty batch")
    height = arrays[0].shape[0]
    widths = np.array([a.shape[1] for a in arrays], dtype=np.int64)
    w_max = int(-(-widths.max() // width_multiple) * width_multiple)
    out = np.zeros((len(arrays), 1, height, w_max), dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, 0, :, : a.shape[1]] = a
    return out, widths
