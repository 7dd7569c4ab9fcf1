"""Random draws of the degradations: parameter samplers and per-image torch generators.

Parameters are drawn from a ``numpy.random.Generator`` (:func:`_uniform`, :func:`_randint`,
:func:`_probs`); any per-pixel randomness (noise, rain streak positions, the haze depth field)
is represented by an integer ``"seed"`` (:func:`_seed`).

Per-pixel randomness: image ``i`` of a batch uses a ``torch.Generator`` on the CPU seeded with
``item_seed(params["seed"], i)`` (a numpy ``SeedSequence`` of ``(seed, i)``); the random tensor
is drawn on the CPU and then moved to ``x``'s device. Hence (a) the random draws are the same
on every device and independent of CUDA's RNG (outputs agree across devices up to the
floating-point rounding of the arithmetic), and (b) image ``i`` of a batch is degraded exactly
as it would be alone with the same params, whatever the batch size (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["item_seed"]

_SEED_HIGH = 2**31  # seeds drawn in [0, 2**31): JSON- and 32-bit friendly


def _uniform(rng: np.random.Generator, rng_range: Sequence[float]) -> float:
    lo, hi = float(rng_range[0]), float(rng_range[1])
    if hi < lo:
        raise ValueError(f"invalid range ({lo}, {hi})")
    return lo if lo == hi else float(rng.uniform(lo, hi))


def _randint(rng: np.random.Generator, rng_range: Sequence[int]) -> int:
    """Integer uniform on the closed range ``[lo, hi]``."""
    lo, hi = int(rng_range[0]), int(rng_range[1])
    if hi < lo:
        raise ValueError(f"invalid range ({lo}, {hi})")
    return int(rng.integers(lo, hi + 1))


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, _SEED_HIGH))


def _probs(p: Sequence[float], n: int, what: str) -> tuple[float, ...]:
    a = np.asarray(p, dtype=np.float64)
    if a.shape != (n,) or np.any(a < 0) or a.sum() <= 0:
        raise ValueError(f"{what}: need {n} non-negative probabilities with a positive sum, got {p!r}")
    return tuple(float(v) for v in a / a.sum())


def item_seed(seed: int, index: int) -> int:
    """Seed of the per-pixel random stream of image ``index`` in a batch (63-bit int).

    Derived with ``numpy.random.SeedSequence([seed, index])`` so that streams of different images
    and of nearby seeds are statistically independent.
    """
    if int(seed) < 0 or int(index) < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def _generator(seed: int, index: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(item_seed(seed, index))
    return g
