"""Contract tests, parametrized over the registry: every method that lands is covered."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from irc.errors import UsageError
from irc.methods import REGISTRY, get_method
from irc.methods.base import Method

METHODS = list(REGISTRY)


def build(name: str) -> Method:
    cls = get_method(name)
    return cls.from_config(None, device="cpu", dtype=torch.float32)


@pytest.mark.parametrize("name", METHODS)
def test_registry_entry_is_a_method(name):
    cls = get_method(name)
    assert issubclass(cls, Method)
    assert cls.name == name
    assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    info = cls.describe()
    assert info["name"] == name and info["tasks"]
    for knob in cls.knobs:
        assert knob.help, f"{name}.{knob.name} has no help text"


def test_unknown_method_lists_available():
    with pytest.raises(UsageError, match="available: identity, bicubic"):
        get_method("nope")


@pytest.mark.parametrize("name", METHODS)
def test_unknown_config_key_is_an_error(name):
    cls = get_method(name)
    with pytest.raises(UsageError, match="unknown config key"):
        cls.from_config({"definitely_not_a_key": 1})


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
def test_restore_shape_and_range(name, channels, real_rgb, real_grey):
    from irc.pipeline import restore_tensor

    method = build(name)
    x = torch.from_numpy(real_rgb if channels == 3 else real_grey)[None]
    knobs = {k.name: k.default for k in method.knobs}
    y = restore_tensor(method, x, **knobs)
    scale = method.output_scale(method.check_knobs(knobs))
    assert y.shape[:2] == x.shape[:2]
    assert abs(y.shape[-2] - x.shape[-2] * scale) <= 1 and abs(y.shape[-1] - x.shape[-1] * scale) <= 1
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0


@pytest.mark.parametrize("name", METHODS)
def test_tiled_restore_matches_whole_image(name, real_rgb):
    cls = get_method(name)
    if cls.tile_spec.support not in ("supported", "discouraged"):
        pytest.skip(f"{name} tiles internally or not at all")
    method = build(name)
    x = torch.from_numpy(real_rgb)[None]
    knobs = {k.name: k.default for k in method.knobs}
    whole = method.restore(x, **knobs)
    parts = method.restore(x, tile=32, tile_overlap=max(cls.tile_spec.min_overlap, 8), **knobs)
    assert parts.shape == whole.shape
    assert torch.allclose(parts, whole, atol=2e-5)


@pytest.mark.parametrize("name", METHODS)
def test_weights_round_trip(name, tmp_path, real_rgb):
    """save_weights -> from_weights rebuilds the same network and the same outputs."""
    from irc.weights import save_weights

    cls = get_method(name)
    method = build(name)
    path = save_weights(tmp_path / f"{name}.safetensors", method.state_dict(), method.metadata())
    loaded = cls.from_weights(path, device="cpu")
    assert loaded.config == method.config
    x = torch.from_numpy(real_rgb)[None]
    knobs = {k.name: k.default for k in method.knobs}
    assert torch.equal(loaded.restore(x, **knobs), method.restore(x, **knobs))


@pytest.mark.parametrize("name", METHODS)
def test_wrong_channel_count_is_a_usage_error(name):
    method = build(name)
    bad = 2
    with pytest.raises(UsageError, match="channel"):
        method.restore(torch.zeros(1, bad, 16, 16), **{k.name: k.default for k in method.knobs})
