"""The stage runner: the one place where a method's stages meet tiling, memory and randomness.

A method's :meth:`~irc.methods.base.Method.restore` describes its work as stages, each a
function of an image-sized tensor with a :class:`~irc.tiling.TileSpec` (its scale, the multiple
its input needs, its receptive field as a default overlap, its blend window, its memory per
pixel). It never tiles or catches out-of-memory errors itself; it calls :meth:`StageRunner.run`
once per stage:

* a TUR or LoRun SR network is one stage at scale 1 (or the SR factor);
* HYPIR is three (VAE encoder at scale 1/8, UNet at 1, decoder at 8), each with the Gaussian
  blend of the official code and several tiles per call;
* LearnIR runs one stage per sampling step, at that step's resolution.

The runner owns:

* **Tile size.** ``--tile N``, ``0`` (whole image) or ``auto``: sized from free device memory
  and the stage's ``bytes_per_pixel``, halved after an out-of-memory error.
* **Overlap.** ``--tile-overlap`` when given, else the stage's ``overlap`` capped at half the tile,
  so small tiles stay possible.
* **Randomness.** One ``torch.Generator`` per image, seeded from ``--seed`` and the image's key
  (its path relative to the input argument), never from the batch order or the global RNG.
  :meth:`StageRunner.noise` draws noise for the *whole* image on the host; a stage receives it
  sliced per tile (``aux`` of :func:`~irc.tiling.tiled`), so a stochastic method gives the same
  result tiled and untiled up to the blending of its deterministic parts, and the same image gets
  the same noise whichever batch it is in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from irc.tiling import TileSpec, auto_tile_size, run_with_oom_fallback, tiled

__all__ = ["StageRunner", "image_generator", "image_seed"]


def image_seed(seed: int, key: str) -> int:
    """A 63-bit seed for the image called ``key`` under the run seed ``seed`` (sha256 of both)."""
    digest = hashlib.sha256(f"{int(seed)}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def image_generator(seed: int, key: str) -> torch.Generator:
    """A CPU generator seeded by :func:`image_seed`."""
    return torch.Generator(device="cpu").manual_seed(image_seed(seed, key))


@dataclass
class StageRunner:
    """Runs the stages of one restore call (one or more images) on a device.

    Args:
        device: where the stages compute.
        tile: tile edge in input pixels of each stage, ``0`` for none, ``"auto"`` from free memory.
        overlap: the user's overlap (``None``: each stage's default).
        seed: the run seed (``--seed``).
        keys: one key per image of the batch (relative paths; ``""`` for an anonymous image).
        tiles_per_call: windows stacked into one call of a stage that allows it.
    """

    device: torch.device | str = "cpu"
    tile: int | str = 0
    overlap: int | None = None
    seed: int = 0
    keys: Sequence[str] = ("",)
    tiles_per_call: int = 1
    generators: list[torch.Generator] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        if self.tile != "auto" and (isinstance(self.tile, bool) or int(self.tile) < 0):
            raise ValueError(f"tile must be >= 0 or 'auto', got {self.tile!r}")
        self.generators = [image_generator(self.seed, key) for key in self.keys]

    def for_batch(self, batch: int) -> StageRunner:
        """This runner, or a copy with ``batch`` anonymous keys when the count does not match."""
        if batch == len(self.generators):
            return self
        keys = [f"{self.keys[0] if self.keys else ''}#{i}" for i in range(batch)]
        return StageRunner(self.device, self.tile, self.overlap, self.seed, keys, self.tiles_per_call)

    def noise(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normal noise ``(B, *shape)`` on the host, image ``b`` from its own generator."""
        return torch.stack([torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in self.generators]).to(dtype)

    def overlap_for(self, spec: TileSpec, tile: int) -> int:
        """The overlap a stage uses with ``tile``: the user's, else the stage's (at most half a tile)."""
        if self.overlap is not None:
            return int(self.overlap)
        return min(spec.overlap, max(0, tile // 2)) if tile > 0 else spec.overlap

    def run(
        self,
        fn: Callable[..., Tensor],
        x: Tensor,
        spec: TileSpec,
        *,
        aux: Sequence[tuple[Tensor, Literal["in", "out"]]] = (),
        batchable: bool = False,
        tile: int | str | None = None,
        tiles_per_call: int | None = None,
    ) -> Tensor:
        """Run one stage ``fn`` over ``x`` with this runner's tiling.

        Args:
            fn: ``(tile on the device, *aux tiles) -> output tile``; see :func:`irc.tiling.tiled`.
            x: ``(B, C, H, W)`` on any device (the host for large images).
            spec: the stage's scale, alignment, default overlap, blend and memory per pixel.
            aux: whole-image tensors sliced with each tile (e.g. noise from :meth:`noise`).
            batchable: ``fn`` accepts several windows stacked along the batch dimension.
            tile: this stage's tile edge instead of the runner's (a method whose tiling is one of
                its own options, e.g. HYPIR's ``--patch``).
            tiles_per_call: windows per call for a batchable stage (default: the runner's).

        Returns:
            ``(B, C', round(H * scale), round(W * scale))`` on ``x``'s device.
        """
        tile = 0 if spec.support == "unsupported" else (self.tile if tile is None else tile)
        per_call = (tiles_per_call or self.tiles_per_call) if batchable else 1

        def attempt(edge: int) -> Tensor:
            return tiled(
                fn, x, tile=edge, overlap=self.overlap_for(spec, edge), scale=spec.scale, multiple_of=spec.multiple_of,
                blend=spec.blend, device=self.device, aux=aux, tiles_per_call=per_call, pad=spec.pad,
            )  # fmt: skip

        if tile == "auto":
            edge = auto_tile_size(self.device, bytes_per_pixel=spec.bytes_per_pixel, channels=x.shape[1], multiple_of=spec.multiple_of)
            return run_with_oom_fallback(attempt, edge, multiple_of=spec.multiple_of)
        return attempt(int(tile))
