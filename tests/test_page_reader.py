"""The page reader on awkward pages (issue 13, bad input): all print, fed in upside down, photographed
on a dark table. Real handwriting of held-out forms, the shipped line finder and line model, read the
way the bulk job, Serve and the demo read pages (``PageReader.read_many``)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from htr_ray.data.synth.layout_pages import compose_page
from htr_ray.evaluation.evaluate import score_page
from htr_ray.io import images
from htr_ray.layout import paper
from htr_ray.layout.base import PRINTED
from htr_ray.pages.reader import PageReader, PreparedPage, learned_finder_uri
from htr_ray.recognition.spec import PAGE_READING_DEFAULT

pytestmark = pytest.mark.skipif(not learned_finder_uri(), reason="models/line_finder is not shipped")


@pytest.fixture(scope="module")
def recognizer(line_model):
    return PAGE_READING_DEFAULT.replace(model=line_model).build()


@pytest.fixture(scope="module")
def reader(line_model):
    return PageReader("learned", model=line_model)


def page_cer(truth_page, result, turned: bool = False) -> float:
    """Page CER against the composed page's handwritten lines (``turned``: of the page turned 180 degrees,
    whose truth polygons are turned with it)."""
    h, w = truth_page.image.shape
    truth = [ln for ln in truth_page.lines if ln["kind"] == "handwritten"]
    if turned:
        truth = [{**ln, "polygon": [[w - 1 - x, h - 1 - y] for x, y in ln["polygon"]],
                  "bbox": [w - ln["bbox"][2], h - ln["bbox"][3], w - ln["bbox"][0], h - ln["bbox"][1]]} for ln in truth]
    s = score_page(truth, result)
    return s["errors"] / max(s["chars"], 1)


def photo_of(page: np.ndarray, border: int = 120, angle: float = 3.0, table: int = 25) -> np.ndarray:
    """The page on a dark table, a little turned: what a phone photo of a page looks like."""
    h, w = page.shape
    frame = np.full((h + 2 * border, w + 2 * border), table, np.uint8)
    frame[border:border + h, border:border + w] = page
    m = cv2.getRotationMatrix2D((frame.shape[1] / 2, frame.shape[0] / 2), angle, 1.0)
    return cv2.warpAffine(frame, m, (frame.shape[1], frame.shape[0]), borderValue=table)


def test_a_page_of_print_only_has_its_lines_flagged_printed_and_no_text(reader, recognizer):
    page = compose_page(2, "test", "empty_form")  # a printed form nobody filled in
    (result,) = reader.read("form.png", images.encode_png(page.image), recognizer)
    assert result.ok and result.lines
    assert sum(ln.kind == PRINTED for ln in result.lines) >= 0.8 * len(result.lines)
    hand = [ln for ln in result.lines if ln.kind != PRINTED]
    assert len(hand) <= 1 and result.text == "\n".join(ln.text for ln in hand)


def test_a_page_fed_in_upside_down_reads_as_the_upright_page(reader, recognizer):
    page = compose_page(1, "test", "iam_plain")
    upright, turned = reader.read_many([("up.png", images.encode_png(page.image)),
                                        ("down.png", images.encode_png(np.ascontiguousarray(page.image[::-1, ::-1])))],
                                       recognizer)
    assert upright.ok and turned.ok
    assert abs(upright.angle) < 10 and abs(abs(turned.angle) - 180) < 10  # the result says it was turned
    # read as well as the upright page (0.127 against 0.118 when written), lines matched by polygon
    assert page_cer(page, turned, turned=True) <= page_cer(page, upright) + 0.05
    # in reading order: the page's first line is at the bottom of the image fed in
    centre_y = [(ln.bbox[1] + ln.bbox[3]) / 2 for ln in turned.lines]
    assert centre_y[0] > centre_y[-1] and centre_y[0] == max(centre_y)
    # the same page with the check off: the lines are read upside down, unsure, into nonsense
    (as_found,) = PageReader("learned", turn_check_below=0).read(
        "down.png", images.encode_png(np.ascontiguousarray(page.image[::-1, ::-1])), recognizer)
    assert np.mean([ln.confidence for ln in as_found.lines]) < np.mean([ln.confidence for ln in turned.lines]) - 0.1


def test_turning_a_prepared_page_keeps_geometry_and_reverses_reading_order():
    crops = [np.arange(6, dtype=np.uint8).reshape(2, 3), np.full((2, 4), 9, np.uint8)]
    from htr_ray.layout.base import FoundLine

    lines = [FoundLine(box=[0, 0, 3, 2], baseline=[[0, 2], [3, 2]]), FoundLine(box=[0, 5, 4, 7])]
    p = PreparedPage(uri="u", page=0, pages=1, width=10, height=10, angle=1.5, lines=lines, crops=crops)
    t = p.turned()
    assert [ln.box for ln in t.lines] == [[0, 5, 4, 7], [0, 0, 3, 2]] and all(ln.baseline == [] for ln in t.lines)
    assert np.array_equal(t.crops[1], crops[0][::-1, ::-1]) and t.angle == -178.5
    assert t.turned().angle == 1.5 and np.array_equal(t.turned().crops[0], crops[0])


def test_a_photo_on_a_dark_table_reads_like_the_scan(reader, recognizer):
    page = compose_page(1, "test", "iam_plain")
    photo = photo_of(page.image)
    mask = paper.surround_mask(photo)
    assert mask is not None and 0.2 < mask.mean() < 0.4  # the table, not the page
    scan, shot = reader.read_many([("scan.png", images.encode_png(page.image)), ("photo.png", images.encode_png(photo))],
                                  recognizer)
    assert shot.ok
    # the table's edge gives no lines of its own (there were 6 before the surround was painted out):
    # about as many lines as the scan, and none on the table
    assert abs(len(shot.lines) - len(scan.lines)) <= 2, [ln.text for ln in shot.lines]
    for ln in shot.lines:
        x = min(max(int((ln.bbox[0] + ln.bbox[2]) / 2), 0), photo.shape[1] - 1)
        y = min(max(int((ln.bbox[1] + ln.bbox[3]) / 2), 0), photo.shape[0] - 1)
        assert not mask[y, x], ln.text
    # and the border is left alone on a scan, which the check leaves as it is (no copy)
    assert paper.surround_mask(page.image) is None and paper.clear_surround(page.image) is page.image


@pytest.mark.parametrize("kind", ["iam_ruled", "iam_form_cheque", "generated"])
def test_scans_and_tinted_forms_have_no_surround(kind):
    for seed in range(3):
        assert paper.surround_mask(compose_page(seed, "test", kind).image) is None


def test_a_page_that_is_all_dark_or_all_table_is_left_alone():
    assert paper.surround_mask(np.full((400, 300), 20, np.uint8)) is None  # nothing is paper
    dark_page = np.full((400, 300), 60, np.uint8)
    dark_page[150:250, 100:200] = 230  # paper too small to be the page: a light label on a dark sheet
    assert paper.surround_mask(dark_page) is None
