"""LoRun: Deep LoRA-Unfolding Networks for image restoration (IEEE TIP 2026, arXiv 2602.18697).

Proximal gradient descent unfolded into ``K`` stages (METHODS.md section 2)::

    x_0     = A^T y          (CS: back-projection; CASSI: shift_back(y) * mask * 2 / bands;
                              SR: bicubic up-sampling of y)
    z_k     = x_{k-1} - rho_k A^T (A x_{k-1} - y)    (GDM, learnable rho_k = softplus(.) > 0)
    x_k     = D_{theta_0 + Delta_k}(z_k)             (PMM: the shared base denoiser + stage-k LoRA)

and ``x_K`` is the output. Optional stage gates (``gate_init``, our addition, off by default)
blend ``x_k = z_k + g_k (D_k(z_k) - z_k)``.

The base denoiser ``D_theta_0`` is shared by all stages; every stage owns LoRA adapters
``Delta_k = B_k A_k`` on every convolution of the denoiser (:mod:`irc.nn.lora`), with the
adaptive rank ``r = ceil(min(C_in, C_out) * gamma / 100)`` and ``B_k = 0`` at initialisation, so
that every stage starts equal to the base. Training has two phases (METHODS.md 2.1):

* ``phase = 1``: a one-stage network (``stages = 1``), every weight trainable (the base, rho,
  and the sampling matrix when ``learnable_matrix``);
* ``phase = 2``: ``K`` stages; the base is frozen (``requires_grad = False``, bit-identical
  after training), only the adapters, the ``rho_k``, the stage gates (when used) and the
  learnable sampling matrix train.
  ``init_from`` names the phase-1 weights the base (and rho, and the matrix when its shape
  fits) start from.

``variant = "block"`` is the Block-K baseline the paper compares with: ``K`` independent
denoisers (no sharing, no adapters), every weight trainable.

Base denoisers (the paper names "U-Net, Transformer and CNN" backbones without saying which per
task; METHODS.md marks the choice GUESS). Ours, chosen for CPU training speed, is the same small
residual U-Net for every task (two scales, ``channels`` / ``2 channels`` / ``4 channels``, plain
ReLU residual blocks, pixel-shuffle up-sampling, a global residual ``x + D(x)``), with the input
and output channels of the task: 1 (CS, grey / Y), 28 (CASSI), 3 (SR, RGB).

Tasks and operators (one small class each, :mod:`irc.methods.lorun.tasks`, over the one
unfolding core :meth:`LoRunNet.unfold`):

* ``cs``: block CS on ``block x block`` blocks (:class:`irc.operators.cs.BlockCS`). The sampling
  matrix ``Phi`` (``M x block^2``, ``M`` from the ReconNet / ISTA-Net+ table) is stored in the
  weights and, with ``learnable_matrix``, trained end to end (as OPINE-Net+, CASNet and NesTD do).
  ``matrix_init = "pca"`` starts it from the ``M`` leading eigenvectors of the second-moment
  matrix of Train400 blocks (the Karhunen-Loeve basis: orthonormal rows, the best linear
  ``M``-dimensional projection of natural blocks in the mean-square sense); ``"orthogonal"`` /
  ``"gaussian"`` are random.
* ``cassi``: single-disperser CASSI with a 2-pixel shift per band
  (:class:`irc.operators.cassi.CASSI`), the mask from the data pack (``CASSI/simulation``) or
  a user file (``mask``, or the ``mask`` option for a measurement taken with another mask, e.g.
  the real TSA-Net 660 x 660 mask). The mask is a buffer saved with the weights. The initial
  estimate uses MST's ``y * 2 / bands`` normalisation; the GDM step is scaled by ``2 / bands``
  at initialisation (``A^T A`` has entries up to about ``bands / 2``).
* ``sr``: the USRNet degradation ``y = (x * k) downarrow_s`` with circular blur
  (:class:`irc.operators.blur_sr.BlurDownsample`), the kernel given per image (one of the 12
  USRNet kernels); the GDM is the gradient step above.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irc.errors import UsageError, WeightsError
from irc.methods.base import Component, Method, TrainBatch
from irc.methods.lorun.network import _LEGACY_PHI_GAIN, PHI_LR_SCALE, LoRunConfig, LoRunNet, UNetDenoiser
from irc.methods.lorun.tasks import TASKS, UnfoldingTask, check_kernel_index, pca_matrix, task_class
from irc.methods.options import OPTIONS
from irc.nn.lora import base_parameters
from irc.operators.measurements import load_cs_measurement, save_cs_measurement

__all__ = [
    "LoRun", "LoRunConfig", "LoRunNet", "TASKS", "UNetDenoiser", "UnfoldingTask", "load_cs_measurement", "pca_matrix", "save_cs_measurement",
]  # fmt: skip


def _is_base_key(key: str) -> bool:
    return key.startswith(("denoiser.", "denoisers.")) and ".lora_" not in key


def _is_stage_key(key: str) -> bool:
    return key in ("rho_raw", "gate_raw") or ".lora_" in key


def _is_operator_key(key: str) -> bool:
    return key.startswith("cs.") or key == "mask"


class LoRun(Method):
    """LoRun unfolding networks for CS, CASSI and non-blind SR: one core, one task object
    (:attr:`unfolding`) that supplies the operator and the measurement."""

    name = "lorun"
    summary = "Deep LoRA-unfolding network (TIP 2026): K-stage PGD, one shared denoiser + per-stage LoRA; CS, CASSI, SR"
    Config = LoRunConfig
    tiny_config = {"task": "cs", "stages": 2, "channels": 4, "mid_blocks": 1, "ratio": 0.25}
    tasks = tuple(TASKS)
    default_task = "cs"
    knobs = OPTIONS["lorun"]

    def __init__(self, config: Any = None, *, loading: bool = False, **kwargs: Any):
        self._loading = loading
        super().__init__(config, **kwargs)
        cfg = self.config
        self.unfolding: UnfoldingTask = task_class(cfg.task)(self)
        self.tile_spec = self.unfolding.tile_spec()
        if cfg.init_from and not loading:
            self.initialise_from(cfg.init_from)
        if cfg.phase == 2 and cfg.variant == "lorun":
            for p in base_parameters(self.network.denoiser):
                p.requires_grad_(False)

    @classmethod
    def task_profile(cls, task: str | None = None) -> dict[str, Any]:
        """The task's input kind, channels and tiling (see :mod:`irc.methods.lorun.tasks`)."""
        return task_class(task or cls.default_task).profile()

    @property
    def input_channels(self) -> tuple[int, ...]:
        return (self.unfolding.channels(self.config),)

    # ---------------------------------------------------------------- construction / weights
    def build_network(self) -> nn.Module:
        return LoRunNet(self.config, loading=self._loading)

    @classmethod
    def _loading_kwargs(cls) -> dict[str, Any]:
        return {"loading": True}

    def components(self) -> list[Component]:
        """``base`` (the shared denoiser; frozen in phase 2), ``stages`` (per-stage LoRA, steps,
        gates) and ``operator`` (the CS matrix, trainable when learnable, or the CASSI mask)."""
        cfg, net = self.config, self.network
        base_trains = cfg.variant == "block" or cfg.phase == 1
        return [
            Component("base", net, "shipped", trainable=base_trains, select=_is_base_key),
            Component("stages", net, "shipped", trainable=True, select=_is_stage_key),
            Component("operator", net, "shipped", trainable=cfg.task == "cs" and cfg.learnable_matrix, select=_is_operator_key),
        ]

    def lr_scale(self, param: nn.Parameter) -> float:
        """The CS matrix trains at ``PHI_LR_SCALE`` times the recipe's learning rate."""
        cs = getattr(self.network, "cs", None)
        return PHI_LR_SCALE if cs is not None and param is cs.phi else 1.0

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta["cs_phi"] = "unscaled"
        return meta

    @classmethod
    def migrate_state(cls, state: dict[str, Tensor], metadata: Mapping[str, Any]) -> dict[str, Tensor]:
        """Files written before the matrix was stored unscaled hold ``10 x Phi``."""
        if "cs.phi" in state and metadata.get("cs_phi") != "unscaled":
            state = {**state, "cs.phi": state["cs.phi"] / _LEGACY_PHI_GAIN}
        return state

    def load_state_dict(self, state: Mapping[str, Tensor], **kwargs: Any) -> None:
        mask = state.get("mask")
        if self.config.task == "cassi" and mask is not None and mask.shape != self.network.mask.shape:
            self.network.mask = torch.zeros_like(mask, device=self.device)  # the weights' own mask size
        super().load_state_dict(state, **kwargs)

    @torch.no_grad()
    def initialise_from(self, weights: str | Path) -> None:
        """Start phase 2 (or a longer run) from phase-1 weights.

        Copies the base denoiser, ``rho`` (stage 0's value to every stage) and, when the shapes
        agree, the CS matrix / CASSI mask. Adapters keep their zero-``B`` initialisation.
        """
        from irc.weights import load_weights, resolve_weights

        resolved = resolve_weights(str(weights), method=self.name)  # refuses another method's file
        state, meta = load_weights(resolved.path)
        state = self.migrate_state(state, meta)
        net = self.network
        own = net.state_dict()
        copied = 0
        for key, value in state.items():
            if key == "gate_raw":
                if hasattr(net, "gate_raw"):
                    net.gate_raw[0] = value.reshape(-1)[0]
                    copied += 1
                continue
            if key == "rho_raw":
                net.rho_raw.copy_(value.reshape(-1)[0].expand_as(net.rho_raw))
                copied += 1
                continue
            target_key = key
            if self.config.variant == "lorun" and key.startswith("denoisers.0."):
                target_key = "denoiser." + key[len("denoisers.0."):]
            if ".lora_" in key:
                continue
            if target_key in own and own[target_key].shape == value.shape:
                own[target_key].copy_(value)
                copied += 1
        if copied == 0:
            raise WeightsError(f"{resolved.path}: no tensor fits this lorun network")

    # ---------------------------------------------------------------- knobs
    def validate_knobs(self, values: dict[str, Any]) -> None:
        """Option values that must agree with the weights: task, ratio, scale, kernel, stages."""
        cfg = self.config
        if values["task"] and values["task"] != cfg.task:
            raise UsageError(f"these lorun weights are for the {cfg.task} task, not {values['task']!r}")
        if values["ratio"] and cfg.task != "cs":
            raise UsageError(f"--ratio applies to the cs task; these weights are for {cfg.task}")
        self.unfolding.validate(values)  # the task's own checks (ratio, scale, the SR kernel)
        if values["kernel"] == "":
            values["kernel"] = 0
        check_kernel_index(values["kernel"])  # every task: SR's own check ran inside validate
        if not 0 <= values["stages"] <= self.network.stages:
            raise UsageError(f"stages must be 0..{self.network.stages}, got {values['stages']}")

    def output_scale(self, knobs: Mapping[str, Any]) -> float:
        return self.unfolding.output_scale()

    # ---------------------------------------------------------------- forward
    def forward(self, x: Tensor, **knobs: Any) -> Tensor:
        """The input's measurement under the task's operator, reconstructed by the stages."""
        op = self.unfolding.operator(knobs)
        y, finish = self.unfolding.observe(x, op)
        return finish(self.reconstruct(op, y, int(knobs.get("stages", 0) or 0) or None))

    def reconstruct(self, op, y: Tensor, stages: int | None = None) -> Tensor:
        """The unfolded stages (all, or the first ``stages``) on measurement ``y`` of ``op``,
        from the task's starting estimate. CS: ``(B, M, h, w)`` block measurements to the
        zero-padded image ``(B, 1, hB, wB)``; CASSI: ``(B, 1, H, W + 2 (bands - 1))`` to the
        cube; SR: the low-resolution image to the high-resolution one."""
        return self.network.unfold(op, y, self.unfolding.start(op, y), stages)

    # ---------------------------------------------------------------- training
    def training_step(self, batch: TrainBatch, step: int) -> dict[str, Tensor]:
        """MSE of the final stage's output (METHODS.md 2.1: L2 loss).

        The clean crop ``batch.gt`` is measured here with the task's training operator (CS: the
        network's matrix; CASSI: a random window of the mask for small crops; SR: one of the 12
        USRNet kernels per batch), so recipes use degradation ``none``.
        """
        gt = batch.gt
        op = self.unfolding.training_operator(gt, step)
        y, finish = self.unfolding.simulate(gt, op)
        return {"main": F.mse_loss(finish(self.reconstruct(op, y)), gt)}

    # ---------------------------------------------------------------- measurement files
    def sampling_matrix(self) -> Tensor:
        """The CS sampling matrix ``Phi`` ``(M, block^2)`` of these weights (rows act on blocks
        vectorised row-major); ``y_i = Phi x_i`` for every ``block x block`` block ``x_i``."""
        if self.config.task != "cs":
            raise UsageError("sampling_matrix: these lorun weights are not for the cs task")
        return self.network.cs.phi.detach().float().cpu()

    @torch.no_grad()
    def measure_cs(self, image: Tensor, path: str | Path) -> Path:
        """Simulate the measurement of ``image`` ``(1, 1, H, W)`` (zero-padded to the block grid)
        and write it as a measurement file (:mod:`irc.operators.measurements`)."""
        from irc.operators.cs import pad_to_block

        xp, size = pad_to_block(image.to(self.device, self.dtype), self.config.block)
        return save_cs_measurement(path, self.network.cs.A(xp), size, self.config.ratio, self.config.block, phi=self.sampling_matrix())

    def measurement_kind(self) -> str | None:
        return self.unfolding.measurement_kind

    @torch.no_grad()
    def restore_measurement(self, path: str | Path, **knobs: Any) -> Tensor:
        """Reconstruct a measurement file (CS: :func:`save_cs_measurement`; CASSI: ``.mat``).

        Returns:
            ``(1, C, H, W)`` in [0, 1] on the CPU.
        """
        values = self.knob_values(knobs)
        self.train(False)
        return self.unfolding.restore_measurement(Path(path), values, int(values["stages"]) or None)
