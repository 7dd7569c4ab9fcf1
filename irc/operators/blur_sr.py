"""Blur + downsampling, the degradation of USRNet (Zhang, Van Gool & Timofte, CVPR 2020).

USRNet's model is ``y = (x conv k) downarrow_s + n``: circular ("wrap" boundary) convolution with a
blur kernel ``k`` followed by the standard ``s``-fold downsampler that keeps the upper-left
pixel of every ``s x s`` block (``x[..., 0::s, 0::s]``). Both are diagonalised by the 2-D DFT,
so the forward operator, its adjoint and the exact data step (USRNet's data module, Eq. 7) all
run in the Fourier domain.

Data-pack kernels: ``kernels/kernels_12.mat`` holds the 12 USRNet test kernels (key
``kernels``, a 1x12 cell of 25x25 float32 kernels summing to 1); see
:mod:`irc.operators.kernels_io` for the other kernel files.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import Tensor

from irc.operators.kernels_io import data_file, load_kernels_mat
from irc.operators.linear import LinearOperator, batch_param

__all__ = [
    "BlurDownsample",
    "psf2otf",
    "downsample",
    "upsample_zeros",
    "load_usrnet_kernels",
    "resolve_kernel",
]


def psf2otf(kernel: Tensor, size: tuple[int, int]) -> Tensor:
    """Optical transfer function of a centred kernel on an ``(H, W)`` periodic grid.

    The kernel is zero-padded to ``(H, W)`` at the top-left and circularly shifted by
    ``(-(k_h // 2), -(k_w // 2))`` so its centre sits at pixel ``(0, 0)`` (MATLAB's
    ``psf2otf``); then ``ifft2(otf * fft2(x))`` is the circular convolution
    ``scipy.ndimage.convolve(x, k, mode="wrap")`` for odd-sized kernels.

    Args:
        kernel: ``(..., k_h, k_w)`` real kernel(s), ``k_h <= H``, ``k_w <= W``.
        size: ``(H, W)``.

    Returns:
        Complex tensor ``(..., H, W)``.
    """
    h, w = size
    kh, kw = kernel.shape[-2:]
    if kh > h or kw > w:
        raise ValueError(f"kernel {kh}x{kw} larger than the image {h}x{w}")
    pad = torch.nn.functional.pad(kernel, (0, w - kw, 0, h - kh))
    pad = torch.roll(pad, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return torch.fft.fft2(pad)


def downsample(x: Tensor, scale: int) -> Tensor:
    """USRNet's standard downsampler: keep the upper-left pixel of each ``s x s`` block."""
    return x[..., 0::scale, 0::scale]


def upsample_zeros(y: Tensor, scale: int) -> Tensor:
    """Adjoint of :func:`downsample`: ``(..., h, w) -> (..., s h, s w)`` with zeros inserted."""
    if scale == 1:
        return y
    out = y.new_zeros(y.shape[:-2] + (y.shape[-2] * scale, y.shape[-1] * scale))
    out[..., 0::scale, 0::scale] = y
    return out


def _block_mean(v: Tensor, scale: int) -> Tensor:
    """USRNet's distinct-block downsampler in the Fourier domain (``splits`` then mean).

    Cuts ``(..., H, W)`` into ``s x s`` tiles of size ``(H/s, W/s)`` and averages them:
    ``F(x downarrow_s)[p, q] = mean_{a, b} F(x)[p + a H/s, q + b W/s]`` (aliasing of decimation).
    """
    h, w = v.shape[-2:]
    v = v.reshape(v.shape[:-2] + (scale, h // scale, scale, w // scale))
    return v.mean(dim=(-4, -2))


def _tile(v: Tensor, scale: int) -> Tensor:
    """Replicate ``(..., h, w)`` into ``(..., s h, s w)`` (USRNet's ``odot_s`` operand)."""
    return v.repeat((1,) * (v.ndim - 2) + (scale, scale))


class BlurDownsample(LinearOperator):
    """``A x = (x conv k) downarrow_s`` with circular boundaries (USRNet protocol).

    Args:
        kernel: blur kernel ``(k_h, k_w)`` shared by the batch, or per sample ``(B, k_h, k_w)``
            / ``(B, 1 or C, k_h, k_w)``. Used as given (normalise it to sum 1 beforehand).
        scale: downsampling factor ``s`` (1 = circular deblurring).

    Shapes: ``x`` ``(B, C, H, W)`` with ``H, W`` multiples of ``s`` and ``>= k`` -> ``y``
    ``(B, C, H/s, W/s)``.

    The kernel is a non-persistent buffer (not in ``state_dict()``); swap it with
    :meth:`set_kernel`. Gradients flow to it if it requires grad.
    """

    def __init__(self, kernel: Tensor, scale: int):
        super().__init__()
        if int(scale) < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.scale = int(scale)
        self.register_buffer("kernel", self._as4d(kernel), persistent=False)

    @staticmethod
    def _as4d(kernel: Tensor) -> Tensor:
        k = torch.as_tensor(kernel)
        if not k.is_floating_point():
            k = k.float()
        if k.ndim == 2:
            k = k[None, None]
        elif k.ndim == 3:
            k = k[:, None]
        elif k.ndim != 4:
            raise ValueError(f"kernel must be (k, k), (B, k, k) or (B, C, k, k), got {tuple(k.shape)}")
        return k

    def set_kernel(self, kernel: Tensor) -> None:
        """Replace the kernel (same conventions as the constructor)."""
        self.kernel = self._as4d(kernel).to(self.kernel.device)

    def otf(self, size: tuple[int, int], ref: Tensor) -> Tensor:
        """:func:`psf2otf` of the kernel on ``size``, complex, in ``ref``'s precision/device."""
        return psf2otf(self.kernel.to(device=ref.device, dtype=ref.dtype), size)

    def _check_x(self, x: Tensor) -> None:
        s = self.scale
        if x.shape[-2] % s or x.shape[-1] % s:
            raise ValueError(f"BlurDownsample with scale {s} needs H and W multiples of {s}, got {tuple(x.shape[-2:])}")

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        """``(B, C, H, W) -> (B, C, H/s, W/s)``."""
        self._check_x(x)
        fk = self.otf(tuple(x.shape[-2:]), x)
        blurred = torch.fft.ifft2(fk * torch.fft.fft2(x)).real
        return downsample(blurred, self.scale)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        """Zero-upsample then circularly correlate with ``k``: ``(B, C, h, w) -> (B, C, s h, s w)``."""
        up = upsample_zeros(y, self.scale)
        fk = self.otf(tuple(up.shape[-2:]), y)
        return torch.fft.ifft2(fk.conj() * torch.fft.fft2(up)).real

    def measurement_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        s = self.scale
        return tuple(input_shape[:-2]) + (input_shape[-2] // s, input_shape[-1] // s)

    def input_shape(self, measurement_shape: Sequence[int]) -> tuple[int, ...]:
        s = self.scale
        return tuple(measurement_shape[:-2]) + (measurement_shape[-2] * s, measurement_shape[-1] * s)

    def data_step(self, x: Tensor, y: Tensor, rho: float | Tensor) -> Tensor:
        """USRNet's closed-form data module with ``alpha = 1 / rho``.

        Solves ``argmin_z ||y - (z conv k) downarrow_s||^2 + alpha ||z - x||^2`` (equivalently
        ``||A z - y||^2 / 2 + ||z - x||^2 / (2 rho)``) exactly (Zhang et al., CVPR 2020, Eq. 7):

            ``z = F^{-1}( (d - conj(F k) odot_s ((F k) d) Downarrow_s / ((|F k|^2) Downarrow_s + alpha)) / alpha )``,
            ``d = conj(F k) F(y uparrow_s) + alpha F(x)``,

        where ``Downarrow_s`` averages the ``s x s`` distinct tiles of a spectrum and ``odot_s``
        multiplies by the ``s x s`` replicated array. Derivation: by Woodbury,
        ``(K^T S^T S K + alpha I)^{-1} = (I - K^T S^T (alpha I + S K K^T S^T)^{-1} S K) / alpha``,
        and in the Fourier domain decimation ``S`` is the tile average and zero-upsampling
        ``S^T`` the tile replication, so ``S K K^T S^T`` is the diagonal ``(|F k|^2) Downarrow_s``.
        Differentiable in ``x``, ``y``, ``rho`` and the kernel.

        Args:
            x: ``(B, C, H, W)``; y: ``(B, C, H/s, W/s)``; rho: ``> 0``, scalar or per sample.
        """
        self._check_x(x)
        s = self.scale
        alpha = 1.0 / batch_param(rho, x)
        fk = self.otf(tuple(x.shape[-2:]), x)
        fkc = fk.conj()
        f2 = fk.real**2 + fk.imag**2
        fr = fkc * torch.fft.fft2(upsample_zeros(y, s)) + alpha * torch.fft.fft2(x)
        fbr = _block_mean(fk * fr, s)
        inv_w = _block_mean(f2, s)
        fx = (fr - fkc * _tile(fbr / (inv_w + alpha), s)) / alpha
        return torch.fft.ifft2(fx).real

    def extra_repr(self) -> str:
        return f"kernel={tuple(self.kernel.shape)}, scale={self.scale}"


def load_usrnet_kernels(path: str | os.PathLike | None = None, *, dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """The 12 USRNet test kernels (25x25 each, normalised to sum 1).

    Args:
        path: ``kernels_12.mat``; default ``$IRC_DATA_ROOT/kernels/kernels_12.mat``.
        dtype: tensor dtype.

    Returns:
        12 tensors ``(25, 25)``: indices 0-3 isotropic Gaussians, 4-7 anisotropic Gaussians,
        8-11 motion blurs (USRNet, Fig. 4).

    Raises:
        IrcError: the file is missing (the message names the expected path) or unreadable.
    """
    p = data_file("kernels/kernels_12.mat") if path is None else path
    return load_kernels_mat(p, "kernels" if path is None else None, dtype=dtype)


def resolve_kernel(spec: int | str, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """The blur kernel a user names, ``(k, k)`` (or ``(kh, kw)``), non-negative, summing to 1.

    Args:
        spec: an index 0-11 of the USRNet kernels (needs the data pack's ``kernels_12.mat``);
            ``"gaussian:SIGMA"`` (isotropic, size ``2 ceil(3 SIGMA) + 1``, no data needed); or a
            file: ``.npy`` (a 2-D array), ``.mat`` (its first 2-D variable) or an image (grey
            values, e.g. a measured PSF saved as PNG).
        dtype: tensor dtype.

    Raises:
        UsageError: an index out of range, a bad ``gaussian:`` value, or a kernel that is not a
            2-D array with a positive sum. IrcError: a missing or unreadable file.
    """
    import math
    from pathlib import Path

    import numpy as np

    from irc.errors import IrcError, UsageError

    if isinstance(spec, str) and spec.strip().lstrip("-").isdigit():
        spec = int(spec)
    if isinstance(spec, int):
        if not 0 <= spec < 12:
            raise UsageError(f"kernel index must be 0-11 (the 12 USRNet kernels), got {spec}")
        try:
            return load_usrnet_kernels(dtype=dtype)[spec]
        except IrcError as err:
            raise IrcError(f"{err}; or give the kernel itself: gaussian:SIGMA or a .npy/.mat/image file") from None
    text = str(spec).strip()
    if text.lower().startswith("gaussian:"):
        from irc.operators.blur_kernels import gaussian_kernel

        try:
            sigma = float(text.split(":", 1)[1])
        except ValueError:
            sigma = -1.0
        if not 0 < sigma <= 20:
            raise UsageError(f"kernel {text!r}: expected gaussian:SIGMA with 0 < SIGMA <= 20 (pixels)")
        k = gaussian_kernel(2 * math.ceil(3 * sigma) + 1, sigma)
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise IrcError(f"kernel file not found: {path} (give an index 0-11, gaussian:SIGMA, or a .npy/.mat/image file)")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            try:
                k = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise IrcError(f"{path}: not a readable .npy array ({err})") from None
        elif suffix == ".mat":
            from irc.operators.kernels_io import load_mat_array

            _, k = load_mat_array(path)
        else:
            from irc.io import read_image

            k = np.asarray(read_image(path).pixels, dtype=np.float64)[:3].mean(0)  # (C, H, W) -> grey
        try:
            k = np.squeeze(np.asarray(k, dtype=np.float64))
        except (TypeError, ValueError):
            raise UsageError(f"kernel file {path}: not a numeric 2-D array") from None
    if k.ndim != 2 or not np.isfinite(k).all() or (k < 0).any() or k.sum() <= 0:
        raise UsageError(f"kernel {text!r}: expected a 2-D, non-negative array with a positive sum, got shape {k.shape}")
    return torch.from_numpy(np.ascontiguousarray(k / k.sum())).to(dtype)
