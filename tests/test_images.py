import io
import zlib
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from htr_ray.io import images


def page(h=60, w=200):
    img = np.full((h, w), 250, np.uint8)
    cv2.putText(img, "Ab1", (10, h - 15), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 20, 3)
    return img


def pil_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def test_common_formats_decode_to_gray():
    gray = page()
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    encoded = {
        "png": cv2.imencode(".png", gray)[1].tobytes(),
        "jpeg": cv2.imencode(".jpg", bgr)[1].tobytes(),
        "bmp": cv2.imencode(".bmp", bgr)[1].tobytes(),
        "tiff": cv2.imencode(".tiff", gray)[1].tobytes(),
        "webp": cv2.imencode(".webp", bgr)[1].tobytes(),
    }
    for name, data in encoded.items():
        out = images.decode_gray(data)
        assert out.dtype == np.uint8 and out.shape == gray.shape, name
        assert np.abs(out.astype(int) - gray).mean() < 6, name


def test_sixteen_bit_alpha_cmyk_and_multipage():
    gray = page()
    sixteen = cv2.imencode(".png", gray.astype(np.uint16) * 257)[1].tobytes()
    assert np.array_equal(images.decode_gray(sixteen), gray)

    rgba = np.dstack([np.zeros_like(gray)] * 3 + [255 - gray])  # black ink whose alpha carries the text
    out = images.decode_gray(cv2.imencode(".png", rgba)[1].tobytes())
    assert out[0, 0] >= 249 and out.min() < 40  # (nearly) transparent -> white paper

    cmyk = Image.fromarray(gray).convert("CMYK")
    out = images.decode_gray(pil_bytes(cmyk, "TIFF"))
    assert out.shape == gray.shape and np.abs(out.astype(int) - gray).mean() < 8

    pages = [Image.fromarray(page()), Image.fromarray(255 - page()), Image.fromarray(page(80, 120))]
    data = pil_bytes(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    decoded = images.decode_pages(data)
    assert [p.shape for p in decoded] == [(60, 200), (60, 200), (80, 120)]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size: decoding it would allocate width*height bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data,kind",
    [
        (b"", "empty"),
        (b"this is a text file named scan.jpg\n", "undecodable"),
        (_png_header_only(100_000, 100_000), "too_large"),
        (cv2.imencode(".png", page())[1].tobytes()[:300], "truncated"),
        (cv2.imencode(".jpg", page())[1].tobytes()[:-200], "truncated"),
        (cv2.imencode(".png", np.zeros((1, 1), np.uint8))[1].tobytes(), "too_small"),
    ],
    ids=["empty", "text", "bomb", "png-truncated", "jpeg-truncated", "one-pixel"],
)
def test_bad_images_raise_clear_errors(data, kind):
    with pytest.raises(images.ImageError) as err:
        images.decode_pages(data)
    assert err.value.kind == kind
    assert str(err.value)


def test_pixel_limit_is_configurable():
    data = cv2.imencode(".png", page(100, 100))[1].tobytes()
    with pytest.raises(images.ImageError, match="over the limit"):
        images.decode_gray(data, max_pixels=5000)
    assert images.decode_gray(data, max_pixels=10_000).shape == (100, 100)


def test_normalize_line_keeps_aspect_and_inverts():
    gray = np.full((100, 400), 255, np.uint8)
    gray[30:70, 50:350] = 0  # a 40 x 300 ink block
    out = images.normalize_line(gray, 32)
    assert out.dtype == np.float32 and out.shape[0] == 32
    # cropped to the ink plus a 5 px margin (310 x 50), then scaled: 310 / 50 * 32 = 198 px wide
    assert 190 <= out.shape[1] <= 205
    assert out.max() == pytest.approx(1.0) and out.min() == pytest.approx(0.0)
    blank = images.normalize_line(np.full((50, 80), 255, np.uint8), 32)
    assert blank.shape[0] == 32 and blank.max() <= 1.0


def test_percentiles_of_uint8_images_are_numpys():
    """The histogram percentiles give numpy's (linear interpolation) on uint8 images of every kind of
    spread, and the float path is numpy's itself."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        h, w = int(rng.integers(1, 60)), int(rng.integers(1, 700))
        gray = np.clip(rng.normal(rng.uniform(0, 255), rng.uniform(0.5, 80), (h, w)), 0, 255).astype(np.uint8)
        for q, got in zip((1, 50, 99), images.percentiles(gray, (1, 50, 99))):
            assert got == pytest.approx(float(np.percentile(gray.astype(np.float32), q)), abs=1e-4)
            assert got.dtype == np.float32
    flat = np.full((3, 3), 9, np.uint8)
    assert images.percentiles(flat, (1, 99)) == [9, 9]
    floats = rng.uniform(0, 1, (10, 10)).astype(np.float32)
    assert images.percentiles(floats, (1, 99)) == [np.percentile(floats, 1), np.percentile(floats, 99)]


def test_normalize_char_and_pad_batch():
    gray = np.full((70, 40), 255, np.uint8)
    gray[10:60, 15:25] = 0
    c = images.normalize_char(gray, 28)
    assert c.shape == (28, 28) and c[14, 14] > 0.9 and c[0, 0] == 0.0
    batch, widths = images.pad_batch([np.ones((32, 10), np.float32), np.ones((32, 21), np.float32)], width_multiple=8)
    assert batch.shape == (2, 1, 32, 24) and widths.tolist() == [10, 21]
    assert batch[0, 0, :, 10:].sum() == 0
