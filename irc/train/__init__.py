"""``irc train``: one training loop for every method, on accelerate.

The method owns its losses (:meth:`Method.training_step` returns ``{group: loss}``); this loop
owns the mechanics: devices and processes (``accelerate.Accelerator``), mixed precision, one
optimiser and learning-rate schedule per loss group, gradient accumulation and clipping, an EMA
of the weights, data, checkpoints and exact resume, validation through the ``irc eval`` engine,
logs, and the failure paths (NaN losses, signals, full disks).

Run it as ``irc train RECIPE.toml`` (one process), ``accelerate launch -m irc train ...`` or
``torchrun --nproc_per_node N -m irc train ...`` (one process per GPU, several nodes alike).

The package: :mod:`~irc.train.loop` (the trainer, export, the CLI glue),
:mod:`~irc.train.data` (the sample stream and the degradation of clean crops),
:mod:`~irc.train.checkpoints` (safe checkpoints and resume), :mod:`~irc.train.telemetry`
(metrics, progress, signals).

Choices, and why:

* **Loss groups.** Each optimiser step zeroes every group's gradients, then for every
  micro-batch back-propagates each group's loss into *that group's parameters only*
  (``backward(inputs=group_params)``): a generator loss that flows through the discriminator
  never leaves gradients on the discriminator, with or without accumulation. All groups step
  after the backward passes, in the order of :meth:`Method.parameter_groups` (Real-ESRGAN's
  order: ``g`` then ``d`` on the same generator output). A group the method does not return at
  a step is not stepped (e.g. a discriminator that starts later); which groups a step returns
  must depend only on the step number.
* **No DDP wrapper.** The method owns its forward and may call sub-networks directly
  (``self.network.g(x)``, ``self.network.d(y)``), which would bypass a
  ``DistributedDataParallel`` wrapper's hooks. Instead each group's gradients are averaged
  across processes with bucketed all-reduces after the backward passes, buffers (BatchNorm
  statistics) are broadcast from rank 0 after each step as DDP does, and the replicas are
  checked to be bit-identical at every checkpoint (``replicas`` records in ``metrics.jsonl``).
  accelerate still provides the process group, the device, autocast and the fp16 loss scaler.
* **Data.** Clean crops come from an :class:`irc.data.folders.ImageFolder` (or a
  :class:`~irc.data.folders.CubeFolder` of hyperspectral cubes) through a ``DataLoader``; the
  degradation is applied on the device. Real pairs (``data.pairs``) follow the clean crops in
  the same stream and keep their own degraded input and task label. Sample number ``q`` of the global
  stream is item ``perm_e[q mod n]`` of epoch ``e = q div n`` (``perm_e`` a permutation seeded
  by ``(seed, e)``), its crop is seeded by ``(seed, e, index)`` (index within its set; real
  pair set ``n`` uses a seed derived from ``(seed, n)``) and its degradation by ``(seed, q)``. Process ``r`` of ``W`` takes samples ``[p + r B, p + (r + 1) B)`` of each
  micro-batch window ``[p, p + W B)``. Nothing depends on worker count or history, so resuming
  is "start the stream at the stored sample count", exactly, even with another worker count.
  The method's own randomness (``torch.rand`` inside ``training_step``) is seeded per
  ``(seed, step, micro-batch, rank)``, so validation or a restart cannot shift it.
* **Checkpoints** (:mod:`irc.train.checkpoints`): tensors and plain data only. The trainable
  components, their EMA and the optimisers' tensors go into one safetensors file, everything
  else (counters, schedules, the optimisers' settings, the loss scaler) into JSON, and a marker
  lists the sha256 of both. Nothing is unpickled when resuming, so a crafted file in a run
  directory cannot run code; a checkpoint whose checksums fail is skipped, with a warning naming
  it, for the previous good one. It is written under a temporary name and renamed when complete,
  so a crash mid-save never leaves a checkpoint that ``--resume auto`` would pick. The RNG needs
  no saving: every random draw is keyed by the seed and the step or sample number.
* **Non-finite losses** (or, without an fp16 loss scaler, which handles its own overflows,
  non-finite gradient norms) skip the whole step (no optimiser step, EMA untouched; the
  schedule and the data advance), are counted and logged; ``max_nonfinite`` consecutive ones
  stop the run with a checkpoint of the last good weights and exit code 1. Gradient norms per
  group are measured every step (``grad_norm`` in the log) and clipped when ``clip_grad`` is set.
* **Signals.** SIGINT / SIGTERM finish the current step, save a checkpoint and exit with
  ``128 + signal`` (130 / 143), so that ``irc train ... && next-step`` does not go on after an
  interrupted run; a second SIGINT stops at once.
"""

from irc.train.checkpoints import CHECKPOINTS, MARKER, latest_checkpoint, list_checkpoints
from irc.train.data import ShardedStream, Synthesizer
from irc.train.loop import RESOLVED_RECIPE, TrainingAborted, TrainResult, export_run, run_train_command, train
from irc.train.telemetry import METRICS

__all__ = [
    "CHECKPOINTS",
    "MARKER",
    "METRICS",
    "RESOLVED_RECIPE",
    "ShardedStream",
    "Synthesizer",
    "TrainResult",
    "TrainingAborted",
    "export_run",
    "latest_checkpoint",
    "list_checkpoints",
    "run_train_command",
    "train",
]
