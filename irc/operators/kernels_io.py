"""Reading blur kernels (and other arrays) from MATLAB ``.mat`` files, and locating the data pack.

Files of the data pack (``$IRC_DATA_ROOT/kernels``), as found by inspection:

* ``kernels_12.mat`` (MATLAB v5): key ``kernels``, a ``1x12`` cell of ``25x25`` float32 kernels,
  each summing to 1 -- the 12 kernels of the USRNet test protocol (Zhang et al., CVPR 2020:
  4 isotropic + 4 anisotropic Gaussians and 4 motion kernels).
* ``kernels_bicubicx234.mat`` (v5): key ``kernels``, a ``1x3`` cell of ``25x25`` kernels that
  approximate the bicubic degradation for x2/x3/x4 (sums 0.99998 / 1.000002 / 0.9999).
* ``Levin09.mat`` (MATLAB **v7.3**, i.e. HDF5): key ``kernels``, an ``8x1`` cell of the 8 Levin
  et al. (CVPR 2009) motion kernels of sizes 19, 17, 15, 27, 13, 21, 23, 23 (float64). scipy cannot
  read v7.3 files; :func:`load_mat_array` reads them with ``h5py`` when it is installed (it is
  not a dependency of irc) and otherwise raises :class:`~irc.errors.IrcError` saying so.
* ``srmd_pca_matlab.mat`` (v5): key ``P``, a ``15x225`` PCA projection (not a kernel).

The pack is found through :func:`irc.data.data_root` (``--data-root``, else ``$IRC_DATA_ROOT``,
else the cache), the one rule every dataset follows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from irc.data import data_root
from irc.errors import IrcError

__all__ = ["data_root", "data_file", "load_mat_array", "load_kernels_mat"]


def data_file(relative: str | os.PathLike) -> Path:
    """``data_root() / relative``, raising :class:`IrcError` naming the path when it is missing."""
    p = data_root() / relative
    if not p.exists():
        raise IrcError(f"{p} not found (set IRC_DATA_ROOT to the data pack, or pass an explicit path)")
    return p


def _is_v73(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(128)
    return b"MATLAB 7.3" in head or head[:8] == b"\x89HDF\r\n\x1a\n"


def _h5_to_numpy(f: Any, obj: Any) -> Any:
    """Convert an h5py dataset of a v7.3 .mat file to numpy (cells -> object arrays).

    MATLAB writes arrays column-major, so HDF5 sees them transposed: every numeric array is
    transposed back. Cell arrays are datasets of object references into ``#refs#``.
    """
    import h5py  # only reached when h5py is importable

    data = obj[()]
    cls = obj.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    if cls == "cell" or (isinstance(data, np.ndarray) and data.dtype == object):
        out = np.empty(data.shape, dtype=object)
        for idx, ref in np.ndenumerate(data):
            out[idx] = _h5_to_numpy(f, f[ref]) if isinstance(ref, h5py.Reference) else ref
        return out.T
    if obj.attrs.get("MATLAB_empty", 0):
        return np.zeros((0, 0))
    return np.asarray(data).T


def load_mat_array(
    path: str | os.PathLike, key: str | None = None, *, prefer: tuple[str, ...] = ()
) -> tuple[str, Any]:
    """Read one variable of a ``.mat`` file.

    Args:
        path: the file (MATLAB v4/v5/v7 via scipy; v7.3/HDF5 via h5py when installed).
        key: variable name; ``None`` picks the first of ``prefer`` that exists, else the first
            variable in file order.
        prefer: preferred variable names when ``key`` is ``None``.

    Returns:
        ``(name, value)``: numeric arrays as numpy arrays in MATLAB orientation, cells as numpy
        object arrays.

    Raises:
        IrcError: missing file, unknown key, unreadable file, or a v7.3 file without h5py.
    """
    p = Path(path)
    if not p.is_file():
        raise IrcError(f"{p}: file not found")
    if _is_v73(p):
        try:
            import h5py
        except ImportError:
            raise IrcError(f"{p}: MATLAB v7.3 (HDF5) file; install h5py (pip install h5py) to read it") from None
        with h5py.File(p, "r") as f:
            names = [k for k in f.keys() if not k.startswith("#")]
            name = _pick_key(p, names, key, prefer)
            return name, _h5_to_numpy(f, f[name])
    import scipy.io

    try:
        d = scipy.io.loadmat(str(p))
    except Exception as e:  # corrupt or not a .mat file
        raise IrcError(f"{p}: cannot read .mat file ({e})") from None
    names = [k for k in d.keys() if not k.startswith("__")]
    name = _pick_key(p, names, key, prefer)
    return name, d[name]


def _pick_key(p: Path, names: list[str], key: str | None, prefer: tuple[str, ...] = ()) -> str:
    if key is None:
        key = next((n for n in prefer if n in names), None)
    if key is not None:
        if key not in names:
            raise IrcError(f"{p}: no variable {key!r} (has {', '.join(names) or 'none'})")
        return key
    if not names:
        raise IrcError(f"{p}: no variables")
    return names[0]


def _split_kernels(value: Any) -> list[np.ndarray]:
    """Turn a cell array / 2-D / 3-D numeric array into a list of 2-D kernels."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        out: list[np.ndarray] = []
        for v in value.flat:  # cell order: MATLAB's 1xN / Nx1 both read left to right
            out.extend(_split_kernels(v))
        return out
    a = np.asarray(value, dtype=np.float64)
    a = np.squeeze(a) if a.ndim > 2 else a
    if a.ndim == 2:
        return [a]
    if a.ndim == 3:
        # MATLAB stacks kernels along the last axis (k x k x n); a Python-written (n x k x k)
        # stack is recognised when only the last two axes are equal.
        if a.shape[0] == a.shape[1]:
            return [a[:, :, i] for i in range(a.shape[2])]
        if a.shape[1] == a.shape[2]:
            return [a[i] for i in range(a.shape[0])]
    raise ValueError(f"cannot interpret an array of shape {a.shape} as blur kernels")


def load_kernels_mat(
    path: str | os.PathLike,
    key: str | None = None,
    *,
    normalize: bool = True,
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """Load blur kernels from a ``.mat`` file.

    Args:
        path: the file.
        key: variable holding the kernels; default ``"kernels"`` when present, else the first.
        normalize: divide each kernel by its sum (blur kernels preserve the mean brightness;
            the stored ones sum to 1 only up to float32 rounding, e.g. 0.99990 for bicubic x4).
        dtype: dtype of the returned tensors.

    Returns:
        A list of 2-D ``(k_h, k_w)`` tensors, in the file's order, non-negative entries as stored.

    Raises:
        IrcError: unreadable file, unknown key, non-kernel contents, or a kernel summing to 0.
    """
    p = Path(path)
    name, value = load_mat_array(p, key, prefer=("kernels", "kernel", "k"))
    try:
        kernels = _split_kernels(value)
    except ValueError as e:
        raise IrcError(f"{p}: variable {name!r}: {e}") from None
    out = []
    for i, k in enumerate(kernels):
        if normalize:
            s = k.sum()
            if not np.isfinite(s) or abs(s) < 1e-12:
                raise IrcError(f"{p}: kernel {i} of {name!r} sums to {s}, cannot normalise")
            k = k / s
        out.append(torch.from_numpy(np.ascontiguousarray(k)).to(dtype))
    return out
