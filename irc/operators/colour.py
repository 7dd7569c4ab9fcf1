"""Colour conversions used to feed methods their declared input (no network code here).

Full-range BT.601 (JFIF) YCbCr: invertible without clipping, unlike the 16-235 "studio" form that
metrics use (:mod:`irc.metrics`). Cb and Cr are centred on 0.5 so every plane stays in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rgb_to_ycbcr", "ycbcr_to_rgb"]

# Rows: Y, Cb, Cr from R, G, B in [0, 1].
_RGB_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=torch.float64)
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR)


def rgb_to_ycbcr(x: Tensor) -> Tensor:
    """``(B, 3, H, W)`` RGB in [0, 1] -> full-range YCbCr with chroma centred on 0.5."""
    out = torch.einsum("ij,bjhw->bihw", _RGB_TO_YCBCR.to(x), x)
    return torch.cat([out[:, :1], out[:, 1:] + 0.5], dim=1)


def ycbcr_to_rgb(x: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_ycbcr`."""
    centred = torch.cat([x[:, :1], x[:, 1:] - 0.5], dim=1)
    return torch.einsum("ij,bjhw->bihw", _YCBCR_TO_RGB.to(x), centred)
