"""Synthetic cast shadows: irc's shadow generator for training and testing shadow removal.

No shadow set is in the data pack (ISTD and FaceShadow are users' own), so shadow removal
trains on shadows cast onto clean photos. The generator is our choice, built on how shadows
look in ISTD-style pairs: a shadowed region is the same scene lit by the sky alone, so it is
darker by a factor and bluer (skylight is bluer than sunlight), with a hard or soft edge (the
penumbra grows with the occluder's distance).

    y = x * (1 - m * (1 - a_c))

``m`` in [0, 1] is the shadow mask and ``a_c`` the per-channel light left in the shadow:
``a = darkness * (1 - tint, 1 - tint / 2, 1)`` for R, G, B (a warm light removed: blue keeps
most). The mask is a smooth random field (a ``grid x grid`` normal array upsampled bicubically,
objects-sized blobs) thresholded to cover ``coverage`` of the image, blurred by a Gaussian of
``softness`` times the shorter side (0: a hard edge).

=============  ==========  ================================================================
parameter      range       meaning
=============  ==========  ================================================================
darkness       0.25-0.7    light left in the shadow (the green channel's)
tint           0-0.35      how much warmer the removed light is (red loses most)
coverage       0.1-0.5     the shadowed share of the image
softness       0-0.03      penumbra width (Gaussian sigma) over the shorter side
grid           2-5         blob scale: fewer cells, bigger shadows
=============  ==========  ================================================================

Params: ``{"darkness", "tint", "coverage", "softness", "grid", "seed"}`` (plain numbers, so a
sample is replayed exactly).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from irc.operators.degradation import Degradation
from irc.operators.pixels import _check_image, _work
from irc.operators.seeding import _generator, _randint, _seed, _uniform

__all__ = ["Shadow"]


class Shadow(Degradation):
    """Cast shadows on a clean image (module docstring); ``mask`` gives the ``m`` it used.

    Args:
        darkness_range, tint_range, coverage_range, softness_range, grid_range: the ranges of
            the module table.
    """

    name = "shadow"

    def __init__(
        self,
        darkness_range: tuple[float, float] = (0.25, 0.7),
        tint_range: tuple[float, float] = (0.0, 0.35),
        coverage_range: tuple[float, float] = (0.1, 0.5),
        softness_range: tuple[float, float] = (0.0, 0.03),
        grid_range: tuple[int, int] = (2, 5),
    ) -> None:
        self.darkness_range = tuple(float(v) for v in darkness_range)
        self.tint_range = tuple(float(v) for v in tint_range)
        self.coverage_range = tuple(float(v) for v in coverage_range)
        self.softness_range = tuple(float(v) for v in softness_range)
        self.grid_range = tuple(int(v) for v in grid_range)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {
            "darkness": _uniform(rng, self.darkness_range),
            "tint": _uniform(rng, self.tint_range),
            "coverage": _uniform(rng, self.coverage_range),
            "softness": _uniform(rng, self.softness_range),
            "grid": _randint(rng, self.grid_range),
            "seed": _seed(rng),
        }

    def mask(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        """The shadow mask ``m``: ``(B, 1, H, W)`` float64 in [0, 1] on ``x``'s device (1 = shadow)."""
        b, _, h, w = x.shape
        grid = int(params["grid"])
        masks = []
        for i in range(b):
            field = torch.randn((1, 1, grid + 1, grid + 1), generator=_generator(int(params["seed"]), i), dtype=torch.float64)
            field = F.interpolate(field, size=(h, w), mode="bicubic", align_corners=True)[0, 0]
            level = torch.quantile(field.flatten()[:: max(1, field.numel() // 65536)], 1.0 - float(params["coverage"]))
            masks.append((field > level).to(torch.float64))
        m = torch.stack(masks)[:, None]
        sigma = float(params["softness"]) * min(h, w)
        if sigma >= 0.3:
            radius = max(1, math.ceil(3 * sigma))
            taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
            k = torch.exp(-0.5 * (taps / sigma) ** 2)
            k = k / k.sum()
            m = F.pad(m, (radius, radius, radius, radius), mode="replicate")
            m = F.conv2d(m, k.view(1, 1, 1, -1))
            m = F.conv2d(m, k.view(1, 1, -1, 1))
        return m.to(x.device)

    def light(self, params: Mapping[str, Any], channels: int) -> Tensor:
        """``a_c``, the light left in the shadow per channel: ``(C,)`` float64 (grey: the green one)."""
        d, tint = float(params["darkness"]), float(params["tint"])
        rgb = torch.tensor([d * (1 - tint), d * (1 - tint / 2), d], dtype=torch.float64).clamp(0, 1)
        return rgb if channels == 3 else rgb[1:2].expand(channels)

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        _check_image(x)
        w = _work(x)
        m = self.mask(w, params).to(w.dtype)
        a = self.light(params, w.shape[1]).to(w.device, w.dtype)[None, :, None, None]
        return (w * (1 - m * (1 - a))).to(x.dtype)
