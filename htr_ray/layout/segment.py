"""Page image -> text-line boxes, with OpenCV only (no model): deskew, binarise, remove ruled and form
lines, smear words into lines, split what is too tall, attach dots and accents.

Boxes are ``[x0, y0, x1, y1]`` in pixels of the *deskewed* page (``Segmentation.page``), ordered in
reading order (top to bottom, then left to right within a row). A "line" is a run of text on one
baseline: on forms (cheques, prescriptions) fields far apart on the same row are separate lines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

log = logging.getLogger(__name__)

WORK_WIDTH = 1400  # pages are analysed at about this width; boxes are scaled back


@dataclass
class Segmentation:
    page: np.ndarray  # the deskewed gray page the boxes refer to
    boxes: list[list[int]]
    angle: float = 0.0  # degrees the input was rotated by to deskew it
    char_height: float = 0.0  # median ink component height at page scale
    debug: dict = field(default_factory=dict)


def binarize(gray: np.ndarray) -> np.ndarray:
    """Ink mask (uint8 0/1): pixels clearly darker than their local background (so that shadows, page
    edges and uneven scans do not turn into ink), within a global Otsu bound (nor paper texture)."""
    h, w = gray.shape
    block = max(15, (min(h, w) // 30) | 1)
    smooth = cv2.GaussianBlur(gray, (3, 3), 0)
    # local background = the gray closed with a disc wider than any stroke: pen strokes vanish from it,
    # shadows, page edges and the scanner bed do not, so only strokes stand out against it
    background = cv2.morphologyEx(smooth, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (block, block)))
    # the contrast a stroke needs grows with the scan's noise (robust sigma of the fine detail)
    detail = gray.astype(np.int16) - smooth.astype(np.int16)
    sigma = 1.4826 * float(np.median(np.abs(detail))) if detail.size else 0.0
    local = (background.astype(np.int16) - smooth.astype(np.int16)) > max(25.0, 4.0 * sigma)
    otsu, _ = cv2.threshold(smooth, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # a generous global bound: only pixels clearly darker than the paper can be ink
    return (local & (smooth < min(otsu + 25, 235))).astype(np.uint8)


def drop_border_ink(ink: np.ndarray) -> np.ndarray:
    """Drop ink connected to the image border: the scanner bed, a dark page edge or a shadow band. Left
    in, what remains of it after rule removal is a column of fragments that joins every text row."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    h, w = ink.shape
    x, y, bw, bh = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    touches = (x <= 0) | (y <= 0) | (x + bw >= w) | (y + bh >= h)
    touches[0] = False  # background
    if not touches.any():
        return ink
    return np.where(touches[labels], 0, ink).astype(ink.dtype)


def remove_rules(ink: np.ndarray) -> np.ndarray:
    """Drop long straight horizontal and vertical strokes (ruled paper, form boxes, table lines)."""
    h, w = ink.shape
    horiz = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (max(40, w // 12), 1)))
    vert = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, max(40, h // 10))))
    rules = cv2.dilate(horiz | vert, np.ones((3, 3), np.uint8))
    return ink & (1 - rules)


def estimate_skew(ink: np.ndarray, max_angle: float = 6.0, step: float = 0.25) -> float:
    """The rotation (degrees) that makes text rows sharpest: maximise the variance of row sums of a
    small copy of the ink mask over candidate angles (coarse to fine)."""
    h, w = ink.shape
    scale = min(1.0, 600.0 / max(w, 1))
    small = cv2.resize(ink.astype(np.float32), (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    if small.sum() < 10:
        return 0.0
    center = (small.shape[1] / 2, small.shape[0] / 2)

    def score(angle: float) -> float:
        m = cv2.getRotationMatrix2D(center, angle, 1.0)
        rotated = cv2.warpAffine(small, m, (small.shape[1], small.shape[0]), flags=cv2.INTER_LINEAR)
        return float(np.var(rotated.sum(axis=1)))

    coarse = np.arange(-max_angle, max_angle + 1e-6, 1.0)
    best = max(coarse, key=score)
    fine = np.arange(best - 1.0, best + 1.0 + 1e-6, step)
    return float(max(fine, key=score))


def rotate(gray: np.ndarray, angle: float) -> np.ndarray:
    if abs(angle) < 1e-3:
        return gray
    h, w = gray.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    border = int(np.median(gray[[0, -1], :])) if gray.size else 255
    return cv2.warpAffine(gray, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def _components(mask: np.ndarray) -> np.ndarray:
    """Connected-component stats rows: x, y, w, h, area (background removed)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return stats[1:n]


def _split_tall(ink: np.ndarray, box: list[int], char_h: float) -> list[list[int]]:
    """A smeared blob taller than ~2 text lines is split at the emptiest rows of its profile."""
    x0, y0, x1, y1 = box
    height = y1 - y0
    if height < 2.2 * char_h:
        return [box]
    profile = ink[y0:y1, x0:x1].sum(axis=1).astype(np.float32)
    profile = np.convolve(profile, np.ones(3) / 3, mode="same")
    n_lines = max(2, int(round(height / (1.6 * char_h))))
    cuts = []
    for k in range(1, n_lines):
        centre = int(k * height / n_lines)
        lo, hi = max(1, centre - int(0.5 * char_h)), min(height - 1, centre + int(0.5 * char_h))
        if hi > lo:
            cuts.append(lo + int(np.argmin(profile[lo:hi])))
    edges = [0] + sorted(set(cuts)) + [height]
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        rows = np.flatnonzero(ink[y0 + a:y0 + b, x0:x1].any(axis=1))
        cols = np.flatnonzero(ink[y0 + a:y0 + b, x0:x1].any(axis=0))
        if rows.size and (rows[-1] - rows[0]) >= 0.3 * char_h:
            out.append([x0 + int(cols[0]), y0 + a + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + a + int(rows[-1]) + 1])
    return out or [box]


def _group(boxes: np.ndarray, gap_factor: float = 1.2, overlap: float = 0.5, similar_ratio: float = 0.6) -> list[list[int]]:
    """Group ink components into lines: two components belong together when they share most of the
    smaller one's vertical extent and the horizontal gap between them is under ``gap_factor`` times the
    taller one's height. Relative to each pair's own size, so large and small writing on one page
    both group right (a global smear width fails on one or the other)."""
    n = len(boxes)
    x0, y0, x1, y1 = (boxes[:, k].astype(np.float32) for k in range(4))
    h = y1 - y0
    ov = np.minimum(y1[:, None], y1[None, :]) - np.maximum(y0[:, None], y0[None, :])
    gap = np.maximum(np.maximum(x0[None, :] - x1[:, None], x0[:, None] - x1[None, :]), 0)
    hmin, hmax = np.minimum(h[:, None], h[None, :]), np.maximum(h[:, None], h[None, :])
    cy = (y0 + y1) / 2
    # the centre of the smaller one, as a fraction of the taller one's band (0 = top, 1 = bottom)
    taller_is_i = h[:, None] >= h[None, :]
    small_c = np.where(taller_is_i, cy[None, :], cy[:, None])
    big_top = np.where(taller_is_i, y0[:, None], y0[None, :])
    rel = (small_c - big_top) / np.maximum(hmax, 1)
    similar = hmin >= similar_ratio * hmax
    # a much smaller mark ('=', '+', '-') joins only from the middle of the taller one's band; printed
    # labels beside handwriting sit at its baseline and stay apart
    inside = (ov >= 0.9 * hmin) & (rel > 0.25) & (rel < 0.72)
    near = (ov >= overlap * hmin) & (similar | inside) & (gap <= gap_factor * hmax)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in zip(*np.nonzero(np.triu(near, 1))):
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[ri] = rj
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [[int(x0[g].min()), int(y0[g].min()), int(x1[g].max()), int(y1[g].max())] for g in groups.values()]


def find_lines(ink: np.ndarray) -> tuple[list[list[int]], float]:
    """Line boxes from an ink mask (rules already removed) and the median line height."""
    comps = _components(ink)
    if len(comps) == 0:
        return [], 0.0
    # drop specks (scan noise) and page-sized blobs (logos, stamps, photos)
    keep = comps[(comps[:, 4] >= 10) & (comps[:, 3] >= 3) & (comps[:, 3] < ink.shape[0] // 4)]
    if len(keep) == 0:
        return [], 0.0
    boxes = np.stack([keep[:, 0], keep[:, 1], keep[:, 0] + keep[:, 2], keep[:, 1] + keep[:, 3]], axis=1)
    # dots, accents and specks overlap no line vertically, so they stay alone in the grouping and are
    # attached to the line under or over them afterwards; '-', '=', '+' sit inside a line's band and join it
    groups = _group(boxes)
    # second pass on the groups: words of one line (x-height words beside words with ascenders) join
    # when they share a band; a printed label half the height of the writing beside it does not
    if len(groups) > 1:
        groups = _group(np.array(groups), gap_factor=1.6, overlap=0.6, similar_ratio=0.62)
    tall = float(np.median(boxes[:, 3] - boxes[:, 1]))
    lines = [g for g in groups if (g[3] - g[1]) >= 0.45 * tall]
    small = [g for g in groups if (g[3] - g[1]) < 0.45 * tall]
    line_h = float(np.median([b[3] - b[1] for b in lines])) if lines else float(tall)
    split = []
    for b in lines:
        split.extend(_split_tall(ink, b, line_h / 1.2) if (b[3] - b[1]) > 2.4 * line_h else [b])
    out = _attach_small(split + small, line_h)
    out = [b for b in out if (b[3] - b[1]) >= 0.3 * line_h and (b[2] - b[0]) >= 0.3 * line_h]
    return out, line_h


def _attach_small(boxes: list[list[int]], char_h: float) -> list[list[int]]:
    """Dots, accents and commas that stayed apart join the line box they sit over or under."""
    big = [b for b in boxes if (b[3] - b[1]) >= 0.45 * char_h]
    small = [b for b in boxes if (b[3] - b[1]) < 0.45 * char_h]
    for s in small:
        best, best_gap = None, 0.9 * char_h
        for b in big:
            overlap = min(s[2], b[2]) - max(s[0], b[0])
            if overlap <= 0:
                continue
            gap = max(b[1] - s[3], s[1] - b[3], 0)
            if gap <= best_gap:
                best, best_gap = b, gap
        if best is not None:
            best[0], best[1], best[2], best[3] = min(best[0], s[0]), min(best[1], s[1]), max(best[2], s[2]), max(best[3], s[3])
        else:
            big.append(s)
    return big


def reading_order(boxes: list[list[int]]) -> list[list[int]]:
    """Top to bottom; boxes whose vertical centres are within half a line height form one row,
    read left to right."""
    if not boxes:
        return []
    ordered = sorted(boxes, key=lambda b: (b[1] + b[3]) / 2)
    rows: list[list[list[int]]] = [[ordered[0]]]
    for b in ordered[1:]:
        row = rows[-1]
        centre = (b[1] + b[3]) / 2
        row_centre = np.mean([(r[1] + r[3]) / 2 for r in row])
        row_h = np.mean([r[3] - r[1] for r in row])
        if abs(centre - row_centre) < 0.5 * row_h:
            row.append(b)
        else:
            rows.append([b])
    return [b for row in rows for b in sorted(row, key=lambda r: r[0])]


def segment_page(gray: np.ndarray, deskew: bool = True, pad: float = 0.15) -> Segmentation:
    """Find the text lines of a gray page. ``pad`` widens each box by that fraction of the character
    height (recognizers read better with a little paper around the ink)."""
    h, w = gray.shape
    scale = min(1.0, WORK_WIDTH / max(w, 1))
    work = cv2.resize(gray, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else gray
    ink = remove_rules(drop_border_ink(binarize(work)))
    angle = estimate_skew(ink) if deskew else 0.0
    if abs(angle) >= 0.2:
        gray = rotate(gray, angle)
        work = rotate(work, angle)
        ink = remove_rules(drop_border_ink(binarize(work)))
    else:
        angle = 0.0
    boxes, char_h = find_lines(ink)
    inv = 1.0 / scale
    margin = pad * char_h
    out = []
    for x0, y0, x1, y1 in reading_order(boxes):
        out.append([
            max(0, int((x0 - margin) * inv)), max(0, int((y0 - margin) * inv)),
            min(w, int(np.ceil((x1 + margin) * inv))), min(h, int(np.ceil((y1 + margin) * inv))),
        ])
    return Segmentation(page=gray, boxes=out, angle=angle, char_height=char_h * inv)


def crop(gray: np.ndarray, box: list[int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return gray[y0:y1, x0:x1]


def iou(a: list[int], b: list[int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(truth: list[list[int]], found: list[list[int]], threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by IoU: (truth index, found index, IoU) for pairs >= threshold."""
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    used_t, used_f, out = set(), set(), []
    for score, i, j in pairs:
        if score < threshold:
            break
        if i in used_t or j in used_f:
            continue
        used_t.add(i)
        used_f.add(j)
        out.append((i, j, score))
    return out
