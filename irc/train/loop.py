"""The trainer: one optimiser per loss group, accumulation, clipping, mixed precision, EMA,
validation, checkpoints and export (see the package docstring for the choices)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from irc import __version__
from irc.errors import IrcError, UsageError
from irc.methods.base import Method, TrainBatch
from irc.recipes import Recipe, _is_local_weights_path, dumps_toml, load_recipe, recipe_to_dict
from irc.train._common import METHOD_STREAM, keyed_seed, now, os_error
from irc.train.checkpoints import (
    CHECKPOINTS,
    LEGACY_STATE,
    PARTIAL,
    PREFIX,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_legacy_weights,
    read_marker,
    resolve_resume,
    save_checkpoint_files,
)
from irc.train.data import Positioned, ShardedStream, Synthesizer, collate, training_stream
from irc.train.telemetry import Metrics, Progress, Signals, eta_text, format_losses

__all__ = ["RESOLVED_RECIPE", "TrainResult", "TrainingAborted", "export_run", "run_train_command", "train"]

RESOLVED_RECIPE = "resolved_recipe.toml"
_BUCKET_BYTES = 32 << 20


class TrainingAborted(IrcError):
    """Training stopped on purpose (too many non-finite losses); a checkpoint was saved."""

    exit_code = 1


@dataclass
class TrainResult:
    """What a call of :func:`train` did.

    Attributes:
        status: ``"finished"`` (all steps done), ``"stopped"`` (``stop_at`` reached) or
            ``"interrupted"`` (SIGINT / SIGTERM).
        step: optimiser steps completed (skipped non-finite steps included).
        exit_code: 0, or ``128 + signal`` after an interruption.
        run_dir: the run directory.
        checkpoint: the last checkpoint saved (``None`` if none was needed).
        export: the release weights written, if any, and their ``sha256``.
        nonfinite: steps skipped because a loss was NaN or infinite.
        method: the trained method (live weights; the EMA weights are in ``ema``).
        ema: the :class:`irc.nn.ema.EMA`, or ``None`` when the recipe turns it off.
        main_process: whether this process is the main one (the one that prints and exports).
    """

    status: str
    step: int
    exit_code: int
    run_dir: Path
    checkpoint: Path | None = None
    export: Path | None = None
    sha256: str | None = None
    nonfinite: int = 0
    method: Method | None = None
    ema: Any = None
    main_process: bool = True
    message: str = ""



# --------------------------------------------------------------------------------------------
# optimisers and schedules
# --------------------------------------------------------------------------------------------


def _lr_factor(spec, total: int):
    """Multiplier of the peak rate after ``s`` scheduler steps (LambdaLR convention)."""
    warmup = int(spec.warmup)
    floor = spec.min_lr / spec.lr if spec.lr > 0 else 0.0
    milestones = tuple(spec.milestones)

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        if spec.schedule == "cosine":
            span = max(1, total - warmup)
            t = min(1.0, (s - warmup) / span)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
        if spec.schedule == "multistep":
            return spec.gamma ** sum(1 for m in milestones if s >= m)
        return 1.0

    return factor


def _optimizer(spec, params: list[nn.Parameter], lr_scale=lambda p: 1.0) -> torch.optim.Optimizer:
    """One optimiser for a loss group; parameters with a method-given ``lr_scale`` get their own
    param group at that multiple of the rate (the schedule scales every group alike)."""
    cls = torch.optim.AdamW if spec.name == "adamw" else torch.optim.Adam
    by_scale: dict[float, list[nn.Parameter]] = {}
    for p in params:
        by_scale.setdefault(float(lr_scale(p)), []).append(p)
    groups = [{"params": ps, "lr": spec.lr * scale} for scale, ps in by_scale.items()]
    return cls(groups, lr=spec.lr, betas=tuple(spec.betas), eps=spec.eps, weight_decay=spec.weight_decay)



# --------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------


def _make_accelerator(recipe: Recipe, device: str):
    from accelerate import Accelerator

    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {device!r}: expected auto, cpu or cuda (choose GPUs with CUDA_VISIBLE_DEVICES or accelerate launch)")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if recipe.mixed_precision == "fp16" and cpu:
        raise UsageError("mixed_precision = \"fp16\" needs a CUDA GPU; use \"bf16\" or \"no\" on the CPU")
    try:
        return Accelerator(cpu=cpu, mixed_precision=recipe.mixed_precision, step_scheduler_with_optimizer=False)
    except (ValueError, RuntimeError) as err:
        raise UsageError(f"cannot set up training on this machine: {err}") from None


def _hardware(accelerator, mixed_precision: str) -> str:
    device = accelerator.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        name = "Apple MPS"
    else:
        name = "CPU"
    text = f"{accelerator.num_processes}x {name}"
    return text if mixed_precision == "no" else f"{text}, {mixed_precision}"


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _recipe_changes(previous: Path, recipe: Recipe) -> list[str]:
    """``key old -> new`` for every value that differs from the run's previous resolved recipe."""
    if not previous.is_file():
        return []
    try:
        old = _flatten(recipe_to_dict(load_recipe(previous)))
    except IrcError:
        return []
    new = _flatten(recipe_to_dict(recipe))
    return [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _flop_counter():
    """A FLOP counter for one training step (matmul and convolution FLOPs, forward and backward;
    element-wise work is not counted), or ``None`` where torch has none."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        return FlopCounterMode(display=False)
    except ImportError:  # pragma: no cover - torch < 2.1
        return None


def _release_metadata(method: Method, recipe: Recipe, *, steps: int, trained_on: str, name: str | None) -> dict[str, Any]:
    """Weights metadata: the method's own plus where the weights come from.

    Folder paths in the data section and the config's ``init_from`` keep only their last
    component: released weights should not carry a user's directory layout. The ``data`` summary
    names the mixture's task shares, strong-JPEG fraction and grey share when a recipe sets them.
    """
    from irc.data.registry import TRAINING_SETS

    public = recipe_to_dict(recipe)
    public["data"]["train"] = [e if e in TRAINING_SETS else Path(e).name for e in recipe.data.train]
    public["data"]["pairs"] = [[task, *(Path(f).name for f in where[:2]), *where[2:]] for task, *where in recipe.data.pairs]
    if public["data"].get("root"):
        public["data"]["root"] = None
    init_from = public.get("config", {}).get("init_from")
    if isinstance(init_from, str) and init_from and _is_local_weights_path(init_from):
        public["config"]["init_from"] = Path(init_from).name  # manifest names, hub ids and URLs stay as they are
    if public.get("export", {}).get("path"):
        public["export"]["path"] = Path(public["export"]["path"]).name
    summary = {k: public["data"][k] for k in ("train", "pairs", "degradation", "crop", "grey")}
    summary.update({k: public["data"][k] for k in ("task_probs", "strong_jpeg") if public["data"].get(k)})
    if public["data"].get("grey_prob") is not None:  # 0 is a choice (no grey samples); unset is the mixture's own
        summary["grey_prob"] = public["data"]["grey_prob"]
    meta = dict(method.metadata())
    meta.update(
        recipe=json.dumps(public, sort_keys=True),
        data=json.dumps(summary, sort_keys=True),
        steps=str(steps),
        trained_on=trained_on,
    )
    if name:
        meta["name"] = name
    return meta


def _write_release(method: Method, recipe: Recipe, out: Path, *, steps: int, trained_on: str, name: str | None) -> tuple[Path, str]:
    from irc.download import sha256_file
    from irc.weights import save_weights

    save_weights(out, method.state_dict(), _release_metadata(method, recipe, steps=steps, trained_on=trained_on, name=name))
    return out, sha256_file(out)


class _Trainer:
    def __init__(self, recipe: Recipe, run_dir: Path, *, device: str, quiet: bool, name: str | None):
        self.recipe = recipe
        self.run_dir = run_dir
        self.quiet = quiet
        self.name = name
        self.accelerator = _make_accelerator(recipe, device)
        acc = self.accelerator
        self.main = acc.is_main_process
        self.rank = acc.process_index
        self.world = acc.num_processes
        self.device = acc.device
        self.trained_on = _hardware(acc, recipe.mixed_precision)
        self.step = 0
        self.samples = 0
        self.nonfinite_total = 0
        self.nonfinite_run = 0
        self.metrics: Metrics | None = None
        # what a step costs: seconds spent waiting for data (loading and synthesis) since the
        # last log record, and the FLOPs of one optimiser step (counted once, at the first step
        # of a session), from which the log reports the achieved FLOP/s
        self.data_seconds = 0.0
        self.step_flops: float | None = None
        self.progress: Progress | None = None
        self._loader_iter = None
        self.ema = None
        self.schedulers: dict[str, Any] = {}
        self.last_checkpoint: Path | None = None
        self._bench = None
        self.recipe_changes: list[str] = []

    # ---------------------------------------------------------------- set-up
    def _prepare_run_dir(self, resume_from: Path | None, resuming: bool) -> None:
        run_dir = self.run_dir
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / CHECKPOINTS).mkdir(exist_ok=True)
        except OSError as err:
            raise os_error("create the run directory", run_dir, err) from None
        if not resuming:
            existing = latest_checkpoint(run_dir)
            if existing is not None:
                raise UsageError(
                    f"{run_dir} already holds a run (checkpoint {existing.name}): continue it with --resume auto, or choose another --run-dir"
                )
        if self.main:
            for stale in (run_dir / CHECKPOINTS).glob(f".{PREFIX}*{PARTIAL}"):
                shutil.rmtree(stale, ignore_errors=True)
            from irc.atomic import atomic_write_text

            if resuming:
                self.recipe_changes = _recipe_changes(run_dir / RESOLVED_RECIPE, self.recipe)
            header = f"resolved by irc {__version__} on {now()}; a valid recipe: irc train {RESOLVED_RECIPE}"
            try:
                atomic_write_text(run_dir / RESOLVED_RECIPE, dumps_toml(recipe_to_dict(self.recipe), header=header))
            except OSError as err:
                raise os_error("write", run_dir / RESOLVED_RECIPE, err) from None

    def _build(self) -> None:
        from irc.methods import get_method
        from irc.nn.ema import EMA

        recipe = self.recipe
        torch.manual_seed(recipe.seed)  # the same initial weights on every process
        cls = get_method(recipe.method)
        self.method = method = cls.from_config(recipe.config, device=self.device)
        if not method.trainable_state():
            raise UsageError(f"method {recipe.method!r} has no trainable component")
        groups = {g: list(ps) for g, ps in method.parameter_groups().items() if ps}
        if not groups:
            raise UsageError(f"method {recipe.method!r} has no trainable parameters")
        own = {id(p) for c in method.components() if c.trainable for p in c.parameters()}
        seen: dict[int, str] = {}
        for group, params in groups.items():
            if any(id(p) not in own for p in params):
                raise UsageError(f"method {recipe.method!r}: loss group {group!r} has parameters outside its trainable components (they would not be checkpointed)")
            for p in params:
                if id(p) in seen:
                    raise UsageError(f"method {recipe.method!r}: a parameter is in both loss groups {seen[id(p)]!r} and {group!r}")
                seen[id(p)] = group
        unknown = sorted(set(recipe.optimizers) - {"default"} - set(groups))
        if unknown:
            raise UsageError(f"recipe [optimizers.{unknown[0]}]: {recipe.method} has no loss group {unknown[0]!r}; its groups: {', '.join(groups)}")
        self.groups = groups
        self.raw_optimizers: dict[str, torch.optim.Optimizer] = {}
        for group, params in groups.items():
            spec = recipe.optimizer(group)
            opt = _optimizer(spec, params, method.lr_scale)
            self.schedulers[group] = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(spec, recipe.steps))
            self.raw_optimizers[group] = opt
        # Prepared so that accelerate checkpoints them (and places their state on the device).
        self.optimizers = {g: self.accelerator.prepare_optimizer(o) for g, o in self.raw_optimizers.items()}
        if recipe.ema.decay > 0:
            self.ema = EMA(method.averaged_state(), recipe.ema.decay, every=recipe.ema.every, start=recipe.ema.start)
        self.buffers = [t for c in method.components() if c.trainable for t in c.tensors() if not isinstance(t, nn.Parameter)]
        method.train(True)

    def _open_validation(self) -> None:
        val = self.recipe.validation
        if val.dataset is None or not self.main:
            return
        from irc.data.benchmarks import open_benchmark

        known = ("root", "scale", "noise", "quality", "kernel", "task", "seed")
        unknown = [k for k in val.options if k not in known]
        if unknown:
            raise UsageError(f"recipe [validation.options]: unknown option {unknown[0]!r}; valid: {', '.join(known)}")
        self._bench = open_benchmark(val.dataset, limit=val.limit, **val.options)
        self.method.check_knobs(val.knobs)

    # ---------------------------------------------------------------- collectives
    def _all_min(self, value: bool) -> bool:
        if self.world == 1:
            return value
        flag = torch.tensor([1 if value else 0], dtype=torch.int32, device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())

    def _all_max_int(self, value: int) -> int:
        if self.world == 1:
            return value
        flag = torch.tensor([value], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())

    def _all_mean(self, values: list[float]) -> list[float]:
        if self.world == 1 or not values:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return (t / self.world).tolist()

    def _average_gradients(self, params: list[nn.Parameter]) -> None:
        """Average gradients across processes in buckets (one all-reduce per ~32 MiB)."""
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        buckets: dict[tuple, list[list[Tensor]]] = {}
        filled: dict[tuple, int] = {}
        for g in grads:
            key = (g.dtype, g.device)
            lists = buckets.setdefault(key, [[]])
            if filled.get(key, 0) >= _BUCKET_BYTES:
                lists.append([])
                filled[key] = 0
            lists[-1].append(g)
            filled[key] = filled.get(key, 0) + g.numel() * g.element_size()
        for lists in buckets.values():
            for bucket in lists:
                flat = _flatten_dense_tensors(bucket)
                torch.distributed.all_reduce(flat)
                flat.div_(self.world)
                for g, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                    g.copy_(synced)

    def _sync_buffers(self) -> None:
        if self.world > 1:
            for b in self.buffers:
                torch.distributed.broadcast(b.data, src=0)

    def _broadcast_weights(self) -> None:
        if self.world > 1:
            with torch.no_grad():
                for t in self.method.trainable_state().values():
                    torch.distributed.broadcast(t, src=0)

    def _replica_check(self) -> dict[str, Any] | None:
        """sha256 of every process's weights; they must all be equal."""
        if self.world == 1:
            return None
        digest = hashlib.sha256()
        for key, t in sorted(self.method.trainable_state().items()):
            digest.update(key.encode())
            digest.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
        digests: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(digests, digest.hexdigest())
        identical = len(set(digests)) == 1
        if not identical and self.main:
            print(f"warning: the {self.world} replicas' weights differ at step {self.step}", file=sys.stderr)
        return {"identical": identical, "sha256": digests}

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The run's state: tensors and plain data only (see :mod:`irc.train.checkpoints`)."""
        scaler = self.accelerator.scaler
        return {
            "step": self.step,
            "samples": self.samples,
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_run": self.nonfinite_run,
            "weights": self.method.trainable_state(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizers": {g: o.state_dict() for g, o in self.raw_optimizers.items()},
            "schedulers": {g: s.state_dict() for g, s in self.schedulers.items()},
            "scaler": None if scaler is None else scaler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.method.load_trainable_state(state["weights"])
        if self.ema is not None:
            if state.get("ema") is None:
                warnings.warn("the checkpoint has no EMA: it starts from the current weights", stacklevel=2)
                self.ema.load_state_dict({"shadow": self.method.averaged_state(), "updates": 0})
            else:
                self.ema.load_state_dict(state["ema"])
        for group, opt in self.raw_optimizers.items():
            if group in state["optimizers"]:
                opt.load_state_dict(state["optimizers"][group])
        for group, scheduler in self.schedulers.items():
            if group in state["schedulers"]:
                scheduler.load_state_dict(state["schedulers"][group])
        if self.accelerator.scaler is not None and state.get("scaler"):
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.samples = int(state["samples"])
        self.nonfinite_total = int(state["nonfinite_total"])
        self.nonfinite_run = int(state["nonfinite_run"])

    def save_checkpoint(self, reason: str) -> Path:
        acc = self.accelerator
        root = self.run_dir / CHECKPOINTS
        final = root / f"{PREFIX}{self.step:08d}"
        if self.last_checkpoint == final:
            return final
        replicas = self._replica_check()
        tmp = root / f".{final.name}{PARTIAL}"
        acc.wait_for_everyone()
        if self.main:  # the replicas are identical (checked above): one process writes
            shutil.rmtree(tmp, ignore_errors=True)
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)
            marker = {
                "step": self.step, "samples": self.samples, "reason": reason, "time": now(), "trained_on": self.trained_on,
                "world_size": self.world, "irc_version": __version__, "method": self.recipe.method,
            }  # fmt: skip
            try:
                tmp.mkdir(parents=True)
                save_checkpoint_files(tmp, self.state_dict(), marker)
                os.replace(tmp, final)
            except (OSError, RuntimeError) as err:
                shutil.rmtree(tmp, ignore_errors=True)
                raise os_error("save a checkpoint in", final, err) from None
            keep = self.recipe.checkpoint.keep
            if keep:
                for old in list_checkpoints(self.run_dir)[:-keep]:
                    shutil.rmtree(old, ignore_errors=True)
            if replicas is not None:
                self.metrics.write({"step": self.step, "replicas": replicas})
        acc.wait_for_everyone()
        self.last_checkpoint = final
        return final

    # ---------------------------------------------------------------- data
    def _start_data(self) -> None:
        recipe = self.recipe
        dataset = training_stream(recipe)
        self.epoch_size = len(dataset)
        sampler = ShardedStream(len(dataset), recipe.seed, self.samples, recipe.batch, self.rank, self.world)
        generator = torch.Generator()
        generator.manual_seed(recipe.seed)  # worker seeds must not draw from the global RNG
        workers = recipe.data.workers
        loader = DataLoader(
            Positioned(dataset), batch_sampler=sampler, collate_fn=collate, num_workers=workers, pin_memory=self.device.type == "cuda",
            generator=generator, persistent_workers=False, prefetch_factor=2 if workers else None,
        )  # fmt: skip
        self._loader_iter = iter(loader)
        self.synth = Synthesizer(recipe.data.degradation, recipe.seed, **recipe.data.mixture_options())

    def _next_batch(self) -> TrainBatch:
        gt, real_lq, tasks, positions = next(self._loader_iter)
        gt = gt.to(self.device, non_blocking=True)
        real = [i for i, lq in enumerate(real_lq) if lq is not None]
        if not real:
            return self.synth(gt, positions)
        # A batch with real pairs: synthesise the clean samples' inputs, take the real ones as
        # they are, and label every sample with its task (the degradation kind when unlabelled).
        lq, target, labels = torch.empty_like(gt), gt.clone(), list(tasks)
        clean = [i for i, x in enumerate(real_lq) if x is None]
        if clean:
            made = self.synth(gt[clean], [positions[i] for i in clean])
            lq[clean], target[clean] = made.lq, made.gt
            names = made.task or (self.synth.spec.kind,) * len(clean)
            for i, name in zip(clean, names):
                labels[i] = name
        for i in real:
            lq[i] = real_lq[i].to(self.device, non_blocking=True)
        return TrainBatch(lq=lq, gt=target, task=tuple(labels))

    # ---------------------------------------------------------------- one step
    def _train_step(self) -> tuple[bool, dict[str, float], dict[str, float]]:
        """One optimiser step; returns (finite, mean loss per group, grad norm per group)."""
        recipe, acc = self.recipe, self.accelerator
        k = recipe.grad_accum
        for opt in self.raw_optimizers.values():
            opt.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        stepped: list[str] = []
        finite = True
        bad: dict[str, float] = {}
        counter = _flop_counter() if self.step_flops is None else None
        for micro in range(k):
            start = time.perf_counter()
            batch = self._next_batch()
            self.data_seconds += time.perf_counter() - start
            if not finite:
                continue  # the step is skipped; the data still advances
            torch.manual_seed(keyed_seed(recipe.seed, self.step, micro, self.rank, METHOD_STREAM))
            with counter if counter is not None else contextlib.nullcontext():
                with acc.autocast():
                    losses = self.method.training_step(batch, self.step)
                self._check_losses(losses)
                names = [g for g in self.groups if g in losses]
                values = torch.stack([losses[g].detach().float().reshape(()) for g in names]).tolist() if names else []
                local = all(math.isfinite(v) for v in values)
                finite = self._all_min(local)
                if not finite:
                    bad = dict(zip(names, values))
                    continue
                trainable = [g for g in names if losses[g].requires_grad]
                for i, group in enumerate(trainable):
                    # inputs= keeps each group's gradients to itself; with one group a plain backward
                    # does the same and stays compatible with reentrant activation checkpointing.
                    only = {"inputs": self.groups[group]} if len(self.groups) > 1 else {}
                    acc.backward(losses[group] / k, retain_graph=i < len(trainable) - 1, **only)
            if counter is not None:  # counted on one micro-batch: forward and backward, for all k
                self.step_flops = float(counter.get_total_flops()) * k
                counter = None
            for group, value in zip(names, values):
                sums[group] = sums.get(group, 0.0) + value / k
                if group not in stepped:
                    stepped.append(group)
            del losses
        norms: dict[str, float] = {}
        if finite:
            finite = self._optimizer_step([g for g in self.groups if g in stepped], norms)
        else:
            sums = bad
        with warnings.catch_warnings():
            # a schedule steps on skipped steps too (it follows the step count), which torch flags
            warnings.simplefilter("ignore", UserWarning)
            for scheduler in self.schedulers.values():
                scheduler.step()
        return finite, sums, norms

    def _check_losses(self, losses: Any) -> None:
        if not isinstance(losses, Mapping) or not losses:
            raise UsageError(f"{self.recipe.method}.training_step must return {{group: loss}}, got {type(losses).__name__}")
        unknown = [g for g in losses if g not in self.groups]
        if unknown:
            raise UsageError(f"{self.recipe.method}.training_step returned loss group {unknown[0]!r}; its parameter groups: {', '.join(self.groups)}")
        for group, loss in losses.items():
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise UsageError(f"{self.recipe.method}.training_step: loss {group!r} must be a scalar tensor")

    def _optimizer_step(self, groups: list[str], norms: dict[str, float]) -> bool:
        """Average, unscale, measure and clip the gradients, then step; ``False`` if they are not finite."""
        scaler = self.accelerator.scaler
        clip = self.recipe.clip_grad
        for group in groups:
            if self.world > 1:
                self._average_gradients(self.groups[group])
        if scaler is not None:
            # One scaler for all groups: unscale every group, step every group, update once
            # (the multiple-optimiser pattern of torch.amp).
            for group in groups:
                scaler.unscale_(self.raw_optimizers[group])
        totals = {}
        for group in groups:
            grads = [p.grad for p in self.groups[group] if p.grad is not None]
            totals[group] = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
            norms[group] = float(totals[group])
        if scaler is None and not all(math.isfinite(v) for v in norms.values()):
            return False  # identical on every process: the gradients were averaged first
        if clip is not None:
            for group in groups:
                torch.nn.utils.clip_grads_with_norm_(self.groups[group], clip, totals[group])
        for group in groups:
            if scaler is not None:
                scaler.step(self.raw_optimizers[group])  # skips the step itself on inf / NaN
            else:
                self.raw_optimizers[group].step()
        if scaler is not None:
            scaler.update()
        self._sync_buffers()
        return True

    # ---------------------------------------------------------------- validation
    def validate(self) -> dict[str, Any] | None:
        if self.recipe.validation.dataset is None:
            return None
        result = None
        if self.main:
            from irc.evaluate import Run, evaluate

            context = self.ema.swapped(self.method.averaged_state()) if self.ema is not None else contextlib.nullcontext()
            with context:
                out = evaluate(Run(label=f"step-{self.step}", method=self.method, knobs=dict(self.recipe.validation.knobs)), self._bench)
                # back to training while the evaluated weights are still in place: a method that
                # merged them for inference (HYPIR fuses its LoRA) must unmerge those, not the
                # live ones the swap restores
                self.method.train(True)
            s = out.summary
            result = {"dataset": self._bench.name, "images": s["images"], "psnr": s["psnr"], "ssim": s["ssim"], "ema": self.ema is not None}
            if "sam" in s:
                result["sam"] = s["sam"]
            self.metrics.write({"step": self.step, "validation": result})
            self.progress.note(f"step {self.step}: {self._bench.name} PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f}")
        self.accelerator.wait_for_everyone()
        return result

    # ---------------------------------------------------------------- export
    def export(self, out: Path) -> tuple[Path, str]:
        context = self.ema.swapped(self.method.averaged_state()) if self.ema is not None else contextlib.nullcontext()
        with context:
            return _write_release(self.method, self.recipe, out, steps=self.step, trained_on=self.trained_on, name=self.name)

    # ---------------------------------------------------------------- the loop
    def run(self, *, resume: str | Path | None, stop_at: int | None, export: Path | None) -> TrainResult:
        recipe, acc = self.recipe, self.accelerator
        with warnings.catch_warnings(record=True) as skipped:
            warnings.simplefilter("always")
            resume_from = resolve_resume(resume, self.run_dir)
        self._prepare_run_dir(resume_from, resuming=resume is not None)
        self._build()
        if resume_from is not None:
            state, _ = load_checkpoint(resume_from)
            try:
                self.load_state_dict(state)
            except (KeyError, ValueError, RuntimeError) as err:
                raise IrcError(f"cannot resume from {resume_from}: {err}") from None
            self.last_checkpoint = resume_from if resume_from.parent == self.run_dir / CHECKPOINTS else None
        self._broadcast_weights()
        own_history = resume_from is not None and resume_from.parent == self.run_dir / CHECKPOINTS
        self.metrics = Metrics(self.run_dir, enabled=self.main, resume_step=self.step if own_history else None, quiet=self.quiet)
        target = recipe.steps if stop_at is None else min(recipe.steps, int(stop_at))
        self.progress = Progress(target, self.step, enabled=self.main and not self.quiet)
        for warning in skipped:  # a skipped (corrupt) checkpoint is said even with --quiet
            if self.main:
                print(f"warning: {warning.message}", file=sys.stderr, flush=True)
        per_step = recipe.batch * recipe.grad_accum * self.world
        params = {g: sum(p.numel() for p in ps) for g, ps in self.groups.items()}
        self.progress.note(
            f"irc train: {recipe.method} ({', '.join(f'{g}: {n:,} parameters' for g, n in params.items())}) on {self.trained_on}, "
            f"{per_step} samples per step, run directory {self.run_dir}"
            + (f", resuming at step {self.step} from {resume_from}" if resume_from is not None else "")
        )
        if resume is not None and resume_from is None:
            self.progress.note("no checkpoint to resume from: starting at step 0")
        if resume_from is not None and self.recipe_changes:
            self.progress.note(
                "the recipe changed since the last session: " + ", ".join(self.recipe_changes[:8])
                + (" ..." if len(self.recipe_changes) > 8 else "")
                + " (learning rates and optimiser settings come from the checkpoint)"
            )
        self._open_validation()

        status, exit_code, message = "finished", 0, ""
        with Signals() as signals:
            self._start_data()
            log_sums: dict[str, float] = {}
            log_count = 0
            log_start, log_step = time.perf_counter(), self.step
            session_start, session_step = log_start, self.step
            while self.step < target:
                finite, losses, norms = self._train_step()
                self.step += 1
                self.samples += per_step
                if finite:
                    self.nonfinite_run = 0
                    if self.ema is not None:
                        self.ema.update(self.method.averaged_state(), self.step)
                    for g, v in losses.items():
                        log_sums[g] = log_sums.get(g, 0.0) + v
                    log_count += 1
                else:
                    self.nonfinite_total += 1
                    self.nonfinite_run += 1
                    where = "gradient" if norms else "loss"
                    self.metrics.write({
                        "step": self.step, "event": "nonfinite", "where": where, "nonfinite": self.nonfinite_total,
                        "loss": {g: v if math.isfinite(v) else str(v) for g, v in losses.items()},
                        **({"grad_norm": {g: v if math.isfinite(v) else str(v) for g, v in norms.items()}} if norms else {}),
                    })  # fmt: skip
                    self.progress.note(
                        f"step {self.step}: non-finite {where} ({format_losses(norms or losses)}), step skipped ({self.nonfinite_total} so far)"
                    )
                    if self.nonfinite_run >= recipe.max_nonfinite:
                        checkpoint = self.save_checkpoint("nonfinite")
                        raise TrainingAborted(
                            f"training stopped at step {self.step}: {self.nonfinite_run} steps in a row had a non-finite {where} "
                            f"({format_losses(norms or losses)}); checkpoint {checkpoint} holds the last good weights. Lower the learning "
                            f"rate or set clip_grad, then continue with --resume auto (max_nonfinite = {recipe.max_nonfinite})"
                        )
                elapsed = time.perf_counter() - session_start
                rate = (self.step - session_step) / elapsed if elapsed > 0 else 0.0
                self.progress.update(self.step, format_losses(losses), rate)
                if self.step % recipe.log_every == 0 or self.step == target:
                    self._log(log_sums, log_count, log_start, log_step, norms, target, rate)
                    log_sums, log_count = {}, 0
                    log_start, log_step = time.perf_counter(), self.step
                if self.step % recipe.validation.every == 0 or self.step == recipe.steps:
                    self.validate()
                if self.step % recipe.checkpoint.every == 0:
                    self.save_checkpoint("every")
                received = self._all_max_int(signals.received or 0)
                if received and self.step < target:
                    checkpoint = self.save_checkpoint("signal")
                    name = signal.Signals(received).name
                    status, exit_code = "interrupted", 128 + received
                    message = f"{name} at step {self.step}: checkpoint {checkpoint}; continue with --resume auto"
                    break
            if status == "finished":
                self.save_checkpoint("final" if target == recipe.steps else "stop_at")
                if target < recipe.steps:
                    status = "stopped"
                    message = f"stopped at step {self.step} of {recipe.steps} (--stop-at); continue with --resume auto"
        self.progress.close()

        result = TrainResult(
            status=status, step=self.step, exit_code=exit_code, run_dir=self.run_dir, checkpoint=self.last_checkpoint,
            nonfinite=self.nonfinite_total, method=self.method, ema=self.ema, main_process=self.main, message=message,
        )  # fmt: skip
        out = export if export is not None else (Path(recipe.export.path) if recipe.export.path and status == "finished" else None)
        if out is not None and status != "interrupted":
            if self.main:
                result.export, result.sha256 = self.export(Path(out))
            acc.wait_for_everyone()
        return result

    def _log(self, sums: dict[str, float], count: int, start: float, start_step: int, norms: dict[str, float], target: int, rate: float) -> None:
        groups = list(sums)
        means = self._all_mean([sums[g] / max(1, count) for g in groups])
        steps = max(1, self.step - start_step)
        seconds = (time.perf_counter() - start) / steps
        data = self.data_seconds / steps
        self.data_seconds = 0.0
        record: dict[str, Any] = {
            "step": self.step,
            "loss": dict(zip(groups, means)),
            "lr": {g: s.get_last_lr()[0] for g, s in self.schedulers.items()},
            "seconds_per_step": round(seconds, 6),
            "samples_per_second": round(self.recipe.batch * self.recipe.grad_accum * self.world / seconds, 3) if seconds > 0 else None,
            "data_seconds_per_step": round(data, 6),
            "flops_per_step": self.step_flops,
            # the model's matmul / convolution work per second of step time (per process)
            "gflop_per_s": round(self.step_flops / seconds / 1e9, 3) if self.step_flops and seconds > 0 else None,
            "samples": self.samples,
            "epoch": self.samples // self.epoch_size,
            "nonfinite": self.nonfinite_total,
            "time": now(),
        }
        if norms:  # of the last step before the record
            record["grad_norm"] = {g: v if math.isfinite(v) else str(v) for g, v in norms.items()}
        if self.main:
            self.metrics.write(record)
            eta = (target - self.step) / rate if rate > 0 else 0.0
            lr = " ".join(f"{g}={v:.3g}" for g, v in record["lr"].items())
            self.progress.line(
                f"step {self.step}/{target}  loss {format_losses(record['loss'])}  lr {lr}  {rate:.2f} it/s"
                + (f"  {record['gflop_per_s']:.0f} GFLOP/s" if record["gflop_per_s"] else "")
                + (f"  data {100 * data / seconds:.0f}%" if seconds > 0 else "")
                + f"  eta {eta_text(eta)}"
                + (f"  non-finite {self.nonfinite_total}" if self.nonfinite_total else "")
            )

    def close(self) -> None:
        self._loader_iter = None  # shuts the workers down
        if self.progress is not None:
            self.progress.close()
        if self.metrics is not None:
            self.metrics.close()
        from accelerate.state import AcceleratorState, GradientState

        if self.world > 1:
            with contextlib.suppress(Exception):
                self.accelerator.end_training()
        else:
            # Let a later train() in this process choose another precision or device.
            AcceleratorState._reset_state(True)
            GradientState._reset_state()


def train(
    recipe: Recipe,
    run_dir: str | Path,
    *,
    resume: str | Path | None = None,
    stop_at: int | None = None,
    device: str = "auto",
    export: str | Path | None = None,
    quiet: bool = False,
    name: str | None = None,
) -> TrainResult:
    """Train ``recipe`` in ``run_dir`` (see the module docstring for what the loop does).

    Args:
        recipe: a checked recipe (:func:`irc.recipes.load_recipe`).
        run_dir: where checkpoints, ``metrics.jsonl``, TensorBoard logs and
            ``resolved_recipe.toml`` go. A directory that already holds checkpoints is only
            used with ``resume``.
        resume: ``"auto"`` (the latest checkpoint of ``run_dir``, or a fresh start when there is
            none), a checkpoint folder, or another run's directory (its latest checkpoint).
        stop_at: stop after this step with a checkpoint (a session of a longer run; the schedule
            still spans ``recipe.steps``).
        device: ``auto``, ``cpu`` or ``cuda`` (processes and GPUs come from the launcher).
        export: write release weights (EMA if enabled) here at the end.
        quiet: no progress bar or log lines on stderr.
        name: the weights' manifest name (metadata).

    Raises:
        UsageError: the recipe does not fit the method, the run directory holds another run, ...
        TrainingAborted: ``max_nonfinite`` consecutive non-finite losses (a checkpoint is saved).
        IrcError: unwritable run directory, full disk, missing data.
    """
    trainer = _Trainer(recipe, Path(run_dir), device=device, quiet=quiet, name=name)
    try:
        return trainer.run(resume=resume, stop_at=stop_at, export=Path(export) if export is not None else None)
    finally:
        trainer.close()



# --------------------------------------------------------------------------------------------
# export from a run directory
# --------------------------------------------------------------------------------------------


def export_run(run_dir: str | Path, out: str | Path, *, checkpoint: str | Path | None = None, ema: bool = True, name: str | None = None) -> tuple[Path, str]:
    """Write release weights from a run's checkpoint (no training).

    Args:
        run_dir: a run directory (holding ``resolved_recipe.toml`` and checkpoints).
        out: the ``.safetensors`` file to write.
        checkpoint: a checkpoint folder (default: the latest of ``run_dir``).
        ema: use the EMA weights when the run kept them.
        name: the weights' manifest name (default: the recipe's ``export.name``, else the run
            directory's name).

    Returns:
        ``(path, sha256)``.
    """
    from irc.methods import get_method

    run_dir = Path(run_dir)
    recipe_path = run_dir / RESOLVED_RECIPE
    if not recipe_path.is_file():
        raise UsageError(f"{run_dir} is not a run directory (no {RESOLVED_RECIPE})")
    recipe = load_recipe(recipe_path)
    ckpt = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    if ckpt is None:
        raise UsageError(f"{run_dir}: no complete checkpoint to export")
    marker = read_marker(ckpt)
    if marker.get("format") is None and (ckpt / LEGACY_STATE).is_file():
        state = load_legacy_weights(ckpt)  # an accelerate-era run: tensors only, never arbitrary objects
        state["weights"] = state.get("network")
    else:
        state, marker = load_checkpoint(ckpt)
    method = get_method(recipe.method).from_config(recipe.config, device="cpu")
    method.load_trainable_state(state["weights"])
    if ema and state.get("ema"):
        live = method.averaged_state()
        shadow = state["ema"]["shadow"]
        if set(shadow) != set(live):
            raise IrcError(f"{ckpt}: the EMA does not cover this method's averaged components")
        with torch.no_grad():
            for key, value in shadow.items():
                live[key].copy_(value)
    name = name or recipe.export.name or run_dir.name
    return _write_release(method, recipe, Path(out), steps=int(marker["step"]), trained_on=str(marker.get("trained_on", "")), name=name)



# --------------------------------------------------------------------------------------------
# CLI glue
# --------------------------------------------------------------------------------------------


def run_train_command(
    *,
    recipe: Path | None,
    sets: list[str],
    run_dir: Path | None,
    resume: str | None,
    steps: int | None,
    stop_at: int | None,
    device: str,
    export: Path | None,
    export_only: bool,
    quiet: bool,
) -> int:
    """``irc train``: returns the exit code (results on stdout, logs on stderr)."""
    from irc.config import parse_set_options
    from irc.weights import manifest_snippet

    if export is not None and export.suffix != ".safetensors":
        raise UsageError(f"--export {export}: weights are written as .safetensors")
    if export_only:
        if export is None:
            raise UsageError("--export-only needs --export FILE.safetensors")
        directory = run_dir or (Path("runs") / recipe.stem if recipe is not None else None)
        if directory is None:
            raise UsageError("--export-only needs --run-dir (or the recipe whose default run directory to use)")
        checkpoint = None if resume in (None, "auto") else resolve_resume(resume, directory, verify=False)
        path, sha = export_run(directory, export, checkpoint=checkpoint)
        resolved = load_recipe(directory / RESOLVED_RECIPE)
        print(f"exported {path}\nsha256 {sha}\n\n{manifest_snippet(resolved.export.name or directory.name, resolved.method, path, sha)}")
        return 0
    if recipe is None:
        raise UsageError("give a recipe file: irc train RECIPE.toml (see recipes/README.md)")
    overrides = parse_set_options(sets)
    if steps is not None:
        overrides["steps"] = str(steps)
    loaded = load_recipe(recipe, overrides)
    directory = run_dir or Path("runs") / recipe.stem
    name = loaded.export.name or recipe.stem
    result = train(loaded, directory, resume=resume, stop_at=stop_at, device=device, export=export, quiet=quiet, name=name)
    if result.main_process:
        if result.message:  # an interruption or a stop is said even with --quiet
            print(result.message, file=sys.stderr)
        elif not quiet:
            print(f"finished {result.step} steps; checkpoint {result.checkpoint}", file=sys.stderr)
        if result.export is not None:
            print(f"exported {result.export}\nsha256 {result.sha256}\n\n{manifest_snippet(name, loaded.method, result.export, result.sha256)}")
    return result.exit_code

