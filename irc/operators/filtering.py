"""Depthwise filtering with reflect padding, and the :class:`Blur` degradation built on it.

:func:`filter2d` and :func:`filter2d_separable` are shared by :class:`Blur`, the Real-ESRGAN
pipeline and USM sharpening (:mod:`irc.operators.realesrgan`) and the photo mixture.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from irc.operators.blur_kernels import KernelSampler, kernel_from_params
from irc.operators.degradation import Degradation
from irc.operators.pixels import _check_image, _work

__all__ = ["Blur", "filter2d", "filter2d_separable", "reflect_pad"]


def _reflect_index(n: int, before: int, after: int, device: torch.device) -> Tensor:
    idx = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


def reflect_pad(x: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
    """Reflect padding (``F.pad(mode="reflect")``, edge pixel not repeated) of any width.

    Unlike ``F.pad`` it allows ``pad >= size`` by reflecting periodically, so a 101-tap USM
    kernel or a 21-tap blur still works on the tiny images that stage 1 of Real-ESRGAN can
    produce (0.15 x a 64-pixel crop).

    Args:
        x: ``(..., H, W)`` tensor.
        pad: ``(left, right, top, bottom)`` as in ``F.pad``.
    """
    left, right, top, bottom = (int(p) for p in pad)
    h, w = x.shape[-2:]
    if 0 <= left < w and 0 <= right < w and 0 <= top < h and 0 <= bottom < h and x.ndim in (3, 4):
        return F.pad(x, (left, right, top, bottom), mode="reflect") if any((left, right, top, bottom)) else x
    x = x.index_select(-1, _reflect_index(w, left, right, x.device))
    return x.index_select(-2, _reflect_index(h, top, bottom, x.device))


def filter2d(x: Tensor, kernel: np.ndarray | Tensor) -> Tensor:
    """Depthwise 2-D convolution with one kernel for every channel, reflect padding, same size.

    Reflect padding is what Real-ESRGAN's ``filter2D`` uses; it avoids the dark frame of zero
    padding and the wrap-around seams of circular padding. The kernel is flipped, so this is a
    true convolution (all built-in kernels are point-symmetric, where it makes no difference).

    Args:
        x: ``(B, C, H, W)`` float tensor (any range).
        kernel: ``(kh, kw)`` numpy array or tensor.

    Returns:
        ``(B, C, H, W)`` tensor, same dtype/device as ``x``.
    """
    _check_image(x)
    w = _work(x)
    k = torch.as_tensor(np.asarray(kernel) if not isinstance(kernel, Tensor) else kernel)
    if k.ndim != 2:
        raise ValueError(f"kernel must be 2-D, got shape {tuple(k.shape)}")
    if k.shape == (1, 1):
        return (w * k.to(device=w.device, dtype=w.dtype)[0, 0]).to(x.dtype)
    k = torch.flip(k.to(device=w.device, dtype=w.dtype), (0, 1))
    kh, kw = k.shape
    b, c, h, wd = w.shape
    xp = reflect_pad(w.reshape(b * c, 1, h, wd), (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2))
    return F.conv2d(xp, k[None, None]).reshape(b, c, h, wd).to(x.dtype)


def filter2d_separable(x: Tensor, kernel_1d: np.ndarray | Tensor) -> Tensor:
    """Separable version of :func:`filter2d` for a symmetric rank-1 kernel ``k ⊗ k``.

    Two 1-D passes cost ``2k`` instead of ``k²`` multiplies per pixel (the 101-tap USM blur).
    """
    _check_image(x)
    w = _work(x)
    k = torch.as_tensor(np.asarray(kernel_1d) if not isinstance(kernel_1d, Tensor) else kernel_1d)
    k = torch.flip(k.reshape(-1).to(device=w.device, dtype=w.dtype), (0,))
    n = k.numel()
    b, c, h, wd = w.shape
    y = reflect_pad(w.reshape(b * c, 1, h, wd), (n // 2, n - 1 - n // 2, n // 2, n - 1 - n // 2))
    y = F.conv2d(y, k.view(1, 1, 1, n))
    y = F.conv2d(y, k.view(1, 1, n, 1))
    return y.reshape(b, c, h, wd).to(x.dtype)


class Blur(Degradation):
    """Blur with a kernel described by its params (:mod:`irc.operators.blur_kernels`).

    Application: :func:`filter2d` (depthwise convolution, reflect padding, same size).
    Params: ``{"kernel": spec}``, e.g. ``{"kernel": {"type": "iso", "size": 11, "sigma_x": 2.0,
    "sigma_y": 2.0, "theta": 0.0}}``.

    Args:
        kernels: any object with ``sample(rng) -> spec`` (default: Real-ESRGAN stage-1
            :class:`~irc.operators.blur_kernels.KernelSampler`; use
            :class:`~irc.operators.blur_kernels.MotionKernelSampler` for motion blur).
        clamp: clamp to [0, 1] (sinc kernels overshoot; default True).
    """

    name = "blur"

    def __init__(self, kernels: Any | None = None, clamp: bool = True) -> None:
        self.kernels = KernelSampler() if kernels is None else kernels
        self.clamp = bool(clamp)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"kernel": self.kernels.sample(rng)}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        y = filter2d(x, kernel_from_params(params["kernel"]))
        return y.clamp(0.0, 1.0) if self.clamp else y
