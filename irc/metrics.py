"""Image-quality metrics computed the way restoration papers compute them.

All functions are batched and torch-based: inputs are ``(B, C, H, W)`` (a ``(C, H, W)`` tensor
is treated as a batch of one) float tensors, by default in [0, 1], and every metric returns a
float64 tensor of shape ``(B,)`` with one value per image.

Conventions (the usual super-resolution evaluation protocol):

* ``y_channel=True`` evaluates on the luma of ITU-R BT.601 "studio swing" YCbCr, i.e. MATLAB's
  ``rgb2ycbcr``: ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` for RGB in [0, 1]
  (Y in [16/255, 235/255]); the Y values are not rounded.
* ``crop_border=s`` removes ``s`` pixels from every side before computing (SR papers use the
  scale factor).
* ``round_to_uint8=True`` first quantises both images to the uint8 grid, as when results are
  saved as 8-bit PNGs before evaluation.
* SSIM follows the MATLAB reference ``ssim_index.m`` of Wang et al. (2004), as used by most SR
  papers' evaluation code: 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, computed on
  the [0, 255] scale, 'valid' filtering (no padding, no automatic downsampling), mean of the
  SSIM map; multi-channel input gives the mean of the per-channel SSIMs.

This module is a leaf of the package: it imports only torch, numpy and ``irc.errors``.
"""

from __future__ import annotations

import glob
import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from irc.errors import IrcError

__all__ = [
    "LPIPSUnavailable",
    "METRICS",
    "ergas",
    "lpips",
    "prepare",
    "psnr",
    "rgb_to_y",
    "sam",
    "ssim",
]


class LPIPSUnavailable(IrcError):
    """LPIPS was requested but the ``lpips`` package or its network weights are not installed."""


# --------------------------------------------------------------------------------------------
# shared preprocessing
# --------------------------------------------------------------------------------------------


def _as_batch(x: Tensor, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"{name}: expected (B,C,H,W) or (C,H,W), got shape {tuple(x.shape)}")
    return x


def _pair(x: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    x, ref = _as_batch(x, "x"), _as_batch(ref, "ref")
    if x.shape != ref.shape:
        raise ValueError(f"shape mismatch: x {tuple(x.shape)} vs ref {tuple(ref.shape)}")
    return x, ref


def _round_uint8(x: Tensor) -> Tensor:
    """``round(x * 255) / 255`` clamped to [0, 1], rounding half away from zero (as MATLAB)."""
    v = torch.nan_to_num(x * 255.0, nan=0.0).clamp(0.0, 255.0)
    f = torch.floor(v)
    return (f + ((v - f) >= 0.5).to(v.dtype)) / 255.0


def rgb_to_y(x: Tensor) -> Tensor:
    """BT.601 studio-swing luma (MATLAB ``rgb2ycbcr``), ``(B,3,H,W)`` [0,1] -> ``(B,1,H,W)``.

    ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255``; white -> 235/255, black -> 16/255.
    Computed in float64 and returned in ``x``'s dtype; no rounding.
    """
    x = _as_batch(x)
    if x.shape[1] != 3:
        raise ValueError(f"rgb_to_y: expected 3 channels, got {x.shape[1]}")
    xd = x.to(torch.float64)
    y = 16.0 + 65.481 * xd[:, 0:1] + 128.553 * xd[:, 1:2] + 24.966 * xd[:, 2:3]
    return (y / 255.0).to(x.dtype)


def prepare(x: Tensor, *, y_channel: bool, crop_border: int, round_to_uint8: bool) -> Tensor:
    """Shared metric preprocessing of a ``(B,C,H,W)`` image in [0, 1]; returns float64.

    In order: optional quantisation to the uint8 grid (``round(x*255)/255``, clamped, half away
    from zero), optional Y conversion (only for 3-channel input; other channel counts are left
    as they are), and removal of ``crop_border`` pixels on each side.
    """
    x = _as_batch(x).to(torch.float64)
    if round_to_uint8:
        x = _round_uint8(x)
    if y_channel and x.shape[1] == 3:
        x = rgb_to_y(x)
    c = int(crop_border)
    if c < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if c > 0:
        if x.shape[-2] <= 2 * c or x.shape[-1] <= 2 * c:
            raise ValueError(f"crop_border={c} leaves nothing of a {tuple(x.shape[-2:])} image")
        x = x[..., c:-c, c:-c]
    return x


def _prepare_pair(x, ref, data_range, y_channel, crop_border, round_to_uint8):
    x, ref = _pair(x, ref)
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    if data_range != 1.0:
        x, ref = x.to(torch.float64) / data_range, ref.to(torch.float64) / data_range
    kw = dict(y_channel=y_channel, crop_border=crop_border, round_to_uint8=round_to_uint8)
    return prepare(x, **kw), prepare(ref, **kw)


# --------------------------------------------------------------------------------------------
# PSNR / SSIM
# --------------------------------------------------------------------------------------------


def psnr(
    x: Tensor,
    ref: Tensor,
    *,
    data_range: float = 1.0,
    y_channel: bool = False,
    crop_border: int = 0,
    round_to_uint8: bool = False,
) -> Tensor:
    """Peak signal-to-noise ratio in dB, one value per image: ``(B,)`` float64.

    ``10 * log10(data_range^2 / MSE)`` with the MSE over all channels and pixels of each image
    (after :func:`prepare`), in float64; identical images give ``inf``. Inputs are scaled by
    ``1 / data_range`` first, so Y conversion and rounding work for any range. With
    ``y_channel=True, crop_border=scale`` this is the usual SR-paper Y-PSNR.
    """
    a, b = _prepare_pair(x, ref, data_range, y_channel, crop_border, round_to_uint8)
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> Tensor:
    """MATLAB ``fspecial('gaussian', size, sigma)`` as a 1-D factor (the 2-D window is g g^T)."""
    r = (size - 1) / 2.0
    t = torch.arange(size, dtype=torch.float64, device=device) - r
    g = torch.exp(-(t * t) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: Tensor, g: Tensor) -> Tensor:
    """Separable 'valid' correlation of ``(N,1,H,W)`` with the window ``g g^T``."""
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, k, 1))
    return F.conv2d(x, g.view(1, 1, 1, k))


def ssim(
    x: Tensor,
    ref: Tensor,
    *,
    y_channel: bool = False,
    crop_border: int = 0,
    round_to_uint8: bool = False,
    data_range: float = 1.0,
) -> Tensor:
    """Structural similarity, MATLAB-compatible, one value per image: ``(B,)`` float64.

    As in the MATLAB code of Wang et al. (``ssim_index.m``, IEEE TIP 2004) and in SR papers'
    Y-channel evaluation: images (after :func:`prepare`) are put on the [0, 255] scale,
    filtered with an 11x11 Gaussian (sigma 1.5) in 'valid' mode, ``C1 = (0.01*255)^2``,
    ``C2 = (0.03*255)^2``, and the SSIM map is averaged. Multi-channel input: mean of the
    per-channel SSIMs. Images must be at least 11x11 after cropping.
    """
    a, b = _prepare_pair(x, ref, data_range, y_channel, crop_border, round_to_uint8)
    bsz, ch, h, w = a.shape
    if h < 11 or w < 11:
        raise ValueError(f"ssim needs images of at least 11x11 pixels, got {h}x{w}")
    a = (a * 255.0).reshape(bsz * ch, 1, h, w)
    b = (b * 255.0).reshape(bsz * ch, 1, h, w)
    g = _gaussian_window(11, 1.5, device=a.device)
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    mu1, mu2 = _filter_valid(a, g), _filter_valid(b, g)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s11 = _filter_valid(a * a, g) - mu1_sq
    s22 = _filter_valid(b * b, g) - mu2_sq
    s12 = _filter_valid(a * b, g) - mu12
    smap = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s11 + s22 + c2))
    return smap.reshape(bsz, ch, -1).mean(dim=2).mean(dim=1)


# --------------------------------------------------------------------------------------------
# spectral metrics
# --------------------------------------------------------------------------------------------


def sam(x: Tensor, ref: Tensor, eps: float = 1e-8) -> Tensor:
    """Spectral angle mapper in degrees, ``(B,)`` float64.

    For spectral cubes ``(B, C, H, W)`` (C bands), the angle ``arccos(<x, r> / (|x| |r|))``
    between the spectra of each pixel, averaged over pixels (Yuhas et al. 1992; the usual
    hyperspectral-SR / pansharpening definition). ``eps`` guards zero spectra (a zero spectrum
    is at 90 degrees from any non-zero one). Invariant to scaling each spectrum by a positive factor.
    """
    a, b = _pair(x, ref)
    a, b = a.to(torch.float64), b.to(torch.float64)
    # angle = 2 atan2(|a^ - b^|, |a^ + b^|) with unit spectra a^, b^: the numerically stable form
    # of arccos(<a, b> / (|a| |b|)), exact near 0 degrees (arccos loses ~1e-8 rad there)
    ua = a / a.norm(dim=1, keepdim=True).clamp_min(eps)
    ub = b / b.norm(dim=1, keepdim=True).clamp_min(eps)
    ang = 2.0 * torch.atan2((ua - ub).norm(dim=1), (ua + ub).norm(dim=1))
    return torch.rad2deg(ang).flatten(1).mean(dim=1)


def ergas(x: Tensor, ref: Tensor, ratio: float = 1.0) -> Tensor:
    """ERGAS (Wald 2000), ``(B,)`` float64; lower is better, 0 for identical images.

    ``100 / ratio * sqrt(mean_c (RMSE_c / mean(ref_c))^2)`` where ``ratio`` is the resolution
    ratio between the high- and low-resolution images (e.g. 4 for x4 super-resolution /
    pansharpening), i.e. ``100 * h/l`` with ``h/l = 1/ratio``, as in Vivone et al.'s toolbox.
    """
    if ratio <= 0:
        raise ValueError(f"ergas: ratio must be positive, got {ratio}")
    a, b = _pair(x, ref)
    a, b = a.to(torch.float64), b.to(torch.float64)
    mse_c = (a - b).pow(2).flatten(2).mean(dim=2)  # (B, C)
    mu_c = b.flatten(2).mean(dim=2)
    rel = mse_c / mu_c.pow(2).clamp_min(torch.finfo(torch.float64).tiny)
    rel = torch.where(mse_c == 0, torch.zeros_like(rel), rel)
    return (100.0 / ratio) * torch.sqrt(rel.mean(dim=1))


# --------------------------------------------------------------------------------------------
# LPIPS (optional)
# --------------------------------------------------------------------------------------------

_LPIPS_BACKBONES = {"alex": "alexnet-*.pth", "vgg": "vgg16-*.pth", "squeeze": "squeezenet1_1-*.pth"}
_LPIPS_MODELS: dict = {}


def _lpips_model(net: str, device: torch.device):
    if net not in _LPIPS_BACKBONES:
        raise LPIPSUnavailable(f"lpips: unknown net {net!r} (choose from {', '.join(_LPIPS_BACKBONES)})")
    key = (net, str(device))
    if key in _LPIPS_MODELS:
        return _LPIPS_MODELS[key]
    try:
        import lpips as lpips_pkg  # noqa: PLC0415 (optional dependency)
    except Exception:  # ImportError, or a broken install
        raise LPIPSUnavailable(
            "LPIPS needs the 'lpips' package: pip install lpips (plus its torchvision backbone weights)"
        ) from None
    # the linear-layer weights ship inside the lpips package
    pkg_dir = os.path.dirname(os.path.abspath(lpips_pkg.__file__))
    lin = os.path.join(pkg_dir, "weights", "v0.1", f"{net}.pth")
    if not os.path.isfile(lin):
        raise LPIPSUnavailable(f"LPIPS linear weights missing: expected {lin} (reinstall: pip install lpips)")
    # the backbone comes from torchvision's checkpoint cache; never download it here
    ckpt_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    if not glob.glob(os.path.join(ckpt_dir, _LPIPS_BACKBONES[net])):
        raise LPIPSUnavailable(
            f"LPIPS '{net}' backbone weights not found: place torchvision's "
            f"{_LPIPS_BACKBONES[net].replace('*', '<hash>')} in {ckpt_dir} (no download is attempted)"
        )
    try:
        model = lpips_pkg.LPIPS(net=net, verbose=False).eval().to(device)
    except Exception as err:  # pragma: no cover - depends on the local install
        raise LPIPSUnavailable(f"LPIPS could not be loaded: {type(err).__name__}: {err}".splitlines()[0]) from None
    for p in model.parameters():
        p.requires_grad_(False)
    _LPIPS_MODELS[key] = model
    return model


def lpips(x: Tensor, ref: Tensor, *, net: str = "alex") -> Tensor:
    """LPIPS distance (Zhang et al. 2018, v0.1), ``(B,)`` float64; inputs RGB in [0, 1].

    Requires the ``lpips`` package and the torchvision backbone weights already on disk;
    otherwise raises :class:`LPIPSUnavailable` (nothing is downloaded).
    """
    a, b = _pair(x, ref)
    model = _lpips_model(net, a.device)
    with torch.no_grad():
        d = model(a.float() * 2 - 1, b.float() * 2 - 1)
    return d.reshape(a.shape[0]).to(torch.float64)


METRICS: dict[str, Callable[..., Tensor]] = {
    "psnr": psnr,
    "ssim": ssim,
    "sam": sam,
    "ergas": ergas,
    "lpips": lpips,
}
