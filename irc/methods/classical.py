"""Classical baselines: honest reference rows for every evaluation.

* ``identity`` returns its input. Evaluated on a degraded dataset it reports the PSNR/SSIM of the
  degraded input itself, the row every learned method must beat.
* ``bicubic`` is MATLAB-compatible bicubic ``imresize`` (antialiased when shrinking), the standard
  SR baseline (e.g. 28.42 dB on Set5 x4, Y channel, border 4).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from irc.errors import UsageError
from irc.methods.base import Knob, Method
from irc.operators.resize import imresize
from irc.tiling import TileSpec


class Identity(Method):
    """Returns the input unchanged."""

    name = "identity"
    summary = "returns the input unchanged (the degraded-input reference row)"
    tasks = ("restore",)
    tile_spec = TileSpec(support="supported", min_overlap=0)
    needs_weights = False
    trainable = False
    clamp_output = False  # the unclipped noisy input is the reference row of denoising tables
    bytes_per_pixel = 64.0

    def forward(self, x: Tensor, **knobs: Any) -> Tensor:
        return x


class Bicubic(Method):
    """MATLAB-compatible bicubic resize by ``scale`` (the classical SR baseline)."""

    name = "bicubic"
    summary = "MATLAB-compatible bicubic resize (the classical super-resolution baseline)"
    tasks = ("sr",)
    knobs = (Knob("scale", float, 4.0, "resize factor (output / input size), from 1/64 to 64, e.g. 2, 3, 4 or 0.5"),)
    # The cubic kernel reaches 2 input pixels when enlarging, 2/scale when shrinking (it is
    # stretched for antialiasing): 8 px of overlap is exact for scale >= 1/2; restore() widens it.
    tile_spec = TileSpec(support="supported", min_overlap=8)
    needs_weights = False
    trainable = False
    bytes_per_pixel = 256.0

    def output_scale(self, knobs: dict[str, Any]) -> float:
        return float(knobs["scale"])

    @classmethod
    def check_knobs(cls, knobs):
        values = super().check_knobs(knobs)
        scale = values["scale"]
        if not (math.isfinite(scale) and 1 / 64 <= scale <= 64):
            raise UsageError(f"--scale must be between 1/64 and 64, got {scale}")
        return values

    def restore(self, x: Tensor, *, tile: int | str = 0, tile_overlap: int | None = None, **knobs: Any) -> Tensor:
        scale = float(self.check_knobs(knobs)["scale"])
        if scale < 1:
            # The antialiased kernel reaches 2/scale input pixels; the blend is exact when the reach
            # is at most a quarter of the overlap (see irc.tiling), so widen the overlap to that.
            tile_overlap = max(tile_overlap or 0, self.tile_spec.min_overlap, 4 * (math.ceil(2 / scale) + 1) + 4)
        return super().restore(x, tile=tile, tile_overlap=tile_overlap, **knobs)

    def forward(self, x: Tensor, **knobs: Any) -> Tensor:
        return imresize(x, scale=float(knobs["scale"])).clamp(0, 1)
