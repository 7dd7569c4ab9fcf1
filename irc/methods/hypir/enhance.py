"""The pieces of HYPIR's one-step enhancer that are plain tensor maths (METHODS.md §3.1).

Written from the description of the official enhancer (XPixelGroup/HYPIR at b61d107,
``HYPIR/enhancer/base.py``, ``HYPIR/utils/common.py``) and checked against it by running that
code outside this repository on the same random model (the equivalence test in
tests/test_hypir.py pins our output on a tiny model).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["resize_antialiased", "resize_at_least", "upscale_bicubic", "wavelet_colour_fix", "x0_from_eps"]

_WAVELET_KERNEL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0


def upscale_bicubic(x: Tensor, *, upscale: float = 1.0, longest_side: int = 0) -> Tensor:
    """Bicubic resize without antialiasing (torch's, ``align_corners=False``), by the factor
    ``upscale`` (as ``F.interpolate(scale_factor=...)``, the official call) or to ``longest_side``
    (aspect kept, the short side truncated)."""
    h, w = x.shape[-2:]
    if longest_side:
        factor = longest_side / max(h, w)
        size = (longest_side, int(w * factor)) if h >= w else (int(h * factor), longest_side)
        return x if size == (h, w) else F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    if float(upscale) == 1.0:
        return x
    return F.interpolate(x, scale_factor=float(upscale), mode="bicubic", align_corners=False)


def resize_at_least(x: Tensor, side: int) -> Tensor:
    """Enlarge so that the short side is ``side`` and the long side ``int(long * side / short)``
    (antialiased bicubic), when the short side is at most ``side`` (the official ``<=``)."""
    h, w = x.shape[-2:]
    if min(h, w) > side:
        return x
    size = (side, int(w * side / h)) if h <= w else (int(h * side / w), side)
    return resize_antialiased(x, size)


def resize_antialiased(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic resize with antialiasing (torch's), as the enhancer does before and after."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)


def _wavelet_blur(x: Tensor, radius: int) -> Tensor:
    c = x.shape[1]
    kernel = _WAVELET_KERNEL.to(x)[None, None].expand(c, 1, 3, 3)
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel, groups=c, dilation=radius)


def _wavelet_split(x: Tensor, levels: int) -> tuple[Tensor, Tensor]:
    """(high frequencies, low frequencies) of an à-trous decomposition with ``levels`` levels."""
    high = torch.zeros_like(x)
    for i in range(levels):
        blurred = _wavelet_blur(x, 2**i)
        high = high + (x - blurred)
        x = blurred
    return high, x


def wavelet_colour_fix(content: Tensor, reference: Tensor, levels: int = 5) -> Tensor:
    """The restored image's high frequencies plus the reference's low ones (colour stays the input's).

    Args:
        content, reference: ``(B, 3, H, W)``, the same size.
    """
    high, _ = _wavelet_split(content, levels)
    _, low = _wavelet_split(reference, levels)
    return high + low


def x0_from_eps(z_t: Tensor, eps: Tensor, alpha_bar: float) -> Tensor:
    """DDPM's predicted clean sample, ``(z_t - sqrt(1 - abar) eps) / sqrt(abar)`` (no clipping:
    SD2.1's scheduler has ``clip_sample = false``)."""
    return (z_t - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)
