"""Multi-task degradation mixtures for all-in-one restoration (MiOIR 7 tasks, AirNet 3 tasks).

A :class:`TaskMixture` maps task names to :class:`~irc.operators.degradation.Degradation`
objects. ``sample(rng)`` draws a task and its params as ``{"task": name, "params": {...}}``
(plain, JSON-able); ``apply(x, sample)`` replays it deterministically. ``fixed_params(task,
index, seed)`` gives the per-image params of a fixed evaluation set.

MiOIR protocol (Kong et al. 2024, "Towards Effective Multiple-in-One Image Restoration: A
Sequential and Prompt Learning Strategy", arXiv 2401.03379; ranges from METHODS.md §4.3):

======  ===============================================================
sr      MATLAB-bicubic x1/4 then bicubic back up (same size)
blur    isotropic Gaussian, odd kernel size 7-21, sigma [1, 3]
noise   Gaussian, sigma [15, 50] (0-255 scale), colour noise
jpeg    quality [30, 70]
rain    streaks: count 50-100 (per 300x300), length 20-40, angle ±45°, width {3, ..., 11}
haze    I = J t + A (1 - t), t = exp(-beta d), A [0.8, 1], beta [0.5, 2.5]
dark    gamma [1, 3]
======  ===============================================================

MiOIR generated its LQ images offline and stored them as 8-bit PNGs, so mixtures round their
output to 8 bits by default (``quantize=True``). Haze uses a depth *proxy*
(:func:`~irc.operators.mioir.haze_depth`) because MiOIR's depth maps are not available.

The 3-task mixture (AirNet/PromptIR protocol) uses noise with sigma in {15, 25, 50}; its rain
and haze are synthetic stand-ins for Rain100L and RESIDE, which are real datasets there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from irc.operators.blur_kernels import KernelSampler
from irc.operators.degradation import Degradation
from irc.operators.filtering import Blur
from irc.operators.jpeg import JPEG
from irc.operators.mioir import Haze, LowLight, Rain, SRDegradation
from irc.operators.noise import GaussianNoise
from irc.operators.pixels import quantize_8bit
from irc.operators.seeding import _probs

__all__ = ["TASKS", "TaskMixture", "mio_seven_task_mixture", "three_task_mixture"]

#: MiOIR's seven tasks, in the order of its tables.
TASKS: tuple[str, ...] = ("sr", "blur", "noise", "jpeg", "rain", "haze", "dark")


class TaskMixture:
    """A named set of degradations, one per task, drawn with given probabilities.

    Args:
        degradations: ``{task: Degradation}``; insertion order defines :attr:`tasks`.
        probs: task probabilities (normalised); default uniform.
        quantize: round outputs to the 8-bit grid (as stored LQ images are; default True).
    """

    def __init__(
        self, degradations: Mapping[str, Degradation], probs: Sequence[float] | None = None, quantize: bool = True
    ) -> None:
        if not degradations:
            raise ValueError("TaskMixture needs at least one task")
        self._degradations = dict(degradations)
        n = len(self._degradations)
        self.probs = _probs([1.0] * n if probs is None else probs, n, "probs")
        self.quantize = bool(quantize)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Task names, in order."""
        return tuple(self._degradations)

    def degradation(self, task: str) -> Degradation:
        """The degradation of ``task`` (``KeyError`` naming the valid tasks otherwise)."""
        try:
            return self._degradations[task]
        except KeyError:
            raise KeyError(f"unknown task {task!r}; expected one of {self.tasks}") from None

    def sample(self, rng: np.random.Generator, task: str | None = None) -> dict[str, Any]:
        """Draw ``{"task": name, "params": {...}}``; ``task`` fixes the task and draws only params."""
        if task is None:
            task = self.tasks[int(rng.choice(len(self.tasks), p=self.probs))]
        return {"task": task, "params": self.degradation(task).sample(rng)}

    def label(self, sample: Mapping[str, Any]) -> str:
        """The task label a training sample carries (its task here; see :class:`PhotoMixture`)."""
        return str(sample["task"])

    def target(self, x: Tensor, sample: Mapping[str, Any]) -> Tensor:
        """The ground truth of a sample drawn for the clean image ``x``: ``x`` itself here
        (:class:`~irc.operators.photo.PhotoMixture` makes some samples grey)."""
        return x

    def apply(self, x: Tensor, sample: Mapping[str, Any]) -> Tensor:
        """Degrade ``x`` (``(B, C, H, W)`` in [0, 1]) as described by ``sample``; deterministic."""
        y = self.degradation(sample["task"]).apply(x, sample["params"])
        return quantize_8bit(y.clamp(0.0, 1.0)) if self.quantize else y

    def __call__(self, x: Tensor, rng: np.random.Generator) -> tuple[Tensor, dict[str, Any]]:
        """Sample and apply: returns ``(lq, sample)``."""
        s = self.sample(rng)
        return self.apply(x, s), s

    def fixed_params(self, task: str, index: int, seed: int = 0) -> dict[str, Any]:
        """Deterministic params of image ``index`` of a fixed evaluation set for ``task``.

        The draws come from ``numpy.random.default_rng(SeedSequence([seed, index]))``, so each
        image's params depend only on ``(task, index, seed)``: reproducible across runs and
        machines, and independent of how many images are evaluated or in which order.

        Returns:
            ``{"task": task, "params": {...}}``, ready for :meth:`apply`.
        """
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
        return self.sample(rng, task=task)

    def __repr__(self) -> str:
        return f"TaskMixture(tasks={self.tasks}, probs={self.probs}, quantize={self.quantize})"


def mio_seven_task_mixture(probs: Sequence[float] | None = None, quantize: bool = True) -> TaskMixture:
    """MiOIR's 7-task mixture (``TASKS``) with the ranges in the module docstring."""
    blur_kernels = KernelSampler(
        kernel_sizes=tuple(range(7, 22, 2)),
        kernel_types=("iso",),
        kernel_probs=(1.0,),
        sigma_range=(1.0, 3.0),
        sinc_prob=0.0,
    )
    degradations: dict[str, Degradation] = {
        "sr": SRDegradation(scale=4),
        "blur": Blur(blur_kernels),
        "noise": GaussianNoise(sigma_range=(15.0, 50.0), gray_prob=0.0),
        "jpeg": JPEG(quality_range=(30, 70)),
        "rain": Rain(count_range=(50, 100), length_range=(20, 40), angle_range=(-45.0, 45.0), widths=(3, 5, 7, 9, 11)),
        "haze": Haze(A_range=(0.8, 1.0), beta_range=(0.5, 2.5)),
        "dark": LowLight(gamma_range=(1.0, 3.0)),
    }
    return TaskMixture(degradations, probs=probs, quantize=quantize)


def three_task_mixture(probs: Sequence[float] | None = None, quantize: bool = True) -> TaskMixture:
    """The 3-task mixture ("noise", "rain", "haze"): noise sigma drawn from {15, 25, 50}.

    The AirNet labels (``denoise_15/25/50``, ``derain``, ``dehaze``) follow from the task and the
    ``sigma`` in the params.
    """
    degradations: dict[str, Degradation] = {
        "noise": GaussianNoise(sigma_choices=(15.0, 25.0, 50.0), gray_prob=0.0),
        "rain": Rain(),
        "haze": Haze(),
    }
    return TaskMixture(degradations, probs=probs, quantize=quantize)
