"""LearnIR: learnable posterior sampling with a dynamic-resolution schedule (METHODS.md §1).

Bao et al., "Learnable Posterior Sampling for Real-World Image Restoration" (ICLR 2026). No code
is public; the method is defined by its equations, its figure and Resfusion (NeurIPS 2024), the
residual diffusion it builds on. Every choice the sources leave open is ours and is marked
*choice* below and in the model cards.

* **Residual diffusion** (:mod:`irc.methods.learnir.scheduler`): images in [-1, 1], the residual
  ``R = y - x0`` of the degraded image ``y``, Resfusion's LinearPro schedule truncated at
  ``sqrt(abar) = 0.5``; T = 12 gives 5 sampling steps starting from ``0.5 y + sqrt(0.75) eps``.
* **Networks** (:mod:`irc.methods.learnir.networks`): ``eps_res(z_t, z_y, t)``, a conditional
  U-Net trained on the resnoise MSE, and ``mu(z_t, z_y, t)``, a half-width U-Net (*choice*) for
  the DPSC correction, trained against the closed-form gap between the frozen model's next-step
  mean and the true posterior mean (*choice*, the sign of LearnIR's README). Staged training
  (``stage = "eps"`` then ``"mu"``, the padlock of the paper's figure) or joint
  (``stage = "joint"``, ``L = L_denoise + consistency_weight * L_consistency``; the paper's λ,
  1 by default, *choice*).
* **Sampler**: ``z_{t-1} = m(z_t) - mu(z_t, z_y, t) + sqrt(beta~_t) z`` with ``z = 0`` at the last
  step; ``--dpsc off`` runs the uncorrected sampler (``mu`` left out: the paper's preview output
  and the "without DPSC" ablation).
* **DRM** (dynamic resolution): step ``k`` (counted from the first) runs at ``1 / 2**s_k`` of the
  image's size, ``s = 2, 1, 1, 0, 0`` for 5 steps (*choice*: coarse early, native late, as the
  figure); the latent is resampled (antialiased bicubic down, bicubic up) when the scale
  changes; the residual is formed in the scaled space (``D(y) - D(x0)``); training draws ``t``
  and uses that step's scale. ``--drm off`` runs every step at full size; ``--drm-schedule``
  gives another one (its length must equal the number of sampling steps).
* **Large images**: each sampling step tiles through the stage runner at its own resolution,
  with the image's noise drawn whole and sliced per tile: tiled sampling equals untiled sampling
  up to the blending, and a seeded run repeats exactly whatever the batch.
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irc.errors import UsageError, WeightsError
from irc.methods.base import Component, Method, TrainBatch
from irc.methods.learnir.networks import ConditionalUNet
from irc.methods.learnir.scheduler import ResidualScheduler
from irc.methods.options import OPTIONS
from irc.runner import StageRunner
from irc.tiling import TileSpec

__all__ = ["LearnIR", "LearnIRConfig", "parse_drm_schedule", "resample"]

TASKS = ("noise", "haze", "shadow")


@dataclass(frozen=True)
class LearnIRConfig:
    """LearnIR's networks, schedule and training stage.

    Attributes:
        task: what the weights restore: ``noise`` (real camera noise), ``haze``, ``shadow``.
        timesteps: ``T`` of the LinearPro schedule (12: 5 sampling steps).
        drm_schedule: scale exponent per sampling step, first to last (``()``: all at full size).
        width: ``eps_res``'s width at full resolution.
        mu_width: ``mu``'s width (half of ``width`` by default: lighter, as the paper says).
        levels: down-samplings of both U-Nets.
        blocks: residual blocks per level.
        stage: what trains: ``eps`` (the resnoise network), ``mu`` (the correction, ``eps``
            frozen) or ``joint`` (both, ``L_denoise + consistency_weight * L_consistency``).
        consistency_weight: the paper's lambda for ``joint``.
        init_from: weights whose ``eps_res`` a ``mu`` stage starts from (training only).
    """

    task: Literal["noise", "haze", "shadow"] = "noise"
    timesteps: int = 12
    drm_schedule: tuple[int, ...] = (2, 1, 1, 0, 0)
    width: int = 32
    mu_width: int = 16
    levels: int = 2
    blocks: int = 1
    stage: Literal["eps", "mu", "joint"] = "eps"
    consistency_weight: float = 1.0
    init_from: str = ""

    def __post_init__(self) -> None:
        if not 2 <= self.timesteps <= 1000:
            raise UsageError(f"learnir config timesteps must be in 2..1000, got {self.timesteps}")
        if not (1 <= self.width <= 512 and 1 <= self.mu_width <= 512 and 0 <= self.levels <= 6 and 0 <= self.blocks <= 16):
            raise UsageError("learnir config: width and mu_width 1..512, levels 0..6, blocks 0..16")
        if any(not 0 <= s <= 4 for s in self.drm_schedule):
            raise UsageError(f"learnir config drm_schedule entries must be 0..4, got {list(self.drm_schedule)}")


def parse_drm_schedule(text: str) -> tuple[int, ...]:
    """``"2,1,1,0,0"`` -> ``(2, 1, 1, 0, 0)`` (usage error otherwise)."""
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v != "")
    except ValueError:
        raise UsageError(f"--drm-schedule {text!r}: expected comma-separated scale exponents, e.g. 2,1,1,0,0") from None
    if not values or any(not 0 <= v <= 4 for v in values):
        raise UsageError(f"--drm-schedule {text!r}: each scale is an exponent 0-4 (1 / 2**s of the size)")
    return values


def scaled_size(size: tuple[int, int], s: int) -> tuple[int, int]:
    return (max(1, math.ceil(size[0] / 2**s)), max(1, math.ceil(size[1] / 2**s)))


def resample(x: Tensor, size: tuple[int, int]) -> Tensor:
    """DRM's resolution operator: antialiased bicubic down, bicubic up, to exactly ``size``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=shrink)


class LearnIRNetwork(nn.Module):
    def __init__(self, config: LearnIRConfig):
        super().__init__()
        self.eps_net = ConditionalUNet(3, config.width, config.levels, config.blocks)
        self.mu_net = ConditionalUNet(3, config.mu_width, config.levels, config.blocks)


class LearnIR(Method):
    """Residual-diffusion posterior sampling with DRM and the learned DPSC correction."""

    name = "learnir"
    summary = "Residual-diffusion posterior sampling with a dynamic-resolution schedule and a learned correction (ICLR 2026)"
    Config = LearnIRConfig
    tiny_config = {"width": 8, "mu_width": 4, "levels": 1, "blocks": 1}
    tasks = TASKS
    default_task = "noise"
    knobs = OPTIONS["learnir"]
    input_kind = "rgb"
    # a step's receptive field: a few convolutions per level; the blend is exact within a quarter of the overlap
    tile_spec: ClassVar[TileSpec] = TileSpec(support="supported", overlap=32, bytes_per_pixel=1024.0)

    def __init__(self, config: Any = None, *, loading: bool = False, **kwargs: Any):
        self._loading = loading
        super().__init__(config, **kwargs)
        self._announced: set[tuple] = set()
        self._full_resolution = False  # set by the "full-res" variant of irc bench
        if self.config.init_from and not loading:
            self._init_eps(self.config.init_from)
        if self.config.stage == "mu":
            self.network.eps_net.requires_grad_(False)

    def build_network(self) -> nn.Module:
        return LearnIRNetwork(self.config)

    @classmethod
    def _loading_kwargs(cls) -> dict[str, Any]:
        return {"loading": True}

    def components(self) -> list[Component]:
        stage = self.config.stage
        return [
            Component("eps_net", self.network, "shipped", trainable=stage in ("eps", "joint"), select=lambda k: k.startswith("eps_net.")),
            Component("mu_net", self.network, "shipped", trainable=stage in ("mu", "joint"), select=lambda k: k.startswith("mu_net.")),
        ]

    @torch.no_grad()
    def _init_eps(self, weights: str) -> None:
        from irc.weights import load_weights, resolve_weights

        state, meta = load_weights(resolve_weights(weights, method=self.name).path)
        eps = {k[len("eps_net."):]: v for k, v in state.items() if k.startswith("eps_net.")}
        if not eps:
            raise WeightsError(f"{weights}: no eps_net tensors to start from")
        try:
            self.network.eps_net.load_state_dict(eps)
        except RuntimeError as err:
            raise WeightsError(f"{weights}: its eps_net does not fit this config ({str(err).splitlines()[0]})") from None

    # ----------------------------------------------------------------- knobs
    def scheduler_for(self, steps: int) -> ResidualScheduler:
        return ResidualScheduler(int(steps) or self.config.timesteps)

    def scales(self, values: Mapping[str, Any], scheduler: ResidualScheduler) -> tuple[int, ...]:
        """The scale exponent of each sampling step, first to last."""
        n = scheduler.sampling_steps
        if values["drm"] == "off" or self._full_resolution:
            return (0,) * n
        schedule = parse_drm_schedule(values["drm_schedule"]) if values["drm_schedule"] else self.config.drm_schedule
        if not schedule:
            return (0,) * n
        if len(schedule) != n:
            raise UsageError(
                f"the DRM schedule has {len(schedule)} entries ({','.join(map(str, schedule))}) but T = "
                f"{scheduler.config.num_train_timesteps} gives {n} sampling steps; give --drm-schedule with {n} entries or --drm off"
            )
        return schedule

    def validate_knobs(self, values: dict[str, Any]) -> None:
        if values["task"] and values["task"] != self.config.task:
            raise UsageError(f"these learnir weights restore {self.config.task}, not {values['task']}")
        if values["steps"] and not 2 <= values["steps"] <= 1000:
            raise UsageError(f"--steps must be in 2..1000, got {values['steps']}")
        scheduler = self.scheduler_for(values["steps"])
        self.scales(values, scheduler)
        key = (values["steps"], values["drm"], values["drm_schedule"])
        if key not in self._announced:
            self._announced.add(key)
            print(f"learnir: T = {scheduler.config.num_train_timesteps}: {scheduler.sampling_steps} sampling steps, "
                  f"scales {','.join(map(str, self.scales(values, scheduler)))}", file=sys.stderr)  # fmt: skip

    def bench_variants(self) -> dict[str, Any]:
        """``irc bench`` measures the DRM schedule and every step at full size side by side."""
        return {"drm": contextlib.nullcontext(), "full-res": self._full_resolution_variant()}

    @contextlib.contextmanager
    def _full_resolution_variant(self):
        self._full_resolution = True
        try:
            yield
        finally:
            self._full_resolution = False

    def output_scale(self, knobs: Mapping[str, Any]) -> float:
        return 1.0

    # ----------------------------------------------------------------- sampling
    def run_stages(self, x: Tensor, runner: StageRunner, **knobs: Any) -> Tensor:
        scheduler = self.scheduler_for(knobs["steps"])
        schedule = self.scales(knobs, scheduler)
        size = tuple(x.shape[-2:])
        y_full = x.float() * 2 - 1
        conditions = {s: resample(y_full, scaled_size(size, s)) for s in set(schedule)}
        start = scheduler.start
        root = math.sqrt(float(scheduler.alphas_cumprod[start]))
        first = conditions[schedule[0]]
        # the start state (1 - s) y + sqrt(1 - s^2) eps: 0.5 y + sqrt(0.75) eps at a forced point
        z = (1 - root) * first + math.sqrt(1 - root * root) * runner.noise(first.shape[1:])
        correct = knobs["dpsc"] == "on"
        net = self.network
        for k, t in enumerate(range(start, -1, -1)):
            cond = conditions[schedule[k]]
            z = resample(z, tuple(cond.shape[-2:]))
            scale_noise = scheduler.noise_scale(t)
            noise = runner.noise(z.shape[1:]) if scale_noise > 0 else torch.zeros_like(z)
            tv = scheduler.timestep_value(t).to(self.device)

            def step(tile: Tensor, y_tile: Tensor, n_tile: Tensor, t=t, tv=tv, c=scale_noise) -> Tensor:
                tile, y_tile = tile.to(self.dtype), y_tile.to(self.dtype)
                eps = net.eps_net(tile, y_tile, tv)
                mean = scheduler.step_mean(tile.float(), eps.float(), t)
                if correct:
                    mean = mean - net.mu_net(tile, y_tile, tv).float()
                return mean + c * n_tile.float()

            z = runner.run(step, z, self.tile_spec, aux=[(cond, "in"), (noise, "in")])
        z = resample(z, size)
        return ((z + 1) / 2).clamp(0, 1)

    # ----------------------------------------------------------------- training
    def training_step(self, batch: TrainBatch, step: int) -> dict[str, Tensor]:
        """Resnoise MSE (``eps``), the consistency MSE (``mu``), or their sum (``joint``); each
        sample draws a step ``t`` and is trained at that step's DRM scale."""
        cfg = self.config
        if batch.lq.shape[-2:] != batch.gt.shape[-2:]:
            raise UsageError("learnir trains on same-size pairs (degraded and clean crops of one size)")
        scheduler = self.scheduler_for(0)
        schedule = self.scales({"drm": "on", "drm_schedule": ""}, scheduler)
        b = batch.gt.shape[0]
        ts = torch.randint(0, scheduler.start + 1, (b,))
        total = batch.gt.new_zeros(())
        size = tuple(batch.gt.shape[-2:])
        for s in sorted({schedule[scheduler.start - int(t)] for t in ts}):
            index = [i for i in range(b) if schedule[scheduler.start - int(ts[i])] == s]
            sel = torch.tensor(index)
            target_size = scaled_size(size, s)
            x0 = resample(batch.gt[sel] * 2 - 1, target_size)
            y = resample(batch.lq[sel] * 2 - 1, target_size)
            t = ts[sel]
            noise = torch.randn_like(x0)
            x_t = scheduler.add_noise(x0, y, noise, t)
            eps_true = scheduler.resnoise(x0, y, noise, t)
            tv = scheduler.timestep_value(t).to(x0.device)
            loss = x0.new_zeros(())
            if cfg.stage in ("eps", "joint"):
                eps_pred = self.network.eps_net(x_t, y, tv)
                loss = loss + F.mse_loss(eps_pred.float(), eps_true)
            else:
                with torch.no_grad():
                    eps_pred = self.network.eps_net(x_t, y, tv)
            if cfg.stage in ("mu", "joint"):
                gap = scheduler.mean_gap(eps_pred.detach().float(), eps_true, t)
                weight = 1.0 if cfg.stage == "mu" else cfg.consistency_weight
                loss = loss + weight * F.mse_loss(self.network.mu_net(x_t, y, tv).float(), gap)
            total = total + loss * (len(index) / b)
        return {"main": total}
