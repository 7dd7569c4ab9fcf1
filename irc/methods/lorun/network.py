"""LoRun's networks: the config, the small residual U-Net denoiser with per-stage LoRA, and the
unfolded network that runs ``K`` proximal-gradient stages over any operator (see
:mod:`irc.methods.lorun` for the method and :mod:`irc.methods.lorun.tasks` for the operators)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irc.errors import UsageError
from irc.methods.lorun.tasks import task_class
from irc.nn.lora import LoRAConv2d, set_stage

__all__ = ["GATE_GAIN", "LoRunConfig", "LoRunNet", "UNetDenoiser"]


@dataclass(frozen=True)
class LoRunConfig:
    """Architecture and training-phase choices of a LoRun network.

    Attributes:
        task: ``cs`` (block compressive sensing, grey), ``cassi`` (28-band spectral snapshot),
            ``sr`` (non-blind super-resolution, USRNet protocol, RGB).
        variant: ``lorun`` (one shared base + per-stage LoRA) or ``block`` (the Block-K baseline:
            ``stages`` independent denoisers).
        phase: 1 (one-stage pre-training of the base, everything trainable) or 2 (frozen base,
            per-stage LoRA, rho and the learnable matrix train).
        stages: number of unfolded stages ``K`` (phase 1 uses 1 whatever this says).
        gamma: LoRA rank percentage (``r = ceil(min(C_in, C_out) * gamma / 100)``).
        channels: base width of the U-Net denoiser.
        mid_blocks: residual blocks at the coarsest scale.
        rho_init: initial gradient step ``rho_k`` (METHODS.md 2.3: about 0.5, a guess).
        ratio: CS sampling ratio ``M / block^2``.
        block: CS block size.
        matrix_init: initial CS matrix: ``pca`` (Train400 KLT basis), ``orthogonal``, ``gaussian``.
        learnable_matrix: train the CS matrix with the network.
        bands: CASSI spectral bands.
        mask: CASSI mask file (``.mat``); empty: the data pack's simulation mask.
        scale: SR factor (2, 3 or 4).
        gate_init: stage gates (our addition, not in the paper): with ``gate_init != 1`` stage
            ``k`` outputs ``z_k + g_k (D_k(z_k) - z_k)`` with learnable ``g_k``, ``g_0 = 1`` and
            ``g_k = gate_init`` for ``k >= 1``. ``1`` (the default) is the paper's network, with
            no gate parameters. Why: phase 2 starts from K copies of the one-stage denoiser, and
            applying a denoiser trained for the first stage's input nine times over-processes
            (Set11-type crops: 25.3 dB for nine ungated stages vs 29.1 dB for the one-stage
            network, at 25%); with ``gate_init = 0.1`` the nine-stage network starts at the
            one-stage network's quality and a short phase 2 only has to improve on it.
        init_from: phase-1 weights to start phase 2 from (training only; not kept in the
            released weights' metadata).
    """

    task: Literal["cs", "cassi", "sr"] = "cs"
    variant: Literal["lorun", "block"] = "lorun"
    phase: int = 2
    stages: int = 9
    gamma: float = 10.0
    channels: int = 32
    mid_blocks: int = 2
    rho_init: float = 0.5
    ratio: float = 0.25
    block: int = 33
    matrix_init: Literal["pca", "orthogonal", "gaussian"] = "orthogonal"
    learnable_matrix: bool = True
    bands: int = 28
    mask: str = ""
    scale: int = 4
    gate_init: float = 1.0
    init_from: str = ""

    def __post_init__(self) -> None:
        if self.phase not in (1, 2):
            raise UsageError(f"lorun config phase must be 1 or 2, got {self.phase}")
        if self.stages < 1:
            raise UsageError(f"lorun config stages must be >= 1, got {self.stages}")
        if not 0 < self.ratio <= 1:
            raise UsageError(f"lorun config ratio must be in (0, 1], got {self.ratio}")
        if self.scale not in (1, 2, 3, 4):
            raise UsageError(f"lorun config scale must be 2, 3 or 4, got {self.scale}")
        if not 4 <= self.channels <= 512 or not 0 < self.gamma <= 100:
            raise UsageError("lorun config: channels must be in 4..512 and gamma in (0, 100]")
        if self.stages > 64 or not 0 <= self.mid_blocks <= 64 or not 2 <= self.block <= 128 or not 1 <= self.bands <= 512:
            raise UsageError("lorun config: stages <= 64, mid_blocks 0..64, block 2..128 and bands 1..512 expected")

    @property
    def unfolded(self) -> int:
        """Stages actually unrolled: 1 in phase 1 of the LoRA variant, ``stages`` otherwise."""
        return 1 if (self.phase == 1 and self.variant == "lorun") else self.stages

    @property
    def image_channels(self) -> int:
        return task_class(self.task).channels(self)


# ------------------------------------------------------------------------------------ networks


def _conv(c_in: int, c_out: int, k: int, adapters: int, gamma: float, stride: int = 1) -> LoRAConv2d:
    return LoRAConv2d(nn.Conv2d(c_in, c_out, k, stride=stride, padding=(k - 1) // 2 if stride == 1 else 0), adapters, gamma)


class _ResBlock(nn.Module):
    def __init__(self, c: int, adapters: int, gamma: float):
        super().__init__()
        self.conv1 = _conv(c, c, 3, adapters, gamma)
        self.conv2 = _conv(c, c, 3, adapters, gamma)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x), inplace=True))


class UNetDenoiser(nn.Module):
    """Small residual U-Net ``x -> x + R(x)`` (two down-samplings), every conv LoRA-wrapped.

    Args:
        in_ch: image channels (in = out).
        channels: width at full resolution (x2, x4 at the coarser scales).
        mid_blocks: residual blocks at the coarsest scale.
        adapters: LoRA adapters per conv (0 in phase 1 and for Block-K).
        gamma: LoRA rank percentage.

    Input ``(B, in_ch, H, W)``, any ``H``, ``W`` (reflect-padded to a multiple of 4 inside).
    """

    def __init__(self, in_ch: int, channels: int = 32, mid_blocks: int = 2, adapters: int = 0, gamma: float = 10.0):
        super().__init__()
        c, a, g = channels, adapters, gamma
        self.head = _conv(in_ch, c, 3, a, g)
        self.enc1 = _ResBlock(c, a, g)
        self.down1 = _conv(c, 2 * c, 2, a, g, stride=2)
        self.enc2 = _ResBlock(2 * c, a, g)
        self.down2 = _conv(2 * c, 4 * c, 2, a, g, stride=2)
        self.mid = nn.Sequential(*[_ResBlock(4 * c, a, g) for _ in range(mid_blocks)])
        self.up2 = _conv(4 * c, 8 * c, 1, a, g)  # -> pixel shuffle -> 2c
        self.dec2 = _ResBlock(2 * c, a, g)
        self.up1 = _conv(2 * c, 4 * c, 1, a, g)  # -> pixel shuffle -> c
        self.dec1 = _ResBlock(c, a, g)
        self.tail = _conv(c, in_ch, 3, a, g)
        # Zero residual at initialisation: an untrained stage is the identity, so a fresh
        # network starts from the data step's estimate (ReZero-style, Bachlechner et al. 2020).
        nn.init.zeros_(self.tail.base.weight)
        nn.init.zeros_(self.tail.base.bias)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        xp = F.pad(x, (0, pw, 0, ph), mode="reflect") if (ph or pw) else x
        f1 = self.enc1(self.head(xp))
        f2 = self.enc2(F.relu(self.down1(f1)))
        f3 = self.mid(F.relu(self.down2(f2)))
        u2 = self.dec2(F.pixel_shuffle(self.up2(f3), 2) + f2)
        u1 = self.dec1(F.pixel_shuffle(self.up1(u2), 2) + f1)
        out = xp + self.tail(u1)
        return out[..., :h, :w] if (ph or pw) else out


class LoRunNet(nn.Module):
    """The unfolded network: operator parameters, ``rho_k`` and the denoiser(s).

    Attributes:
        rho_raw: ``(K,)``; ``rho_k = softplus(rho_raw_k)`` keeps the steps positive.
        denoiser: the shared base with ``K`` adapters per conv (variant ``lorun``).
        denoisers: ``K`` independent denoisers (variant ``block``).
        cs: the :class:`~irc.operators.cs.BlockCS` operator (task ``cs``; holds ``phi``).
        mask: CASSI mask buffer ``(H, W)`` (task ``cassi``).

    The operator's parameters come from the task (:meth:`UnfoldingTask.add_operator`); the
    operator itself is passed to :meth:`unfold`, which knows nothing of the task.
    """

    def __init__(self, config: LoRunConfig, *, loading: bool = False):
        super().__init__()
        self.config = cfg = config
        k = cfg.unfolded
        rho_init = cfg.rho_init * task_class(cfg.task).rho_scale(cfg)
        rho0 = math.log(math.expm1(rho_init))
        self.rho_raw = nn.Parameter(torch.full((k,), rho0))
        if cfg.gate_init != 1.0:
            gates = torch.full((k,), float(cfg.gate_init))
            gates[0] = 1.0
            self.gate_raw = nn.Parameter(gates / GATE_GAIN)
        ch = cfg.image_channels
        if cfg.variant == "lorun":
            adapters = 0 if cfg.phase == 1 else k
            self.denoiser = UNetDenoiser(ch, cfg.channels, cfg.mid_blocks, adapters, cfg.gamma)
        else:
            self.denoisers = nn.ModuleList(UNetDenoiser(ch, cfg.channels, cfg.mid_blocks, 0, cfg.gamma) for _ in range(k))
        task_class(cfg.task).add_operator(self, cfg, loading=loading)

    @property
    def stages(self) -> int:
        return int(self.rho_raw.numel())

    def rho(self) -> Tensor:
        return F.softplus(self.rho_raw)

    def denoise(self, z: Tensor, k: int) -> Tensor:
        if self.config.variant == "block":
            out = self.denoisers[k](z)
        else:
            if self.config.phase == 2:
                set_stage(self.denoiser, k)
            out = self.denoiser(z)
        gate = getattr(self, "gate_raw", None)
        return out if gate is None else z + (GATE_GAIN * gate[k]) * (out - z)

    def unfold(self, op, y: Tensor, x0: Tensor, stages: int | None = None) -> Tensor:
        """Run the ``K`` stages from ``x0`` for measurement ``y`` with operator ``op``."""
        rho = self.rho()
        x = x0
        for k in range(self.stages if stages is None else stages):
            x = x - rho[k] * op.A_adjoint(op.A(x) - y)
            x = self.denoise(x, k)
        return x


# Stage gates are stored divided by this gain, so that Adam (step about ``lr`` in parameter
# units) moves a gate ten times faster than a network weight: a gate of 0.1 can open within a
# few hundred steps at lr 5e-4.
GATE_GAIN = 10.0

# The CS matrix trains at a tenth of the learning rate (LoRun.lr_scale): Adam moves a parameter
# by about ``lr`` per step in its own units, which for entries of size 1/33 would move the matrix
# ten times faster, relative to its size, than the denoiser's weights. (Older files stored the
# matrix multiplied by 10 for the same reason; LoRun.migrate_state converts them.)
PHI_LR_SCALE = 0.1
_LEGACY_PHI_GAIN = 10.0
