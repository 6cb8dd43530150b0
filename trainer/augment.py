"""Batched random affine augmentation on tensors: small shifts, rotations and scalings, as handwriting varies.

Done with one affine_grid/grid_sample call per batch on the training device, so it costs little next to the
forward pass, unlike torchvision's per-sample PIL transforms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AffineRange:
    """Uniform ranges: ±degrees of rotation, ±pixels of shift (on a 28-px image), ±fraction of scale."""

    degrees: float = 10.0
    shift_px: float = 2.0
    scale: float = 0.1


def random_affine(images: torch.Tensor, ranges: AffineRange, generator: torch.Generator) -> torch.Tensor:
    """Warp each N×1×H×W image (ink > 0 on a 0 background) by its own random affine transform."""
    n, _, height, _ = images.shape
    draws = torch.rand(n, 4, generator=generator).mul_(2).sub_(1).to(images.device)  # uniform in [-1, 1)
    angle = draws[:, 0] * math.radians(ranges.degrees)
    inverse_scale = 1.0 / (1.0 + draws[:, 1] * ranges.scale)
    shift = draws[:, 2:] * (2.0 * ranges.shift_px / height)  # grid coordinates span 2 over the image
    cos, sin = torch.cos(angle) * inverse_scale, torch.sin(angle) * inverse_scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
