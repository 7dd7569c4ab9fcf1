"""The image-tensor conventions every synthetic degradation follows.

Images are ``(B, C, H, W)`` float tensors in [0, 1] with ``C`` = 1 or 3 (:func:`_check_image`);
outputs keep ``x``'s dtype and device, and half-precision inputs are processed in float32 and
cast back (:func:`_work`). Also the 8-bit rounding of stored images and BT.601 luma.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["quantize_8bit", "rgb_to_gray"]

_HALF = (torch.float16, torch.bfloat16)


def _check_image(x: Tensor, channels: Sequence[int] | None = None) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"expected a (B, C, H, W) floating-point tensor, got {tuple(x.shape)} {x.dtype}")
    if channels is not None and x.shape[1] not in channels:
        raise ValueError(f"expected C in {tuple(channels)}, got C={x.shape[1]}")


def _work(x: Tensor) -> Tensor:
    return x.float() if x.dtype in _HALF else x


def quantize_8bit(x: Tensor) -> Tensor:
    """``clamp(round(255 x), 0, 255) / 255`` in ``x``'s dtype (round half to even, as torch/numpy)."""
    return torch.clamp(torch.round(x * 255.0), 0.0, 255.0) / 255.0


def rgb_to_gray(x: Tensor) -> Tensor:
    """ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``: ``(B, 3, H, W) -> (B, 1, H, W)``."""
    _check_image(x, (3,))
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)
