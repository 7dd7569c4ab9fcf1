"""The training loop on CPU with tiny methods (tests/tiny_methods.py): exact resume, two
processes, GAN groups, NaN skipping, signals, export, and the error paths."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from irc.errors import IrcError, UsageError
from irc.recipes import build_recipe, dumps_toml, load_recipe, recipe_to_dict
from irc.train import (
    MARKER,
    METRICS,
    ShardedStream,
    Synthesizer,
    TrainingAborted,
    latest_checkpoint,
    list_checkpoints,
    train,
)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture(autouse=True)
def tiny_registry(monkeypatch):
    import irc.methods

    monkeypatch.setitem(irc.methods.REGISTRY, "tiny", "tiny_methods:TinyRestorer")
    monkeypatch.setitem(irc.methods.REGISTRY, "toygan", "tiny_methods:ToyGAN")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def make_recipe(images: Path, **extra):
    raw = {
        "method": "tiny", "steps": 4, "batch": 2, "seed": 3, "log_every": 1,
        "data": {"train": [str(images)], "crop": 16, "degradation": "noise:25"},
        "checkpoint": {"every": 2, "keep": 0}, "ema": {"decay": 0.9},
    }  # fmt: skip
    return build_recipe(merge(raw, extra))


def weights(result) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in result.method.network.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]


def subprocess_env() -> dict[str, str]:
    from tiny_methods import EXTRA_METHODS

    return dict(os.environ, IRC_EXTRA_METHODS=EXTRA_METHODS, PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]))


def write_recipe(recipe, path: Path) -> Path:
    path.write_text(dumps_toml(recipe_to_dict(recipe)))
    return path


# ------------------------------------------------------------------------------- resume


def test_two_plus_two_steps_equal_four_bitwise(images, tmp_path):
    extra = dict(
        grad_accum=2, clip_grad=0.5, config={"jitter": 0.05},
        optimizers={"default": {"schedule": "cosine", "warmup": 1, "lr": 1e-3}},
    )  # fmt: skip
    recipe = make_recipe(images, **extra)
    straight = train(recipe, tmp_path / "a", quiet=True)
    assert straight.status == "finished" and straight.step == 4 and straight.exit_code == 0

    first = train(recipe, tmp_path / "b", quiet=True, stop_at=2)
    assert first.status == "stopped" and first.step == 2 and first.checkpoint.name == "step-00000002"
    # Another worker count for the second half: the data is a function of its position only.
    resumed = train(make_recipe(images, **extra, data={"workers": 1}), tmp_path / "b", quiet=True, resume="auto")
    assert resumed.status == "finished" and resumed.step == 4

    assert_same(weights(straight), weights(resumed))
    assert_same(straight.ema.shadow, resumed.ema.shadow)
    losses_a = [(r["step"], r["loss"], r["lr"]) for r in records(tmp_path / "a") if "loss" in r]
    losses_b = [(r["step"], r["loss"], r["lr"]) for r in records(tmp_path / "b") if "loss" in r]
    assert losses_a == losses_b and [s for s, _, _ in losses_b] == [1, 2, 3, 4]
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step-00000002", "step-00000004"]


def test_cli_steps_then_resume_for_more(images, tmp_path, capsys):
    """irc train --steps 2, then --steps 4 --resume auto: the weights of 4 steps in one go."""
    from irc.cli import main
    from irc.weights import load_weights

    path = write_recipe(make_recipe(images, config={"jitter": 0.05}), tmp_path / "r.toml")
    args = ["train", str(path), "--quiet"]
    assert main([*args, "--run-dir", str(tmp_path / "a"), "--steps", "4", "--export", str(tmp_path / "a.safetensors")]) == 0
    assert main([*args, "--run-dir", str(tmp_path / "b"), "--steps", "2"]) == 0
    assert main([*args, "--run-dir", str(tmp_path / "b"), "--steps", "4", "--resume", "auto", "--export", str(tmp_path / "b.safetensors")]) == 0
    assert_same(load_weights(tmp_path / "a.safetensors")[0], load_weights(tmp_path / "b.safetensors")[0])
    capsys.readouterr()


def test_checkpoint_rotation_and_resume_at_the_end(images, tmp_path):
    recipe = make_recipe(images, steps=6, checkpoint={"every": 1, "keep": 2})
    result = train(recipe, tmp_path, quiet=True)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000005", "step-00000006"]
    assert not list((tmp_path / "checkpoints").glob(".*"))
    marker = json.loads((result.checkpoint / MARKER).read_text())
    assert marker["step"] == 6 and marker["samples"] == 12 and marker["trained_on"] == "1x CPU"
    again = train(recipe, tmp_path, quiet=True, resume="auto")  # nothing left to do
    assert again.status == "finished" and again.step == 6
    assert_same(weights(result), weights(again))


def test_existing_run_needs_resume(images, tmp_path):
    recipe = make_recipe(images, steps=1)
    train(recipe, tmp_path, quiet=True)
    with pytest.raises(UsageError, match="already holds a run.*--resume auto"):
        train(recipe, tmp_path, quiet=True)
    with pytest.raises(UsageError, match="not a checkpoint"):
        train(recipe, tmp_path / "other", quiet=True, resume=tmp_path / "nope")


def test_sharded_stream_partitions_the_global_stream():
    def take(stream, n):
        it = iter(stream)
        return [next(it) for _ in range(n)]

    one = [k for batch in take(ShardedStream(7, 5, 0, 4), 6) for k in batch]
    two = list(zip(take(ShardedStream(7, 5, 0, 2, 0, 2), 6), take(ShardedStream(7, 5, 0, 2, 1, 2), 6)))
    assert one == [k for r0, r1 in two for k in r0 + r1]
    assert [q for _, _, q in one] == list(range(24))
    for epoch in range(3):  # every epoch is a permutation of the items
        assert sorted(i for e, i, _ in one if e == epoch) == list(range(7))
    assert take(ShardedStream(7, 5, 10, 4), 1)[0] == one[10:14]  # a resumed stream starts mid-way


# ------------------------------------------------------------------------------- processes


def test_torchrun_two_processes_keep_identical_weights(images, tmp_path):
    recipe = make_recipe(images, steps=3, checkpoint={"every": 2})
    path = write_recipe(recipe, tmp_path / "r.toml")
    run_dir, out = tmp_path / "ddp", tmp_path / "ddp.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "irc", "train", str(path),
           "--run-dir", str(run_dir), "--device", "cpu", "--export", str(out), "--quiet"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=subprocess_env(), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    replicas = [r for r in records(run_dir) if "replicas" in r]
    assert [r["step"] for r in replicas] == [2, 3]
    assert all(r["replicas"]["identical"] and len(set(r["replicas"]["sha256"])) == 1 and len(r["replicas"]["sha256"]) == 2 for r in replicas)
    last = [r for r in records(run_dir) if "loss" in r][-1]
    assert last["samples"] == 3 * 2 * 2 and "sha256" in proc.stdout

    # Two processes of batch 2 see the samples one process of batch 4 sees, and average their
    # gradients: the same training up to float rounding.
    from irc.weights import load_weights

    single = train(make_recipe(images, steps=3, batch=4), tmp_path / "single", quiet=True)
    ddp, metadata = load_weights(out)
    assert metadata["trained_on"] == "2x CPU"
    for key, value in single.ema.shadow.items():
        torch.testing.assert_close(ddp[key], value, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------- groups


def test_gan_groups_step_only_their_own_parameters(images, tmp_path, monkeypatch):
    from tiny_methods import ToyGAN

    ToyGAN.instances.clear()
    events = []
    original = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        net = ToyGAN.instances[-1].network
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        out = original(self, *args, **kwargs)
        mine = {id(p) for group in self.param_groups for p in group["params"]}
        owner = "g" if any(id(p) in mine for p in net["g"].parameters()) else "d"
        changed = {n.split(".")[0] for n, p in net.named_parameters() if not torch.equal(before[n], p)}
        events.append((owner, changed))
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    recipe = make_recipe(images, method="toygan", steps=3, config={"d_from_step": 1}, ema={"decay": 0.0},
                         optimizers={"d": {"lr": 1e-3}})
    result = train(recipe, tmp_path / "gan", quiet=True)
    # step 0: only g (d starts at step 1); then g and d, in parameter_groups order
    assert events == [("g", {"g"}), ("g", {"g"}), ("d", {"d"}), ("g", {"g"}), ("d", {"d"})]
    assert result.ema is None
    logged = [r for r in records(tmp_path / "gan") if "loss" in r]
    assert list(logged[0]["loss"]) == ["g"] and list(logged[-1]["loss"]) == ["g", "d"]
    assert logged[-1]["lr"] == {"g": 2e-4, "d": 1e-3}


def test_generator_loss_leaves_no_gradient_on_the_discriminator(images, tmp_path):
    """d's own loss has zero gradient; g's loss flows through d. Adam moves d only if it leaked."""
    from tiny_methods import ToyGAN

    recipe = make_recipe(images, method="toygan", steps=2, grad_accum=2, config={"zero_d_loss": True}, ema={"decay": 0.0})
    result = train(recipe, tmp_path, quiet=True)
    torch.manual_seed(recipe.seed)
    initial = ToyGAN.from_config(recipe.config).network
    for name, value in initial.state_dict().items():
        same = torch.equal(value, result.method.network.state_dict()[name])
        assert same == name.startswith("d."), name


def test_unknown_optimizer_group(images, tmp_path):
    with pytest.raises(UsageError, match="has no loss group 'x'; its groups: g, d"):
        train(make_recipe(images, method="toygan", optimizers={"x": {"lr": 1.0}}), tmp_path, quiet=True)


# ------------------------------------------------------------------------------- failures


@pytest.mark.parametrize("key, where", [("nan_steps", "loss"), ("bad_grad_steps", "gradient")])
def test_nonfinite_steps_are_skipped_and_counted(images, tmp_path, key, where):
    bad = train(make_recipe(images, steps=3, config={key: [1, 2]}, ema={"decay": 0.0}), tmp_path / "bad", quiet=True)
    clean = train(make_recipe(images, steps=3, ema={"decay": 0.0}), tmp_path / "clean", quiet=True, stop_at=1)
    assert bad.status == "finished" and bad.nonfinite == 2
    assert_same(weights(bad), weights(clean))  # skipped steps change nothing
    log = records(tmp_path / "bad")
    events = [r for r in log if r.get("event") == "nonfinite"]
    assert [e["step"] for e in events] == [2, 3] and all(e["where"] == where for e in events)
    if where == "loss":
        assert events[0]["loss"] == {"main": "nan"}
    else:
        assert events[0]["grad_norm"] == {"main": "nan"} and isinstance(events[0]["loss"]["main"], float)
    assert [r["nonfinite"] for r in log if "loss" in r and "event" not in r] == [0, 1, 2]


def test_too_many_nonfinite_losses_abort_with_a_checkpoint(images, tmp_path, capsys):
    from irc.cli import main

    recipe = make_recipe(images, steps=6, max_nonfinite=2, config={"nan_steps": [1, 2, 3, 4, 5]})
    path = write_recipe(recipe, tmp_path / "r.toml")
    code = main(["train", str(path), "--run-dir", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "2 steps in a row had a non-finite loss" in err and "--resume auto" in err
    checkpoint = latest_checkpoint(tmp_path / "run")
    assert checkpoint.name == "step-00000003"
    assert json.loads((checkpoint / MARKER).read_text())["reason"] == "nonfinite"
    with pytest.raises(TrainingAborted):
        train(recipe, tmp_path / "api", quiet=True)


def test_sigterm_saves_a_checkpoint_that_resumes_exactly(images, tmp_path):
    recipe = make_recipe(images, steps=12, config={"sleep": 0.3}, checkpoint={"every": 100})
    path = write_recipe(recipe, tmp_path / "r.toml")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "irc", "train", str(path), "--run-dir", str(run_dir), "--quiet"],
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (run_dir / METRICS).is_file() and any(r.get("step", 0) >= 2 for r in records(run_dir)):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "SIGTERM" in err and "--resume auto" in err and "Traceback" not in err
    checkpoint = latest_checkpoint(run_dir)
    marker = json.loads((checkpoint / MARKER).read_text())
    assert marker["reason"] == "signal" and 2 <= marker["step"] < 12

    fast = make_recipe(images, steps=12, checkpoint={"every": 100})  # sleeping changes no number
    resumed = train(fast, run_dir, quiet=True, resume="auto")
    straight = train(fast, tmp_path / "straight", quiet=True)
    assert resumed.step == 12
    assert_same(weights(resumed), weights(straight))
    assert_same(resumed.ema.shadow, straight.ema.shadow)


def test_unwritable_run_directory_is_one_line(images, tmp_path, capsys):
    from irc.cli import main

    path = write_recipe(make_recipe(images, steps=1), tmp_path / "r.toml")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = main(["train", str(path), "--run-dir", str(blocker / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot create the run directory" in err and "Traceback" not in err


def test_full_disk_is_reported(images, tmp_path, monkeypatch):
    import irc.train.loop

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(irc.train.loop, "save_checkpoint_files", full)
    with pytest.raises(IrcError, match="cannot save a checkpoint in .*no space left on device.*--resume auto"):
        train(make_recipe(images, steps=2), tmp_path, quiet=True)


def test_fp16_needs_a_gpu(images, tmp_path):
    with pytest.raises(UsageError, match="fp16.*GPU"):
        train(make_recipe(images, mixed_precision="fp16"), tmp_path, device="cpu", quiet=True)


def test_bf16_autocast_on_cpu(images, tmp_path):
    result = train(make_recipe(images, steps=2, mixed_precision="bf16"), tmp_path, device="cpu", quiet=True)
    assert result.status == "finished" and result.nonfinite == 0
    assert "bf16" in json.loads((result.checkpoint / MARKER).read_text())["trained_on"]


# ------------------------------------------------------------------------------- export


def test_export_loads_with_from_weights(images, tmp_path, capsys):
    from tiny_methods import TinyRestorer

    from irc.cli import main
    from irc.weights import load_weights, read_metadata

    recipe = make_recipe(images, steps=2, config={"width": 3})
    path = write_recipe(recipe, tmp_path / "tiny-denoise.toml")
    out = tmp_path / "weights" / "tiny.safetensors"
    code = main(["train", str(path), "--run-dir", str(tmp_path / "run"), "--export", str(out), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0 and f"exported {out}" in stdout and '[[weights]]\nname = "tiny-denoise"' in stdout

    method = TinyRestorer.from_weights(out)
    assert method.config.width == 3
    assert method.weights_sha256 in stdout
    meta = read_metadata(out)
    assert meta["method"] == "tiny" and meta["steps"] == "2" and meta["trained_on"] == "1x CPU" and meta["irc_version"]
    assert meta["name"] == "tiny-denoise"
    assert json.loads(meta["data"]) == {"train": [images.name], "pairs": [], "degradation": "noise:25", "crop": 16, "grey": False}
    assert json.loads(meta["recipe"])["steps"] == 2

    # The export holds the EMA weights; --export-only from the run gives the same tensors.
    from irc.train.checkpoints import load_checkpoint

    state, _ = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert_same(load_weights(out)[0], state["ema"]["shadow"])
    again = tmp_path / "again.safetensors"
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--export-only", "--export", str(again)]) == 0
    assert_same(load_weights(again)[0], load_weights(out)[0])
    assert read_metadata(again)["name"] == "run"  # no export.name in the recipe: the run directory's name
    named = make_recipe(images, steps=1, config={"width": 3}, export={"name": "my-name"})
    assert main(["train", str(write_recipe(named, tmp_path / "other.toml")), "--run-dir", str(tmp_path / "run2"), "-q"]) == 0
    capsys.readouterr()
    assert main(["train", "--run-dir", str(tmp_path / "run2"), "--export-only", "--export", str(again)]) == 0
    assert read_metadata(again)["name"] == "my-name" and 'name = "my-name"' in capsys.readouterr().out
    assert main(["train", "--export-only", "--run-dir", str(tmp_path / "run")]) == 2
    assert "needs --export" in capsys.readouterr().err


# ------------------------------------------------------------------------------- data, validation


def test_synthesizer_is_keyed_by_sample_position():
    torch.manual_seed(0)
    gt = torch.rand(3, 3, 16, 16)
    noise = Synthesizer("noise:10-30", seed=1)
    a, b = noise(gt, [5, 6, 7]), noise(gt[1:], [6, 7])
    assert torch.equal(a.lq[1:], b.lq) and not torch.equal(a.lq, gt) and a.gt is not None
    assert Synthesizer("bicubic:2", 1)(gt, [0, 1, 2]).lq.shape == (3, 3, 8, 8)
    assert torch.equal(Synthesizer("none", 1)(gt, [0, 1, 2]).lq, gt)
    mixed = Synthesizer("mixture:three", 1)(gt, [0, 1, 2])
    assert len(mixed.task) == 3 and set(mixed.task) <= {"noise", "rain", "haze"}
    jpeg = Synthesizer("jpeg:10", 1)(gt, [0, 1, 2])
    assert jpeg.lq.shape == gt.shape and jpeg.task is None


@pytest.fixture
def real_pairs(tmp_path) -> tuple[Path, Path]:
    """Three "rainy" / clean pairs: the degraded image is the clean one plus a constant 0.2."""
    rng = np.random.default_rng(4)
    lq_dir, gt_dir = tmp_path / "pairs" / "rain", tmp_path / "pairs" / "norain"
    lq_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    for i in range(3):
        clean = (rng.random((24, 20, 3)) * 150).astype(np.uint8)
        Image.fromarray(clean).save(gt_dir / f"{i}.png")
        Image.fromarray(clean + 51).save(lq_dir / f"{i}.png")
    return lq_dir, gt_dir


def test_real_pairs_join_the_stream_with_their_task_label(images, real_pairs, tmp_path, monkeypatch):
    import tiny_methods

    seen: list = []
    original = tiny_methods.TinyRestorer.training_step

    def recording(self, batch, step):
        seen.append((batch.lq.clone(), batch.gt.clone(), batch.task))
        return original(self, batch, step)

    monkeypatch.setattr(tiny_methods.TinyRestorer, "training_step", recording)
    lq_dir, gt_dir = real_pairs
    recipe = make_recipe(
        images, steps=8, batch=4,
        data={"degradation": "mixture:three", "pairs": [["rain", str(lq_dir), str(gt_dir)]], "pair_repeat": 2, "augment": False},
    )  # fmt: skip
    assert train(recipe, tmp_path / "run", quiet=True).status == "finished"
    lq = torch.cat([b[0] for b in seen])
    gt = torch.cat([b[1] for b in seen])
    tasks = [t for b in seen for t in b[2]]
    # 5 clean images + 3 pairs x 2 repeats = 11 per epoch; 32 samples cover every pair
    assert len(tasks) == 32 and set(tasks) <= {"noise", "rain", "haze"}
    real = [i for i in range(32) if torch.allclose(lq[i] - gt[i], torch.full_like(gt[i], 51 / 255), atol=1e-6)]
    assert len(real) >= 6 and all(tasks[i] == "rain" for i in real)


def test_real_pairs_need_a_size_keeping_degradation_and_existing_folders(images, real_pairs, tmp_path):
    lq_dir, gt_dir = real_pairs
    with pytest.raises(UsageError, match="keeps the image size"):
        make_recipe(images, data={"degradation": "bicubic:2", "pairs": [["rain", str(lq_dir), str(gt_dir)]]})
    with pytest.raises(UsageError, match="needs a task"):
        make_recipe(images, data={"pairs": [["", str(lq_dir), str(gt_dir)]]})
    recipe = make_recipe(images, data={"pairs": [["rain", str(tmp_path / "nope"), str(gt_dir)]]})
    with pytest.raises(IrcError, match="data.pairs folder not found"):
        train(recipe, tmp_path / "run", quiet=True)
    # pairs alone are enough training data; noise labels the synthetic samples when mixed
    only_pairs = make_recipe(images, data={"train": [], "pairs": [["rain", str(lq_dir), str(gt_dir)]]})
    assert train(only_pairs, tmp_path / "run2", quiet=True).status == "finished"


def test_example_recipe_trains_validates_and_logs(data_root, tmp_path):
    pytest.importorskip("tensorboard")
    from irc.recipes import load_recipe

    overrides = [
        "steps=2", "batch=2", "data.crop=24", "data.workers=0", f"data.root={data_root}", f"validation.options.root={data_root}",
        "validation.every=2", "validation.limit=1", "checkpoint.every=2", "log_every=1",
    ]  # fmt: skip
    recipe = load_recipe(REPO / "recipes" / "example-tiny.toml", overrides + [f"export.path={tmp_path / 'w.safetensors'}"])
    result = train(recipe, tmp_path, quiet=True)
    assert (tmp_path / "w.safetensors").is_file()
    assert result.status == "finished"
    val = [r["validation"] for r in records(tmp_path) if "validation" in r]
    assert len(val) == 1 and val[0]["dataset"] == "cbsd68" and val[0]["images"] == 1 and val[0]["ema"]
    assert 5 < val[0]["psnr"] < 60 and 0 < val[0]["ssim"] <= 1
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "resolved_recipe.toml").read_text().count("[validation.options]") == 1


def test_train_help_documents_every_option():
    import typer.main

    from irc.cli import app

    command = typer.main.get_command(app).commands["train"]
    for param in command.params:
        assert getattr(param, "help", None), f"train: {param.name} has no help"
    names = {opt for param in command.params for opt in getattr(param, "opts", [])}
    assert {"--set", "--run-dir", "--resume", "--steps", "--stop-at", "--device", "--export", "--export-only", "--quiet"} <= names


def test_ema_math_and_swap():
    from irc.nn.ema import EMA

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    ema = EMA(net, decay=0.5, every=2, start=2)
    weight = net[0].weight
    with torch.no_grad():
        weight.fill_(1.0)
    assert not ema.update(net, 1)  # not an update step
    assert ema.update(net, 2) and torch.equal(ema.shadow["0.weight"], weight)  # up to start: copies
    with torch.no_grad():
        weight.fill_(3.0)
    assert ema.update(net, 4)
    assert torch.equal(ema.shadow["0.weight"], torch.full_like(weight, 2.0))
    assert ema.shadow["1.num_batches_tracked"].dtype == torch.int64
    live = {k: v.clone() for k, v in net.state_dict().items()}
    with ema.swapped(net):
        assert torch.equal(net[0].weight, ema.shadow["0.weight"])
    assert_same(live, dict(net.state_dict()))
    other = EMA(net, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert_same(other.shadow, ema.shadow)
    assert other.updates == ema.updates == 2
    with pytest.raises(ValueError, match="decay"):
        EMA(net, decay=1.0)


def test_rain100l_names_pair_with_the_rain_rule_and_exports_keep_folder_names_only(images, tmp_path):
    from safetensors import safe_open

    rng = np.random.default_rng(5)
    lq_dir, gt_dir = tmp_path / "Rain100L" / "rainy", tmp_path / "Rain100L" / "norain"
    lq_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    for i in range(1, 3):
        clean = (rng.random((20, 20, 3)) * 200).astype(np.uint8)
        Image.fromarray(clean).save(gt_dir / f"norain-{i:03d}.png")
        Image.fromarray(clean // 2).save(lq_dir / f"rain-{i:03d}.png")
    by_stem = make_recipe(images, data={"pairs": [["rain", str(lq_dir), str(gt_dir)]]})
    with pytest.raises(IrcError, match="no ground-truth partner"):
        train(by_stem, tmp_path / "a", quiet=True)
    with pytest.raises(UsageError, match="pairing 'nope'"):
        make_recipe(images, data={"pairs": [["rain", str(lq_dir), str(gt_dir), "nope"]]})
    with pytest.raises(UsageError, match="needs a task"):
        make_recipe(images, data={"pairs": [["rain", "", str(gt_dir)]]})
    recipe = make_recipe(images, data={"pairs": [["rain", str(lq_dir), str(gt_dir), "rain"]]})
    out = tmp_path / "w.safetensors"
    assert train(recipe, tmp_path / "b", quiet=True, export=out).status == "finished"
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert str(tmp_path) not in meta["recipe"] and str(tmp_path) not in meta["data"]
    assert json.loads(meta["data"])["pairs"] == [["rain", "rainy", "norain", "rain"]]


# ------------------------------------------------------------------------------- safe checkpoints


def test_checkpoints_hold_no_pickle_and_a_planted_one_never_runs(images, tmp_path, capsys):
    """Resuming loaded accelerate's pickles with full unpickling: a crafted file ran code."""
    import pickle

    from irc.cli import main

    run = tmp_path / "run"
    train(make_recipe(images, steps=2), run, quiet=True)
    ckpt = latest_checkpoint(run)
    assert sorted(p.name for p in ckpt.iterdir()) == ["irc_checkpoint.json", "state.json", "tensors.safetensors"]
    witness = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(witness), "w"))

    for name in ("custom_checkpoint_0.pkl", "optimizer.bin"):
        (ckpt / name).write_bytes(pickle.dumps(Payload()))
    code = main(["train", str(write_recipe(make_recipe(images, steps=4), tmp_path / "r.toml")), "--run-dir", str(run), "--resume", str(ckpt), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "pickle files" in err and not witness.exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "marker"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(images, tmp_path, damage, capsys):
    """Corruptions gave tracebacks, exit 130 with no message, or silently different weights."""
    from irc.cli import main

    run = tmp_path / "run"
    recipe = write_recipe(make_recipe(images, steps=4, checkpoint={"every": 2, "keep": 0}), tmp_path / "r.toml")
    assert main(["train", str(recipe), "--run-dir", str(run), "--stop-at", "4", "-q"]) == 0
    good, bad = list_checkpoints(run)[-2:]
    target = bad / ("irc_checkpoint.json" if damage == "marker" else "tensors.safetensors")
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"{not json")
    target.write_bytes(bytes(data))
    capsys.readouterr()
    result = train(load_recipe(recipe, {"steps": "6"}), run, resume="auto", quiet=False)
    err = capsys.readouterr().err
    assert result.status == "finished" and result.step == 6
    assert f"skipping checkpoint {bad.name}" in err
    # resumed from the good checkpoint: identical to a clean run that stopped at that step
    clean = tmp_path / "clean"
    assert main(["train", str(recipe), "--run-dir", str(clean), "--stop-at", "2", "-q"]) == 0
    again = train(load_recipe(recipe, {"steps": "6"}), clean, resume="auto", quiet=True)
    assert_same(result.method.trainable_state(), again.method.trainable_state())
    assert good.name == "step-00000002"


def test_manifest_snippet_paths_and_taken_names(tmp_path, monkeypatch):
    from irc.weights import manifest_snippet, weights_dir

    inside = manifest_snippet("tur-nafnet-mio7", "tur", weights_dir() / "tur" / "new.safetensors", "ab")
    assert inside.startswith("# the manifest already has 'tur-nafnet-mio7'")
    assert 'file = "tur/new.safetensors"' in inside and 'license = "Apache-2.0"' in inside
    outside = manifest_snippet("my-model", "tur", tmp_path / "m.safetensors", "ab")
    assert outside.startswith("[[weights]]") and f'file = "{(tmp_path / "m.safetensors").resolve()}"' in outside


def test_release_metadata_names_a_start_file_not_its_folder_and_the_task_mixture(tmp_path):
    """An exported file's recipe keeps init_from's file name only (no user's directory layout);
    the data summary says the mixture's task shares and strong-JPEG fraction (two stages whose
    summaries looked alike differed in exactly these)."""
    from irc.methods.tur import TUR
    from irc.train.loop import _release_metadata

    start = tmp_path / "deep" / "stage1.safetensors"
    recipe = load_recipe(REPO / "recipes" / "tur-photo-stage2.toml", {"config.init_from": str(start)})
    small = TUR.from_config({"backbone": "convunet", "width": 8, "condition": ["auto", "noise", "jpeg", "blur", "sr"]})
    meta = _release_metadata(small, recipe, steps=1, trained_on="cpu", name="x")
    assert str(tmp_path) not in meta["recipe"] and json.loads(meta["recipe"])["config"]["init_from"] == "stage1.safetensors"
    data = json.loads(meta["data"])
    assert data["task_probs"] == list(recipe.data.task_probs) and data["strong_jpeg"] == recipe.data.strong_jpeg > 0


def test_the_log_says_what_a_step_costs(tmp_path, images, monkeypatch):
    """Each record: the FLOPs of an optimiser step (forward and backward, counted once per
    session; twice as many with two micro-batches), the achieved FLOP/s and the seconds spent
    waiting for data."""
    from torch.utils.flop_counter import FlopCounterMode

    import irc.train.loop as loop
    from irc.methods.base import TrainBatch

    made = []
    real = loop._flop_counter
    monkeypatch.setattr(loop, "_flop_counter", lambda: made.append(1) or real())
    logged = {}
    for k in (1, 2):
        run = tmp_path / f"k{k}"
        result = train(make_recipe(images, grad_accum=k), run, quiet=True)
        assert result.status == "finished"
        steps = [r for r in records(run) if "loss" in r and "event" not in r]
        assert steps and all(r["flops_per_step"] > 0 and r["gflop_per_s"] is not None for r in steps)
        assert all(0 <= r["data_seconds_per_step"] <= r["seconds_per_step"] for r in steps)
        logged[k] = steps[0]["flops_per_step"]
    assert len(made) == 2  # one count per session, not per step
    assert logged[2] == 2 * logged[1]
    # backward counted too: the tiny network's first convolution has no input gradient, so a
    # step is 2.5 forwards (a forward-only count would give 1)
    x = torch.rand(2, 3, 16, 16)
    with FlopCounterMode(display=False) as forward_only, torch.no_grad():
        result.method.training_step(TrainBatch(x, x.clone(), ("noise", "noise")), 0)
    assert 2.0 < logged[1] / forward_only.get_total_flops() <= 3.0
