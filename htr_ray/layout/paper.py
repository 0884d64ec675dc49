"""The dark surround of a photographed page: the table, the scanner lid or a black frame around the
paper. Left in, its edge is found as lines of its own ("re-", "a-", "m") and its dark pixels reach into
the crops of the lines beside it. :func:`clear_surround` paints it paper before the lines are found,
so the page keeps its size and every coordinate stays the input's.

A scan whose paper reaches the image edges (nearly every scan) is told apart from a photo by the
image's outer ring: it is dark only when the surround is there. The check reads every n-th pixel (about
256 along the long side), so it costs a fraction of a millisecond on a scan, and a page without a dark
surround is returned as it is (no copy).
"""

from __future__ import annotations

import numpy as np

SMALL_SIDE = 256  # long side of the sampled copy the surround is found on
DARK_RING = 0.5  # a surround is looked for when at least this share of the outer ring is dark
DARK_GAP = 90  # gray levels below the paper's that count as dark
DARKEST_PAPER = 120  # and never above this: no paper is this dark
MIN_PAPER = 0.2  # the paper must keep at least this share of the image, else the image is left alone


def surround_mask(gray: np.ndarray) -> np.ndarray | None:
    """Boolean mask (the image's size) of the dark region around the paper, connected to the image's
    edges; ``None`` when there is none (the paper reaches the edges: the check then reads only the
    outer ring and a sample of the page) or when what is left would not be a page."""
    import cv2

    from htr_ray.layout.base import paper_level

    h, w = gray.shape[:2]
    step = max(1, round(max(h, w) / SMALL_SIDE))
    small = np.ascontiguousarray(gray[::step, ::step])
    # dark: well below the paper (a shadow or a tinted form is not), far darker than any paper is
    dark_below = min(paper_level(small) - DARK_GAP, DARKEST_PAPER)
    ring = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]])
    if (ring < dark_below).mean() < DARK_RING:
        return None
    dark = (small < dark_below).astype(np.uint8)
    _, labels = cv2.connectedComponents(dark, connectivity=4)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    outside = np.isin(labels, edge[edge > 0])
    if 1.0 - outside.mean() < MIN_PAPER:
        return None
    # a shrunk pixel of margin: the surround's blurred edge is not paper either
    outside = cv2.dilate(outside.astype(np.uint8), np.ones((3, 3), np.uint8))
    return cv2.resize(outside, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def clear_surround(gray: np.ndarray) -> np.ndarray:
    """``gray`` with its dark surround (if any, :func:`surround_mask`) painted the paper's gray level."""
    from htr_ray.layout.base import paper_level

    mask = surround_mask(gray)
    if mask is None:
        return gray
    out = gray.copy()
    out[mask] = paper_level(gray[~mask])
    return out
