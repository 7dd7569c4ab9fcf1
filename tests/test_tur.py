"""TUR (METHODS.md §4): the loss against a direct implementation, the training-only head,
backbones, weights round trip, default weights and the CLI default."""

from __future__ import annotations

import math

import pytest
import torch

from irc.errors import WeightsError
from irc.methods import get_method
from irc.methods.base import TrainBatch
from irc.methods.tur import TUR, TURNetwork, build_backbone
from irc.methods.tur.backbones import NAFNetLite
from irc.methods.tur.loss import EPS, l1_loss, uncertainty_loss
from irc.weights import save_weights

TASKS = ("sr", "blur", "noise", "jpeg", "rain", "haze", "dark")
TINY_PROMPTIR = {"backbone": "promptir", "dim": 8, "blocks": [1, 1, 1, 2], "refinement_blocks": 1, "heads": [1, 2, 2, 4], "prompt_dims": [8, 8, 16], "prompt_len": 3}


def direct_loss(pred, target, u, tasks, eps=EPS):
    """METHODS.md §4.1 written out with explicit sums, in float64."""
    pred, target, u = pred.double(), target.double(), u.double()
    per_task = []
    for task in sorted(set(tasks)):
        members = [i for i, t in enumerate(tasks) if t == task]
        n = len(members)
        u_bar = sum(u[i] for i in members) / n + eps  # C x H x W
        numel = u_bar.numel()
        data = sum(((pred[i] - target[i]).abs() / u_bar).sum() for i in members) / (n * numel)
        per_task.append(data + 2.0 * math.log(float(u_bar.sum()) / numel))
    return sum(per_task) / len(per_task)


def _random_batch(tasks, seed=0, shape=(3, 8, 6)):
    g = torch.Generator().manual_seed(seed)
    b = len(tasks)
    pred = torch.rand(b, *shape, generator=g)
    target = torch.rand(b, *shape, generator=g)
    u = torch.nn.functional.softplus(torch.randn(b, *shape, generator=g))
    return pred, target, u


@pytest.mark.parametrize(
    "tasks",
    [
        TASKS,  # every task once
        ("noise", "rain", "noise", "noise", "haze", "rain"),  # four tasks missing, uneven groups
        ("dark",) * 5,  # one task
        ("sr", "jpeg", "sr", "blur", "jpeg", "sr", "blur", "blur"),
    ],
)
def test_loss_equals_the_formula(tasks):
    pred, target, u = _random_batch(tasks, seed=len(tasks))
    got = uncertainty_loss(pred, target, u, tasks)
    assert got.dtype == torch.float32
    assert abs(float(got) - direct_loss(pred, target, u, tasks)) < 1e-5


def test_loss_epsilon_and_task_order():
    tasks = ("rain", "noise", "rain")
    pred, target, u = _random_batch(tasks)
    u = u * 1e-7  # epsilon dominates: the loss stays finite
    loss = uncertainty_loss(pred, target, u, tasks)
    assert torch.isfinite(loss) and abs(float(loss) - direct_loss(pred, target, u, tasks)) < 1e-3 * abs(float(loss))
    perm = [2, 1, 0]
    shuffled = uncertainty_loss(pred[perm], target[perm], u[perm], tuple(tasks[i] for i in perm))
    assert torch.allclose(shuffled, uncertainty_loss(pred, target, u, tasks))


def test_loss_without_labels_is_one_task():
    pred, target, u = _random_batch(("a",) * 3)
    assert torch.allclose(uncertainty_loss(pred, target, u, None), uncertainty_loss(pred, target, u, ("x", "x", "x")))


def test_loss_is_not_the_per_sample_average():
    """The uncertainty is averaged over a task's samples before dividing (§4.1, §4.6)."""
    tasks = ("noise", "noise")
    pred, target, u = _random_batch(tasks)
    per_sample = torch.stack([uncertainty_loss(pred[i : i + 1], target[i : i + 1], u[i : i + 1], None) for i in range(2)]).mean()
    assert not torch.allclose(per_sample, uncertainty_loss(pred, target, u, tasks))


def test_loss_checks_shapes_and_labels():
    pred, target, u = _random_batch(("a", "b"))
    with pytest.raises(ValueError, match="must match"):
        uncertainty_loss(pred, target, u[:, :1], ("a", "b"))
    with pytest.raises(ValueError, match="labels"):
        uncertainty_loss(pred, target, u, ("a",))


def test_l1_baseline():
    pred, target, _ = _random_batch(("a", "b"))
    assert torch.allclose(l1_loss(pred, target), (pred - target).abs().mean())


# ------------------------------------------------------------------ the method


def _trained_like(config=None, seed=0) -> TUR:
    """A TUR whose weights are all random (the shipped init zeroes the output conv)."""
    torch.manual_seed(seed)
    method = TUR.from_config(config)
    with torch.no_grad():
        for p in method.network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return method


@pytest.mark.parametrize("config", [None, TINY_PROMPTIR], ids=["nafnet", "promptir"])
def test_gradients_reach_the_head_and_the_backbone(config):
    method = _trained_like(config)
    method.train(True)
    x = torch.rand(4, 3, 32, 32)
    loss = method.training_step(TrainBatch(x, torch.rand_like(x), ("noise", "rain", "noise", "dark")), 0)
    assert set(loss) == {"main"} and torch.isfinite(loss["main"])
    loss["main"].backward()
    for part in (method.network.head, method.network.backbone):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
    assert set(method.parameter_groups()) == {"main"}


def test_head_reads_the_last_full_resolution_features():
    method = TUR.from_config(TINY_PROMPTIR)
    assert method.network.head[0].in_channels == 2 * TINY_PROMPTIR["dim"]  # PromptIR refinement features
    image, u = method.network.forward_train(torch.rand(2, 3, 16, 24))
    assert u.shape == image.shape == (2, 3, 16, 24) and bool((u > 0).all())


def test_head_is_never_run_at_inference(real_rgb):
    method = _trained_like()
    calls = []
    method.network.head.register_forward_hook(lambda *args: calls.append(1))
    x = torch.from_numpy(real_rgb)[None]
    with_head = method.restore(x)
    assert not calls
    with torch.no_grad():
        for p in method.network.head.parameters():
            p.mul_(-3.0)
    assert torch.equal(method.restore(x), with_head)
    method.network.head = None
    assert torch.equal(method.restore(x), with_head)


def test_l1_config_has_no_head_and_trains_with_l1():
    method = _trained_like({"loss": "l1"})
    assert method.network.head is None
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    loss = method.training_step(TrainBatch(x, y, ("noise", "sr")), 0)["main"]
    assert torch.allclose(loss, (method.network(x) - y).abs().mean())


def test_shipped_weights_leave_out_the_head_and_round_trip(tmp_path, real_rgb):
    method = _trained_like()
    state = method.state_dict()
    assert state and not any(k.startswith("head.") for k in state)
    assert any(k.startswith("head.") for k in method.network.state_dict())  # training checkpoints keep it
    path = save_weights(tmp_path / "tur.safetensors", state, method.metadata())
    loaded = TUR.from_weights(path)
    x = torch.from_numpy(real_rgb)[None]
    assert loaded.config == method.config
    assert torch.equal(loaded.restore(x), method.restore(x))
    # a file with the head loads too; one with half the head does not
    loaded.load_state_dict(method.network.state_dict())
    for name, tensor in method.network.head.state_dict().items():
        assert torch.equal(loaded.network.head.state_dict()[name], tensor)
    partial = dict(method.network.state_dict())
    partial.pop("head.0.weight")
    with pytest.raises(WeightsError, match="head.0.weight"):
        loaded.load_state_dict(partial)
    missing = dict(state)
    missing.pop(next(iter(missing)))
    with pytest.raises(WeightsError, match="missing"):
        loaded.load_state_dict(missing)


def test_convunet_runs_channels_last_with_the_same_result(tmp_path, real_rgb):
    """The photo backbone runs channels-last (CPU speed); the file and the output do not change."""
    method = TUR.from_config({"backbone": "convunet", "width": 8, "enc_blocks": (1, 1), "middle_blocks": 1, "dec_blocks": (1, 1), "condition": ("auto", "noise")})
    torch.manual_seed(0)
    with torch.no_grad():
        for p in method.network.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    conv = next(m for m in method.network.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.from_numpy(real_rgb)[None, :, :48, :40]
    y = method.restore(x, task="noise")
    assert y.is_contiguous()
    plain = TURNetwork(build_backbone(method.config), with_head=False)
    plain.load_state_dict({k: v.contiguous() for k, v in method.network.state_dict().items() if not k.startswith("head.")})
    with torch.no_grad():
        expected = plain(x, torch.tensor([1]))
    torch.testing.assert_close(y, expected.clamp(0, 1), atol=1e-5, rtol=1e-5)  # restore clamps to [0, 1]
    path = save_weights(tmp_path / "cl.safetensors", method.state_dict(), method.metadata())  # saving copies contiguously
    torch.testing.assert_close(TUR.from_weights(path).restore(x, task="noise"), y, atol=0, rtol=0)


def test_promptir_round_trip_and_shapes(tmp_path):
    method = _trained_like(TINY_PROMPTIR)
    x = torch.rand(1, 3, 30, 44)  # padded to multiples of 8 by the tiler
    y = method.restore(x)
    assert y.shape == x.shape
    path = save_weights(tmp_path / "p.safetensors", method.state_dict(), method.metadata())
    assert torch.equal(TUR.from_weights(path).restore(x), y)


def test_promptir_trains_a_few_steps():
    torch.manual_seed(0)
    method = TUR.from_config(TINY_PROMPTIR)
    method.train(True)
    opt = torch.optim.Adam([p for ps in method.parameter_groups().values() for p in ps], lr=2e-3)
    x = torch.rand(4, 3, 16, 16)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    losses = []
    for step in range(8):
        loss = method.training_step(TrainBatch(y, x, ("noise", "noise", "rain", "rain")), step)["main"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_paper_promptir_configuration_builds():
    net = build_backbone(TUR.Config(backbone="promptir"))
    assert net.feature_channels == 96
    assert 30e6 < sum(p.numel() for p in net.parameters()) < 40e6  # PromptIR reports 35.59 M


def test_any_backbone_plugs_in():
    class Tiny(torch.nn.Module):
        feature_channels, out_channels = 5, 3

        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.Conv2d(5, 3, 1)

        def forward_features(self, x):
            f = self.a(x)
            return f, x + self.b(f)

        def forward(self, x):
            return self.forward_features(x)[1]

    net = TURNetwork(Tiny())
    image, u = net.forward_train(torch.rand(2, 3, 8, 8))
    loss = uncertainty_loss(image, torch.rand_like(image), u, ("a", "b"))
    loss.backward()
    assert net.head[0].weight.grad is not None and net.backbone.a.weight.grad is not None


def test_tiling_is_close_with_enough_overlap():
    """Every op is local (no global pooling), so overlapping tiles agree with the whole image."""
    method = _trained_like()
    torch.manual_seed(1)
    x = torch.rand(1, 3, 160, 168)
    whole = method.restore(x)
    tiles = method.restore(x, tile=128, tile_overlap=96)
    assert float((tiles - whole).abs().max()) < 1e-4


def test_grey_input_and_the_task_knob(real_grey):
    from irc.pipeline import restore_tensor

    method = _trained_like()
    x = torch.from_numpy(real_grey)[None]
    y = restore_tensor(method, x, task="noise")
    assert y.shape == x.shape
    assert torch.equal(y, restore_tensor(method, x))  # blind weights: the task only picks weights
    with pytest.raises(Exception, match="auto"):
        restore_tensor(method, x, task="snow")


def test_nafnet_starts_as_the_identity():
    net = NAFNetLite()
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(net(x), x)


def test_registry_and_default_weights():
    assert get_method("tur") is TUR
    from irc.weights import default_entry

    # the blind photo model (an average of three branches) for what photos carry; told a photo
    # task, the branch trained with the task shown (noise, blur, sr) or the JPEG specialist; the
    # 7-task MiOIR model where the user names rain, haze or low light
    expected = {
        "auto": "tur-photo",
        **{t: "tur-photo-stage3" for t in ("noise", "blur", "sr")},
        "jpeg": "tur-photo-jpeg",
        **{t: "tur-nafnet-mio7" for t in ("rain", "haze", "dark")},
    }
    assert set(expected) == set(TUR.tasks)
    for task, name in expected.items():
        assert TUR.default_weights(task) == name, task
    assert default_entry("tur", TUR.default_task).name == "tur-photo"


@pytest.mark.parametrize("name", ["tur-nafnet-mio7", "tur-nafnet-mio7-l1", "tur-promptir-three"])
def test_recipes_load(name):
    from pathlib import Path

    from irc.recipes import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / f"{name}.toml")
    assert recipe.method == "tur"
    TUR.from_config(recipe.config) if recipe.config["backbone"] == "nafnet" else TUR.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in recipe.config.items()})


def test_baseline_recipe_differs_only_in_the_loss():
    from pathlib import Path

    from irc.recipes import load_recipe, recipe_to_dict

    root = Path(__file__).resolve().parents[1] / "recipes"
    tur, l1 = (recipe_to_dict(load_recipe(root / f"{n}.toml")) for n in ("tur-nafnet-mio7", "tur-nafnet-mio7-l1"))
    for d in (tur, l1):
        d.pop("description"), d["export"].pop("name"), d["config"].pop("loss")
    assert tur == l1


def test_cli_restore_defaults_to_the_photo_model_and_task_means_something(tmp_path, capsys):
    """`irc restore photo` runs the shipped blind photo model; --task noise runs the branch
    trained with the task shown, conditioned (another image); --task jpeg runs the JPEG
    specialist, --task rain the 7-task model; the photo model refuses a task it was not told."""
    import json
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from irc.cli import DEFAULT_METHOD, main
    from irc.weights import load_manifest

    assert DEFAULT_METHOD == "tur"
    src = Path(__file__).resolve().parents[1] / "examples" / "chelsea.png"
    sha = {e.name: e.sha256 for e in load_manifest()}
    used = {}
    for name, extra in (("a", []), ("b", ["--task", "noise"]), ("c", ["--task", "rain"]), ("j", ["--task", "jpeg"])):
        assert main(["restore", "--device", "cpu", *extra, str(src), "-o", str(tmp_path / name)]) == 0
        used[name] = json.loads(Image.open(tmp_path / name / "chelsea_tur.png").text["irc"])["weights_sha256"]
    assert used["a"] == sha["tur-photo"] and used["b"] == sha["tur-photo-stage3"]
    assert used["c"] == sha["tur-nafnet-mio7"] and used["j"] == sha["tur-photo-jpeg"]
    # the --jsonl record says the same as the metadata
    assert main(["restore", "--device", "cpu", str(src), "-o", str(tmp_path / "e"), "--jsonl"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["weights_sha256"] == sha["tur-photo"] and record["method"] == "tur" and "dtype" in record and record["seed"] == 0
    a, b, c = (np.asarray(Image.open(tmp_path / n / "chelsea_tur.png")) for n in "abc")
    assert a.shape == np.asarray(Image.open(src).convert("RGB")).shape
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    assert main(["restore", "--device", "cpu", "-w", "tur-photo", "--task", "haze", str(src), "-o", str(tmp_path / "d")]) == 2
    assert "--task haze has its own weights" in capsys.readouterr().err


def test_restore_advises_task_jpeg_for_strongly_compressed_jpegs_only(tmp_path, capsys):
    """The blind photo model names --task jpeg once per batch, with the count, for JPEGs saved at
    quality 30 or below (read from the file's tables), never for a mild JPEG or a PNG, and says
    nothing when the task is given or --quiet."""
    from pathlib import Path

    from PIL import Image

    from irc.cli import main

    photo = Image.open(Path(__file__).resolve().parents[1] / "examples" / "chelsea.png").convert("RGB").crop((0, 0, 96, 64))
    inputs = tmp_path / "in"
    inputs.mkdir()
    photo.save(inputs / "a.jpg", quality=15)
    photo.save(inputs / "b.jpg", quality=30, subsampling=0)
    photo.save(inputs / "c.jpg", quality=85)
    photo.save(inputs / "d.png")
    assert main(["restore", "--device", "cpu", str(inputs), "-o", str(tmp_path / "auto")]) == 0
    err = " ".join(capsys.readouterr().err.split())  # unwrapped
    assert err.count("note (") == 1 and "note (2 inputs): strongly compressed JPEG (quality 30 or below): --task jpeg runs the JPEG specialist tur-photo-jpeg" in err
    for extra in (["--task", "jpeg"], ["--task", "noise"], ["--quiet"]):
        assert main(["restore", "--device", "cpu", *extra, str(inputs / "a.jpg"), "-o", str(tmp_path / extra[-1])]) == 0
        assert "note (" not in capsys.readouterr().err
    assert main(["restore", "--device", "cpu", str(inputs / "c.jpg"), str(inputs / "d.png"), "-o", str(tmp_path / "mild")]) == 0
    assert "note (" not in capsys.readouterr().err


def test_auto_dtype_is_bf16_for_the_photo_model_on_amx_cpus_only(monkeypatch):
    """--dtype auto: bf16 for the plain-convolution photo model where the CPU has AMX, fp32 else."""
    import irc.device
    from irc.restore import load_method

    for amx, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(irc.device, "cpu_has_amx", lambda amx=amx: amx)
        assert load_method("tur", "tur-photo", task=None, device="cpu", dtype="auto", offline=True).dtype == expected
        # the seven-task NAFNet model and an explicit --dtype never change
        assert load_method("tur", "tur-nafnet-mio7", task=None, device="cpu", dtype="auto", offline=True).dtype == torch.float32
        assert load_method("tur", "tur-photo", task=None, device="cpu", dtype="fp32", offline=True).dtype == torch.float32


def test_compiled_network_gives_the_eager_output(real_rgb, tmp_path, monkeypatch):
    """--compile (torch.compile in place) changes speed, not results; the state-dict keys stay."""
    import torch

    from irc.methods.tur import TUR
    from irc.pipeline import restore_tensor

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    method = TUR.tiny()
    x = torch.from_numpy(real_rgb)[None]
    keys = list(method.state_dict())
    with torch.no_grad():
        eager = restore_tensor(method, x)
        method.compile()
        compiled = restore_tensor(method, x)
    assert method.network._compiled_call_impl is not None  # nn.Module.compile really ran
    assert list(method.state_dict()) == keys
    assert torch.allclose(compiled, eager, atol=1e-5)


def test_init_from_continues_the_backbone_of_an_earlier_stage(tmp_path):
    """config.init_from (the photo model's second stage): the backbone starts from the file, the
    training-only head starts fresh, and the exported config does not point at the old file."""
    from irc.errors import WeightsError
    from irc.methods.lorun import LoRun

    torch.manual_seed(1)
    first = TUR.tiny()
    with torch.no_grad():
        for p in first.network.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = save_weights(tmp_path / "stage1.safetensors", first.state_dict(), first.metadata())
    torch.manual_seed(2)
    second = TUR.from_config({**TUR.tiny_config, "init_from": str(path)})
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key
    first_head, second_head = first.network.head.state_dict(), second.network.head.state_dict()
    assert any(not torch.equal(second_head[k], first_head[k]) for k in first_head)  # the head was not in the file
    assert second.metadata()["config"]["init_from"] == ""
    other = save_weights(tmp_path / "lorun.safetensors", LoRun.tiny().state_dict(), LoRun.tiny().metadata())
    with pytest.raises(WeightsError, match="not 'tur'"):
        TUR.from_config({**TUR.tiny_config, "init_from": str(other)})


def test_init_from_grows_a_deeper_convunet_that_starts_as_the_file(tmp_path, capsys):
    """A convunet with more blocks per level starts from a shallower stage's export: the new
    blocks are the identity, so the grown network restores exactly as the file did; any other
    mismatch (a wider network, a missing level) is still an error."""
    torch.manual_seed(3)
    shallow = TUR.tiny()
    with torch.no_grad():
        for p in shallow.network.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = save_weights(tmp_path / "shallow.safetensors", shallow.state_dict(), shallow.metadata())
    deeper = {**TUR.tiny_config, "dec_blocks": (2, 2), "middle_blocks": 2, "init_from": str(path)}
    grown = TUR.from_config(deeper)
    assert "3 residual block(s)" in capsys.readouterr().err
    assert set(shallow.state_dict()) < set(grown.state_dict())
    for key, value in shallow.state_dict().items():
        assert torch.equal(grown.state_dict()[key], value), key
    x = torch.rand(2, 3, 16, 16)
    task = torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.allclose(grown.network(x, task), shallow.network(x, task), atol=1e-6)
        new_conv = grown.network.backbone.decoders[0][1].conv2.weight
        assert new_conv.abs().sum() == 0 and grown.network.backbone.decoders[0][1].conv1.weight.abs().sum() > 0
    for wrong in ({"width": 16}, {"enc_blocks": (1, 1, 1), "dec_blocks": (1, 1, 1)}):
        with pytest.raises(WeightsError, match="do not fit"):
            TUR.from_config({**TUR.tiny_config, **wrong, "init_from": str(path)})
