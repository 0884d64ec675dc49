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


# ------------------------------------------------------------------------------------------------ v2


class CRNN2(nn.Module):
    """Line recognizer v2, after "Best practices for a handwritten text recognition system" (Retsinas
    et al., 2022): a taller input (48 or 64 px), a CNN whose feature map is collapsed to a sequence by
    max-pooling each column over the height (instead of flattening height into channels, which ties
    the recurrent layer's input size to where the writing sits), a bidirectional LSTM, and an
    auxiliary CTC *shortcut* head (a 1-D convolution straight on the CNN sequence) whose loss, added at
    a small weight during training, makes the CNN learn characters directly. The head is not used at
    inference: ``forward(x)`` returns the LSTM head's logits ``(N, T, C)`` exactly as :class:`CRNN`
    does; ``forward(x, aux=True)`` returns ``(logits, shortcut_logits)``, both ``(N, T, C)``.

    Stages: ``blocks[i]`` 3x3 conv + BatchNorm + ReLU layers with ``channels[i]`` outputs, then a 2x2
    max-pool (stages 0 and 1; (2, 1) for stage 1 when ``width_stride`` is 2), a (2, 1) pool after
    stage 2, none after stage 3. ``T = W // width_stride``.
    """

    kind = "line"

    def __init__(self, num_classes: int, height: int = 48, channels: Sequence[int] = (32, 64, 112, 160),
                 blocks: Sequence[int] = (1, 1, 2, 2), lstm_hidden: int = 128, lstm_layers: int = 2,
                 dropout: float = 0.25, width_stride: int = 4):
        super().__init__()
        if width_stride not in (2, 4):
            raise ValueError("width_stride must be 2 or 4")
        if len(channels) != 4 or len(blocks) != 4 or min(blocks) < 1:
            raise ValueError("channels and blocks must list 4 stages (at least one conv each)")
        if height < 16 or height % 8:
            raise ValueError("height must be a multiple of 8, at least 16")
        self.input_height = height
        self.width_stride = width_stride
        pools = [nn.MaxPool2d(2, 2), nn.MaxPool2d(2, 2) if width_stride == 4 else nn.MaxPool2d((2, 1), (2, 1)),
                 nn.MaxPool2d((2, 1), (2, 1)), None]
        layers: list[nn.Module] = []
        c_in = 1
        for c, n, pool in zip(channels, blocks, pools):
            for _ in range(n):
                layers += _conv(c_in, c)
                c_in = c
            if pool is not None:
                layers.append(pool)
        layers.append(nn.Dropout2d(dropout * 0.5))
        self.features = nn.Sequential(*layers)
        self.rnn = nn.LSTM(c_in, lstm_hidden, num_layers=lstm_layers, bidirectional=True, batch_first=True,
                           dropout=dropout if lstm_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * lstm_hidden, num_classes)
        self.shortcut = nn.Conv1d(c_in, num_classes, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, aux: bool = False):
        seq = self.features(x).amax(dim=2)           # (N, C, T): column max-pool over the height
        f, _ = self.rnn(seq.transpose(1, 2))          # (N, T, 2*hidden)
        logits = self.classifier(self.dropout(f))     # (N, T, classes)
        if not aux:
            return logits
        return logits, self.shortcut(self.dropout(seq)).transpose(1, 2)

    def output_lengths(self, widths: torch.Tensor | Sequence[int]) -> torch.Tensor:
        w = torch.as_tensor(widths, dtype=torch.long)
        return torch.clamp(w // self.width_stride, min=1)

    def grow_shortcut(self, num_classes: int) -> None:
        """Keep the shortcut head's classes in step with the main classifier (fine-tuning that grows the
        charset: :func:`htr_ray.models.grow_output` extends the classifier only)."""
        old = self.shortcut
        if old.out_channels == num_classes:
            return
        new = nn.Conv1d(old.in_channels, num_classes, kernel_size=3, padding=1).to(old.weight.device, old.weight.dtype)
        with torch.no_grad():
            nn.init.normal_(new.weight, std=0.01)
            new.weight[: old.out_channels] = old.weight
            new.bias[: old.out_channels] = old.bias
            new.bias[old.out_channels:] = old.bias.mean() - 1.0
        self.shortcut = new


@register("crnn_small_v2", height=48, channels=[16, 32, 64, 128], blocks=[1, 1, 2, 1], lstm_hidden=128,
          lstm_layers=2, dropout=0.25, width_stride=4)
def crnn_small_v2(**params) -> CRNN2:
    """CPU line model v2 (48 px, column max-pool, CTC shortcut), ~0.85 M parameters; about twice
    crnn_small's arithmetic per line (0.33 GFLOP of convolution for a 480 px wide line, plus the LSTM)."""
    return CRNN2(**params)


@register("crnn_medium_v2", height=64, channels=[32, 64, 128, 256], blocks=[1, 2, 2, 2], lstm_hidden=192,
          lstm_layers=3, dropout=0.3, width_stride=4)
def crnn_medium_v2(**params) -> CRNN2:
    """GPU line model v2 (64 px), ~3.7 M parameters: a float32 checkpoint of about 15 MB (< 16 MiB)."""
    return CRNN2(**params)
