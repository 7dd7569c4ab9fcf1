"""Synthetic degradations: one deterministic torch operator per degradation, plus its sampler.

Design (DESIGN.md, "Operators"): a :class:`Degradation` separates *what* is done from *how it
is drawn*:

* ``sample(rng) -> dict``: draws plain, JSON-able parameters (floats, ints, bools, str, lists,
  nested dicts) from a ``numpy.random.Generator``. Any per-pixel randomness (noise, rain streak
  positions, the haze depth field) is represented by an integer ``"seed"``.
* ``apply(x, params) -> Tensor``: a deterministic function of ``x`` and ``params``. The same
  params give bitwise-identical output (on a given device); logged params replay a training
  pair or build a fixed evaluation set.

There is one torch implementation per degradation, usable on CPU or GPU, for training-pair
synthesis and for evaluation alike (no numpy twin). Images are ``(B, C, H, W)`` float tensors in
[0, 1] with ``C`` = 1 or 3; one parameter set applies to the whole batch. Outputs keep ``x``'s
dtype and device; half-precision inputs are processed in float32 and cast back.

Per-pixel randomness: image ``i`` of a batch uses a ``torch.Generator`` on the CPU seeded with
``item_seed(params["seed"], i)`` (a numpy ``SeedSequence`` of ``(seed, i)``); the random tensor
is drawn on the CPU and then moved to ``x``'s device. Hence (a) the random draws are the same
on every device and independent of CUDA's RNG (outputs agree across devices up to the
floating-point rounding of the arithmetic), and (b) image ``i`` of a batch is degraded exactly
as it would be alone with the same params, whatever the batch size (tested).

Noise models follow Real-ESRGAN (Wang et al. 2021, arXiv 2107.10833, Sec. 3.1-3.4); the task
set (haze, rain, low light, SR) follows MiOIR (Kong et al. 2024, arXiv 2401.03379). Choices
that the papers leave open are documented on each class.
"""

from __future__ import annotations

import io
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import signal
from torch import Tensor

from irc.operators.blur_kernels import (
    KernelSampler,
    gaussian_kernel,
    kernel_from_params,
    motion_kernel,
    opencv_gaussian_sigma,
)
from irc.operators.resize import imresize

__all__ = [
    "JPEG",
    "RESIZE_MODES",
    "Blur",
    "Compose",
    "Degradation",
    "GaussianNoise",
    "Haze",
    "Identity",
    "LowLight",
    "OneOf",
    "PoissonNoise",
    "Rain",
    "Resize",
    "SRDegradation",
    "add_gaussian_noise",
    "add_poisson_noise",
    "filter2d",
    "filter2d_separable",
    "haze_depth",
    "item_seed",
    "jpeg_compress",
    "quantize_8bit",
    "rain_streak_kernel",
    "rain_streaks",
    "reflect_pad",
    "resize",
    "rgb_to_gray",
]

RESIZE_MODES = ("area", "bilinear", "bicubic", "nearest", "matlab-bicubic")
_HALF = (torch.float16, torch.bfloat16)
_SEED_HIGH = 2**31  # seeds drawn in [0, 2**31): JSON- and 32-bit friendly


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _check_image(x: Tensor, channels: Sequence[int] | None = None) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"expected a (B, C, H, W) floating-point tensor, got {tuple(x.shape)} {x.dtype}")
    if channels is not None and x.shape[1] not in channels:
        raise ValueError(f"expected C in {tuple(channels)}, got C={x.shape[1]}")


def _work(x: Tensor) -> Tensor:
    return x.float() if x.dtype in _HALF else x


def _uniform(rng: np.random.Generator, rng_range: Sequence[float]) -> float:
    lo, hi = float(rng_range[0]), float(rng_range[1])
    if hi < lo:
        raise ValueError(f"invalid range ({lo}, {hi})")
    return lo if lo == hi else float(rng.uniform(lo, hi))


def _randint(rng: np.random.Generator, rng_range: Sequence[int]) -> int:
    """Integer uniform on the closed range ``[lo, hi]``."""
    lo, hi = int(rng_range[0]), int(rng_range[1])
    if hi < lo:
        raise ValueError(f"invalid range ({lo}, {hi})")
    return int(rng.integers(lo, hi + 1))


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, _SEED_HIGH))


def _probs(p: Sequence[float], n: int, what: str) -> tuple[float, ...]:
    a = np.asarray(p, dtype=np.float64)
    if a.shape != (n,) or np.any(a < 0) or a.sum() <= 0:
        raise ValueError(f"{what}: need {n} non-negative probabilities with a positive sum, got {p!r}")
    return tuple(float(v) for v in a / a.sum())


def item_seed(seed: int, index: int) -> int:
    """Seed of the per-pixel random stream of image ``index`` in a batch (63-bit int).

    Derived with ``numpy.random.SeedSequence([seed, index])`` so that streams of different images
    and of nearby seeds are statistically independent.
    """
    if int(seed) < 0 or int(index) < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def _generator(seed: int, index: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(item_seed(seed, index))
    return g


def quantize_8bit(x: Tensor) -> Tensor:
    """``clamp(round(255 x), 0, 255) / 255`` in ``x``'s dtype (round half to even, as torch/numpy)."""
    return torch.clamp(torch.round(x * 255.0), 0.0, 255.0) / 255.0


def rgb_to_gray(x: Tensor) -> Tensor:
    """ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``: ``(B, 3, H, W) -> (B, 1, H, W)``."""
    _check_image(x, (3,))
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


# --------------------------------------------------------------------------------------------
# filtering and resizing (shared by Blur, the Real-ESRGAN pipeline and USM sharpening)
# --------------------------------------------------------------------------------------------


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


def resize(
    x: Tensor,
    *,
    mode: str,
    scale: float | None = None,
    size: Sequence[int] | None = None,
    antialias: bool = False,
) -> Tensor:
    """Resize with ``torch.nn.functional.interpolate`` or MATLAB-bicubic :func:`imresize`.

    Args:
        x: ``(B, C, H, W)`` float tensor.
        mode: ``"area" | "bilinear" | "bicubic" | "nearest"`` (torch, ``align_corners=False``) or
            ``"matlab-bicubic"`` (:func:`irc.operators.resize.imresize`, antialiased).
        scale: factor; torch modes give ``floor(scale * H)`` (at least 1) and, as Real-ESRGAN's
            ``F.interpolate(scale_factor=...)``, map coordinates with ``scale`` itself;
            ``"matlab-bicubic"`` gives MATLAB's ``ceil(scale * H)``.
        size: ``(out_h, out_w)`` instead of ``scale``.
        antialias: torch's antialiasing for bilinear/bicubic downscaling (Real-ESRGAN: off).

    Returns:
        ``(B, C, H', W')`` in ``x``'s dtype. Not clamped: bicubic can overshoot [0, 1].
    """
    _check_image(x)
    if (scale is None) == (size is None):
        raise ValueError("resize: give exactly one of scale= or size=")
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize: unknown mode {mode!r}; expected one of {RESIZE_MODES}")
    w = _work(x)
    h_in, w_in = w.shape[-2:]
    if mode == "matlab-bicubic":
        out = imresize(w, scale=float(scale)) if size is None else imresize(w, size=(int(size[0]), int(size[1])))
        return out.to(x.dtype)
    if size is not None:
        oh, ow = int(size[0]), int(size[1])
        if oh < 1 or ow < 1:
            raise ValueError(f"resize: output size must be positive, got {tuple(size)}")
        kwargs: dict[str, Any] = {"size": (oh, ow)}
    else:
        s = float(scale)
        if not (s > 0 and math.isfinite(s)):
            raise ValueError(f"resize: scale must be positive and finite, got {scale}")
        oh, ow = math.floor(h_in * s), math.floor(w_in * s)
        if oh >= 1 and ow >= 1:
            kwargs = {"scale_factor": s}
        else:  # too small for scale_factor (torch would raise): clamp the size to one pixel
            oh, ow = max(1, oh), max(1, ow)
            kwargs = {"size": (oh, ow)}
    if (oh, ow) == (h_in, w_in) and (size is not None or float(scale) == 1.0):
        return x.clone()
    if mode in ("bilinear", "bicubic"):
        out = F.interpolate(w, mode=mode, align_corners=False, antialias=antialias, **kwargs)
    else:
        out = F.interpolate(w, mode=mode, **kwargs)
    return out.to(x.dtype)


# --------------------------------------------------------------------------------------------
# noise
# --------------------------------------------------------------------------------------------


def add_gaussian_noise(x: Tensor, sigma: float, *, gray: bool = False, seed: int, clip: bool = True) -> Tensor:
    """Add white Gaussian noise ``N(0, (sigma/255)²)`` (Real-ESRGAN Sec. 3.3).

    Args:
        x: ``(B, C, H, W)`` image in [0, 1].
        sigma: standard deviation on the 0-255 scale.
        gray: one noise field shared by all channels ("grey noise") instead of independent ones.
        seed: per-pixel randomness (see module docstring).
        clip: clamp the result to [0, 1].

    Returns:
        Noisy image, same shape, dtype and device as ``x``.
    """
    _check_image(x)
    w = _work(x)
    b, c, h, wd = w.shape
    fields = []
    for i in range(b):
        n = torch.randn((1 if gray else c, h, wd), generator=_generator(seed, i), dtype=torch.float32)
        fields.append(n.expand(c, h, wd))
    noise = torch.stack(fields).to(device=w.device, dtype=w.dtype) * (float(sigma) / 255.0)
    y = w + noise
    return (y.clamp(0.0, 1.0) if clip else y).to(x.dtype)


def _poisson_levels(q: Tensor, levels: int | str) -> float:
    if levels == "auto":
        n = int(torch.unique(q).numel())
        return float(2 ** math.ceil(math.log2(max(n, 1))))
    if int(levels) < 1:
        raise ValueError(f"levels must be >= 1 or 'auto', got {levels!r}")
    return float(levels)


def add_poisson_noise(
    x: Tensor, scale: float, *, gray: bool = False, seed: int, levels: int | str = "auto", clip: bool = True
) -> Tensor:
    """Add scaled, signal-dependent Poisson (shot) noise, Real-ESRGAN style.

    For each image, with ``q = round(255 x) / 255`` (the 8-bit image) and ``L`` photon levels::

        noise = scale * (Poisson(L * q) / L - q)        y = clip(x + noise)

    so the noise has mean 0 and standard deviation ``scale * sqrt(q / L)``. With
    ``levels="auto"``, ``L = 2 ** ceil(log2(#distinct values of q))`` per image, the rule of
    Real-ESRGAN's reference implementation (inherited from scikit-image's ``random_noise``);
    for an 8-bit photo with more than 128 distinct levels this is ``L = 256``. ``levels=N``
    fixes ``L`` (content-independent strength). Grey noise computes ``q`` from BT.601 luma and
    adds the same field to every channel.

    The noise is drawn on the CPU from ``x`` (detached) and enters as an additive constant, so
    gradients pass through as the identity.

    Args:
        x: ``(B, C, H, W)`` image in [0, 1].
        scale: noise multiplier (Real-ESRGAN: [0.05, 3] stage 1, [0.05, 2.5] stage 2).
        gray: grey (luma) noise on every channel (only meaningful for C = 3).
        seed: per-pixel randomness (see module docstring).
        levels: ``"auto"`` or a fixed photon count per unit intensity.
        clip: clamp the result to [0, 1].
    """
    _check_image(x)
    w = _work(x)
    b, c = w.shape[:2]
    xc = w.detach().to(device="cpu", dtype=torch.float64)
    base = rgb_to_gray(xc) if (gray and c == 3) else xc
    q = quantize_8bit(base)
    fields = []
    for i in range(b):
        lv = _poisson_levels(q[i], levels)
        counts = torch.poisson(q[i] * lv, generator=_generator(seed, i))
        fields.append((counts / lv - q[i]).expand(c, *q.shape[-2:]))
    noise = (torch.stack(fields) * float(scale)).to(device=w.device, dtype=w.dtype)
    y = w + noise
    return (y.clamp(0.0, 1.0) if clip else y).to(x.dtype)


# --------------------------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------------------------


class _StraightThrough(torch.autograd.Function):
    """Forward: the given (non-differentiable) result; backward: identity to the input."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor) -> Tensor:
        return y.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def jpeg_compress(x: Tensor, quality: int, *, differentiable: bool = False, subsampling: str = "4:2:0") -> Tensor:
    """Real JPEG round trip through pillow (libjpeg), one image at a time.

    Each image is clamped to [0, 1], converted to uint8 with ``round(255 x)`` (half to even),
    encoded at ``quality`` (``L`` mode for C = 1, ``RGB`` with the given chroma subsampling for
    C = 3; 4:2:0 is the libjpeg/OpenCV default and pinned so results do not change with pillow's
    defaults) and decoded back to ``k / 255``.

    ``differentiable=True`` uses a straight-through estimator: the forward value is exactly the
    real JPEG output, the backward pass is the identity. Compared with a DiffJPEG-style
    re-implementation (Shin & Song 2017; used by Real-ESRGAN's training code) it keeps the true
    libjpeg artefacts and costs nothing extra; its gradient ignores JPEG's blockwise
    quantisation, which is what DiffJPEG approximates with a smooth rounding anyway.

    Args:
        x: ``(B, C, H, W)``, C = 1 or 3, values in [0, 1].
        quality: libjpeg quality 1-100.
        differentiable: straight-through gradients (else the output carries no graph).
        subsampling: ``"4:4:4" | "4:2:2" | "4:2:0"`` (colour only).

    Returns:
        Decoded images on the 8-bit grid, same shape, dtype and device as ``x``.
    """
    from PIL import Image

    _check_image(x, (1, 3))
    q = int(quality)
    if not 1 <= q <= 100:
        raise ValueError(f"JPEG quality must be in [1, 100], got {quality}")
    arr = torch.round(_work(x.detach()).clamp(0.0, 1.0) * 255.0).to(torch.uint8).cpu().numpy()
    out = np.empty_like(arr)
    for i in range(arr.shape[0]):
        if arr.shape[1] == 1:
            im = Image.fromarray(arr[i, 0], mode="L")
            opts: dict[str, Any] = {}
        else:
            im = Image.fromarray(np.ascontiguousarray(arr[i].transpose(1, 2, 0)), mode="RGB")
            opts = {"subsampling": subsampling}
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=q, **opts)
        buf.seek(0)
        with Image.open(buf) as dec:
            d = np.asarray(dec.convert(im.mode))
        out[i] = d[None] if d.ndim == 2 else d.transpose(2, 0, 1)
    y = (torch.from_numpy(out).to(device=x.device, dtype=_work(x).dtype) / 255.0).to(x.dtype)
    if differentiable and x.requires_grad:
        return _StraightThrough.apply(x, y)
    return y


# --------------------------------------------------------------------------------------------
# haze and rain fields
# --------------------------------------------------------------------------------------------


def haze_depth(
    height: int, width: int, *, seed: int, index: int = 0, grid: int = 4, gradient_weight: float = 0.5
) -> Tensor:
    """Depth proxy for synthetic haze: ``(H, W)`` float64 CPU tensor in [0, 1], larger = farther.

    No depth maps are available for arbitrary training images, so depth is approximated by

    ``d = normalise(w * g + (1 - w) * f)`` where ``g = 1 - row / (H - 1)`` is a vertical ramp
    (the top of an outdoor photo is usually farther: sky, horizon; the bottom is the ground near
    the camera) and ``f`` is a smooth random field: a ``grid x grid`` standard-normal array,
    upsampled bicubically (``align_corners=True``) to ``H x W`` and normalised to [0, 1], so it
    varies on the scale of whole objects, not pixels. ``normalise`` maps min..max to 0..1, so
    the nearest point is haze-free and the farthest gets the full ``exp(-beta)`` attenuation.

    Args:
        height, width: output size.
        seed, index: per-image randomness (same rule as the noise).
        grid: resolution of the random field (smaller = smoother).
        gradient_weight: ``w`` in [0, 1]; 1 = pure vertical ramp, 0 = pure random field.
    """
    if not 0.0 <= gradient_weight <= 1.0:
        raise ValueError(f"gradient_weight must be in [0, 1], got {gradient_weight}")
    g = _generator(seed, index)
    field = torch.randn((1, 1, int(grid), int(grid)), generator=g, dtype=torch.float64)
    field = F.interpolate(field, size=(int(height), int(width)), mode="bicubic", align_corners=True)[0, 0]

    def _norm(t: Tensor) -> Tensor:
        lo, hi = t.min(), t.max()
        return (t - lo) / (hi - lo) if hi > lo else torch.zeros_like(t)

    ramp = torch.linspace(1.0, 0.0, int(height), dtype=torch.float64)[:, None].expand(int(height), int(width))
    return _norm(gradient_weight * ramp + (1.0 - gradient_weight) * _norm(field))


def rain_streak_kernel(length: float, angle: float, width: int) -> np.ndarray:
    """Footprint of one rain streak: a line, thickened, peak normalised to 1.

    A motion line of ``length`` pixels at ``angle`` degrees from the vertical (positive = top
    leaning left, i.e. counter-clockwise) is convolved with an isotropic Gaussian of odd size
    ``width`` and OpenCV's default sigma for that size (``0.3((width-1)/2 - 1) + 0.8``), which
    gives a soft streak about ``width`` pixels wide.

    Returns:
        ``(k, k)`` float64 array with maximum 1.
    """
    width = int(width)
    if width < 1 or width % 2 == 0:
        raise ValueError(f"rain width must be a positive odd integer, got {width}")
    line = motion_kernel(length, 90.0 + float(angle))
    k = signal.convolve2d(line, gaussian_kernel(width, opencv_gaussian_sigma(width))) if width > 1 else line
    return k / k.max()


def rain_streaks(
    height: int,
    width: int,
    *,
    count: int,
    length: float,
    angle: float,
    streak_width: int,
    seed: int,
    index: int = 0,
    reference_area: float | None = 300 * 300,
) -> Tensor:
    """Rain-streak layer ``S``: ``(H, W)`` float64 CPU tensor in [0, 1].

    ``n = max(1, round(count * H * W / reference_area))`` streak centres (``count`` per
    ``reference_area`` pixels; ``None`` means exactly ``count``) are drawn uniformly at integer
    positions from the seeded generator, extended by half a streak beyond each border so that
    streaks enter and leave the frame; one :func:`rain_streak_kernel` is stamped at each
    centre (equivalent to convolving the sparse point map with the kernel) and overlaps are
    clipped to 1.
    """
    k = torch.from_numpy(rain_streak_kernel(length, angle, streak_width))
    ks = k.shape[0]
    p = ks // 2
    h, w = int(height), int(width)
    n = int(count) if reference_area is None else max(1, round(count * h * w / float(reference_area)))
    g = _generator(seed, index)
    ys = torch.randint(-p, h + p, (n,), generator=g)
    xs = torch.randint(-p, w + p, (n,), generator=g)
    canvas = torch.zeros((h + 2 * ks, w + 2 * ks), dtype=torch.float64)
    for cy, cx in zip(ys.tolist(), xs.tolist()):
        top, left = cy - p + ks, cx - p + ks
        canvas[top : top + ks, left : left + ks] += k
    return canvas[ks : ks + h, ks : ks + w].clamp(max=1.0)


# --------------------------------------------------------------------------------------------
# Degradation objects
# --------------------------------------------------------------------------------------------


class Degradation(ABC):
    """A degradation: deterministic :meth:`apply` given plain params, random :meth:`sample`.

    Subclasses set ``name`` and implement both methods. ``sample`` must return only JSON-able
    values; ``apply(x, sample(rng))`` must be a pure function of ``x`` and the params.
    """

    name: str = "degradation"

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw plain, JSON-able parameters (including an integer ``"seed"`` where needed)."""

    @abstractmethod
    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        """Degrade ``x`` (``(B, C, H, W)`` in [0, 1]) with ``params``; deterministic."""

    def __call__(self, x: Tensor, rng: np.random.Generator) -> tuple[Tensor, dict[str, Any]]:
        """``params = sample(rng)``; returns ``(apply(x, params), params)``."""
        params = self.sample(rng)
        return self.apply(x, params), params

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Identity(Degradation):
    """No degradation (params ``{}``); handy as a mixture entry or a pipeline placeholder."""

    name = "identity"

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        _check_image(x)
        return x.clone()


class GaussianNoise(Degradation):
    """Additive white Gaussian noise (Real-ESRGAN Sec. 3.3), colour or grey.

    Params: ``{"sigma": float (0-255 scale), "gray": bool, "seed": int}``.

    Args:
        sigma_range: ``sigma`` uniform in this range, 0-255 units (default ``(1, 30)``,
            Real-ESRGAN stage 1).
        gray_prob: probability of grey noise (one field for all channels), default 0.4.
        sigma_choices: if given, ``sigma`` is drawn uniformly from these values instead
            (e.g. ``(15, 25, 50)`` for the AirNet 3-task protocol).
        clip: clamp the output to [0, 1] (default True; False keeps the exact noise statistics).
    """

    name = "gaussian_noise"

    def __init__(
        self,
        sigma_range: tuple[float, float] = (1.0, 30.0),
        gray_prob: float = 0.4,
        sigma_choices: Sequence[float] | None = None,
        clip: bool = True,
    ) -> None:
        self.sigma_range = tuple(float(v) for v in sigma_range)
        self.gray_prob = float(gray_prob)
        self.sigma_choices = None if sigma_choices is None else tuple(float(v) for v in sigma_choices)
        self.clip = bool(clip)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        if self.sigma_choices:
            sigma = self.sigma_choices[int(rng.integers(len(self.sigma_choices)))]
        else:
            sigma = _uniform(rng, self.sigma_range)
        gray = bool(self.gray_prob > 0 and rng.uniform() < self.gray_prob)
        return {"sigma": float(sigma), "gray": gray, "seed": _seed(rng)}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        return add_gaussian_noise(
            x, params["sigma"], gray=bool(params.get("gray", False)), seed=int(params["seed"]), clip=self.clip
        )


class PoissonNoise(Degradation):
    """Signal-dependent Poisson noise, Real-ESRGAN style (formula in :func:`add_poisson_noise`).

    Params: ``{"scale": float, "gray": bool, "levels": int | "auto", "seed": int}``.

    Args:
        scale_range: noise multiplier range (default ``(0.05, 3)``, Real-ESRGAN stage 1).
        gray_prob: probability of grey noise, default 0.4.
        levels: photon levels ``L`` (``"auto"``: Real-ESRGAN's content-dependent rule).
        clip: clamp the output to [0, 1].
    """

    name = "poisson_noise"

    def __init__(
        self,
        scale_range: tuple[float, float] = (0.05, 3.0),
        gray_prob: float = 0.4,
        levels: int | str = "auto",
        clip: bool = True,
    ) -> None:
        self.scale_range = tuple(float(v) for v in scale_range)
        self.gray_prob = float(gray_prob)
        self.levels = levels if levels == "auto" else int(levels)
        self.clip = bool(clip)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        scale = _uniform(rng, self.scale_range)
        gray = bool(self.gray_prob > 0 and rng.uniform() < self.gray_prob)
        return {"scale": scale, "gray": gray, "levels": self.levels, "seed": _seed(rng)}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        return add_poisson_noise(
            x,
            params["scale"],
            gray=bool(params.get("gray", False)),
            seed=int(params["seed"]),
            levels=params.get("levels", "auto"),
            clip=self.clip,
        )


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


class JPEG(Degradation):
    """JPEG compression at an integer quality (real libjpeg via pillow, see :func:`jpeg_compress`).

    Params: ``{"quality": int}``.

    Args:
        quality_range: closed integer range (default ``(30, 95)``, Real-ESRGAN). Real-ESRGAN
            draws a float quality for its DiffJPEG; libjpeg takes integers.
        differentiable: straight-through gradients (forward = real JPEG, backward = identity).
        subsampling: chroma subsampling for colour images (default 4:2:0).
    """

    name = "jpeg"

    def __init__(
        self, quality_range: tuple[int, int] = (30, 95), differentiable: bool = False, subsampling: str = "4:2:0"
    ) -> None:
        self.quality_range = (int(quality_range[0]), int(quality_range[1]))
        self.differentiable = bool(differentiable)
        self.subsampling = subsampling

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"quality": _randint(rng, self.quality_range)}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        return jpeg_compress(x, params["quality"], differentiable=self.differentiable, subsampling=self.subsampling)


class Resize(Degradation):
    """Random up/down/keep resize (Real-ESRGAN Sec. 3.2 "resize").

    Params: ``{"updown": "up" | "down" | "keep", "scale": float, "mode": str}`` (output
    ``floor(scale * H)``; ``"matlab-bicubic"``: ``ceil``), or ``{"mode": str, "size": [h, w]}``
    for a fixed output size (used by the Real-ESRGAN stage 2).

    Args:
        modes: drawn uniformly unless ``mode_probs`` (default area / bilinear / bicubic).
        scale_range: ``(lo, hi)``; "up" draws ``U(1, hi)``, "down" ``U(lo, 1)``, "keep" 1.
        updown_probs: probabilities of up / down / keep (default ``[0.2, 0.7, 0.1]``).
        mode_probs: optional probabilities for ``modes``.
        antialias: torch antialiasing when shrinking (default False, as Real-ESRGAN).
        clamp: clamp to [0, 1] (bicubic overshoots; default True).
    """

    name = "resize"

    def __init__(
        self,
        modes: Sequence[str] = ("area", "bilinear", "bicubic"),
        scale_range: tuple[float, float] = (0.15, 1.5),
        updown_probs: Sequence[float] = (0.2, 0.7, 0.1),
        mode_probs: Sequence[float] | None = None,
        antialias: bool = False,
        clamp: bool = True,
    ) -> None:
        bad = [m for m in modes if m not in RESIZE_MODES]
        if bad or not modes:
            raise ValueError(f"unknown resize modes {bad}; expected some of {RESIZE_MODES}")
        self.modes = tuple(modes)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        if not 0 < self.scale_range[0] <= 1 <= self.scale_range[1]:
            raise ValueError(f"scale_range must satisfy 0 < lo <= 1 <= hi, got {scale_range}")
        self.updown_probs = _probs(updown_probs, 3, "updown_probs")
        self.mode_probs = None if mode_probs is None else _probs(mode_probs, len(self.modes), "mode_probs")
        self.antialias = bool(antialias)
        self.clamp = bool(clamp)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        updown = ("up", "down", "keep")[int(rng.choice(3, p=self.updown_probs))]
        if updown == "up":
            scale = _uniform(rng, (1.0, self.scale_range[1]))
        elif updown == "down":
            scale = _uniform(rng, (self.scale_range[0], 1.0))
        else:
            scale = 1.0
        mode = self.modes[int(rng.choice(len(self.modes), p=self.mode_probs))]
        return {"updown": updown, "scale": scale, "mode": mode}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        if "size" in params:
            y = resize(x, mode=params["mode"], size=params["size"], antialias=self.antialias)
        else:
            y = resize(x, mode=params["mode"], scale=float(params["scale"]), antialias=self.antialias)
        return y.clamp(0.0, 1.0) if self.clamp else y


class Haze(Degradation):
    """Atmospheric scattering (Koschmieder model): ``I = J t + A (1 - t)``, ``t = exp(-beta d)``.

    ``d`` is the depth proxy of :func:`haze_depth` (a seeded smooth random field blended with a
    vertical ramp, farther towards the top, normalised to [0, 1]) because MiOIR's depth maps are
    not available for arbitrary images; ``apply(..., depth=...)`` takes a real depth map
    instead. ``A`` is a grey airlight, the same for all channels. ``beta = 0`` is the identity.
    Output stays in [0, 1] for ``A`` in [0, 1].

    Params: ``{"A": float, "beta": float, "seed": int}``.

    Args:
        A_range: airlight range (default ``(0.8, 1.0)``, MiOIR).
        beta_range: scattering coefficient range (default ``(0.5, 2.5)``, MiOIR).
        depth_grid: resolution of the random depth field (default 4).
        gradient_weight: weight of the vertical ramp in the depth proxy (default 0.5).
    """

    name = "haze"

    def __init__(
        self,
        A_range: tuple[float, float] = (0.8, 1.0),
        beta_range: tuple[float, float] = (0.5, 2.5),
        depth_grid: int = 4,
        gradient_weight: float = 0.5,
    ) -> None:
        self.A_range = tuple(float(v) for v in A_range)
        self.beta_range = tuple(float(v) for v in beta_range)
        self.depth_grid = int(depth_grid)
        self.gradient_weight = float(gradient_weight)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"A": _uniform(rng, self.A_range), "beta": _uniform(rng, self.beta_range), "seed": _seed(rng)}

    def depth(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        """The ``(B, 1, H, W)`` depth proxy used by :meth:`apply` (on ``x``'s device, float64)."""
        b, _, h, w = x.shape
        d = [
            haze_depth(
                h, w, seed=int(params["seed"]), index=i, grid=self.depth_grid, gradient_weight=self.gradient_weight
            )
            for i in range(b)
        ]
        return torch.stack(d)[:, None].to(x.device)

    def apply(self, x: Tensor, params: Mapping[str, Any], depth: Tensor | None = None) -> Tensor:
        """Args: ``depth``: optional ``(B|1, 1, H, W)`` or ``(H, W)`` depth in [0, 1] (larger = farther)."""
        _check_image(x)
        w = _work(x)
        d = self.depth(w, params) if depth is None else torch.as_tensor(depth, device=w.device)
        if d.ndim == 2:
            d = d[None, None]
        t = torch.exp(-float(params["beta"]) * d.to(torch.float64)).to(w.dtype)
        a = float(params["A"])
        return (w * t + a * (1.0 - t)).to(x.dtype)


class Rain(Degradation):
    """Synthetic rain streaks added to the image: ``y = clip(x + intensity * S)``.

    ``S`` (:func:`rain_streaks`) is built from seeded random streak centres, each stamped with a
    line kernel of the given length and angle (a motion-blur kernel) thickened by a Gaussian of
    size ``width``; this is the usual "noise points + motion blur" recipe behind MiOIR's and
    Rain100L's synthetic streaks, with the additive rain model ``O = B + S`` (Yang et al. 2017,
    JORDER, arXiv 1609.07769). Streaks are white: the same ``S`` for every channel. MiOIR's
    ``count`` refers to its 300x300 training crops, so the number of streaks scales with image
    area (``reference_area``); each image of a batch gets its own streak positions.

    Params: ``{"count": int, "length": int, "angle": float (degrees from vertical), "width": int,
    "intensity": float, "seed": int}``.

    Args:
        count_range: streaks per ``reference_area`` pixels (default ``(50, 100)``, MiOIR).
        length_range: streak length in pixels (default ``(20, 40)``, MiOIR).
        angle_range: degrees from vertical (default ``(-45, 45)``, MiOIR).
        widths: odd streak widths (default ``(3, 5, 7, 9, 11)``, MiOIR).
        intensity_range: streak brightness (default ``(0.6, 1.0)``; our choice, not specified).
        reference_area: pixels that ``count`` refers to (default ``300 * 300``; ``None`` = absolute).
    """

    name = "rain"

    def __init__(
        self,
        count_range: tuple[int, int] = (50, 100),
        length_range: tuple[int, int] = (20, 40),
        angle_range: tuple[float, float] = (-45.0, 45.0),
        widths: Sequence[int] = (3, 5, 7, 9, 11),
        intensity_range: tuple[float, float] = (0.6, 1.0),
        reference_area: float | None = 300 * 300,
    ) -> None:
        self.count_range = (int(count_range[0]), int(count_range[1]))
        self.length_range = (int(length_range[0]), int(length_range[1]))
        self.angle_range = tuple(float(v) for v in angle_range)
        self.widths = tuple(int(v) for v in widths)
        self.intensity_range = tuple(float(v) for v in intensity_range)
        self.reference_area = reference_area

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {
            "count": _randint(rng, self.count_range),
            "length": _randint(rng, self.length_range),
            "angle": _uniform(rng, self.angle_range),
            "width": self.widths[int(rng.integers(len(self.widths)))],
            "intensity": _uniform(rng, self.intensity_range),
            "seed": _seed(rng),
        }

    def streaks(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        """The ``(B, 1, H, W)`` streak layer ``S`` in [0, 1] used by :meth:`apply` (float64)."""
        b, _, h, w = x.shape
        s = [
            rain_streaks(
                h,
                w,
                count=int(params["count"]),
                length=float(params["length"]),
                angle=float(params["angle"]),
                streak_width=int(params["width"]),
                seed=int(params["seed"]),
                index=i,
                reference_area=self.reference_area,
            )
            for i in range(b)
        ]
        return torch.stack(s)[:, None].to(x.device)

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        _check_image(x)
        w = _work(x)
        s = self.streaks(w, params).to(w.dtype)
        return (w + float(params["intensity"]) * s).clamp(0.0, 1.0).to(x.dtype)


class LowLight(Degradation):
    """Low light by a gamma curve, ``y = x ** gamma`` (MiOIR "dark"); ``gamma = 1`` is the identity.

    Params: ``{"gamma": float}``.

    Args:
        gamma_range: default ``(1, 3)`` (MiOIR).
    """

    name = "low_light"

    def __init__(self, gamma_range: tuple[float, float] = (1.0, 3.0)) -> None:
        self.gamma_range = tuple(float(v) for v in gamma_range)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"gamma": _uniform(rng, self.gamma_range)}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        _check_image(x)
        w = _work(x)
        return torch.pow(w.clamp(0.0, 1.0), float(params["gamma"])).to(x.dtype)


class SRDegradation(Degradation):
    """MiOIR's SR task: MATLAB-bicubic downscale by ``1/scale`` then bicubic back to the input size.

    The output has the input's size (MiOIR trains same-size restoration networks). Downscale:
    :func:`imresize` with ``scale = 1/s`` (output ``ceil(H/s)``); upscale: :func:`imresize` to
    exactly ``(H, W)``. Clamped to [0, 1] (bicubic overshoots). Deterministic: params are just
    ``{"scale": s}``.

    Args:
        scale: the factor (default 4).
        quantize_lr: round the low-resolution image to 8 bits before upscaling (as if it had
            been saved as PNG; default False).
    """

    name = "sr"

    def __init__(self, scale: int = 4, quantize_lr: bool = False) -> None:
        self.scale = int(scale)
        self.quantize_lr = bool(quantize_lr)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"scale": self.scale}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        _check_image(x)
        s = float(params.get("scale", self.scale))
        h, w = x.shape[-2:]
        lr = imresize(x, scale=1.0 / s)
        if self.quantize_lr:
            lr = quantize_8bit(lr)
        return imresize(lr, size=(h, w)).clamp(0.0, 1.0)


class Compose(Degradation):
    """Apply degradations in sequence, each with its own probability.

    Params: ``{"steps": [{"name": str, "applied": bool, "params": dict}, ...]}``; every step's
    params are sampled (even when not applied) so the rng consumption, and hence later draws,
    do not depend on the coin flips.

    Args:
        steps: degradations, or ``(degradation, probability)`` pairs (probability defaults to 1).
    """

    name = "compose"

    def __init__(self, steps: Sequence[Degradation | tuple[Degradation, float]]) -> None:
        self.steps: list[tuple[Degradation, float]] = []
        for s in steps:
            d, p = (s, 1.0) if isinstance(s, Degradation) else (s[0], float(s[1]))
            self.steps.append((d, p))

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        out = []
        for d, p in self.steps:
            applied = bool(p >= 1.0 or rng.uniform() < p)
            out.append({"name": d.name, "applied": applied, "params": d.sample(rng)})
        return {"steps": out}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        steps = params["steps"]
        if len(steps) != len(self.steps):
            raise ValueError(f"params have {len(steps)} steps, this Compose has {len(self.steps)}")
        for (d, _), sp in zip(self.steps, steps):
            if sp["applied"]:
                x = d.apply(x, sp["params"])
        return x


class OneOf(Degradation):
    """Apply exactly one of several degradations, chosen with the given probabilities.

    Params: ``{"choice": int, "name": str, "params": dict}``.
    """

    name = "one_of"

    def __init__(self, options: Sequence[Degradation], probs: Sequence[float] | None = None) -> None:
        if not options:
            raise ValueError("OneOf needs at least one option")
        self.options = list(options)
        self.probs = _probs(probs if probs is not None else [1.0] * len(options), len(options), "probs")

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        i = int(rng.choice(len(self.options), p=self.probs)) if len(self.options) > 1 else 0
        return {"choice": i, "name": self.options[i].name, "params": self.options[i].sample(rng)}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        return self.options[int(params["choice"])].apply(x, params["params"])
