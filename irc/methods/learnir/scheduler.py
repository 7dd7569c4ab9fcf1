"""LearnIR's residual diffusion schedule (Resfusion's "LinearPro", METHODS.md §1.2), diffusers-style.

The forward process on images in [-1, 1] with residual ``R = y - x0`` (``y`` the degraded image):

    x_t = sqrt(abar_t) x0 + (1 - sqrt(abar_t)) R + sqrt(1 - abar_t) eps

Betas are ``linspace(1e-4, 0.02) * 1000 / T``. The *acceleration point* is the first step whose
``sqrt(abar)`` is at most 0.5: when it falls more than 0.01 below 0.5, the schedule is cut there
and that step is forced to ``sqrt(abar) = 0.5`` exactly, its alpha being ``0.25 / abar`` of the
step before (so its beta is not the linspace value); otherwise all steps are kept and sampling
starts at that step as it is (nkicsl/Resfusion ``variance_scheduler/linear_pro.py``, read, not
copied). At a forced point ``x_T = 0.5 y + sqrt(0.75) eps``: sampling starts from the noised
degraded image. T = 12 gives sqrt(abar) = 0.9958, 0.9132, 0.7586, 0.5572, 0.5: five sampling
steps; T = 100 keeps its 37th step, sqrt(abar) = 0.4938, as the start.

The network predicts the *resnoise* ``eps_res = eps + (1 - sqrt(alpha_t)) sqrt(1 - abar_t) /
beta_t * R``, so that the reverse step is DDPM's:
``x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps_res) / sqrt(alpha_t) + sqrt(beta~_t) z``.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import Tensor

__all__ = ["ResidualScheduler"]


class ResidualScheduler(SchedulerMixin, ConfigMixin):
    """The schedule and its closed forms; step indices ``t`` run from 0 (cleanest) up to
    :attr:`start` (the acceleration point, where sampling begins).

    Args:
        num_train_timesteps: ``T`` of the linspace schedule (12 in Resfusion's ISTD runs).
    """

    config_name = "scheduler_config.json"

    @register_to_config
    def __init__(self, num_train_timesteps: int = 12):
        T = int(num_train_timesteps)
        if T < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {T}")
        scale = 1000.0 / T
        betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, 0)
        sqrt_abar = abar.sqrt()
        below = (sqrt_abar <= 0.5).nonzero()
        idx = int(below[0]) if len(below) else T - 1  # the first step at or below 0.5
        if 0.5 - float(sqrt_abar[idx]) > 0.01 and idx > 0:
            abar = torch.cat([abar[:idx], torch.tensor([0.25], dtype=torch.float64)])
            alphas = torch.cat([alphas[:idx], torch.tensor([0.25], dtype=torch.float64) / abar[idx - 1]])
            betas = 1.0 - alphas
        self.betas, self.alphas, self.alphas_cumprod = betas, alphas, abar
        previous = torch.roll(abar, 1)
        previous[0] = previous[1] if len(previous) > 1 else previous[0]  # unused: no noise at t = 0
        self.posterior_variance = (1.0 - previous) / (1.0 - abar) * betas
        self.start = idx
        self.forced = len(abar) == idx + 1 and bool(abs(float(abar[idx]) - 0.25) < 1e-12)

    @property
    def sampling_steps(self) -> int:
        """Sampling steps from the acceleration point down to 0 (5 for T = 12)."""
        return self.start + 1

    def _at(self, values: Tensor, t: Tensor | int, like: Tensor) -> Tensor:
        v = values[torch.as_tensor(t, dtype=torch.long).cpu()].to(like.device, like.dtype)
        return v.reshape(-1, *[1] * (like.dim() - 1)) if v.dim() else v

    def add_noise(self, x0: Tensor, y: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        """``x_t`` of the forward process (closed form) for clean ``x0`` and degraded ``y``."""
        s = self._at(self.alphas_cumprod, t, x0).sqrt()
        return s * x0 + (1 - s) * (y - x0) + (1 - s * s).sqrt() * noise

    def resnoise(self, x0: Tensor, y: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        """The training target ``eps_res`` (module docstring)."""
        a, abar, beta = (self._at(v, t, x0) for v in (self.alphas, self.alphas_cumprod, self.betas))
        return noise + (1 - a.sqrt()) * (1 - abar).sqrt() / beta * (y - x0)

    def step_mean(self, x_t: Tensor, eps_res: Tensor, t: int) -> Tensor:
        """The reverse step's mean ``(x_t - beta_t / sqrt(1 - abar_t) eps_res) / sqrt(alpha_t)``."""
        a, abar, beta = float(self.alphas[t]), float(self.alphas_cumprod[t]), float(self.betas[t])
        return (x_t - beta / math.sqrt(1.0 - abar) * eps_res) / math.sqrt(a)

    def mean_gap(self, eps_pred: Tensor, eps_true: Tensor, t: Tensor | int) -> Tensor:
        """Predicted minus true next-step mean, ``m(eps_pred) - m(eps_true) = beta_t / (sqrt(alpha_t)
        sqrt(1 - abar_t)) (eps_true - eps_pred)``: the closed-form target of the DPSC correction
        (METHODS.md §1.3 item 5, whose last line has the factor's sign flipped: the mean falls as
        the predicted noise grows; tests/test_learnir.py checks this against the posterior)."""
        a, abar, beta = (self._at(v, t, eps_pred) for v in (self.alphas, self.alphas_cumprod, self.betas))
        return beta / (a.sqrt() * (1 - abar).sqrt()) * (eps_true - eps_pred)

    def noise_scale(self, t: int) -> float:
        """``C = sqrt(beta~_t)``; 0 at the last step."""
        return 0.0 if t == 0 else math.sqrt(float(self.posterior_variance[t]))

    def timestep_value(self, t: Tensor | int) -> Tensor:
        """The value the networks are told for step ``t``: spread over 0-1000 whatever ``T``."""
        return torch.as_tensor(t, dtype=torch.float32) * (1000.0 / self.config.num_train_timesteps)
