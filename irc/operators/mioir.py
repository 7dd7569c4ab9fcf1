"""MiOIR's task degradations beyond the classical ones: haze, rain, low light and same-size SR.

The task set follows MiOIR (Kong et al. 2024, arXiv 2401.03379); the seven-task mixture that
combines these with blur, noise and JPEG is :mod:`irc.operators.mixtures`. Also the fields haze
and rain draw: the depth proxy :func:`haze_depth` and the streak layer :func:`rain_streaks`.
Choices that the paper leaves open are documented on each class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import signal
from torch import Tensor

from irc.operators.blur_kernels import gaussian_kernel, motion_kernel, opencv_gaussian_sigma
from irc.operators.degradation import Degradation
from irc.operators.pixels import _check_image, _work, quantize_8bit
from irc.operators.resize import imresize
from irc.operators.seeding import _generator, _randint, _seed, _uniform

__all__ = [
    "Haze",
    "LowLight",
    "Rain",
    "SRDegradation",
    "haze_depth",
    "rain_streak_kernel",
    "rain_streaks",
]


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
        seed, index: per-image randomness (same rule as the noise, :func:`~irc.operators.seeding.item_seed`).
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
