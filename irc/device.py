"""Device and precision selection for every command (``--device``, ``--dtype``).

Devices are resolved through accelerate's :class:`~accelerate.PartialState` so that
``accelerate launch -m irc ...`` / ``torchrun`` processes each get their own GPU and can shard the
inputs; a single plain process gets ``cuda`` when available, then ``mps``, then ``cpu``.
"""

from __future__ import annotations

import functools

import torch

from irc.errors import UsageError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a usable :class:`torch.device`.

    Raises:
        UsageError: for a malformed spec or a device this machine does not have.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        from accelerate import PartialState

        return PartialState().device
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError("--device mps: this machine has no usable Apple MPS device; use --device cpu")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu")
        if spec == "cuda":
            from accelerate import PartialState

            state = PartialState()
            return state.device if state.device.type == "cuda" else torch.device("cuda")
        index_text = spec.partition(":")[2]
        if not index_text.isdigit():
            raise UsageError(f"--device {spec}: expected cuda:N with N a GPU index")
        index = int(index_text)
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return torch.device("cuda", index)
    raise UsageError(f"--device {spec!r}: expected auto, cpu, cuda, cuda:N or mps")


def resolve_dtype(spec: str, device: torch.device, accelerator_default: torch.dtype = torch.float32) -> torch.dtype:
    """Turn ``auto|fp32|bf16|fp16`` into a dtype valid on ``device``.

    ``auto`` is fp32 on CPU (weights may then ask for another, see
    :meth:`irc.methods.base.Method.auto_cpu_dtype`) and the method's preferred dtype elsewhere. fp16 on CPU is refused:
    most CPU kernels do not implement it and those that do are slow and lossy.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if device.type == "cpu":
            return torch.float32
        if accelerator_default is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return accelerator_default
    if spec not in DTYPES:
        raise UsageError(f"--dtype {spec!r}: expected auto, fp32, bf16 or fp16")
    if spec == "fp16" and device.type == "cpu":
        raise UsageError("--dtype fp16 is not supported on CPU; use --dtype fp32 (default) or bf16")
    return DTYPES[spec]


@functools.lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX with bf16 tiles (Linux ``/proc/cpuinfo`` flag ``amx_bf16``).

    oneDNN then runs bf16 convolutions several times faster than fp32 ones; elsewhere bf16 on a
    CPU is emulated and slower, so callers keep fp32.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in f)
    except OSError:
        return False
