"""Training checkpoints that hold tensors and plain data only, with checksums.

A checkpoint is a folder ``RUN_DIR/checkpoints/step-NNNNNNNN`` with three files:

* ``tensors.safetensors`` — every tensor of the state: the trainable components' weights, their
  EMA, the optimisers' moments;
* ``state.json`` — everything else, with ``{"__tensor__": KEY}`` where a tensor was (counters,
  learning-rate schedules, optimiser settings, the fp16 loss scaler);
* ``irc_checkpoint.json`` — the marker, written last: step, reason, time, hardware, and the
  sha256 of the two files.

Resuming reads safetensors and JSON, never a pickle: a crafted file in a run directory (a shared
scratch, a downloaded run) cannot run code, and a pickle found where none is expected is refused
with a message. Checksums are verified before anything is loaded; with ``--resume auto`` a
checkpoint that fails them (a truncated copy, a flipped byte) is skipped with a warning naming
it, and the previous good one is used.

Folders written by irc before this format (accelerate's ``custom_checkpoint_0.pkl``) can still
be exported (``irc train --export-only``, read with ``torch.load(weights_only=True)``, which
only rebuilds tensors and plain containers); they cannot be resumed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from irc.errors import IrcError, UsageError

__all__ = [
    "CHECKPOINTS",
    "MARKER",
    "CheckpointError",
    "from_plain",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "resolve_resume",
    "save_checkpoint_files",
    "to_plain",
]

CHECKPOINTS = "checkpoints"
MARKER = "irc_checkpoint.json"
TENSORS = "tensors.safetensors"
STATE = "state.json"
LEGACY_STATE = "custom_checkpoint_0.pkl"
PREFIX = "step-"
PARTIAL = ".partial"
FORMAT = 2
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth")


class CheckpointError(IrcError):
    """A checkpoint that cannot be used (corrupt, unsafe, or of another format)."""


# --------------------------------------------------------------------------------------------
# plain data <-> (JSON, tensors)
# --------------------------------------------------------------------------------------------


def to_plain(obj: Any, tensors: dict[str, Tensor], key: str = "") -> Any:
    """A JSON-able copy of ``obj`` whose tensors are moved into ``tensors`` (by dotted key).

    Dicts with non-string keys (an optimiser's per-parameter state) become ``{"__items__":
    [[key, value], ...]}``; tuples become lists; non-finite floats ``{"__float__": "nan"}``.
    Anything else (an arbitrary object) is a ``TypeError``: checkpoints never pickle.
    """
    if isinstance(obj, Tensor):
        name = key or "_"
        tensors[name] = obj.detach().to("cpu").clone().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, Mapping):
        items = list(obj.items())
        if all(isinstance(k, str) and not k.startswith("__") for k, _ in items):
            return {k: to_plain(v, tensors, f"{key}.{k}" if key else k) for k, v in items}
        return {"__items__": [[k, to_plain(v, tensors, f"{key}.{k}" if key else str(k))] for k, v in items]}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, tensors, f"{key}.{i}" if key else str(i)) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": str(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint state {key!r} holds a {type(obj).__name__}; only tensors and plain data are saved")


def from_plain(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of :func:`to_plain`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: from_plain(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__float__"}:
            return float(obj["__float__"])
        return {k: from_plain(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_plain(v, tensors) for v in obj]
    return obj


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# writing and reading one checkpoint folder
# --------------------------------------------------------------------------------------------


def save_checkpoint_files(folder: Path, state: Mapping[str, Any], marker: Mapping[str, Any]) -> None:
    """Write ``state`` (plain data and tensors) and the marker into ``folder`` (which exists)."""
    from safetensors.torch import save_file

    from irc.atomic import atomic_write_text, current_umask

    tensors: dict[str, Tensor] = {}
    plain = to_plain(dict(state), tensors)
    save_file(tensors, str(folder / TENSORS))
    os.chmod(folder / TENSORS, 0o666 & ~current_umask())  # safetensors writes 0600; follow the umask
    atomic_write_text(folder / STATE, json.dumps({"format": FORMAT, "state": plain}) + "\n")
    files = {name: _sha256(folder / name) for name in (TENSORS, STATE)}
    atomic_write_text(folder / MARKER, json.dumps({**marker, "format": FORMAT, "files": files}, indent=2) + "\n")


def read_marker(checkpoint: Path) -> dict[str, Any]:
    try:
        marker = json.loads((checkpoint / MARKER).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{checkpoint}: unreadable checkpoint marker ({err})") from None
    if not isinstance(marker, dict):
        raise CheckpointError(f"{checkpoint}: the checkpoint marker is not a JSON object")
    return marker


def verify_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """The marker of ``checkpoint`` after checking its files' sha256 and that it holds no pickle.

    Raises:
        CheckpointError: naming what is wrong.
    """
    marker = read_marker(checkpoint)
    stray = sorted(p.name for p in checkpoint.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES)
    if marker.get("format") != FORMAT:
        if (checkpoint / LEGACY_STATE).is_file():
            raise CheckpointError(
                f"{checkpoint} was written by an older irc (accelerate pickles), which is never unpickled on resume; "
                "export its weights with `irc train --export-only` and start a new run from them"
            )
        raise CheckpointError(f"{checkpoint}: unknown checkpoint format {marker.get('format')!r}")
    if stray:
        raise CheckpointError(f"{checkpoint} holds pickle files ({', '.join(stray)}) where none belong; refusing to load it")
    files = marker.get("files")
    if not isinstance(files, dict) or set(files) != {TENSORS, STATE}:
        raise CheckpointError(f"{checkpoint}: the marker lists no checksums")
    for name, expected in files.items():
        path = checkpoint / name
        if not path.is_file():
            raise CheckpointError(f"{checkpoint}: {name} is missing")
        if _sha256(path) != expected:
            raise CheckpointError(f"{checkpoint}: {name} does not match its checksum (corrupt or modified)")
    return marker


def load_checkpoint(checkpoint: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, marker)`` of a verified checkpoint (tensors on the CPU)."""
    from safetensors.torch import load_file

    marker = verify_checkpoint(checkpoint)
    try:
        tensors = load_file(str(checkpoint / TENSORS))
        plain = json.loads((checkpoint / STATE).read_text())
    except Exception as err:  # noqa: BLE001 - verified files that still do not parse: one line
        raise CheckpointError(f"{checkpoint}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    try:
        return from_plain(plain["state"], tensors), marker
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{checkpoint}: malformed checkpoint state ({err})") from None


def load_legacy_weights(checkpoint: Path) -> dict[str, Any]:
    """The registered state of an accelerate-era checkpoint, for export only (tensors and
    plain containers: ``torch.load(weights_only=True)`` never builds other objects)."""
    try:
        return torch.load(checkpoint / LEGACY_STATE, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{checkpoint}: cannot read {LEGACY_STATE} safely ({type(err).__name__}: {err})") from None


# --------------------------------------------------------------------------------------------
# finding checkpoints
# --------------------------------------------------------------------------------------------


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run (a marker is present), oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit() and (p / MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The most recent complete checkpoint of a run, or ``None``."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_resume(resume: str | Path | None, run_dir: Path, *, verify: bool = True) -> Path | None:
    """The checkpoint ``--resume`` names: ``auto`` (the newest good one of ``run_dir``, skipping
    corrupt ones with a warning; ``None`` when there is none), a checkpoint folder, or another run
    directory (its newest good checkpoint)."""
    if resume is None:
        return None
    if str(resume) == "auto":
        return _newest_good(run_dir, verify=verify, required=False)
    path = Path(resume).expanduser()
    if (path / MARKER).is_file():
        if verify:
            verify_checkpoint(path)
        return path
    if (path / CHECKPOINTS).is_dir():
        return _newest_good(path, verify=verify, required=True, what=f"--resume {resume}")
    raise UsageError(f"--resume {resume}: not a checkpoint (a {CHECKPOINTS}/{PREFIX}N folder with {MARKER}) nor a run directory")


def _newest_good(run_dir: Path, *, verify: bool, required: bool, what: str = "") -> Path | None:
    candidates = list_checkpoints(run_dir)
    problems: list[str] = []
    for checkpoint in reversed(candidates):
        if not verify:
            return checkpoint
        try:
            verify_checkpoint(checkpoint)
        except CheckpointError as err:
            if "older irc" in str(err):
                raise
            problems.append(str(err))
            warnings.warn(f"skipping checkpoint {checkpoint.name}: {err}", stacklevel=2)
            continue
        return checkpoint
    if problems:
        raise CheckpointError(f"no usable checkpoint in {run_dir}: " + "; ".join(problems))
    if required:
        raise UsageError(f"{what}: that run has no complete checkpoint")
    return None
