"""The tasks of LoRun: what each adds to the one unfolding core (:class:`LoRunNet.unfold`).

The core is task-blind: ``K`` stages of ``x <- D_k(x - rho_k A^T (A x - y))`` over an operator
with ``A`` and ``A_adjoint``. A task is one small class saying

* what its images are (channels, input kind, how it tiles) and what parameters its operator
  keeps in the network (the CS matrix, the CASSI mask);
* how to get the operator for a call (``--kernel`` for SR, the stored mask for CASSI) and for a
  training batch (a random USRNet kernel, a random window of the mask);
* how an input becomes a measurement ``y`` (:meth:`UnfoldingTask.observe`: CS and CASSI measure
  the image they are given, SR's input already is ``y``), how a clean training crop does
  (:meth:`UnfoldingTask.simulate`) and where the stages start (:meth:`UnfoldingTask.start`:
  ``A^T y``, its CASSI normalisation, or the bicubic up-sampling of ``y``);
* its option checks and its measurement files.

Adding a task (another linear operator) is one subclass and one entry in :data:`TASKS`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irc.errors import UsageError
from irc.operators.cs import BlockCS
from irc.tiling import TileSpec

if TYPE_CHECKING:
    from irc.methods.lorun import LoRun
    from irc.methods.lorun.network import LoRunConfig

__all__ = ["TASKS", "CASSITask", "CSTask", "SRTask", "UnfoldingTask", "pca_matrix", "task_class"]

Finish = Callable[[Tensor], Tensor]


def _unchanged(x: Tensor) -> Tensor:
    return x


def check_kernel_index(kernel: Any) -> None:
    """``--kernel N`` must name one of the 12 USRNet kernels (other kernel values, ``gaussian:S``
    or a file, are checked where they are read)."""
    if isinstance(kernel, int) and not 0 <= kernel < 12:
        raise UsageError(f"kernel index must be 0-11 (the 12 USRNet kernels), got {kernel}")


class UnfoldingTask:
    """One task of LoRun: its operator, its inputs and how a call becomes a measurement.

    An instance belongs to one :class:`~irc.methods.lorun.LoRun` (``method``) and may cache per
    method (SR's kernels). Class-level methods describe the task without weights.
    """

    name: ClassVar[str]
    input_kind: ClassVar[str]
    measurement_kind: ClassVar[str | None] = None

    def __init__(self, method: LoRun) -> None:
        self.method = method

    # ------------------------------------------------------------------ description
    @staticmethod
    def channels(cfg: LoRunConfig) -> int:
        """Image channels the denoiser sees."""
        raise NotImplementedError

    @classmethod
    def tile_spec(cls) -> TileSpec:
        """How the one stage (``unfold``) tiles."""
        raise NotImplementedError

    @classmethod
    def profile(cls) -> dict[str, Any]:
        """The method's task profile (input kind, channels, stages): see ``Method.task_profile``."""
        from irc.methods.lorun.network import LoRunConfig

        return {"input": cls.input_kind, "channels": (cls.channels(LoRunConfig(task=cls.name)),), "stages": {"unfold": cls.tile_spec()}}

    @staticmethod
    def rho_scale(cfg: LoRunConfig) -> float:
        """Factor on ``config.rho_init`` for this operator's scale."""
        return 1.0

    @staticmethod
    def add_operator(net: nn.Module, cfg: LoRunConfig, *, loading: bool) -> None:
        """Register the operator's parameters or buffers on the network (none by default)."""

    # ------------------------------------------------------------------ calls
    @property
    def cfg(self) -> LoRunConfig:
        return self.method.config

    def operator(self, knobs: Mapping[str, Any]):
        """The operator of a restore call."""
        raise NotImplementedError

    def observe(self, x: Tensor, op) -> tuple[Tensor, Finish]:
        """The measurement ``y`` of a restore call's input ``x``, and what to do to the output."""
        return self.simulate(x, op)

    def simulate(self, gt: Tensor, op) -> tuple[Tensor, Finish]:
        """The simulated measurement of clean images ``gt``, and what to do to the output."""
        return op.A(gt), _unchanged

    def start(self, op, y: Tensor) -> Tensor:
        """Where the stages start: ``A^T y``."""
        return op.A_adjoint(y)

    def training_operator(self, gt: Tensor, step: int):
        """The operator of a training batch (default: the restore operator)."""
        return self.operator({})

    def validate(self, values: dict[str, Any]) -> None:
        """Task-specific option checks (after the common ones)."""

    def output_scale(self) -> float:
        return 1.0

    def restore_measurement(self, path: Path, values: Mapping[str, Any], stages: int | None) -> Tensor:
        raise UsageError(f"lorun {self.name} reconstructs images: pass the image itself, not --measurement")


class CSTask(UnfoldingTask):
    """Block compressive sensing on Y (:class:`~irc.operators.cs.BlockCS`), zero-padded to the
    block grid as ISTA-Net+ and measurement files do.

    Tiles are aligned to the zero-padded block grid: every tile measures exactly the blocks the
    whole image would, so tiles differ only through the denoiser's receptive field near their
    borders, which the overlap blends away.
    """

    name = "cs"
    input_kind = "luma"
    measurement_kind = "image"

    @staticmethod
    def channels(cfg: LoRunConfig) -> int:
        return 1

    @classmethod
    def tile_spec(cls) -> TileSpec:
        return TileSpec(support="supported", multiple_of=33, overlap=66, bytes_per_pixel=2048.0, pad="constant")

    @staticmethod
    def add_operator(net: nn.Module, cfg: LoRunConfig, *, loading: bool) -> None:
        from irc.operators.cs import num_measurements

        m = num_measurements(cfg.ratio, cfg.block**2)
        if cfg.matrix_init == "pca" and not loading:
            phi = pca_matrix(m, cfg.block)
        else:
            draw = BlockCS(cfg.ratio, cfg.block, 1, matrix="gaussian" if cfg.matrix_init == "gaussian" else "orthogonal")
            phi = draw.phi
        net.cs = BlockCS.from_matrix(phi, block=cfg.block, learnable=cfg.learnable_matrix, orthonormal_rows=False)

    def operator(self, knobs: Mapping[str, Any]):
        return self.method.network.cs

    def simulate(self, gt: Tensor, op) -> tuple[Tensor, Finish]:
        from irc.operators.cs import crop, pad_to_block

        xp, size = pad_to_block(gt, self.cfg.block)
        return op.A(xp), lambda out: crop(out, size)

    def validate(self, values: dict[str, Any]) -> None:
        cfg = self.cfg
        if values["ratio"] and abs(values["ratio"] - cfg.ratio) > 1e-9:
            shipped = f" (e.g. --weights lorun-cs-r{round(values['ratio'] * 100)})" if round(values["ratio"] * 100) in (10, 25, 50) else ""
            raise UsageError(
                f"these lorun weights were trained at ratio {cfg.ratio:g}; got ratio {values['ratio']:g}: use weights for that ratio{shipped}"
            )

    def restore_measurement(self, path: Path, values: Mapping[str, Any], stages: int | None) -> Tensor:
        from irc.operators.measurements import load_cs_measurement, matrix_fingerprint

        method, cfg = self.method, self.cfg
        y, size, meta = load_cs_measurement(path)
        cs = method.network.cs
        if y.shape[0] != cs.m:
            raise UsageError(f"{path}: {y.shape[0]} measurements per block, but these weights sample {cs.m} (ratio {cfg.ratio:g})")
        if "block" in meta and int(meta["block"]) != cfg.block:
            raise UsageError(f"{path}: block {meta['block']} but the weights use {cfg.block}")
        if "phi_sha256" in meta and meta["phi_sha256"] != matrix_fingerprint(method.sampling_matrix()):
            raise UsageError(f"{path}: measured with another sampling matrix than these weights' (fingerprint {meta['phi_sha256']}); reconstruct it with the weights that measured it")
        out = method.reconstruct(cs, y[None].to(method.device, method.dtype), stages)
        return out[..., : size[0], : size[1]].float().clamp(0, 1).cpu()


class CASSITask(UnfoldingTask):
    """Single-disperser CASSI (:class:`~irc.operators.cassi.CASSI`) with the mask stored in the
    weights. Never tiles: the coded mask is as large as the cube."""

    name = "cassi"
    input_kind = "cube"
    measurement_kind = "cube"

    @staticmethod
    def channels(cfg: LoRunConfig) -> int:
        return cfg.bands

    @classmethod
    def tile_spec(cls) -> TileSpec:
        return TileSpec(support="unsupported", bytes_per_pixel=2048.0)

    @staticmethod
    def rho_scale(cfg: LoRunConfig) -> float:
        # A^T A has diagonal entries up to ~bands/2 (half-open mask), so the step is scaled by
        # 2 / bands to keep rho_k A^T A of order 1 (MST normalises y by 2 / bands likewise).
        return 2.0 / cfg.bands

    @staticmethod
    def add_operator(net: nn.Module, cfg: LoRunConfig, *, loading: bool) -> None:
        from irc.operators.cassi import load_mask, simulation_mask_path

        if loading or (not cfg.mask and not _pack_has_mask()):
            mask = torch.zeros(256, 256)  # replaced by the weights' mask
        else:
            mask = load_mask(cfg.mask or simulation_mask_path())
        net.register_buffer("mask", mask.float())

    def operator(self, knobs: Mapping[str, Any], mask: Tensor | None = None):
        from irc.operators.cassi import CASSI

        return CASSI(self.method.network.mask if mask is None else mask, bands=self.cfg.bands)

    def observe(self, x: Tensor, op) -> tuple[Tensor, Finish]:
        if x.shape[-2:] != op.mask.shape[-2:]:
            raise UsageError(f"lorun cassi: the cube is {tuple(x.shape[-2:])} but the mask is {tuple(op.mask.shape[-2:])}")
        return op.A(x), _unchanged

    def start(self, op, y: Tensor) -> Tensor:
        """``x_0 = A^T y * 2 / bands`` (MST's ``shift_back(y * 2 / 28) * mask``)."""
        return op.A_adjoint(y) * (2.0 / self.cfg.bands)

    def training_operator(self, gt: Tensor, step: int):
        """Crops smaller than the mask see a window of the mask at a random position (one per
        batch, seeded by the step), as MST's real-data training crops its 660 x 660 mask; this
        also lets a CPU run train on small crops. Crops of the mask's size use the whole mask
        (MST's simulation protocol)."""
        bands = self.cfg.bands
        if gt.shape[1] != bands:
            raise UsageError(
                f"lorun cassi trains on {bands}-band cubes, got {gt.shape[1]}-channel images: "
                "set data.train to hyperspectral cubes (the cave set or a folder of .mat files)"
            )
        mask = self.method.network.mask
        (h, w), (mh, mw) = gt.shape[-2:], mask.shape[-2:]
        if (h, w) != (mh, mw):
            if h > mh or w > mw:
                raise UsageError(f"lorun cassi: training crops of {h}x{w} are larger than the {mh}x{mw} mask; set data.crop <= {min(mh, mw)}")
            g = torch.Generator().manual_seed(int(step))
            top = int(torch.randint(mh - h + 1, (1,), generator=g))
            left = int(torch.randint(mw - w + 1, (1,), generator=g))
            mask = mask[top : top + h, left : left + w]
        return self.operator({}, mask=mask)

    def restore_measurement(self, path: Path, values: Mapping[str, Any], stages: int | None) -> Tensor:
        from irc.operators.cassi import load_mask
        from irc.operators.measurements import load_cassi_measurement

        method, bands = self.method, self.cfg.bands
        y = load_cassi_measurement(path)
        m = load_mask(values["mask"]).to(method.device, method.dtype) if values["mask"] else method.network.mask
        if y.shape[-2] != m.shape[-2] or y.shape[-1] != m.shape[-1] + 2 * (bands - 1):
            raise UsageError(
                f"{path}: measurement {tuple(y.shape[-2:])} does not fit the mask {tuple(m.shape)} with {bands} bands; "
                "pass the mask it was taken with (--mask FILE.mat)"
            )
        return method.reconstruct(self.operator({}, mask=m), y.to(method.device, method.dtype), stages).float().clamp(0, 1).cpu()


class SRTask(UnfoldingTask):
    """Non-blind SR, the USRNet degradation ``y = (x * k) downarrow_s`` with circular blur
    (:class:`~irc.operators.blur_sr.BlurDownsample`), the kernel given per call. Tiles like any
    network, at the SR factor."""

    name = "sr"
    input_kind = "rgb"

    def __init__(self, method: LoRun) -> None:
        super().__init__(method)
        self._kernels: dict[int | str, Tensor] = {}  # blur kernels by option value (see kernel)
        self._kernel_noted = False  # the "no --kernel given" note is said once per run

    @staticmethod
    def channels(cfg: LoRunConfig) -> int:
        return 3

    @classmethod
    def tile_spec(cls) -> TileSpec:
        return TileSpec(support="supported", scale=4.0, multiple_of=4, overlap=16, bytes_per_pixel=2048.0)

    def kernel(self, spec: int | str) -> Tensor:
        """The blur kernel of a ``kernel`` value (see :func:`irc.operators.blur_sr.resolve_kernel`),
        cached per value so that tiles, batches and training steps do not reread a kernel file."""
        from irc.operators.blur_sr import resolve_kernel

        if spec not in self._kernels:
            self._kernels[spec] = resolve_kernel(spec)
        return self._kernels[spec]

    def operator(self, knobs: Mapping[str, Any]):
        from irc.operators.blur_sr import BlurDownsample

        kernel = self.kernel(knobs.get("kernel") or 0)
        return BlurDownsample(kernel.to(self.method.device, self.method.dtype), int(self.cfg.scale))

    def observe(self, x: Tensor, op) -> tuple[Tensor, Finish]:
        return x, _unchanged  # the low-resolution input is the measurement

    def start(self, op, y: Tensor) -> Tensor:
        """The bicubic up-sampling of ``y``."""
        return F.interpolate(y, scale_factor=self.cfg.scale, mode="bicubic", align_corners=False)

    def training_operator(self, gt: Tensor, step: int):
        """One of the 12 USRNet kernels, drawn per batch (seeded by the step)."""
        g = torch.Generator().manual_seed(int(step))
        return self.operator({"kernel": int(torch.randint(12, (1,), generator=g))})

    def validate(self, values: dict[str, Any]) -> None:
        cfg = self.cfg
        if values["scale"] and abs(values["scale"] - cfg.scale) > 1e-9:
            raise UsageError(f"these lorun weights are for x{cfg.scale} SR; got scale {values['scale']:g}")
        if values["kernel"] == "" and not self._kernel_noted:
            self._kernel_noted = True
            print("lorun sr: no --kernel given: assuming USRNet kernel 0 (isotropic Gaussian) blurred the input; "
                  "--kernel 0-11, gaussian:SIGMA or a file says which", file=sys.stderr)  # fmt: skip
        kernel = values["kernel"] or 0
        check_kernel_index(kernel)
        self.kernel(kernel)  # a missing or malformed kernel fails before any image

    def restore_measurement(self, path: Path, values: Mapping[str, Any], stages: int | None) -> Tensor:
        raise UsageError("lorun sr reconstructs low-resolution images: pass the image itself, not --measurement")

    def output_scale(self) -> float:
        return float(self.cfg.scale)


#: LoRun's tasks by name.
TASKS: dict[str, type[UnfoldingTask]] = {t.name: t for t in (CSTask, CASSITask, SRTask)}


def task_class(name: str) -> type[UnfoldingTask]:
    try:
        return TASKS[name]
    except KeyError:
        raise UsageError(f"lorun has no task {name!r}; expected one of {', '.join(TASKS)}") from None


def _pack_has_mask() -> bool:
    try:
        from irc.operators.cassi import simulation_mask_path

        return Path(simulation_mask_path()).is_file()
    except Exception:  # noqa: BLE001 - no data pack: a zero mask the weights replace
        return False


@torch.no_grad()
def pca_matrix(m: int, block: int = 33, *, blocks: int = 40000, seed: int = 0) -> Tensor:
    """``M`` leading eigenvectors (rows) of the second-moment matrix of Train400 blocks.

    The Karhunen-Loeve basis: orthonormal rows, and ``Phi^T Phi x`` is the best rank-``M``
    linear approximation of a random training block in the mean-square sense. The blocks are
    drawn at random positions (seeded) from the Train400 images of the data pack.

    Returns:
        ``(M, block^2)`` float32.
    """
    import numpy as np

    from irc.data._common import grey_float, read_float
    from irc.data.registry import training_files

    files = training_files("train400")
    rng = np.random.default_rng(seed)
    per = max(1, blocks // len(files))
    rows = []
    for f in files:
        img = grey_float(read_float(f))
        img = img[..., 0] if img.ndim == 3 else img
        h, w = img.shape
        ys = rng.integers(0, h - block + 1, per)
        xs = rng.integers(0, w - block + 1, per)
        rows += [img[a : a + block, b : b + block].reshape(-1) for a, b in zip(ys, xs)]
    x = torch.from_numpy(np.stack(rows)).double()
    cov = x.T @ x / x.shape[0]
    evals, evecs = torch.linalg.eigh(cov)
    top = evecs[:, torch.argsort(evals, descending=True)[:m]].T
    # deterministic signs: largest-magnitude entry of each row positive
    idx = top.abs().argmax(dim=1)
    top = top * torch.sign(top[torch.arange(m), idx])[:, None]
    return top.float().contiguous()
