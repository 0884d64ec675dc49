"""The line-finder net's input for one page, apart from the net itself so that running the net on
onnxruntime (:mod:`htr_ray.layout.finder`) needs neither torch nor the model code."""

from __future__ import annotations

import numpy as np


def page_input(gray: np.ndarray, scale: float) -> np.ndarray:
    """The net's input for one gray page: shrunk by ``scale`` (area interpolation), ink = 1, float32 HxW."""
    import cv2  # here, not at the top: importing htr_ray.models must need only torch (scripts/train-gpu)

    h, w = gray.shape[:2]
    sw, sh = max(8, int(round(w * scale))), max(8, int(round(h * scale)))
    small = cv2.resize(gray, (sw, sh), interpolation=cv2.INTER_AREA)
    return (255.0 - small.astype(np.float32)) * (1.0 / 255.0)
