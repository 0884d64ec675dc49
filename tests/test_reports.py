"""Report files are real images of the documented size and valid JSON."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from htr_ray.evaluation import reports
from htr_ray.io.images import decode_gray


def _png(path) -> Image.Image:
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_confusion_matrix_png_has_the_documented_size(tmp_path):
    classes = [str(d) for d in range(10)]
    m = np.diag([50] * 10)
    m[3, 8] = 7
    out = reports.confusion_matrix_png(str(tmp_path / "cm.png"), classes, m.tolist(), title="digits")
    im = _png(out)
    cell = 36
    # the label band is fixed by the widest label; recover it from the width and check the height
    label_w = im.width - 10 * cell - 10
    assert 30 <= label_w <= 160
    assert im.height == 30 + label_w + 10 * cell + 10
    arr = np.asarray(im.convert("RGB")).astype(int)
    # the diagonal cell (0,0) is green-ish, the planted confusion (3,8) is red-ish, an empty cell white
    def centre(i, j):
        return arr[30 + label_w + i * cell + 4, label_w + j * cell + 4]
    g = centre(0, 0)
    assert g[1] > g[0] + 100
    r = centre(3, 8)
    assert r[0] > r[1] + 20
    assert tuple(centre(1, 2)) == (255, 255, 255)


def test_confusion_matrix_with_cjk_labels(tmp_path):
    classes = list("的一是不了人我在有他这为之大来以个中上们到")  # 21 classes, as CASIA-HWDB 21
    rng = np.random.default_rng(0)
    m = np.diag(rng.integers(80, 120, size=21)) + rng.integers(0, 3, size=(21, 21))
    im = _png(reports.confusion_matrix_png(str(tmp_path / "cm21.png"), classes, m.tolist()))
    assert im.width == im.height - 30  # square grid plus the title band
    assert im.width >= 21 * 36
    shown, _ = reports.displayable("的")
    assert shown == "的" if reports.has_cjk_font() else shown == "U+7684"
    with pytest.raises(ValueError):
        reports.confusion_matrix_image(classes, [[1]])


def test_error_gallery_png_size_and_content(tmp_path):
    rng = np.random.default_rng(1)
    items = []
    for k in range(5):
        img = np.full((60, 300 + 40 * k), 255, np.uint8)
        img[20:40, 10:200] = 0
        items.append({"image": img, "truth": f"line {k}", "pred": f"lime {k}", "note": f"CER 0.{k}"})
    items.append({"image": rng.random((32, 400)).astype(np.float32), "truth": "float input", "pred": "float input"})
    out = reports.error_gallery_png(str(tmp_path / "gallery.png"), items, title="worst lines")
    im = _png(out)
    text_size, image_height = 15, 48
    tile_h = image_height + 3 * (text_size + 6) + 12
    assert im.size == (900, 34 + 6 * tile_h)
    # the first tile's image was pasted: dark ink inside it
    arr = np.asarray(im.convert("L"))
    assert arr[34 + 6: 34 + 6 + image_height, 6:300].min() < 50
    # characters in a grid (misclassified CASIA samples), 8 per row
    chars = [{"image": np.full((64, 64), 200, np.uint8), "truth": "的", "pred": "是"} for _ in range(10)]
    im2 = reports.error_gallery_image(chars, columns=8, image_height=64, tile_width=120)
    assert im2.size == (8 * 120, 34 + 2 * (64 + 3 * 21 + 12))
    # no errors at all is still a valid image
    assert reports.error_gallery_image([]).size == (900, 34 + 48 + 3 * 21 + 12)
    # with a loadable PNG, decode_gray agrees it is an image
    assert decode_gray(open(out, "rb").read()).shape == (im.height, im.width)


def test_metrics_json_is_strict(tmp_path):
    out = reports.write_json(str(tmp_path / "m" / "metrics.json"),
                             {"cer": np.float32(0.25), "n": np.int64(3), "bad": float("nan"), "arr": np.arange(3),
                              "nested": {"inf": float("inf")}})
    d = json.loads(open(out).read())
    assert d == {"cer": 0.25, "n": 3, "bad": None, "arr": [0, 1, 2], "nested": {"inf": None}}


def test_json_and_png_to_s3(s3_bucket):
    from htr_ray.io import storage

    reports.write_json(f"{s3_bucket}/r/metrics.json", {"a": 1})
    reports.confusion_matrix_png(f"{s3_bucket}/r/cm.png", ["a", "b"], [[1, 0], [1, 1]])
    assert json.loads(storage.read_bytes(f"{s3_bucket}/r/metrics.json")) == {"a": 1}
    assert storage.read_bytes(f"{s3_bucket}/r/cm.png")[:4] == b"\x89PNG"
