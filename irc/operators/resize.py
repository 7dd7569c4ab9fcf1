"""MATLAB-compatible bicubic ``imresize`` in torch.

This reproduces the behaviour of MATLAB's ``imresize(img, scale)`` / ``imresize(img, [h w])``
with the default ``'bicubic'`` method and ``'Antialiasing', true``:

* cubic convolution kernel with ``a = -0.5`` (Keys 1981), support ``[-2, 2]``;
* when shrinking (scale < 1) with antialiasing, the kernel is stretched by ``1/scale``
  (``h(t) = scale * cubic(scale * t)``, width ``4 / scale``);
* output length ``ceil(scale * in)``; output pixel ``x`` (1-based) maps to input coordinate
  ``u = x / scale + 0.5 * (1 - 1 / scale)``;
* taps ``floor(u - width / 2) + (0 .. ceil(width) + 1)``, weights normalised to sum 1 per
  output pixel, out-of-range taps mirrored symmetrically (``[1..n, n..1]`` periodic);
* one 1-D pass per dimension, the dimension with the smaller scale first (ties: height first);
* for ``uint8`` images MATLAB converts back to ``uint8`` after every pass (saturate, round half
  away from zero). ``round_uint8_between_passes=True`` / :func:`imresize_uint8` emulate this and
  reproduce MATLAB's output bit-exactly (e.g. the ``LR_bicubic`` images of the SR benchmarks).

Each 1-D pass is a matrix multiply with a dense ``(out, in)`` weight matrix, built in float64
and cached; :func:`imresize_matrix` exposes it so callers can build adjoints (``A.T``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["imresize", "imresize_uint8", "imresize_matrix", "output_size", "quantize_uint8"]



# --------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------


def _cubic(t: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5, written as MATLAB's ``cubic`` does."""
    absx = np.abs(t)
    absx2 = absx * absx
    absx3 = absx2 * absx
    return (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1) + (
        -0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0
    ) * ((absx > 1) & (absx <= 2))


def _contributions(in_len: int, out_len: int, scale: float, antialias: bool):
    """MATLAB ``contributions``: (weights, 0-based mirrored indices), both ``(out_len, P)``."""
    kernel_width = 4.0
    shrink_aa = antialias and scale < 1
    if shrink_aa:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    p = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(p, dtype=np.float64)[None, :]  # 1-based
    dist = u[:, None] - idx
    if shrink_aa:
        w = scale * _cubic(scale * dist)
    else:
        w = _cubic(dist)
    w = w / np.sum(w, axis=1, keepdims=True)
    # symmetric boundary: aux = [1..n, n..1], idx -> aux(mod(idx - 1, 2n) + 1)
    idx0 = np.mod(idx.astype(np.int64) - 1, 2 * in_len)
    idx0 = np.where(idx0 < in_len, idx0, 2 * in_len - 1 - idx0)
    return w, idx0


@lru_cache(maxsize=256)
def _matrix_np(in_len: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    w, idx = _contributions(in_len, out_len, scale, antialias)
    m = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_len)[:, None], idx.shape)
    np.add.at(m, (rows, idx), w)
    m.setflags(write=False)
    return m


@lru_cache(maxsize=256)
def _matrix_cached(
    in_len: int, out_len: int, scale: float, antialias: bool, device: torch.device, dtype: torch.dtype
) -> Tensor:
    return torch.from_numpy(_matrix_np(in_len, out_len, scale, antialias).copy()).to(
        device=device, dtype=dtype
    )


def imresize_matrix(
    in_len: int,
    out_len: int | None = None,
    scale: float | None = None,
    antialias: bool = True,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The ``(out_len, in_len)`` matrix ``A`` of one 1-D MATLAB-bicubic resize pass.

    ``y = A @ x`` resizes a length-``in_len`` signal (no rounding); ``A.T`` is its adjoint.
    Give ``scale`` (MATLAB semantics, ``out_len`` defaults to ``ceil(scale * in_len)``) and/or
    ``out_len`` (then ``scale`` defaults to ``out_len / in_len``). Returns a fresh tensor.
    """
    if scale is None and out_len is None:
        raise ValueError("imresize_matrix needs out_len or scale")
    if scale is None:
        scale = out_len / in_len
    if out_len is None:
        out_len = _ceil_size(scale, in_len)
    _check_len_scale(in_len, out_len, scale)
    return _matrix_cached(
        int(in_len), int(out_len), float(scale), bool(antialias), torch.device(device or "cpu"), dtype
    ).clone()


# --------------------------------------------------------------------------------------------
# sizes and rounding
# --------------------------------------------------------------------------------------------


def _ceil_size(scale: float, n: int) -> int:
    # ceil(scale * n) as MATLAB, but immune to float noise such as 510 * (1/3) = 170.00000000000003
    v = scale * n
    r = round(v)
    return int(r) if abs(v - r) < 1e-9 * max(1.0, abs(v)) else int(math.ceil(v))


def _check_len_scale(in_len: int, out_len: int, scale: float) -> None:
    if in_len < 1 or out_len < 1:
        raise ValueError(f"imresize: lengths must be >= 1 (got in={in_len}, out={out_len})")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"imresize: scale must be a positive finite number (got {scale})")


def output_size(
    in_size: Sequence[int], scale: float | Sequence[float] | None = None, size: Sequence[int] | None = None
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Resolve ``((out_h, out_w), (scale_h, scale_w))`` the way MATLAB's imresize does."""
    h, w = int(in_size[0]), int(in_size[1])
    if (scale is None) == (size is None):
        raise ValueError("imresize: give exactly one of scale= or size=")
    if size is not None:
        if len(size) != 2:
            raise ValueError(f"imresize: size must be (height, width), got {size!r}")
        oh, ow = int(size[0]), int(size[1])
        if oh < 1 or ow < 1:
            raise ValueError(f"imresize: output size must be positive, got {size!r}")
        return (oh, ow), (oh / h, ow / w)
    if isinstance(scale, (int, float)):
        sh = sw = float(scale)
    else:
        if len(scale) != 2:
            raise ValueError(f"imresize: scale must be a number or (sh, sw), got {scale!r}")
        sh, sw = float(scale[0]), float(scale[1])
    for s in (sh, sw):
        if not (s > 0 and math.isfinite(s)):
            raise ValueError(f"imresize: scale must be positive and finite, got {scale!r}")
    return (_ceil_size(sh, h), _ceil_size(sw, w)), (sh, sw)


def quantize_uint8(v: Tensor) -> Tensor:
    """MATLAB's conversion of a double on the [0, 255] scale to uint8, kept as float.

    Saturates to [0, 255] (NaN -> 0) and rounds half away from zero (``torch.round`` would round
    half to even, which differs on exact ties such as 127.5).
    """
    v = torch.nan_to_num(v, nan=0.0).clamp(0.0, 255.0)
    f = torch.floor(v)
    return f + ((v - f) >= 0.5).to(v.dtype)


# --------------------------------------------------------------------------------------------
# resize
# --------------------------------------------------------------------------------------------


def _resize_core(
    x: Tensor, out_hw: tuple[int, int], scales: tuple[float, float], antialias: bool, rnd: bool
) -> Tensor:
    """Resize the last two dims of ``x`` (any leading dims). ``rnd``: quantise after each pass."""
    in_hw = (x.shape[-2], x.shape[-1])
    # MATLAB: [~, order] = sort(scale) -> smaller scale first, stable (height first on ties)
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    for d in order:
        n_in, n_out, s = in_hw[d], out_hw[d], scales[d]
        if n_in == n_out and s == 1.0:
            continue  # exact identity (weights are [0, 1, 0, 0, ...])
        _check_len_scale(n_in, n_out, s)
        a = _matrix_cached(n_in, n_out, float(s), bool(antialias), x.device, x.dtype)
        x = torch.matmul(a, x) if d == 0 else torch.matmul(x, a.T)
        if rnd:
            x = quantize_uint8(x)
    return x


def imresize(
    x: Tensor,
    scale: float | tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
    *,
    kernel: Literal["cubic"] = "cubic",
    antialias: bool = True,
    round_uint8_between_passes: bool = False,
) -> Tensor:
    """MATLAB-compatible ``imresize`` (bicubic) of a ``(B, C, H, W)`` or ``(C, H, W)`` tensor.

    Args:
        x: float tensor (float32/float64/half on any device); usually in [0, 1], but any range
            works when ``round_uint8_between_passes`` is False (the operator is linear).
        scale: a factor for both dims or ``(scale_h, scale_w)``; output is ``ceil(scale * in)``.
        size: ``(out_h, out_w)`` instead of ``scale`` (then ``scale = out / in`` per dim).
        kernel: only ``"cubic"`` (a = -0.5), MATLAB's default ``'bicubic'``.
        antialias: stretch the kernel by ``1/scale`` when shrinking (MATLAB default True).
        round_uint8_between_passes: emulate MATLAB on ``uint8`` images: the input is taken on the
            uint8 grid (``round(x * 255)``, clamped; MATLAB's uint8 path starts from uint8 data)
            and each 1-D pass is saturated to [0, 255] and rounded half away from zero. The math
            runs in float64 on the [0, 255] scale so exact ties round like MATLAB; the result
            is returned as ``k / 255`` in ``x``'s dtype. Bit-exact with MATLAB's uint8 output.

    Returns:
        Tensor with the same leading dims, dtype and device as ``x`` and spatial size
        ``(out_h, out_w)``.
    """
    if kernel != "cubic":
        raise ValueError(f"imresize: unsupported kernel {kernel!r} (only 'cubic')")
    if not isinstance(x, Tensor):
        raise TypeError(f"imresize: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"imresize: expected a floating-point tensor, got {x.dtype} (use imresize_uint8)")
    if x.ndim not in (3, 4):
        raise ValueError(f"imresize: expected (B,C,H,W) or (C,H,W), got shape {tuple(x.shape)}")
    out_hw, scales = output_size(x.shape[-2:], scale, size)
    if round_uint8_between_passes:
        v = quantize_uint8(x.to(torch.float64) * 255.0)
        v = _resize_core(v, out_hw, scales, antialias, rnd=True)
        return (v / 255.0).to(x.dtype)
    if x.dtype in (torch.float16, torch.bfloat16):
        return _resize_core(x.float(), out_hw, scales, antialias, rnd=False).to(x.dtype)
    return _resize_core(x, out_hw, scales, antialias, rnd=False)


def imresize_uint8(
    arr: np.ndarray,
    scale: float | tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
    *,
    antialias: bool = True,
) -> np.ndarray:
    """MATLAB ``imresize`` of a ``uint8`` ``HxW`` or ``HxWxC`` array, bit-exact.

    Computes each pass in float64 on the [0, 255] scale and converts back to uint8 after each
    pass (saturate, round half away from zero), exactly as MATLAB does for uint8 input.
    """
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise TypeError(f"imresize_uint8: expected a uint8 array, got {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"imresize_uint8: expected HxW or HxWxC, got shape {arr.shape}")
    t = torch.from_numpy(arr.astype(np.float64))  # a fresh, writable copy
    t = t[None] if arr.ndim == 2 else t.permute(2, 0, 1)
    out_hw, scales = output_size(arr.shape[:2], scale, size)
    t = _resize_core(t, out_hw, scales, antialias, rnd=True)
    out = t[0] if arr.ndim == 2 else t.permute(1, 2, 0)
    return np.ascontiguousarray(out.numpy().astype(np.uint8))
