"""Recipes: TOML parsing, typed --set overrides, unknown keys, degradations, resolved round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from irc.errors import UsageError
from irc.recipes import (
    OptimSpec,
    Recipe,
    apply_overrides,
    build_recipe,
    dumps_toml,
    load_recipe,
    parse_degradation,
    recipe_to_dict,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "recipes" / "example-tiny.toml"


@pytest.fixture(autouse=True)
def tiny_registry(monkeypatch):
    import irc.methods

    monkeypatch.setitem(irc.methods.REGISTRY, "tiny", "tiny_methods:TinyRestorer")
    monkeypatch.setitem(irc.methods.REGISTRY, "toygan", "tiny_methods:ToyGAN")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_example_recipe_parses():
    recipe = load_recipe(EXAMPLE)
    assert isinstance(recipe, Recipe)
    assert recipe.method == "tur" and recipe.config["width"] == 8 and recipe.config["backbone"] == "convunet"
    assert recipe.data.train == ("bsd200",) and not recipe.data.grey and recipe.data.degradation == "noise:15-50"
    assert recipe.optimizer("main").schedule == "cosine" and recipe.optimizer("main").lr == 2e-4
    assert recipe.validation.dataset == "cbsd68" and recipe.validation.options == {"noise": 25}
    assert recipe.export.path == str((REPO / "runs" / "example-tiny" / "export.safetensors").resolve())
    assert recipe.clip_grad == 1.0 and recipe.ema.decay == 0.999 and recipe.export.name == "example-tiny"


def test_defaults_fill_everything(tmp_path):
    recipe = load_recipe(write(tmp_path, 'method = "tiny"\n'))
    assert recipe.steps == 1000 and recipe.batch == 16 and recipe.mixed_precision == "no" and recipe.clip_grad is None
    assert recipe.optimizers == {"default": OptimSpec()}
    assert recipe.validation.dataset is None and recipe.export.path is None


def test_set_overrides_are_typed(tmp_path):
    path = write(tmp_path, 'method = "tiny"\n[data]\ncrop = 32\n')
    recipe = load_recipe(path, ["data.crop=64", "optimizers.default.lr=1e-3", "steps=7", "clip_grad=0.5", "config.width=6",
                                "data.train=a,b", "optimizers.default.betas=0.5,0.9", "mixed_precision=bf16",
                                "validation.options.noise=15", "validation.options.task=noise", "data.augment=false"])
    assert recipe.data.crop == 64 and isinstance(recipe.data.crop, int)
    assert recipe.optimizer("main").lr == 1e-3 and recipe.optimizer("main").betas == (0.5, 0.9)
    assert recipe.steps == 7 and recipe.clip_grad == 0.5 and recipe.mixed_precision == "bf16"
    assert recipe.config["width"] == 6 and recipe.data.augment is False
    assert [Path(p).name for p in recipe.data.train] == ["a", "b"]
    assert recipe.validation.options == {"noise": 15, "task": "noise"}  # free tables take TOML literals
    assert load_recipe(path, ["clip_grad=0.5", "clip_grad=none"]).clip_grad is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("steps=1.5", "steps: '1.5' is not an int"),
        ("steps=many", "is not an int"),
        ("data.crop=big", "[data] crop"),
        ("mixed_precision=fp8", "one of 'no', 'fp16', 'bf16'"),
        ("data.augment=maybe", "not a bool"),
        ("optimizers.default.schedule=linear", "one of 'constant', 'cosine', 'multistep'"),
        ("optimizers.default.betas=0.9", "expected 2 values"),
        ("config.width=2.5", "width: '2.5' is not an int"),
        ("steps=0", "steps must be > 0"),
        ("ema.decay=1.0", "ema.decay must be in [0, 1)"),
        ("data.degradation=noise", "expected noise:VALUE"),
        ("export.path=w.pth", "must end in .safetensors"),
    ],
)
def test_bad_values_are_usage_errors(tmp_path, override, message):
    with pytest.raises(UsageError) as err:
        load_recipe(write(tmp_path, 'method = "tiny"\n'), [override])
    assert message in str(err.value)


@pytest.mark.parametrize(
    "override, listed",
    [
        ("stepz=3", ["steps", "batch", "optimizers"]),
        ("data.crp=64", ["train", "crop", "degradation", "workers"]),
        ("optimizers.default.learning_rate=1", ["lr", "betas", "schedule"]),
        ("ema.decy=0.5", ["decay", "every", "start"]),
        ("checkpoint.evry=5", ["every", "keep"]),
    ],
)
def test_unknown_keys_list_the_valid_ones(tmp_path, override, listed):
    with pytest.raises(UsageError) as err:
        load_recipe(write(tmp_path, 'method = "tiny"\n'), [override])
    text = str(err.value)
    assert "unknown key" in text and override.split("=")[0].split(".")[-1] in text
    for key in listed:
        assert key in text


def test_unknown_keys_in_the_file(tmp_path):
    with pytest.raises(UsageError, match="unknown key in the \\[data\\] table of the recipe 'size'; valid: train"):
        load_recipe(write(tmp_path, 'method = "tiny"\n[data]\nsize = 3\n'))
    with pytest.raises(UsageError, match="'colour'; valid: method, steps, batch, grad_accum"):
        load_recipe(write(tmp_path, 'method = "tiny"\ncolour = true\n'))
    with pytest.raises(UsageError, match="unknown config key of tiny 'depth'; valid: width"):
        load_recipe(write(tmp_path, 'method = "tiny"\n[config]\ndepth = 3\n'))


def test_set_through_a_value_is_an_error(tmp_path):
    with pytest.raises(UsageError, match="steps is a value, not a table"):
        load_recipe(write(tmp_path, 'method = "tiny"\n'), ["steps.x=1"])
    with pytest.raises(UsageError, match="expects key=value"):
        load_recipe(write(tmp_path, 'method = "tiny"\n'), ["steps"])


def test_method_must_exist_and_be_trainable(tmp_path):
    with pytest.raises(UsageError, match="unknown method 'nope'"):
        load_recipe(write(tmp_path, 'method = "nope"\n'))
    with pytest.raises(UsageError, match="not trainable"):
        load_recipe(write(tmp_path, 'method = "identity"\n'))
    with pytest.raises(UsageError, match="names no method"):
        load_recipe(write(tmp_path, "steps = 3\n"))


def test_file_errors(tmp_path):
    with pytest.raises(UsageError, match="recipe not found"):
        load_recipe(tmp_path / "missing.toml")
    with pytest.raises(UsageError, match="invalid TOML"):
        load_recipe(write(tmp_path, "method = \n"))
    with pytest.raises(UsageError, match="TOML files"):
        load_recipe(tmp_path / "r.yaml")


def test_group_tables_inherit_from_default(tmp_path):
    text = 'method = "toygan"\n[optimizers.default]\nlr = 1e-3\nschedule = "cosine"\n[optimizers.d]\nlr = 5e-4\n'
    recipe = load_recipe(write(tmp_path, text), ["optimizers.g.warmup=10"])
    assert recipe.optimizer("d").lr == 5e-4 and recipe.optimizer("d").schedule == "cosine"
    assert recipe.optimizer("g").lr == 1e-3 and recipe.optimizer("g").warmup == 10
    assert recipe.optimizer("other") is recipe.optimizers["default"]


@pytest.mark.parametrize(
    "text, kind, low, high",
    [("none", "none", None, None), ("noise:25", "noise", 25, 25), ("noise:15-50", "noise", 15, 50), ("jpeg:10", "jpeg", 10, 10),
     ("jpeg:30-95", "jpeg", 30, 95), ("bicubic:4", "bicubic", 4, 4), ("realesrgan", "realesrgan", None, None)],
)
def test_degradations_parse(text, kind, low, high):
    spec = parse_degradation(text)
    assert (spec.kind, spec.low, spec.high) == (kind, low, high)
    assert parse_degradation("mixture:mio7").name == "mio7"
    assert (parse_degradation("task:haze").kind, parse_degradation("task:shadow").name) == ("task", "shadow")


@pytest.mark.parametrize("text", ["blur", "noise:50-15", "jpeg:0", "jpeg:5.5", "bicubic:2-4", "mixture:seven", "none:1", "noise:abc", "task:fog", "task:"])
def test_bad_degradations(text):
    with pytest.raises(UsageError, match="data.degradation"):
        parse_degradation(text)


def test_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe(EXAMPLE, ["clip_grad=none", "validation.knobs.x=1", "optimizers.d.lr=1e-5", "description=quote \" and é"])
    text = dumps_toml(recipe_to_dict(recipe), header="a header\nline two")
    assert text.startswith("# a header\n# line two\n")
    again = load_recipe(write(tmp_path, text))
    assert again == recipe


def test_apply_overrides_leaves_the_input_alone():
    raw = {"method": "tiny", "data": {"crop": 8}}
    out = apply_overrides(raw, {"data.crop": "16", "validation.options.scale": "4"})
    assert raw == {"method": "tiny", "data": {"crop": 8}}
    assert out["data"]["crop"] == "16" and out["validation"]["options"]["scale"] == 4


def test_relative_train_paths_resolve_beside_the_recipe(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "imgs").mkdir()
    path = tmp_path / "recipes" / "r.toml"
    path.write_text('method = "tiny"\n[data]\ntrain = ["imgs", "t91", "elsewhere"]\n')
    monkeypatch.chdir(tmp_path)
    recipe = build_recipe({"method": "tiny", "data": {"train": ["recipes/imgs"]}})
    assert recipe.data.train == (str((tmp_path / "recipes" / "imgs").resolve()),)
    recipe = load_recipe(path)
    assert recipe.data.train == (str((tmp_path / "recipes" / "imgs").resolve()), "t91", "elsewhere")


def test_weights_paths_in_a_recipe_resolve_beside_it_from_any_folder(tmp_path, monkeypatch):
    """A recipe trains the same from any working directory; a missing file is never a hub id."""
    from irc.errors import WeightsError
    from irc.methods.lorun import LoRun

    monkeypatch.chdir(tmp_path)
    mu = load_recipe(REPO / "recipes" / "learnir-polyu-mu.toml")
    assert mu.config["init_from"] == str((REPO / "runs" / "learnir-polyu" / "eps.safetensors").resolve())
    eps = load_recipe(REPO / "recipes" / "learnir-polyu.toml")
    assert eps.export.path == mu.config["init_from"]
    assert load_recipe(REPO / "recipes" / "lorun-cs-r25.toml").config["init_from"] == "lorun-cs-base"  # a manifest name
    # --set values stay relative to the working directory, like every command-line path
    assert load_recipe(REPO / "recipes" / "learnir-polyu-mu.toml", ["config.init_from=mine.safetensors"]).config["init_from"] == "mine.safetensors"
    (tmp_path / "r").mkdir()
    path = tmp_path / "r" / "phase2.toml"
    path.write_text('method = "lorun"\n[config]\nphase = 2\ninit_from = "weights/lorun/missing.safetensors"\n[data]\ntrain = ["t91"]\n')
    recipe = load_recipe(path)
    assert recipe.config["init_from"] == str(tmp_path / "r" / "weights" / "lorun" / "missing.safetensors")
    with pytest.raises(WeightsError, match="weights file not found") as err:
        LoRun.from_config(recipe.config)
    assert "hub" not in str(err.value)


def test_extra_methods_environment_entries():
    from irc.methods import _parse_extra_methods

    assert _parse_extra_methods("a=pkg.mod:Cls, b=mod:Other") == ({"a": "pkg.mod:Cls", "b": "mod:Other"}, None)
    entries, error = _parse_extra_methods("a=pkg.mod")
    assert entries == {} and "not name=module:Class" in error


def test_extra_methods_reach_subprocesses():
    """The variable is read at import, in every process; a module that is not there is named."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, IRC_EXTRA_METHODS="tiny=not_a_module:X", PYTHONPATH=str(Path(__file__).parent))
    out = subprocess.run([sys.executable, "-m", "irc", "restore", "--method", "tiny", "x.png"], check=False, capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "IRC_EXTRA_METHODS" in out.stderr and "PYTHONPATH" in out.stderr


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.task_probs=0.5,0.5"], "needs a mixture: degradation"),
        (["data.degradation=mixture:photo", "data.task_probs=0.5,0.5"], "needs 5 shares"),
        (["data.degradation=mixture:photo", "data.task_probs=1,nan,1,1,1"], "needs 5 shares"),
        (["data.degradation=mixture:photo", "data.task_probs=0,0,0,0,0"], "not all zero"),
        (["data.degradation=mixture:mio7", "data.strong_jpeg=0.5"], "is for degradation"),
        (["data.degradation=mixture:photo", "data.strong_jpeg=1.5"], "must be in [0, 1]"),
        (["data.degradation=noise:25", "data.grey_prob=0.5"], "is for degradation"),
        (["data.degradation=mixture:photo", "data.grey_prob=-0.1"], "must be in [0, 1]"),
    ],
)
def test_mixture_options_are_checked(tmp_path, overrides, message):
    with pytest.raises(UsageError) as err:
        load_recipe(write(tmp_path, 'method = "tiny"\n'), overrides)
    assert message in str(err.value)


def test_mixture_options_reach_the_mixture(tmp_path):
    """task_probs set the shares; strong_jpeg moves the photo mixture's JPEG samples to quality
    10-30; a spelling the parser accepts (Mixture:photo) is accepted here too."""
    import numpy as np

    from irc.operators.presets import mixture_tasks, training_degradation

    recipe = load_recipe(write(tmp_path, 'method = "tiny"\n'), ["data.degradation=Mixture:photo", "data.task_probs=0,0,1,0,0", "data.strong_jpeg=1"])
    assert recipe.data.task_probs == (0.0, 0.0, 1.0, 0.0, 0.0) and mixture_tasks("photo") == ("clean", "noise", "jpeg", "blur", "sr")
    from irc.operators.photo import photo_mixture

    mixture = photo_mixture(recipe.data.task_probs, strong_jpeg=recipe.data.strong_jpeg)
    qualities = []
    for seed in range(40):
        drawn = mixture.sample(np.random.default_rng(seed))
        assert drawn["task"] == "jpeg"
        last = drawn["params"]["steps"][-1]["params"]  # the last compression: strong or any, then 4:2:0 or 4:4:4
        assert last["choice"] == 0
        qualities.append(last["params"]["params"]["quality"])
    assert max(qualities) <= 30 and min(qualities) >= 10
    degrade = training_degradation("mixture", name="photo", task_probs=recipe.data.task_probs, strong_jpeg=1.0)
    import torch

    lq, target, label = degrade(torch.rand(1, 3, 32, 32), np.random.default_rng(0))
    assert label == "jpeg" and lq.shape == target.shape


@pytest.mark.parametrize("grey_prob, expected", [(None, 0.1), (1.0, 1.0), (0.0, 0.0)])
def test_grey_prob_reaches_the_photo_mixture(tmp_path, grey_prob, expected):
    """data.grey_prob sets the share of grey samples (unset: the mixture's own 0.1); a grey
    sample's input and target are grey (three equal channels) and the degradation is applied to
    the grey plane."""
    import numpy as np
    import torch

    from irc.train.data import Synthesizer

    overrides = ["data.degradation=mixture:photo"] + ([] if grey_prob is None else [f"data.grey_prob={grey_prob}"])
    recipe = load_recipe(write(tmp_path, 'method = "tiny"\n'), overrides)
    assert recipe.data.grey_prob == grey_prob
    synth = Synthesizer(recipe.data.degradation, 0, grey_prob=recipe.data.grey_prob)
    batch = synth(torch.rand(300, 3, 32, 32), list(range(300)))
    grey = [bool((b[0] == b[1]).all() and (b[1] == b[2]).all()) for b in batch.gt]
    assert abs(np.mean(grey) - expected) < 0.05  # 300 draws: 0.1 +- 0.017 (one standard deviation)
    for lq, is_grey in zip(batch.lq, grey):
        assert is_grey == bool((lq[0] == lq[1]).all() and (lq[1] == lq[2]).all())
