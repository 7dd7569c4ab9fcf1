"""Classical baselines: honest reference rows for every evaluation.

* ``identity`` returns its input. Evaluated on a degraded dataset it reports the PSNR/SSIM of the
  degraded input itself, the row every learned method must beat.
* ``bicubic`` is MATLAB-compatible bicubic ``imresize`` (antialiased when shrinking), the standard
  SR baseline. It resizes in floating point and rounds once, when the result is written (or not
  at all inside ``irc eval``), while ``irc eval`` builds its low-resolution inputs the MATLAB
  way, rounding to uint8 after each pass. On Set5 x4 (Y channel, border 4) this scores
  28.4305 dB; rounding the upscaled RGB to uint8 before computing Y, as MATLAB scripts do, gives
  28.4176 dB; the published figure is 28.42 dB.
"""

from __future__ import annotations

import math
import dataclasses
from typing import Any

from torch import Tensor

from irc.errors import UsageError
from irc.methods.base import Method
from irc.methods.options import OPTIONS
from irc.operators.resize import imresize
from irc.tiling import TileSpec


class Identity(Method):
    """Returns the input unchanged."""

    name = "identity"
    summary = "returns the input unchanged (the degraded-input reference row)"
    tasks = ("restore",)
    tile_spec = TileSpec(support="supported", overlap=0, bytes_per_pixel=64.0)
    input_kind = "any"
    needs_weights = False
    trainable = False
    clamp_output = False  # the unclipped noisy input is the reference row of denoising tables

    def forward(self, x: Tensor, **knobs: Any) -> Tensor:
        return x


class Bicubic(Method):
    """MATLAB-compatible bicubic resize by ``scale`` (the classical SR baseline)."""

    name = "bicubic"
    summary = "MATLAB-compatible bicubic resize in float, rounded once on writing (the classical super-resolution baseline)"
    tasks = ("sr",)
    default_task = "sr"
    knobs = OPTIONS["bicubic"]
    # The cubic kernel reaches 2 input pixels when enlarging, 2/scale when shrinking (it is
    # stretched for antialiasing): 8 px of overlap is exact for scale >= 1/2; stage_spec widens it.
    tile_spec = TileSpec(support="supported", overlap=8, bytes_per_pixel=256.0)
    input_kind = "any"
    needs_weights = False
    trainable = False

    def output_scale(self, knobs: dict[str, Any]) -> float:
        return float(knobs["scale"])

    @classmethod
    def check_knobs(cls, knobs):
        values = super().check_knobs(knobs)
        scale = values["scale"]
        if not (math.isfinite(scale) and 1 / 64 <= scale <= 64):
            raise UsageError(f"--scale must be between 1/64 and 64, got {scale}")
        return values

    def stage_spec(self, knobs: dict[str, Any]) -> TileSpec:
        scale = float(knobs["scale"])
        # The antialiased kernel reaches 2/scale input pixels when shrinking; the blend is exact
        # when the reach is at most a quarter of the overlap (see irc.tiling).
        overlap = self.tile_spec.overlap if scale >= 1 else max(self.tile_spec.overlap, 4 * (math.ceil(2 / scale) + 1) + 4)
        return dataclasses.replace(self.tile_spec, scale=scale, overlap=overlap)

    def forward(self, x: Tensor, **knobs: Any) -> Tensor:
        return imresize(x, scale=float(knobs["scale"])).clamp(0, 1)
