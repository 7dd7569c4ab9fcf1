"""The :class:`Degradation` interface and its generic combinators (Identity, Compose, OneOf).

Design (DESIGN.md, "Operators"): a :class:`Degradation` separates *what* is done from *how it
is drawn*:

* ``sample(rng) -> dict``: draws plain, JSON-able parameters (floats, ints, bools, str, lists,
  nested dicts) from a ``numpy.random.Generator``. Any per-pixel randomness (noise, rain streak
  positions, the haze depth field) is represented by an integer ``"seed"``
  (:mod:`irc.operators.seeding`).
* ``apply(x, params) -> Tensor``: a deterministic function of ``x`` and ``params``. The same
  params give bitwise-identical output (on a given device); logged params replay a training
  pair or build a fixed evaluation set.

There is one torch implementation per degradation, usable on CPU or GPU, for training-pair
synthesis and for evaluation alike (no numpy twin). Images follow :mod:`irc.operators.pixels`;
one parameter set applies to the whole batch. The degradations themselves live by kind:
:mod:`~irc.operators.noise`, :mod:`~irc.operators.jpeg`, :mod:`~irc.operators.filtering`
(blur), :mod:`~irc.operators.resampling` and :mod:`~irc.operators.mioir` (haze, rain, low
light, SR).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from irc.operators.pixels import _check_image
from irc.operators.seeding import _probs

__all__ = ["Compose", "Degradation", "Identity", "OneOf"]


class Degradation(ABC):
    """A degradation: deterministic :meth:`apply` given plain params, random :meth:`sample`.

    Subclasses set ``name`` and implement both methods. ``sample`` must return only JSON-able
    values; ``apply(x, sample(rng))`` must be a pure function of ``x`` and the params.
    """

    name: str = "degradation"

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw plain, JSON-able parameters (including an integer ``"seed"`` where needed)."""

    @abstractmethod
    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        """Degrade ``x`` (``(B, C, H, W)`` in [0, 1]) with ``params``; deterministic."""

    def __call__(self, x: Tensor, rng: np.random.Generator) -> tuple[Tensor, dict[str, Any]]:
        """``params = sample(rng)``; returns ``(apply(x, params), params)``."""
        params = self.sample(rng)
        return self.apply(x, params), params

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Identity(Degradation):
    """No degradation (params ``{}``); handy as a mixture entry or a pipeline placeholder."""

    name = "identity"

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        _check_image(x)
        return x.clone()


class Compose(Degradation):
    """Apply degradations in sequence, each with its own probability.

    Params: ``{"steps": [{"name": str, "applied": bool, "params": dict}, ...]}``; every step's
    params are sampled (even when not applied) so the rng consumption, and hence later draws,
    do not depend on the coin flips.

    Args:
        steps: degradations, or ``(degradation, probability)`` pairs (probability defaults to 1).
    """

    name = "compose"

    def __init__(self, steps: Sequence[Degradation | tuple[Degradation, float]]) -> None:
        self.steps: list[tuple[Degradation, float]] = []
        for s in steps:
            d, p = (s, 1.0) if isinstance(s, Degradation) else (s[0], float(s[1]))
            self.steps.append((d, p))

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        out = []
        for d, p in self.steps:
            applied = bool(p >= 1.0 or rng.uniform() < p)
            out.append({"name": d.name, "applied": applied, "params": d.sample(rng)})
        return {"steps": out}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        steps = params["steps"]
        if len(steps) != len(self.steps):
            raise ValueError(f"params have {len(steps)} steps, this Compose has {len(self.steps)}")
        for (d, _), sp in zip(self.steps, steps):
            if sp["applied"]:
                x = d.apply(x, sp["params"])
        return x


class OneOf(Degradation):
    """Apply exactly one of several degradations, chosen with the given probabilities.

    Params: ``{"choice": int, "name": str, "params": dict}``.
    """

    name = "one_of"

    def __init__(self, options: Sequence[Degradation], probs: Sequence[float] | None = None) -> None:
        if not options:
            raise ValueError("OneOf needs at least one option")
        self.options = list(options)
        self.probs = _probs(probs if probs is not None else [1.0] * len(options), len(options), "probs")

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        i = int(rng.choice(len(self.options), p=self.probs)) if len(self.options) > 1 else 0
        return {"choice": i, "name": self.options[i].name, "params": self.options[i].sample(rng)}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        return self.options[int(params["choice"])].apply(x, params["params"])
