"""HYPIR's LoRA on the SD2.1 UNet, in the official format (METHODS.md §3.3), through peft.

The released ``HYPIR_sd2.pth`` is a plain ``{name: tensor}`` dict with the keys
``<module path>.lora_A.default.weight`` / ``.lora_B.default.weight`` of peft's
``LoraConfig(r=256, lora_alpha=256, target_modules=TARGETS)`` attached with diffusers'
``add_adapter`` (514 tensors on the SD2.1 UNet). The rank is read from the tensors' shapes, so a
small LoRA made for a test model loads the same way (alpha equals the rank, as upstream). A file
must hold exactly the adapter's keys: anything else is an error listing the missing and
unexpected ones. ``.pth`` files are read with ``torch.load(weights_only=True)`` (tensors and plain
containers only, never arbitrary objects) and converted once to safetensors beside them (or in
irc's cache when that folder is read-only).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from irc.errors import WeightsError

__all__ = ["TARGETS", "add_lora", "lora_keys", "lora_rank", "merge_lora", "read_lora_file"]

TARGETS: tuple[str, ...] = (
    "to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out", "proj_in", "proj_out",
    "ff.net.2", "ff.net.0.proj",
)  # fmt: skip


def is_lora_key(key: str) -> bool:
    return ".lora_A." in key or ".lora_B." in key


def add_lora(unet: nn.Module, rank: int, targets: tuple[str, ...] = TARGETS) -> None:
    """Attach a peft LoRA adapter named ``default`` (alpha = rank, Gaussian init as upstream)."""
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=int(rank), lora_alpha=int(rank), init_lora_weights="gaussian", target_modules=list(targets)))


def merge_lora(unet: nn.Module, *, unmerge: bool = False) -> int:
    """Add each LoRA layer's ``scaling * B @ A`` to its base weight (or subtract it again), in
    the weights' own dtype, and mark the layers merged so that peft's forward skips the branch.

    The same arithmetic as peft's merge (``get_delta_weight``: ``B @ A`` for linear layers, the
    1x1 ``B`` composed with ``A``'s kernel for convolutions), with one difference: peft computes
    bf16 deltas in fp32 on a CPU, which took 12 s for HYPIR's rank-256 adapter on one core of
    this project's machine against 1.6 s for the same products in bf16 (AMX, fp32 accumulation;
    the delta is rounded to bf16 in both). That was most of the first image's extra time.

    Unmerging recomputes the delta from the factors as they are: the factors and their scaling
    must not change while merged (HYPIR unmerges before ``set_adapters`` or loading a LoRA).

    Returns:
        The number of layers changed.
    """
    from peft.tuners.lora.layer import LoraLayer

    layers = [m for m in unet.modules() if isinstance(m, LoraLayer) and "default" in m.lora_A]
    todo = [m for m in layers if ("default" in m.merged_adapters) == unmerge]  # the others are already as wanted
    for module in todo:  # check every layer before changing any: never leave a half-merged UNet
        b = module.lora_B["default"].weight
        plain = (
            not getattr(module, "fan_in_fan_out", False) and getattr(module.get_base_layer(), "groups", 1) == 1
            and not any((getattr(module, attr, {}) or {}).get("default") for attr in ("use_dora", "lora_variant", "lora_bias"))
            and (b.dim() == 2 or tuple(b.shape[2:]) == (1,) * (b.dim() - 2))
        )  # fmt: skip
        if not plain:
            raise WeightsError(f"cannot merge {type(module).__name__}: not a plain LoRA layer (DoRA, LoRA bias, grouped or transposed)")
    with torch.no_grad():
        for module in todo:
            weight = module.get_base_layer().weight
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            delta = torch.mm(b.flatten(1).to(weight.dtype), a.flatten(1).to(weight.dtype))
            scaling = float(module.scaling["default"])
            if scaling != 1.0:
                delta = (delta.float() * scaling).to(weight.dtype)
            delta = delta.view(weight.shape)
            if unmerge:
                weight.sub_(delta)
                module.merged_adapters.remove("default")
            else:
                weight.add_(delta)
                module.merged_adapters.append("default")
    return len(todo)


def lora_keys(unet: nn.Module) -> list[str]:
    return [k for k in unet.state_dict() if is_lora_key(k)]


def lora_rank(state: dict[str, Tensor]) -> int:
    """The rank of a HYPIR-format LoRA state (the first dimension of its ``lora_A`` tensors)."""
    ranks = {int(v.shape[0]) for k, v in state.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise WeightsError(f"not a HYPIR LoRA: lora_A tensors of ranks {sorted(ranks) or 'none'}")
    return ranks.pop()


def read_lora_file(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a HYPIR LoRA file (``.pth`` or ``.safetensors``).

    A ``.pth`` is converted to ``<stem>.safetensors`` beside it on first use (or under irc's cache
    when the folder is read-only), so later loads skip the (safe but slow) unpickler.
    """
    from safetensors.torch import load_file, save_file

    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    converted = path.with_suffix(".safetensors")
    if not converted.is_file() or converted.stat().st_mtime < path.stat().st_mtime:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a pickle with anything but tensors is refused, as any bad file
            raise WeightsError(f"{path}: not a plain tensor dict ({type(err).__name__}: {str(err).splitlines()[0]})") from None
        if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
            raise WeightsError(f"{path}: expected a dict of named tensors (the HYPIR LoRA format)")
        state = {k: v.contiguous() for k, v in state.items()}
        from irc.atomic import atomic_path

        try:
            with atomic_path(converted) as tmp:  # another process may be reading or writing it too
                save_file(state, str(tmp))
        except OSError:
            from irc.download import cache_dir

            converted = cache_dir() / "weights" / "converted" / f"{path.stem}-{path.stat().st_size}.safetensors"
            with atomic_path(converted) as tmp:
                save_file(state, str(tmp))
        return state
    return load_file(str(converted))


def check_key_set(given: dict[str, Tensor], expected: list[str], where: str) -> None:
    """The file's keys must equal the adapter's exactly (the official loader asserts the same)."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"{where} does not fit this UNet's LoRA ({len(expected)} tensors): "
            f"missing {len(missing)} {missing[:3]}, unexpected {len(unexpected)} {unexpected[:3]}"
        )
