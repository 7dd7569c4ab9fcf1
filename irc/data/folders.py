"""Training datasets over folders of images: random crops, aligned pairs, synthetic mixtures.

Every random choice of a sample (crop position, flip/rotation, degradation parameters) comes
from a numpy ``Generator`` seeded with ``SeedSequence([seed, epoch, index])``. A sample is thus a
pure function of ``(seed, epoch, index)``: DataLoader workers, shuffling order and resuming from
a checkpoint cannot change it. Call :meth:`ImageFolder.set_epoch` at the start of every epoch to
get fresh crops; with ``DataLoader(persistent_workers=True)`` the workers hold their own copies,
so set the epoch before the loader's iterator is created (or do not use persistent workers).

Tensors returned are ``(C, H, W)`` float32 in ``[0, 1]``: ``C = 1`` when ``grey=True`` (colour
sources converted to BT.601 full-range luma ``0.299 R + 0.587 G + 0.114 B``) and ``C = 3``
otherwise (grey sources replicated), so that batches of mixed sources stack.
:class:`CubeFolder` returns hyperspectral cubes instead, ``C`` = the number of bands.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from irc.data._common import (
    dihedral,
    grey_float,
    keyed_rng,
    list_images,
    pad_to,
    read_float,
    rgb,
    to_tensor,
)
from irc.errors import IrcError, UsageError

__all__ = ["CubeFolder", "ImageFolder", "PairByKey", "PairedFolder", "Pairing", "pair_files"]

PathLike = str | os.PathLike

@dataclass(frozen=True)
class PairByKey:
    """Pair files whose stems have the same ``key(stem)`` (e.g. ``rain-001`` and ``norain-001``)."""

    key: Callable[[str], str]


Pairing = str | Mapping[str, str] | Callable[[str], str | Sequence[str]] | PairByKey
"""How a degraded file finds its clean partner, from the degraded file's stem:

* ``"stem"``: the clean file has the same stem (any image suffix);
* a suffix map such as ``{"_real": "_mean"}`` (PolyU): a degraded stem ending in a key is paired
  with the stem whose ending is replaced by the value; degraded-folder files ending in no key
  are not degraded images and are skipped (so both kinds may share one folder);
* a callable ``stem -> gt stem`` (or a list of candidate stems, the first that exists wins);
* :class:`PairByKey`: both stems go through its ``key`` and equal keys pair (the first clean
  file of a key wins).
"""

def _collect(roots: PathLike | Sequence[PathLike], suffixes: Sequence[str] | None = None, what: str = "images") -> list[Path]:
    """Files under one or more folders (recursively) or given directly, in a stable order.

    ``suffixes``: the file types looked for in folders (default: image files)."""
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    files: list[Path] = []
    for root in roots:
        root = Path(root).expanduser()
        if root.is_dir():
            files.extend(list_images(root, recursive=True) if suffixes is None else list_images(root, recursive=True, suffixes=suffixes))
        elif root.is_file():
            files.append(root)
        else:
            raise IrcError(f"{what} folder not found: {root}")
    if not files:
        raise IrcError(f"no {what} found in {', '.join(str(Path(r)) for r in roots)}")
    return files


def _channels(arr: np.ndarray, grey: bool) -> np.ndarray:
    return grey_float(arr) if grey else rgb(arr)


def _check_epoch(epoch: int) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise UsageError(f"epoch must be a whole number >= 0, got {epoch!r}")
    return int(epoch)


class ImageFolder(Dataset):
    """Clean images from folders, as random square crops (or whole images).

    Args:
        roots: A folder (searched recursively for image files), an image file, or a list of
            either. Files are sorted by path, so the index of a file is stable.
        crop: Edge of the square crop in pixels, or ``None`` for whole images (then images of
            different sizes cannot be batched). Images smaller than the crop are reflect-padded
            at the bottom/right first.
        grey: Return one luma channel instead of RGB.
        augment: Apply one of the 8 flips / 90-degree rotations, uniformly at random.
        repeat: Virtual copies of the file list per epoch (``len = files * repeat``), so that an
            epoch of a small set is long enough; each copy gets its own crops.
        seed: Seed of every random choice (with the epoch and the index).
        cache: Keep decoded images in memory (worth it for small sets read many times; each
            DataLoader worker holds its own cache).

    Items are ``(C, crop, crop)`` float32 tensors in ``[0, 1]``, ``C`` = 1 if ``grey`` else 3.
    """

    def __init__(
        self,
        roots: PathLike | Sequence[PathLike],
        crop: int | None = None,
        *,
        grey: bool = False,
        augment: bool = False,
        repeat: int = 1,
        seed: int = 0,
        cache: bool = False,
    ):
        if crop is not None and (isinstance(crop, bool) or int(crop) != crop or crop < 1):
            raise UsageError(f"crop must be a positive whole number of pixels or None, got {crop!r}")
        if int(repeat) != repeat or repeat < 1:
            raise UsageError(f"repeat must be a whole number >= 1, got {repeat!r}")
        self.files: list[Path] = _collect(roots)
        self.crop = None if crop is None else int(crop)
        self.grey = bool(grey)
        self.augment = bool(augment)
        self.repeat = int(repeat)
        self.seed = int(seed)
        self.epoch = 0
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    @property
    def channels(self) -> int:
        """Channels of every item: 1 when ``grey`` else 3."""
        return 1 if self.grey else 3

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose crops and augmentations the items use (0-based)."""
        self.epoch = _check_epoch(epoch)

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def _index(self, index: int) -> int:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        return index

    def rng(self, index: int) -> np.random.Generator:
        """The generator behind item ``index`` in the current epoch."""
        return keyed_rng(self.seed, self.epoch, index)

    def image(self, index: int) -> np.ndarray:
        """The whole image behind item ``index`` as ``(H, W, C)`` float32, channels converted."""
        file_index = self._index(index) % len(self.files)
        if self._cache is not None and file_index in self._cache:
            return self._cache[file_index]
        arr = self._read(self.files[file_index])
        if self._cache is not None:
            self._cache[file_index] = arr
        return arr

    def _read(self, path: Path) -> np.ndarray:
        """Decode one file to ``(H, W, C)`` float32."""
        return _channels(read_float(path), self.grey)

    def __getitem__(self, index: int) -> Tensor:
        index = self._index(index)
        arr = self.image(index)
        rng = self.rng(index)
        if self.crop is not None:
            arr = _random_crop([arr], [1], self.crop, rng)[0]
        if self.augment:
            arr = dihedral(arr, int(rng.integers(8)))
        return to_tensor(arr)


class CubeFolder(ImageFolder):
    """Hyperspectral cubes (``.mat``, CAVE / KAIST layout) as random square crops: CASSI training.

    Args:
        roots: A folder (searched recursively for ``.mat`` files), a ``.mat`` file, or a list.
        crop, augment, repeat, seed, cache: as :class:`ImageFolder` (a crop moves every band
            together; the flips and rotations are spatial only).
        bands: The number of bands every cube must have (28 for the CASSI benchmarks).

    Items are ``(bands, crop, crop)`` float32 tensors in ``[0, 1]`` (:func:`irc.operators.cassi.load_cube`:
    ``img`` or MST's 16-bit ``img_expand``). Caching holds whole cubes (a 1024 x 1024 x 28 CAVE
    cube is 117 MB as float32), so leave ``cache`` off for the full CAVE set on a small machine.
    """

    def __init__(
        self,
        roots: PathLike | Sequence[PathLike],
        crop: int | None = None,
        *,
        bands: int = 28,
        augment: bool = False,
        repeat: int = 1,
        seed: int = 0,
        cache: bool = False,
    ):
        super().__init__(_collect(roots, (".mat",), "spectral cubes"), crop, augment=augment, repeat=repeat, seed=seed, cache=cache)
        self.bands = int(bands)

    @property
    def channels(self) -> int:
        """Bands of every item."""
        return self.bands

    def _read(self, path: Path) -> np.ndarray:
        """One cube as ``(H, W, bands)`` float32."""
        from irc.operators.cassi import load_cube

        arr = load_cube(path).numpy().transpose(1, 2, 0)
        if arr.shape[2] != self.bands:
            raise IrcError(f"{path}: {arr.shape[2]} bands, expected {self.bands}")
        return arr


def _random_crop(arrays: list[np.ndarray], scales: list[int], crop: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Aligned random crops of arrays whose sizes are ``base * scale`` (the first has scale 1).

    ``crop`` is measured on the largest-scale array; the position is drawn on the grid of the
    scale-1 array so that every array's crop starts on a whole pixel of its own grid.
    """
    top_scale = max(scales)
    base_crop = crop // top_scale
    padded = []
    for arr, s in zip(arrays, scales):
        size = base_crop * s
        padded.append(pad_to(arr, size, size))
    h = min(a.shape[0] // s for a, s in zip(padded, scales))
    w = min(a.shape[1] // s for a, s in zip(padded, scales))
    top = int(rng.integers(0, h - base_crop + 1))
    left = int(rng.integers(0, w - base_crop + 1))
    return [
        np.ascontiguousarray(a[top * s : (top + base_crop) * s, left * s : (left + base_crop) * s])
        for a, s in zip(padded, scales)
    ]


def pair_files(
    lq_files: Sequence[Path], gt_files: Sequence[Path], pairing: Pairing = "stem"
) -> list[tuple[str, Path, Path]]:
    """Matches degraded files to clean files by stem.

    Args:
        lq_files: Candidate degraded files.
        gt_files: Candidate clean files.
        pairing: See :data:`Pairing`.

    Returns:
        ``(name, lq, gt)`` triples in the order of ``lq_files``. ``name`` is the degraded stem,
        without the matched suffix for a suffix map (``x_real`` -> ``x``).

    Raises:
        IrcError: A degraded file has no clean partner, or two clean files share a stem. The
            message names the file.
    """
    by_stem: dict[str, Path] = {}
    for gt in gt_files:
        if gt.stem in by_stem and by_stem[gt.stem] != gt:
            raise IrcError(f"ambiguous ground truth: {by_stem[gt.stem]} and {gt} have the same name")
        by_stem[gt.stem] = gt
    if isinstance(pairing, PairByKey):
        stem_by_key: dict[str, str] = {}
        for gt in gt_files:
            stem_by_key.setdefault(pairing.key(gt.stem), gt.stem)
        pairing = lambda stem, key=pairing.key: stem_by_key.get(key(stem), stem)  # noqa: E731
    pairs: list[tuple[str, Path, Path]] = []
    for lq in lq_files:
        stem = lq.stem
        if pairing == "stem":
            name, wanted = stem, [stem]
        elif isinstance(pairing, Mapping):
            # the longest matching key wins, so {"_real": ..., "_x_real": ...} behaves predictably
            keys = sorted((k for k in pairing if stem.endswith(k)), key=len, reverse=True)
            if not keys:
                continue
            name = stem[: len(stem) - len(keys[0])]
            wanted = [name + pairing[keys[0]]]
        elif callable(pairing):
            got = pairing(stem)
            name, wanted = stem, [got] if isinstance(got, str) else list(got)
        else:
            raise UsageError(f"pairing must be 'stem', a suffix map or a callable, got {pairing!r}")
        gt = next((by_stem[w] for w in wanted if w in by_stem and by_stem[w] != lq), None)
        if gt is None:
            raise IrcError(f"{lq}: no ground-truth partner (looked for {' or '.join(repr(w) for w in wanted)})")
        pairs.append((name, lq, gt))
    return pairs


class PairedFolder(Dataset):
    """Degraded / clean image pairs with aligned random crops.

    Args:
        lq_root: Folder of degraded images (searched recursively), or a list of files.
        gt_root: Folder of clean images (may be the same folder, with a suffix-map pairing).
        pairing: How a degraded stem names its clean partner; see :data:`Pairing`.
        crop: Edge of the clean crop in pixels (a multiple of ``scale``); the degraded crop is
            ``crop // scale`` at the matching position. ``None`` returns whole images.
        augment: The same one of the 8 flips / rotations applied to both.
        scale: Integer size ratio clean / degraded (1 for restoration, ``s`` for SR). A clean
            image up to ``scale - 1`` pixels larger than ``scale`` times its partner is cropped
            at the bottom/right (mod-crop); any other mismatch is an error.
        grey: One luma channel instead of RGB.
        repeat: Virtual copies of the pair list per epoch.
        seed: Seed of every random choice (with the epoch and the index).

    Items are dicts ``{"lq": (C, crop/scale, crop/scale), "gt": (C, crop, crop), "name": str}``
    of float32 tensors in ``[0, 1]``. Pairs smaller than the crop are reflect-padded; with
    ``scale > 1`` the padded margins are only approximately aligned, so prefer a crop that fits.
    """

    def __init__(
        self,
        lq_root: PathLike | Sequence[PathLike],
        gt_root: PathLike | Sequence[PathLike],
        pairing: Pairing = "stem",
        crop: int | None = None,
        *,
        augment: bool = False,
        scale: int = 1,
        grey: bool = False,
        repeat: int = 1,
        seed: int = 0,
    ):
        if isinstance(scale, bool) or int(scale) != scale or scale < 1:
            raise UsageError(f"scale must be a whole number >= 1, got {scale!r}")
        if crop is not None and (isinstance(crop, bool) or int(crop) != crop or crop < scale or crop % scale):
            raise UsageError(f"crop must be a positive multiple of the scale {scale}, got {crop!r}")
        if int(repeat) != repeat or repeat < 1:
            raise UsageError(f"repeat must be a whole number >= 1, got {repeat!r}")
        self.pairs = pair_files(_collect(lq_root), _collect(gt_root), pairing)
        if not self.pairs:
            raise IrcError(f"no degraded/clean pairs found between {lq_root} and {gt_root}")
        self.crop = None if crop is None else int(crop)
        self.scale = int(scale)
        self.augment = bool(augment)
        self.grey = bool(grey)
        self.repeat = int(repeat)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose crops and augmentations the items use (0-based)."""
        self.epoch = _check_epoch(epoch)

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def load_pair(self, pair_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Whole ``(H, W, C)`` float32 degraded and clean images of a pair, sizes checked."""
        _, lq_path, gt_path = self.pairs[pair_index]
        lq = _channels(read_float(lq_path), self.grey)
        gt = _channels(read_float(gt_path), self.grey)
        s = self.scale
        h, w = lq.shape[0] * s, lq.shape[1] * s
        if not (h <= gt.shape[0] < h + s and w <= gt.shape[1] < w + s):
            raise IrcError(
                f"{gt_path}: size {gt.shape[1]}x{gt.shape[0]} does not match {lq_path} "
                f"({lq.shape[1]}x{lq.shape[0]}) at scale {s}"
            )
        return lq, gt[:h, :w]

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        pair_index = index % len(self.pairs)
        lq, gt = self.load_pair(pair_index)
        rng = keyed_rng(self.seed, self.epoch, index)
        if self.crop is not None:
            lq, gt = _random_crop([lq, gt], [1, self.scale], self.crop, rng)
        if self.augment:
            k = int(rng.integers(8))
            lq, gt = dihedral(lq, k), dihedral(gt, k)
        return {"lq": to_tensor(lq), "gt": to_tensor(gt), "name": self.pairs[pair_index][0]}
