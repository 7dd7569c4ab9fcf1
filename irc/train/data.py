"""The training data: one global, seeded stream of samples, sharded across processes, and the
degradation of clean crops on the device (see the package docstring for the numbering).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from irc.errors import IrcError, UsageError
from irc.methods.base import TrainBatch
from irc.recipes import Recipe, parse_degradation
from irc.train._common import DEGRADE_STREAM, ORDER_STREAM, PAIRS_STREAM, keyed_rng, keyed_seed

__all__ = ["ShardedStream", "Synthesizer", "training_dataset", "training_stream"]


# --------------------------------------------------------------------------------------------
# degradation on the device
# --------------------------------------------------------------------------------------------


class Synthesizer:
    """Turns a batch of clean crops into a :class:`TrainBatch` on their device.

    Args:
        spec: the recipe's ``data.degradation`` (see :mod:`irc.operators.presets`).
        seed: the recipe seed; sample ``q`` of the global stream draws its parameters from a
            generator keyed by ``(seed, q)``, so a sample is degraded the same way whichever
            process, batch or resumed run it lands in. Mixtures label each sample with its task
            (``TrainBatch.task``).
    """

    def __init__(self, spec: str, seed: int, **mixture_options: Any):
        """``mixture_options``: ``task_probs``, ``strong_jpeg``, ``grey_prob`` (see
        ``irc.recipes.DataSpec``; ``DataSpec.mixture_options()`` gives them)."""
        from irc.operators.presets import training_degradation

        self.spec = parse_degradation(spec)
        self.seed = int(seed)
        self.degrade = training_degradation(self.spec.kind, self.spec.low, self.spec.high, self.spec.name, **mixture_options)

    @torch.no_grad()
    def __call__(self, gt: Tensor, positions: list[int]) -> TrainBatch:
        """Degrade ``gt`` (``(B, C, H, W)`` in [0, 1]) whose samples have global numbers ``positions``."""
        if self.spec.kind == "none":
            return TrainBatch(lq=gt, gt=gt)
        lqs, gts, tasks = [], [], []
        for i, position in enumerate(positions):
            lq, target, task = self.degrade(gt[i : i + 1], keyed_rng(self.seed, position, DEGRADE_STREAM))
            lqs.append(lq.to(gt.dtype))
            gts.append(target.to(gt.dtype))
            if task is not None:
                tasks.append(task)
        return TrainBatch(lq=torch.cat(lqs), gt=torch.cat(gts), task=tuple(tasks) if tasks else None)


# --------------------------------------------------------------------------------------------
# data: a global sample stream, sharded across processes
# --------------------------------------------------------------------------------------------


class _TrainingStream(Dataset):
    """The recipe's samples: the clean crops (their input is synthesised on the device), then
    each real pair set (``data.pairs``: the input is the real degraded crop).

    Items are ``(gt, lq, task)``: ``lq`` is ``None`` and ``task`` is ``""`` for clean crops.
    """

    def __init__(self, clean: Dataset | None, pairs: list[tuple[str, Dataset]]):
        self.parts: list[tuple[str | None, Dataset]] = ([(None, clean)] if clean is not None else []) + list(pairs)

    def __len__(self) -> int:
        return sum(len(part) for _, part in self.parts)

    def set_epoch(self, epoch: int) -> None:
        for _, part in self.parts:
            part.set_epoch(epoch)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor | None, str]:
        for task, part in self.parts:
            if index < len(part):
                item = part[index]
                if task is None:
                    return (item["gt"] if isinstance(item, Mapping) else item), None, ""
                return item["gt"], item["lq"], task
            index -= len(part)
        raise IndexError(index)


class Positioned(Dataset):
    """Items keyed ``(epoch, index, position)``: the stream's sample for that epoch, and its position."""

    def __init__(self, base: _TrainingStream):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[Tensor, Tensor | None, str, int]:
        epoch, index, position = key
        self.base.set_epoch(epoch)
        gt, lq, task = self.base[index]
        return gt, lq, task, position


def collate(items: list[tuple[Tensor, Tensor | None, str, int]]) -> tuple[Tensor, list[Tensor | None], list[str], list[int]]:
    """Stacks the clean crops; real inputs stay a list (``None`` where the input is synthesised)."""
    return torch.stack([it[0] for it in items]), [it[1] for it in items], [it[2] for it in items], [int(it[3]) for it in items]


class ShardedStream:
    """Batch sampler over an endless, seeded stream of samples, sharded across processes.

    Args:
        size: items per epoch.
        seed: the order of epoch ``e`` is a permutation keyed by ``(seed, e)``.
        start: global samples already consumed (all processes together).
        batch: samples per process per micro-batch.
        rank, world: this process and the number of processes.

    Yields lists of ``(epoch, index, position)`` keys, one list per micro-batch.
    """

    def __init__(self, size: int, seed: int, start: int, batch: int, rank: int = 0, world: int = 1):
        if size < 1:
            raise UsageError("the training set is empty")
        self.size, self.seed, self.start = int(size), int(seed), int(start)
        self.batch, self.rank, self.world = int(batch), int(rank), int(world)

    def _order(self, epoch: int) -> np.ndarray:
        return keyed_rng(self.seed, epoch, ORDER_STREAM).permutation(self.size)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        position = self.start + self.rank * self.batch
        epoch, order = -1, None
        while True:
            keys = []
            for q in range(position, position + self.batch):
                e, i = divmod(q, self.size)
                if e != epoch:
                    epoch, order = e, self._order(e)
                keys.append((e, int(order[i]), q))
            yield keys
            position += self.batch * self.world


def _is_cube_source(path: Path) -> bool:
    """A ``.mat`` file, or a folder that holds ``.mat`` files and no images (hyperspectral cubes)."""
    from irc.data._common import list_images

    if path.is_file():
        return path.suffix.lower() == ".mat"
    return bool(list_images(path, recursive=True, suffixes=(".mat",))) and not list_images(path, recursive=True)


def training_stream(recipe: Recipe) -> _TrainingStream:
    """Clean crops from ``data.train`` and real pairs from ``data.pairs``, one sample stream."""
    from irc.data.folders import CubeFolder, PairByKey, PairedFolder

    from irc.data.registry import PAIRING_RULES, pair_set_files

    d = recipe.data
    if not d.train and not d.pairs:
        raise UsageError("the recipe has no training data: set data.train to training-set names or folders (or data.pairs to real pairs)")
    clean = training_dataset(recipe) if d.train else None
    if isinstance(clean, CubeFolder) and d.pairs:
        raise UsageError("data.pairs are image pairs; they cannot join hyperspectral training cubes")
    pairs = []
    for number, (task, *where) in enumerate(d.pairs):
        if len(where) == 1:
            lq, gt, pairing = pair_set_files(where[0], d.root)
        else:
            lq, gt, *rule = where
            for folder in (lq, gt):
                if not Path(folder).exists():
                    raise IrcError(f"data.pairs folder not found: {folder} (relative folders are looked up under the data root, the current directory and beside the recipe)")
            pairing = PairByKey(PAIRING_RULES[rule[0] if rule else "stem"])
        pairs.append((task, PairedFolder(
            lq, gt, pairing, crop=d.crop, augment=d.augment,
            grey=d.grey, repeat=d.pair_repeat, seed=keyed_seed(recipe.seed, PAIRS_STREAM, number),
        )))  # fmt: skip
    return _TrainingStream(clean, pairs)


def training_dataset(recipe: Recipe) -> Dataset:
    """The recipe's clean training crops: an :class:`ImageFolder`, or a :class:`CubeFolder` when
    every source holds hyperspectral ``.mat`` cubes (named set ``cave``, or such folders)."""
    from irc.data.registry import TRAINING_SETS, training_files
    from irc.data.folders import CubeFolder, ImageFolder

    d = recipe.data
    if not d.train:
        raise UsageError("the recipe has no training data: set data.train to training-set names or folders")
    roots: list[Path] = []
    cubes: list[bool] = []
    for entry in d.train:
        if entry in TRAINING_SETS:
            roots.extend(training_files(entry, d.root))
            cubes.append(TRAINING_SETS[entry].spectral)
            continue
        path = Path(entry).expanduser()
        if not path.exists():
            raise IrcError(f"training data not found: {entry} (data.train takes {', '.join(sorted(TRAINING_SETS))} or folders)")
        roots.append(path)
        cubes.append(_is_cube_source(path))
    if any(cubes):
        if not all(cubes):
            raise UsageError("data.train mixes hyperspectral cubes (.mat) with images; a run trains on one kind")
        if d.grey or d.degradation.strip().lower() != "none":
            raise UsageError("hyperspectral training cubes take data.grey = false and data.degradation = \"none\" (the method measures them)")
        bands = int(recipe.config.get("bands", 28))
        return CubeFolder(roots, d.crop, bands=bands, augment=d.augment, repeat=d.repeat, seed=recipe.seed, cache=d.cache)
    return ImageFolder(roots, d.crop, grey=d.grey, augment=d.augment, repeat=d.repeat, seed=recipe.seed, cache=d.cache)


