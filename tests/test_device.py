from __future__ import annotations

import pytest
import torch

from irc.device import resolve_device, resolve_dtype
from irc.errors import UsageError


def test_auto_and_cpu():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(UsageError, match="CUDA is not available"):
        resolve_device("cuda:0")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu"])
def test_malformed_device(spec):
    with pytest.raises(UsageError):
        resolve_device(spec)


def test_dtypes_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu, torch.bfloat16) is torch.float32
    assert resolve_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(UsageError, match="fp16 is not supported on CPU"):
        resolve_dtype("fp16", cpu)
    with pytest.raises(UsageError):
        resolve_dtype("fp64", cpu)
