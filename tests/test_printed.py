"""The printed-text filter: word cutting, the shipped classifier on pages in unseen fonts and on real
IAM-OnDB handwriting, and pages whose text leaves the form print out while keeping every line."""

from __future__ import annotations

import numpy as np
import pytest

from htr_ray.models import checkpoint
from htr_ray.io import images
from htr_ray.evaluation.evaluate import score_page
from htr_ray.layout.opencv import OpenCVLineFinder
from htr_ray.pages.reader import PageReader
from htr_ray.layout import printed
from htr_ray.layout.printed import DEFAULT_FILTER, PrintedFilter
from htr_ray.training import printed_filter
from htr_ray.data.synth.pages import PageGenerator

# bounds set from the shipped filter's measured figures (model.json "metrics"), with a margin
MIN_WORD_ACCURACY = 0.92
MAX_REAL_HANDWRITING_CALLED_PRINTED = 0.03


@pytest.fixture(scope="module")
def flt() -> PrintedFilter:
    return PrintedFilter.from_uri(DEFAULT_FILTER)


def test_word_spans_cut_at_wide_gaps_only():
    line = np.full((40, 300), 255, np.uint8)
    for x0, x1 in ((10, 40), (43, 80), (150, 200), (260, 290)):  # 3 px gap: same word; 70 and 60 px: new words
        line[10:30, x0:x1:4] = 0  # pen-width strokes (a solid block is background to the binariser)
        line[10:30, x1 - 1] = 0
    line[5, 120] = 0  # a speck of scan noise is no word
    spans = printed.word_spans(line)
    assert len(spans) == 3
    assert spans[0][0] <= 10 and spans[0][1] >= 80
    assert spans[1][0] <= 150 and spans[1][1] >= 200 and spans[1][0] > 80
    assert spans[2][0] > 200 and spans[2][1] >= 290
    assert printed.word_spans(np.full((30, 50), 255, np.uint8)) == [(0, 50)]


def test_word_input_shape_and_ink():
    g = np.full((40, 900), 255, np.uint8)
    g[10:30, 20:880] = 0
    for crop in (g, g[:, :60]):
        x = printed.word_input(crop, 32, 128)
        assert x.shape == (32, 128) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5  # ink = 1


def test_shipped_filter_is_a_self_describing_checkpoint():
    meta = checkpoint.read_meta(DEFAULT_FILTER)
    assert meta["kind"] == "word_kind" and meta["charset"] == printed.CLASSES
    assert meta["command"].startswith("python -m htr_ray.training.printed_filter")
    assert meta["metrics"]["test_accuracy"] >= MIN_WORD_ACCURACY


def test_filter_tells_print_from_handwriting_on_pages_in_unseen_fonts(flt):
    """Words of generated test-split pages (handwriting fonts the filter never saw, other seeds),
    labelled from the pages' own ink masks."""
    crops, labels = printed_filter.generated_words(4, "test", seed=77)
    assert (labels == 1).sum() >= 20 and (labels == 0).sum() >= 20
    pred = flt.printed_probability(crops) >= 0.5
    assert (pred == labels.astype(bool)).mean() >= MIN_WORD_ACCURACY


def test_real_handwriting_is_not_called_printed(flt, shared_data):
    words = printed_filter.iam_words(str(shared_data / "iam_ondb_lines"), "val", 300)
    assert len(words) == 300
    assert (flt.printed_probability(words) >= 0.5).mean() <= MAX_REAL_HANDWRITING_CALLED_PRINTED


def test_split_lines_cover_every_word_and_alternate(flt):
    sample = PageGenerator(seed=3, split="test", domains=["cheque"]).sample(0)
    from htr_ray.layout import segment

    seg = segment.segment_page(sample.image)
    crops = [segment.crop(seg.page, b) for b in seg.boxes]
    for crop, pieces in zip(crops, flt.split_lines(crops)):
        spans = printed.word_spans(crop)
        assert pieces[0][0] == spans[0][0] and pieces[-1][1] == spans[-1][1]
        assert all(a[1] <= b[0] for a, b in zip(pieces, pieces[1:]))  # ordered, not overlapping
        assert all(a[2] != b[2] for a, b in zip(pieces, pieces[1:]))  # neighbours differ in kind


def test_page_text_leaves_print_out_and_keeps_every_piece(flt, line_model):
    from htr_ray.recognition.recognizer import Recognizer

    rec = Recognizer.from_uri(line_model)
    page = PageGenerator(seed=4, split="test", domains=["cheque"]).sample(0)
    data = images.encode_png(page.image)
    plain = PageReader(OpenCVLineFinder()).read("p.png", data, rec)[0].to_row()
    split = PageReader(OpenCVLineFinder(printed_filter=flt)).read("p.png", data, rec)[0].to_row()
    assert not any(ln["kind"] == "printed" for ln in plain["lines"])
    flagged = [ln for ln in split["lines"] if ln["kind"] == "printed"]
    assert flagged and len(flagged) < len(split["lines"])
    assert split["text"] == "\n".join(ln["text"] for ln in split["lines"] if ln["kind"] != "printed")
    # the cheque's printed words (bank, "PAY TO THE ORDER OF", "DOLLARS") are read, flagged, and kept
    assert len(split["lines"]) >= len(plain["lines"])
    # and the handwriting is scored better without them
    before = score_page(page.lines, plain["lines"])
    after = score_page(page.lines, split["lines"])
    assert after["errors"] / after["chars"] <= before["errors"] / before["chars"]


def test_a_failing_filter_costs_no_page(line_model):
    """Should the filter raise on a page, the page is still read with its lines whole: rows out = pages in."""
    from htr_ray.recognition.recognizer import Recognizer

    class Broken:
        def split_lines(self, crops):
            raise RuntimeError("filter fault")

    rec = Recognizer.from_uri(line_model)
    data = images.encode_png(PageGenerator(seed=4, split="test", domains=["cheque"]).sample(0).image)
    plain = [r.to_row() for r in PageReader(OpenCVLineFinder()).read("p.png", data, rec)]
    got = [r.to_row() for r in PageReader(OpenCVLineFinder(printed_filter=Broken())).read("p.png", data, rec)]
    assert len(got) == 1 and got[0]["status"] == "ok"
    assert [ln["text"] for ln in got[0]["lines"]] == [ln["text"] for ln in plain[0]["lines"]]
    assert not any(ln["kind"] == "printed" for ln in got[0]["lines"])
