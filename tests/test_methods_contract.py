"""Contract tests, parametrized over the registry: every method that lands is covered.

Each method is built from its declared ``tiny_config`` with random weights: no data pack, no
network, no shipped weights (the shipped ones are loaded in tests/test_shipped_weights.py); the
images are crops of the bundled ``examples/``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from irc.errors import UsageError, WeightsError
from irc.methods import REGISTRY, get_method
from irc.methods.base import Method
from irc.methods.options import OPTIONS
from irc.pipeline import restore_tensor

METHODS = list(REGISTRY)


def build(name: str, dtype: torch.dtype = torch.float32) -> Method:
    return get_method(name).tiny(device="cpu", dtype=dtype)


def defaults(method: Method) -> dict:
    return {k.name: k.default for k in method.knobs}


def test_every_builtin_method_has_an_options_entry():
    assert set(OPTIONS) == set(REGISTRY)
    for name in REGISTRY:
        assert get_method(name).knobs == OPTIONS[name]


@pytest.mark.parametrize("name", METHODS)
def test_registry_entry_is_a_method(name):
    cls = get_method(name)
    assert issubclass(cls, Method)
    assert cls.name == name
    assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    info = cls.describe()
    assert info["name"] == name and info["tasks"]
    assert set(info["profiles"]) == set(cls.tasks)
    for task, profile in info["profiles"].items():
        assert profile["input"] in ("rgb", "luma", "cube", "any") and profile["stages"], task
    for knob in cls.knobs:
        assert knob.help, f"{name}.{knob.name} has no help text"


def test_unknown_method_lists_available():
    with pytest.raises(UsageError, match="available: identity, bicubic"):
        get_method("nope")


@pytest.mark.parametrize("name", METHODS)
def test_unknown_config_key_is_an_error(name):
    with pytest.raises(UsageError, match="unknown config key"):
        get_method(name).from_config({"definitely_not_a_key": 1})


@pytest.mark.parametrize("name", METHODS)
def test_unknown_knob_lists_valid_ones(name):
    cls = get_method(name)
    with pytest.raises(UsageError) as err:
        cls.check_knobs({"definitely_not_a_knob": 1})
    assert "definitely_not_a_knob" in str(err.value)
    for knob in cls.knobs:
        assert knob.name in str(err.value)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("channels", [1, 3])
def test_restore_shape_and_range(name, channels, example_rgb, example_grey):
    method = build(name)
    x = torch.from_numpy(example_rgb if channels == 3 else example_grey)[None]
    knobs = defaults(method)
    y = restore_tensor(method, x, **knobs)
    scale = method.output_scale(method.knob_values(knobs))
    assert y.shape[:2] == x.shape[:2]
    assert abs(y.shape[-2] - x.shape[-2] * scale) <= 1 and abs(y.shape[-1] - x.shape[-1] * scale) <= 1
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0


@pytest.mark.parametrize("name", METHODS)
def test_bf16_restore_agrees_with_fp32(name, example_rgb):
    """Every method runs in bf16 on the CPU (weights cast per component) and stays close to fp32."""
    method = build(name)
    if "bf16" not in method.dtypes:
        pytest.skip(f"{name} declares no bf16")
    low = build(name, torch.bfloat16)
    low.load_state_dict(method.state_dict())
    low.to("cpu", torch.bfloat16)
    assert all(t.dtype == torch.bfloat16 for c in low.components() if not c.keep_fp32 for t in c.tensors() if t.is_floating_point())
    x = torch.from_numpy(example_rgb)[None]
    a = restore_tensor(method, x, **defaults(method))
    b = restore_tensor(low, x, **defaults(method))
    assert b.dtype == torch.float32 and b.shape == a.shape
    # bf16 keeps 8 bits of mantissa: a few grey levels on random tiny networks
    assert float((a - b).abs().mean()) < 4 / 255, name


@pytest.mark.parametrize("name", METHODS)
def test_tiled_restore_matches_whole_image(name, example_rgb):
    method = build(name)
    if all(s.support == "unsupported" for s in method.task_profile(method.task)["stages"].values()):
        pytest.skip(f"{name} never tiles")
    x = torch.from_numpy(example_rgb)[None]
    knobs = defaults(method)
    whole = restore_tensor(method, x, **knobs)
    multiple = max(s.multiple_of for s in method.task_profile(method.task)["stages"].values())
    tile = max(32, 2 * multiple)
    parts = restore_tensor(method, x, tile=tile, tile_overlap=tile // 2, **knobs)
    assert parts.shape == whole.shape
    # tiny random networks have receptive fields far beyond the overlap; the blend keeps the
    # difference small, and the identity-like stages (classical methods) are exact
    limit = 2e-5 if not method.needs_weights else 0.08
    assert float((parts - whole).abs().max()) <= limit, name


@pytest.mark.parametrize("name", METHODS)
def test_seeded_restore_repeats(name, example_rgb):
    method = build(name)
    x = torch.from_numpy(example_rgb)[None]
    a = restore_tensor(method, x, seed=3, **defaults(method))
    b = restore_tensor(method, x, seed=3, **defaults(method))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", METHODS)
def test_weights_round_trip(name, tmp_path, example_rgb):
    """save_weights -> from_weights rebuilds the same network and the same outputs."""
    from irc.weights import save_weights

    cls = get_method(name)
    method = build(name)
    path = save_weights(tmp_path / f"{name}.safetensors", method.state_dict(), method.metadata())
    loaded = cls.from_weights(path, device="cpu")
    assert loaded.config == method.config
    x = torch.from_numpy(example_rgb)[None]
    assert torch.equal(restore_tensor(loaded, x, **defaults(method)), restore_tensor(method, x, **defaults(method)))


@pytest.mark.parametrize("name", [n for n in METHODS if get_method(n).needs_weights])
def test_weights_with_a_missing_tensor_are_refused(name, tmp_path):
    from irc.weights import save_weights

    method = build(name)
    state = method.state_dict()
    state.pop(next(iter(state)))
    path = save_weights(tmp_path / "bad.safetensors", state, method.metadata())
    with pytest.raises(WeightsError, match="missing"):
        get_method(name).from_weights(path)


@pytest.mark.parametrize("name", METHODS)
def test_wrong_channel_count_is_a_usage_error(name):
    method = build(name)
    if method.kind == "any":
        pytest.skip(f"{name} takes any channel count")
    with pytest.raises(UsageError, match="channel"):
        method.restore(torch.zeros(1, 2, 16, 16), **defaults(method))


@pytest.mark.parametrize("name", METHODS)
def test_trainable_state_is_what_trains(name):
    """Checkpoints and EMA cover trainable components; parameter groups hold only their params."""
    method = build(name)
    groups = method.parameter_groups()  # may build training-only parts (a GAN's discriminator)
    trainable = {id(t) for c in method.components() if c.trainable for t in c.parameters()}
    for params in groups.values():
        assert all(id(p) in trainable for p in params)
    state = method.trainable_state()
    for comp in method.components():
        if not comp.trainable:
            assert not (set(comp.state()) - {k for c in method.components() if c.trainable for k in c.state()}) & set(state)
