"""Resizing by mode name (torch interpolation or MATLAB bicubic), and the random :class:`Resize`.

:func:`resize` dispatches to ``torch.nn.functional.interpolate`` or to MATLAB-bicubic
:func:`irc.operators.resize.imresize` (which is implemented there); :class:`Resize` is
Real-ESRGAN's random up/down/keep resize.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from irc.operators.degradation import Degradation
from irc.operators.pixels import _check_image, _work
from irc.operators.resize import imresize
from irc.operators.seeding import _probs, _uniform

__all__ = ["RESIZE_MODES", "Resize", "resize"]

RESIZE_MODES = ("area", "bilinear", "bicubic", "nearest", "matlab-bicubic")


def resize(
    x: Tensor,
    *,
    mode: str,
    scale: float | None = None,
    size: Sequence[int] | None = None,
    antialias: bool = False,
) -> Tensor:
    """Resize with ``torch.nn.functional.interpolate`` or MATLAB-bicubic :func:`imresize`.

    Args:
        x: ``(B, C, H, W)`` float tensor.
        mode: ``"area" | "bilinear" | "bicubic" | "nearest"`` (torch, ``align_corners=False``) or
            ``"matlab-bicubic"`` (:func:`irc.operators.resize.imresize`, antialiased).
        scale: factor; torch modes give ``floor(scale * H)`` (at least 1) and, as Real-ESRGAN's
            ``F.interpolate(scale_factor=...)``, map coordinates with ``scale`` itself;
            ``"matlab-bicubic"`` gives MATLAB's ``ceil(scale * H)``.
        size: ``(out_h, out_w)`` instead of ``scale``.
        antialias: torch's antialiasing for bilinear/bicubic downscaling (Real-ESRGAN: off).

    Returns:
        ``(B, C, H', W')`` in ``x``'s dtype. Not clamped: bicubic can overshoot [0, 1].
    """
    _check_image(x)
    if (scale is None) == (size is None):
        raise ValueError("resize: give exactly one of scale= or size=")
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize: unknown mode {mode!r}; expected one of {RESIZE_MODES}")
    w = _work(x)
    h_in, w_in = w.shape[-2:]
    if mode == "matlab-bicubic":
        out = imresize(w, scale=float(scale)) if size is None else imresize(w, size=(int(size[0]), int(size[1])))
        return out.to(x.dtype)
    if size is not None:
        oh, ow = int(size[0]), int(size[1])
        if oh < 1 or ow < 1:
            raise ValueError(f"resize: output size must be positive, got {tuple(size)}")
        kwargs: dict[str, Any] = {"size": (oh, ow)}
    else:
        s = float(scale)
        if not (s > 0 and math.isfinite(s)):
            raise ValueError(f"resize: scale must be positive and finite, got {scale}")
        oh, ow = math.floor(h_in * s), math.floor(w_in * s)
        if oh >= 1 and ow >= 1:
            kwargs = {"scale_factor": s}
        else:  # too small for scale_factor (torch would raise): clamp the size to one pixel
            oh, ow = max(1, oh), max(1, ow)
            kwargs = {"size": (oh, ow)}
    if (oh, ow) == (h_in, w_in) and (size is not None or float(scale) == 1.0):
        return x.clone()
    if mode in ("bilinear", "bicubic"):
        out = F.interpolate(w, mode=mode, align_corners=False, antialias=antialias, **kwargs)
    else:
        out = F.interpolate(w, mode=mode, **kwargs)
    return out.to(x.dtype)


class Resize(Degradation):
    """Random up/down/keep resize (Real-ESRGAN Sec. 3.2 "resize").

    Params: ``{"updown": "up" | "down" | "keep", "scale": float, "mode": str}`` (output
    ``floor(scale * H)``; ``"matlab-bicubic"``: ``ceil``), or ``{"mode": str, "size": [h, w]}``
    for a fixed output size (used by the Real-ESRGAN stage 2).

    Args:
        modes: drawn uniformly unless ``mode_probs`` (default area / bilinear / bicubic).
        scale_range: ``(lo, hi)``; "up" draws ``U(1, hi)``, "down" ``U(lo, 1)``, "keep" 1.
        updown_probs: probabilities of up / down / keep (default ``[0.2, 0.7, 0.1]``).
        mode_probs: optional probabilities for ``modes``.
        antialias: torch antialiasing when shrinking (default False, as Real-ESRGAN).
        clamp: clamp to [0, 1] (bicubic overshoots; default True).
    """

    name = "resize"

    def __init__(
        self,
        modes: Sequence[str] = ("area", "bilinear", "bicubic"),
        scale_range: tuple[float, float] = (0.15, 1.5),
        updown_probs: Sequence[float] = (0.2, 0.7, 0.1),
        mode_probs: Sequence[float] | None = None,
        antialias: bool = False,
        clamp: bool = True,
    ) -> None:
        bad = [m for m in modes if m not in RESIZE_MODES]
        if bad or not modes:
            raise ValueError(f"unknown resize modes {bad}; expected some of {RESIZE_MODES}")
        self.modes = tuple(modes)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        if not 0 < self.scale_range[0] <= 1 <= self.scale_range[1]:
            raise ValueError(f"scale_range must satisfy 0 < lo <= 1 <= hi, got {scale_range}")
        self.updown_probs = _probs(updown_probs, 3, "updown_probs")
        self.mode_probs = None if mode_probs is None else _probs(mode_probs, len(self.modes), "mode_probs")
        self.antialias = bool(antialias)
        self.clamp = bool(clamp)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        updown = ("up", "down", "keep")[int(rng.choice(3, p=self.updown_probs))]
        if updown == "up":
            scale = _uniform(rng, (1.0, self.scale_range[1]))
        elif updown == "down":
            scale = _uniform(rng, (self.scale_range[0], 1.0))
        else:
            scale = 1.0
        mode = self.modes[int(rng.choice(len(self.modes), p=self.mode_probs))]
        return {"updown": updown, "scale": scale, "mode": mode}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        if "size" in params:
            y = resize(x, mode=params["mode"], size=params["size"], antialias=self.antialias)
        else:
            y = resize(x, mode=params["mode"], scale=float(params["scale"]), antialias=self.antialias)
        return y.clamp(0.0, 1.0) if self.clamp else y
