"""Line segmentation on generated pages with known handwritten-line boxes."""

import cv2
import numpy as np
import pytest

from htr_ray.pages import reader as pages
from htr_ray.layout import segment
from htr_ray.data.synth.pages import PageGenerator


def line_recall(split: str, n: int, seed: int = 3) -> tuple[float, int]:
    gen = PageGenerator(seed=seed, split=split)
    hits = total = 0
    for i in range(n):
        s = gen.sample(i)
        seg = segment.segment_page(s.image)
        size = (s.image.shape[1], s.image.shape[0])
        found = [pages.to_input_coordinates(b, seg.angle, size) for b in seg.boxes]
        hits += len(segment.match_boxes([ln["bbox"] for ln in s.lines], found, threshold=0.5))
        total += len(s.lines)
    return hits / total, total


@pytest.mark.parametrize("split", ["train", "test"])
def test_line_recall_at_iou_half_on_generated_pages(split):
    recall, total = line_recall(split, 9)
    assert total >= 40
    # measured on 15 pages (2026-11-21, strokes against a closed background): 0.857 (train fonts, seed 3),
    # 0.942 / 0.915 / 0.858 (test fonts, seeds 3 / 2027 / 7); before, with an adaptive-mean threshold
    # that turned page-edge shading into specks, 0.83 / 0.927 / 0.907 / 0.80
    assert recall >= 0.80, f"line recall {recall:.2f} at IoU 0.5 over {total} lines"


def test_deskew_recovers_rotation():
    page = np.full((900, 1200), 240, np.uint8)
    for k in range(5):
        cv2.putText(page, f"handwritten line number {k}", (60, 120 + 150 * k), cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, 1.6, 20, 3)
    m = cv2.getRotationMatrix2D((600, 450), 3.0, 1.0)
    skewed = cv2.warpAffine(page, m, (1200, 900), borderValue=240)
    seg = segment.segment_page(skewed)
    assert seg.angle == pytest.approx(-3.0, abs=0.5)
    assert len(seg.boxes) == 5
    # boxes are in reading order, top to bottom
    assert [b[1] for b in seg.boxes] == sorted(b[1] for b in seg.boxes)


def test_blank_and_noise_pages_have_no_lines():
    rng = np.random.default_rng(0)
    blank = np.full((800, 600), 235, np.uint8)
    noisy = np.clip(blank + rng.normal(0, 8, blank.shape), 0, 255).astype(np.uint8)
    assert segment.segment_page(blank).boxes == []
    assert len(segment.segment_page(noisy).boxes) <= 1


def test_ruled_lines_are_not_text():
    page = np.full((600, 800), 245, np.uint8)
    for y in range(60, 600, 50):
        cv2.line(page, (20, y), (780, y), 150, 1)
    cv2.line(page, (60, 0), (60, 600), 120, 2)  # margin line
    cv2.putText(page, "on the line", (100, 205), cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, 1.2, 20, 2)
    seg = segment.segment_page(page)
    assert len(seg.boxes) == 1
    x0, y0, x1, y1 = seg.boxes[0]
    assert 90 <= x0 <= 110 and 170 <= y0 <= 190 and y1 <= 225


def test_match_boxes_is_one_to_one():
    truth = [[0, 0, 100, 20], [0, 30, 100, 50]]
    found = [[0, 0, 100, 20], [2, 1, 98, 21], [0, 31, 100, 52]]
    pairs = segment.match_boxes(truth, found)
    assert sorted((t, f) for t, f, _ in pairs) == [(0, 0), (1, 2)]
