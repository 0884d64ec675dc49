"""Training-only data augmentation (never used at inference).

Two stages, both cheap OpenCV/numpy operations that release the GIL, so a thread pool runs them in
parallel with the model:

1. :func:`augment_gray` / :func:`augment_char_gray` on the decoded 8-bit gray image (ink dark, as
   scanned) *before* :func:`htr_ray.io.images.normalize_line` / ``normalize_char``: geometry (slant/shear,
   small rotation, horizontal scale, for characters also translation and scale), grid (elastic)
   distortion on request, stroke thickness (erode/dilate), blur. Doing geometry before normalisation keeps the model's input contract: what
   the model sees is always a ``normalize_*`` output.
2. :func:`augment_normalized` on the float model input (ink = 1): ink contrast, gamma, noise.

Every function takes a ``numpy.random.Generator`` so runs are reproducible per seed.

The same set for whole batches already on the GPU (no OpenCV), used by ``scripts/train-gpu``, is in
:mod:`htr_ray.data.augment_torch`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def _affine(gray: np.ndarray, m: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    return cv2.warpAffine(gray, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=255)


def _thickness(gray: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    r = rng.random()
    if r < p / 2:  # thicker ink: min filter spreads the dark strokes
        k = int(rng.integers(2, 4))
        return cv2.erode(gray, np.ones((k, k), np.uint8))
    if r < p:  # thinner ink
        return cv2.dilate(gray, np.ones((2, 2), np.uint8))
    return gray


def grid_distort(gray: np.ndarray, rng: np.random.Generator, amplitude: float, cell: float) -> np.ndarray:
    """Elastic / grid distortion: every pixel moves by a smooth random displacement (uniform in
    +-``amplitude`` px at the nodes of a grid of ``cell`` px, bilinear in between), as in Retsinas et
    al. 2022's augmentation set. uint8 in, uint8 out, same shape, paper (255) fills the border."""
    h, w = gray.shape
    if amplitude <= 0 or h < 4 or w < 4:
        return gray
    gh, gw = max(2, int(round(h / cell)) + 1), max(2, int(round(w / cell)) + 1)
    d = rng.uniform(-amplitude, amplitude, size=(2, gh, gw)).astype(np.float32)
    dx = cv2.resize(d[0], (w, h), interpolation=cv2.INTER_LINEAR)
    dy = cv2.resize(d[1], (w, h), interpolation=cv2.INTER_LINEAR)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(gray, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)


def augment_gray(gray: np.ndarray, rng: np.random.Generator, strength: float = 1.0, distort: float = 0.0) -> np.ndarray:
    """Random slant, rotation, horizontal scale, stroke thickness and blur of a text-line image
    (uint8, ink dark). ``strength`` scales every range (0 = identity). With ``distort`` > 0, that
    fraction of the lines also gets a grid distortion (:func:`grid_distort`) of about a fifth of the
    line height over cells of one line height."""
    if strength <= 0:
        return gray
    h, w = gray.shape
    shear = rng.uniform(-0.35, 0.35) * strength
    angle = math.radians(rng.uniform(-1.5, 1.5) * strength)
    sx = math.exp(rng.uniform(-0.2, 0.2) * strength)
    cos, sin = math.cos(angle), math.sin(angle)
    # x' = sx*(cos*x - sin*y) + shear*y ; y' = sin*x + cos*y, then shifted to fit
    a = np.array([[sx * cos, -sx * sin + shear], [sin, cos]], np.float64)
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64) @ a.T
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    m = np.hstack([a, (-lo)[:, None]])
    out_w, out_h = int(math.ceil(hi[0] - lo[0])), int(math.ceil(hi[1] - lo[1]))
    if out_w * out_h > 4 * w * h + 1000:  # degenerate: keep the original
        return gray
    g = _affine(gray, m, max(out_w, 2), max(out_h, 2))
    if distort > 0 and rng.random() < distort:
        g = grid_distort(g, rng, amplitude=0.06 * h * strength, cell=max(8.0, 0.8 * h))
    g = _thickness(g, rng, 0.5 * min(1.0, strength))
    if rng.random() < 0.3 * strength:
        g = cv2.GaussianBlur(g, (3, 3), rng.uniform(0.3, 1.0))
    return g


def augment_char_gray(gray: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Random rotation, scale, shear, translation and thickness of an isolated character (uint8, ink
    dark), on a canvas with a margin so nothing is cut off."""
    if strength <= 0:
        return gray
    h, w = gray.shape
    pad = max(h, w) // 4 + 1
    g = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=int(np.median(gray)))
    H, W = g.shape
    angle = rng.uniform(-12, 12) * strength
    scale = math.exp(rng.uniform(-0.12, 0.12) * strength)
    m = cv2.getRotationMatrix2D((W / 2, H / 2), angle, scale)
    m[0, 1] += rng.uniform(-0.2, 0.2) * strength
    m[:, 2] += rng.uniform(-0.08, 0.08, size=2) * np.array([W, H]) * strength
    g = cv2.warpAffine(g, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return _thickness(g, rng, 0.4 * min(1.0, strength))


def augment_normalized(x: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Photometric changes of a model input (float32, ink = 1): ink intensity, gamma, Gaussian noise.
    The result stays in [0, 1]."""
    if strength <= 0:
        return x
    y = x
    if rng.random() < 0.5 * strength:
        y = y ** math.exp(rng.uniform(-0.4, 0.4))
    if rng.random() < 0.5 * strength:
        y = y * rng.uniform(0.6, 1.0)
    if rng.random() < 0.4 * strength:
        y = y + rng.normal(0.0, rng.uniform(0.01, 0.06), size=y.shape).astype(np.float32)
    return np.clip(y, 0.0, 1.0).astype(np.float32, copy=False)
