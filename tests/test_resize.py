"""MATLAB-compatible imresize: bit-exactness on Set5, sizes, identity, dtypes, adjointness."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from irc.operators.resize import imresize, imresize_matrix, imresize_uint8, quantize_uint8

DATA = Path(os.environ.get("IRC_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))
SET5 = DATA / "Set5"
NAMES = ["baby", "bird", "butterfly", "head", "woman"]


def _need_set5():
    if not (SET5 / "HR").is_dir():
        pytest.skip(f"Set5 not found under {DATA} (set IRC_DATA_ROOT to the data pack)")


def _load(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _mod_crop(img: np.ndarray, s: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % s, : w - w % s]


def _to_t(a: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.from_numpy(a.copy()).permute(2, 0, 1).to(dtype) / 255.0


def _to_u8(t: torch.Tensor) -> np.ndarray:
    return quantize_uint8(t.double() * 255.0).to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", NAMES)
def test_set5_lr_bicubic_bit_exact(name, scale):
    _need_set5()
    hr = _mod_crop(_load(SET5 / "HR" / f"{name}.png"), scale)
    lr = _load(SET5 / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png")

    out = imresize_uint8(hr, 1 / scale)
    assert out.dtype == np.uint8 and out.shape == lr.shape
    assert np.array_equal(out, lr), f"{name} x{scale}: {(out != lr).sum()} pixels differ"

    for dtype in (torch.float64, torch.float32):
        t = imresize(_to_t(hr, dtype), 1 / scale, round_uint8_between_passes=True)
        assert t.dtype == dtype
        assert np.array_equal(_to_u8(t), lr), f"torch {dtype} {name} x{scale}"


def test_set5_x8_float_path_rounded_once():
    # X8 of this pack was made with a single rounding at the end (float imresize of the image)
    _need_set5()
    for name in NAMES:
        hr = _mod_crop(_load(SET5 / "HR" / f"{name}.png"), 8)
        lr = _load(SET5 / "LR_bicubic" / "X8" / f"{name}x8.png")
        assert np.array_equal(_to_u8(imresize(_to_t(hr), 1 / 8)), lr), name


def test_batched_and_3d_agree():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 17, 23, generator=g, dtype=torch.float64)
    y = imresize(x, 0.5)
    assert y.shape == (2, 3, 9, 12)
    torch.testing.assert_close(imresize(x[1], 0.5), y[1], rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "hw,scale,expect",
    [((10, 7), 2.0, (20, 14)), ((10, 7), 1.5, (15, 11)), ((5, 5), 3.3, (17, 17)), ((7, 9), 0.5, (4, 5))],
)
def test_output_size_is_ceil(hw, scale, expect):
    x = torch.rand(1, 1, *hw, dtype=torch.float64)
    assert imresize(x, scale).shape[-2:] == expect


def test_size_argument_and_anisotropic_scale():
    x = torch.rand(1, 2, 12, 20, dtype=torch.float64)
    assert imresize(x, size=(30, 7)).shape == (1, 2, 30, 7)
    assert imresize(x, (2.0, 0.5)).shape == (1, 2, 24, 10)
    with pytest.raises(ValueError):
        imresize(x)
    with pytest.raises(ValueError):
        imresize(x, 2.0, size=(3, 3))
    with pytest.raises(ValueError):
        imresize(x, 2.0, kernel="lanczos3")  # type: ignore[arg-type]


def test_upscale_preserves_constants_and_interpolates():
    x = torch.full((1, 1, 6, 6), 0.3, dtype=torch.float64)
    torch.testing.assert_close(imresize(x, 4.0), torch.full((1, 1, 24, 24), 0.3, dtype=torch.float64))
    # the weights of every output pixel sum to one
    for n, s in [(7, 2.0), (7, 0.5), (30, 1 / 3), (5, 3.7)]:
        a = imresize_matrix(n, scale=s)
        torch.testing.assert_close(a.sum(1), torch.ones(a.shape[0], dtype=torch.float64))


def test_identity_at_scale_one():
    x = torch.rand(2, 3, 11, 13, dtype=torch.float64)
    assert torch.equal(imresize(x, 1.0), x)
    assert torch.equal(imresize_matrix(9, scale=1.0), torch.eye(9, dtype=torch.float64))
    u8 = (np.arange(11 * 13 * 3) % 256).astype(np.uint8).reshape(11, 13, 3)
    assert np.array_equal(imresize_uint8(u8, 1.0), u8)


def test_float32_close_to_float64():
    x = torch.rand(1, 3, 40, 33, dtype=torch.float64)
    for s in (0.25, 1 / 3, 2.0, 3.0):
        y64 = imresize(x, s)
        y32 = imresize(x.float(), s)
        assert y32.dtype == torch.float32
        torch.testing.assert_close(y32.double(), y64, rtol=0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = torch.rand(2, 3, 40, 33, dtype=torch.float64)
    for s in (0.25, 2.0):
        torch.testing.assert_close(imresize(x.cuda(), s).cpu(), imresize(x, s))
        torch.testing.assert_close(imresize(x.float().cuda(), s).cpu().double(), imresize(x, s), rtol=0, atol=1e-5)
    y = imresize(x.cuda(), 0.5, round_uint8_between_passes=True).cpu()
    assert torch.equal(y, imresize(x, 0.5, round_uint8_between_passes=True))


@pytest.mark.parametrize("n,scale", [(16, 0.5), (31, 1 / 3), (9, 4.0), (12, 1.7), (20, 0.37)])
def test_matrix_adjointness(n, scale):
    g = torch.Generator().manual_seed(1)
    a = imresize_matrix(n, scale=scale)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    y = torch.randn(a.shape[0], generator=g, dtype=torch.float64)
    lhs = torch.dot(a @ x, y)
    rhs = torch.dot(x, a.T @ y)
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs.item()))
    # the matrix is the operator imresize applies along one dimension
    img = x.view(1, 1, n, 1).expand(1, 1, n, 3)
    col = imresize(img, (scale, 1.0))[0, 0, :, 0]
    torch.testing.assert_close(col, a @ x)


def test_round_half_away_from_zero():
    v = torch.tensor([0.5, 1.5, 2.5, 254.5, 255.7, -3.0, float("nan")], dtype=torch.float64)
    assert quantize_uint8(v).tolist() == [1.0, 2.0, 3.0, 255.0, 255.0, 0.0, 0.0]


def test_bad_inputs():
    with pytest.raises(TypeError):
        imresize(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 2.0)
    with pytest.raises(ValueError):
        imresize(torch.zeros(4, 4), 2.0)
    with pytest.raises(TypeError):
        imresize_uint8(np.zeros((4, 4), dtype=np.float32), 2.0)
    gray = np.zeros((8, 6), dtype=np.uint8)
    assert imresize_uint8(gray, 0.5).shape == (4, 3)
