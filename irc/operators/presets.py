"""The degradations a training recipe names (``data.degradation``), as one interface.

:func:`training_degradation` turns the parsed recipe value into a callable
``(clean (1, C, H, W), rng) -> (input, target, task label or None)``; ``irc train`` calls it per
sample with a generator keyed by the sample's number, so a sample is degraded the same way in any
process, batch or resumed run.

=================  ==========================================================================
``none``           the input is the clean image (methods that measure it themselves: CS, CASSI)
``noise:A-B``      unclipped Gaussian noise, sigma uniform in [A, B] (0-255 units), as DnCNN
                   trains and as the set12 / bsd68 protocols test
``jpeg:A-B``       a libjpeg round trip at a whole quality in [A, B]
``bicubic:s``      MATLAB-bicubic downscaling by s, rounded to 8 bits (stored LR files)
``mixture:NAME``   a task per sample, its label returned: ``mio7`` and ``three``
                   (:mod:`irc.operators.mixtures`), ``photo`` (:mod:`irc.operators.photo`)
``task:NAME``      one task on every sample, labelled with it: a MiOIR task (``haze``, ``rain``,
                   ``dark``, ...; 8-bit output) or ``shadow`` (:mod:`irc.operators.shadow`)
``realesrgan``     the second-order pipeline; the target is the sharpened ground truth
=================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import Tensor

__all__ = ["TrainingDegradation", "mixture_tasks", "training_degradation"]

TrainingDegradation = Callable[[Tensor, np.random.Generator], tuple[Tensor, Tensor, "str | None"]]


def _mixture(name: str, probs: tuple[float, ...] = (), strong_jpeg: float = 0.0, grey_prob: float | None = None):
    from irc.operators.mixtures import mio_seven_task_mixture, three_task_mixture
    from irc.operators.photo import photo_mixture

    if name == "photo":
        return photo_mixture(probs or None, strong_jpeg=strong_jpeg, **({} if grey_prob is None else {"grey_prob": grey_prob}))
    return {"mio7": mio_seven_task_mixture, "three": three_task_mixture}[name](**({"probs": probs} if probs else {}))


def mixture_tasks(name: str) -> tuple[str, ...]:
    """The task names of ``mixture:NAME``, in order (what ``data.task_probs`` lists shares of)."""
    return _mixture(name).tasks


def training_degradation(
    kind: str,
    low: float = 0.0,
    high: float = 0.0,
    name: str = "",
    *,
    task_probs: tuple[float, ...] = (),
    strong_jpeg: float = 0.0,
    grey_prob: float | None = None,
) -> TrainingDegradation:
    """The per-sample degradation of a recipe (see the module table).

    ``task_probs``, ``strong_jpeg`` and ``grey_prob`` adjust a mixture (see ``irc.recipes.DataSpec``).
    """
    if kind == "none":
        return lambda x, rng: (x, x, None)
    if kind == "bicubic":
        from irc.operators.pixels import quantize_8bit
        from irc.operators.resize import imresize

        return lambda x, rng: (quantize_8bit(imresize(x, scale=1.0 / low).clamp(0.0, 1.0)), x, None)
    if kind in ("noise", "jpeg"):
        from irc.operators.jpeg import JPEG
        from irc.operators.noise import GaussianNoise

        op = GaussianNoise(sigma_range=(low, high), gray_prob=0.0, clip=False) if kind == "noise" else JPEG(quality_range=(int(low), int(high)))
        return lambda x, rng: (op.apply(x, op.sample(rng)), x, None)
    if kind == "mixture":
        mixture = _mixture(name, tuple(task_probs), strong_jpeg, grey_prob)

        def mixed(x: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor, str]:
            params = mixture.sample(rng)
            return mixture.apply(x, params), mixture.target(x, params), mixture.label(params)

        return mixed
    if kind == "task":
        from irc.operators.mixtures import TaskMixture, mio_seven_task_mixture
        from irc.operators.shadow import Shadow

        single = TaskMixture({"shadow": Shadow()}) if name == "shadow" else mio_seven_task_mixture()

        def one_task(x: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor, str]:
            params = single.sample(rng, task=name)
            return single.apply(x, params), x, str(name)

        return one_task
    if kind == "realesrgan":
        from irc.operators.realesrgan import RealESRGANDegradation

        pipeline = RealESRGANDegradation()

        def second_order(x: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor, None]:
            target, lq, _ = pipeline.pair(x, rng)
            return lq, target, None

        return second_order
    raise ValueError(f"unknown training degradation {kind!r}")
