"""The classical baselines beyond the generic contract."""

from __future__ import annotations

import math

import pytest
import torch

from irc.errors import UsageError
from irc.methods import get_method


@pytest.mark.parametrize("scale", [0.25, 0.3, 0.5, 2.0, 3.0])
def test_bicubic_tiling_is_exact_when_shrinking_and_enlarging(scale):
    method = get_method("bicubic").from_config(None)
    x = torch.rand(1, 3, 200, 260, generator=torch.Generator().manual_seed(0))
    whole = method.restore(x, scale=scale)
    tiled = method.restore(x, scale=scale, tile=96)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() < 1e-5


@pytest.mark.parametrize("scale", [0, -2, 1e-9, 1000, math.inf, math.nan])
def test_bicubic_refuses_absurd_scales(scale):
    with pytest.raises(UsageError, match="between 1/64 and 64"):
        get_method("bicubic").check_knobs({"scale": scale})


def test_identity_returns_its_input_unclipped():
    x = torch.tensor([[[[-0.2, 0.5, 1.3]]]])
    assert torch.equal(get_method("identity").from_config(None).restore(x), x)
