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

__all__ = ["TARGETS", "add_lora", "lora_keys", "lora_rank", "read_lora_file"]

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
