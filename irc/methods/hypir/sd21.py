"""Stable Diffusion 2.1-base: its architecture, a random-weight copy of it, and loading a folder.

HYPIR runs on the five parts of a diffusers repository laid out like
``stabilityai/stable-diffusion-2-1-base`` (``unet``, ``vae``, ``text_encoder``, ``tokenizer``,
``scheduler``). :data:`SD21_BASE` holds the published architecture of that repository (its
``config.json`` values, numbers only), so that ``irc bench --method hypir --random-weights``
measures the real network with no download, and :data:`TINY` a miniature with the same module
names for the offline tests. :func:`write_random_base` writes either as a diffusers folder, with a
character-level CLIP tokenizer (a BPE vocabulary of the 256 byte symbols and no merges: real
prompts tokenise to the same length class, which is all a speed test needs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["PARTS", "SD21_BASE", "TINY", "ArchitectureSpec", "BaseModel", "load_base", "load_random_base", "write_random_base"]

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass(frozen=True)
class ArchitectureSpec:
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    scheduler: dict[str, Any]


# The SD2.1-base scheduler: HYPIR reads it into a DDPMScheduler (clip_sample false, as stored).
_SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}  # fmt: skip

SD21_BASE = ArchitectureSpec(
    unet={
        "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False, "cross_attention_dim": 1024,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
        "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4,
        "sample_size": 64, "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "use_linear_projection": True,
    },
    vae={
        "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
        "norm_num_groups": 32, "out_channels": 3, "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4,
        "scaling_factor": 0.18215,
    },
    text_encoder={
        "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 23,
        "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "gelu", "projection_dim": 512,
        "layer_norm_eps": 1e-05, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    },
    scheduler=_SCHEDULER,
)  # fmt: skip

TINY = ArchitectureSpec(
    unet={
        **SD21_BASE.unet, "attention_head_dim": [2, 2], "block_out_channels": [32, 64], "cross_attention_dim": 32,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 8,
    },
    vae={
        **SD21_BASE.vae, "block_out_channels": [8, 16, 16, 16], "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 64,
    },
    text_encoder={
        **SD21_BASE.text_encoder, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
        "vocab_size": 600, "projection_dim": 32,
    },
    scheduler=_SCHEDULER,
)  # fmt: skip


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible map from bytes to printable characters (a published table)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def write_tokenizer(folder: Path) -> None:
    """A character-level CLIP tokenizer: the 256 byte symbols (alone and word-final) and no merges."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    config = {
        "model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!",
        "unk_token": "<|endoftext|>", "do_lower_case": True, "tokenizer_class": "CLIPTokenizer",
    }  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "special_tokens_map.json").write_text(json.dumps({k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}))


def write_random_base(folder: str | Path, spec: ArchitectureSpec = TINY, *, seed: int = 0) -> Path:
    """Write a diffusers folder with the five parts of ``spec`` and random weights (seeded).

    Returns:
        ``folder``, loadable by :func:`load_base` (and by diffusers' own ``from_pretrained``).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(seed)
    UNet2DConditionModel(**spec.unet).save_pretrained(folder / "unet")
    AutoencoderKL(**spec.vae).save_pretrained(folder / "vae")
    text_config = CLIPTextConfig(**spec.text_encoder)
    CLIPTextModel(text_config).save_pretrained(folder / "text_encoder")
    write_tokenizer(folder / "tokenizer")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(spec.scheduler, indent=2))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0"}))
    return folder


@dataclass
class BaseModel:
    """The loaded parts of an SD2.1-layout folder."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any


def load_random_base(kind: str = "tiny", *, seed: int = 0) -> BaseModel:
    """Random weights of :data:`TINY` (``tiny``) or :data:`SD21_BASE` (``sd21``), built in memory
    (seeded; the tokenizer files are written once into irc's cache)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from irc.download import cache_dir

    specs = {"tiny": TINY, "sd21": SD21_BASE}
    if kind not in specs:
        from irc.errors import UsageError

        raise UsageError(f"base random:{kind}: expected random:tiny or random:sd21")
    spec = specs[kind]
    _quiet_libraries()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        unet = UNet2DConditionModel(**spec.unet)
        vae = AutoencoderKL(**spec.vae)
        text_encoder = CLIPTextModel(CLIPTextConfig(**spec.text_encoder))
    finally:
        torch.random.set_rng_state(state)
    folder = cache_dir() / "hypir" / "toy-tokenizer"
    if not (folder / "vocab.json").is_file():
        write_tokenizer(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    scheduler = DDPMScheduler.from_config({k: v for k, v in spec.scheduler.items() if not k.startswith("_")})
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    return BaseModel(unet, vae, text_encoder, tokenizer, scheduler)


def _quiet_libraries() -> None:
    """diffusers / transformers log and draw progress bars on stderr; irc keeps stderr for its own lines."""
    import logging

    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
        from diffusers.utils import logging as dlog

        dlog.disable_progress_bar()
    except ImportError:  # pragma: no cover - older versions
        pass


def check_layout(folder: Path) -> None:
    """Raise :class:`irc.errors.WeightsError` naming the missing parts of an SD2.1 folder."""
    from irc.errors import WeightsError

    missing = [p for p in PARTS if not (folder / p).is_dir()]
    if missing:
        raise WeightsError(
            f"{folder} is not a Stable Diffusion 2.1 folder: missing {', '.join(p + '/' for p in missing)} "
            "(expected the layout of stable-diffusion-2-1-base: unet, vae, text_encoder, tokenizer, scheduler)"
        )


def load_base(folder: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> BaseModel:
    """Load the five parts (weights with safetensors; the tokenizer from its vocabulary files)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    check_layout(folder)
    _quiet_libraries()
    kwargs = {"torch_dtype": dtype, "use_safetensors": True}
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", **kwargs)
    vae = AutoencoderKL.from_pretrained(folder / "vae", **kwargs)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", **kwargs)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    for module in (unet, vae, text_encoder):
        module.to(device).eval().requires_grad_(False)
    return BaseModel(unet, vae, text_encoder, tokenizer, scheduler)
