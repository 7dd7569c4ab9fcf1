"""Degradations: determinism, replay, shapes/ranges/dtypes, kernels, noise statistics, JPEG,
haze/low-light identities, the Real-ESRGAN pipeline and the MiOIR task mixtures."""

from __future__ import annotations

import io
import itertools
import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from irc.operators import blur_kernels as bk
from irc.operators.degradation import Compose, Identity, OneOf
from irc.operators.filtering import Blur, filter2d, reflect_pad
from irc.operators.jpeg import JPEG, jpeg_compress
from irc.operators.mioir import Haze, LowLight, Rain, SRDegradation, haze_depth
from irc.operators.mixtures import TASKS, mio_seven_task_mixture, three_task_mixture
from irc.operators.noise import GaussianNoise, PoissonNoise
from irc.operators.realesrgan import RealESRGANConfig, RealESRGANDegradation, usm_sharpen
from irc.operators.resampling import Resize, resize
from irc.operators.resize import imresize

DATA = Path(os.environ.get("IRC_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _crop() -> torch.Tensor:
    """A (1, 3, 64, 64) float32 crop of a CBSD68 photo, or a smooth synthetic image without the pack."""
    folder = DATA / "CBSD68"
    if folder.is_dir():
        from PIL import Image

        with Image.open(folder / min(os.listdir(folder))) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.float32)[100:164, 120:184] / 255.0
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    return torch.stack([xx, yy, 0.5 + 0.4 * torch.sin(8 * xx * yy)])[None].float()


IMG = _crop()

FACTORIES = {
    "gaussian_noise": lambda: GaussianNoise(),
    "poisson_noise": lambda: PoissonNoise(),
    "blur": lambda: Blur(),
    "motion_blur": lambda: Blur(bk.MotionKernelSampler()),
    "jpeg": lambda: JPEG(),
    "jpeg_diff": lambda: JPEG(differentiable=True),
    "resize": lambda: Resize(),
    "resize_matlab": lambda: Resize(modes=("matlab-bicubic",)),
    "haze": lambda: Haze(),
    "rain": lambda: Rain(),
    "low_light": lambda: LowLight(),
    "sr": lambda: SRDegradation(),
    "compose": lambda: Compose([(Blur(), 0.5), (GaussianNoise(), 0.8), JPEG()]),
    "one_of": lambda: OneOf([GaussianNoise(), PoissonNoise()], probs=(0.5, 0.5)),
    "realesrgan": lambda: RealESRGANDegradation(),
}
DETERMINISTIC = {"sr"}  # no random params at all
SIZE_CHANGING = {"resize", "resize_matlab"}


def _replayed(params):
    return json.loads(json.dumps(params))


# --------------------------------------------------------------------------------------------
# contract over every degradation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FACTORIES))
def test_contract(name):
    deg = FACTORIES[name]()
    x = IMG.repeat(2, 1, 1, 1)
    p1 = deg.sample(np.random.default_rng(7))
    p2 = deg.sample(np.random.default_rng(7))
    assert p1 == p2  # same rng seed -> same params
    assert _replayed(p1) == p1  # plain JSON-able values
    y1 = deg.apply(x, p1)
    y2 = deg.apply(x.clone(), _replayed(p1))
    assert torch.equal(y1, y2)  # same params -> bitwise identical, also after a JSON round trip
    assert y1.dtype == x.dtype and y1.shape[:2] == x.shape[:2]
    if name not in SIZE_CHANGING:
        assert y1.shape == x.shape
    assert float(y1.min()) >= 0.0 and float(y1.max()) <= 1.0
    assert torch.equal(x, IMG.repeat(2, 1, 1, 1))  # input untouched


@pytest.mark.parametrize("name", sorted(set(FACTORIES) - DETERMINISTIC))
def test_different_seeds_differ(name):
    deg = FACTORIES[name]()
    outs, params = [], []
    for s in range(4):
        p = deg.sample(np.random.default_rng(100 + s))
        params.append(json.dumps(p, sort_keys=True))
        outs.append(deg.apply(IMG, p))
    assert len(set(params)) == 4
    differ = [a.shape != b.shape or not torch.equal(a, b) for a, b in itertools.pairwise(outs)]
    assert any(differ)


@pytest.mark.parametrize("name", ["gaussian_noise", "poisson_noise", "blur", "haze", "rain", "low_light", "sr", "jpeg"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_dtype_preserved(name, dtype):
    deg = FACTORIES[name]()
    p = deg.sample(np.random.default_rng(1))
    y = deg.apply(IMG.to(dtype), p)
    assert y.dtype == dtype and y.shape == IMG.shape
    assert torch.isfinite(y.float()).all()


@pytest.mark.parametrize("name", ["gaussian_noise", "poisson_noise", "haze", "rain"])
def test_batch_item_independent_of_batch(name):
    # image i of a batch is degraded as it would be alone: seeds are derived per image
    deg = FACTORIES[name]()
    p = deg.sample(np.random.default_rng(3))
    x = torch.cat([IMG, IMG.flip(-1), IMG.flip(-2)])
    yb = deg.apply(x, p)
    assert torch.equal(yb[:1], deg.apply(x[:1], p))
    assert not torch.equal(yb[0], yb[1].flip(-1))  # different images get different randomness


def test_grey_images_supported():
    g = IMG.mean(1, keepdim=True)
    for name in ["gaussian_noise", "poisson_noise", "blur", "jpeg", "haze", "rain", "low_light", "sr", "realesrgan"]:
        deg = FACTORIES[name]()
        y = deg.apply(g, deg.sample(np.random.default_rng(0)))
        assert y.shape == g.shape


# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "iso", "size": 7, "sigma_x": 1.0},
        {"type": "aniso", "size": 21, "sigma_x": 3.0, "sigma_y": 0.5, "theta": 0.7},
        {"type": "generalized_iso", "size": 9, "sigma_x": 1.5, "beta": 0.5},
        {"type": "generalized_aniso", "size": 15, "sigma_x": 2.0, "sigma_y": 1.0, "theta": -1.0, "beta": 4.0},
        {"type": "plateau_iso", "size": 11, "sigma_x": 1.2, "beta": 1.0},
        {"type": "plateau_aniso", "size": 13, "sigma_x": 2.5, "sigma_y": 0.3, "theta": 2.0, "beta": 2.0},
        {"type": "sinc", "size": 21, "omega_c": math.pi / 5},
        {"type": "sinc", "size": 7, "omega_c": math.pi},
        {"type": "motion", "length": 15.0, "angle": 30.0},
        {"type": "motion", "length": 20, "angle": 90.0, "size": 25},
        {"type": "identity", "size": 5},
    ],
)
def test_kernel_normalised_and_centred(spec):
    k = bk.kernel_from_params(spec)
    assert k.dtype == np.float64 and k.ndim == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    if "size" in spec:
        assert k.shape == (spec["size"], spec["size"])
    assert abs(k.sum() - 1.0) < 1e-12
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-12)  # point-symmetric: centred


def test_gaussian_kernel_formula_and_rotation():
    k = bk.gaussian_kernel(11, 1.7)
    ax = np.arange(-5, 6)
    g = np.exp(-(ax**2) / (2 * 1.7**2))
    np.testing.assert_allclose(k, np.outer(g, g) / np.outer(g, g).sum(), atol=1e-14)
    a = bk.gaussian_kernel(15, 3.0, 1.0, 0.0)
    b = bk.gaussian_kernel(15, 3.0, 1.0, math.pi / 2)
    np.testing.assert_allclose(a, b.T, atol=1e-12)
    assert a[7].sum() > a[:, 7].sum()  # sigma_x runs along the columns (horizontal)
    np.testing.assert_allclose(bk.generalized_gaussian_kernel(9, 1.3, beta=1.0), bk.gaussian_kernel(9, 1.3), atol=1e-14)


def test_sinc_kernel_is_lowpass():
    k = bk.sinc_kernel(21, math.pi / 4)
    assert k.min() < 0  # ringing lobes
    spec = np.abs(np.fft.fft2(k, (64, 64)))
    assert spec[0, 0] == pytest.approx(1.0)
    assert spec[32, 32] < 0.1


def test_motion_kernel_direction():
    k = bk.motion_kernel(11, 0.0)
    assert k.shape == (11, 11) and np.allclose(k[5].sum(), 1.0)  # horizontal line on the centre row
    k = bk.motion_kernel(11, 90.0)
    assert np.allclose(k[:, 5].sum(), 1.0)
    assert bk.motion_kernel(1, 33.0).shape == (1, 1)


def test_kernel_sampler_matches_realesrgan_settings():
    ks = bk.KernelSampler()
    rng = np.random.default_rng(0)
    specs = [ks.sample(rng) for _ in range(4000)]
    types = Counter(s["type"] for s in specs)
    assert 0.06 < types["sinc"] / 4000 < 0.14
    mixed = 4000 - types["sinc"]
    for t, p in zip(bk.REALESRGAN_KERNEL_TYPES, bk.REALESRGAN_KERNEL_PROBS):
        assert abs(types[t] / mixed - p) < 0.03, t
    assert {s["size"] for s in specs} == set(range(7, 22, 2))
    for s in specs:
        if s["type"] == "sinc":
            lo = math.pi / 3 if s["size"] < 13 else math.pi / 5
            assert lo <= s["omega_c"] <= math.pi
            continue
        assert 0.2 <= s["sigma_x"] <= 3 and 0.2 <= s["sigma_y"] <= 3
        if s["type"].endswith("_iso") or s["type"] == "iso":
            assert s["sigma_x"] == s["sigma_y"] and s["theta"] == 0
        if s["type"].startswith("generalized"):
            assert 0.5 <= s["beta"] <= 4
        if s["type"].startswith("plateau"):
            assert 1 <= s["beta"] <= 2
        k = bk.kernel_from_params(s)
        assert k.shape == (s["size"], s["size"])


def test_filter2d_reflect_and_tiny_images():
    x = torch.rand(1, 2, 9, 7, dtype=torch.float64)
    k = bk.gaussian_kernel(5, 1.0)
    ref = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x.reshape(2, 1, 9, 7), (2, 2, 2, 2), mode="reflect"), torch.from_numpy(k)[None, None]
    ).reshape(1, 2, 9, 7)
    assert torch.allclose(filter2d(x, k), ref, atol=1e-12)
    small = torch.rand(1, 3, 3, 4)
    assert filter2d(small, bk.gaussian_kernel(21, 3.0)).shape == small.shape  # pad wider than image
    # periodic reflection equals F.pad's where both are defined
    z = torch.rand(1, 1, 6, 6)
    assert torch.equal(reflect_pad(z, (3, 5, 2, 4)), torch.nn.functional.pad(z, (3, 5, 2, 4), mode="reflect"))
    assert reflect_pad(z, (9, 9, 9, 9)).shape == (1, 1, 24, 24)
    const = torch.full((1, 3, 16, 16), 0.3, dtype=torch.float64)
    assert torch.allclose(filter2d(const, bk.sinc_kernel(21, 1.0)), const, atol=1e-12)


# --------------------------------------------------------------------------------------------
# noise
# --------------------------------------------------------------------------------------------


def test_gaussian_noise_sigma():
    flat = torch.full((1, 3, 256, 256), 0.5)
    y = GaussianNoise().apply(flat, {"sigma": 25.0, "gray": False, "seed": 11})
    emp = float((y - flat).std()) * 255
    assert abs(emp / 25.0 - 1) < 0.05
    assert abs(float((y - flat).mean())) * 255 < 0.5


def test_grey_noise_identical_across_channels():
    flat = torch.full((2, 3, 32, 32), 0.5)
    y = GaussianNoise().apply(flat, {"sigma": 20.0, "gray": True, "seed": 1})
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    y = GaussianNoise().apply(flat, {"sigma": 20.0, "gray": False, "seed": 1})
    assert not torch.equal(y[:, 0], y[:, 1])
    p = PoissonNoise().apply(flat, {"scale": 2.0, "gray": True, "levels": "auto", "seed": 1})
    assert torch.equal(p[:, 0], p[:, 1]) and torch.equal(p[:, 1], p[:, 2])
    assert not torch.equal(p, flat)


def test_poisson_noise_statistics():
    # flat 0.5 image has one grey level, so "auto" gives L = 1; fix L = 256 to test the formula
    flat = torch.full((1, 3, 256, 256), 128 / 255)
    y = PoissonNoise().apply(flat, {"scale": 1.0, "gray": False, "levels": 256, "seed": 5})
    expect = math.sqrt((128 / 255) / 256)
    assert abs(float((y - flat).std()) / expect - 1) < 0.05
    y2 = PoissonNoise().apply(flat, {"scale": 2.0, "gray": False, "levels": 256, "seed": 5})
    assert torch.allclose(y2 - flat, 2 * (y - flat), atol=1e-6)  # scale multiplies the same draw
    dark = torch.zeros(1, 1, 16, 16)
    assert torch.equal(PoissonNoise().apply(dark, {"scale": 3.0, "gray": False, "levels": 256, "seed": 5}), dark)


# --------------------------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------------------------


def _pillow_round_trip(x: torch.Tensor, q: int) -> torch.Tensor:
    from PIL import Image

    outs = []
    for img in x:
        a = np.clip(np.round(img.numpy() * 255), 0, 255).astype(np.uint8)
        mode = "L" if a.shape[0] == 1 else "RGB"
        im = Image.fromarray(a[0] if mode == "L" else a.transpose(1, 2, 0), mode=mode)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=q, **({"subsampling": "4:2:0"} if mode == "RGB" else {}))
        d = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(mode))
        outs.append(torch.from_numpy((d[None] if d.ndim == 2 else d.transpose(2, 0, 1)).astype(np.float32) / 255))
    return torch.stack(outs)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_equals_pillow(channels):
    x = torch.cat([IMG, IMG.flip(-1)])[:, :channels]
    for q in (30, 75, 95):
        y = JPEG().apply(x, {"quality": q})
        assert torch.equal(y, _pillow_round_trip(x, q))
    assert not torch.equal(JPEG().apply(x, {"quality": 30}), JPEG().apply(x, {"quality": 95}))


def test_differentiable_jpeg():
    x = IMG.clone().requires_grad_(True)
    y = JPEG(differentiable=True).apply(x, {"quality": 40})
    assert torch.equal(y.detach(), jpeg_compress(IMG, 40))  # forward = the real JPEG
    w = torch.rand_like(y)
    (y * w).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert torch.equal(x.grad, w)  # straight-through: identity backward
    assert JPEG().apply(IMG.clone().requires_grad_(True), {"quality": 40}).grad_fn is None


# --------------------------------------------------------------------------------------------
# resize, haze, rain, low light, SR
# --------------------------------------------------------------------------------------------


def test_resize_sizes_and_keep():
    x = IMG
    assert Resize().apply(x, {"updown": "down", "scale": 0.5, "mode": "area"}).shape[-2:] == (32, 32)
    assert Resize().apply(x, {"updown": "up", "scale": 1.37, "mode": "bicubic"}).shape[-2:] == (87, 87)
    assert Resize().apply(x, {"mode": "bilinear", "size": [20, 30]}).shape[-2:] == (20, 30)
    for mode in ("area", "bilinear", "bicubic"):
        assert torch.equal(Resize().apply(x, {"updown": "keep", "scale": 1.0, "mode": mode}), x)
    y = Resize(modes=("matlab-bicubic",)).apply(x, {"updown": "down", "scale": 0.25, "mode": "matlab-bicubic"})
    assert torch.allclose(y, imresize(x, scale=0.25).clamp(0, 1))
    assert resize(torch.rand(1, 3, 5, 5), mode="area", scale=0.1).shape[-2:] == (1, 1)
    ups = Counter(Resize().sample(np.random.default_rng(i))["updown"] for i in range(2000))
    assert abs(ups["down"] / 2000 - 0.7) < 0.04 and abs(ups["up"] / 2000 - 0.2) < 0.04


def test_haze():
    h = Haze()
    assert torch.equal(h.apply(IMG, {"A": 0.9, "beta": 0.0, "seed": 3}), IMG)  # beta = 0: identity
    y = h.apply(IMG, {"A": 1.0, "beta": 2.5, "seed": 3})
    assert float(y.mean()) > float(IMG.mean())  # whitened
    d = haze_depth(64, 48, seed=3)
    assert d.shape == (64, 48) and float(d.min()) == 0.0 and float(d.max()) == 1.0
    assert float(d[:16].mean()) > float(d[-16:].mean())  # farther towards the top
    # explicit depth map: constant depth -> uniform blend with the airlight
    dc = torch.full((64, 64), 0.5)
    t = math.exp(-1.0 * 0.5)
    assert torch.allclose(
        h.apply(IMG, {"A": 0.8, "beta": 1.0, "seed": 0}, depth=dc), IMG * t + 0.8 * (1 - t), atol=1e-6
    )


def test_rain():
    r = Rain()
    p = {"count": 80, "length": 30, "angle": 20.0, "width": 5, "intensity": 0.8, "seed": 9}
    y = r.apply(IMG, p)
    assert bool((y >= IMG).all())  # additive, brightening
    s = r.streaks(IMG, p)
    assert s.shape == (1, 1, 64, 64) and float(s.max()) <= 1.0 and float(s.max()) > 0.5
    big = torch.zeros(1, 1, 300, 300)
    area_small = float((r.streaks(torch.zeros(1, 1, 150, 150), p) > 0.1).float().mean())
    area_big = float((r.streaks(big, p) > 0.1).float().mean())
    assert 0.3 < area_small / area_big < 3  # streak density scales with area, not per image
    unclipped = (y < 1).all(dim=1)
    assert torch.allclose((y - IMG)[:, 0][unclipped], (y - IMG)[:, 1][unclipped], atol=1e-6)  # white streaks
    k = bk.motion_kernel(30, 90.0)
    assert np.allclose(k[:, k.shape[1] // 2].sum(), 1.0)  # angle 0 from vertical = vertical line


def test_low_light():
    assert torch.equal(LowLight().apply(IMG, {"gamma": 1.0}), IMG)
    y = LowLight().apply(IMG, {"gamma": 2.0})
    assert torch.allclose(y, IMG**2) and float(y.mean()) < float(IMG.mean())


def test_sr_degradation():
    y = SRDegradation().apply(IMG, {"scale": 4})
    assert y.shape == IMG.shape
    assert torch.allclose(y, imresize(imresize(IMG, scale=0.25), size=(64, 64)).clamp(0, 1))
    odd = torch.rand(1, 3, 30, 42)
    assert SRDegradation().apply(odd, {"scale": 4}).shape == odd.shape


def test_compose_and_one_of_replay():
    c = Compose([(GaussianNoise(), 0.5), (LowLight(), 1.0)])
    p = c.sample(np.random.default_rng(0))
    assert [s["name"] for s in p["steps"]] == ["gaussian_noise", "low_light"]
    manual = IMG
    for deg, sp in zip((GaussianNoise(), LowLight()), p["steps"]):
        if sp["applied"]:
            manual = deg.apply(manual, sp["params"])
    assert torch.equal(c.apply(IMG, p), manual)
    o = OneOf([Identity(), LowLight()], probs=(0.0, 1.0))
    assert o.sample(np.random.default_rng(0))["name"] == "low_light"


# --------------------------------------------------------------------------------------------
# Real-ESRGAN / HYPIR pipeline
# --------------------------------------------------------------------------------------------


def test_usm_sharpen():
    flat = torch.full((1, 3, 40, 40), 0.4)
    assert torch.allclose(usm_sharpen(flat), flat, atol=1e-6)  # nothing above threshold
    edge = torch.zeros(1, 1, 64, 64)
    edge[..., 32:] = 0.8
    edge[..., :32] = 0.2
    s = usm_sharpen(edge)
    assert float(s[..., 31].mean()) < 0.2 and float(s[..., 32].mean()) > 0.8  # overshoot at the edge
    assert float(s.min()) >= 0 and float(s.max()) <= 1
    y = usm_sharpen(IMG)
    assert y.shape == IMG.shape and y.dtype == IMG.dtype


def test_realesrgan_pipeline():
    deg = RealESRGANDegradation()
    gt = torch.cat([IMG, IMG.flip(-1)])
    for seed in range(6):
        rng = np.random.default_rng(seed)
        p = deg.sample(rng)
        lq = deg.apply(gt, p)
        assert lq.shape == gt.shape and lq.dtype == gt.dtype
        k = lq * 255
        assert torch.allclose(k, torch.round(k), atol=1e-4)  # on the 8-bit grid
        assert float(lq.min()) >= 0 and float(lq.max()) <= 1
        assert torch.equal(lq, deg.apply(gt, _replayed(p)))
    assert p["scale"] == 4 and p["resize_back"] == "bicubic" and p["usm"]["radius"] == 50
    tgt, lq, p = deg.pair(gt, np.random.default_rng(3))
    assert torch.equal(tgt, usm_sharpen(gt)) and torch.equal(lq, deg.apply(gt, p))
    small = RealESRGANDegradation(RealESRGANConfig(resize_back=None)).apply(gt, p | {"resize_back": None})
    assert small.shape[-2:] == (16, 16)


def test_realesrgan_sampling_follows_hypir_settings():
    deg = RealESRGANDegradation()
    ps = [deg.sample(np.random.default_rng(i)) for i in range(600)]
    frac = lambda f: sum(1 for p in ps if f(p)) / len(ps)
    assert abs(frac(lambda p: p["stage2"]["blur"]) - 0.8) < 0.06
    assert abs(frac(lambda p: p["final"]["sinc"] is not None) - 0.8) < 0.06
    assert abs(frac(lambda p: p["final"]["order"] == "resize_first") - 0.5) < 0.07
    assert abs(frac(lambda p: p["stage1"]["noise"]["name"] == "gaussian_noise") - 0.5) < 0.07
    assert abs(frac(lambda p: p["stage1"]["noise"]["params"]["gray"]) - 0.4) < 0.07
    assert abs(frac(lambda p: p["stage2"]["resize"]["updown"] == "keep") - 0.3) < 0.07
    for p in ps:
        s1, s2 = p["stage1"], p["stage2"]
        assert 0.15 <= s1["resize"]["scale"] <= 1.5 and 0.3 <= s2["resize"]["scale"] <= 1.2
        assert 30 <= s1["jpeg"]["quality"] <= 95 and 30 <= s2["jpeg"]["quality"] <= 95
        n1, n2 = s1["noise"]["params"], s2["noise"]["params"]
        assert (1 <= n1["sigma"] <= 30) if "sigma" in n1 else (0.05 <= n1["scale"] <= 3)
        assert (1 <= n2["sigma"] <= 25) if "sigma" in n2 else (0.05 <= n2["scale"] <= 2.5)
        if s2["kernel"]["type"] != "sinc":
            assert 0.2 <= s2["kernel"]["sigma_x"] <= 1.5


# --------------------------------------------------------------------------------------------
# mixtures
# --------------------------------------------------------------------------------------------


def test_seven_task_mixture():
    m = mio_seven_task_mixture()
    assert m.tasks == TASKS
    rng = np.random.default_rng(0)
    seen = Counter(m.sample(rng)["task"] for _ in range(700))
    assert set(seen) == set(TASKS) and min(seen.values()) > 60
    for t in TASKS:
        s = m.sample(rng, task=t)
        y = m.apply(IMG, _replayed(s))
        assert y.shape == IMG.shape and torch.equal(y, torch.round(y * 255) / 255)
        assert torch.equal(y, m.apply(IMG, s))
    p = m.sample(rng, task="blur")["params"]["kernel"]
    assert p["type"] == "iso" and 1 <= p["sigma_x"] <= 3 and 7 <= p["size"] <= 21
    assert 15 <= m.sample(rng, task="noise")["params"]["sigma"] <= 50
    assert 30 <= m.sample(rng, task="jpeg")["params"]["quality"] <= 70
    with pytest.raises(KeyError, match="expected one of"):
        m.degradation("snow")


def test_fixed_params_reproducible():
    m = mio_seven_task_mixture()
    for t in TASKS:
        a, b = m.fixed_params(t, 5, seed=1), m.fixed_params(t, 5, seed=1)
        assert a == b and a["task"] == t
        assert torch.equal(m.apply(IMG, a), m.apply(IMG, b))
    assert m.fixed_params("noise", 5, seed=1) != m.fixed_params("noise", 6, seed=1)
    assert m.fixed_params("noise", 5, seed=1) != m.fixed_params("noise", 5, seed=2)


def test_three_task_mixture():
    m = three_task_mixture()
    assert m.tasks == ("noise", "rain", "haze")
    sig = {m.sample(np.random.default_rng(i), task="noise")["params"]["sigma"] for i in range(60)}
    assert sig == {15.0, 25.0, 50.0}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_result_on_gpu():
    rng = np.random.default_rng(0)
    for deg in (GaussianNoise(), PoissonNoise(), Haze(), Rain(), JPEG()):
        p = deg.sample(rng)
        a = deg.apply(IMG.double(), p)
        b = deg.apply(IMG.double().cuda(), p).cpu()
        assert torch.allclose(a, b, atol=1e-12)


# ----------------------------------------------------------------------------- cast shadows


def test_shadow_darkens_the_masked_share_and_keeps_blue():
    from irc.operators.shadow import Shadow

    shadow = Shadow()
    x = torch.full((1, 3, 64, 80), 0.8, dtype=torch.float64)
    params = {"darkness": 0.5, "tint": 0.3, "coverage": 0.3, "softness": 0.0, "grid": 3, "seed": 11}
    y = shadow.apply(x, params)
    m = shadow.mask(x, params)
    assert set(torch.unique(m).tolist()) == {0.0, 1.0}  # hard edge at softness 0
    assert abs(float(m.mean()) - 0.3) < 0.02
    inside = m[0, 0] > 0.5
    torch.testing.assert_close(y[0, :, ~inside], x[0, :, ~inside])  # light left alone
    light = y[0, :, inside].mean(1) / 0.8
    torch.testing.assert_close(light, torch.tensor([0.5 * 0.7, 0.5 * 0.85, 0.5], dtype=torch.float64))
    torch.testing.assert_close(shadow.apply(x, params), y, rtol=0, atol=0)  # replayed exactly
    soft = shadow.mask(x, {**params, "softness": 0.03})
    assert ((soft > 0.01) & (soft < 0.99)).any()  # a penumbra


def test_shadow_samples_in_range_and_task_degradation_labels_it():
    from irc.operators.presets import training_degradation

    rng = np.random.default_rng(0)
    degrade = training_degradation("task", name="shadow")
    x = torch.rand(1, 3, 32, 32)
    lq, target, label = degrade(x, rng)
    assert label == "shadow" and target is x and (lq <= x + 1 / 255).all() and (lq < x - 0.01).any()
    lq, _, label = training_degradation("task", name="haze")(x, rng)
    assert label == "haze" and not torch.equal(lq, x)
