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


@dataclass(frozen=True)
class StyleRange:
    """How often a training image is drawn as users' scans draw digits: with a thicker or thinner pen (a
    partial dilation or erosion), or as a thumbnail (reduced to 7–16 px and enlarged back)."""

    stroke_share: float = 0.5
    lowres_share: float = 0.25
    lowres_sizes: tuple[int, int] = (7, 16)


def random_stroke(images: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Thicken or thin the strokes of a random `share` of the images by up to one pixel: a 3×3 max (or min)
    filter, blended in by a random amount so the width changes continuously."""
    draws = torch.rand(len(images), 3, generator=generator).to(images.device)
    amount = (draws[:, 0] < share) * draws[:, 2]
    thicker = F.max_pool2d(images, 3, stride=1, padding=1)
    thinner = -F.max_pool2d(-images, 3, stride=1, padding=1)
    target = torch.where((draws[:, 1] < 0.5)[:, None, None, None], thicker, thinner)
    return full_contrast(images + amount[:, None, None, None] * (target - images))


def random_lowres(images: torch.Tensor, ranges: StyleRange, generator: torch.Generator) -> torch.Tensor:
    """Replace a random share of the images by a copy area-averaged to one random size in lowres_sizes and
    enlarged back (bilinear or nearest, by a coin), as thumbnails enlarged by users look."""
    chosen = (torch.rand(len(images), generator=generator) < ranges.lowres_share).to(images.device)
    if not bool(chosen.any()):
        return images
    low, high = ranges.lowres_sizes
    size = int(torch.randint(low, high + 1, (1,), generator=generator))
    mode = "nearest" if bool(torch.rand(1, generator=generator) < 0.5) else "bilinear"
    height, width = images.shape[-2:]
    small = F.interpolate(images[chosen], size=(size, size), mode="area")
    back = F.interpolate(small, size=(height, width), mode=mode, **({} if mode == "nearest" else
                                                                    {"align_corners": False}))
    out = images.clone()
    out[chosen] = full_contrast(back)
    return out


def full_contrast(images: torch.Tensor) -> torch.Tensor:
    """Each image scaled so its brightest pixel is 1, as preprocessing stretches every scan's stroke cores to
    white: a blurred thumbnail is seen at full contrast in training too."""
    return images / images.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
