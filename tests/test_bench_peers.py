"""bench/peers.py: the page set it builds and the page CER it scores every engine with (not the peers'
speed: Tesseract and RapidOCR are not needed here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from htr_ray.io import images


@pytest.fixture(scope="module")
def peers(bench):
    return bench("peers")


def test_page_errors_one_definition(peers):
    # whitespace and line breaks do not count; everything else is a character edit
    assert peers.page_errors("a cat\nsat", "a  cat sat\n") == (0, 9)
    assert peers.page_errors("a cat\nsat", "a bat sat") == (1, 9)
    assert peers.page_errors("abc", "") == (3, 3)
    # text beyond the handwriting (a printed label an engine reads) counts as insertions
    assert peers.page_errors("abc", "Date abc") == (5, 3)


def test_score_sums_errors_over_pages_and_kinds(peers):
    manifest = [{"file": "a.png", "kind": "iam_plain", "truth": "abcd", "lines": 1},
                {"file": "b.jpg", "kind": "generated", "truth": "xy\nz", "lines": 2}]
    s = peers.score(manifest, {"a.png": "abce", "b.jpg": "xy z"})
    assert s["all"] == {"page_cer": 0.125, "errors": 1, "chars": 8, "pages": 2}  # "xy z": 4 characters
    assert s["iam_plain"]["errors"] == 1 and s["generated"]["errors"] == 0
    missing = peers.score(manifest, {"a.png": "abcd"})  # no text for a page: all of it deleted
    assert missing["all"]["errors"] == 4 and missing["generated"]["page_cer"] == 1.0


def test_build_page_set_writes_held_out_pages_in_each_format(peers, tmp_path):
    from htr_ray.data.synth.layout_pages import compose_page

    kinds = ("iam_form_cheque", "generated")  # the smallest page of real IAM-OnDB lines, and a generated one
    manifest = peers.build_page_set(tmp_path / "pages", 3, seed=5, kinds=kinds)
    assert [m["kind"] for m in manifest] == ["iam_form_cheque", "generated", "iam_form_cheque"]
    assert [m["format"] for m in manifest] == ["png", "png", "jpg"]
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    page = compose_page(5 * 100_003 + 0, "test", "iam_form_cheque")  # the builder's seed for page 0
    assert manifest[0]["truth"] == page.handwritten_text and manifest[0]["lines"] == len(page.handwritten_lines) > 0
    (gray,) = images.decode_pages((tmp_path / "pages" / manifest[0]["file"]).read_bytes())
    assert np.array_equal(gray, page.image)  # PNG: lossless, the very page
    for m in manifest[1:]:
        assert m["lines"] > 0 and m["truth"].strip()
        (gray,) = images.decode_pages((tmp_path / "pages" / m["file"]).read_bytes())
        assert gray.ndim == 2 and min(gray.shape) > 500


def test_encode_tiff_round_trips(peers):
    gray = (np.arange(64 * 48) % 251).astype(np.uint8).reshape(64, 48)
    (back,) = images.decode_pages(peers.encode(gray, "tif"))
    assert np.array_equal(back, gray)
