"""Stage-indexed LoRA: one frozen base layer, K low-rank adapters, one active per call.

LoRun (Deep LoRA-Unfolding Networks, IEEE TIP 2026, arXiv 2602.18697) shares one base denoiser
across the K stages of an unfolded network and gives every stage ``k`` its own low-rank update
``W_k = W_0 + B_k A_k``. A single forward pass therefore visits all K adapters of the same layer,
one after another, inside one autograd graph.

Why not peft: peft (0.21) expresses several adapters over one base as *named* adapters switched
with ``set_adapter`` on the whole model. Selecting a different adapter for each unfolding stage in
the middle of a forward pass means calling ``set_adapter`` between stages, which also toggles
``requires_grad`` of the adapters (so the inactive stages' adapters stop receiving gradients
when the switch happens inside the graph) and it rewrites the module tree (``base_layer``
wrappers with per-name ``ModuleDict`` s), which makes the Block-K baseline and strict state-dict
loading awkward. What we need is about sixty lines: a wrapper holding ``K`` ``(A_k, B_k)``
pairs with an integer ``stage`` chosen by the caller (:func:`set_stage`).

Conventions (METHODS.md section 2.3, item 4):

* conv: ``A_k`` is a ``k x k`` convolution ``C_in -> r`` with the base layer's stride, padding
  and dilation; ``B_k`` a ``1 x 1`` convolution ``r -> C_out`` (no bias);
* linear: ``A_k`` is ``C_in -> r``, ``B_k`` is ``r -> C_out``;
* rank ``r = ceil(min(C_in, C_out) * gamma / 100)`` (:func:`adaptive_rank`), scale
  ``alpha / r = 1``;
* ``A_k`` Kaiming-uniform (as ``nn.Conv2d`` / ``nn.Linear`` initialise weights), ``B_k = 0``:
  every stage starts exactly equal to the base layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from torch import Tensor, nn

__all__ = ["LoRAConv2d", "LoRALinear", "adaptive_rank", "base_parameters", "lora_modules", "lora_parameters", "set_stage"]


def adaptive_rank(c_in: int, c_out: int, gamma: float = 10.0) -> int:
    """LoRun's adaptive rank ``ceil(min(c_in, c_out) * gamma / 100)`` (at least 1)."""
    return max(1, math.ceil(min(c_in, c_out) * float(gamma) / 100.0 - 1e-9))


class _LoRABase(nn.Module):
    """Shared logic: ``stages`` adapters, the active one chosen by :attr:`stage`."""

    base: nn.Module
    lora_A: nn.ModuleList
    lora_B: nn.ModuleList

    def __init__(self, base: nn.Module, c_in: int, c_out: int, stages: int, gamma: float, alpha: float | None, make_a, make_b) -> None:
        """Hold ``base`` and ``stages`` pairs ``(A_k, B_k)`` built by ``make_a(rank)`` / ``make_b(rank)``.

        A is Kaiming-initialised and B zero-initialised, so every stage starts equal to the base.
        """
        super().__init__()
        self.stage = 0
        self.base = base
        self.rank = adaptive_rank(c_in, c_out, gamma)
        self.scale = 1.0 if alpha is None else float(alpha) / self.rank
        self.lora_A = nn.ModuleList()
        self.lora_B = nn.ModuleList()
        for _ in range(int(stages)):
            a, b = make_a(self.rank), make_b(self.rank)
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
            nn.init.zeros_(b.weight)
            self.lora_A.append(a)
            self.lora_B.append(b)

    @property
    def stages(self) -> int:
        return len(self.lora_A)

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        if self.stages == 0:
            return out
        k = self.stage
        if not 0 <= k < self.stages:
            raise IndexError(f"LoRA stage {k} out of range for {self.stages} adapters")
        return out + self.scale * self.lora_B[k](self.lora_A[k](x))


class LoRAConv2d(_LoRABase):
    """``base(x) + (alpha / r) B_k(A_k(x))`` for the active stage ``k``.

    Args:
        base: the shared ``nn.Conv2d`` (groups must be 1).
        stages: number of adapters ``K`` (0: a plain conv, no adapter).
        gamma: rank percentage of :func:`adaptive_rank`.
        alpha: LoRA alpha; ``None`` means ``alpha = r`` (scale 1).
    """

    def __init__(self, base: nn.Conv2d, stages: int, gamma: float = 10.0, alpha: float | None = None):
        if base.groups != 1:
            raise ValueError("LoRAConv2d supports groups=1 convolutions only")
        super().__init__(
            base, base.in_channels, base.out_channels, stages, gamma, alpha,
            lambda r: nn.Conv2d(base.in_channels, r, base.kernel_size, base.stride, base.padding, base.dilation, bias=False, padding_mode=base.padding_mode),
            lambda r: nn.Conv2d(r, base.out_channels, 1, bias=False),
        )  # fmt: skip


class LoRALinear(_LoRABase):
    """``base(x) + (alpha / r) B_k A_k x`` for the active stage ``k`` (see :class:`LoRAConv2d`)."""

    def __init__(self, base: nn.Linear, stages: int, gamma: float = 10.0, alpha: float | None = None):
        super().__init__(
            base, base.in_features, base.out_features, stages, gamma, alpha,
            lambda r: nn.Linear(base.in_features, r, bias=False),
            lambda r: nn.Linear(r, base.out_features, bias=False),
        )  # fmt: skip


def lora_modules(module: nn.Module) -> Iterator[_LoRABase]:
    """Every LoRA wrapper inside ``module``."""
    for m in module.modules():
        if isinstance(m, _LoRABase):
            yield m


def set_stage(module: nn.Module, stage: int) -> None:
    """Make adapter ``stage`` active in every LoRA wrapper inside ``module``."""
    for m in lora_modules(module):
        m.stage = int(stage)


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The adapters' parameters (``A_k``, ``B_k`` of every wrapper)."""
    params: list[nn.Parameter] = []
    for m in lora_modules(module):
        params += list(m.lora_A.parameters()) + list(m.lora_B.parameters())
    return params


def base_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Every parameter of ``module`` that is not an adapter's."""
    ids = {id(p) for p in lora_parameters(module)}
    return [p for p in module.parameters() if id(p) not in ids]
