"""Metrics: published Set5 x4 bicubic reference values and unit checks."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from irc.errors import IrcError
from irc.metrics import METRICS, LPIPSUnavailable, ergas, lpips, prepare, psnr, rgb_to_y, sam, ssim
from irc.operators.resize import imresize

DATA = Path(os.environ.get("IRC_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))
SET5 = DATA / "Set5"
NAMES = ["baby", "bird", "butterfly", "head", "woman"]


def _load(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"))
    return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].to(torch.float64) / 255.0


@pytest.fixture(scope="module")
def set5_x4_bicubic():
    """(upscaled, hr) pairs: LR_bicubic/X4 upscaled x4 by MATLAB bicubic on uint8 data."""
    if not (SET5 / "HR").is_dir():
        pytest.skip(f"Set5 not found under {DATA} (set IRC_DATA_ROOT to the data pack)")
    pairs = []
    for name in NAMES:
        hr = _load(SET5 / "HR" / f"{name}.png")
        h, w = hr.shape[-2:]
        hr = hr[..., : h - h % 4, : w - w % 4]  # mod crop
        lr = _load(SET5 / "LR_bicubic" / "X4" / f"{name}x4.png")
        sr = imresize(lr, 4.0, round_uint8_between_passes=True)
        assert sr.shape == hr.shape
        pairs.append((sr, hr))
    return pairs


def test_set5_x4_bicubic_psnr_reference(set5_x4_bicubic):
    vals = [psnr(sr, hr, y_channel=True, crop_border=4).item() for sr, hr in set5_x4_bicubic]
    mean = float(np.mean(vals))
    # published: 28.42 dB (e.g. SRCNN/VDSR/EDSR tables, Set5 x4 bicubic, Y channel); MATLAB's
    # uint8 imresize output scored on unrounded Y gives exactly this:
    assert round(mean, 4) == 28.4290, mean


def test_set5_x4_bicubic_ssim_reference(set5_x4_bicubic):
    vals = [ssim(sr, hr, y_channel=True, crop_border=4).item() for sr, hr in set5_x4_bicubic]
    mean = float(np.mean(vals))
    # published: 0.8104 (e.g. VDSR/LapSRN/EDSR tables, Set5 x4 bicubic, Y channel)
    assert abs(mean - 0.8104) <= 0.002, mean


def test_batched_equals_per_image(set5_x4_bicubic):
    sr, hr = set5_x4_bicubic[2]
    b_sr, b_hr = torch.cat([sr, hr]), torch.cat([hr, hr])
    p = psnr(b_sr, b_hr, y_channel=True, crop_border=4)
    assert p.shape == (2,) and p.dtype == torch.float64 and math.isinf(p[1].item())
    assert p[0].item() == pytest.approx(psnr(sr, hr, y_channel=True, crop_border=4).item(), abs=1e-12)
    s = ssim(b_sr, b_hr, y_channel=True, crop_border=4)
    assert s[1].item() == pytest.approx(1.0, abs=1e-12)


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=torch.float64)


def test_psnr_identical_is_inf():
    x = _rand(2, 3, 16, 16)
    assert torch.isinf(psnr(x, x)).all()


def test_psnr_symmetric():
    x, y = _rand(2, 3, 16, 16, seed=1), _rand(2, 3, 16, 16, seed=2)
    torch.testing.assert_close(psnr(x, y), psnr(y, x))
    torch.testing.assert_close(psnr(x, y, y_channel=True, crop_border=2), psnr(y, x, y_channel=True, crop_border=2))


def test_psnr_constant_offset():
    x = _rand(3, 1, 8, 8) * 0.5
    torch.testing.assert_close(psnr(x + 0.1, x), torch.full((3,), 20.0, dtype=torch.float64))
    # data_range scales consistently
    torch.testing.assert_close(psnr((x + 0.1) * 255, x * 255, data_range=255.0), torch.full((3,), 20.0, dtype=torch.float64))
    # (C,H,W) input is a batch of one
    assert psnr(x[0] + 0.1, x[0]).shape == (1,)


def test_prepare_rounding_and_crop():
    x = torch.tensor([0.5 / 255, 1.5 / 255, 1.2, -0.3], dtype=torch.float64).view(1, 1, 2, 2)
    out = prepare(x, y_channel=False, crop_border=0, round_to_uint8=True) * 255
    torch.testing.assert_close(out.flatten(), torch.tensor([1.0, 2.0, 255.0, 0.0], dtype=torch.float64))
    assert prepare(_rand(1, 3, 10, 12), y_channel=True, crop_border=3, round_to_uint8=False).shape == (1, 1, 4, 6)
    assert prepare(_rand(1, 4, 10, 12), y_channel=True, crop_border=1, round_to_uint8=False).shape == (1, 4, 8, 10)


def test_ssim_identical_is_one_and_decreases_with_noise():
    x = _rand(2, 3, 48, 48, seed=3)
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64))
    g = torch.Generator().manual_seed(4)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    s = [ssim((x + sigma * noise).clamp(0, 1), x).mean().item() for sigma in (0.01, 0.05, 0.2)]
    assert 1.0 > s[0] > s[1] > s[2]


def test_ssim_multichannel_is_mean_of_channels():
    x, y = _rand(1, 3, 32, 32, seed=5), _rand(1, 3, 32, 32, seed=6)
    per = [ssim(x[:, c : c + 1], y[:, c : c + 1]) for c in range(3)]
    torch.testing.assert_close(ssim(x, y), sum(per) / 3)


def test_rgb_to_y_range():
    white, black = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    torch.testing.assert_close(rgb_to_y(white), torch.full((1, 1, 2, 2), 235 / 255))
    torch.testing.assert_close(rgb_to_y(black), torch.full((1, 1, 2, 2), 16 / 255))
    with pytest.raises(ValueError):
        rgb_to_y(torch.zeros(1, 1, 2, 2))


def test_sam_scaled_spectra_is_zero():
    x = _rand(2, 31, 8, 8, seed=7) + 0.1
    scale = _rand(2, 1, 8, 8, seed=8) * 3 + 0.5  # a different positive factor per pixel
    assert sam(x * scale, x).abs().max().item() < 1e-6
    # orthogonal spectra: 90 degrees
    a = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    b = a.clone()
    a[0, 0], b[0, 1] = 1.0, 1.0
    assert sam(a, b).item() == pytest.approx(90.0)


def test_ergas():
    x = _rand(2, 8, 16, 16, seed=9) + 0.1
    assert torch.equal(ergas(x, x), torch.zeros(2, dtype=torch.float64))
    assert (ergas(x * 1.1, x) > 0).all()
    # a 10% relative error in every band: 100 * sqrt(0.01) = 10, divided by the ratio
    c = torch.full((1, 4, 8, 8), 0.5, dtype=torch.float64)
    assert ergas(c * 1.1, c).item() == pytest.approx(10.0)
    assert ergas(c * 1.1, c, ratio=4).item() == pytest.approx(2.5)


def test_lpips_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # makes `import lpips` raise ImportError
    monkeypatch.setattr("irc.metrics._LPIPS_MODELS", {})
    x = _rand(1, 3, 32, 32)
    with pytest.raises(LPIPSUnavailable) as info:
        lpips(x, x)
    assert isinstance(info.value, IrcError)
    msg = str(info.value)
    assert "\n" not in msg and "pip install lpips" in msg


def test_registry():
    assert set(METRICS) == {"psnr", "ssim", "sam", "ergas", "lpips"}
    assert METRICS["psnr"] is psnr and METRICS["ssim"] is ssim


def test_shape_mismatch():
    with pytest.raises(ValueError):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
