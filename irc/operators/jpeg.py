"""JPEG compression: a real libjpeg round trip (:func:`jpeg_compress`) and the :class:`JPEG` degradation."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from irc.operators.degradation import Degradation
from irc.operators.pixels import _check_image, _work
from irc.operators.seeding import _randint

__all__ = ["JPEG", "jpeg_compress"]


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
