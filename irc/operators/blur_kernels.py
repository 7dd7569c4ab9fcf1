"""Blur kernels given explicit parameters, and samplers that draw those parameters.

Every kernel function takes plain numbers and returns a normalised ``(k, k)`` float64 numpy
array (sum 1). A kernel is described everywhere else in the code base by a small JSON-able
*spec* dict (``{"type": "aniso", "size": 13, "sigma_x": 1.2, ...}``) that
:func:`kernel_from_params` turns into the array, so a degradation's parameters never carry
arrays and can be logged and replayed exactly.

Kernel families (Real-ESRGAN, Wang et al. 2021, arXiv 2107.10833, Sec. 3.2):

* Gaussian, ``k(c) ∝ exp(-1/2 cᵀ Σ⁻¹ c)`` with ``Σ = R(θ) diag(σx², σy²) R(θ)ᵀ``
  (isotropic: ``σx = σy``, ``θ = 0``);
* generalised Gaussian, ``k(c) ∝ exp(-1/2 (cᵀ Σ⁻¹ c)^β)`` (paper Eq. 2);
* plateau, ``k(c) ∝ 1 / (1 + (cᵀ Σ⁻¹ c)^β)`` (paper Eq. 3);
* sinc (ideal circular low-pass), ``k(r) ∝ ωc / (2π r) · J1(ωc r)`` with the limit
  ``ωc² / (4π)`` at ``r = 0`` (paper Eq. 4);
* motion, a line segment of a given length and angle through the centre (not in Real-ESRGAN;
  used for motion blur and for the rain streaks in :mod:`irc.operators.mioir`).

``c`` runs over the integer pixel offsets from the kernel centre, so every kernel of odd size is
centred and point-symmetric (correlation equals convolution).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import special

__all__ = [
    "KERNEL_TYPES",
    "REALESRGAN_KERNEL_PROBS",
    "REALESRGAN_KERNEL_SIZES",
    "REALESRGAN_KERNEL_TYPES",
    "KernelSampler",
    "MotionKernelSampler",
    "disk_kernel",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "identity_kernel",
    "kernel_from_params",
    "motion_kernel",
    "opencv_gaussian_sigma",
    "plateau_kernel",
    "sinc_kernel",
]

#: Odd kernel sizes 7, 9, ..., 21 (Real-ESRGAN ``kernel_range``).
REALESRGAN_KERNEL_SIZES: tuple[int, ...] = tuple(range(7, 22, 2))
#: Real-ESRGAN's mixed kernel types and their probabilities (also HYPIR's ``sd2_train.yaml``).
REALESRGAN_KERNEL_TYPES: tuple[str, ...] = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
REALESRGAN_KERNEL_PROBS: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)

#: Every ``"type"`` that :func:`kernel_from_params` understands.
KERNEL_TYPES: tuple[str, ...] = REALESRGAN_KERNEL_TYPES + ("gaussian", "sinc", "motion", "disk", "identity", "explicit")


def _check_size(size: int) -> int:
    size = int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer, got {size}")
    return size


def _normalise(k: np.ndarray) -> np.ndarray:
    s = k.sum()
    if not np.isfinite(s) or s == 0:
        raise ValueError("kernel sums to zero or is not finite; check its parameters")
    return np.ascontiguousarray(k / s, dtype=np.float64)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer offsets from the centre: ``(yy, xx)``, each ``(size, size)``, rows then columns."""
    half = (size - 1) // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    return yy, xx


def _mahalanobis2(size: int, sigma_x: float, sigma_y: float | None, theta: float) -> np.ndarray:
    """``cᵀ Σ⁻¹ c`` on the kernel grid, with ``Σ = R(θ) diag(σx², σy²) R(θ)ᵀ``.

    ``c = (x, y)`` with ``x`` along columns and ``y`` along rows; ``θ`` rotates the ``σx`` axis
    from the column axis (radians).
    """
    sigma_y = sigma_x if sigma_y is None else sigma_y
    if not (sigma_x > 0 and sigma_y > 0):
        raise ValueError(f"sigmas must be positive, got sigma_x={sigma_x}, sigma_y={sigma_y}")
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    inv = np.linalg.inv(cov)
    yy, xx = _grid(size)
    return inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> np.ndarray:
    """Isotropic or anisotropic 2-D Gaussian kernel.

    Args:
        size: odd kernel size ``k``.
        sigma_x: standard deviation along the (rotated) first axis, pixels, > 0.
        sigma_y: standard deviation along the second axis; ``None`` means ``sigma_x`` (isotropic).
        theta: rotation of the first axis from the column axis, radians.

    Returns:
        ``(k, k)`` float64 array summing to 1.
    """
    q = _mahalanobis2(_check_size(size), sigma_x, sigma_y, theta)
    return _normalise(np.exp(-0.5 * q))


def generalized_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, beta: float = 1.0
) -> np.ndarray:
    """Generalised Gaussian ``exp(-1/2 (cᵀΣ⁻¹c)^β)`` (Real-ESRGAN Eq. 2); ``β = 1`` is Gaussian.

    ``β < 1`` gives heavier tails and a sharper peak, ``β > 1`` a flatter top. Same arguments as
    :func:`gaussian_kernel` plus the shape ``beta > 0``. Returns a ``(k, k)`` float64 array summing to 1.
    """
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    q = _mahalanobis2(_check_size(size), sigma_x, sigma_y, theta)
    return _normalise(np.exp(-0.5 * np.power(q, beta)))


def plateau_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, beta: float = 1.0
) -> np.ndarray:
    """Plateau kernel ``1 / (1 + (cᵀΣ⁻¹c)^β)`` (Real-ESRGAN Eq. 3).

    Same arguments as :func:`generalized_gaussian_kernel`. Returns a ``(k, k)`` float64 array
    summing to 1.
    """
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    q = _mahalanobis2(_check_size(size), sigma_x, sigma_y, theta)
    return _normalise(1.0 / (np.power(q, beta) + 1.0))


def sinc_kernel(size: int, omega_c: float) -> np.ndarray:
    """Ideal circular low-pass (2-D sinc / Airy) kernel with cutoff ``omega_c`` (Real-ESRGAN Eq. 4).

    ``k(r) = ωc J1(ωc r) / (2π r)``, ``k(0) = ωc² / (4π)``, truncated to ``size`` and normalised.
    It has negative side lobes, so blurred images can leave [0, 1] (ringing, which is the point:
    Real-ESRGAN uses it to synthesise ringing and overshoot artefacts).

    Args:
        size: odd kernel size.
        omega_c: cutoff frequency in radians per pixel, in ``(0, π]``.

    Returns:
        ``(k, k)`` float64 array summing to 1.
    """
    size = _check_size(size)
    if not 0 < omega_c <= math.pi + 1e-12:
        raise ValueError(f"omega_c must be in (0, pi], got {omega_c}")
    yy, xx = _grid(size)
    r = np.hypot(xx, yy)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = omega_c * special.j1(omega_c * r) / (2.0 * math.pi * r)
    k[r == 0] = omega_c**2 / (4.0 * math.pi)
    return _normalise(k)


def motion_kernel(length: float, angle: float, size: int | None = None, samples_per_pixel: int = 8) -> np.ndarray:
    """Linear motion-blur kernel: a centred line segment of ``length`` pixels at ``angle``.

    The segment from ``-(length-1)/2`` to ``+(length-1)/2`` along the direction is sampled at
    ``samples_per_pixel`` points per pixel of length and splatted bilinearly, which gives a
    sub-pixel accurate, anti-aliased, point-symmetric line for any (non-integer) length and angle.

    Args:
        length: segment length in pixels, >= 1 (1 gives the identity).
        angle: direction in degrees, counter-clockwise from the horizontal (image y points down,
            so 90 is vertical and 45 runs to the upper right).
        size: odd kernel size; ``None`` picks the smallest odd size holding the segment.
        samples_per_pixel: splat density.

    Returns:
        ``(k, k)`` float64 array summing to 1.
    """
    if not length >= 1:
        raise ValueError(f"motion length must be >= 1, got {length}")
    half_len = (float(length) - 1.0) / 2.0
    a = math.radians(angle)
    dx, dy = math.cos(a), -math.sin(a)
    extent = max(abs(half_len * dx), abs(half_len * dy))
    if size is None:
        size = 2 * math.ceil(extent - 1e-9) + 1
    size = _check_size(size)
    c = (size - 1) // 2
    n = max(2, math.ceil(samples_per_pixel * float(length)))
    t = np.linspace(-half_len, half_len, n)
    px, py = c + t * dx, c + t * dy
    k = np.zeros((size, size), dtype=np.float64)
    x0, y0 = np.floor(px), np.floor(py)
    fx, fy = px - x0, py - y0
    for oy, ox, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yi, xi = (y0 + oy).astype(np.int64), (x0 + ox).astype(np.int64)
        ok = (yi >= 0) & (yi < size) & (xi >= 0) & (xi < size) & (w > 0)
        np.add.at(k, (yi[ok], xi[ok]), w[ok])
    return _normalise(k)


def disk_kernel(radius: float, samples: int = 8) -> np.ndarray:
    """Defocus blur: a uniform disk of ``radius`` pixels (the geometric-optics circle of confusion).

    Each pixel's weight is the fraction of its area inside the disk, estimated on a
    ``samples x samples`` sub-pixel grid, so small and non-integer radii give smooth, anti-aliased
    kernels (radius 0.5 is close to the identity).

    Args:
        radius: disk radius in pixels, > 0.
        samples: sub-pixel samples per axis.

    Returns:
        ``(k, k)`` float64 array summing to 1, ``k = 2 ceil(radius) + 1``.
    """
    if not radius > 0:
        raise ValueError(f"disk radius must be > 0, got {radius}")
    half = math.ceil(radius)
    size = 2 * half + 1
    offsets = (np.arange(samples) + 0.5) / samples - 0.5
    sub = (np.arange(size)[:, None] - half + offsets[None, :]).reshape(-1)
    inside = (sub[:, None] ** 2 + sub[None, :] ** 2) <= radius**2
    k = inside.reshape(size, samples, size, samples).mean(axis=(1, 3))
    return _normalise(k.astype(np.float64))


def identity_kernel(size: int = 1) -> np.ndarray:
    """Discrete delta (Real-ESRGAN's "pulse" kernel) of odd ``size``: blurring with it is a no-op."""
    size = _check_size(size)
    k = np.zeros((size, size), dtype=np.float64)
    k[size // 2, size // 2] = 1.0
    return k


def opencv_gaussian_sigma(ksize: int) -> float:
    """The sigma OpenCV's ``getGaussianKernel(ksize, sigma<=0)`` uses: ``0.3((ksize-1)/2 - 1) + 0.8``.

    Real-ESRGAN's USM sharpening and many synthetic-rain scripts pass ``sigma = 0`` and thereby
    get this value (documented in OpenCV's ``getGaussianKernel``).
    """
    return 0.3 * ((int(ksize) - 1) * 0.5 - 1.0) + 0.8


def kernel_from_params(spec: Mapping[str, Any]) -> np.ndarray:
    """Build a kernel from its JSON-able spec.

    Recognised specs (``sigma_y`` defaults to ``sigma_x``, ``theta`` to 0, ``beta`` to 1)::

        {"type": "iso" | "aniso" | "gaussian", "size", "sigma_x", "sigma_y", "theta"}
        {"type": "generalized_iso" | "generalized_aniso", "size", "sigma_x", "sigma_y", "theta", "beta"}
        {"type": "plateau_iso" | "plateau_aniso", "size", "sigma_x", "sigma_y", "theta", "beta"}
        {"type": "sinc", "size", "omega_c"}
        {"type": "motion", "length", "angle", "size" (optional)}
        {"type": "disk", "radius"}
        {"type": "identity", "size" (optional, default 1)}
        {"type": "explicit", "values": [[...], ...], "normalise": true}

    Returns:
        ``(k, k)`` float64 numpy array (sums to 1 except an explicit kernel with
        ``"normalise": false``).
    """
    t = spec.get("type")
    if t in ("iso", "aniso", "gaussian"):
        return gaussian_kernel(spec["size"], spec["sigma_x"], spec.get("sigma_y"), spec.get("theta", 0.0))
    if t in ("generalized_iso", "generalized_aniso"):
        return generalized_gaussian_kernel(
            spec["size"], spec["sigma_x"], spec.get("sigma_y"), spec.get("theta", 0.0), spec.get("beta", 1.0)
        )
    if t in ("plateau_iso", "plateau_aniso"):
        return plateau_kernel(
            spec["size"], spec["sigma_x"], spec.get("sigma_y"), spec.get("theta", 0.0), spec.get("beta", 1.0)
        )
    if t == "sinc":
        return sinc_kernel(spec["size"], spec["omega_c"])
    if t == "motion":
        return motion_kernel(spec["length"], spec["angle"], spec.get("size"))
    if t == "disk":
        return disk_kernel(spec["radius"])
    if t == "identity":
        return identity_kernel(spec.get("size", 1))
    if t == "explicit":
        k = np.asarray(spec["values"], dtype=np.float64)
        if k.ndim != 2:
            raise ValueError(f"explicit kernel must be 2-D, got shape {k.shape}")
        return _normalise(k) if spec.get("normalise", True) else np.ascontiguousarray(k)
    raise ValueError(f"unknown kernel type {t!r}; expected one of {KERNEL_TYPES}")


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


def _split_beta(rng: np.random.Generator, lo: float, hi: float) -> float:
    # Real-ESRGAN's reference sampler draws beta from [lo, 1] or [1, hi] with probability 1/2 each
    # (so sub- and super-Gaussian shapes are equally frequent even though [0.5, 4] is lopsided).
    # With lo = 1 (plateau, [1, 2]) the first half collapses to beta = 1, as in the reference.
    if lo <= 1.0 <= hi:
        return _uniform(rng, lo, 1.0) if rng.uniform() < 0.5 else _uniform(rng, 1.0, hi)
    return _uniform(rng, lo, hi)


class KernelSampler:
    """Draws Real-ESRGAN style kernel specs (type, size and shape parameters).

    Defaults are Real-ESRGAN's / HYPIR's stage-1 settings.

    Args:
        kernel_sizes: odd sizes drawn uniformly (default 7, 9, ..., 21).
        kernel_types: subset of :data:`REALESRGAN_KERNEL_TYPES`.
        kernel_probs: their probabilities (normalised), default ``[0.45, 0.25, 0.12, 0.03, 0.12, 0.03]``.
        sigma_range: ``(lo, hi)`` for ``sigma_x`` (and ``sigma_y`` of anisotropic kernels), pixels.
        rotation_range: ``(lo, hi)`` for ``theta`` of anisotropic kernels, radians (default ±π).
        betag_range: generalised-Gaussian shape range (default ``[0.5, 4]``).
        betap_range: plateau shape range (default ``[1, 2]``).
        sinc_prob: probability of a sinc kernel instead of the mixture (default 0.1).
        sinc_omega_small: cutoff range for sizes below 13 (default ``[π/3, π]``).
        sinc_omega_large: cutoff range for sizes 13 and above (default ``[π/5, π]``); larger
            kernels can hold the longer ringing of a lower cutoff (Real-ESRGAN Sec. 3.3).
    """

    def __init__(
        self,
        kernel_sizes: Sequence[int] = REALESRGAN_KERNEL_SIZES,
        kernel_types: Sequence[str] = REALESRGAN_KERNEL_TYPES,
        kernel_probs: Sequence[float] = REALESRGAN_KERNEL_PROBS,
        sigma_range: tuple[float, float] = (0.2, 3.0),
        rotation_range: tuple[float, float] = (-math.pi, math.pi),
        betag_range: tuple[float, float] = (0.5, 4.0),
        betap_range: tuple[float, float] = (1.0, 2.0),
        sinc_prob: float = 0.1,
        sinc_omega_small: tuple[float, float] = (math.pi / 3, math.pi),
        sinc_omega_large: tuple[float, float] = (math.pi / 5, math.pi),
    ) -> None:
        self.kernel_sizes = tuple(_check_size(s) for s in kernel_sizes)
        if not self.kernel_sizes:
            raise ValueError("kernel_sizes is empty")
        self.kernel_types = tuple(kernel_types)
        unknown = [t for t in self.kernel_types if t not in REALESRGAN_KERNEL_TYPES]
        if unknown:
            raise ValueError(f"unknown kernel types {unknown}; expected a subset of {REALESRGAN_KERNEL_TYPES}")
        p = np.asarray(kernel_probs, dtype=np.float64)
        if p.shape != (len(self.kernel_types),) or np.any(p < 0) or p.sum() <= 0:
            raise ValueError("kernel_probs must be non-negative, one per kernel type, with a positive sum")
        self.kernel_probs = tuple(float(v) for v in p / p.sum())
        self.sigma_range = tuple(float(v) for v in sigma_range)
        self.rotation_range = tuple(float(v) for v in rotation_range)
        self.betag_range = tuple(float(v) for v in betag_range)
        self.betap_range = tuple(float(v) for v in betap_range)
        self.sinc_prob = float(sinc_prob)
        self.sinc_omega_small = tuple(float(v) for v in sinc_omega_small)
        self.sinc_omega_large = tuple(float(v) for v in sinc_omega_large)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw one kernel spec (see :func:`kernel_from_params`)."""
        size = int(self.kernel_sizes[int(rng.integers(len(self.kernel_sizes)))])
        if self.sinc_prob > 0 and rng.uniform() < self.sinc_prob:
            lo, hi = self.sinc_omega_small if size < 13 else self.sinc_omega_large
            return {"type": "sinc", "size": size, "omega_c": _uniform(rng, lo, hi)}
        ktype = self.kernel_types[int(rng.choice(len(self.kernel_types), p=self.kernel_probs))]
        isotropic = ktype.split("_")[-1] == "iso"
        sx = _uniform(rng, *self.sigma_range)
        if isotropic:
            sy, theta = sx, 0.0
        else:
            sy = _uniform(rng, *self.sigma_range)
            theta = _uniform(rng, *self.rotation_range)
        spec: dict[str, Any] = {"type": ktype, "size": size, "sigma_x": sx, "sigma_y": sy, "theta": theta}
        if ktype.startswith("generalized"):
            spec["beta"] = _split_beta(rng, *self.betag_range)
        elif ktype.startswith("plateau"):
            spec["beta"] = _split_beta(rng, *self.betap_range)
        return spec

    def __repr__(self) -> str:
        return (
            f"KernelSampler(sizes={self.kernel_sizes}, types={self.kernel_types}, sigma={self.sigma_range}, "
            f"sinc_prob={self.sinc_prob})"
        )


class MotionKernelSampler:
    """Draws motion-blur kernel specs: ``length`` uniform in ``length_range`` (pixels), ``angle``
    uniform in ``angle_range`` (degrees, counter-clockwise from horizontal)."""

    def __init__(
        self, length_range: tuple[float, float] = (5.0, 25.0), angle_range: tuple[float, float] = (0.0, 180.0)
    ):
        if not 1 <= length_range[0] <= length_range[1]:
            raise ValueError(f"length_range must satisfy 1 <= lo <= hi, got {length_range}")
        self.length_range = tuple(float(v) for v in length_range)
        self.angle_range = tuple(float(v) for v in angle_range)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {
            "type": "motion",
            "length": _uniform(rng, *self.length_range),
            "angle": _uniform(rng, *self.angle_range),
        }

    def __repr__(self) -> str:
        return f"MotionKernelSampler(length={self.length_range}, angle={self.angle_range})"
