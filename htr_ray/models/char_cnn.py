"""Isolated-character classifier (MNIST digits, CASIA-HWDB hanzi).

Contract: ``forward(x)`` with ``x`` of shape ``(N, 1, S, S)`` float32, ink = 1, ``S == input_size``
(the output of :func:`htr_ray.io.images.normalize_char`) returns logits ``(N, num_classes)``; class ``k`` is
``charset[k]`` (no blank). Stages of two 3x3 conv + BatchNorm + ReLU and a 2x2 max-pool, then global
average pooling, dropout and a linear layer.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from htr_ray.models import register
from htr_ray.models.crnn import _conv


class CharCNN(nn.Module):
    kind = "char"

    def __init__(self, num_classes: int, size: int = 28, channels: Sequence[int] = (32, 64, 128),
                 dropout: float = 0.3):
        super().__init__()
        self.input_size = size
        self.input_height = size
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += _conv(c_in, c) + _conv(c, c) + [nn.MaxPool2d(2, 2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(f))


@register("char_cnn", size=28, channels=[24, 48, 96], dropout=0.25)
def char_cnn(**params) -> CharCNN:
    """MNIST-sized (28 px) classifier, ~0.16 M parameters."""
    return CharCNN(**params)


@register("char_cnn_hanzi", size=48, channels=[16, 32, 64, 128], dropout=0.3)
def char_cnn_hanzi(**params) -> CharCNN:
    """48 px classifier for Chinese characters, ~0.3 M parameters."""
    return CharCNN(**params)


class WordKindCNN(CharCNN):
    """Printed or handwritten? One word (or word group) of a text line, normalised to ``height`` like a
    line and cut or padded to ``width`` (:func:`htr_ray.layout.printed.word_input`); logits over
    ``["handwritten", "printed"]``. The same stages as :class:`CharCNN`: global average pooling makes
    it indifferent to the rectangular input."""

    kind = "word_kind"

    def __init__(self, num_classes: int = 2, height: int = 32, width: int = 128, channels: Sequence[int] = (16, 32, 64),
                 dropout: float = 0.2):
        super().__init__(num_classes, size=height, channels=channels, dropout=dropout)
        self.input_width = width


@register("word_kind_cnn", height=32, width=128, channels=[16, 32, 64], dropout=0.2)
def word_kind_cnn(**params) -> WordKindCNN:
    """Printed-vs-handwritten word classifier, ~0.07 M parameters."""
    return WordKindCNN(**params)
