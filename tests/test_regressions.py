"""Regression tests for defects found by trying the README as a new user (issue: architecture).

Each failed before its fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from irc.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_eval_bench_and_measurement_pick_lorun_weights_by_task(tmp_path, capsys, data_root):
    """`irc eval --method lorun --dataset set11` and `irc bench --method lorun` used to fail with
    "no shipped weights": the protocol's task (cs) now chooses the default weights."""
    assert main(["eval", "--method", "lorun", "--dataset", "set11", "--ratio", "0.25", "--limit", "1", "-o", str(tmp_path / "ev"), "-q", "--json"]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())[0]
    assert summary["weights_sha256"] and summary["psnr"] > 25
    assert main(["bench", "--method", "lorun", "--sizes", "66", "--repeats", "1", "--warmup", "0", "--json"]) == 0
    capsys.readouterr()


def test_missing_default_names_the_tasks_that_have_one(capsys):
    from irc.errors import UsageError
    from irc.restore import load_method

    with pytest.raises(UsageError, match="default weights exist for task cs, sr"):
        load_method("lorun", None, task="cassi", device="cpu", dtype="fp32", offline=True)


def test_bf16_restore_through_the_cli(tmp_path, capsys):
    """--dtype bf16 failed on every image ("Input type (BFloat16) and bias type (float)")."""
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "examples" / "camera.png"
    assert main(["restore", "--dtype", "bf16", "--device", "cpu", str(src), "-o", str(tmp_path), "-q"]) == 0
    assert main(["restore", "-m", "lorun", "--dtype", "bf16", "--device", "cpu", str(src), "-o", str(tmp_path / "cs"), "-q"]) == 0
    capsys.readouterr()


def test_cs_simulation_zero_pads_like_measurement_files(tmp_path):
    """The simulated path reflect-padded sides that are not multiples of 33 while measurement
    files (and ISTA-Net+) zero-pad: the two now give the same image, tiled or not."""
    from irc.methods.lorun import LoRun
    from irc.pipeline import restore_tensor

    m = LoRun.from_weights("lorun-cs-r25")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 70, 50, generator=gen)
    simulated = restore_tensor(m, x)
    path = m.measure_cs(x, tmp_path / "m.safetensors")
    from_file = m.restore_measurement(path)
    assert float((simulated - from_file).abs().max()) < 1e-5
    tiled = restore_tensor(m, x, tile=66, tile_overlap=33)
    assert tiled.shape == simulated.shape


def test_shipped_cs_matrix_is_stored_unscaled_and_checked(tmp_path):
    """cs.phi was stored as 10 x Phi; a file measured with the raw tensor reconstructed at 5 dB."""
    from irc.methods.lorun import LoRun
    from irc.operators.measurements import load_cs_measurement, save_cs_measurement
    from irc.weights import load_weights, resolve_weights

    state, meta = load_weights(resolve_weights("lorun-cs-r25").path)
    phi = state["cs.phi"].double()
    assert meta["cs_phi"] == "unscaled"
    assert torch.allclose(phi.norm(dim=1), torch.ones(phi.shape[0], dtype=torch.float64), atol=0.25)
    # measuring with the raw tensor of the weights is the documented format: it reconstructs
    m = LoRun.from_weights("lorun-cs-r25")
    x = torch.rand(1, 1, 66, 66, generator=torch.Generator().manual_seed(1)) * 0.2 + 0.4
    blocks = x.unfold(2, 33, 33).unfold(3, 33, 33).reshape(1, 2, 2, 1089)
    y = torch.einsum("mn,bijn->bmij", phi.float(), blocks)
    path = save_cs_measurement(tmp_path / "raw.safetensors", y, (66, 66), 0.25, 33)
    out = m.restore_measurement(path)
    assert 10 * torch.log10(1 / ((out - x) ** 2).mean()) > 25
    # a file made with another matrix is refused by fingerprint
    other = save_cs_measurement(tmp_path / "other.safetensors", y, (66, 66), 0.25, 33, phi=phi.float() * 2)
    from irc.errors import UsageError

    with pytest.raises(UsageError, match="another sampling matrix"):
        m.restore_measurement(other)
    assert load_cs_measurement(other)[2]["phi_sha256"]


def test_legacy_scaled_matrix_files_are_migrated(tmp_path):
    from irc.methods.lorun import LoRun
    from irc.weights import load_weights, resolve_weights, save_weights

    state, meta = load_weights(resolve_weights("lorun-cs-r10").path)
    legacy = {**state, "cs.phi": state["cs.phi"] * 10}
    old_meta = {k: v for k, v in meta.items() if k != "cs_phi"}
    path = save_weights(tmp_path / "old.safetensors", legacy, old_meta)
    assert torch.allclose(LoRun.from_weights(path).sampling_matrix(), state["cs.phi"])


def test_measurement_outputs_follow_the_umask(tmp_path):
    import os

    from irc.operators.measurements import save_cs_measurement

    old = os.umask(0o022)
    try:
        path = save_cs_measurement(tmp_path / "m.safetensors", torch.zeros(3, 2, 2), (66, 66), 0.01, 33)
    finally:
        os.umask(old)
    assert (os.stat(path).st_mode & 0o777) == 0o644


@pytest.mark.parametrize("name", ["lorun-cs-r25", "lorun-sr-x4", "tur-nafnet-mio7"])
def test_shipped_weights_load_and_restore(name, real_rgb):
    """Every shipped file loads into its method and restores a real crop (not only its sha256)."""
    from irc.methods import get_method
    from irc.pipeline import restore_tensor
    from irc.weights import find_entry

    entry = find_entry(name)
    method = get_method(entry.method).from_weights(name)
    x = torch.from_numpy(real_rgb)[None][..., :64, :64]
    y = restore_tensor(method, x)
    assert torch.isfinite(y).all() and y.shape[1] == 3
    assert float((y - x if y.shape == x.shape else y).abs().mean()) < 0.5
    _ = np


def test_exported_weights_and_checkpoints_follow_the_umask(tmp_path):
    """safetensors' save_file leaves its files 0600; irc's weights and checkpoints follow the
    umask like every other output (they were 0600)."""
    import os

    from irc.train.checkpoints import TENSORS, save_checkpoint_files
    from irc.weights import save_weights

    old = os.umask(0o022)
    try:
        weights = save_weights(tmp_path / "w.safetensors", {"a": torch.zeros(2)}, {"method": "tur", "config": {}})
        (tmp_path / "ckpt").mkdir()
        save_checkpoint_files(tmp_path / "ckpt", {"weights": {"a": torch.zeros(2)}}, {"step": 1})
    finally:
        os.umask(old)
    assert (os.stat(weights).st_mode & 0o777) == 0o644
    assert (os.stat(tmp_path / "ckpt" / TENSORS).st_mode & 0o777) == 0o644


def test_eval_default_folder_names_the_protocol(tmp_path, monkeypatch, capsys, data_root):
    """Issue 14.5: a second protocol of the same set no longer overwrites the first's results."""
    from irc.cli import main

    monkeypatch.chdir(tmp_path)
    for scale in ("4", "2"):
        assert main(["eval", "-m", "bicubic", "--dataset", "set5", "--scale", scale, "--limit", "1", "-q"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "eval-results").iterdir()) == ["set5-sr-x2", "set5-sr-x4"]


def test_eval_needs_a_method_and_prints_identical_for_zero_error(tmp_path, monkeypatch, capsys, data_root):
    """Issue 14.6: no silent default method, and no `inf` row."""
    from irc.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--dataset", "set11"]) == 2
    assert "name the method" in capsys.readouterr().err
    assert main(["eval", "-m", "identity", "--dataset", "cbsd68", "--task", "clean", "--limit", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert "identical" in out and "inf" not in out


def test_default_model_tiles_within_the_measured_bound():
    """Issue 14.7: the card's figure for the shipped photo model holds (fp32: --tile 128 moves a
    pixel by at most 2 grey levels against the whole image, with the default overlap)."""
    import numpy as np

    from irc.io import read_image
    from irc.pipeline import restore_tensor
    from irc.restore import load_method

    method = load_method("tur", None, task=None, device="cpu", dtype="fp32", offline=True)
    pixels = read_image(REPO / "examples" / "astronaut.png").pixels[:, 96:352, 96:352]
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]
    whole = (restore_tensor(method, x, tile=0) * 255).round()
    tiled = (restore_tensor(method, x, tile=128) * 255).round()
    assert float((whole - tiled).abs().max()) <= 2
