"""LoRun (METHODS.md section 2): tiny configs on CPU, every task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irc.errors import IrcError, UsageError
from irc.methods.base import TrainBatch
from irc.methods.lorun import LoRun, load_cs_measurement, save_cs_measurement
from irc.nn.lora import (
    LoRAConv2d,
    LoRALinear,
    adaptive_rank,
    base_parameters,
    lora_parameters,
    set_stage,
)

TINY = {"channels": 4, "mid_blocks": 1, "stages": 3}


def tiny(**overrides) -> LoRun:
    torch.manual_seed(0)
    return LoRun.from_config({**TINY, **overrides})


def perturb_lora(method: LoRun, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(method.network):
            p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.fixture
def cassi_mask(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(0)
    path = tmp_path / "mask.mat"
    scipy_io.savemat(str(path), {"mask": (rng.random((24, 24)) > 0.5).astype(np.float32)})
    return path


# ----------------------------------------------------------------------------- LoRA module


def test_adaptive_rank():
    assert adaptive_rank(32, 32, 10) == 4
    assert adaptive_rank(1, 32, 10) == 1
    assert adaptive_rank(64, 128, 10) == 7
    assert adaptive_rank(128, 128, 25) == 32


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_zero_initialised_lora_equals_base(kind):
    torch.manual_seed(0)
    if kind == "conv":
        base = torch.nn.Conv2d(6, 8, 3, padding=1)
        layer, x = LoRAConv2d(base, stages=4), torch.randn(2, 6, 9, 9)
    else:
        base = torch.nn.Linear(6, 8)
        layer, x = LoRALinear(base, stages=4), torch.randn(2, 6)
    for k in range(4):
        set_stage(layer, k)
        assert torch.equal(layer(x), base(x))
    with torch.no_grad():
        layer.lora_B[2].weight.fill_(0.1)
    set_stage(layer, 2)
    assert not torch.allclose(layer(x), base(x))
    set_stage(layer, 1)
    assert torch.equal(layer(x), base(x))
    assert len(base_parameters(layer)) == 2 and len(lora_parameters(layer)) == 8


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("variant", ["lorun", "block"])
def test_cs_shapes(variant):
    m = tiny(task="cs", ratio=0.1, variant=variant)
    x = torch.rand(2, 1, 40, 70)
    assert m.forward(x).shape == x.shape  # padded to 66 x 99 inside, cropped back
    out = m.restore(torch.rand(1, 1, 50, 37))
    assert out.shape == (1, 1, 50, 37) and 0 <= out.min() and out.max() <= 1
    assert m.network.cs.m == 109


def test_cassi_shapes(cassi_mask):
    m = tiny(task="cassi", mask=str(cassi_mask))
    x = torch.rand(1, 28, 24, 24)
    assert m.forward(x).shape == x.shape
    assert m.restore(x).shape == x.shape
    with pytest.raises(UsageError, match="mask"):
        m.forward(torch.rand(1, 28, 16, 16))


@pytest.mark.parametrize("scale", [2, 4])
def test_sr_shapes(scale):
    m = tiny(task="sr", scale=scale)
    y = torch.rand(1, 3, 16, 14)
    out = m.restore(y, kernel=3)
    assert out.shape == (1, 3, 16 * scale, 14 * scale)


def test_sr_without_a_kernel_says_it_assumes_kernel_0(capsys):
    m = tiny(task="sr", scale=2)
    y = torch.rand(1, 3, 16, 16)
    default = m.restore(y)
    err = capsys.readouterr().err
    assert "no --kernel given: assuming USRNet kernel 0" in err
    torch.testing.assert_close(default, m.restore(y, kernel=0))
    m.restore(y)
    assert "no --kernel" not in capsys.readouterr().err  # said once


# ----------------------------------------------------------------------------- data step


@pytest.mark.parametrize("task", ["cs", "cassi", "sr"])
def test_gradient_step_reduces_measurement_residual(task, cassi_mask):
    m = tiny(task=task, ratio=0.25, mask=str(cassi_mask), scale=2)
    torch.manual_seed(3)
    if task == "cs":
        op, x = m.network.cs, torch.rand(1, 1, 66, 66)
    elif task == "cassi":
        op, x = m.unfolding.operator({}), torch.rand(1, 28, 24, 24)
    else:
        op, x = m.unfolding.operator({"kernel": 0}), torch.rand(1, 3, 32, 32)
    y = op.A(x)
    guess = torch.rand_like(x)
    rho = m.network.rho()[0]
    z = guess - rho * op.A_adjoint(op.A(guess) - y)
    assert (op.A(z) - y).norm() < (op.A(guess) - y).norm()


# ----------------------------------------------------------------------------- LoRA stages


def test_zero_lora_makes_every_stage_equal_to_the_base(tmp_path):
    from irc.weights import save_weights

    base = tiny(phase=1, stages=1)
    with torch.no_grad():  # a non-trivial base (the tail starts at zero)
        for p in base.network.denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = save_weights(tmp_path / "base.safetensors", base.state_dict(), base.metadata())
    staged = tiny(phase=2, stages=4, init_from=str(path))
    z = torch.rand(1, 1, 33, 33)
    ref = base.network.denoise(z, 0)
    assert not torch.equal(ref, z)
    for k in range(4):
        assert torch.equal(staged.network.denoise(z, k), ref)
    assert torch.equal(staged.network.rho(), base.network.rho().expand(4))
    assert torch.equal(staged.network.cs.phi, base.network.cs.phi)
    assert staged.metadata()["config"]["init_from"] == ""


def test_phase2_trains_only_lora_rho_and_matrix_and_keeps_the_base_bit_identical():
    m = tiny(phase=2, stages=3)
    groups = m.parameter_groups()
    trainable = {id(p) for p in groups["main"]}
    base = base_parameters(m.network.denoiser)
    assert not any(id(p) in trainable for p in base)
    assert all(not p.requires_grad for p in base)
    assert id(m.network.cs.phi) in trainable and id(m.network.rho_raw) in trainable
    before = {k: v.clone() for k, v in m.network.denoiser.state_dict().items() if ".lora_" not in k}
    lora_before = [p.clone() for p in lora_parameters(m.network)]
    phi_before = m.network.cs.phi.detach().clone()
    opt = torch.optim.Adam(groups["main"], lr=1e-2)
    x = torch.rand(2, 1, 33, 33)
    for step in range(3):
        opt.zero_grad()
        loss = m.training_step(TrainBatch(lq=x, gt=x), step)["main"]
        loss.backward()
        opt.step()
    after = m.network.denoiser.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert any(not torch.equal(a, b) for a, b in zip(lora_parameters(m.network), lora_before))
    assert not torch.equal(m.network.cs.phi, phi_before)


def test_phase1_and_block_train_everything():
    for cfg in ({"phase": 1, "stages": 1}, {"variant": "block", "stages": 2}):
        m = tiny(**cfg)
        assert len(m.parameter_groups()["main"]) == len(list(m.network.parameters()))


def test_block_k_has_several_times_the_parameters():
    # the paper: 5.23 M (LoRun) vs 15.96 M (Block-9) for CS; ours: base + 9 x LoRA(gamma 10)
    k = 9
    lorun = LoRun.from_config({"stages": k})
    block = LoRun.from_config({"stages": k, "variant": "block"})
    n_lorun = sum(p.numel() for p in lorun.network.denoiser.parameters())
    n_block = sum(p.numel() for p in block.network.denoisers.parameters())
    assert 3 < n_block / n_lorun < k


# ----------------------------------------------------------------------------- weights, knobs


@pytest.mark.parametrize("task", ["cs", "sr"])
def test_save_load_round_trip_gives_identical_outputs(task, tmp_path):
    from irc.weights import save_weights

    m = tiny(task=task, scale=2)
    perturb_lora(m)
    path = save_weights(tmp_path / "w.safetensors", m.state_dict(), m.metadata())
    loaded = LoRun.from_weights(path)
    assert loaded.config == m.config
    x = torch.rand(1, 3 if task == "sr" else 1, 16, 18)
    assert torch.equal(loaded.restore(x), m.restore(x))


def test_cassi_round_trip_keeps_the_mask(tmp_path, cassi_mask):
    from irc.weights import save_weights

    m = tiny(task="cassi", mask=str(cassi_mask))
    perturb_lora(m)
    path = save_weights(tmp_path / "w.safetensors", m.state_dict(), m.metadata())
    loaded = LoRun.from_weights(path)
    x = torch.rand(1, 28, 24, 24)
    assert torch.equal(loaded.restore(x), m.restore(x))


def test_ratio_knob_must_match_the_weights():
    m = tiny(ratio=0.25)
    x = torch.rand(1, 1, 33, 33)
    assert m.restore(x, ratio=0.25).shape == x.shape
    with pytest.raises(UsageError, match="ratio 0.25"):
        m.restore(x, ratio=0.1)


def test_stages_knob():
    m = tiny(stages=3)
    perturb_lora(m)
    x = torch.rand(1, 1, 33, 33)
    assert not torch.equal(m.restore(x, stages=1), m.restore(x))
    with pytest.raises(UsageError, match="stages"):
        m.restore(x, stages=4)


# ----------------------------------------------------------------------------- measurement files


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_cs_measurement_file_reconstructs_like_the_simulation(tmp_path, suffix):
    m = tiny(ratio=0.1)
    perturb_lora(m)
    x = torch.rand(1, 1, 45, 60)
    from irc.operators.cs import pad_to_block

    xp, size = pad_to_block(x, 33)
    y = m.network.cs.A(xp)
    path = tmp_path / f"y{suffix}"
    if suffix == ".npz":
        np.savez(path, y=y[0].detach().numpy(), height=45, width=60)
    else:
        save_cs_measurement(path, y, size, 0.1, 33)
    y2, size2, _ = load_cs_measurement(path)
    assert size2 == (45, 60) and torch.equal(y2, y[0].detach())
    got = m.restore_measurement(path)
    ref = m.reconstruct(m.network.cs, y)[..., :45, :60].clamp(0, 1)
    assert got.shape == (1, 1, 45, 60)
    assert torch.allclose(got, ref, atol=1e-6)
    with pytest.raises(UsageError, match="measurements per block"):
        tiny(ratio=0.25).restore_measurement(path)


def test_cassi_measurement_file(tmp_path, cassi_mask):
    import scipy.io

    m = tiny(task="cassi", mask=str(cassi_mask))
    x = torch.rand(1, 28, 24, 24)
    y = m.unfolding.operator({}).A(x)
    path = tmp_path / "meas.mat"
    scipy.io.savemat(str(path), {"meas_real": y[0, 0].numpy()})
    got = m.restore_measurement(path)
    assert got.shape == (1, 28, 24, 24)
    assert torch.allclose(got, m.reconstruct(m.unfolding.operator({}), y).clamp(0, 1), atol=1e-5)
    # a measurement of another size needs its own mask
    big = torch.rand(1, 28, 30, 30)
    mask2 = tmp_path / "mask30.mat"
    scipy.io.savemat(str(mask2), {"mask": np.ones((30, 30), np.float32)})
    scipy.io.savemat(str(tmp_path / "big.mat"), {"meas_real": big.sum(1)[0].numpy()[:, :]})
    with pytest.raises(UsageError, match="mask"):
        m.restore_measurement(tmp_path / "big.mat")


# ----------------------------------------------------------------------------- CLI


def _tiny_weights(tmp_path, **cfg):
    from irc.weights import save_weights

    m = tiny(**cfg)
    perturb_lora(m)
    return m, save_weights(tmp_path / "tiny-lorun.safetensors", m.state_dict(), m.metadata())


def test_cli_restore_simulates_cs_and_checks_the_ratio(tmp_path, capsys):
    from PIL import Image

    from irc.cli import main

    _, weights = _tiny_weights(tmp_path, ratio=0.25)
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50)) * 255).astype(np.uint8)).save(img)
    code = main(["restore", "--method", "lorun", "--weights", str(weights), "--task", "cs", "--ratio", "0.25", "-o", str(tmp_path / "out"), "-q", str(img)])
    assert code == 0
    assert Image.open(tmp_path / "out" / "img_lorun.png").size == (50, 40)
    code = main(["restore", "--method", "lorun", "--weights", str(weights), "--ratio", "0.1", "-o", str(tmp_path / "out2"), "-q", str(img)])
    assert code != 0


def test_cli_restore_measurement_file(tmp_path):
    from PIL import Image

    from irc.cli import main
    from irc.operators.cs import pad_to_block

    m, weights = _tiny_weights(tmp_path, ratio=0.1)
    x = torch.rand(1, 1, 40, 50)
    xp, size = pad_to_block(x, 33)
    meas = save_cs_measurement(tmp_path / "scene.safetensors", m.network.cs.A(xp), size, 0.1, 33)
    code = main(["restore", "--method", "lorun", "--weights", str(weights), "--measurement", str(meas), "-q"])
    assert code == 0
    out = np.asarray(Image.open(tmp_path / "scene_lorun.png"), dtype=np.float32) / 255
    ref = m.restore_measurement(meas)[0, 0].numpy()
    assert out.shape == (40, 50) and np.abs(out - ref).max() <= 0.5 / 255 + 1e-6
    # a rerun skips the existing output (exit 0, as in image mode) and leaves it untouched
    before = (tmp_path / "scene_lorun.png").stat().st_mtime_ns
    assert main(["restore", "--method", "lorun", "--weights", str(weights), "--measurement", str(meas), "-q"]) == 0
    assert (tmp_path / "scene_lorun.png").stat().st_mtime_ns == before


def test_cassi_spectral_scores_follow_mst():
    from irc.data.protocols import Protocol
    from irc.evaluate import score

    gt = torch.rand(28, 16, 16)
    noisy = (gt + 0.01 * torch.randn_like(gt)).clamp(0, 1)
    s = score(noisy, gt, Protocol(dataset="kaist-cassi", task="cassi", color="spectral", crop_border=0, round_to_uint8=False))
    a, b = (noisy.double() * 256).round(), (gt.double() * 256).round()
    ref = np.mean([10 * np.log10(255**2 / float(((a[i] - b[i]) ** 2).mean())) for i in range(28)])
    assert abs(s["psnr"] - ref) < 1e-9
    assert 0 < s["ssim"] < 1 and s["sam"] > 0
    assert score(gt, gt, Protocol(dataset="kaist-cassi", task="cassi", color="spectral", crop_border=0, round_to_uint8=False))["sam"] < 1e-3


def test_cassi_eval_on_a_synthetic_cube(tmp_path, cassi_mask):
    """irc eval's kaist-cassi protocol end to end, on two small synthetic scenes."""
    import scipy.io

    from irc.data.benchmarks import open_benchmark
    from irc.evaluate import Run, evaluate

    folder = tmp_path / "kaist-cassi"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in (1, 2):
        scipy.io.savemat(str(folder / f"scene{i:02d}.mat"), {"img": rng.random((24, 24, 28)).astype(np.float32)})
    bench = open_benchmark("kaist-cassi", root=tmp_path)
    m = tiny(task="cassi", mask=str(cassi_mask))
    result = evaluate(Run(label="lorun", method=m, knobs={}, weights=None), bench)
    assert len(result.rows) == 2 and {"psnr", "ssim", "sam"} <= set(result.rows[0])
    assert "sam" in result.summary


def test_sr_eval_protocol_passes_the_kernel():
    """set5 with a USRNet kernel: the protocol's kernel reaches the method's kernel option."""
    from irc.data.benchmarks import open_benchmark
    from irc.evaluate import Run, evaluate, protocol_knobs

    bench = open_benchmark("set5", scale=2, kernel=5, limit=1)
    m = tiny(task="sr", scale=2)
    assert protocol_knobs(m, bench.protocol, {})["kernel"] == 5
    result = evaluate(Run(label="lorun", method=m, knobs={}, weights=None), bench)
    assert len(result.rows) == 1 and result.rows[0]["psnr"] > 10


def test_stage_gates_start_stages_after_the_first_near_the_identity(tmp_path):
    from irc.weights import save_weights

    base = tiny(phase=1, stages=1)
    with torch.no_grad():
        for p in base.network.denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = save_weights(tmp_path / "base.safetensors", base.state_dict(), base.metadata())
    gated = tiny(phase=2, stages=3, gate_init=0.0, init_from=str(path))
    z = torch.rand(1, 1, 33, 33)
    assert torch.equal(gated.network.denoise(z, 0), base.network.denoise(z, 0))
    assert torch.equal(gated.network.denoise(z, 2), z)
    assert any(p is gated.network.gate_raw for p in gated.parameter_groups()["main"])
    assert not hasattr(tiny().network, "gate_raw")  # the paper's network has no gates


def test_cs_block_aligned_tiles_for_large_images():
    m = tiny(ratio=0.25, stages=2)
    x = torch.rand(1, 1, 150, 170)
    whole = m.restore(x)
    tiled = m.restore(x, tile=99, tile_overlap=33)
    assert tiled.shape == whole.shape == x.shape
    # an untrained, non-identity network: tiles agree with the whole image away from borders
    assert (tiled - whole).abs().mean() < 0.05


def test_sampling_matrix_and_measure_cs(tmp_path):
    m = tiny(ratio=0.1)
    phi = m.sampling_matrix()
    assert phi.shape == (109, 33 * 33)
    x = torch.rand(1, 1, 33, 33)
    path = m.measure_cs(x, tmp_path / "y.safetensors")
    y, size, _ = load_cs_measurement(path)
    assert size == (33, 33)
    assert torch.allclose(y[:, 0, 0], phi @ x.reshape(-1), atol=1e-5)


def _write_cubes(folder, count: int, size: tuple[int, int], seed: int = 0, key: str = "img") -> None:
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(1, count + 1):
        # smooth-ish spectra so that the network has something to learn
        base = rng.random((size[0], size[1], 1)) * np.linspace(0.3, 1.0, 28)[None, None]
        scipy.io.savemat(str(folder / f"scene{i:02d}.mat"), {key: base.astype(np.float32)})


def test_cube_folder_crops_every_band_together(tmp_path):
    from irc.data.folders import CubeFolder

    _write_cubes(tmp_path / "cubes", 2, (30, 20))
    ds = CubeFolder(tmp_path / "cubes", 16, augment=True, seed=3)
    assert len(ds) == 2 and ds.channels == 28
    item = ds[1]
    assert item.shape == (28, 16, 16) and item.dtype == torch.float32
    # every band is the same spatial pattern times its band gain, crop and rotation included
    ratio = item[27] / item[0].clamp_min(1e-6)
    assert torch.allclose(ratio[item[0] > 1e-3], torch.full_like(ratio[item[0] > 1e-3], 1.0 / 0.3), rtol=1e-4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IrcError, match="no spectral cubes"):
        CubeFolder(tmp_path / "empty", 8)


def test_cassi_crops_smaller_than_the_mask_use_a_window_of_it(cassi_mask):
    m = tiny(task="cassi", mask=str(cassi_mask), phase=1)
    gt = torch.rand(2, 28, 16, 16)
    loss = m.training_step(TrainBatch(lq=gt, gt=gt), step=5)["main"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert m.network.rho_raw.grad is not None
    with pytest.raises(UsageError, match="28-band cubes, got 3-channel"):
        m.training_step(TrainBatch(lq=torch.rand(1, 3, 16, 16), gt=torch.rand(1, 3, 16, 16)), step=0)
    with pytest.raises(UsageError, match="larger than"):
        m.training_step(TrainBatch(lq=torch.rand(1, 28, 32, 32), gt=torch.rand(1, 28, 32, 32)), step=0)


def test_cli_trains_cassi_on_cubes_and_evaluates_kaist(tmp_path, cassi_mask, capsys):
    """irc train on a folder of .mat cubes (the CAVE layout), export, then irc eval --dataset kaist-cassi."""
    from irc.cli import main

    _write_cubes(tmp_path / "cave", 3, (40, 40))
    _write_cubes(tmp_path / "kaist-cassi", 2, (24, 24), seed=1)
    recipe = tmp_path / "cassi.toml"
    recipe.write_text(
        f"""method = "lorun"
steps = 3
batch = 2
seed = 0
log_every = 1
[config]
task = "cassi"
phase = 1
stages = 1
channels = 4
mid_blocks = 1
mask = "{cassi_mask}"
[data]
train = ["{tmp_path / 'cave'}"]
crop = 16
augment = true
degradation = "none"
[optimizers.default]
name = "adam"
lr = 1e-3
[validation]
dataset = "none"
"""
    )
    weights = tmp_path / "cassi.safetensors"
    assert main(["train", str(recipe), "--run-dir", str(tmp_path / "run"), "--export", str(weights), "-q"]) == 0
    m = LoRun.from_weights(weights)
    assert m.config.task == "cassi" and tuple(m.network.mask.shape) == (24, 24)
    results = tmp_path / "results"
    code = main(["eval", "--method", "lorun", "--weights", str(weights), "--dataset", "kaist-cassi", "--data-root", str(tmp_path), "--output", str(results), "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "sam" in out.lower()


def test_training_data_does_not_mix_cubes_and_images(tmp_path):
    from PIL import Image

    from irc.recipes import build_recipe
    from irc.train.data import training_dataset as _training_dataset

    _write_cubes(tmp_path / "cubes", 1, (20, 20))
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    recipe = build_recipe({"method": "lorun", "data": {"train": [str(tmp_path / "cubes"), str(tmp_path / "imgs")], "crop": 8}})
    with pytest.raises(UsageError, match="mixes"):
        _training_dataset(recipe)
    only_cubes = build_recipe({"method": "lorun", "data": {"train": [str(tmp_path / "cubes")], "crop": 8}})
    assert _training_dataset(only_cubes)[0].shape == (28, 8, 8)


def test_resolve_kernel_from_index_gaussian_and_files(tmp_path):
    import scipy.io
    from PIL import Image

    from irc.operators.blur_kernels import gaussian_kernel
    from irc.operators.blur_sr import load_usrnet_kernels, resolve_kernel

    assert torch.equal(resolve_kernel(3), load_usrnet_kernels()[3]) and torch.equal(resolve_kernel("3"), resolve_kernel(3))
    g = resolve_kernel("gaussian:1.5")
    assert g.shape == (11, 11) and abs(float(g.sum()) - 1) < 1e-6
    assert torch.allclose(g, torch.from_numpy(gaussian_kernel(11, 1.5)).float())
    raw = np.outer([1.0, 2.0, 1.0], [1.0, 4.0, 1.0])
    np.save(tmp_path / "k.npy", raw)
    scipy.io.savemat(str(tmp_path / "k.mat"), {"psf": raw})
    Image.fromarray((raw / raw.max() * 255).astype(np.uint8)).save(tmp_path / "k.png")
    expected = torch.from_numpy(raw / raw.sum()).float()
    for name, tol in (("k.npy", 1e-6), ("k.mat", 1e-6), ("k.png", 5e-3)):  # the PNG holds truncated 8-bit values
        assert torch.allclose(resolve_kernel(str(tmp_path / name)), expected, atol=tol), name
    np.save(tmp_path / "bad.npy", -raw)
    for bad, error in [(12, UsageError), ("gaussian:0", UsageError), (str(tmp_path / "bad.npy"), UsageError), (str(tmp_path / "none.npy"), IrcError)]:
        with pytest.raises(error):
            resolve_kernel(bad)


def test_cli_restore_sr_with_a_kernel_file_matches_the_named_kernel(tmp_path):
    from PIL import Image

    from irc.cli import main
    from irc.operators.blur_sr import BlurDownsample, resolve_kernel

    m, weights = _tiny_weights(tmp_path, task="sr", scale=2)
    k = resolve_kernel("gaussian:1.2")
    np.save(tmp_path / "psf.npy", k.double().numpy())
    hr = torch.rand(1, 3, 24, 20)
    lr = BlurDownsample(k, 2).A(hr).clamp(0, 1)
    Image.fromarray((lr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / "lr.png")
    outs = []
    for i, spec in enumerate(["gaussian:1.2", str(tmp_path / "psf.npy")]):
        out = tmp_path / f"out{i}"
        assert main(["restore", "--method", "lorun", "--weights", str(weights), "-O", f"kernel={spec}", "-o", str(out), "-q", str(tmp_path / "lr.png")]) == 0
        outs.append(np.asarray(Image.open(out / "lr_lorun.png")))
    assert outs[0].shape == (24, 20, 3) and np.abs(outs[0].astype(int) - outs[1].astype(int)).max() <= 1
    assert main(["restore", "--method", "lorun", "--weights", str(weights), "-O", "kernel=13", "-q", str(tmp_path / "lr.png")]) == 2


def test_every_task_is_one_class_over_the_same_unfolding_core():
    """LoRun's tasks are :mod:`irc.methods.lorun.tasks` classes; the method and its network never
    branch on the task's name for what the operator does (issue #10: one core over an operator)."""
    import inspect

    from irc.methods import lorun
    from irc.methods.lorun import TASKS, UnfoldingTask, network

    assert set(TASKS) == set(LoRun.tasks) == {"cs", "cassi", "sr"}
    for name, cls in TASKS.items():
        assert issubclass(cls, UnfoldingTask) and cls.name == name
        assert LoRun.task_profile(name) == cls.profile()
    for module in (lorun.LoRun.forward, lorun.LoRun.reconstruct, lorun.LoRun.training_step, network.LoRunNet):
        source = inspect.getsource(module)
        assert 'task == "' not in source and "task ==" not in source, module


def test_option_errors_keep_their_order(cassi_mask):
    """The weights' ratio or scale is reported before a kernel index out of range (as before the
    task classes)."""
    with pytest.raises(UsageError, match="trained at ratio 0.25"):
        tiny(ratio=0.25).knob_values({"ratio": 0.1, "kernel": 15})
    with pytest.raises(UsageError, match="x2 SR"):
        tiny(task="sr", scale=2).knob_values({"scale": 3, "kernel": 15})
    with pytest.raises(UsageError, match="kernel index must be 0-11"):
        tiny(task="sr", scale=2).knob_values({"kernel": 15})
    with pytest.raises(UsageError, match="low-resolution images"):
        tiny(task="sr", scale=2).restore_measurement("x.safetensors")
