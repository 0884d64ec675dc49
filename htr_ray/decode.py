"""CTC decoding.

Convention shared by every line model: class 0 is the CTC blank, class k >= 1 is ``charset[k - 1]``.
Inputs are per-frame log-probabilities of shape (T, C) for one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Decoded:
    text: str
    confidence: float  # line confidence in [0, 1]
    char_confidences: list[float] = field(default_factory=list)  # one per character of ``text``


def greedy(log_probs: np.ndarray, charset: str) -> Decoded:
    """Best path: the most likely class per frame, repeats merged, blanks removed. A character's
    confidence is the highest probability among the frames that produced it; the line's is the
    product of per-frame best probabilities along the path, to the 1/T power (geometric mean)."""
    lp = np.asarray(log_probs, dtype=np.float32)
    if lp.ndim != 2:
        raise ValueError(f"expected (T, C) log-probabilities, got shape {lp.shape}")
    best = lp.argmax(axis=1)
    best_lp = lp[np.arange(len(best)), best]
    chars: list[str] = []
    confs: list[float] = []
    prev = 0
    for t, k in enumerate(best):
        k = int(k)
        if k != 0 and k != prev:
            chars.append(charset[k - 1])
            confs.append(float(np.exp(best_lp[t])))
        elif k != 0 and k == prev and confs:
            confs[-1] = max(confs[-1], float(np.exp(best_lp[t])))
        prev = k
    line_conf = float(np.exp(best_lp.mean())) if len(best_lp) else 0.0
    return Decoded("".join(chars), line_conf, confs)
