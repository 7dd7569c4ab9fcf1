"""Real-ESRGAN's second-order degradation pipeline with HYPIR's training settings.

Real-ESRGAN (Wang et al. 2021, arXiv 2107.10833, Sec. 3) synthesises realistic low-quality
images by running the classical chain "blur -> resize -> noise -> JPEG" twice, plus a final
sinc filter for ringing and overshoot. HYPIR trains with this pipeline (its
``configs/sd2_train.yaml``; see METHODS.md §3.5) and resizes the result back to the GT size so
that LQ and GT have the same size. All values below are HYPIR's / Real-ESRGAN's defaults.

``gt`` -> (USM sharpening, the training target) ->

1. blur (mixed kernels, sinc p 0.1) -> resize (up/down/keep p [0.2, 0.7, 0.1], scale
   [0.15, 1.5], area/bilinear/bicubic) -> Gaussian (p 0.5, sigma [1, 30]) or Poisson (scale
   [0.05, 3]) noise, grey p 0.4 -> JPEG q [30, 95];
2. blur (p 0.8, sigma [0.2, 1.5], sinc p 0.1) -> resize to ``scale2 * (H, W) / 4`` (p [0.3, 0.4,
   0.3], scale2 [0.3, 1.2]) -> Gaussian (sigma [1, 25]) or Poisson ([0.05, 2.5]) noise, grey p
   0.4 -> in random order (50/50) {resize to ``(H/4, W/4)`` + sinc (p 0.8)} and JPEG [30, 95];
3. round to 8 bits, then bicubic resize back to ``(H, W)`` (HYPIR ``resize_back``) and round to
   8 bits again (the LQ is an 8-bit image, as if saved).

Differences from Real-ESRGAN's reference training code, all deliberate:

* JPEG is real libjpeg (pillow) at an integer quality instead of the DiffJPEG approximation
  with a float quality: it produces the true artefacts.
* One parameter set per :meth:`RealESRGANDegradation.apply` call. The reference draws kernels
  per sample and the resize/noise type per batch; training code wanting per-sample diversity
  calls ``apply`` per sample (B = 1) and stacks, which also allows different stage-1 sizes.
  Per-pixel noise still differs between the images of a batch.
* Every op is one of the shared implementations (:mod:`irc.operators.noise`, :mod:`~irc.operators.jpeg`,
  :mod:`~irc.operators.filtering`, :mod:`~irc.operators.resampling`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import Tensor

from irc.operators.blur_kernels import (
    REALESRGAN_KERNEL_PROBS,
    REALESRGAN_KERNEL_SIZES,
    REALESRGAN_KERNEL_TYPES,
    KernelSampler,
    kernel_from_params,
    opencv_gaussian_sigma,
)
from irc.operators.degradation import Degradation, OneOf
from irc.operators.filtering import filter2d, filter2d_separable
from irc.operators.jpeg import JPEG, jpeg_compress
from irc.operators.noise import GaussianNoise, PoissonNoise
from irc.operators.pixels import _check_image, quantize_8bit
from irc.operators.resampling import Resize, resize
from irc.operators.seeding import _uniform

__all__ = ["RealESRGANConfig", "RealESRGANDegradation", "usm_sharpen"]


def usm_sharpen(
    x: Tensor, weight: float = 0.5, radius: int = 50, threshold: float = 10, sigma: float | None = None
) -> Tensor:
    """Unsharp-mask sharpening with a soft threshold mask (Real-ESRGAN's ``USMSharp``).

    ``blur = G * x`` with a ``(2 radius + 1)``-tap Gaussian ``G`` (reflect padding) whose sigma
    defaults to OpenCV's rule for that size, ``0.3 (radius - 1) + 0.8`` (15.5 for radius 50:
    Real-ESRGAN passes sigma 0 to ``cv2.getGaussianKernel``). ``residual = x - blur``;
    ``mask = |residual| * 255 > threshold`` per pixel and channel (so flat areas and noise below
    the threshold are not sharpened); ``soft = G * mask`` feathers the mask;
    ``sharp = clip(x + weight * residual, 0, 1)``; output ``soft * sharp + (1 - soft) * x``.

    Args:
        x: ``(B, C, H, W)`` in [0, 1].
        weight: residual gain (0.5).
        radius: kernel radius in pixels (50).
        threshold: residual threshold on the 0-255 scale (10).
        sigma: Gaussian sigma; ``None`` = OpenCV's default for the size.

    Returns:
        Sharpened image in [0, 1], same shape, dtype and device.
    """
    _check_image(x)
    ksize = 2 * int(radius) + 1
    s = opencv_gaussian_sigma(ksize) if sigma is None else float(sigma)
    ax = np.arange(ksize, dtype=np.float64) - ksize // 2
    k1 = np.exp(-0.5 * (ax / s) ** 2)
    k1 /= k1.sum()  # the 2-D Gaussian is the outer product k1 ⊗ k1
    blur = filter2d_separable(x, k1)
    residual = x - blur
    mask = (residual.abs() * 255.0 > float(threshold)).to(x.dtype)
    soft = filter2d_separable(mask, k1)
    sharp = (x + float(weight) * residual).clamp(0.0, 1.0)
    return soft * sharp + (1.0 - soft) * x


@dataclass(frozen=True)
class RealESRGANConfig:
    """Every knob of the pipeline; defaults are HYPIR's ``sd2_train.yaml`` (= Real-ESRGAN x4plus).

    Stage-2 fields end in ``2``. Ranges are ``(lo, hi)``; probabilities of kernel types follow
    ``kernel_types``; ``resize_probs`` are up / down / keep.
    """

    use_sharpener: bool = True
    usm_weight: float = 0.5
    usm_radius: int = 50
    usm_threshold: float = 10.0
    kernel_sizes: tuple[int, ...] = REALESRGAN_KERNEL_SIZES
    kernel_types: tuple[str, ...] = REALESRGAN_KERNEL_TYPES
    kernel_probs: tuple[float, ...] = REALESRGAN_KERNEL_PROBS
    sinc_prob: float = 0.1
    sigma_range: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    resize_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[int, int] = (30, 95)
    second_blur_prob: float = 0.8
    sinc_prob2: float = 0.1
    sigma_range2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_probs2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[int, int] = (30, 95)
    final_sinc_prob: float = 0.8
    final_sinc_omega: tuple[float, float] = (math.pi / 3, math.pi)
    scale: int = 4
    resize_back: str | None = "bicubic"


class _SincSampler:
    """Final sinc filter of Real-ESRGAN: size from ``sizes``, ``omega_c`` uniform in ``omega``."""

    def __init__(self, sizes: tuple[int, ...], omega: tuple[float, float]) -> None:
        self.sizes, self.omega = tuple(sizes), tuple(omega)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        size = int(self.sizes[int(rng.integers(len(self.sizes)))])
        return {"type": "sinc", "size": size, "omega_c": _uniform(rng, self.omega)}


class RealESRGANDegradation(Degradation):
    """Real-ESRGAN second-order degradation, HYPIR settings (see the module docstring).

    ``sample(rng)`` returns every random choice of both stages as plain values (kernels as
    specs, noise as seeds); ``apply(gt, params)`` is deterministic and returns the LQ image at
    ``gt``'s size (``resize_back``; with ``resize_back=None`` at ``(H // scale, W // scale)``) on
    the 8-bit grid. The training target is :meth:`target` (the USM-sharpened GT when
    ``use_sharpener``); :meth:`pair` returns both, sharpening once.

    Args:
        config: a :class:`RealESRGANConfig` (default: HYPIR's settings).
    """

    name = "realesrgan"

    def __init__(self, config: RealESRGANConfig | None = None) -> None:
        c = RealESRGANConfig() if config is None else config
        self.config = c
        self.kernel1 = KernelSampler(
            c.kernel_sizes, c.kernel_types, c.kernel_probs, c.sigma_range,
            betag_range=c.betag_range, betap_range=c.betap_range, sinc_prob=c.sinc_prob,
        )  # fmt: skip
        self.kernel2 = KernelSampler(
            c.kernel_sizes, c.kernel_types, c.kernel_probs, c.sigma_range2,
            betag_range=c.betag_range2, betap_range=c.betap_range2, sinc_prob=c.sinc_prob2,
        )  # fmt: skip
        self.final_sinc = _SincSampler(c.kernel_sizes, c.final_sinc_omega)
        # Real-ESRGAN does not clamp after blur or resize: only the noise step clips.
        self.resize1 = Resize(c.resize_modes, c.resize_range, c.resize_probs, clamp=False)
        self.resize2 = Resize(c.resize_modes, c.resize_range2, c.resize_probs2, clamp=False)
        p1, p2 = c.gaussian_noise_prob, c.gaussian_noise_prob2
        self.noise1 = OneOf(
            [GaussianNoise(c.noise_range, c.gray_noise_prob), PoissonNoise(c.poisson_scale_range, c.gray_noise_prob)],
            probs=(p1, 1.0 - p1),
        )
        self.noise2 = OneOf(
            [
                GaussianNoise(c.noise_range2, c.gray_noise_prob2),
                PoissonNoise(c.poisson_scale_range2, c.gray_noise_prob2),
            ],
            probs=(p2, 1.0 - p2),
        )
        self.jpeg1 = JPEG(c.jpeg_range)
        self.jpeg2 = JPEG(c.jpeg_range2)

    # ---------------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """All random choices of one degradation, JSON-able.

        Layout::

            {"usm": {"weight", "radius", "threshold"} | None,
             "stage1": {"kernel": spec, "resize": {"updown", "scale", "mode"},
                        "noise": {"choice", "name", "params"}, "jpeg": {"quality"}},
             "stage2": {"blur": bool, "kernel": spec, "resize": {...}, "noise": {...}, "jpeg": {...}},
             "final": {"order": "resize_first" | "jpeg_first", "mode": str, "sinc": spec | None},
             "scale": int, "resize_back": str | None}
        """
        c = self.config
        usm = (
            {"weight": float(c.usm_weight), "radius": int(c.usm_radius), "threshold": float(c.usm_threshold)}
            if c.use_sharpener
            else None
        )
        stage1 = {
            "kernel": self.kernel1.sample(rng),
            "resize": self.resize1.sample(rng),
            "noise": self.noise1.sample(rng),
            "jpeg": self.jpeg1.sample(rng),
        }
        stage2 = {
            "blur": bool(rng.uniform() < c.second_blur_prob),
            "kernel": self.kernel2.sample(rng),
            "resize": self.resize2.sample(rng),
            "noise": self.noise2.sample(rng),
            "jpeg": self.jpeg2.sample(rng),
        }
        order = "resize_first" if rng.uniform() < 0.5 else "jpeg_first"
        mode = c.resize_modes[int(rng.integers(len(c.resize_modes)))]
        sinc = self.final_sinc.sample(rng)
        use_sinc = bool(rng.uniform() < c.final_sinc_prob)
        return {
            "usm": usm,
            "stage1": stage1,
            "stage2": stage2,
            "final": {"order": order, "mode": mode, "sinc": sinc if use_sinc else None},
            "scale": int(c.scale),
            "resize_back": c.resize_back,
        }

    # ---------------------------------------------------------------------------------------
    def target(self, gt: Tensor, params: Mapping[str, Any] | None = None) -> Tensor:
        """The training target: ``usm_sharpen(gt)`` if sharpening is on (params' ``"usm"``, else config)."""
        usm = (
            params["usm"]
            if params is not None
            else (
                {
                    "weight": self.config.usm_weight,
                    "radius": self.config.usm_radius,
                    "threshold": self.config.usm_threshold,
                }
                if self.config.use_sharpener
                else None
            )
        )
        return gt if usm is None else usm_sharpen(gt, usm["weight"], usm["radius"], usm["threshold"])

    def apply(self, gt: Tensor, params: Mapping[str, Any]) -> Tensor:
        """Degrade ``gt`` (``(B, C, H, W)`` in [0, 1], C = 1 or 3) to its LQ image.

        Returns:
            LQ of shape ``(B, C, H, W)`` (or ``(B, C, H // s, W // s)`` without ``resize_back``),
            values on the 8-bit grid ``k / 255``, ``gt``'s dtype and device.
        """
        return self.degrade(self.target(gt, params), params)

    def pair(self, gt: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """``(target, lq, params)`` for one training pair, sharpening ``gt`` once."""
        params = self.sample(rng)
        tgt = self.target(gt, params)
        return tgt, self.degrade(tgt, params), params

    def degrade(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        """The degradation chain on an already sharpened ``x`` (what :meth:`apply` runs after USM)."""
        _check_image(x, (1, 3))
        h, w = x.shape[-2:]
        s = int(params["scale"])
        p1, p2, pf = params["stage1"], params["stage2"], params["final"]

        out = filter2d(x, kernel_from_params(p1["kernel"]))
        out = self.resize1.apply(out, p1["resize"])
        out = self.noise1.apply(out, p1["noise"])
        out = jpeg_compress(out.clamp(0.0, 1.0), p1["jpeg"]["quality"])

        if p2["blur"]:
            out = filter2d(out, kernel_from_params(p2["kernel"]))
        r2 = float(p2["resize"]["scale"])
        size2 = (max(1, int(h / s * r2)), max(1, int(w / s * r2)))
        out = resize(out, mode=p2["resize"]["mode"], size=size2)
        out = self.noise2.apply(out, p2["noise"])

        small = (max(1, h // s), max(1, w // s))
        if pf["order"] == "resize_first":
            out = resize(out, mode=pf["mode"], size=small)
            if pf["sinc"] is not None:
                out = filter2d(out, kernel_from_params(pf["sinc"]))
            out = jpeg_compress(out.clamp(0.0, 1.0), p2["jpeg"]["quality"])
        elif pf["order"] == "jpeg_first":
            out = jpeg_compress(out.clamp(0.0, 1.0), p2["jpeg"]["quality"])
            out = resize(out, mode=pf["mode"], size=small)
            if pf["sinc"] is not None:
                out = filter2d(out, kernel_from_params(pf["sinc"]))
        else:
            raise ValueError(f"unknown final order {pf['order']!r}")
        out = quantize_8bit(out.clamp(0.0, 1.0))

        if params.get("resize_back"):
            out = resize(out, mode=params["resize_back"], size=(h, w))
            out = quantize_8bit(out.clamp(0.0, 1.0))
        return out.to(x.dtype)

    def __repr__(self) -> str:
        changed = {k: v for k, v in asdict(self.config).items() if v != getattr(RealESRGANConfig, k)}
        return f"RealESRGANDegradation({changed or 'HYPIR defaults'})"
