"""Model-agnostic tiled inference with blended overlaps.

Every restoration method in ``irc`` runs through :func:`tiled` when an image is too large to
process in one piece, and methods with several internal stages at different resolutions (a VAE
encoder at scale 1/8, a UNet at scale 1, a decoder at scale 8) call the same function once per
stage with a different ``scale``. The module is a leaf: it depends on ``torch`` only.

Conventions
-----------
* Images are ``(B, C, H, W)`` floating-point tensors. The value range is irrelevant here
  (``[0, 1]`` or ``[-1, 1]`` both work): tiling only moves and averages values.
* ``tile`` and ``overlap`` are always given in **input pixels** of the function being tiled.
  Output positions are input positions times ``scale`` (output size / input size).
* The input is padded bottom/right (reflect, see :func:`pad_to_multiple`) so that its height and
  width are multiples of ``multiple_of``; the output is cropped back to
  ``round(H * scale), round(W * scale)``.
* ``tile <= 0``, or a tile at least as large as the padded image, means "no tiling": the function
  is called once on the whole (padded) image.
* Only the tiles live on the compute ``device``; the full input and the output accumulator stay
  on the input's device, so a large image can sit in host memory while tiles run on a GPU.

Why overlaps are blended
------------------------
A network sees less context near a tile edge than it would in the whole image (its receptive
field is clipped and replaced by padding), so outputs near tile edges are slightly wrong. Cutting
tiles edge-to-edge turns those errors into visible straight seams. :func:`tiled` instead runs
overlapping windows and blends them with weights that are high where a window has full context
and fall off towards its edges, so each output pixel is dominated by the window that saw it best
and any residual disagreement is spread smoothly over the overlap instead of forming a step.
The default ``"linear"`` window keeps the outer quarter of each overlap at a negligible weight and
cross-fades over the middle half, which makes the result *equal* to untiled inference whenever
the receptive-field radius is at most a quarter of the overlap (overlap >= about twice the
receptive field). The ``"gaussian"`` window (as in CCSR / HYPIR) weights each whole tile with a
separable Gaussian of variance 0.01 relative to the tile size, exactly as HYPIR's code does; it is
smoother but never exact. Linear windows touching the image border are not ramped on that side,
so border pixels keep full weight.
All weights are strictly positive; the accumulated weighted sum is divided by the accumulated
weight, so the weights need not sum to one.

Multi-scale alignment
---------------------
With ``scale < 1`` (e.g. an encoder at 1/8) the output position of a tile start, ``start *
scale``, must be an integer, so tile starts and tile sizes are snapped to multiples of the
scale's denominator (8 for 1/8, 2 for 1.5 = 3/2) and the input is padded to a multiple of it as
well. Scales that are not a ratio of small integers fall back to rounded output positions, and
the output shape of every call is checked (:class:`ValueError` when it does not match).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "TileSupport",
    "TileSpec",
    "pad_to_multiple",
    "tile_starts",
    "blend_window",
    "tiled",
    "auto_tile_size",
    "run_with_oom_fallback",
]

logger = logging.getLogger("irc.tiling")

TileSupport = Literal["supported", "discouraged", "unsupported"]
BlendKind = Literal["linear", "gaussian"]

_SUPPORT_VALUES = ("supported", "discouraged", "unsupported")
#: Largest denominator accepted when interpreting ``scale`` as an exact ratio p/q.
_MAX_SCALE_DENOMINATOR = 64
#: Variance of the Gaussian blend window, relative to the tile size (CCSR / HYPIR convention).
_GAUSSIAN_VAR = 0.01
#: Weight given to the pixels a linear window does not trust (outer quarter of an overlap).
_WEIGHT_FLOOR = 1e-8


@dataclass(frozen=True)
class TileSpec:
    """What one stage of a method declares about tiling (see :mod:`irc.runner`).

    Attributes:
        support: ``"supported"``: tiles agree with the whole image once the overlap covers the
            receptive field. ``"discouraged"``: tiling works but changes the result (global
            context, e.g. attention over the whole image); callers warn. ``"unsupported"``: the
            stage always runs on the whole input (CASSI: the coded mask is as large as the cube).
        scale: Output size / input size (4 for x4 super-resolution, 0.125 for an encoder).
        multiple_of: Input height and width are padded to a multiple of this.
        overlap: Default overlap between tiles, in input pixels (``--tile-overlap`` overrides
            it); the runner uses at most half the tile.
        blend: ``"linear"`` (exact where the overlap covers the receptive field) or
            ``"gaussian"`` (HYPIR's weighting).
        bytes_per_pixel: Peak working memory per input pixel at fp32, for ``--tile auto``.
        pad: how the input is padded to ``multiple_of``: ``"reflect"`` (natural images) or
            ``"constant"`` (zeros: block compressive sensing measures zero-padded images, the
            ISTA-Net+ protocol).
    """

    support: TileSupport = "supported"
    scale: float = 1.0
    multiple_of: int = 1
    overlap: int = 16
    blend: BlendKind = "linear"
    bytes_per_pixel: float = 4096.0
    pad: Literal["reflect", "constant"] = "reflect"

    def __post_init__(self) -> None:
        if self.support not in _SUPPORT_VALUES:
            raise ValueError(
                f"TileSpec.support must be one of {', '.join(_SUPPORT_VALUES)}; "
                f"got {self.support!r}"
            )
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"TileSpec.scale must be a positive finite number; got {self.scale!r}")
        if self.multiple_of < 1:
            raise ValueError(f"TileSpec.multiple_of must be >= 1; got {self.multiple_of}")
        if self.overlap < 0:
            raise ValueError(f"TileSpec.overlap must be >= 0; got {self.overlap}")
        if self.blend not in ("linear", "gaussian"):
            raise ValueError(f"TileSpec.blend must be 'linear' or 'gaussian'; got {self.blend!r}")
        if not self.bytes_per_pixel > 0:
            raise ValueError(f"TileSpec.bytes_per_pixel must be > 0; got {self.bytes_per_pixel}")
        if self.pad not in ("reflect", "constant"):
            raise ValueError(f"TileSpec.pad must be 'reflect' or 'constant'; got {self.pad!r}")

    def describe(self) -> dict[str, object]:
        """JSON-able form for ``irc methods --json``."""
        return {"support": self.support, "scale": self.scale, "multiple_of": self.multiple_of, "overlap": self.overlap, "blend": self.blend, "pad": self.pad}


# --------------------------------------------------------------------------------------------
# Padding and window placement
# --------------------------------------------------------------------------------------------


def pad_to_multiple(
    x: Tensor, multiple: int, mode: str = "reflect"
) -> tuple[Tensor, tuple[int, int]]:
    """Pads the last two dimensions (H, W) at the bottom/right up to a multiple of ``multiple``.

    Args:
        x: Tensor whose last two dimensions are ``(H, W)``; usually ``(B, C, H, W)``.
        multiple: Target multiple; ``<= 1`` means no padding.
        mode: Any :func:`torch.nn.functional.pad` mode (``"reflect"``, ``"replicate"``,
            ``"constant"``, ``"circular"``). ``"reflect"`` needs the padding to be smaller than
            the size it reflects; when it is not, ``"replicate"`` is used instead.

    Returns:
        ``(padded, (pad_h, pad_w))``. ``padded`` is ``x`` itself when no padding is needed. Crop
        back with ``padded[..., :H, :W]`` (or ``round(H * scale)`` after a scaling function).
    """
    if x.dim() < 2:
        raise ValueError(
            f"pad_to_multiple needs a tensor with (H, W) as last dims; got {tuple(x.shape)}"
        )
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if multiple <= 1:
        return x, (0, 0)
    pad_h = (-h) % multiple
    pad_w = (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (0, 0)
    if mode == "reflect" and (pad_h >= h or pad_w >= w):
        mode = "replicate"
    # F.pad's reflect/replicate modes want a batch dimension in front of (C, H, W).
    lead = x.shape[:-2]
    y = x.reshape(1, -1, h, w) if x.dim() != 4 else x
    y = F.pad(y, (0, pad_w, 0, pad_h), mode=mode)
    if x.dim() != 4:
        y = y.reshape(*lead, h + pad_h, w + pad_w)
    return y, (pad_h, pad_w)


def tile_starts(length: int, tile: int, overlap: int, *, align: int = 1) -> list[int]:
    """Start offsets of overlapping windows of size ``tile`` covering ``[0, length)``.

    Windows advance by ``stride = tile - overlap`` (rounded down to a multiple of ``align``, at
    least ``align``); the last window is snapped to the border so that it ends exactly at
    ``length``. A single window ``[0]`` is returned when ``length <= tile``.

    Args:
        length: Size of the axis, in pixels (> 0).
        tile: Window size (> 0).
        overlap: Requested overlap between consecutive windows (``0 <= overlap < tile``). The
            actual overlap is at least this (larger for the snapped last window or when the stride
            is rounded to ``align``), unless ``tile - overlap < align``.
        align: Every start is a multiple of this. ``length`` and ``tile`` must then be multiples
            of ``align`` too, otherwise the snapped last start could not be aligned.

    Returns:
        Strictly increasing start offsets; ``starts[0] == 0`` and ``starts[-1] + tile == length``
        (when ``length > tile``).

    Raises:
        ValueError: On non-positive sizes, a negative overlap, ``overlap >= tile``, or sizes that
            are not multiples of ``align``.
    """
    if length <= 0:
        raise ValueError(f"tile_starts: length must be positive; got {length}")
    if tile <= 0:
        raise ValueError(f"tile_starts: tile must be positive; got {tile}")
    if align < 1:
        raise ValueError(f"tile_starts: align must be >= 1; got {align}")
    if length <= tile:
        return [0]
    if overlap < 0:
        raise ValueError(f"tile_starts: overlap must be >= 0; got {overlap}")
    if overlap >= tile:
        raise ValueError(f"tile_starts: overlap ({overlap}) must be smaller than the tile ({tile})")
    if length % align or tile % align:
        raise ValueError(
            f"tile_starts: length ({length}) and tile ({tile}) must be multiples of align ({align})"
        )
    stride = max(align, (tile - overlap) // align * align)
    last = length - tile
    starts = list(range(0, last, stride))
    starts.append(last)
    return starts


# --------------------------------------------------------------------------------------------
# Blend weights
# --------------------------------------------------------------------------------------------


def _linear_profile(n: int, overlap: int, ramp_start: bool, ramp_end: bool, floor: float) -> Tensor:
    """1-D linear window of length ``n``: ``floor`` on the outer quarter of each ramped overlap,
    a linear cross-fade over the middle half, 1 elsewhere (float64)."""
    w = torch.ones(n, dtype=torch.float64)
    o = int(overlap)
    if o <= 0 or not (ramp_start or ramp_end):
        return w
    margin = o // 4
    width = o - 2 * margin  # >= 1 for o >= 1
    i = torch.arange(n, dtype=torch.float64)
    # Rising ramp measured from the start: ~0 for i < margin, then (k + 0.5) / width, then 1.
    # Two windows overlapping by exactly `o` get complementary weights that sum to 1.
    rise = ((i - margin + 0.5) / width).clamp(max=1.0)
    rise = torch.where(i < margin, torch.zeros_like(rise), rise)
    if ramp_start:
        w = torch.minimum(w, rise)
    if ramp_end:
        w = torch.minimum(w, rise.flip(0))
    return w.clamp(min=floor)


def _gaussian_profile(n: int, mid: float, floor: float) -> Tensor:
    """1-D Gaussian over the whole length with variance 0.01 relative to ``n``, centred on ``mid``
    (float64). Border tiles are weighted like the others: it is the weighting of CCSR / HYPIR."""
    i = torch.arange(n, dtype=torch.float64)
    w = torch.exp(-(((i - mid) / n) ** 2) / (2.0 * _GAUSSIAN_VAR))
    return w.clamp(min=floor)


def blend_window(
    h: int,
    w: int,
    overlap_h: int,
    overlap_w: int,
    kind: BlendKind = "linear",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    sides: tuple[bool, bool, bool, bool] = (True, True, True, True),
) -> Tensor:
    """Blend weights for one ``h x w`` output tile.

    ``"linear"``: weight 1 in the tile interior; inside each ramped overlap band (``overlap_h``
    rows at the top/bottom, ``overlap_w`` columns at the left/right) the outer quarter gets a
    negligible weight (the tile lacks context there) and the middle half ramps linearly to 1, so
    two neighbours overlapping by exactly the nominal overlap cross-fade with weights summing to 1.
    ``"gaussian"``: a separable Gaussian over the whole tile with variance 0.01 relative to the
    tile size, centred as HYPIR's code centres it (rows on ``h / 2``, columns on ``(w - 1) / 2``);
    overlaps and sides are ignored.

    Args:
        h: Tile height.
        w: Tile width.
        overlap_h: Nominal vertical overlap (rows), in the same pixels as ``h``.
        overlap_w: Nominal horizontal overlap (columns).
        kind: ``"linear"`` or ``"gaussian"``.
        device: Device of the returned tensor (default CPU).
        dtype: Floating dtype of the returned tensor (default ``torch.float32``).
        sides: Which sides ramp, as ``(top, bottom, left, right)``. Pass ``False`` for a side that
            lies on the image border so border pixels keep full weight.

    Returns:
        ``(1, 1, h, w)`` weights in ``(0, 1]``, strictly positive everywhere.
    """
    if h <= 0 or w <= 0:
        raise ValueError(f"blend_window: size must be positive; got {h}x{w}")
    if overlap_h < 0 or overlap_w < 0:
        raise ValueError(f"blend_window: overlaps must be >= 0; got {overlap_h}, {overlap_w}")
    dtype = dtype or torch.float32
    if not dtype.is_floating_point:
        raise ValueError(f"blend_window: dtype must be floating point; got {dtype}")
    # The linear window's untrusted margin gets a small floor; the Gaussian is positive as it is
    # (its corners are ~1e-11 of its peak, and a floor there would change the blend near them).
    floor = max(_WEIGHT_FLOOR if kind == "linear" else 0.0, float(torch.finfo(dtype).tiny))
    top, bottom, left, right = (bool(s) for s in sides)
    if kind == "linear":
        wy = _linear_profile(h, overlap_h, top, bottom, floor)
        wx = _linear_profile(w, overlap_w, left, right, floor)
    elif kind == "gaussian":
        # HYPIR's make_tiled_fn centres the rows' Gaussian on h / 2 and the columns' on
        # (w - 1) / 2 (HYPIR/utils/common.py at b61d107); we keep that asymmetry, so that tiled
        # results match the official code's
        wy = _gaussian_profile(h, h / 2.0, floor)
        wx = _gaussian_profile(w, (w - 1) / 2.0, floor)
    else:
        raise ValueError(f"blend_window: kind must be 'linear' or 'gaussian'; got {kind!r}")
    weights = (wy[:, None] * wx[None, :]).clamp(min=floor)
    return weights.to(device=device, dtype=dtype).reshape(1, 1, h, w)


# --------------------------------------------------------------------------------------------
# Tiled application
# --------------------------------------------------------------------------------------------


def _exact_scale(scale: float) -> Fraction | None:
    """``scale`` as a ratio p/q with a small q, or ``None`` when it is not one."""
    frac = Fraction(scale).limit_denominator(_MAX_SCALE_DENOMINATOR)
    if abs(float(frac) - scale) <= 1e-9 * max(1.0, scale):
        return frac
    return None


def _scaled(n: int, scale: float, frac: Fraction | None) -> int:
    """``n * scale`` as an integer (exact for ratio scales on aligned ``n``, rounded otherwise)."""
    if frac is not None:
        return round(n * frac)
    return int(round(n * scale))


def _check_tile_output(
    out: object, inp: Tensor, expect_hw: tuple[int, int], scale: float
) -> Tensor:
    """Validates one output of ``fn`` against the expected batch and spatial size."""
    if not isinstance(out, Tensor) or out.dim() != 4:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"tiled: fn must return a (B, C, H, W) tensor; got {shape}")
    if out.shape[0] != inp.shape[0] or tuple(out.shape[-2:]) != expect_hw:
        raise ValueError(
            f"tiled: fn returned shape {tuple(out.shape)} for an input tile of shape "
            f"{tuple(inp.shape)}; expected (B={inp.shape[0]}, C, {expect_hw[0]}, {expect_hw[1]}) "
            f"for scale={scale} (is the declared scale / multiple_of right?)"
        )
    if not out.is_floating_point():
        raise ValueError(f"tiled: fn must return a floating-point tensor; got {out.dtype}")
    return out


def tiled(
    fn: Callable[..., Tensor],
    x: Tensor,
    *,
    tile: int,
    overlap: int = 32,
    scale: float = 1.0,
    multiple_of: int = 1,
    blend: BlendKind = "linear",
    device: torch.device | str | None = None,
    out_channels: int | None = None,
    aux: Sequence[tuple[Tensor, Literal["in", "out"]]] = (),
    tiles_per_call: int = 1,
    pad: str = "reflect",
) -> Tensor:
    """Applies ``fn`` to ``x`` in overlapping tiles and blends the results.

    The input is padded (bottom/right, reflect) to a multiple of ``multiple_of`` and of the
    scale's denominator, cut into windows of ``tile`` input pixels (rounded down to that
    alignment) overlapping by at least ``overlap``, and every window is moved to ``device``,
    passed through ``fn``, moved back to ``x.device`` and accumulated with blend weights (see
    :func:`blend_window`). Peak device memory is that of ``tiles_per_call`` tiles; gradients
    follow the caller's context (wrap the call in ``torch.no_grad()`` for inference).

    Args:
        fn: Function mapping a ``(B, C, h, w)`` tile on ``device`` (and the matching windows of
            the ``aux`` tensors) to a ``(B, C', h*scale, w*scale)`` tile. ``C'`` may differ from
            ``C``; it is taken from the first tile. With ``tiles_per_call = n`` it receives up to
            ``n`` windows stacked along the batch dimension (``n * B`` rows).
        x: ``(B, C, H, W)`` floating-point input, on any device.
        tile: Tile edge in input pixels. ``<= 0``, or at least the padded height and width,
            calls ``fn`` once on the whole padded image.
        overlap: Overlap between neighbouring tiles in input pixels. Clamped to half a tile
            (with a warning) when it is not smaller than the tile.
        scale: Output size / input size of ``fn`` (``4`` for x4 SR, ``0.125`` for an encoder).
            For ``scale < 1`` tile starts are snapped to multiples of ``1 / scale`` (in general,
            of the denominator q of scale = p/q) so output positions are integers.
        multiple_of: ``fn`` needs input sizes that are multiples of this.
        blend: ``"linear"`` (default; exact when the receptive-field radius is at most a
            quarter of the overlap) or ``"gaussian"`` (CCSR / HYPIR style).
        device: Where ``fn`` runs; ``None`` means ``x.device``.
        out_channels: Expected output channels; checked against the first tile when given.
        aux: Extra whole-image tensors cut into the same windows and passed to ``fn`` after the
            tile: ``(t, "in")`` has the input's size ``(B, *, H, W)``, ``(t, "out")`` the
            output's ``(B, *, round(H * scale), round(W * scale))``. This is how noise drawn once
            for the whole image reaches each tile, so that a stochastic stage gives the same
            result tiled and untiled up to the blending.
        tiles_per_call: Windows stacked into one call of ``fn`` (fewer, larger calls keep an
            accelerator busy; HYPIR batches its UNet and VAE tiles this way).
        pad: padding mode of the input (``"reflect"``, ``"replicate"`` or ``"constant"`` zeros).

    Returns:
        ``(B, C', round(H * scale), round(W * scale))`` on ``x.device``, in ``fn``'s output dtype.

    Raises:
        ValueError: On invalid arguments, or when ``fn`` returns a tile of an unexpected shape.
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"tiled: x must be a (B, C, H, W) tensor; got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"tiled: x must be floating point; got {x.dtype}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"tiled: scale must be a positive finite number; got {scale!r}")
    if multiple_of < 1:
        raise ValueError(f"tiled: multiple_of must be >= 1; got {multiple_of}")
    if overlap < 0:
        raise ValueError(f"tiled: overlap must be >= 0; got {overlap}")
    if blend not in ("linear", "gaussian"):
        raise ValueError(f"tiled: blend must be 'linear' or 'gaussian'; got {blend!r}")
    if tiles_per_call < 1:
        raise ValueError(f"tiled: tiles_per_call must be >= 1; got {tiles_per_call}")
    if pad not in ("reflect", "replicate", "constant"):
        raise ValueError(f"tiled: pad must be 'reflect', 'replicate' or 'constant'; got {pad!r}")

    scale = float(scale)
    frac = _exact_scale(scale)
    align = math.lcm(multiple_of, frac.denominator if frac is not None else 1)
    run_device = torch.device(device) if device is not None else x.device
    host = x.device

    batch, _, height, width = x.shape
    out_h, out_w = int(round(height * scale)), int(round(width * scale))
    hp, wp = height + (-height) % align, width + (-width) % align
    canvas_h, canvas_w = _scaled(hp, scale, frac), _scaled(wp, scale, frac)
    for t, where in aux:
        _check_aux(t, where, (height, width) if where == "in" else (out_h, out_w), batch)

    tile_eff = max(align, tile // align * align) if tile > 0 else 0
    if tile <= 0 or (tile_eff >= hp and tile_eff >= wp):
        xp, _ = pad_to_multiple(x, align, mode=pad)
        extras = [_pad_aux(t, where, (height, width, hp, wp), (out_h, out_w, canvas_h, canvas_w), batch) for t, where in aux]
        inp = xp.to(run_device)
        out = _check_tile_output(fn(inp, *(t.to(run_device) for t, _ in extras)), inp, (canvas_h, canvas_w), scale)
        if out_channels is not None and out.shape[1] != out_channels:
            raise ValueError(f"tiled: fn returned {out.shape[1]} channels; expected {out_channels}")
        return out[..., :out_h, :out_w].to(host)

    th, tw = min(tile_eff, hp), min(tile_eff, wp)

    def axis_overlap(size: int, t: int) -> int:
        if size <= t or overlap < t:
            return overlap
        logger.warning("overlap %d is not smaller than the tile %d; using %d", overlap, t, t // 2)
        return t // 2

    ov_h, ov_w = axis_overlap(hp, th), axis_overlap(wp, tw)
    ys = tile_starts(hp, th, ov_h, align=align)
    xs = tile_starts(wp, tw, ov_w, align=align)
    oth, otw = _scaled(th, scale, frac), _scaled(tw, scale, frac)
    if oth <= 0 or otw <= 0:
        raise ValueError(f"tiled: a {th}x{tw} tile at scale {scale} has an empty output")
    out_ov_h, out_ov_w = _scaled(ov_h, scale, frac), _scaled(ov_w, scale, frac)
    logger.debug(
        "tiling %dx%d (padded %dx%d) into %dx%d tiles of %dx%d, overlap %d/%d, scale %g on %s",
        height, width, hp, wp, len(ys), len(xs), th, tw, ov_h, ov_w, scale, run_device,
    )

    def out_pos(start: int, canvas: int, size: int) -> int:
        return min(max(_scaled(start, scale, frac), 0), canvas - size)

    windows = [(y0, x0, out_pos(y0, canvas_h, oth), out_pos(x0, canvas_w, otw)) for y0 in ys for x0 in xs]
    # The input is never padded or copied whole: each window is read from ``x`` (padded at the
    # bottom/right edge as the whole image would be). The output canvas is the only full-size
    # buffer; the blend weights' sum is kept for one band of tile rows, and the canvas rows a
    # band finishes (no later tile reaches them) are normalised when the next band starts.
    # Windows run in row-major order, so every pixel sums the same terms in the same order as
    # a full-size weight map would: the result is bit-identical to it.
    canvas: Tensor | None = None
    band: _WeightBand | None = None
    out_dtype: torch.dtype | None = None
    weights: dict[tuple[bool, bool, bool, bool], tuple[Tensor, Tensor]] = {}
    pad_mode = "replicate" if pad == "reflect" and (hp - height >= height or wp - width >= width) else pad  # as pad_to_multiple

    for first in range(0, len(windows), tiles_per_call):
        chunk = windows[first : first + tiles_per_call]
        # Private copies: fn may work in place, and neighbouring tiles share input pixels.
        inp = torch.cat([_window(x, y0, x0, th, tw, pad_mode) for y0, x0, _, _ in chunk]).to(run_device)  # cat copies
        cut = []
        for t, where in aux:
            if where == "in":
                cut.append(torch.cat([_window(t, y0, x0, th, tw, "constant") for y0, x0, _, _ in chunk]).to(run_device))
            else:
                cut.append(torch.cat([_window(t, oy, ox, oth, otw, "constant") for _, _, oy, ox in chunk]).to(run_device))
        outs = _check_tile_output(fn(inp, *cut), inp, (oth, otw), scale)
        del inp, cut
        if canvas is None:
            if out_channels is not None and outs.shape[1] != out_channels:
                raise ValueError(f"tiled: fn returned {outs.shape[1]} channels; expected {out_channels}")
            out_dtype = outs.dtype
            acc_dtype = torch.float64 if outs.dtype == torch.float64 else torch.float32
            canvas = torch.zeros((batch, outs.shape[1], out_h, out_w), dtype=acc_dtype, device=host)
            band = _WeightBand(canvas, oth, canvas_w)
        elif outs.shape[1] != canvas.shape[1]:
            raise ValueError(f"tiled: fn returned {outs.shape[1]} channels for one tile and {canvas.shape[1]} for another")
        for i, (y0, x0, oy, ox) in enumerate(chunk):
            out = outs[i * batch : (i + 1) * batch]
            sides = (y0 > 0, y0 + th < hp, x0 > 0, x0 + tw < wp)
            if sides not in weights:
                w_host = blend_window(oth, otw, out_ov_h, out_ov_w, blend, device=host, dtype=canvas.dtype, sides=sides)
                weights[sides] = (w_host.to(out.device), w_host)
            w_dev, w_host = weights[sides]
            band.add(oy, ox, (out.to(canvas.dtype) * w_dev).to(host), w_host)
            del out
        del outs

    assert canvas is not None and band is not None and out_dtype is not None
    band.finish()
    return canvas.to(out_dtype)


class _WeightBand:
    """The sum of blend weights over one band of ``rows`` output rows, for a canvas filled in
    row-major order of tiles (all tiles of a band start at the same output row).

    :meth:`add` accumulates a tile into the canvas (cropped to the canvas: the padded border is
    never stored) and its weights into the band; when a tile starts lower, the rows above it are
    final: they are divided by their weight sum and the band moves down.
    """

    def __init__(self, canvas: Tensor, rows: int, width: int) -> None:
        self.canvas = canvas
        self.rows = rows
        self.top = 0
        self.sum = torch.zeros((1, 1, rows, width), dtype=canvas.dtype, device=canvas.device)
        self._spare = torch.empty_like(self.sum)  # the next band, allocated once

    def add(self, oy: int, ox: int, contrib: Tensor, weights: Tensor) -> None:
        if oy != self.top:
            self._advance(oy)
        h, w = contrib.shape[-2:]
        keep_h, keep_w = min(h, self.canvas.shape[-2] - oy), min(w, self.canvas.shape[-1] - ox)
        if keep_h > 0 and keep_w > 0:
            self.canvas[:, :, oy : oy + keep_h, ox : ox + keep_w] += contrib[:, :, :keep_h, :keep_w]
        self.sum[:, :, :h, ox : ox + w] += weights

    def _advance(self, oy: int) -> None:
        done = oy - self.top
        if done <= 0:
            raise AssertionError("tiled: windows must come in row-major order")
        self._normalise(min(done, self.rows))
        shifted = self._spare.zero_()
        if done < self.rows:
            shifted[:, :, : self.rows - done] = self.sum[:, :, done:]
        self.sum, self._spare = shifted, self.sum
        self.top = oy

    def _normalise(self, rows: int) -> None:
        end = min(self.top + rows, self.canvas.shape[-2])
        if end > self.top:
            self.canvas[:, :, self.top : end].div_(self.sum[:, :, : end - self.top, : self.canvas.shape[-1]])

    def finish(self) -> None:
        self._normalise(self.rows)


def _window(t: Tensor, y0: int, x0: int, h: int, w: int, mode: str) -> Tensor:
    """Rows ``y0:y0+h`` and columns ``x0:x0+w`` of ``t`` ``(B, C, H, W)``, the part beyond its
    bottom/right edge padded as :func:`pad_to_multiple` pads the whole tensor (``reflect``,
    ``replicate`` or ``constant`` zeros). A view when the window lies inside ``t``."""
    height, width = int(t.shape[-2]), int(t.shape[-1])
    if y0 + h <= height and x0 + w <= width:
        return t[:, :, y0 : y0 + h, x0 : x0 + w]
    if mode == "constant":
        part = t[:, :, y0 : min(y0 + h, height), x0 : min(x0 + w, width)]
        return F.pad(part, (0, w - part.shape[-1], 0, h - part.shape[-2]))

    def index(start: int, size: int, length: int) -> Tensor:
        i = torch.arange(start, start + size, device=t.device)
        return torch.where(i < length, i, 2 * (length - 1) - i) if mode == "reflect" else i.clamp(max=length - 1)

    return t.index_select(-2, index(y0, h, height)).index_select(-1, index(x0, w, width))


def _check_aux(t: Tensor, where: str, size: tuple[int, int], batch: int) -> None:
    if where not in ("in", "out"):
        raise ValueError(f"tiled: aux tensors are 'in' or 'out'; got {where!r}")
    if t.dim() != 4 or t.shape[0] != batch or tuple(t.shape[-2:]) != size:
        raise ValueError(f"tiled: an {where!r} aux tensor must be ({batch}, C, {size[0]}, {size[1]}); got {tuple(t.shape)}")


def _pad_aux(t: Tensor, where: str, in_sizes: tuple[int, int, int, int], out_sizes: tuple[int, int, int, int], batch: int) -> tuple[Tensor, str]:
    """Zero-pad an ``aux`` tensor like the input (its padding is cropped away): the one-call path."""
    h, w, hp, wp = in_sizes if where == "in" else out_sizes
    return (F.pad(t, (0, wp - w, 0, hp - h)) if (hp, wp) != (h, w) else t), where


# --------------------------------------------------------------------------------------------
# Memory: tile size from free memory, OOM fallback
# --------------------------------------------------------------------------------------------

_FALLBACK_HOST_BYTES = 4 * 1024**3


def _host_available_bytes() -> int:
    """Available host memory in bytes: /proc/meminfo MemAvailable, else sysconf, else 4 GiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and page_size > 0:
            return int(pages) * int(page_size)
    except (AttributeError, ValueError, OSError):
        pass
    return _FALLBACK_HOST_BYTES


def _device_budget_bytes(device: torch.device) -> int:
    """Bytes a tile may use on ``device``: a safety fraction of what is free."""
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
            # Memory held by PyTorch's caching allocator but not in use is reusable too.
            try:
                cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
                free += max(0, cached)
            except (RuntimeError, AssertionError):
                pass
            return int(free * 0.8)
        except (RuntimeError, AssertionError, AttributeError) as err:
            logger.debug("could not query CUDA memory (%s); using the host estimate", err)
    return int(_host_available_bytes() * 0.5)


def auto_tile_size(
    device: torch.device | str | None,
    *,
    bytes_per_pixel: float,
    channels: int = 3,
    multiple_of: int = 1,
    max_tile: int = 2048,
    min_tile: int = 64,
) -> int:
    """Picks a square tile edge that fits in the free memory of ``device``.

    The memory one tile needs is modelled as ``tile**2 * (bytes_per_pixel + 4 * channels)``:
    ``bytes_per_pixel`` is the method's peak working memory per input pixel (activations,
    upscaled output, ...) and the second term the float32 input tile. The budget is 80% of free
    CUDA memory (``torch.cuda.mem_get_info`` plus reusable cached blocks) on a CUDA device, and
    50% of available host memory (``/proc/meminfo``, ``os.sysconf``, or an assumed 4 GiB)
    otherwise.

    Args:
        device: Device the tiles will run on (``None`` means CPU).
        bytes_per_pixel: Peak bytes per input pixel of a tile (> 0).
        channels: Input channels.
        multiple_of: The result is a multiple of this.
        max_tile: Upper bound of the result.
        min_tile: Lower bound of the result.

    Returns:
        A tile edge in ``[min_tile, max_tile]`` that is a multiple of ``multiple_of``, rounded
        down to a multiple of 16 (or 8) as well when that stays within bounds.

    Raises:
        ValueError: On non-positive inputs or when no multiple of ``multiple_of`` lies in
            ``[min_tile, max_tile]``.
    """
    if not (bytes_per_pixel > 0 and math.isfinite(bytes_per_pixel)):
        raise ValueError(f"auto_tile_size: bytes_per_pixel must be positive; got {bytes_per_pixel}")
    if multiple_of < 1 or channels < 0 or min_tile < 1 or max_tile < min_tile:
        raise ValueError(
            "auto_tile_size: need multiple_of >= 1, channels >= 0 and 1 <= min_tile <= max_tile; "
            f"got multiple_of={multiple_of}, channels={channels}, "
            f"min_tile={min_tile}, max_tile={max_tile}"
        )
    m = multiple_of
    lo = -(-min_tile // m) * m
    hi = max_tile // m * m
    if lo > hi:
        raise ValueError(
            f"auto_tile_size: no multiple of {m} lies in [{min_tile}, {max_tile}]"
        )
    dev = torch.device(device) if device is not None else torch.device("cpu")
    budget = _device_budget_bytes(dev)
    raw = int(math.sqrt(max(budget, 0) / (bytes_per_pixel + 4.0 * channels)))
    t = min(max(raw, lo), hi)
    for neat in (16, 8):
        step = math.lcm(m, neat)
        candidate = t // step * step
        if candidate >= lo:
            t = candidate
            break
    else:
        t = t // m * m
    logger.debug("auto tile on %s: budget %d bytes -> tile %d", dev, budget, t)
    return int(t)


def _is_oom(err: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None) or getattr(
        torch, "OutOfMemoryError", None
    )
    if oom_type is not None and isinstance(err, oom_type):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def _release_cuda_cache() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def run_with_oom_fallback(
    run: Callable[[int], Tensor],
    tile: int,
    *,
    min_tile: int = 64,
    multiple_of: int = 1,
) -> Tensor:
    """Calls ``run(tile)``, halving the tile after each out-of-memory error.

    An error counts as out-of-memory when it is a ``torch.cuda.OutOfMemoryError`` or a
    ``RuntimeError`` whose message contains "out of memory". After one, the CUDA cache is
    emptied, the tile is halved (rounded down to a multiple of ``multiple_of``) and ``run`` is
    called again; each halving is logged as a warning on the ``irc.tiling`` logger. Other errors
    propagate unchanged.

    Args:
        run: Callable doing the work for a given tile edge (typically a closure over
            :func:`tiled`).
        tile: First tile edge to try. ``<= 0`` ("whole image") cannot be halved: an
            out-of-memory error is re-raised.
        min_tile: Smallest tile edge to try.
        multiple_of: Tile edges tried after the first are multiples of this.

    Returns:
        Whatever the first successful ``run`` returns.

    Raises:
        torch.cuda.OutOfMemoryError | RuntimeError: The last out-of-memory error, when the next
            halved tile would be smaller than ``min_tile``.
    """
    m = max(1, multiple_of)
    while True:
        try:
            return run(tile)
        except RuntimeError as err:
            if not _is_oom(err):
                raise
            next_tile = (tile // 2) // m * m if tile > 0 else 0
            if next_tile < max(min_tile, 1):
                logger.warning(
                    "out of memory at tile %d; giving up (next tile %d is below the minimum %d)",
                    tile, next_tile, min_tile,
                )
                raise
        # Outside the except block: the exception and its frames (which may pin tensors) are gone.
        _release_cuda_cache()
        logger.warning("out of memory at tile %d; retrying with tile %d", tile, next_tile)
        tile = next_tile
