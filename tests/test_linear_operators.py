"""Linear operators: adjointness, closed-form data steps, CS / CASSI / blur-SR specifics, files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from irc.errors import IrcError
from irc.operators.blur_sr import BlurDownsample, load_usrnet_kernels, psf2otf
from irc.operators.cassi import (
    CASSI,
    load_mask,
    load_measurement,
    normalize_measurement,
    shift,
    shift_back,
)
from irc.operators.cs import STANDARD_M_33, BlockCS, crop, num_measurements, pad_to_block
from irc.operators.kernels_io import load_kernels_mat, load_mat_array
from irc.operators.linear import (
    LinearOperator,
    SeparableMatrixOperator,
    adjointness_error,
    conjugate_gradient,
)

DATA = Path(os.environ.get("IRC_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _need(rel: str) -> Path:
    p = DATA / rel
    if not p.exists():
        pytest.skip(f"{rel} not found under {DATA} (set IRC_DATA_ROOT to the data pack)")
    return p


def _sim_mask() -> torch.Tensor:
    return load_mask(_need("CASSI/simulation/mask.mat"))


def _usrnet_kernels() -> list[torch.Tensor]:
    return load_usrnet_kernels(_need("kernels/kernels_12.mat"))


def _rand(shape, seed, dtype=torch.float64):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _random_mask(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ every operator, one table
# (id, factory, x_shape); factories are lazy so that data-pack skips stay per case.

OPERATORS = [
    ("cs-gauss-c1", lambda: BlockCS(0.25, matrix="gaussian"), (2, 1, 66, 99)),
    ("cs-orth-c1", lambda: BlockCS(0.10, matrix="orthogonal"), (2, 1, 33, 66)),
    ("cs-gauss-c3", lambda: BlockCS(0.1, block=8, channels=3, matrix="gaussian"), (2, 3, 16, 24)),
    ("cs-orth-c3", lambda: BlockCS(0.3, block=8, channels=3, matrix="orthogonal"), (2, 3, 16, 24)),
    ("cs-orth-c3-sep", lambda: BlockCS(0.25, block=8, channels=3, channel_mode="separate"), (2, 3, 16, 24)),
    ("cassi-sim-mask", lambda: CASSI(_sim_mask()), (1, 28, 256, 256)),
    ("cassi-random", lambda: CASSI(_random_mask(20, 24), bands=7, step=3), (2, 7, 20, 24)),
    ("cassi-3d-mask", lambda: CASSI(_rand((5, 12, 10), 3, torch.float32), bands=5), (2, 5, 12, 10)),
    ("blur-k0-s2", lambda: BlurDownsample(_usrnet_kernels()[0], 2), (2, 1, 26, 30)),
    ("blur-k5-s3", lambda: BlurDownsample(_usrnet_kernels()[5], 3), (2, 3, 27, 33)),
    ("blur-k9-s4", lambda: BlurDownsample(_usrnet_kernels()[9], 4), (2, 1, 28, 36)),
    ("blur-k11-s1", lambda: BlurDownsample(_usrnet_kernels()[11], 1), (1, 1, 25, 31)),
    ("blur-batched-k", lambda: BlurDownsample(torch.stack(_usrnet_kernels()[2:4]), 2), (2, 3, 26, 28)),
    ("imresize-x1/3", lambda: SeparableMatrixOperator.from_imresize((27, 33), scale=1 / 3), (2, 1, 27, 33)),
    ("imresize-x1/4", lambda: SeparableMatrixOperator.from_imresize((24, 20), scale=0.25), (1, 3, 24, 20)),
    ("imresize-x2", lambda: SeparableMatrixOperator.from_imresize((9, 11), scale=2), (1, 1, 9, 11)),
]
OP_IDS = [o[0] for o in OPERATORS]

# operators with a closed-form data step
PROX_OPERATORS = OPERATORS + [
    ("cs-gauss-c1-solve", lambda: BlockCS(0.25, block=11, matrix="gaussian"), (2, 1, 22, 33)),
    ("cs-orth-learnable", lambda: BlockCS(0.25, block=11, matrix="orthogonal", learnable=True), (2, 1, 22, 33)),
]


@pytest.mark.parametrize("name,factory,x_shape", OPERATORS, ids=OP_IDS)
def test_adjointness(name, factory, x_shape):
    op = factory()
    err = adjointness_error(op, x_shape, generator=torch.Generator().manual_seed(7))
    assert err < 1e-10, f"{name}: <Ax,y> vs <x,A^T y> relative error {err:.3g}"
    # shapes agree with the helpers
    y_shape = tuple(op.A(torch.zeros(x_shape, dtype=torch.float64)).shape)
    assert op.measurement_shape(x_shape) == y_shape
    assert op.input_shape(y_shape) == tuple(x_shape)


@pytest.mark.parametrize("per_sample_rho", [False, True], ids=["scalar-rho", "batch-rho"])
@pytest.mark.parametrize("name,factory,x_shape", PROX_OPERATORS, ids=[o[0] for o in PROX_OPERATORS])
def test_data_step_solves_prox(name, factory, x_shape, per_sample_rho):
    op = factory().double()
    x_true = _rand(x_shape, 1)
    with torch.no_grad():
        y = op.A(x_true)
        x = _rand(x_shape, 2)  # a poor estimate
        rho = 1.3
        if per_sample_rho:
            rho = torch.tensor([0.7, 3.0][: x_shape[0]], dtype=torch.float64).reshape(-1, 1, 1, 1)
        z = op.data_step(x, y, rho)
        assert z.shape == x.shape
        # the data residual shrinks
        assert (op.A(z) - y).norm() < (op.A(x) - y).norm()
        # optimality: A^T (A z - y) + (z - x) / rho = 0
        grad = op.A_adjoint(op.A(z) - y) + (z - x) / rho
        scale = op.A_adjoint(y).norm() + (x / rho).norm()
        # the orthogonal CS fast path assumes Phi Phi^T = I, which the stored float32 matrix
        # satisfies to float32 precision only
        tol = 1e-6 if isinstance(op, BlockCS) and op.has_orthonormal_rows() else 1e-10
        assert grad.norm() / scale < tol, f"{name}: prox optimality residual {grad.norm() / scale:.3g}"
        # large rho approaches the projection / least-squares end, small rho stays at x
        z_small = op.data_step(x, y, 1e-8)
        assert torch.allclose(z_small, x, atol=1e-6)


def test_blur_data_step_matches_direct_solve():
    """USRNet's FFT data module vs a dense solve of the normal equations (and vs CG)."""
    k = _usrnet_kernels()[8]
    for s, (h, w) in [(2, (26, 28)), (3, (27, 30)), (4, (28, 32))]:
        op = BlurDownsample(k, s).double()
        x = _rand((1, 1, h, w), 3)
        y = op.A(_rand((1, 1, h, w), 4)) + 0.01 * _rand((1, 1, h // s, w // s), 5)
        rho = 0.37
        n = h * w
        eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, h, w)
        a_mat = op.A(eye).reshape(n, -1).T  # (m, n): column j = A e_j
        lhs = a_mat.T @ a_mat + torch.eye(n, dtype=torch.float64) / rho
        rhs = a_mat.T @ y.reshape(-1) + x.reshape(-1) / rho
        direct = torch.linalg.solve(lhs, rhs).reshape(1, 1, h, w)
        z = op.data_step(x, y, rho)
        assert (z - direct).abs().max() < 1e-10
        z_cg = op.data_step_cg(x, y, rho, max_iter=200, tol=1e-12)
        assert (z_cg - direct).abs().max() < 1e-5


def test_gradient_step_formula():
    op = CASSI(_random_mask(8, 8), bands=4)
    x, xt = _rand((2, 4, 8, 8), 1, torch.float32), _rand((2, 4, 8, 8), 2, torch.float32)
    y = op.A(xt)
    rho = torch.tensor([0.5, 2.0]).reshape(2, 1, 1, 1)
    g = op.gradient_step(x, y, rho)
    ref = x - rho * op.A_adjoint(op.A(x) - y)
    torch.testing.assert_close(g, ref)
    torch.testing.assert_close(op.gradient_step(x, y, torch.tensor([0.5, 2.0])), ref)  # (B,) rho


def test_base_class_data_step_not_implemented_and_cg():
    class Diag(LinearOperator):
        def __init__(self):
            super().__init__()
            self.register_buffer("d", torch.linspace(0.1, 2.0, 12, dtype=torch.float64))

        def A(self, x):
            return x * self.d

        def A_adjoint(self, y):
            return y * self.d

    op = Diag()
    x, y = _rand((3, 12), 1), _rand((3, 12), 2)
    with pytest.raises(NotImplementedError):
        op.data_step(x, y, 1.0)
    z = op.data_step_cg(x, y, 2.0, max_iter=50)
    torch.testing.assert_close(z, (op.d * y + x / 2.0) / (op.d**2 + 0.5))
    assert adjointness_error(op, (3, 12)) < 1e-14
    b = _rand((2, 5), 3)
    torch.testing.assert_close(conjugate_gradient(lambda v: 3.0 * v, b), b / 3.0)


# ------------------------------------------------------------------ compressive sensing


def test_cs_standard_measurement_counts():
    for pct, m in STANDARD_M_33.items():
        assert num_measurements(pct / 100, 1089) == m
        assert BlockCS(pct / 100).m == m
    assert STANDARD_M_33 == {1: 10, 4: 43, 10: 109, 25: 272, 30: 327, 40: 436, 50: 545}
    assert num_measurements(0.2, 1089) == 218  # off-table: round half up (217.8)
    assert num_measurements(0.25, 3 * 1089) == 817  # joint colour blocks: 816.75
    with pytest.raises(ValueError):
        num_measurements(0.0, 1089)


@pytest.mark.parametrize("channels,mode", [(1, "joint"), (3, "joint"), (3, "separate")])
def test_cs_orthonormal_rows_and_state_dict(channels, mode):
    op = BlockCS(0.25, channels=channels, matrix="orthogonal", channel_mode=mode)
    phi = op.phi.double()
    torch.testing.assert_close(phi @ phi.T, torch.eye(op.m, dtype=torch.float64), atol=1e-6, rtol=0)
    assert "phi" in op.state_dict()
    # same seed -> same matrix; the state dict restores it into a fresh operator
    other = BlockCS(0.25, channels=channels, matrix="orthogonal", channel_mode=mode, seed=5)
    assert not torch.equal(other.phi, op.phi)
    other.load_state_dict(op.state_dict())
    assert torch.equal(other.phi, op.phi)
    g = BlockCS(0.25, matrix="gaussian")
    assert abs(float(g.phi.double().pow(2).sum(0).mean()) - 1.0) < 0.05  # N(0, 1/M): unit column norm


def test_cs_learnable_flag_gives_parameter_with_grad():
    op = BlockCS(0.1, block=11, learnable=True)
    assert isinstance(op.phi, torch.nn.Parameter) and op.phi.requires_grad
    assert [n for n, _ in op.named_parameters()] == ["phi"]
    x = _rand((2, 1, 22, 22), 1, torch.float32)
    y = op.A(x).detach()
    z = op.data_step(op.initial_estimate(y), y, 0.5)
    loss = (z - x).pow(2).mean() + (op.gradient_step(z, y, 0.1) - x).pow(2).mean()
    loss.backward()
    assert op.phi.grad is not None and torch.isfinite(op.phi.grad).all() and op.phi.grad.abs().sum() > 0
    frozen = BlockCS(0.1, block=11)
    assert not isinstance(frozen.phi, torch.nn.Parameter) and list(frozen.parameters()) == []
    assert "phi" in frozen.state_dict()


def test_cs_blocks_padding_and_matrix_layout():
    op = BlockCS(0.25, block=4, matrix="gaussian").double()
    x = _rand((1, 1, 10, 7), 1)
    xp, size = pad_to_block(x, 4)
    assert xp.shape[-2:] == (12, 8) and torch.equal(crop(xp, size), x)
    with pytest.raises(ValueError):
        op.A(x)
    y = op.A(xp)
    assert y.shape == (1, op.m, 3, 2)
    # block (i, j) measured by Phi @ vec(block), vec row-major
    blk = xp[0, 0, 4:8, 0:4].reshape(-1)
    torch.testing.assert_close(y[0, :, 1, 0], op.phi @ blk)
    # orthonormal rows: A^T is the minimum-norm solution, A A^T = I
    o = BlockCS(0.5, block=4).double()
    yy = _rand((1, o.m, 3, 2), 2)
    torch.testing.assert_close(o.A(o.initial_estimate(yy)), yy)
    # wrapping an external matrix (e.g. ISTA-Net+'s Phi) detects orthonormal rows
    assert BlockCS.from_matrix(o.phi.float(), block=4).has_orthonormal_rows()
    wrapped = BlockCS.from_matrix(op.phi.float(), block=4)
    assert not wrapped.has_orthonormal_rows() and wrapped.m == op.m
    with pytest.raises(ValueError):
        BlockCS.from_matrix(torch.zeros(3, 15), block=4)


def test_cs_ls_init_matrix():
    op = BlockCS(0.25, block=8, matrix="gaussian").double()
    g = torch.Generator().manual_seed(0)
    # smooth-ish training blocks: low-dimensional, so Q_init recovers them well
    basis = torch.randn(8, 64, generator=g, dtype=torch.float64)
    blocks = torch.randn(500, 8, generator=g, dtype=torch.float64) @ basis
    q = op.ls_init_matrix(blocks)
    assert q.shape == (64, op.m)
    x = (torch.randn(4, 8, generator=g, dtype=torch.float64) @ basis).reshape(4, 1, 8, 8)
    x_img = x.permute(1, 2, 0, 3).reshape(1, 1, 8, 32)  # four blocks side by side
    rec = op.initial_estimate(op.A(x_img), q=q.double())
    assert (rec - x_img).norm() / x_img.norm() < 1e-3


# ------------------------------------------------------------------ CASSI


def test_cassi_simulation_mask_and_shapes():
    mask = _sim_mask()
    assert mask.shape == (256, 256) and mask.dtype == torch.float32
    assert 0.0 < float(mask.min()) and float(mask.max()) == 1.0
    op = CASSI(mask)
    x = _rand((1, 28, 256, 256), 1, torch.float32)
    y = op.A(x)
    assert y.shape == (1, 1, 256, 310) and op.measurement_width == 310
    # MST conventions: y = sum_l shift(mask * x)_l ; normalisation y / 28 * 2
    torch.testing.assert_close(y[:, 0], shift(x * mask, 2).sum(1))
    torch.testing.assert_close(normalize_measurement(y), y / 14)
    h = op.initial_estimate(y)
    torch.testing.assert_close(h, shift_back(y / 14, 28, 2) * mask)
    assert op.initial_estimate(y, use_mask=False).shape == (1, 28, 256, 256)
    # A A^T is diagonal: A A^T v = Phi * v for any measurement v
    v = _rand((1, 1, 256, 310), 2, torch.float32)
    torch.testing.assert_close(op.A(op.A_adjoint(v)), op.phi_diag(v) * v, rtol=1e-5, atol=1e-5)


def test_cassi_real_mask_and_measurements():
    mask = load_mask(_need("CASSI/real/mask.mat"))
    assert mask.shape == (660, 660)
    paths = sorted((DATA / "CASSI" / "real" / "meas").glob("*.mat"))
    assert len(paths) == 5
    op = CASSI(mask, bands=28, step=2)
    for p in paths:
        meas = load_measurement(p)
        assert meas.shape == (660, 714) == (op.height, op.measurement_width)
        assert meas.dtype == torch.float32 and 0.0 <= float(meas.min()) and float(meas.max()) <= 1.0
    x0 = op.initial_estimate(meas[None, None])
    assert x0.shape == (1, 28, 660, 660)
    z = op.data_step(x0, meas[None, None], 1.0)
    assert torch.isfinite(z).all()


def test_cassi_mask_key_fallbacks(tmp_path):
    import scipy.io

    m = np.random.default_rng(0).random((6, 5)).astype(np.float32)
    shifted = np.zeros((6, 5 + 2 * 3, 4), np.float32)
    for band in range(4):
        shifted[:, 2 * band : 2 * band + 5, band] = m
    scipy.io.savemat(tmp_path / "a.mat", {"mask_3d_shift": shifted})
    scipy.io.savemat(tmp_path / "b.mat", {"info": np.array(["x"]), "something": m})
    scipy.io.savemat(tmp_path / "c.mat", {"meas": m})
    np.testing.assert_array_equal(load_mask(tmp_path / "a.mat").numpy(), m)
    np.testing.assert_array_equal(load_mask(tmp_path / "b.mat").numpy(), m)
    np.testing.assert_array_equal(load_measurement(tmp_path / "c.mat").numpy(), m)
    with pytest.raises(IrcError, match="not found"):
        load_mask(tmp_path / "missing.mat")
    with pytest.raises(IrcError, match="no variable"):
        load_mask(tmp_path / "b.mat", key="mask")


# ------------------------------------------------------------------ blur + downsampling


def test_usrnet_kernels_file():
    ks = _usrnet_kernels()
    assert len(ks) == 12 and all(k.shape == (25, 25) for k in ks)
    for k in ks:
        assert abs(float(k.double().sum()) - 1.0) < 1e-6 and float(k.min()) >= 0
    bic = load_kernels_mat(_need("kernels/kernels_bicubicx234.mat"))
    assert len(bic) == 3 and all(abs(float(k.double().sum()) - 1) < 1e-6 for k in bic)


def test_levin_v73_file_is_reported_or_read():
    p = _need("kernels/Levin09.mat")
    try:
        import h5py  # noqa: F401
    except ImportError:
        with pytest.raises(IrcError, match="v7.3"):
            load_kernels_mat(p)
    else:
        ks = load_kernels_mat(p)
        assert [k.shape[0] for k in ks] == [19, 17, 15, 27, 13, 21, 23, 23]


def test_blur_matches_scipy_wrap_convolution():
    from scipy import ndimage

    k = _usrnet_kernels()[10].double()
    x = _rand((1, 1, 30, 36), 1)
    for s in (1, 2, 3):
        y = BlurDownsample(k, s).A(x)
        ref = ndimage.convolve(x[0, 0].numpy(), k.numpy(), mode="wrap")[0::s, 0::s]
        np.testing.assert_allclose(y[0, 0].numpy(), ref, atol=1e-12)
    with pytest.raises(ValueError):
        BlurDownsample(k, 4).A(x)  # 30 x 36 is not a multiple of 4
    with pytest.raises(ValueError):
        psf2otf(k, (20, 20))


# ------------------------------------------------------------------ device / dtype / autograd


F32_CASES = [
    o for o in PROX_OPERATORS
    if o[0] in {"cs-orth-c1", "cassi-random", "blur-k5-s3", "imresize-x1/4", "cs-gauss-c1-solve"}
]


@pytest.mark.parametrize("name,factory,x_shape", F32_CASES, ids=[o[0] for o in F32_CASES])
def test_float32_and_autograd(name, factory, x_shape):
    op = factory()
    x = _rand(x_shape, 1, torch.float32).requires_grad_(True)
    y = op.A(_rand(x_shape, 2, torch.float32))
    assert y.dtype == torch.float32
    z = op.data_step(x, y, torch.full((x_shape[0], 1, 1, 1), 0.5))
    z2 = op.gradient_step(z, y, 0.1)
    assert z2.dtype == torch.float32 and z2.shape == x.shape
    z2.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # float32 agrees with float64 to single precision
    op64 = factory().double()
    z64 = op64.data_step(x.detach().double(), y.double(), 0.5)
    assert (z.detach().double() - z64).abs().max() < 1e-4


def test_operators_follow_module_to():
    op = CASSI(_random_mask(8, 8), bands=3).to(torch.float64)
    assert op.mask.dtype == torch.float64
    assert "mask" not in op.state_dict()  # data, not weights
    bd = BlurDownsample(torch.ones(3, 3) / 9, 2)
    assert "kernel" not in bd.state_dict()
    bd.set_kernel(torch.ones(5, 5) / 25)
    assert bd.kernel.shape == (1, 1, 5, 5)


def test_load_mat_array_errors(tmp_path):
    with pytest.raises(IrcError, match="not found"):
        load_mat_array(tmp_path / "nope.mat")
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"not a mat file at all")
    with pytest.raises(IrcError):
        load_mat_array(bad)
