"""Glue between decoded images (:mod:`irc.io`) and a method's tensor interface.

Handles what every method would otherwise repeat: numpy -> ``(1, C, H, W)`` tensor, colour
conversions when the method's channel count differs from the image's, and re-attaching alpha
(resized when the method changes the size, by :meth:`irc.io.Image.with_pixels`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from irc.io import Image
from irc.methods.base import Method

# Full-range BT.601 (JFIF) YCbCr: invertible without clipping, unlike the 16-235 "studio" form that
# metrics use. Rows: Y, Cb, Cr from R, G, B in [0, 1]; Cb and Cr are centred on 0.5.
_RGB_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR)


def rgb_to_ycbcr(x: Tensor) -> Tensor:
    """``(B, 3, H, W)`` RGB in [0, 1] -> full-range YCbCr with chroma centred on 0.5."""
    out = torch.einsum("ij,bjhw->bihw", _RGB_TO_YCBCR.to(x), x)
    return torch.cat([out[:, :1], out[:, 1:] + 0.5], dim=1)


def ycbcr_to_rgb(x: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_ycbcr`."""
    centred = torch.cat([x[:, :1], x[:, 1:] - 0.5], dim=1)
    return torch.einsum("ij,bjhw->bihw", _YCBCR_TO_RGB.to(x), centred)


def restore_tensor(method: Method, x: Tensor, *, tile: int | str = 0, tile_overlap: int | None = None, **knobs: Any) -> Tensor:
    """Run ``method`` on ``x`` whatever its channel count.

    Args:
        x: ``(B, C, H, W)`` in [0, 1] with C = 1 or 3.

    Returns:
        ``(B, C, H', W')`` in [0, 1], same channel count as ``x``.

    A grey image given to a colour-only method is replicated to RGB and averaged back. A colour
    image given to a grey-only method (e.g. compressive sensing, which works on luminance) is
    restored on Y while chroma is resized bicubically, the usual protocol for such methods.
    """
    channels = x.shape[1]
    options = dict(tile=tile, tile_overlap=tile_overlap, **knobs)
    if channels in method.input_channels:
        return method.restore(x, **options)
    if channels == 1 and 3 in method.input_channels:
        return method.restore(x.expand(-1, 3, -1, -1).contiguous(), **options).mean(dim=1, keepdim=True)
    if channels == 3 and 1 in method.input_channels:
        from irc.operators.resize import imresize

        ycc = rgb_to_ycbcr(x)
        y = method.restore(ycc[:, :1].contiguous(), **options)
        chroma = ycc[:, 1:]
        if chroma.shape[-2:] != y.shape[-2:]:
            chroma = imresize(chroma, size=tuple(y.shape[-2:]))
        return ycbcr_to_rgb(torch.cat([y, chroma], dim=1)).clamp_(0, 1)
    raise ValueError(f"cannot feed a {channels}-channel image to {method.name}")


def restore_image(method: Method, image: Image, *, tile: int | str = 0, tile_overlap: int | None = None, **knobs: Any) -> Image:
    """Restore a decoded :class:`~irc.io.Image`, keeping alpha, ICC profile and bit depth."""
    x = torch.from_numpy(np.ascontiguousarray(image.pixels, dtype=np.float32))[None]
    y = restore_tensor(method, x, tile=tile, tile_overlap=tile_overlap, **knobs)
    return image.with_pixels(y[0].cpu().numpy())
