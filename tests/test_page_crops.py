"""Training lines cut by the page reader from composed train-form pages (htr_ray.training.page_crops)."""

from __future__ import annotations

import pytest

from htr_ray.data import labels
from htr_ray.data.synth.layout_pages import compose_page
from htr_ray.io import images, storage
from htr_ray.pages.reader import learned_finder_uri
from htr_ray.training import page_crops

pytestmark = pytest.mark.skipif(not learned_finder_uri(), reason="models/line_finder is not shipped")


def test_crops_are_labelled_with_the_text_of_their_true_line(tmp_path):
    out = str(tmp_path / "crops")
    summary = page_crops.build(out, pages=1, seed=3, kinds=("iam_ruled", "iam_form_cheque"))
    rows = labels.read_rows(out)
    assert len(rows) == sum(summary["lines"].values()) and summary["lines"]["iam_ruled"] >= 10
    truth = {kind: {ln["text"] for ln in compose_page(3, "train", kind).lines if ln["kind"] == "handwritten"}
             for kind in ("iam_ruled", "iam_form_cheque")}
    for r in rows:
        kind = r.line_id.split("-")[1]
        assert r.text in truth[kind]  # a crop's label is its own true line's text, never a printed label's
        crop = images.decode_gray(storage.read_bytes(r.image_uri()))
        assert crop.ndim == 2 and crop.shape[1] > crop.shape[0]  # a line: wider than tall
    # the pages are of TRAIN forms only: no crop text comes from a held-out form's page
    held_out = {ln["text"] for ln in compose_page(3, "test", "iam_ruled").lines}
    assert not held_out & {r.text for r in rows if r.line_id.startswith("pc-iam_ruled")}


def test_lines_outside_the_charset_are_left_out(tmp_path):
    out = str(tmp_path / "crops")
    full = page_crops.build(out, pages=1, seed=3, kinds=("iam_ruled",))
    rows = labels.read_rows(out)
    missing = rows[0].text[0]
    kept = page_crops.build(str(tmp_path / "kept"), pages=1, seed=3, kinds=("iam_ruled",),
                            charset="".join({c for r in rows for c in r.text} - {missing}))
    assert kept["lines"]["iam_ruled"] == full["lines"]["iam_ruled"] - sum(missing in r.text for r in rows)
    assert all(missing not in r.text for r in labels.read_rows(str(tmp_path / "kept")))
