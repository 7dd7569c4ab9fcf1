"""Weight averaging: one weights file from several trained files of the same network.

Averaging the parameters of networks fine-tuned from one starting point ("model soups",
Wortsman et al., ICML 2022; WiSE-FT, Wortsman et al., CVPR 2022, which interpolates between a
model and its fine-tuned continuation) can keep part of the continuation's gains while undoing
some of its harm: weights/tur/tur-photo.md measures such averages of the photo model's stages
against the stages themselves (one of them was the default for a few hours, until a better
second stage passed alone). The files must come from one run lineage —
averaging networks trained from different initialisations is meaningless — which irc cannot
see; what it checks is that they are the same method, architecture and tensor layout.
LoRA factors are refused: the mean of two adapters' products ``B·A`` is not the product of their
means, so a parameter-wise mean of LoRA files is not the mean of the models.

``irc weights average A B --out C`` is the command; :func:`average_weights` does the work.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from irc.errors import UsageError, WeightsError

# Config keys that describe how a run started, not the network: files that differ only in
# these average fine (the continuation of a run names its start in ``init_from``).
TRAINING_ONLY_CONFIG_KEYS = ("init_from",)

# Metadata that describes a file's training, not how to load it: kept when every input agrees,
# dropped otherwise (``averaged_from`` records each input's steps). Any other metadata (LoRun's
# ``cs_phi`` says how its matrix is stored) must agree, or the files do not average.
TRAINING_METADATA = ("steps", "recipe", "data", "trained_on", "name", "description", "averaged_from", "irc_version", "format")


def parse_ratios(text: str | None, count: int) -> list[float]:
    """``--ratios`` as weights that sum to 1: ``None`` gives equal shares; ``"1,3"`` gives
    0.25 / 0.75 (numbers >= 0, not all zero, normalised).

    Raises:
        UsageError: a wrong count, a value that is not a finite number >= 0, or all zero.
    """
    if text is None:
        return [1.0 / count] * count
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--ratios {text!r}: give {count} comma-separated numbers, e.g. 1,1") from None
    if len(values) != count:
        raise UsageError(f"--ratios {text!r}: {len(values)} numbers for {count} files")
    total = sum(values)
    if any(not math.isfinite(v) or v < 0 for v in values) or not 0 < total < math.inf:
        raise UsageError(f"--ratios {text!r}: shares must be finite numbers >= 0, not all zero")
    return [v / total for v in values]


def _network_config(metadata: dict[str, Any], path: Path) -> tuple[str, dict[str, Any]]:
    method, config = metadata.get("method"), metadata.get("config")
    if not isinstance(method, str) or not isinstance(config, dict):
        raise WeightsError(f"{path}: no irc method and config in its metadata; only weights irc wrote can be averaged")
    return method, {k: v for k, v in config.items() if k not in TRAINING_ONLY_CONFIG_KEYS}


def average_weights(paths: Sequence[Path], ratios: Sequence[float]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The weighted mean of several weights files of one method and architecture.

    Floating-point tensors are summed in float64 and stored in their own dtype (so an equal
    average of two float32 files is exact to float32 rounding); other tensors (integer buffers)
    must be equal in every file and are kept.

    Args:
        paths: Two or more ``.safetensors`` files written by irc (``irc train --export`` or this
            function): each carries ``method`` and ``config`` metadata.
        ratios: One share per file, summing to 1 (:func:`parse_ratios`).

    Returns:
        ``(state_dict, metadata)`` for :func:`irc.weights.save_weights`: the first file's method
        and config (its ``init_from`` cleared), the other metadata the files agree on (training
        descriptions such as ``steps`` or ``recipe`` are dropped where they differ), and
        ``averaged_from``: a list of ``{"file", "sha256", "share", "steps"}``, one per input.

    Raises:
        WeightsError: fewer than two files, different methods, configs (apart from training-only
            keys), tensor names, shapes or dtypes, unequal non-float tensors, or other metadata
            (not a training description) that differs.
    """
    import torch

    from irc.download import sha256_file
    from irc.weights import load_weights

    if len(paths) < 2:
        raise WeightsError("averaging needs at least two weights files")
    if len(ratios) != len(paths):
        raise WeightsError(f"{len(ratios)} shares for {len(paths)} files")
    loaded = [(Path(p), *load_weights(Path(p))) for p in paths]
    first_path, first_state, first_meta = loaded[0]
    lora = [k for k in first_state if ".lora_A." in k or ".lora_B." in k]
    if lora:
        raise WeightsError(f"{first_path} holds LoRA factors ({lora[0]} ...): the mean of LoRA files is not the mean of their models (B·A does not average factor by factor)")
    method, config = _network_config(first_meta, first_path)
    for path, state, meta in loaded[1:]:
        other_method, other_config = _network_config(meta, path)
        if other_method != method:
            raise WeightsError(f"{path} is {other_method} weights, {first_path} is {method}: only one method's weights average")
        if other_config != config:
            keys = sorted(k for k in set(config) | set(other_config) if config.get(k) != other_config.get(k))
            raise WeightsError(f"{path} and {first_path} are different networks: config differs in {', '.join(keys)}")
        if set(state) != set(first_state):
            missing, extra = sorted(set(first_state) - set(state)), sorted(set(state) - set(first_state))
            raise WeightsError(f"{path} has other tensors than {first_path}: missing {missing[:5]}, unexpected {extra[:5]}")
        for key, tensor in state.items():
            ref = first_state[key]
            if tensor.shape != ref.shape or tensor.dtype != ref.dtype:
                raise WeightsError(f"{path}: {key} is {tuple(tensor.shape)} {tensor.dtype}, {first_path} has {tuple(ref.shape)} {ref.dtype}")
            if not ref.is_floating_point() and not torch.equal(tensor, ref):
                raise WeightsError(f"{path}: {key} ({ref.dtype}) differs from {first_path}'s and cannot be averaged")

    full_config = dict(first_meta["config"])
    for key in TRAINING_ONLY_CONFIG_KEYS:
        if key in full_config:
            full_config[key] = ""
    metadata: dict[str, Any] = {}
    for key in dict.fromkeys(k for _, _, meta in loaded for k in meta):
        if key in ("method", "config"):
            continue
        values = [meta.get(key) for _, _, meta in loaded]
        if all(v == values[0] for v in values):
            metadata[key] = values[0]
        elif key not in TRAINING_METADATA:
            raise WeightsError(f"the files' metadata {key!r} differs ({', '.join(repr(v) for v in values)}): they do not average")
    if len({meta.get("recipe") for _, _, meta in loaded}) > 1:
        # ``data`` summarises a recipe's data; where the recipes differ it can hide how (the
        # photo model's stages differ in task shares that the summary leaves out)
        metadata.pop("data", None)
    for key in ("averaged_from", "irc_version", "format"):  # the new file's own
        metadata.pop(key, None)

    averaged: dict[str, Any] = {}
    for key, ref in first_state.items():
        if not ref.is_floating_point():
            averaged[key] = ref.clone()
            continue
        total = torch.zeros(ref.shape, dtype=torch.float64)
        for (_, state, _), share in zip(loaded, ratios):
            total += share * state[key].to(torch.float64)
        averaged[key] = total.to(ref.dtype)

    metadata.update(
        method=method,
        config=full_config,
        averaged_from=json.dumps(
            [{"file": path.name, "sha256": sha256_file(path), "share": share, "steps": meta.get("steps", "")}
             for (path, _, meta), share in zip(loaded, ratios)]
        ),
    )
    return averaged, metadata
