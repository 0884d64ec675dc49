"""CRNN line recognizer: a small convolutional feature extractor, a bidirectional LSTM and a linear
layer, trained with CTC (class 0 = blank).

Contract: ``forward(x)`` with ``x`` of shape ``(N, 1, H, W)`` float32, ink = 1, ``H == input_height``
(the output of :func:`htr_ray.io.images.normalize_line` padded by :func:`htr_ray.io.images.pad_batch`) returns
logits ``(N, T, C)`` where ``T = W // width_stride``. ``output_lengths(widths)`` gives each line's
valid frames. Padding is zeros (paper) on the right; the backward LSTM sees it, so a line read alone
and the same line read in a much wider batch can differ slightly: bucket batches by width (the
trainer and the recognizer both do).

Designed for CPU speed: heights 32-48, width down-sampled x4 (or x2), plain 3x3 convolutions with
BatchNorm (fused at inference by ONNX/TorchScript), ~0.9 M parameters for ``crnn_small``. ``forward`` has
no data-dependent Python control flow, so it exports to ONNX with dynamic batch and width.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from htr_ray.models import register


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class CRNN(nn.Module):
    kind = "line"

    def __init__(self, num_classes: int, height: int = 32, channels: Sequence[int] = (16, 32, 64, 96),
                 lstm_hidden: int = 128, lstm_layers: int = 2, dropout: float = 0.2, width_stride: int = 4,
                 extra_convs: int = 1):
        super().__init__()
        if width_stride not in (2, 4):
            raise ValueError("width_stride must be 2 or 4")
        if len(channels) != 4:
            raise ValueError("channels must list 4 stage widths")
        c0, c1, c2, c3 = channels
        self.input_height = height
        self.width_stride = width_stride
        layers: list[nn.Module] = []
        layers += _conv(1, c0) + [nn.MaxPool2d(2, 2)]
        layers += _conv(c0, c1) + [nn.MaxPool2d(2, 2) if width_stride == 4 else nn.MaxPool2d((2, 1), (2, 1))]
        layers += _conv(c1, c2)
        for _ in range(extra_convs):
            layers += _conv(c2, c2)
        layers += [nn.MaxPool2d((2, 1), (2, 1))]
        layers += _conv(c2, c3) + [nn.MaxPool2d((2, 1), (2, 1)), nn.Dropout2d(dropout * 0.5)]
        self.features = nn.Sequential(*layers)
        feat_h = height // 16
        if feat_h < 1:
            raise ValueError("height must be at least 16")
        self.rnn = nn.LSTM(c3 * feat_h, lstm_hidden, num_layers=lstm_layers, bidirectional=True,
                           batch_first=True, dropout=dropout if lstm_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * lstm_hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)                      # (N, C, H', T)
        f = f.flatten(1, 2).transpose(1, 2)        # (N, T, C*H')
        f, _ = self.rnn(f)
        return self.classifier(self.dropout(f))  # (N, T, classes)

    def output_lengths(self, widths: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Valid output frames for lines of the given true widths (pixels at ``input_height``)."""
        w = torch.as_tensor(widths, dtype=torch.long)
        return torch.clamp(w // self.width_stride, min=1)


@register("crnn_small", height=32, channels=[16, 32, 64, 96], lstm_hidden=128, lstm_layers=2,
          dropout=0.2, width_stride=4, extra_convs=1)
def crnn_small(**params) -> CRNN:
    """CPU line model, ~0.86 M parameters; 20-60 lines/s training per CPU core (depends on load)."""
    return CRNN(**params)


@register("crnn_medium", height=40, channels=[48, 96, 160, 192], lstm_hidden=192, lstm_layers=2,
          dropout=0.25, width_stride=4, extra_convs=1)
def crnn_medium(**params) -> CRNN:
    """Between the two: ~3 M parameters, still trainable on a few CPU cores."""
    return CRNN(**params)


@register("crnn_large", height=48, channels=[64, 128, 256, 256], lstm_hidden=256, lstm_layers=3,
          dropout=0.3, width_stride=4, extra_convs=2)
def crnn_large(**params) -> CRNN:
    """GPU line model, ~8 M parameters."""
    return CRNN(**params)
