"""LoRun: Deep LoRA-Unfolding Networks for image restoration (IEEE TIP 2026, arXiv 2602.18697).

Proximal gradient descent unfolded into ``K`` stages (METHODS.md section 2)::

    x_0     = A^T y          (CS: back-projection; CASSI: shift_back(y) * mask * 2 / bands;
                              SR: bicubic up-sampling of y)
    z_k     = x_{k-1} - rho_k A^T (A x_{k-1} - y)    (GDM, learnable rho_k = softplus(.) > 0)
    x_k     = D_{theta_0 + Delta_k}(z_k)             (PMM: the shared base denoiser + stage-k LoRA)

and ``x_K`` is the output. Optional stage gates (``gate_init``, our addition, off by default)
blend ``x_k = z_k + g_k (D_k(z_k) - z_k)``.

The base denoiser ``D_theta_0`` is shared by all stages; every stage owns LoRA adapters
``Delta_k = B_k A_k`` on every convolution of the denoiser (:mod:`irc.nn.lora`), with the
adaptive rank ``r = ceil(min(C_in, C_out) * gamma / 100)`` and ``B_k = 0`` at initialisation, so
that every stage starts equal to the base. Training has two phases (METHODS.md 2.1):

* ``phase = 1``: a one-stage network (``stages = 1``), every weight trainable (the base, rho,
  and the sampling matrix when ``learnable_matrix``);
* ``phase = 2``: ``K`` stages; the base is frozen (``requires_grad = False``, bit-identical
  after training), only the adapters, the ``rho_k``, the stage gates (when used) and the
  learnable sampling matrix train.
  ``init_from`` names the phase-1 weights the base (and rho, and the matrix when its shape
  fits) start from.

``variant = "block"`` is the Block-K baseline the paper compares with: ``K`` independent
denoisers (no sharing, no adapters), every weight trainable.

Base denoisers (the paper names "U-Net, Transformer and CNN" backbones without saying which per
task; METHODS.md marks the choice GUESS). Ours, chosen for CPU training speed, is the same small
residual U-Net for every task (two scales, ``channels`` / ``2 channels`` / ``4 channels``, plain
ReLU residual blocks, pixel-shuffle up-sampling, a global residual ``x + D(x)``), with the input
and output channels of the task: 1 (CS, grey / Y), 28 (CASSI), 3 (SR, RGB).

Tasks and operators:

* ``cs``: block CS on ``block x block`` blocks (:class:`irc.operators.cs.BlockCS`). The sampling
  matrix ``Phi`` (``M x block^2``, ``M`` from the ReconNet / ISTA-Net+ table) is stored in the
  weights and, with ``learnable_matrix``, trained end to end (as OPINE-Net+, CASNet and NesTD do).
  ``matrix_init = "pca"`` starts it from the ``M`` leading eigenvectors of the second-moment
  matrix of Train400 blocks (the Karhunen-Loeve basis: orthonormal rows, the best linear
  ``M``-dimensional projection of natural blocks in the mean-square sense); ``"orthogonal"`` /
  ``"gaussian"`` are random.
* ``cassi``: single-disperser CASSI with a 2-pixel shift per band
  (:class:`irc.operators.cassi.CASSI`), the mask from the data pack (``CASSI/simulation``) or
  a user file (``mask``, or the ``mask`` option for a measurement taken with another mask, e.g.
  the real TSA-Net 660 x 660 mask). The mask is a buffer saved with the weights. The initial
  estimate uses MST's ``y * 2 / bands`` normalisation; the GDM step is scaled by ``2 / bands``
  at initialisation (``A^T A`` has entries up to about ``bands / 2``).
* ``sr``: the USRNet degradation ``y = (x * k) downarrow_s`` with circular blur
  (:class:`irc.operators.blur_sr.BlurDownsample`), the kernel given per image (one of the 12
  USRNet kernels); the GDM is the gradient step above.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irc.errors import UsageError, WeightsError
from irc.methods.base import Component, Method, TrainBatch
from irc.methods.options import OPTIONS
from irc.nn.lora import LoRAConv2d, base_parameters, set_stage
from irc.operators.cs import BlockCS
from irc.operators.measurements import load_cs_measurement, save_cs_measurement
from irc.tiling import TileSpec

__all__ = ["LoRun", "LoRunConfig", "LoRunNet", "UNetDenoiser", "load_cs_measurement", "pca_matrix", "save_cs_measurement"]


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
        return {"cs": 1, "cassi": self.bands, "sr": 3}[self.task]


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
    """

    def __init__(self, config: LoRunConfig, *, loading: bool = False):
        super().__init__()
        self.config = cfg = config
        k = cfg.unfolded
        # CASSI: A^T A has diagonal entries up to ~bands/2 (half-open mask), so the step is scaled
        # by 2 / bands to keep rho_k A^T A of order 1 (MST normalises y by 2 / bands likewise).
        rho_init = cfg.rho_init * (2.0 / cfg.bands if cfg.task == "cassi" else 1.0)
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
        if cfg.task == "cs":
            from irc.operators.cs import num_measurements

            m = num_measurements(cfg.ratio, cfg.block**2)
            if cfg.matrix_init == "pca" and not loading:
                phi = pca_matrix(m, cfg.block)
            else:
                draw = BlockCS(cfg.ratio, cfg.block, 1, matrix="gaussian" if cfg.matrix_init == "gaussian" else "orthogonal")
                phi = draw.phi
            self.cs = BlockCS.from_matrix(phi, block=cfg.block, learnable=cfg.learnable_matrix, orthonormal_rows=False)
        elif cfg.task == "cassi":
            from irc.operators.cassi import load_mask, simulation_mask_path

            if loading or (not cfg.mask and not _pack_has_mask()):
                mask = torch.zeros(256, 256)  # replaced by the weights' mask
            else:
                mask = load_mask(cfg.mask or simulation_mask_path())
            self.register_buffer("mask", mask.float())

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


def _pack_has_mask() -> bool:
    try:
        from irc.operators.cassi import simulation_mask_path

        return Path(simulation_mask_path()).is_file()
    except Exception:  # noqa: BLE001 - no data pack: a zero mask the weights replace
        return False


@torch.no_grad()
def pca_matrix(m: int, block: int = 33, *, blocks: int = 40000, seed: int = 0) -> Tensor:
    """``M`` leading eigenvectors (rows) of the second-moment matrix of Train400 blocks.

    The Karhunen-Loeve basis: orthonormal rows, and ``Phi^T Phi x`` is the best rank-``M``
    linear approximation of a random training block in the mean-square sense. The blocks are
    drawn at random positions (seeded) from the Train400 images of the data pack.

    Returns:
        ``(M, block^2)`` float32.
    """
    import numpy as np

    from irc.data._common import grey_float, read_float
    from irc.data.registry import training_files

    files = training_files("train400")
    rng = np.random.default_rng(seed)
    per = max(1, blocks // len(files))
    rows = []
    for f in files:
        img = grey_float(read_float(f))
        img = img[..., 0] if img.ndim == 3 else img
        h, w = img.shape
        ys = rng.integers(0, h - block + 1, per)
        xs = rng.integers(0, w - block + 1, per)
        rows += [img[a : a + block, b : b + block].reshape(-1) for a, b in zip(ys, xs)]
    x = torch.from_numpy(np.stack(rows)).double()
    cov = x.T @ x / x.shape[0]
    evals, evecs = torch.linalg.eigh(cov)
    top = evecs[:, torch.argsort(evals, descending=True)[:m]].T
    # deterministic signs: largest-magnitude entry of each row positive
    idx = top.abs().argmax(dim=1)
    top = top * torch.sign(top[torch.arange(m), idx])[:, None]
    return top.float().contiguous()


# ------------------------------------------------------------------------------------ method


def _is_base_key(key: str) -> bool:
    return key.startswith(("denoiser.", "denoisers.")) and ".lora_" not in key


def _is_stage_key(key: str) -> bool:
    return key in ("rho_raw", "gate_raw") or ".lora_" in key


def _is_operator_key(key: str) -> bool:
    return key.startswith("cs.") or key == "mask"


class LoRun(Method):
    """LoRun unfolding networks for CS, CASSI and non-blind SR."""

    name = "lorun"
    summary = "Deep LoRA-unfolding network (TIP 2026): K-stage PGD, one shared denoiser + per-stage LoRA; CS, CASSI, SR"
    Config = LoRunConfig
    tiny_config = {"task": "cs", "stages": 2, "channels": 4, "mid_blocks": 1, "ratio": 0.25}
    tasks = ("cs", "cassi", "sr")
    default_task = "cs"
    knobs = OPTIONS["lorun"]

    def __init__(self, config: Any = None, *, loading: bool = False, **kwargs: Any):
        self._loading = loading
        super().__init__(config, **kwargs)
        cfg = self.config
        self._kernels: dict[int | str, Tensor] = {}  # SR blur kernels by knob value (see _kernel_tensor)
        self._kernel_noted = False  # the "no --kernel given" note is said once per run
        self.tile_spec = self.task_profile(cfg.task)["stages"]["unfold"]
        if cfg.init_from and not loading:
            self.initialise_from(cfg.init_from)
        if cfg.phase == 2 and cfg.variant == "lorun":
            for p in base_parameters(self.network.denoiser):
                p.requires_grad_(False)

    @classmethod
    def task_profile(cls, task: str | None = None) -> dict[str, Any]:
        """CS works on Y (grey) in tiles aligned to its zero-padded block grid: every tile measures
        exactly the blocks the whole image would, so tiles differ only through the denoiser's
        receptive field near their borders, which the overlap blends away. SR tiles like any
        network (at the SR factor). CASSI never tiles: the coded mask is as large as the cube."""
        task = task or cls.default_task
        if task == "sr":
            spec = TileSpec(support="supported", scale=4.0, multiple_of=4, overlap=16, bytes_per_pixel=2048.0)
            return {"input": "rgb", "channels": (3,), "stages": {"unfold": spec}}
        if task == "cassi":
            return {"input": "cube", "channels": (28,), "stages": {"unfold": TileSpec(support="unsupported", bytes_per_pixel=2048.0)}}
        spec = TileSpec(support="supported", multiple_of=33, overlap=66, bytes_per_pixel=2048.0, pad="constant")
        return {"input": "luma", "channels": (1,), "stages": {"unfold": spec}}

    @property
    def input_channels(self) -> tuple[int, ...]:
        return (self.config.bands,) if self.config.task == "cassi" else super().input_channels

    # ---------------------------------------------------------------- construction / weights
    def build_network(self) -> nn.Module:
        return LoRunNet(self.config, loading=self._loading)

    @classmethod
    def _loading_kwargs(cls) -> dict[str, Any]:
        return {"loading": True}

    def components(self) -> list[Component]:
        """``base`` (the shared denoiser; frozen in phase 2), ``stages`` (per-stage LoRA, steps,
        gates) and ``operator`` (the CS matrix, trainable when learnable, or the CASSI mask)."""
        cfg, net = self.config, self.network
        base_trains = cfg.variant == "block" or cfg.phase == 1
        return [
            Component("base", net, "shipped", trainable=base_trains, select=_is_base_key),
            Component("stages", net, "shipped", trainable=True, select=_is_stage_key),
            Component("operator", net, "shipped", trainable=cfg.task == "cs" and cfg.learnable_matrix, select=_is_operator_key),
        ]

    def lr_scale(self, param: nn.Parameter) -> float:
        """The CS matrix trains at ``PHI_LR_SCALE`` times the recipe's learning rate."""
        cs = getattr(self.network, "cs", None)
        return PHI_LR_SCALE if cs is not None and param is cs.phi else 1.0

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta["config"] = {**meta["config"], "init_from": ""}
        meta["cs_phi"] = "unscaled"
        return meta

    @classmethod
    def migrate_state(cls, state: dict[str, Tensor], metadata: Mapping[str, Any]) -> dict[str, Tensor]:
        """Files written before the matrix was stored unscaled hold ``10 x Phi``."""
        if "cs.phi" in state and metadata.get("cs_phi") != "unscaled":
            state = {**state, "cs.phi": state["cs.phi"] / _LEGACY_PHI_GAIN}
        return state

    def load_state_dict(self, state: Mapping[str, Tensor], **kwargs: Any) -> None:
        mask = state.get("mask")
        if self.config.task == "cassi" and mask is not None and mask.shape != self.network.mask.shape:
            self.network.mask = torch.zeros_like(mask, device=self.device)  # the weights' own mask size
        super().load_state_dict(state, **kwargs)

    @torch.no_grad()
    def initialise_from(self, weights: str | Path) -> None:
        """Start phase 2 (or a longer run) from phase-1 weights.

        Copies the base denoiser, ``rho`` (stage 0's value to every stage) and, when the shapes
        agree, the CS matrix / CASSI mask. Adapters keep their zero-``B`` initialisation.
        """
        from irc.weights import load_weights, resolve_weights

        resolved = resolve_weights(str(weights), method=self.name)
        state, meta = load_weights(resolved.path)
        if meta.get("method") not in (None, self.name):
            raise WeightsError(f"{resolved.path}: weights are for {meta.get('method')!r}, not lorun")
        state = self.migrate_state(state, meta)
        net = self.network
        own = net.state_dict()
        copied = 0
        for key, value in state.items():
            if key == "gate_raw":
                if hasattr(net, "gate_raw"):
                    net.gate_raw[0] = value.reshape(-1)[0]
                    copied += 1
                continue
            if key == "rho_raw":
                net.rho_raw.copy_(value.reshape(-1)[0].expand_as(net.rho_raw))
                copied += 1
                continue
            target_key = key
            if self.config.variant == "lorun" and key.startswith("denoisers.0."):
                target_key = "denoiser." + key[len("denoisers.0."):]
            if ".lora_" in key:
                continue
            if target_key in own and own[target_key].shape == value.shape:
                own[target_key].copy_(value)
                copied += 1
        if copied == 0:
            raise WeightsError(f"{resolved.path}: no tensor fits this lorun network")

    # ---------------------------------------------------------------- knobs
    def validate_knobs(self, values: dict[str, Any]) -> None:
        """Knob values that must agree with the weights: task, ratio, scale, kernel, stages."""
        cfg = self.config
        if values["task"] and values["task"] != cfg.task:
            raise UsageError(f"these lorun weights are for the {cfg.task} task, not {values['task']!r}")
        if values["ratio"] and cfg.task != "cs":
            raise UsageError(f"--ratio applies to the cs task; these weights are for {cfg.task}")
        if values["ratio"] and abs(values["ratio"] - cfg.ratio) > 1e-9:
            shipped = f" (e.g. --weights lorun-cs-r{round(values['ratio'] * 100)})" if round(values["ratio"] * 100) in (10, 25, 50) else ""
            raise UsageError(
                f"these lorun weights were trained at ratio {cfg.ratio:g}; got ratio {values['ratio']:g}: use weights for that ratio{shipped}"
            )
        if values["scale"] and cfg.task == "sr" and abs(values["scale"] - cfg.scale) > 1e-9:
            raise UsageError(f"these lorun weights are for x{cfg.scale} SR; got scale {values['scale']:g}")
        if values["kernel"] == "":
            values["kernel"] = 0
            if cfg.task == "sr" and not self._kernel_noted:
                self._kernel_noted = True
                print("lorun sr: no --kernel given: assuming USRNet kernel 0 (isotropic Gaussian) blurred the input; "
                      "--kernel 0-11, gaussian:SIGMA or a file says which", file=sys.stderr)  # fmt: skip
        if isinstance(values["kernel"], int) and not 0 <= values["kernel"] < 12:
            raise UsageError(f"kernel index must be 0-11 (the 12 USRNet kernels), got {values['kernel']}")
        if cfg.task == "sr":
            self._kernel_tensor(values["kernel"])  # a missing or malformed kernel fails before any image
        if not 0 <= values["stages"] <= self.network.stages:
            raise UsageError(f"stages must be 0..{self.network.stages}, got {values['stages']}")

    def output_scale(self, knobs: Mapping[str, Any]) -> float:
        return float(self.config.scale) if self.config.task == "sr" else 1.0

    # ---------------------------------------------------------------- forward
    def forward(self, x: Tensor, **knobs: Any) -> Tensor:
        task = self.config.task
        stages = int(knobs.get("stages", 0) or 0) or None
        if task == "cs":
            return self._forward_cs(x, stages)
        if task == "cassi":
            return self._forward_cassi(x, stages)
        return self._forward_sr(x, self._sr_op(self._kernel_tensor(knobs.get("kernel") or 0)), stages)

    def _forward_cs(self, x: Tensor, stages: int | None) -> Tensor:
        from irc.operators.cs import crop, pad_to_block

        xp, size = pad_to_block(x, self.config.block)
        return crop(self.reconstruct_cs(self.network.cs.A(xp), stages), size)

    def reconstruct_cs(self, y: Tensor, stages: int | None = None) -> Tensor:
        """Image ``(B, 1, hB, wB)`` from block measurements ``y`` ``(B, M, h, w)``."""
        op = self.network.cs
        return self.network.unfold(op, y, op.A_adjoint(y), stages)

    def _cassi_op(self, mask: Tensor | None = None):
        from irc.operators.cassi import CASSI

        return CASSI(self.network.mask if mask is None else mask, bands=self.config.bands)

    def _forward_cassi(self, x: Tensor, stages: int | None) -> Tensor:
        op = self._cassi_op()
        if x.shape[-2:] != op.mask.shape[-2:]:
            raise UsageError(f"lorun cassi: the cube is {tuple(x.shape[-2:])} but the mask is {tuple(op.mask.shape[-2:])}")
        return self.reconstruct_cassi(op.A(x), stages)

    def reconstruct_cassi(self, y: Tensor, stages: int | None = None, mask: Tensor | None = None) -> Tensor:
        """Cube ``(B, bands, H, W)`` from a CASSI measurement ``(B, 1, H, W + 2 (bands - 1))``.

        ``x_0 = A^T y * 2 / bands`` (MST's ``shift_back(y * 2 / 28) * mask``).
        """
        op = self._cassi_op(mask)
        x0 = op.A_adjoint(y) * (2.0 / self.config.bands)
        return self.network.unfold(op, y, x0, stages)

    def _kernel_tensor(self, spec: int | str) -> Tensor:
        """The SR blur kernel of a ``kernel`` value (see :func:`irc.operators.blur_sr.resolve_kernel`),
        cached per value so that tiles, batches and training steps do not reread a kernel file."""
        from irc.operators.blur_sr import resolve_kernel

        if spec not in self._kernels:
            self._kernels[spec] = resolve_kernel(spec)
        return self._kernels[spec]

    def _sr_op(self, kernel: Tensor):
        from irc.operators.blur_sr import BlurDownsample

        return BlurDownsample(kernel.to(self.device, self.dtype), int(self.config.scale))

    def _forward_sr(self, y: Tensor, op, stages: int | None) -> Tensor:
        """High-resolution image from ``y``, starting at its bicubic up-sampling."""
        x0 = F.interpolate(y, scale_factor=self.config.scale, mode="bicubic", align_corners=False)
        return self.network.unfold(op, y, x0, stages)

    # ---------------------------------------------------------------- training
    def training_step(self, batch: TrainBatch, step: int) -> dict[str, Tensor]:
        """MSE of the final stage's output (METHODS.md 2.1: L2 loss).

        ``cs`` / ``cassi``: ``batch.lq`` is the clean crop (degradation ``none``): the method
        measures it with its own operator (CASSI: crops smaller than the mask use a random
        window of it, see :meth:`_train_cassi`). ``sr``: ``batch.gt`` is blurred with a random one of
        the 12 USRNet kernels (per batch) and down-sampled here.
        """
        task = self.config.task
        gt = batch.gt
        if task == "cs":
            out = self._forward_cs(gt, None)
        elif task == "cassi":
            out = self._train_cassi(gt, step)
        else:
            g = torch.Generator().manual_seed(int(step))
            op = self._sr_op(self._kernel_tensor(int(torch.randint(12, (1,), generator=g))))  # one of the 12 USRNet kernels
            out = self._forward_sr(op.A(gt), op, None)
        return {"main": F.mse_loss(out, gt)}

    def _train_cassi(self, gt: Tensor, step: int) -> Tensor:
        """Reconstruction of training cubes ``gt`` ``(B, bands, h, w)`` from their simulated measurement.

        Crops smaller than the mask see a window of the mask at a random position (one per
        batch, seeded by the step), as MST's real-data training crops its 660 x 660 mask; this
        also lets a CPU run train on small crops. Crops of the mask's size use the whole mask
        (MST's simulation protocol).
        """
        if gt.shape[1] != self.config.bands:
            raise UsageError(
                f"lorun cassi trains on {self.config.bands}-band cubes, got {gt.shape[1]}-channel images: "
                "set data.train to hyperspectral cubes (the cave set or a folder of .mat files)"
            )
        mask = self.network.mask
        (h, w), (mh, mw) = gt.shape[-2:], mask.shape[-2:]
        if (h, w) != (mh, mw):
            if h > mh or w > mw:
                raise UsageError(f"lorun cassi: training crops of {h}x{w} are larger than the {mh}x{mw} mask; set data.crop <= {min(mh, mw)}")
            g = torch.Generator().manual_seed(int(step))
            top = int(torch.randint(mh - h + 1, (1,), generator=g))
            left = int(torch.randint(mw - w + 1, (1,), generator=g))
            mask = mask[top : top + h, left : left + w]
        return self.reconstruct_cassi(self._cassi_op(mask).A(gt), None, mask=mask)

    # ---------------------------------------------------------------- measurement files
    def sampling_matrix(self) -> Tensor:
        """The CS sampling matrix ``Phi`` ``(M, block^2)`` of these weights (rows act on blocks
        vectorised row-major); ``y_i = Phi x_i`` for every ``block x block`` block ``x_i``."""
        if self.config.task != "cs":
            raise UsageError("sampling_matrix: these lorun weights are not for the cs task")
        return self.network.cs.phi.detach().float().cpu()

    @torch.no_grad()
    def measure_cs(self, image: Tensor, path: str | Path) -> Path:
        """Simulate the measurement of ``image`` ``(1, 1, H, W)`` (zero-padded to the block grid)
        and write it as a measurement file (:mod:`irc.operators.measurements`)."""
        from irc.operators.cs import pad_to_block

        xp, size = pad_to_block(image.to(self.device, self.dtype), self.config.block)
        return save_cs_measurement(path, self.network.cs.A(xp), size, self.config.ratio, self.config.block, phi=self.sampling_matrix())

    def measurement_kind(self) -> str | None:
        return {"cs": "image", "cassi": "cube"}.get(self.config.task)

    @torch.no_grad()
    def restore_measurement(self, path: str | Path, **knobs: Any) -> Tensor:
        """Reconstruct a measurement file (CS: :func:`save_cs_measurement`; CASSI: ``.mat``).

        Returns:
            ``(1, C, H, W)`` in [0, 1] on the CPU.
        """
        from irc.operators.measurements import load_cassi_measurement, matrix_fingerprint

        values = self.knob_values(knobs)
        self.train(False)
        st = int(values["stages"]) or None
        if self.config.task == "cs":
            y, size, meta = load_cs_measurement(path)
            cs = self.network.cs
            if y.shape[0] != cs.m:
                raise UsageError(f"{path}: {y.shape[0]} measurements per block, but these weights sample {cs.m} (ratio {self.config.ratio:g})")
            if "block" in meta and int(meta["block"]) != self.config.block:
                raise UsageError(f"{path}: block {meta['block']} but the weights use {self.config.block}")
            if "phi_sha256" in meta and meta["phi_sha256"] != matrix_fingerprint(self.sampling_matrix()):
                raise UsageError(f"{path}: measured with another sampling matrix than these weights' (fingerprint {meta['phi_sha256']}); reconstruct it with the weights that measured it")
            out = self.reconstruct_cs(y[None].to(self.device, self.dtype), st)
            return out[..., : size[0], : size[1]].float().clamp(0, 1).cpu()
        if self.config.task == "cassi":
            from irc.operators.cassi import load_mask

            y = load_cassi_measurement(path)
            m = load_mask(values["mask"]).to(self.device, self.dtype) if values["mask"] else self.network.mask
            if y.shape[-2] != m.shape[-2] or y.shape[-1] != m.shape[-1] + 2 * (self.config.bands - 1):
                raise UsageError(
                    f"{path}: measurement {tuple(y.shape[-2:])} does not fit the mask {tuple(m.shape)} with {self.config.bands} bands; "
                    "pass the mask it was taken with (--mask FILE.mat)"
                )
            return self.reconstruct_cassi(y.to(self.device, self.dtype), st, mask=m).float().clamp(0, 1).cpu()
        raise UsageError("lorun sr reconstructs low-resolution images: pass the image itself, not --measurement")
