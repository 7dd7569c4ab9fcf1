"""Measurement files: what ``irc restore --measurement FILE`` reads, in one place below the methods.

* **Block compressive sensing** (:func:`save_cs_measurement`, :func:`load_cs_measurement`): a
  safetensors file with the tensor ``y`` ``(M, ceil(H / B), ceil(W / B))`` (channel ``m`` at
  block ``(i, j)`` is ``(Phi x_ij)_m`` for the ``B x B`` block ``x_ij`` of the zero-padded image,
  vectorised row-major, values of ``x`` in [0, 1]) and the metadata ``format =
  "irc-cs-measurement"``, ``height``, ``width``, ``ratio``, ``block`` and, when irc wrote it,
  ``phi_sha256`` (the fingerprint of the sampling matrix, checked against the weights that
  reconstruct it). ``Phi`` is the ``cs.phi`` tensor of the LoRun weights, unscaled. ``.npz``
  files with arrays ``y``, ``height`` and ``width`` are read too.
* **CASSI** (:func:`load_cassi_measurement`): a ``.mat`` snapshot ``(H, W + 2 (bands - 1))``
  (TSA-Net's ``meas_real`` and the usual variable names, see
  :func:`irc.operators.cassi.load_measurement`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor

from irc.errors import UsageError

__all__ = ["load_cassi_measurement", "load_cs_measurement", "matrix_fingerprint", "save_cs_measurement"]

FORMAT = "irc-cs-measurement"


def matrix_fingerprint(phi: Tensor) -> str:
    """First 16 hex digits of the sha256 of a sampling matrix's float32 bytes."""
    data = phi.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def save_cs_measurement(path: str | Path, y: Tensor, size: tuple[int, int], ratio: float, block: int, *, phi: Tensor | None = None) -> Path:
    """Write a CS measurement file atomically (the folder's usual permissions, never partial).

    Args:
        y: ``(M, h, w)`` or ``(1, M, h, w)`` block measurements.
        size: the image's ``(H, W)`` before zero padding.
        phi: the sampling matrix, recorded by fingerprint so that a reconstruction with other
            weights fails instead of returning noise.
    """
    from safetensors.torch import save

    from irc.atomic import atomic_write_bytes

    y = y.detach().float().cpu()
    if y.ndim == 4:
        y = y[0]
    meta = {"format": FORMAT, "height": str(int(size[0])), "width": str(int(size[1])), "ratio": repr(float(ratio)), "block": str(int(block))}
    if phi is not None:
        meta["phi_sha256"] = matrix_fingerprint(phi)
    return atomic_write_bytes(path, save({"y": y.contiguous()}, metadata=meta))


def load_cs_measurement(path: str | Path) -> tuple[Tensor, tuple[int, int], dict[str, str]]:
    """Read a CS measurement file: ``(y (M, h, w), (H, W), metadata)``."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"measurement file not found: {path}")
    if path.suffix == ".npz":
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as data:
                if "y" not in data:
                    raise UsageError(f"{path}: a CS measurement .npz needs arrays y, height, width")
                y = torch.from_numpy(np.asarray(data["y"], dtype=np.float32))
                meta = {k: str(np.asarray(data[k]).item()) for k in data.files if k != "y"}
        except (ValueError, OSError) as err:
            raise UsageError(f"{path}: not a CS measurement file ({err})") from None
    else:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                y = f.get_tensor("y").float()
        except Exception as err:  # noqa: BLE001 - any unreadable file is one usage error
            raise UsageError(f"{path}: not a CS measurement file ({err})") from None
    if y.ndim == 4:
        y = y[0]
    if y.ndim != 3 or "height" not in meta or "width" not in meta:
        raise UsageError(f"{path}: expected y (M, h, w) and height / width metadata")
    try:
        size = (int(meta["height"]), int(meta["width"]))
    except ValueError:
        raise UsageError(f"{path}: height / width metadata are not whole numbers") from None
    return y, size, meta


def load_cassi_measurement(path: str | Path) -> Tensor:
    """A CASSI snapshot as ``(1, 1, H, W')`` float32."""
    from irc.operators.cassi import load_measurement

    y = load_measurement(path).float()
    while y.ndim < 4:
        y = y[None]
    return y

