"""Glue between decoded images (:mod:`irc.io`) and a method's declared input.

Every method declares what it takes (:attr:`irc.methods.base.Method.input_kind`): ``rgb``,
``luma``, ``cube`` or ``any``. The conversions live here, once, so methods never convert colour
themselves: a grey image given to an RGB method is replicated and averaged back; a colour image
given to a luma method is restored on BT.601 Y while its chroma is kept (resized bicubically when
the method changes the size), the usual protocol for compressive sensing on colour images.
Alpha is re-attached (resized when the method changes the size) by
:meth:`irc.io.Image.with_pixels`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from irc.io import Image
from irc.methods.base import Method
from irc.operators.colour import rgb_to_ycbcr, ycbcr_to_rgb
from irc.runner import StageRunner

__all__ = ["restore_image", "restore_tensor", "rgb_to_ycbcr", "ycbcr_to_rgb"]


def restore_tensor(method: Method, x: Tensor, *, runner: StageRunner | None = None, tile: int | str = 0, tile_overlap: int | None = None, seed: int = 0, **knobs: Any) -> Tensor:
    """Run ``method`` on ``x`` whatever its channel count.

    Args:
        x: ``(B, C, H, W)`` in [0, 1] (C = 1 or 3; a cube for ``cube`` methods).
        runner: the stage runner (default: one built from ``tile``, ``tile_overlap``, ``seed``).

    Returns:
        ``(B, C, H', W')`` in [0, 1], the same channel count as ``x``.
    """
    runner = runner or StageRunner(method.device, tile, tile_overlap, seed)
    channels, kind = x.shape[1], method.kind

    def run(t: Tensor) -> Tensor:
        return method.restore(t, runner=runner, **knobs)

    if kind in ("any", "cube") or (kind == "rgb" and channels == 3) or (kind == "luma" and channels == 1):
        return run(x)
    if kind == "rgb" and channels == 1:
        return run(x.expand(-1, 3, -1, -1).contiguous()).mean(dim=1, keepdim=True)
    if kind == "luma" and channels == 3:
        from irc.operators.resize import imresize

        ycc = rgb_to_ycbcr(x)
        y = run(ycc[:, :1].contiguous())
        chroma = ycc[:, 1:]
        if chroma.shape[-2:] != y.shape[-2:]:
            chroma = imresize(chroma, size=tuple(y.shape[-2:]))
        return ycbcr_to_rgb(torch.cat([y, chroma.to(y)], dim=1)).clamp_(0, 1)
    from irc.errors import UsageError

    raise UsageError(f"{method.name} takes {kind} input; cannot feed it a {channels}-channel image")


def restore_image(method: Method, image: Image, *, runner: StageRunner | None = None, **knobs: Any) -> Image:
    """Restore a decoded :class:`~irc.io.Image`, keeping alpha, ICC profile and bit depth."""
    x = torch.from_numpy(np.ascontiguousarray(image.pixels, dtype=np.float32))[None]
    y = restore_tensor(method, x, runner=runner, **knobs)
    return image.with_pixels(y[0].cpu().numpy())
