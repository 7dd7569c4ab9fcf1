"""Small helpers shared by the folder datasets and the benchmarks (not public API).

Arrays here are ``uint8`` or ``float32`` numpy arrays laid out ``(H, W, C)`` (the layout in
which cropping, padding and flipping are plain slicing) until they are handed over as
``(C, H, W)`` float32 torch tensors in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from irc.io import SUPPORTED_SUFFIXES, read_image

# Suffixes accepted when listing a folder: what irc.io reads, plus .pgm/.ppm which some classic
# test sets use and Pillow decodes.
IMAGE_SUFFIXES: tuple[str, ...] = (*SUPPORTED_SUFFIXES, ".pgm", ".ppm")

# OpenCV's fixed-point BT.601 full-range luma for 8-bit data (cv::COLOR_BGR2YCrCb / BGR2GRAY):
# Y = (4899 R + 9617 G + 1868 B + 2^13) >> 14, i.e. round(0.299 R + 0.587 G + 0.114 B) up to
# ties. Block-CS test code (ISTA-Net, and the NesTD/OCTUF line built on it) reads its test
# images with OpenCV and keeps this Y channel, so grey versions of colour test sets use it.
_Y_R, _Y_G, _Y_B, _Y_SHIFT = 4899, 9617, 1868, 14


def keyed_rng(*key: int) -> np.random.Generator:
    """A numpy generator determined only by ``key`` (e.g. ``(seed, epoch, index)``).

    ``SeedSequence`` hashes the whole tuple, so neighbouring keys give independent streams
    (unlike ``default_rng(seed + index)``, where seed 1 / index 0 equals seed 0 / index 1).
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


def keyed_seed(*key: int) -> int:
    """A 63-bit integer seed determined only by ``key`` (for torch generators, degradations)."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def keyed_torch_generator(*key: int) -> torch.Generator:
    """A CPU ``torch.Generator`` determined only by ``key``."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(keyed_seed(*key))
    return gen


def list_images(folder: Path, *, recursive: bool = False, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files in ``folder`` (by suffix, case-blind), sorted by path; hidden files skipped."""
    wanted = {s.lower() for s in suffixes}
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in found
        if p.suffix.lower() in wanted and not p.name.startswith(".") and p.is_file()
    )


def read_float(path: Path) -> np.ndarray:
    """Decodes ``path`` to an ``(H, W, C)`` float32 array in ``[0, 1]``, ``C`` = 1 or 3.

    Alpha is dropped (restoration data sets are opaque); 16-bit sources keep their precision.
    """
    return np.ascontiguousarray(read_image(path).pixels.transpose(1, 2, 0))


def read_u8(path: Path) -> np.ndarray:
    """Decodes ``path`` to an ``(H, W, C)`` uint8 array, ``C`` = 1 or 3.

    Benchmarks are 8-bit files and their protocols (MATLAB imresize, JPEG, metrics after
    rounding) work on the uint8 grid; ``irc.io`` reads a sample ``v`` as ``v / 255`` in float32,
    which ``rint(x * 255)`` maps back to ``v`` exactly.
    """
    return np.rint(read_float(path) * 255.0).clip(0, 255).astype(np.uint8)


def grey_u8(arr: np.ndarray) -> np.ndarray:
    """``(H, W, 1)`` uint8 grey version of an ``(H, W, C)`` uint8 image.

    Grey stays as is; an RGB image whose channels are equal keeps that channel; other RGB
    images get OpenCV's 8-bit BT.601 full-range luma (see ``_Y_R`` above for why).
    """
    if arr.shape[2] == 1:
        return arr
    if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        return np.ascontiguousarray(arr[..., :1])
    rgb = arr.astype(np.int32)
    y = (_Y_R * rgb[..., 0] + _Y_G * rgb[..., 1] + _Y_B * rgb[..., 2] + (1 << (_Y_SHIFT - 1))) >> _Y_SHIFT
    return y.astype(np.uint8)[..., None]


def grey_float(arr: np.ndarray) -> np.ndarray:
    """``(H, W, 1)`` float32 BT.601 full-range luma ``0.299 R + 0.587 G + 0.114 B`` (unrounded).

    Grey input, and RGB input whose channels are equal, keep their values exactly.
    """
    if arr.shape[2] == 1:
        return arr
    if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        return np.ascontiguousarray(arr[..., :1])
    weights = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    return np.ascontiguousarray((arr * weights).sum(axis=2, keepdims=True, dtype=np.float32))


def rgb(arr: np.ndarray) -> np.ndarray:
    """Three-channel version of an ``(H, W, C)`` array (grey replicated, RGB unchanged)."""
    return arr if arr.shape[2] == 3 else np.ascontiguousarray(np.repeat(arr, 3, axis=2))


def modcrop(arr: np.ndarray, multiple: int) -> np.ndarray:
    """Crops the bottom/right so that height and width are multiples of ``multiple``.

    This is the SR test convention (MATLAB ``modcrop``; USRNet ``util.modcrop``): the top-left
    corner is kept, so LR pixel ``(i, j)`` stays aligned with HR block ``(s*i, s*j)``.
    """
    h, w = arr.shape[0], arr.shape[1]
    return arr[: h - h % multiple, : w - w % multiple]


def to_tensor(arr: np.ndarray) -> Tensor:
    """``(H, W, C)`` uint8 or float array to a ``(C, H, W)`` float32 tensor in ``[0, 1]``."""
    if arr.dtype == np.uint8:
        out = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(torch.float32) / 255.0
        return out
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32))


def tensor_to_u8(x: Tensor) -> np.ndarray:
    """``(C, H, W)`` float tensor in ``[0, 1]`` to an ``(H, W, C)`` uint8 array (clip, round)."""
    return np.rint(x.detach().cpu().double().clamp(0, 1).numpy().transpose(1, 2, 0) * 255.0).astype(np.uint8)


def dihedral(arr: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of the square's symmetry group applied to ``(H, W, ...)``.

    ``k`` in ``0..7``: a horizontal flip when ``k >= 4``, then ``k % 4`` counter-clockwise
    quarter turns; ``k = 0`` is the identity. Restoration training augments with exactly these
    8 (the flips + 90-degree rotations of EDSR and DnCNN).
    """
    if k >= 4:
        arr = arr[:, ::-1]
    return np.rot90(arr, k % 4, axes=(0, 1))


def pad_to(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pads ``(H, W, C)`` at the bottom/right up to at least ``(height, width)``.

    Reflection (without repeating the edge row) keeps image statistics near the border; it can
    add at most ``size - 1`` rows per step, so tiny images are reflected repeatedly, and a
    1-pixel-wide image, which has nothing to reflect, is edge-replicated.
    """
    while arr.shape[0] < height or arr.shape[1] < width:
        h, w = arr.shape[0], arr.shape[1]
        ph = min(max(height - h, 0), h - 1)
        pw = min(max(width - w, 0), w - 1)
        if (ph == 0 and h < height) or (pw == 0 and w < width):
            arr = np.pad(arr, ((0, max(height - h, 0)), (0, max(width - w, 0)), (0, 0)), mode="edge")
            break
        arr = np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode="reflect")
    return arr
