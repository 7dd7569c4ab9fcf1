"""Additive noise: Gaussian and Poisson noise functions and their :class:`Degradation` samplers.

Noise models follow Real-ESRGAN (Wang et al. 2021, arXiv 2107.10833, Sec. 3.3); the per-pixel
randomness comes from the params' ``"seed"`` (:mod:`irc.operators.seeding`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from irc.operators.degradation import Degradation
from irc.operators.pixels import _check_image, _work, quantize_8bit, rgb_to_gray
from irc.operators.seeding import _generator, _seed, _uniform

__all__ = ["GaussianNoise", "PoissonNoise", "add_gaussian_noise", "add_poisson_noise"]


def add_gaussian_noise(x: Tensor, sigma: float, *, gray: bool = False, seed: int, clip: bool = True) -> Tensor:
    """Add white Gaussian noise ``N(0, (sigma/255)²)`` (Real-ESRGAN Sec. 3.3).

    Args:
        x: ``(B, C, H, W)`` image in [0, 1].
        sigma: standard deviation on the 0-255 scale.
        gray: one noise field shared by all channels ("grey noise") instead of independent ones.
        seed: per-pixel randomness (see :mod:`irc.operators.seeding`).
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
        seed: per-pixel randomness (see :mod:`irc.operators.seeding`).
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
