"""Single-disperser coded-aperture snapshot spectral imaging (SD-CASSI).

Forward model of TSA-Net (Meng et al., ECCV 2020) and of the benchmarks built on it (MST,
Cai et al. CVPR 2022; DAUHST, Cai et al. NeurIPS 2022): a hyperspectral cube ``x`` with ``L``
bands (28 for the KAIST/CAVE protocol) is modulated by a 2-D coded mask ``M``, the disperser
shifts band ``l`` by ``d * l`` pixels along the width (``d = 2``), and the detector integrates
over wavelength:

    ``y(i, j) = sum_l M(i, j - d l) x_l(i, j - d l)``, ``y`` of size ``H x (W + d (L - 1))``.

So ``A = sum_l S_l D_M`` (``D_M`` masking, ``S_l`` the shift onto the wider canvas) and
``A^T y = stack_l M * crop_l(y)``. Because every shift is injective, ``A A^T`` is diagonal:
``(A A^T)(i, j) = Phi(i, j) = sum_l M(i, j - d l)^2`` -- which gives the closed-form data step
(GAP-net / DAUHST; see :meth:`CASSI.data_step`).

Data-pack files (inspected with scipy; MATLAB v5):

* ``CASSI/simulation/mask.mat``: key ``mask``, ``256 x 256`` float32 in ``[0.0066, 1]`` (mean
  0.563) -- the simulation mask of the KAIST 10-scene benchmark; 28 bands give measurements
  of ``256 x 310``.
* ``CASSI/real/mask.mat``: key ``mask``, ``660 x 660`` float32 in ``[0.0051, 1]`` (mean 0.501).
* ``CASSI/real/meas/scene{1..5}.mat``: key ``meas_real``, ``660 x 714`` float32 in ``[0, 1]``
  (max exactly 1) -- ``714 = 660 + 2 * 27``, i.e. 28 bands with step 2 and the 660 mask.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from irc.errors import IrcError
from irc.operators.kernels_io import data_file, load_mat_array
from irc.operators.linear import LinearOperator, batch_param

__all__ = [
    "CASSI",
    "shift",
    "shift_back",
    "normalize_measurement",
    "load_mask",
    "load_measurement",
    "load_cube",
    "simulation_mask_path",
    "real_mask_path",
    "real_measurement_paths",
]


def shift(x: Tensor, step: int = 2) -> Tensor:
    """Disperse a cube: band ``l`` moves right by ``step * l`` pixels on a wider canvas.

    Args:
        x: ``(batch, L, H, W)``.
        step: dispersion in pixels per band.

    Returns:
        ``(batch, L, H, W + step (L - 1))``, zeros outside each band's window (MST's ``shift``).
    """
    bsz, nb, h, w = x.shape
    out = x.new_zeros(bsz, nb, h, w + step * (nb - 1))
    for band in range(nb):
        out[:, band, :, step * band : step * band + w] = x[:, band]
    return out


def shift_back(y: Tensor, bands: int = 28, step: int = 2) -> Tensor:
    """Adjoint of the dispersion followed by the sum: crop each band's window from ``y``.

    Args:
        y: ``(batch, 1, H, W')`` or ``(batch, H, W')`` measurement, ``W' = W + step (L - 1)``.
        bands: number of bands ``L``.
        step: dispersion step.

    Returns:
        ``(batch, L, H, W)`` with band ``l = y[..., step l : step l + W]`` (MST's ``shift_back``).
    """
    if y.ndim == 4:
        if y.shape[1] != 1:
            raise ValueError(f"CASSI measurement must have one channel, got {tuple(y.shape)}")
        y = y[:, 0]
    w = y.shape[-1] - step * (bands - 1)
    if w <= 0:
        raise ValueError(f"measurement width {y.shape[-1]} too small for {bands} bands with step {step}")
    return torch.stack([y[..., step * band : step * band + w] for band in range(bands)], dim=1)


def normalize_measurement(y: Tensor, bands: int = 28) -> Tensor:
    """MST's input normalisation ``y / L * 2`` (``meas / 28 * 2`` in MST's ``gen_meas_torch``).

    The summed measurement is about ``L / 2`` times brighter than one band (the mask is ~50%
    open); dividing by ``L / 2`` brings ``shift_back(y)`` back to the cube's intensity range.
    """
    return y / bands * 2


class CASSI(LinearOperator):
    """SD-CASSI operator (TSA-Net / MST / DAUHST protocol).

    Args:
        mask: coded aperture, ``(H, W)`` (the same pattern for every band, as in the benchmark)
            or ``(L, H, W)`` (one pattern per band, e.g. a calibrated per-wavelength mask).
        bands: number of spectral bands ``L``.
        step: dispersion step ``d`` in pixels per band.

    Shapes: ``x`` ``(batch, L, H, W)`` -> ``y`` ``(batch, 1, H, W + d (L - 1))``.

    The mask is a non-persistent buffer: it is not part of ``state_dict()`` (a trained
    reconstruction network is applied with whichever mask the test data uses).
    """

    def __init__(self, mask: Tensor, bands: int = 28, step: int = 2):
        super().__init__()
        mask = torch.as_tensor(mask)
        if not mask.is_floating_point():
            mask = mask.float()
        if mask.ndim == 3 and mask.shape[0] != bands:
            raise ValueError(f"a 3-D mask must be (bands={bands}, H, W), got {tuple(mask.shape)}")
        if mask.ndim not in (2, 3):
            raise ValueError(f"mask must be (H, W) or (L, H, W), got {tuple(mask.shape)}")
        self.bands = int(bands)
        self.step = int(step)
        self.register_buffer("mask", mask, persistent=False)

    @property
    def height(self) -> int:
        return int(self.mask.shape[-2])

    @property
    def width(self) -> int:
        return int(self.mask.shape[-1])

    @property
    def measurement_width(self) -> int:
        """``W + step (L - 1)``: 310 for the 256 mask, 714 for the 660 mask (28 bands, step 2)."""
        return self.width + self.step * (self.bands - 1)

    def _mask3d(self, ref: Tensor) -> Tensor:
        """The mask as ``(1, L or 1, H, W)`` on ``ref``'s device and dtype."""
        m = self.mask.to(device=ref.device, dtype=ref.dtype)
        return m[None] if m.ndim == 3 else m[None, None]

    def _check_x(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.bands or tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"CASSI expects (batch, {self.bands}, {self.height}, {self.width}), got {tuple(x.shape)}")

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        """Mask, disperse and integrate: ``(batch, L, H, W) -> (batch, 1, H, W')``."""
        self._check_x(x)
        return shift(x * self._mask3d(x), self.step).sum(dim=1, keepdim=True)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        """Crop each band's window and mask it: ``(batch, 1, H, W') -> (batch, L, H, W)``."""
        return shift_back(y, self.bands, self.step) * self._mask3d(y)

    def measurement_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        return (int(input_shape[0]), 1, self.height, self.measurement_width)

    def input_shape(self, measurement_shape: Sequence[int]) -> tuple[int, ...]:
        return (int(measurement_shape[0]), self.bands, self.height, self.width)

    def phi_diag(self, ref: Tensor | None = None) -> Tensor:
        """Diagonal of ``A A^T``: ``Phi = sum_l shift_l(M_l^2)``, shape ``(1, 1, H, W')``.

        DAUHST calls it ``Phi_s``; zero where no band reaches the detector column.
        """
        ref = self.mask if ref is None else ref
        m = self._mask3d(ref)
        m2 = (m * m).expand(1, self.bands, self.height, self.width)
        return shift(m2, self.step).sum(dim=1, keepdim=True)

    def initial_estimate(self, y: Tensor, use_mask: bool = True) -> Tensor:
        """MST's network input: ``shift_back(normalize_measurement(y))``, times the mask if asked.

        ``use_mask=True`` is MST's ``mul_mask`` variant (``H * M``, used by most MST-family
        models); ``False`` gives the plain shifted-back measurement.
        """
        h = shift_back(normalize_measurement(y, self.bands), self.bands, self.step)
        return h * self._mask3d(y) if use_mask else h

    def data_step(self, x: Tensor, y: Tensor, rho: float | Tensor) -> Tensor:
        """Exact prox ``argmin_z ||A z - y||^2 / 2 + ||z - x||^2 / (2 rho)``.

        The normal equations ``(A^T A + I/rho) z = A^T y + x/rho`` are solved with the
        push-through (Woodbury) identity ``(A^T A + I/rho)^{-1} A^T = A^T (A A^T + I/rho)^{-1}``:

            ``z = x + A^T ((y - A x) / (Phi + 1/rho))``, ``Phi = diag(A A^T)``,

        since ``A A^T`` is diagonal. As ``rho -> inf`` this is the GAP projection
        ``x + A^T ((y - A x) / Phi)`` used by GAP-net and DAUHST's data module (Cai et al.,
        NeurIPS 2022, Eq. 9 with the degradation-aware step); with finite ``rho`` it is their
        ADMM/HQS form. Differentiable in every argument.

        Args:
            x: ``(batch, L, H, W)``; y: ``(batch, 1, H, W')``; rho: ``> 0``, scalar or per sample.
        """
        r = batch_param(rho, y)
        resid = y - self.A(x)
        return x + self.A_adjoint(resid / (self.phi_diag(y) + 1.0 / r))

    def extra_repr(self) -> str:
        return f"mask={tuple(self.mask.shape)}, bands={self.bands}, step={self.step}"


# ---------------------------------------------------------------------- files


def _is_numeric(value: Any, ndims: tuple[int, ...]) -> bool:
    return isinstance(value, np.ndarray) and value.dtype != object and np.squeeze(value).ndim in ndims


def _first_numeric(p: Path, ndims: tuple[int, ...]) -> tuple[str, Any] | None:
    """The first variable of a (v5) .mat file whose squeezed array has one of ``ndims`` dims."""
    import scipy.io

    try:
        d = scipy.io.loadmat(str(p))
    except Exception:
        return None
    for k, v in d.items():
        if not k.startswith("__") and _is_numeric(v, ndims):
            return k, v
    return None


def load_mask(path: str | os.PathLike, key: str | None = None, *, step: int = 2) -> Tensor:
    """Load a CASSI coded mask from a ``.mat`` file as a float32 ``(H, W)`` tensor.

    Key resolution (``key=None``): ``mask`` (TSA-Net / MST ``mask.mat``: both data-pack masks
    use it); else ``mask_3d_shift`` -- a pre-shifted ``(H, W + step (L - 1), L)`` stack as
    TSA-Net's real-data code builds, from which band 0's window ``[:, :W, 0]`` is the unshifted
    mask; else ``mask_3d`` (``(H, W, L)``: band 0 is returned, i.e. the band-independent mask);
    else the first 2-D numeric variable.

    Args:
        path: the ``.mat`` file.
        key: explicit variable name (a 3-D value is treated like ``mask_3d``, or like
            ``mask_3d_shift`` when the name is ``mask_3d_shift``).
        step: dispersion step, used to un-shift ``mask_3d_shift``.

    Raises:
        IrcError: missing/unreadable file or no usable variable.
    """
    p = Path(path)
    name, value = load_mat_array(p, key, prefer=("mask", "mask_3d_shift", "mask_3d"))
    if not _is_numeric(value, (2, 3)):
        found = _first_numeric(p, (2,)) if key is None else None
        if found is None:
            raise IrcError(f"{p}: no 2-D mask variable found (variable {name!r} is not one)")
        name, value = found
    a = np.squeeze(np.asarray(value, dtype=np.float32))
    if a.ndim == 3:
        if name == "mask_3d_shift":
            w = a.shape[1] - step * (a.shape[2] - 1)
            if w <= 0:
                raise IrcError(f"{p}: mask_3d_shift of shape {a.shape} does not match step {step}")
            a = a[:, :w, 0]
        else:
            a = a[:, :, 0]
    return torch.from_numpy(np.ascontiguousarray(a))


def load_measurement(path: str | os.PathLike, key: str | None = None) -> Tensor:
    """Load a real CASSI measurement as a float32 ``(H, W')`` tensor.

    Keys tried when ``key`` is ``None``: ``meas_real`` (TSA-Net real scenes: ``660 x 714`` in
    ``[0, 1]``), ``meas``, ``y``, then the first 2-D numeric variable. Add the batch and channel
    dims (``t[None, None]``) for :class:`CASSI`; MST-style networks then apply
    :func:`normalize_measurement`.
    """
    p = Path(path)
    name, value = load_mat_array(p, key, prefer=("meas_real", "meas", "y"))
    if not _is_numeric(value, (2,)):
        found = _first_numeric(p, (2,)) if key is None else None
        if found is None:
            raise IrcError(f"{p}: no 2-D measurement variable found (variable {name!r} is not one)")
        name, value = found
    return torch.from_numpy(np.ascontiguousarray(np.squeeze(np.asarray(value, dtype=np.float32))))


def load_cube(path: str | os.PathLike) -> Tensor:
    """Load a hyperspectral cube (CAVE / KAIST, as TSA-Net and MST store them) as float32
    ``(bands, H, W)`` in ``[0, 1]``.

    The variable is ``img`` (KAIST ``Truth`` scenes, already in ``[0, 1]``) or ``img_expand``
    (MST's ``cave_1024_28`` training cubes). Values above 1.5 are taken as MST's 16-bit scaling
    and divided by 65536, as MST's loaders do (``simulation/train_code/utils.py``); a ``uint8``
    cube is divided by 255.

    Raises:
        IrcError: missing/unreadable file, no such variable, or not a 3-D array.
    """
    p = Path(path)
    key, cube = load_mat_array(p, prefer=("img", "img_expand"))
    if key not in ("img", "img_expand"):
        raise IrcError(f"{p}: expected a variable 'img' or 'img_expand', found {key!r}")
    eight_bit = np.asarray(cube).dtype == np.uint8
    cube = np.asarray(cube, dtype=np.float64)
    if cube.ndim != 3:
        raise IrcError(f"{p}: {key!r} has shape {cube.shape}, expected H x W x bands")
    if eight_bit:
        cube = cube / 255.0
    elif cube.max(initial=0.0) > 1.5:
        cube = cube / 65536.0
    return torch.from_numpy(np.ascontiguousarray(cube.transpose(2, 0, 1))).to(torch.float32)


def simulation_mask_path() -> Path:
    """``$IRC_DATA_ROOT/CASSI/simulation/mask.mat`` (IrcError when missing)."""
    return data_file("CASSI/simulation/mask.mat")


def real_mask_path() -> Path:
    """``$IRC_DATA_ROOT/CASSI/real/mask.mat`` (IrcError when missing)."""
    return data_file("CASSI/real/mask.mat")


def real_measurement_paths() -> list[Path]:
    """The real TSA-Net measurements ``$IRC_DATA_ROOT/CASSI/real/meas/*.mat``, sorted."""
    return sorted(data_file("CASSI/real/meas").glob("*.mat"))
