"""Training augmentation of whole batches on the training device, in torch alone (no OpenCV): the
recipe of :mod:`htr_ray.data.augment` for a batch of model inputs already at model height, as the GPU
recipe (``scripts/train-gpu``) has them. Input and output: ``(N, 1, H, W)`` float, ink = 1, zero
(paper) padding on the right of each line's true width.

Per line, at random (every range scaled by ``strength``):

- affine: shear (slant), small rotation, horizontal and vertical scale, vertical shift;
- grid (elastic) distortion: a smooth random displacement field, coarse nodes about a line height
  apart, bilinear in between;
- stroke width: dilation (thicker ink, a 3x3 max) or erosion (thinner, a 3x3 min), or neither;
- gamma and ink contrast; Gaussian noise.

Geometry keeps each line inside its own width (coordinates are relative to the batch width, and a
line's content stays where its true width is: ``output_lengths`` stay valid).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(x: torch.Tensor, widths: torch.Tensor, generator: torch.Generator | None = None,
                  strength: float = 1.0, distort: float = 0.5) -> torch.Tensor:
    """Augmented copy of ``x`` (N, 1, H, W). ``widths``: each line's true width in pixels."""
    if strength <= 0:
        return x
    n, _, h, w = x.shape
    dev = x.device
    g = generator

    def u(lo: float, hi: float, size=(n,)) -> torch.Tensor:
        return torch.rand(size, generator=g, device=dev) * (hi - lo) + lo

    # --- affine, in normalised coordinates (-1..1 over the padded batch)
    # output pixel (xo, yo) samples the input at A @ (xo, yo) + t
    shear = u(-0.35, 0.35) * strength              # slant: x_in = x_out + shear * y_out (in pixels)
    angle = u(-1.5, 1.5) * strength * math.pi / 180
    sx = torch.exp(u(-0.15, 0.15) * strength)
    sy = torch.exp(u(-0.12, 0.12) * strength)
    ty = u(-0.08, 0.08) * strength
    cos, sin = torch.cos(angle), torch.sin(angle)
    aspect = h / w                                 # a y step of 1 in normalised units is h/w x-units
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = cos / sx
    theta[:, 0, 1] = (-sin + shear) * aspect / sx
    theta[:, 1, 0] = sin / aspect / sy
    theta[:, 1, 1] = cos / sy
    # keep each line's left edge and centre line where they were: pivot at (left, middle)
    wn = (widths.to(dev).float() / w) * 2 - 1      # right edge of each line in normalised x
    left = torch.full((n,), -1.0, device=dev)
    mid_x = (left + wn) / 2
    theta[:, 0, 2] = mid_x - (theta[:, 0, 0] * mid_x)
    theta[:, 1, 2] = ty - theta[:, 1, 0] * mid_x
    grid = F.affine_grid(theta, (n, 1, h, w), align_corners=False)

    # --- grid distortion on some lines
    if distort > 0:
        cells_y = 3
        cells_x = max(2, int(round(w / h)) + 1)
        amp = 0.06 * strength                      # of the line height, in normalised y units ~ 2*amp
        field = (torch.rand(n, 2, cells_y, cells_x, generator=g, device=dev) * 2 - 1)
        field[:, 0] *= amp * 2 * h / w             # x displacement: same pixels as y
        field[:, 1] *= amp * 2
        on = (torch.rand(n, generator=g, device=dev) < distort).float().view(n, 1, 1, 1)
        disp = F.interpolate(field * on, size=(h, w), mode="bilinear", align_corners=True)
        grid = grid + disp.permute(0, 2, 3, 1)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # --- stroke width
    r = torch.rand(n, generator=g, device=dev).view(n, 1, 1, 1)
    p = 0.25 * min(1.0, strength)
    thick = F.max_pool2d(y, 3, 1, 1)
    thin = -F.max_pool2d(-y, 3, 1, 1)
    y = torch.where(r < p, thick, torch.where(r < 2 * p, thin, y))

    # --- photometric: gamma, contrast, noise
    gamma = torch.exp(u(-0.4, 0.4) * strength).view(n, 1, 1, 1)
    contrast = u(0.7, 1.0).view(n, 1, 1, 1)
    y = y.clamp(0, 1) ** gamma * contrast
    noise = (torch.rand(n, generator=g, device=dev) < 0.4 * strength).float().view(n, 1, 1, 1)
    sd = u(0.01, 0.05).view(n, 1, 1, 1)
    y = y + noise * sd * torch.randn(y.shape, generator=g, device=dev)
    # paper stays paper right of each line's true width
    cols = torch.arange(w, device=dev).view(1, 1, 1, w)
    y = y * (cols < widths.to(dev).view(n, 1, 1, 1)).float()
    return y.clamp(0, 1)
