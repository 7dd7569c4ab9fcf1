from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from irc.config import build_config, config_to_dict, parse_set_options
from irc.errors import UsageError


@dataclass(frozen=True)
class Demo:
    stages: int = 9
    gamma: float = 10.0
    task: Literal["cs", "cassi", "sr"] = "cs"
    learnable: bool = False
    widths: tuple[int, ...] = (32, 64)
    note: str | None = None


def test_layers_override_in_order():
    cfg = build_config(Demo, {"stages": 3}, None, {"stages": "5", "task": "sr"})
    assert cfg == Demo(stages=5, task="sr")


def test_strings_are_typed():
    cfg = build_config(Demo, parse_set_options(["gamma=2.5", "learnable=true", "widths=16,32,48", "note=none"]))
    assert cfg.gamma == 2.5 and cfg.learnable is True and cfg.widths == (16, 32, 48) and cfg.note is None
    assert build_config(Demo, {"widths": "[1, 2]"}).widths == (1, 2)


def test_unknown_key_names_valid_ones():
    with pytest.raises(UsageError, match=r"unknown config key of Demo 'stage' \(did you mean 'stages'\?\); valid: stages, gamma, task"):
        build_config(Demo, {"stage": 3})


@pytest.mark.parametrize(
    "key,value",
    [("stages", "2.5"), ("stages", True), ("task", "denoise"), ("learnable", "maybe"), ("gamma", "x"), ("widths", 3)],
)
def test_bad_values_are_usage_errors(key, value):
    with pytest.raises(UsageError, match=key):
        build_config(Demo, {key: value})


def test_set_option_syntax():
    with pytest.raises(UsageError, match="key=value"):
        parse_set_options(["stages"])


def test_config_to_dict_is_json_ready():
    assert config_to_dict(Demo()) == {"stages": 9, "gamma": 10.0, "task": "cs", "learnable": False, "widths": [32, 64], "note": None}
