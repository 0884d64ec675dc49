"""Line finder: a small fully-convolutional net (a U-Net) that maps a page at reduced resolution to
per-pixel text-line maps, as kraken's baseline segmenter and the DB detectors of docTR / PaddleOCR do.

Contract: ``forward(x)`` with ``x`` of shape ``(N, 1, H, W)`` float32, ink = 1 (``1 - gray / 255`` of the
page shrunk by ``model.scale``, :func:`page_input`), any H and W, returns logits ``(N, 3, H, W)`` at the
same resolution:

- channel 0 ``body``: the x-height band of each text line (between the baseline and the mean line), a
  thin band that stays apart from the next line's even when ascenders and descenders touch;
- channel 1 ``extent``: the whole line, ascenders and descenders included (its rotated box);
- channel 2 ``printed``: inside a line, whether that line is printed (1) or handwritten (0).

The encoder halves the resolution ``len(channels) - 1`` times (its receptive field spans several lines,
which tells a form label from a field and print from handwriting); the decoder adds each upsampled
stage to the skip connection of the same size (sums, not concatenations: fewer channels, fewer
FLOPs). Input H and W need not be multiples of anything: skips are cropped / padded to match.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from htr_ray.layout.net_input import page_input  # noqa: F401  (the input function model.json names)
from htr_ray.models import register

MAPS = ("body", "extent", "printed")


def _cbr(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class LineFinderNet(nn.Module):
    kind = "line_finder"

    def __init__(self, num_classes: int = 3, channels: Sequence[int] = (4, 8, 16, 32, 48), scale: float = 0.25,
                 stage_convs: int = 1, plain_levels: int = 1, head_kernel: int = 3):
        super().__init__()
        self.scale = float(scale)
        self.maps = MAPS[:num_classes]
        ch = list(channels)
        self.stem = _cbr(1, ch[0])
        downs = []
        for i, (a, b) in enumerate(zip(ch[:-1], ch[1:])):
            extra = stage_convs if i + 1 > plain_levels else 0  # no extra conv on the big shallow levels
            downs.append(nn.Sequential(_cbr(a, b, stride=2), *[_cbr(b, b) for _ in range(extra)]))
        self.downs = nn.ModuleList(downs)
        ups = []
        for i, (a, b) in enumerate(zip(ch[:0:-1], ch[-2::-1])):  # deep -> shallow: reduce, add the skip, refine
            last = i == len(ch) - 2
            ups.append(nn.ModuleDict({"reduce": nn.Sequential(nn.Conv2d(a, b, 1, bias=False), nn.BatchNorm2d(b)),
                                      "refine": nn.Identity() if last else _cbr(b, b)}))
        self.ups = nn.ModuleList(ups)
        self.head = nn.Conv2d(ch[0], num_classes, head_kernel, padding=head_kernel // 2)
        with torch.no_grad():  # start near "no line": most of a page is paper
            self.head.bias.fill_(-2.0)

    def input_spec(self) -> dict:
        return {"function": "htr_ray.layout.net_input.page_input", "scale": self.scale, "ink": 1.0,
                "dtype": "float32", "layout": "N1HW", "maps": list(self.maps)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.stem(x)]
        for d in self.downs:
            feats.append(d(feats[-1]))
        y = feats[-1]
        for up, skip in zip(self.ups, feats[-2::-1]):
            y = up["reduce"](y)
            y = F.interpolate(y, size=skip.shape[-2:], mode="nearest")
            y = up["refine"](F.relu(y + skip))
        return self.head(y)


@register("line_finder_unet", channels=[4, 8, 16, 32, 48], scale=0.25, stage_convs=1, plain_levels=1, head_kernel=3)
def line_finder_unet(**params) -> LineFinderNet:
    """~50 k parameters; about 25 ms for a 1700x2200 page on one core (bench/layout.py)."""
    return LineFinderNet(**params)
