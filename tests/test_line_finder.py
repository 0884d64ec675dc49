"""The learned line finder: post-processing on drawn maps, the composed pages it learns from, and the
shipped model on a few held-out pages (speed is measured by bench/layout.py, not here)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from htr_ray.evaluation.line_finding import score_page, summarise
from htr_ray.layout import finder
from htr_ray.layout.base import PRINTED, HANDWRITTEN, points_to_input


def _maps(h, w, lines):
    """(3, h, w) probability maps with one line per (x0, x1, baseline_y, xheight, printed, slope)."""
    m = np.zeros((3, h, w), np.float32)
    for x0, x1, yb, xh, printed, slope in lines:
        y0b, y1b = yb + slope * (x0 - x0), yb + slope * (x1 - x0)
        core = np.float32([[x0, y0b - xh], [x1, y1b - xh], [x1, y1b], [x0, y0b]])
        ext = np.float32([[x0, y0b - 2 * xh], [x1, y1b - 2 * xh], [x1, y1b + xh], [x0, y0b + xh]])
        cv2.fillPoly(m[1], [np.round(ext).astype(np.int32)], 1.0)
        if printed:
            cv2.fillPoly(m[2], [np.round(ext).astype(np.int32)], 1.0)
        cv2.fillPoly(m[0], [np.round(core).astype(np.int32)], 1.0)
    return m


class MapFinder(finder.LearnedLineFinder):
    """The finder with its net replaced by given maps: tests the post-processing alone."""

    def __init__(self, maps, options=None):
        self.maps, self.scale, self.threads = maps, 0.25, None
        self.options = options or finder.FinderOptions()

    def predict(self, gray):
        return self.maps


def test_maps_to_lines_rows_fields_and_joins():
    # row 1: a printed label, then a handwritten field broken in two words (gap 3 px < 1.5 x-heights)
    # row 2: one handwritten line; row 3: a printed line far right, a handwritten one at the left
    m = _maps(120, 200, [(10, 30, 20, 4, True, 0), (40, 90, 20, 4, False, 0), (93, 150, 20, 4, False, 0),
                         (10, 180, 45, 5, False, 0),
                         (120, 190, 80, 4, True, 0), (10, 70, 80, 4, False, 0)])
    lay = MapFinder(m).find(np.full((480, 800), 255, np.uint8))
    assert lay.angle == 0.0
    kinds = [ln.kind for ln in lay.lines]
    assert kinds == [PRINTED, HANDWRITTEN, HANDWRITTEN, HANDWRITTEN, PRINTED]
    field = lay.lines[1].box
    assert field[0] <= 40 * 4 and field[2] >= 150 * 4 - 4  # the two words of the field are one line
    assert lay.lines[0].box[2] < field[0] + 8  # the label stays its own line
    # baseline at the bottom of the body, in page pixels
    (bx0, by0), (bx1, by1) = lay.lines[2].baseline
    assert abs(by0 - 45 * 4) <= 6 and abs(by1 - 45 * 4) <= 6 and bx0 < bx1
    # boxes cover ascenders and descenders (extent), not only the x-height band
    x0, y0, x1, y1 = lay.lines[2].box
    assert y0 <= (45 - 9) * 4 and y1 >= (45 + 4) * 4


def test_close_lines_stay_apart_and_far_fields_do_not_join():
    # pitch 2 x-heights: the extents touch, the bodies do not
    m = _maps(100, 200, [(10, 190, 20 + 10 * k, 5, False, 0) for k in range(6)]
              + [(10, 60, 90, 4, False, 0), (140, 190, 90, 4, False, 0)])
    lay = MapFinder(m).find(np.full((400, 800), 255, np.uint8))
    assert len(lay.lines) == 8
    ys = [ln.baseline[0][1] for ln in lay.lines]
    assert ys == sorted(ys)  # top to bottom; the two far fields on the last row left to right
    assert lay.lines[-2].box[0] < lay.lines[-1].box[0]


def test_tilted_page_is_deskewed():
    slope = math.tan(math.radians(2.0))
    m = _maps(150, 200, [(10, 190, 30 + 20 * k, 4, False, slope) for k in range(5)])
    gray = np.full((600, 800), 230, np.uint8)
    lay = MapFinder(m).find(gray)
    assert abs(lay.angle - 2.0) < 0.5
    assert lay.page.shape == gray.shape
    assert len(lay.lines) == 5
    for ln in lay.lines:  # baselines level on the deskewed page
        assert abs(ln.baseline[0][1] - ln.baseline[1][1]) <= 6


def test_empty_and_speck_maps_give_no_lines():
    m = np.zeros((3, 50, 60), np.float32)
    m[0, 10:12, 10:12] = 1.0  # a 4-pixel speck
    m[1, 8:14, 8:14] = 1.0
    lay = MapFinder(m).find(np.full((200, 240), 255, np.uint8))
    assert lay.lines == []
    assert finder.maps_to_lines(np.zeros((3, 20, 20), np.float32)) == []


def test_scores_split_and_merge():
    truth = [[0, 0, 100, 20], [0, 30, 100, 50]]
    assert summarise([score_page(truth, truth)])["f1"] == 1.0
    split = score_page(truth, [[0, 0, 48, 20], [52, 0, 100, 20], [0, 30, 100, 50]])
    assert split["split"] == 1 and split["merged"] == 0
    merged = score_page(truth, [[0, 0, 100, 50]])
    assert merged["merged"] == 2 and merged["tp"] == 0


def test_composed_pages_are_deterministic_and_know_their_lines():
    from htr_ray.data.synth.layout_pages import compose_page

    a = compose_page(3, "test", "generated")
    b = compose_page(3, "test", "generated")
    assert np.array_equal(a.image, b.image) and a.lines == b.lines
    hand = [ln for ln in a.lines if ln["kind"] == HANDWRITTEN]
    assert hand and any(ln["kind"] == PRINTED for ln in a.lines)
    assert a.handwritten_text == "\n".join(ln["text"] for ln in hand)
    h, w = a.image.shape
    for ln in a.lines:
        x0, y0, x1, y1 = ln["bbox"]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert len(ln["polygon"]) == 4 and len(ln["core"]) == 4 and len(ln["baseline"]) == 2
    assert compose_page(0, "test", "blank").lines == []
    assert {ln["kind"] for ln in compose_page(0, "test", "empty_form").lines} == {PRINTED}
    real = compose_page(0, "test", "iam_plain")
    assert len(real.lines) >= 5 and all(ln["source"] for ln in real.lines)


shipped = pytest.mark.skipif(not os.path.exists(os.path.join(finder.DEFAULT_LINE_FINDER, "model.json")),
                             reason="models/line_finder is not shipped")


@shipped
def test_shipped_finder_on_held_out_pages():
    from htr_ray.data.synth.layout_pages import compose_page

    f = finder.load_line_finder()
    assert f.name == "learned"
    page = compose_page(0, "test", "iam_ruled")
    lay = f.find(page.image)
    h, w = page.image.shape
    found = [points_to_input(ln.outline(), lay.angle, (w, h)) for ln in lay.lines]
    s = summarise([score_page([ln["polygon"] for ln in page.lines], found)])
    assert s["recall"] >= 0.8 and s["precision"] >= 0.8, s
    assert f.find(compose_page(1, "test", "blank").image).lines == []
    printed = f.find(compose_page(2, "test", "empty_form").image).lines
    assert printed and sum(ln.kind == PRINTED for ln in printed) >= 0.8 * len(printed)


def test_label_fused_to_its_field_is_cut_where_the_printed_map_changes():
    m = _maps(60, 200, [(10, 150, 30, 4, False, 0)])
    m[2, 20:36, 10:40] = 1.0  # the first 30 columns of the one body component are print
    lines = finder.maps_to_lines(m)
    assert sorted((ln["kind"], round(ln["box"][0])) for ln in lines) == [(HANDWRITTEN, 40), (PRINTED, 10)]


def test_a_clearly_printed_sign_fused_to_its_field_is_its_own_line():
    # "$" (one x-height wide, clearly printed) fused to the amount: too short for a line of two x-heights,
    # long enough for a label
    m = _maps(60, 200, [(10, 120, 30, 6, False, 0)])
    m[2, 18:38, 10:17] = 0.95
    lines = finder.maps_to_lines(m)
    assert sorted((ln["kind"], round(ln["box"][0])) for ln in lines) == [(HANDWRITTEN, 17), (PRINTED, 10)]
    # the same run, unsure (0.6): a blot in the handwriting, not a label
    m[2, 18:38, 10:17] = 0.6
    assert [ln["kind"] for ln in finder.maps_to_lines(m)] == [HANDWRITTEN]


def test_an_unsure_label_beside_its_field_is_not_joined_to_it():
    # a label the printed map is unsure of (0.4: below the printed threshold) one x-height before its field
    m = _maps(60, 200, [(10, 30, 30, 4, False, 0), (35, 150, 30, 4, False, 0)])
    m[2, 20:36, 10:30] = 0.4
    lines = finder.maps_to_lines(m)
    assert sorted(round(ln["box"][0]) for ln in lines) == [10, 35]
    m[2, 20:36, 10:30] = 0.0  # two handwritten words with the same gap: one line
    assert len(finder.maps_to_lines(m)) == 1


def test_a_descender_caught_on_its_own_is_part_of_its_line_and_edge_blobs_are_not_lines():
    m = _maps(80, 200, [(10, 180, 30, 5, False, 0)])
    m[0, 32:35, 60:66] = 1.0  # a descender loop's own small body just below the baseline
    m[0, 40:60, 196:200] = 1.0  # a dark page edge
    m[1, 38:62, 194:200] = 1.0
    lines = finder.maps_to_lines(m)
    assert len(lines) == 1
    assert lines[0]["box"][3] >= 35 and lines[0]["box"][2] <= 182
    # a short word of the next line (pitch 2.2 x-heights) stays its own line
    m = _maps(80, 200, [(10, 180, 30, 5, False, 0), (10, 30, 41, 5, False, 0)])
    assert len(finder.maps_to_lines(m)) == 2


def test_a_line_does_not_grow_along_a_rule_or_onto_stray_extent():
    m = _maps(60, 200, [(40, 100, 30, 4, False, 0)])
    m[1, 30:33, 0:200] = 1.0  # the rule the field is written on, in the extent map
    m[1, 13:18, 101:105] = 1.0  # a stray piece of extent within reach of the line, apart from it
    (ln,) = finder.maps_to_lines(m)
    x0, y0, x1, y1 = ln["box"]
    # about one x-height (5 px) beyond the body's ends, not the 2.5 x-heights it may grow up and down
    assert 32 <= x0 <= 40 and 100 <= x1 <= 108
    assert y0 >= 20  # the stray piece is not part of it
    assert cv2.pointPolygonTest(np.float32(ln["polygon"]).reshape(-1, 1, 2), (102.0, 15.0), False) < 0


def test_layout_crops_the_deskewed_page_without_rotating_it_all():
    from htr_ray.layout.base import Layout, crop

    rng = np.random.default_rng(0)
    gray = cv2.GaussianBlur(rng.integers(0, 256, (300, 400)).astype(np.uint8), (0, 0), 3)
    lay = Layout(lines=[], angle=2.5, source=gray, border=200)
    for box in ([10, 20, 200, 60], [-5, -5, 50, 40], [380, 280, 420, 330]):
        part = lay.crop(box)
        assert lay._page is None  # not rotated as a whole
        whole = crop(lay.page, box)
        lay._page = None
        assert part.shape == whole.shape
        assert np.abs(part.astype(int) - whole.astype(int)).max() <= 1
    assert Layout(page=gray).crop([0, 0, 10, 10]).shape == (10, 10)
    with pytest.raises(ValueError):
        Layout(lines=[])


@shipped
def test_onnx_and_torch_backends_give_the_same_maps():
    from htr_ray.data.synth.layout_pages import compose_page

    gray = compose_page(0, "test", "iam_form_cheque").image[:601, :703]  # odd sizes: the skips are cropped
    a = finder.LearnedLineFinder.from_uri(finder.DEFAULT_LINE_FINDER, backend="onnx").predict(gray)
    b = finder.LearnedLineFinder.from_uri(finder.DEFAULT_LINE_FINDER, backend="torch").predict(gray)
    assert a.shape == b.shape == (3, 150, 176)
    assert np.abs(a - b).max() < 1e-3
    with pytest.raises(ValueError, match="backend"):
        finder.LearnedLineFinder.from_uri(finder.DEFAULT_LINE_FINDER, backend="tpu")


def test_shipped_finder_runs_from_its_onnx_net_without_torch():
    """The shipped finder carries net.onnx exported from its very weights (a retrained finder must be
    re-exported: `python -m htr_ray.layout.finder --export-onnx models/line_finder`), and a process
    that only finds lines never imports torch."""
    import json
    import subprocess
    import sys

    from htr_ray.layout import finder as finder_module

    meta = json.loads((Path(finder_module.DEFAULT_LINE_FINDER) / "model.json").read_text())
    assert finder_module.shipped_onnx(finder_module.DEFAULT_LINE_FINDER, meta) is not None, "net.onnx is stale"
    code = ("import sys, numpy as np\n"
            "from htr_ray.layout.finder import load_line_finder\n"
            "from htr_ray.data.synth.layout_pages import compose_page\n"
            "f = load_line_finder()\n"
            "n = len(f.find(compose_page(7001, 'test', 'iam_ruled').image).lines)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "print(f.backend, n)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    backend, n = out.stdout.split()
    assert backend == "onnx" and int(n) > 5


def test_onnx_net_gives_the_torch_maps_and_a_stale_one_is_not_used(tmp_path):
    import shutil

    from htr_ray.data.synth.layout_pages import compose_page
    from htr_ray.layout import finder as finder_module

    page = compose_page(7002, "test", "iam_form_cheque").image
    shipped = finder_module.LearnedLineFinder.from_uri(finder_module.DEFAULT_LINE_FINDER)
    assert shipped.model is None and shipped.onnx is not None  # loaded from net.onnx
    torch_finder = finder_module.LearnedLineFinder.from_uri(finder_module.DEFAULT_LINE_FINDER, backend="torch")
    np.testing.assert_allclose(shipped.predict(page), torch_finder.predict(page), atol=1e-4)
    # a checkpoint whose weights changed after the export: its net.onnx is ignored, the torch model is used
    stale = tmp_path / "finder"
    shutil.copytree(finder_module.DEFAULT_LINE_FINDER, stale)
    (stale / "weights.pt").write_bytes((stale / "weights.pt").read_bytes())  # same bytes: still fresh
    assert finder_module.LearnedLineFinder.from_uri(str(stale)).onnx is not None
    import json

    meta = json.loads((stale / "model.json").read_text())
    meta["onnx"]["weights_sha256"] = "0" * 64
    (stale / "model.json").write_text(json.dumps(meta))
    fallback = finder_module.LearnedLineFinder.from_uri(str(stale))
    assert fallback.onnx is None and fallback.model is not None
    np.testing.assert_allclose(fallback.predict(page), torch_finder.predict(page), atol=1e-4)


def test_crop_line_paints_outside_the_polygon_paper_and_keeps_the_line():
    from htr_ray.layout.base import FoundLine, Layout, paper_level

    page = np.full((60, 120), 220, np.uint8)
    page[5:9, :] = 40  # a rule above the line, inside its padded box
    page[25:35, 20:100] = 10  # the line's ink
    layout = Layout(page=page, lines=[])
    line = FoundLine(box=[10, 0, 110, 50], polygon=[[15, 20], [105, 20], [105, 40], [15, 40]])
    c = layout.crop_line(line)
    assert c.shape == (50, 100)
    assert (c[5:9] == 220).all()  # the rule outside the polygon became paper
    assert (c[25:35, 10:90] == 10).all()  # the ink inside is untouched
    assert (page[5:9] == 40).all()  # the page itself is not painted
    assert paper_level(c) == 220
    whole = layout.crop_line(FoundLine(box=[10, 0, 110, 50]))  # no polygon: the box as it is
    assert (whole[5:9] == 40).all()
