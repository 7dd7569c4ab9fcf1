"""Tests for irc.tiling: window placement, blending, exactness, seams, padding, memory helpers."""

from __future__ import annotations

import dataclasses
import math
import logging
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from irc import tiling
from irc.tiling import (
    TileSpec,
    auto_tile_size,
    blend_window,
    pad_to_multiple,
    run_with_oom_fallback,
    tile_starts,
    tiled,
)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _image(h: int, w: int, c: int = 3, b: int = 1, seed: int = 0) -> torch.Tensor:
    """A textured test image: a smooth random field plus a little noise, roughly in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, c, h // 16 + 2, w // 16 + 2, generator=g)
    smooth = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    return smooth + 0.1 * torch.rand(b, c, h, w, generator=g)


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in module.parameters():
        nn.init.normal_(p, std=0.3)
    return module.eval()


class _Conv3(nn.Module):
    """Three 3x3 convs with zero padding: receptive field 7 px (radius 3)."""

    def __init__(self, cin: int = 3, cout: int = 3):
        super().__init__()
        self.a = nn.Conv2d(cin, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, cout, 3, padding=1)

    def forward(self, x):
        return self.c(F.gelu(self.b(F.gelu(self.a(x)))))


class _PixelShuffleUp(nn.Module):
    """conv -> conv -> pixel_shuffle(2) -> conv at 2x (scale 2)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 12, 3, padding=1)
        self.c = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.c(F.pixel_shuffle(self.b(F.gelu(self.a(x))), 2))


class _NearestUp(nn.Module):
    """conv -> nearest x2 -> conv -> conv (scale 2)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        y = F.interpolate(F.gelu(self.a(x)), scale_factor=2, mode="nearest")
        return self.c(F.gelu(self.b(y)))


class _StridedDown(nn.Module):
    """conv -> stride-2 conv -> conv (scale 0.5)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.c = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.c(F.gelu(self.b(F.gelu(self.a(x)))))


class _PoolDown(nn.Module):
    """conv -> avg_pool(2) -> conv (scale 0.5)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return self.c(F.gelu(F.avg_pool2d(self.a(x), 2)))


def _untiled(fn, x: torch.Tensor, scale: float, align: int) -> torch.Tensor:
    """Reference: pad like `tiled` does, run once, crop."""
    xp, _ = pad_to_multiple(x, align)
    out = fn(xp)
    return out[..., : round(x.shape[-2] * scale), : round(x.shape[-1] * scale)]


# --------------------------------------------------------------------------------------------
# tile_starts
# --------------------------------------------------------------------------------------------


def _check_starts(length: int, tile: int, overlap: int, align: int = 1) -> None:
    starts = tile_starts(length, tile, overlap, align=align)
    assert starts[0] == 0
    if length <= tile:
        assert starts == [0]
        return
    assert starts[-1] + tile == length, "last window must be snapped to the border"
    assert all(b > a for a, b in zip(starts, starts[1:])), "starts must increase"
    assert all(0 <= s and s + tile <= length for s in starts), "window out of bounds"
    assert all(s % align == 0 for s in starts)
    covered = torch.zeros(length, dtype=torch.bool)
    for s in starts:
        covered[s : s + tile] = True
    assert bool(covered.all()), "windows must cover the whole range"
    if tile - overlap >= align:
        # Every pair of neighbours overlaps by at least the requested amount.
        assert all(a + tile - b >= overlap for a, b in zip(starts, starts[1:]))
        # ...and no more windows than needed: all but the snapped last one advance by the stride.
        stride = (tile - overlap) // align * align
        assert all(b - a == stride for a, b in zip(starts[:-2], starts[1:-1]))


def test_tile_starts_examples():
    assert tile_starts(100, 128, 16) == [0]
    assert tile_starts(128, 128, 16) == [0]
    assert tile_starts(100, 40, 10) == [0, 30, 60]
    assert tile_starts(101, 40, 10) == [0, 30, 60, 61]
    assert tile_starts(10, 4, 0) == [0, 4, 6]
    assert tile_starts(64, 16, 4, align=8) == [0, 8, 16, 24, 32, 40, 48]


def test_tile_starts_properties_random():
    rng = random.Random(1234)
    for _ in range(3000):
        tile = rng.randint(1, 300)
        overlap = rng.randint(0, tile - 1)
        length = rng.randint(1, 1200)
        _check_starts(length, tile, overlap)
    for _ in range(1500):
        align = rng.choice([1, 2, 8, 16])
        tile = align * rng.randint(1, 40)
        overlap = rng.randint(0, tile - 1)
        length = align * rng.randint(1, 150)
        _check_starts(length, tile, overlap, align)


@pytest.mark.parametrize(
    "args", [(0, 8, 0), (10, 0, 0), (10, 4, 4), (10, 4, -1), (12, 8, 2, 3)]
)
def test_tile_starts_rejects_bad_arguments(args):
    length, tile, overlap, *align = args
    with pytest.raises(ValueError):
        tile_starts(length, tile, overlap, align=align[0] if align else 1)


# --------------------------------------------------------------------------------------------
# blend_window
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "gaussian"])
def test_blend_window_shape_and_positivity(kind):
    w = blend_window(40, 56, 16, 8, kind)
    assert w.shape == (1, 1, 40, 56) and w.dtype == torch.float32
    assert bool((w > 0).all()) and bool((w <= 1).all())
    assert w[0, 0, 20, 28] == pytest.approx(1.0, abs=0.02)  # interior / centre: (nearly) full
    if kind == "linear":
        assert blend_window(41, 57, 16, 8, kind)[0, 0, 20, 28] == pytest.approx(1.0, abs=1e-6)
    w16 = blend_window(40, 56, 16, 8, kind, dtype=torch.float16)
    assert bool((w16 > 0).all())


def test_gaussian_window_is_hypirs():
    """HYPIR's make_tiled_fn: variance 0.01 of the tile, rows centred on h/2, columns on (w-1)/2,
    the same weighting for border tiles (XPixelGroup/HYPIR utils/common.py at b61d107)."""
    import math

    h, w = 8, 6
    got = blend_window(h, w, 4, 4, "gaussian", dtype=torch.float64, sides=(False, True, True, False))[0, 0]
    gy = torch.tensor([math.exp(-((i - h / 2) ** 2) / h**2 / 0.02) for i in range(h)], dtype=torch.float64)
    gx = torch.tensor([math.exp(-((i - (w - 1) / 2) ** 2) / w**2 / 0.02) for i in range(w)], dtype=torch.float64)
    torch.testing.assert_close(got, torch.outer(gy, gx))


@pytest.mark.parametrize("kind", ["linear"])
def test_blend_window_border_sides_not_ramped(kind):
    w = blend_window(32, 32, 8, 8, kind, sides=(False, True, False, True))[0, 0]
    assert torch.allclose(w[0, : 32 // 2], torch.ones(16))  # top-left quadrant edge: full weight
    assert torch.allclose(w[: 32 // 2, 0], torch.ones(16))
    assert w[-1, -1] < 1e-3  # ramped corner
    ones = blend_window(9, 7, 4, 4, kind, sides=(False, False, False, False))
    assert torch.equal(ones, torch.ones(1, 1, 9, 7))


def test_blend_window_linear_cross_fade_sums_to_one():
    # Two windows of length 40 overlapping by exactly the nominal overlap (12): the cross-fade is
    # a partition of unity (up to the tiny floor) and the ramp stays inside the overlap.
    n, o = 40, 12
    left = blend_window(1, n, 0, o, "linear", sides=(False, False, False, True))[0, 0, 0].double()
    right = blend_window(1, n, 0, o, "linear", sides=(False, False, True, False))[0, 0, 0].double()
    total = torch.zeros(2 * n - o, dtype=torch.float64)
    total[:n] += left
    total[n - o :] += right
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)
    assert torch.equal(left[: n - o], torch.ones(n - o, dtype=torch.float64))
    assert torch.equal(right[o:], torch.ones(n - o, dtype=torch.float64))
    assert right[: o // 4].max() < 1e-6  # outer quarter: negligible weight, no context there


def test_blend_window_rejects_bad_kind():
    with pytest.raises(ValueError):
        blend_window(8, 8, 2, 2, "cosine")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# pad_to_multiple
# --------------------------------------------------------------------------------------------


def test_pad_to_multiple_shapes_and_crop_back():
    x = _image(37, 50)
    y, (ph, pw) = pad_to_multiple(x, 16)
    assert y.shape == (1, 3, 48, 64) and (ph, pw) == (11, 14)
    assert torch.equal(y[..., :37, :50], x)
    # reflect: the first padded row mirrors the row above the last one
    assert torch.equal(y[..., 37, :50], x[..., 35, :])
    same, pads = pad_to_multiple(x, 1)
    assert same is x and pads == (0, 0)
    aligned = _image(32, 48)
    same, pads = pad_to_multiple(aligned, 16)
    assert same is aligned and pads == (0, 0)


def test_pad_to_multiple_falls_back_to_replicate_and_handles_3d():
    x = torch.arange(12, dtype=torch.float32).reshape(1, 1, 3, 4)
    y, (ph, pw) = pad_to_multiple(x, 8)  # pad 5 >= 3 rows: reflect impossible
    assert y.shape == (1, 1, 8, 8) and (ph, pw) == (5, 4)
    assert torch.equal(y[0, 0, 7, :4], x[0, 0, 2])
    assert torch.equal(y[0, 0, :3, 7], x[0, 0, :, 3])
    z, pads = pad_to_multiple(_image(10, 13)[0], 4)  # (C, H, W)
    assert z.shape == (3, 12, 16) and pads == (2, 3)
    c, _ = pad_to_multiple(x, 8, mode="constant")
    assert c[0, 0, 7].abs().sum() == 0


# --------------------------------------------------------------------------------------------
# tiled: exactness when the overlap covers the receptive field
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(77, 101), (64, 49), (33, 131)])
@pytest.mark.parametrize("multiple_of", [1, 8])
def test_tiled_conv_scale1_matches_untiled(size, multiple_of):
    net = _seeded(_Conv3())
    x = _image(*size, b=2)
    with torch.no_grad():
        ref = _untiled(net, x, 1.0, multiple_of)
        out = tiled(net, x, tile=32, overlap=16, multiple_of=multiple_of)
    assert out.shape == (2, 3, *size)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("net_cls", [_PixelShuffleUp, _NearestUp])
@pytest.mark.parametrize("multiple_of", [1, 8])
def test_tiled_conv_scale2_matches_untiled(net_cls, multiple_of):
    net = _seeded(net_cls())
    x = _image(45, 67)
    with torch.no_grad():
        ref = _untiled(net, x, 2.0, multiple_of)
        out = tiled(net, x, tile=24, overlap=16, scale=2, multiple_of=multiple_of)
    assert out.shape == (1, 3, 90, 134)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("net_cls", [_StridedDown, _PoolDown])
@pytest.mark.parametrize("multiple_of", [1, 8])
def test_tiled_conv_scale_half_matches_untiled(net_cls, multiple_of):
    net = _seeded(net_cls())
    x = _image(59, 83)
    align = max(2, multiple_of)
    with torch.no_grad():
        ref = _untiled(net, x, 0.5, align)
        out = tiled(net, x, tile=32, overlap=16, scale=0.5, multiple_of=multiple_of)
    assert out.shape == (1, ref.shape[1], round(59 * 0.5), round(83 * 0.5))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_tiled_encoder_decoder_scales():
    # Multi-scale stages (encoder 1/8, decoder 8) through the same function: tile starts are
    # snapped to multiples of 8 so output positions are integers and results are exact.
    x = _image(70, 90)
    enc = lambda t: F.avg_pool2d(t, 8)  # noqa: E731
    dec = lambda t: F.interpolate(t, scale_factor=8, mode="nearest")  # noqa: E731
    z = tiled(enc, x, tile=36, overlap=12, scale=0.125)
    torch.testing.assert_close(z, _untiled(enc, x, 0.125, 8), atol=1e-6, rtol=0)
    y = tiled(dec, z, tile=4, overlap=2, scale=8)
    assert z.shape == (1, 3, 9, 11) and y.shape == (1, 3, 72, 88)
    torch.testing.assert_close(y, dec(z), atol=1e-6, rtol=0)


def test_tiled_fractional_scale():
    x = _image(41, 57)
    up = lambda t: F.interpolate(t, scale_factor=1.5, mode="nearest")  # noqa: E731
    out = tiled(up, x, tile=20, overlap=8, scale=1.5)
    assert out.shape == (1, 3, round(41 * 1.5), round(57 * 1.5))
    torch.testing.assert_close(out, _untiled(up, x, 1.5, 2), atol=1e-6, rtol=0)

    s = 1 / 2.7  # not a ratio of small integers: rounded output positions
    down = lambda t: F.interpolate(  # noqa: E731
        t, size=(round(t.shape[-2] * s), round(t.shape[-1] * s)), mode="bilinear"
    )
    out = tiled(down, x, tile=27, overlap=9, scale=s)
    assert out.shape == (1, 3, round(41 * s), round(57 * s))
    assert torch.isfinite(out).all()


def test_tiled_rejects_wrong_output_shape():
    x = _image(50, 50)
    with pytest.raises(ValueError, match="scale"):
        tiled(lambda t: t, x, tile=32, overlap=8, scale=2)
    with pytest.raises(ValueError, match="scale"):
        tiled(lambda t: t, x, tile=0, scale=2)
    with pytest.raises(ValueError, match="channels"):
        tiled(lambda t: t, x, tile=32, overlap=8, out_channels=4)
    with pytest.raises(ValueError):
        tiled(lambda t: t, x[0], tile=32)


# --------------------------------------------------------------------------------------------
# tiled: no measurable seam when the receptive field is larger than the overlap
# --------------------------------------------------------------------------------------------


def _box_blur(x: torch.Tensor, k: int = 9, reps: int = 3) -> torch.Tensor:
    """A 9x9 box blur applied 3 times (receptive field 25 px), reflect padding."""
    c = x.shape[1]
    weight = torch.full((c, 1, k, k), 1.0 / (k * k))
    for _ in range(reps):
        x = F.conv2d(F.pad(x, (k // 2,) * 4, mode="reflect"), weight, groups=c)
    return x


def _mean_abs_diff_profile(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean |first difference| along `dim`; entry j is the step between positions j and j+1."""
    reduce = tuple(i for i in range(4) if i != dim % 4)
    return t.diff(dim=dim).abs().mean(dim=reduce)


def _mean_abs_profile(t: torch.Tensor, dim: int) -> torch.Tensor:
    reduce = tuple(i for i in range(4) if i != dim % 4)
    return t.abs().mean(dim=reduce)


def _seam_metrics(out, ref, dim, seam_steps, interior_steps):
    """Seam metrics along one axis.

    Returns:
        step: largest mean |first difference of the error| across a seam step, relative to the
            median natural gradient of the untiled image (how strong a seam edge is compared with
            real image detail; a visible seam is a step in the error).
        z: largest z-score of the output's mean gradient at a seam step within the distribution
            of the output's mean gradients at interior (seam-free) steps.
        err: mean |tiled - untiled| over the seam zone.
    """
    natural = _mean_abs_diff_profile(ref, dim)[interior_steps].median()
    step = _mean_abs_diff_profile(out - ref, dim)[seam_steps].max() / natural
    grad = _mean_abs_diff_profile(out, dim)
    gi = grad[interior_steps]
    z = ((grad[seam_steps] - gi.mean()) / gi.std()).max()
    err = _mean_abs_profile(out - ref, dim)[seam_steps].mean()
    return float(step), float(z), float(err)


@pytest.mark.parametrize("blend", ["linear", "gaussian"])
def test_tiled_no_measurable_seam_with_large_receptive_field(blend):
    x = _image(150, 203, seed=3)
    tile, overlap, rf_radius = 48, 8, 12  # receptive field (25) much larger than the overlap
    ref = _box_blur(x)
    blended = tiled(_box_blur, x, tile=tile, overlap=overlap, blend=blend)
    naive = tiled(_box_blur, x, tile=tile, overlap=0)  # edge-to-edge tiles, no blending
    for dim in (-1, -2):
        length = x.shape[dim]
        starts = tile_starts(length, tile, overlap)
        starts0 = tile_starts(length, tile, 0)
        # Seam steps (index j = step between j and j+1): every step in a blended overlap zone,
        # and the step at each naive tile boundary.
        blend_steps = sorted(
            {c - 1 for a, b in zip(starts, starts[1:]) for c in range(b, a + tile + 1)}
        )
        naive_steps = sorted({b - 1 for b in starts0[1:]})
        near_seam = set(blend_steps) | set(naive_steps)
        interior = [
            j
            for j in range(rf_radius, length - 1 - rf_radius)
            if not ({j - 1, j, j + 1} & near_seam)
        ]
        assert len(interior) > length // 3

        step_b, z_b, err_b = _seam_metrics(blended, ref, dim, blend_steps, interior)
        step_n, z_n, err_n = _seam_metrics(naive, ref, dim, naive_steps, interior)
        # Blended: any step the tiling adds is well below ordinary pixel-to-pixel variation, and
        # gradients across the seams look like interior gradients.
        assert step_b < 0.75, (dim, step_b)
        assert z_b < 5.0, (dim, z_b)
        # Naive tiling fails the same checks by a wide margin (so the checks are meaningful).
        assert step_n > 3.0, (dim, step_n)
        assert z_n > 10.0, (dim, z_n)
        assert err_b < err_n / 4, (dim, err_b, err_n)


# --------------------------------------------------------------------------------------------
# tiled: misc behaviour
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("blend", ["linear", "gaussian"])
@pytest.mark.parametrize(
    "tile,overlap,multiple_of", [(32, 8, 1), (24, 16, 8), (17, 5, 1), (40, 30, 1)]
)
def test_tiled_identity_round_trip(blend, tile, overlap, multiple_of):
    x = _image(61, 95, b=2)
    out = tiled(lambda t: t, x, tile=tile, overlap=overlap, multiple_of=multiple_of, blend=blend)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)
    x64 = x.double()
    out64 = tiled(
        lambda t: t, x64, tile=tile, overlap=overlap, multiple_of=multiple_of, blend=blend
    )
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64, x64, atol=1e-12, rtol=0)


def test_tiled_out_channels_differ_from_input():
    net = _seeded(_Conv3(cin=3, cout=5))
    x = _image(50, 70)
    with torch.no_grad():
        out = tiled(net, x, tile=24, overlap=16, out_channels=5)
        ref = net(x)
    assert out.shape == (1, 5, 50, 70)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    gray = tiled(lambda t: t.mean(dim=1, keepdim=True), x, tile=24, overlap=8)
    torch.testing.assert_close(gray, x.mean(dim=1, keepdim=True), atol=1e-6, rtol=0)


def test_tiled_whole_image_calls_fn_once():
    x = _image(30, 45)
    calls = []

    def fn(t):
        calls.append(tuple(t.shape))
        return t * 2

    for tile in (0, -1, 64):
        calls.clear()
        out = tiled(fn, x, tile=tile, multiple_of=8)
        assert calls == [(1, 3, 32, 48)]
        torch.testing.assert_close(out, x * 2)


def test_tiled_tiles_are_multiples_and_fn_may_work_in_place():
    x = _image(70, 100)
    shapes = set()

    def fn(t):
        shapes.add(tuple(t.shape[-2:]))
        return t.mul_(3)  # in place on the tile: must not leak into neighbouring tiles

    out = tiled(fn, x, tile=30, overlap=8, multiple_of=8)  # tile rounded down to 24
    assert shapes and all(h % 8 == 0 and w % 8 == 0 and max(h, w) <= 24 for h, w in shapes)
    torch.testing.assert_close(out, x * 3, atol=1e-5, rtol=0)
    assert torch.equal(x, _image(70, 100)), "input must not be modified"


def test_tiled_explicit_cpu_device():
    net = _seeded(_Conv3())
    x = _image(40, 52)
    with torch.no_grad():
        out = tiled(net, x, tile=24, overlap=16, device="cpu")
        out2 = tiled(net, x, tile=24, overlap=16, device=torch.device("cpu"))
        ref = net(x)
    assert out.device == x.device
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out2, ref, atol=1e-5, rtol=0)


def test_tiled_overlap_not_smaller_than_tile_is_clamped(caplog):
    x = _image(40, 40)
    with caplog.at_level(logging.WARNING, logger="irc.tiling"):
        out = tiled(lambda t: t, x, tile=16, overlap=16)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)
    assert any("overlap" in r.getMessage() for r in caplog.records)


def test_tilespec_defaults_and_validation():
    spec = TileSpec()
    assert (spec.support, spec.scale, spec.multiple_of, spec.overlap, spec.blend) == ("supported", 1.0, 1, 16, "linear")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.scale = 2.0  # type: ignore[misc]  # frozen
    bad_specs = (
        dict(support="sometimes"), dict(support="internal"), dict(scale=0), dict(multiple_of=0), dict(overlap=-1),
        dict(blend="box"), dict(bytes_per_pixel=0),
    )
    for bad in bad_specs:
        with pytest.raises(ValueError):
            TileSpec(**bad)


# --------------------------------------------------------------------------------------------
# run_with_oom_fallback
# --------------------------------------------------------------------------------------------


def test_oom_fallback_halves_until_it_fits(caplog):
    tried = []

    def run(tile):
        tried.append(tile)
        if tile > 128:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.full((1,), float(tile))

    with caplog.at_level(logging.WARNING, logger="irc.tiling"):
        result = run_with_oom_fallback(run, 512, min_tile=64)
    assert tried == [512, 256, 128]
    assert result.item() == 128
    halvings = [r.getMessage() for r in caplog.records if r.name == "irc.tiling"]
    assert len(halvings) == 2
    assert "512" in halvings[0] and "256" in halvings[0]
    assert "256" in halvings[1] and "128" in halvings[1]


def test_oom_fallback_keeps_multiple_and_accepts_runtime_error_message():
    tried = []

    def run(tile):
        tried.append(tile)
        if tile > 100:
            raise RuntimeError("CUDA error: out of memory")
        return torch.zeros(())

    run_with_oom_fallback(run, 480, min_tile=48, multiple_of=48)
    assert tried == [480, 240, 96]
    assert all(t % 48 == 0 for t in tried)


def test_oom_fallback_reraises_below_min_tile():
    tried = []

    def run(tile):
        tried.append(tile)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_with_oom_fallback(run, 512, min_tile=64)
    assert tried == [512, 256, 128, 64]


def test_oom_fallback_does_not_swallow_other_errors():
    tried = []

    def run(tile):
        tried.append(tile)
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_with_oom_fallback(run, 512)
    assert tried == [512]


# --------------------------------------------------------------------------------------------
# auto_tile_size
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("multiple_of", [1, 8, 48, 64])
@pytest.mark.parametrize("bytes_per_pixel", [1e-3, 50.0, 4e3, 1e12])
def test_auto_tile_size_cpu_bounds(multiple_of, bytes_per_pixel):
    t = auto_tile_size("cpu", bytes_per_pixel=bytes_per_pixel, multiple_of=multiple_of)
    assert isinstance(t, int)
    assert 64 <= t <= 2048
    assert t % multiple_of == 0
    if bytes_per_pixel >= 1e12:
        assert t < 128  # nothing fits: the minimum (rounded up to a multiple)
    if bytes_per_pixel <= 1e-3:
        assert t > 2048 - max(multiple_of, 16)  # everything fits: the maximum


def test_auto_tile_size_from_memory_budget(monkeypatch):
    monkeypatch.setattr(tiling, "_host_available_bytes", lambda: 2 * 1024**3)
    # budget = 1 GiB (50% of host), cost per pixel = 1012 bytes -> sqrt(1061017) ~ 1030 -> 1024
    assert auto_tile_size(None, bytes_per_pixel=1000, channels=3) == 1024
    assert auto_tile_size("cpu", bytes_per_pixel=1000, channels=3, multiple_of=48) == 1008
    small = auto_tile_size("cpu", bytes_per_pixel=16000, channels=3)
    assert small < 1024 and small % 16 == 0

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * 1024**3, 80 * 1024**3))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    # budget = 80% of 2 GiB -> sqrt(0.8 * 2**31 / 1012) ~ 1302 -> 1296
    assert auto_tile_size("cuda", bytes_per_pixel=1000, channels=3) == 1296


def test_auto_tile_size_rejects_impossible_bounds():
    with pytest.raises(ValueError):
        auto_tile_size("cpu", bytes_per_pixel=10, multiple_of=100, min_tile=64, max_tile=90)
    with pytest.raises(ValueError):
        auto_tile_size("cpu", bytes_per_pixel=0)


def test_host_memory_estimate_is_positive():
    assert tiling._host_available_bytes() > 0


def _full_map_reference(fn, x, *, tile, overlap, scale, multiple_of, blend, pad):
    """The blend written the plain way (whole padded input, full-size weight map): the oracle the
    streaming implementation must match bit for bit."""
    from fractions import Fraction

    frac = Fraction(scale).limit_denominator(64)
    align = math.lcm(multiple_of, frac.denominator)
    h, w = x.shape[-2:]
    xp, _ = pad_to_multiple(x, align, mode=pad)
    hp, wp = xp.shape[-2:]
    sc = lambda n: n * frac.numerator // frac.denominator  # noqa: E731
    th, tw = min(tile // align * align, hp), min(tile // align * align, wp)
    ys, xs = tile_starts(hp, th, overlap, align=align), tile_starts(wp, tw, overlap, align=align)
    ch, cw, oth, otw = sc(hp), sc(wp), sc(th), sc(tw)
    canvas, wsum = None, torch.zeros(1, 1, ch, cw)
    for y0 in ys:
        for x0 in xs:
            out = fn(xp[:, :, y0 : y0 + th, x0 : x0 + tw].clone())
            if canvas is None:
                canvas = torch.zeros(x.shape[0], out.shape[1], ch, cw)
            oy, ox = min(sc(y0), ch - oth), min(sc(x0), cw - otw)
            wt = blend_window(oth, otw, sc(overlap), sc(overlap), blend, sides=(y0 > 0, y0 + th < hp, x0 > 0, x0 + tw < wp))
            canvas[:, :, oy : oy + oth, ox : ox + otw] += out * wt
            wsum[:, :, oy : oy + oth, ox : ox + otw] += wt
    oh, ow = round(h * scale), round(w * scale)
    return canvas[:, :, :oh, :ow] / wsum[:, :, :oh, :ow]


@pytest.mark.parametrize(
    "size, tile, overlap, scale, multiple_of, blend, pad",
    [
        ((70, 90), 32, 8, 1.0, 1, "linear", "reflect"),
        ((75, 61), 40, 16, 1.0, 8, "linear", "reflect"),  # padded at the bottom and right
        ((75, 61), 40, 16, 1.0, 8, "gaussian", "constant"),
        ((50, 66), 24, 8, 2.0, 4, "linear", "reflect"),
        ((66, 99), 66, 33, 1.0, 33, "linear", "constant"),  # LoRun CS's block grid
        ((9, 70), 8, 2, 1.0, 8, "linear", "reflect"),  # padding as large as the image: replicate
    ],
)
def test_streamed_blend_is_bit_identical_to_the_full_map(size, tile, overlap, scale, multiple_of, blend, pad):
    torch.manual_seed(0)
    net = nn.Conv2d(3, 3, 3, padding=1)
    fn = (lambda t: F.interpolate(net(t), scale_factor=scale, mode="nearest")) if scale != 1 else net
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        got = tiled(fn, x, tile=tile, overlap=overlap, scale=scale, multiple_of=multiple_of, blend=blend, pad=pad)
        ref = _full_map_reference(fn, x, tile=tile, overlap=overlap, scale=scale, multiple_of=multiple_of, blend=blend, pad=pad)
    assert got.shape == ref.shape
    assert torch.equal(got, ref)


def test_tiled_restore_holds_one_full_size_buffer():
    """Peak memory of a tiled pass beyond its input is the output canvas plus tile-sized buffers:
    the input is never padded or copied whole and the blend weights are kept for one band of
    tiles (before: a padded copy, the canvas and a full-size weight map, 2.33x the image)."""
    import subprocess
    import sys

    script = (
        "import resource, torch\n"
        "from irc.tiling import tiled\n"
        "x = torch.rand(1, 3, 4001, 4001)\n"  # 192 MB; not a multiple of 8: padded at the edge
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "with torch.no_grad():\n"
        "    y = tiled(lambda t: t * 0.5, x, tile=512, overlap=32, multiple_of=8)\n"
        "grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base\n"
        "print(grew * 1024 / x.numel() / 4)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ratio = float(done.stdout.strip())
    assert ratio < 1.8, f"the tiled pass grew by {ratio:.2f}x the image (measured 1.46; 2.55 before)"


def test_tiled_rejects_a_padding_mode_it_cannot_reproduce_per_window():
    with pytest.raises(ValueError, match="pad must be"):
        tiled(lambda t: t, torch.rand(1, 1, 20, 20), tile=8, overlap=2, pad="circular")
