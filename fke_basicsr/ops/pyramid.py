"""Gaussian image pyramid with kornia's ``pyrdown`` semantics (docs/architecture.md, Input pyramid), no kornia needed.

One level down = depthwise 5×5 binomial blur ([1,4,6,4,1]ᵀ[1,4,6,4,1]/256) with reflect borders, then a
bilinear resize to (⌊H/2⌋, ⌊W/2⌋) with align_corners=False and no antialiasing. For even sizes the resize is
exactly a 2×2 average of the blurred image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['binomial_kernel', 'pyr_down', 'gaussian_pyramid']


def binomial_kernel(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """The 5×5 kernel [1,4,6,4,1]ᵀ[1,4,6,4,1] / 256 (sums to 1)."""
    k1 = torch.tensor([1., 4., 6., 4., 1.], dtype=torch.float64)
    return (torch.outer(k1, k1) / 256.).to(dtype=dtype, device=device)


def pyr_down(x: Tensor) -> Tensor:
    """Blur (5×5 binomial, reflect border) then bilinear ½ resize to (⌊H/2⌋, ⌊W/2⌋); kornia ``pyrdown``."""
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating (B, C, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    b, c, h, w = x.shape
    if h < 3 or w < 3:
        raise ValueError(f"x must be at least 3×3 (reflect padding of the 5×5 blur), got {h}×{w}")
    weight = binomial_kernel(x.dtype, x.device).expand(c, 1, 5, 5)
    blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode='reflect'), weight, groups=c)
    return F.interpolate(blurred, size=(h // 2, w // 2), mode='bilinear', align_corners=False, antialias=False)


def gaussian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """``levels`` images: ``x`` then ``levels − 1`` successive :func:`pyr_down` (kornia ``build_pyramid``)."""
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be an int >= 1, got {levels!r}")
    pyramid = [x]
    for _ in range(levels - 1):
        pyramid.append(pyr_down(pyramid[-1]))
    return pyramid
