"""Tiny trainable methods for the training-loop tests (not collected: no ``test_`` prefix).

Registered in-process by monkeypatching ``irc.methods.REGISTRY``, and in subprocesses through
``IRC_EXTRA_METHODS=tiny=tiny_methods:TinyRestorer`` with this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from irc.methods.base import Method, TrainBatch

EXTRA_METHODS = "tiny=tiny_methods:TinyRestorer,toygan=tiny_methods:ToyGAN"


class TinyNet(nn.Module):
    """Two 3x3 convolutions with a residual, applied to each channel alone (1 or 3 channels)."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.head = nn.Conv2d(1, width, 3, padding=1)
        self.tail = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = x.reshape(b * c, 1, h, w)
        y = y + self.tail(F.relu(self.head(y)))
        return y.reshape(b, c, h, w)


@dataclass(frozen=True)
class TinyConfig:
    width: int = 4
    nan_steps: tuple[int, ...] = ()
    # a finite loss whose gradient is NaN (0 * d sqrt(u) / du at u = 0)
    bad_grad_steps: tuple[int, ...] = ()
    sleep: float = 0.0
    jitter: float = 0.0


class TinyRestorer(Method):
    """A one-group restorer; ``nan_steps`` make the loss NaN, ``jitter`` uses torch's RNG."""

    name = "tiny"
    summary = "test-only tiny residual CNN"
    Config = TinyConfig
    needs_weights = False

    def build_network(self) -> nn.Module:
        return TinyNet(self.config.width)

    def forward(self, x: torch.Tensor, **knobs) -> torch.Tensor:
        return self.network(x).clamp(0, 1)

    def training_step(self, batch: TrainBatch, step: int) -> dict[str, torch.Tensor]:
        if self.config.sleep:
            time.sleep(self.config.sleep)
        x = batch.lq
        if self.config.jitter:
            x = x + self.config.jitter * torch.randn_like(x)
        loss = F.l1_loss(self.network(x), batch.gt)
        if step in self.config.nan_steps:
            loss = loss * float("nan")
        if step in self.config.bad_grad_steps:
            weight = self.network.head.weight
            loss = loss + 0.0 * torch.sqrt((weight - weight.detach()).abs().sum())
        return {"main": loss}


class Critic(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, stride=2, padding=1)
        self.out = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return self.out(F.leaky_relu(self.conv(x.reshape(b * c, 1, h, w)), 0.2)).mean(dim=(1, 2, 3))


@dataclass(frozen=True)
class ToyGANConfig:
    width: int = 4
    # d's loss is 0 * D(gt): zero gradients for d, so d only moves if g's loss leaked into it.
    zero_d_loss: bool = False
    d_from_step: int = 0


class ToyGAN(Method):
    """Generator ``g`` and discriminator ``d`` with their own loss groups (Real-ESRGAN order)."""

    name = "toygan"
    summary = "test-only two-group GAN"
    Config = ToyGANConfig
    needs_weights = False
    instances: ClassVar[list[ToyGAN]] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        ToyGAN.instances.append(self)

    def build_network(self) -> nn.Module:
        return nn.ModuleDict({"g": TinyNet(self.config.width), "d": Critic(self.config.width)})

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"g": list(self.network["g"].parameters()), "d": list(self.network["d"].parameters())}

    def forward(self, x: torch.Tensor, **knobs) -> torch.Tensor:
        return self.network["g"](x).clamp(0, 1)

    def training_step(self, batch: TrainBatch, step: int) -> dict[str, torch.Tensor]:
        g, d = self.network["g"], self.network["d"]
        fake = g(batch.lq)
        losses = {"g": F.l1_loss(fake, batch.gt) + 0.1 * F.softplus(-d(fake)).mean()}
        if step >= self.config.d_from_step:
            if self.config.zero_d_loss:
                losses["d"] = 0.0 * d(batch.gt).mean()
            else:
                losses["d"] = F.softplus(-d(batch.gt)).mean() + F.softplus(d(fake.detach())).mean()
        return losses
