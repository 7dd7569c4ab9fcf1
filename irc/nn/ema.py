"""Exponential moving average (EMA) of a module's weights, or of any live state dict.

Hand-written rather than taken from a library: ``torch.optim.swa_utils.AveragedModel`` keeps a
deep copy of the whole module (a second network object to build, move and checkpoint) and
``timm``/``diffusers`` would be a dependency for thirty lines. Here the shadow is a plain dict of
tensors keyed like ``_live(module)``, so it checkpoints as tensors and swaps into the live
module for validation and export without a second network object.

Every floating-point entry of the state dict (parameters and buffers such as BatchNorm running
statistics) is averaged; integer buffers (``num_batches_tracked``) are copied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


def _live(source: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Live tensors (sharing storage with the weights) of a module or a state mapping such as
    :meth:`irc.methods.base.Method.trainable_state`."""
    return source.state_dict() if isinstance(source, nn.Module) else dict(source)


class EMA:
    """Shadow weights ``s <- decay * s + (1 - decay) * w`` of ``module``.

    Args:
        module: the network whose weights are averaged (or its live state mapping, e.g. a
            method's trainable components); the shadow starts as a copy of them,
            on the same device and with the same dtypes.
        decay: averaging factor in ``[0, 1)``.
        every: average every this many steps (other steps leave the shadow alone).
        start: up to and including this step the shadow copies the weights instead of averaging
            (so the random initialisation does not linger in the average).

    Call :meth:`update` after every optimiser step with the number of steps completed.
    """

    def __init__(self, module: nn.Module | Mapping[str, Tensor], decay: float = 0.999, *, every: int = 1, start: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if every < 1 or start < 0:
            raise ValueError(f"EMA every must be >= 1 and start >= 0, got every={every}, start={start}")
        self.decay = float(decay)
        self.every = int(every)
        self.start = int(start)
        self.updates = 0
        self.shadow: dict[str, Tensor] = {k: v.detach().clone() for k, v in _live(module).items()}

    def _pairs(self, module: nn.Module | Mapping[str, Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        live = _live(module)
        if live.keys() != self.shadow.keys():
            missing = sorted(set(self.shadow) ^ set(live))[:5]
            raise RuntimeError(f"EMA and module state differ in keys: {missing}")
        float_s, float_w, other_s, other_w = [], [], [], []
        for key, shadow in self.shadow.items():
            weight = live[key].detach()
            if shadow.is_floating_point():
                float_s.append(shadow)
                float_w.append(weight)
            else:
                other_s.append(shadow)
                other_w.append(weight)
        return float_s, float_w, other_s, other_w

    @torch.no_grad()
    def update(self, module: nn.Module | Mapping[str, Tensor], step: int) -> bool:
        """Fold the current weights of ``module`` into the shadow after optimiser step ``step``.

        Args:
            module: the live network (same structure as at construction).
            step: optimiser steps completed so far (1 after the first step).

        Returns:
            Whether the shadow changed (``False`` on steps skipped by ``every``).
        """
        if step % self.every:
            return False
        float_s, float_w, other_s, other_w = self._pairs(module)
        if step <= self.start:
            for s, w in zip(float_s, float_w):
                s.copy_(w)
        elif float_s:
            torch._foreach_lerp_(float_s, float_w, 1.0 - self.decay)
        for s, w in zip(other_s, other_w):
            s.copy_(w)
        self.updates += 1
        return True

    @torch.no_grad()
    def copy_to(self, module: nn.Module | Mapping[str, Tensor]) -> None:
        """Load the shadow weights into ``module`` (in place, keeping its device and dtypes)."""
        live = _live(module)
        for key, shadow in self.shadow.items():
            live[key].copy_(shadow)

    @contextlib.contextmanager
    def swapped(self, module: nn.Module | Mapping[str, Tensor]) -> Iterator[nn.Module | Mapping[str, Tensor]]:
        """Temporarily give ``module`` the shadow weights; the live weights come back bit for bit."""
        with torch.no_grad():
            backup = {k: v.detach().clone() for k, v in _live(module).items()}
        self.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                live = _live(module)
                for key, value in backup.items():
                    live[key].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers (loads with ``torch.load(weights_only=True)``)."""
        return {"decay": self.decay, "every": self.every, "start": self.start, "updates": self.updates, "shadow": dict(self.shadow)}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the shadow (copied into the existing tensors: device and dtype are kept)."""
        shadow = state["shadow"]
        if shadow.keys() != self.shadow.keys():
            diff = sorted(set(shadow) ^ set(self.shadow))[:5]
            raise RuntimeError(f"EMA state does not fit the module: keys differ {diff}")
        for key, value in shadow.items():
            self.shadow[key].copy_(value)
        self.updates = int(state.get("updates", 0))
