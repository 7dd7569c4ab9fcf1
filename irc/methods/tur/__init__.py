"""TUR: all-in-one restoration with task uncertainty regularisation (METHODS.md §4).

Wu et al., "Debiased All-in-one Image Restoration with Task Uncertainty Regularization", AAAI
2025. A backbone restores every degradation blindly; during training an uncertainty head on the
backbone's last full-resolution features predicts a per-pixel scale ``U``, and the loss
(:mod:`irc.methods.tur.loss`) divides each task's L1 error by the task's batch-averaged ``U``
plus a log penalty, so tasks the network finds hard stop dominating the shared weights.

* **Backbones** (:mod:`irc.methods.tur.backbones`): any module with
  ``forward_features(x) -> (features, image)`` and ``feature_channels``. ``convunet`` is the
  plain-convolution U-Net of the default photo model (fast on CPUs, optionally task-conditioned);
  ``nafnet`` is the light NAFNet-style U-Net of the 7-task MiOIR weights; ``promptir`` is the
  paper's PromptIR.
* **Components**: ``backbone`` (shipped, trainable) and ``head`` (the uncertainty head:
  trained, checkpointed, never exported; weights files may hold it or not).
* ``loss = "l1"`` builds no head and trains with plain L1: the ablation baseline.
* ``--task``: picks the default weights made for the task (the manifest's ``tasks``: ``auto``
  the blind photo model ``tur-photo``, an average of three branches; ``noise``, ``blur``, ``sr``
  its branch trained with the task shown, ``tur-photo-stage3``; ``jpeg`` the JPEG specialist
  ``tur-photo-jpeg``; ``rain``, ``haze``, ``dark`` the 7-task model); with conditioned weights
  (``config.condition``, the photo models) the task is also an input of the network (``auto`` =
  blind). It is recorded with the results.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from irc.errors import UsageError, WeightsError
from irc.methods.base import Component, Method, TrainBatch
from irc.methods.options import OPTIONS
from irc.methods.tur.head import UncertaintyHead
from irc.methods.tur.loss import l1_loss, uncertainty_loss
from irc.tiling import TileSpec

TASKS = ("auto", "noise", "jpeg", "blur", "sr", "rain", "haze", "dark")
HEAD_PREFIX = "head."


@dataclass(frozen=True)
class TURConfig:
    """Architecture of a TUR model.

    Attributes:
        backbone: ``nafnet`` (light CPU default) or ``promptir`` (the paper's).
        width: nafnet: channels at full resolution.
        enc_blocks: nafnet: blocks per encoder level (one down-sampling per level).
        middle_blocks: nafnet: blocks at the lowest resolution.
        dec_blocks: nafnet: blocks per decoder level, lowest first.
        dim: promptir: width at full resolution (48 in the paper).
        blocks: promptir: transformer blocks per level ([4, 6, 6, 8]).
        refinement_blocks: promptir: refinement blocks (4).
        heads: promptir: attention heads per level ([1, 2, 4, 8]).
        ffn_expansion: promptir: GDFN expansion (2.66).
        prompt_dims: promptir: prompt channels at decoder levels 1-3 ([64, 128, 320]).
        prompt_len: promptir: prompts per level (5).
        loss: ``uncertainty`` (TUR, METHODS.md §4.1; builds the head) or ``l1`` (baseline, no head).
        condition: convunet: the tasks the network can be told (``--task``), ``auto`` first; empty
            for a blind network. Training shows the sample's task with probability
            ``condition_prob`` (else ``auto``); samples labelled ``clean`` are shown ``auto``.
        condition_prob: see ``condition``.
        uncertainty_floor: added to each task's averaged uncertainty map (METHODS.md §4.1's
            ``eps``, 1e-6). The photo recipe uses 1/255: its ``clean`` samples have (almost) zero
            error, and with a tiny floor their ``|error| / U`` explodes as ``U`` follows the error
            to zero (measured: the loss jumped to 6e4 within 60 steps). One grey level is the
            smallest error worth weighting up.
        head_gradient: let the uncertainty head's gradient reach the backbone's features (the
            paper's joint training). The photo recipe turns it off: on the normalisation-free
            conv U-Net the head's gradient reshaped the shared features until the network
            collapsed to the identity (measured over 400 steps on the photo mixture: sigma-25
            noise 20.5 -> 20.5 dB with it, 20.5 -> 24.9 dB without; plain L1 26.3 dB). The task
            weighting of the loss, TUR's point, is unchanged.
        init_from: training only: weights (of this architecture) whose backbone a run starts
            from, e.g. an earlier stage's export (the photo model's second stage). The head starts
            fresh; not kept in the exported weights' config.
    """

    backbone: Literal["nafnet", "promptir", "convunet"] = "nafnet"
    width: int = 16
    enc_blocks: tuple[int, ...] = (1, 1, 2)
    middle_blocks: int = 2
    dec_blocks: tuple[int, ...] = (1, 1, 1)
    dim: int = 48
    blocks: tuple[int, ...] = (4, 6, 6, 8)
    refinement_blocks: int = 4
    heads: tuple[int, ...] = (1, 2, 4, 8)
    ffn_expansion: float = 2.66
    prompt_dims: tuple[int, ...] = (64, 128, 320)
    prompt_len: int = 5
    loss: Literal["uncertainty", "l1"] = "uncertainty"
    condition: tuple[str, ...] = ()
    condition_prob: float = 0.5
    uncertainty_floor: float = 1e-6
    head_gradient: bool = True
    init_from: str = ""

    def __post_init__(self) -> None:
        # bounds that no real network approaches: a config asking for more is a wrong or hostile
        # file, refused before any allocation
        checks = {
            "width": 1 <= self.width <= 512, "dim": 1 <= self.dim <= 1024, "middle_blocks": 0 <= self.middle_blocks <= 64,
            "enc_blocks": len(self.enc_blocks) <= 6 and all(0 <= n <= 64 for n in self.enc_blocks),
            "dec_blocks": len(self.dec_blocks) <= 6 and all(0 <= n <= 64 for n in self.dec_blocks),
            "blocks": all(0 <= n <= 64 for n in self.blocks), "refinement_blocks": 0 <= self.refinement_blocks <= 64,
            "prompt_len": 0 <= self.prompt_len <= 64, "prompt_dims": all(1 <= d <= 4096 for d in self.prompt_dims),
            "heads": all(1 <= h <= 64 for h in self.heads), "ffn_expansion": 0 < self.ffn_expansion <= 16,
        }  # fmt: skip
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise UsageError(f"tur config {bad[0]} = {getattr(self, bad[0])!r} is out of range")


def build_backbone(config: TURConfig) -> nn.Module:
    """The backbone ``config`` names (fields of the other backbone are ignored)."""
    from irc.methods.tur.backbones import ConvUNet, NAFNetLite, PromptIR

    if config.condition and (config.backbone != "convunet" or config.condition[0] != "auto"):
        raise UsageError(f"tur config: condition {list(config.condition)} needs backbone = \"convunet\" and \"auto\" first")
    try:
        if config.backbone == "nafnet":
            return NAFNetLite(config.width, config.enc_blocks, config.middle_blocks, config.dec_blocks)
        if config.backbone == "convunet":
            return ConvUNet(config.width, config.enc_blocks, config.middle_blocks, config.dec_blocks, tasks=len(config.condition))
        return PromptIR(config.dim, config.blocks, config.refinement_blocks, config.heads, config.ffn_expansion, config.prompt_dims, config.prompt_len)
    except ValueError as err:
        raise UsageError(f"tur config: {err}") from None


class TURNetwork(nn.Module):
    """A backbone plus (for training with the TUR loss) the uncertainty head on its features.

    ``forward`` is the backbone alone; :meth:`forward_train` also returns the uncertainty.
    Works with any backbone exposing ``forward_features`` and ``feature_channels``.
    """

    def __init__(self, backbone: nn.Module, with_head: bool = True, head_gradient: bool = True):
        super().__init__()
        self.backbone = backbone
        self.head_gradient = head_gradient
        self.head = UncertaintyHead(backbone.feature_channels, backbone.out_channels) if with_head else None

    def forward(self, x: Tensor, task: Tensor | None = None) -> Tensor:
        return self.backbone(x) if task is None else self.backbone(x, task)

    def forward_train(self, x: Tensor, task: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``x`` -> (restored image, uncertainty ``U`` of the image's shape, or ``None`` without head).

        ``task``: ``(B,)`` condition indices, for a conditioned backbone only.
        """
        features, image = self.backbone.forward_features(x) if task is None else self.backbone.forward_features(x, task)
        if self.head is None:
            return image, None
        return image, self.head(features if self.head_gradient else features.detach())


class TUR(Method):
    """All-in-one restoration (blind) trained with task uncertainty regularisation."""

    name = "tur"
    summary = "All-in-one restoration trained with task-uncertainty regularisation (AAAI 2025): the default photo model and the 7-task MiOIR model"
    Config = TURConfig
    tiny_config = {"backbone": "convunet", "width": 8, "enc_blocks": (1, 1), "middle_blocks": 1, "dec_blocks": (1, 1), "condition": ("auto", "noise")}
    tasks = TASKS
    default_task = "auto"
    knobs = OPTIONS["tur"]
    # Overlap 64 px by default (half the tile at most, see irc.runner); measured tiled vs
    # untiled differences are in the model cards.
    # bytes_per_pixel: 870 measured for the photo model's U-Net untiled at 1 MP (fp32, no grad)
    tile_spec: ClassVar[TileSpec] = TileSpec(support="supported", multiple_of=8, overlap=64, bytes_per_pixel=1024.0)
    input_kind = "rgb"

    def __init__(self, config: Any = None, *, loading: bool = False, **kwargs: Any):
        super().__init__(config, **kwargs)
        if self.config.init_from and not loading:
            self._start_from(self.config.init_from)

    @classmethod
    def _loading_kwargs(cls) -> dict[str, Any]:
        return {"loading": True}

    @torch.no_grad()
    def _start_from(self, weights: str) -> None:
        """Load the backbone of ``weights`` (a file of the same architecture) to continue training."""
        from irc.weights import load_weights, resolve_weights

        resolved = resolve_weights(weights, method=self.name)  # refuses another method's file
        state, _ = load_weights(resolved.path)
        backbone = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
        backbone.update(self._grown_blocks(backbone))
        try:
            self.load_state_dict(backbone)
        except WeightsError as err:
            raise WeightsError(f"config.init_from {resolved.path}: {err}") from None

    def _grown_blocks(self, given: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The parameters of residual blocks this network has and ``given`` lacks, made the identity.

        A deeper convunet (more blocks per level) can so start from a shallower stage's export
        and compute exactly what it did (:meth:`ConvUNet.make_identity_blocks`); every other
        difference between the file and the network stays an error of :meth:`load_state_dict`.
        """
        backbone = self.network.backbone
        prefix = "backbone."
        own = {k for k in self.network.state_dict() if k.startswith(prefix)}
        absent = {k.removeprefix(prefix) for k in own - set(given)}
        if not absent or not hasattr(backbone, "make_identity_blocks"):
            return {}
        grown = backbone.make_identity_blocks(absent)
        if not grown:
            return {}
        print(f"irc: init_from: {len(grown)} residual block(s) not in the file start as the identity: {', '.join(grown)}", file=sys.stderr)
        state = backbone.state_dict()
        return {prefix + k: v.detach().clone() for k, v in state.items() if any(k.startswith(f"{name}.") for name in grown)}

    def build_network(self) -> nn.Module:
        net = TURNetwork(build_backbone(self.config), with_head=self.config.loss == "uncertainty", head_gradient=self.config.head_gradient)
        if self._channels_last:
            # oneDNN runs dense convolutions 1.4x (fp32) to 3x (bf16, AMX) faster channels-last on
            # this project's CPU (photo model card); weights files stay contiguous (saving copies).
            net = net.to(memory_format=torch.channels_last)
        return net

    def auto_cpu_dtype(self) -> torch.dtype:
        """bf16 for the plain-convolution photo model on CPUs with AMX, else fp32.

        Measured with ``tur-photo`` (model card): 12 MP in 33 s instead of 77 s, PolyU 36.85 dB
        (fp32 36.84), CBSD68 sigma 25 29.62 dB (fp32 29.62); the clean-photo bars still hold.
        """
        from irc.device import cpu_has_amx

        return torch.bfloat16 if self._channels_last and cpu_has_amx() else torch.float32

    @property
    def _channels_last(self) -> bool:
        """Plain-convolution backbones run channels-last (NAFNet's and PromptIR's norms do not gain)."""
        return self.config.backbone == "convunet"

    def components(self) -> list[Component]:
        net = self.network
        parts = [Component("backbone", net, "shipped", select=lambda k: not k.startswith(HEAD_PREFIX))]
        if net.head is not None:
            parts.append(Component("head", net, "training", select=lambda k: k.startswith(HEAD_PREFIX)))
        return parts

    def stage_spec(self, knobs: Mapping[str, Any]) -> TileSpec:
        return self.tile_spec

    def output_scale(self, knobs: Mapping[str, Any]) -> float:
        return 1.0

    def validate_knobs(self, values: dict[str, Any]) -> None:
        known = self.config.condition
        if known and values["task"] not in known:
            raise UsageError(f"these tur weights restore --task {', '.join(known)}; --task {values['task']} has its own weights (irc weights list)")

    #: JPEGs at this libjpeg quality or below get the advice to use ``--task jpeg``: the JPEG
    #: specialist gains more there than the blind default (classic5 q10 +1.14 dB against +1.03,
    #: CBSD68 q30 +1.03 against +0.94; weights/tur/tur-photo-jpeg.md). Above it they were not
    #: compared.
    STRONG_JPEG_QUALITY: ClassVar[int] = 30

    def advice(self, knobs: Mapping[str, Any], image: Any) -> str | None:
        """Blind photo model on a strongly compressed JPEG: name ``--task jpeg``'s weights."""
        quality = getattr(image, "jpeg_quality", None)
        if knobs.get("task") != "auto" or not self.config.condition or quality is None or quality > self.STRONG_JPEG_QUALITY:
            return None
        if self._jpeg_specialist is None:
            return None
        return (
            f"strongly compressed JPEG (quality {self.STRONG_JPEG_QUALITY} or below): --task jpeg runs the "
            f"JPEG specialist {self._jpeg_specialist}, which removes more of the compression"
        )

    @functools.cached_property
    def _jpeg_specialist(self) -> str | None:
        """The name of ``--task jpeg``'s default weights unless they are these (the manifest is
        read once per loaded model, not once per image; ``weights_sha256`` is set by loading)."""
        from irc.weights import default_entry

        specialist = default_entry(self.name, "jpeg")
        return None if specialist is None or specialist.sha256 == self.weights_sha256 else specialist.name

    def forward(self, x: Tensor, **knobs: Any) -> Tensor:
        task = self._condition(knobs.get("task", "auto"), x)
        if not self._channels_last:
            return self.network(x, task)
        return self.network(x.contiguous(memory_format=torch.channels_last), task).contiguous()

    def _condition(self, task: str, x: Tensor) -> Tensor | None:
        """The ``(B,)`` condition index of ``task`` for a conditioned network (``None``: blind)."""
        known = self.config.condition
        if not known:
            return None
        return torch.full((x.shape[0],), known.index(task), dtype=torch.long, device=x.device)

    # ----------------------------------------------------------------- training
    def training_step(self, batch: TrainBatch, step: int) -> dict[str, Tensor]:
        """``{"main": loss}``: the TUR loss over the batch's tasks, or plain L1."""
        if batch.lq.shape[1] != 3:
            raise UsageError("tur trains on RGB images (set data.grey = false)")
        image, uncertainty = self.network.forward_train(batch.lq, self._training_condition(batch))
        if self.config.loss == "l1":
            return {"main": l1_loss(image, batch.gt)}
        return {"main": uncertainty_loss(image.float(), batch.gt, uncertainty.float(), batch.task, eps=self.config.uncertainty_floor)}

    def _training_condition(self, batch: TrainBatch) -> Tensor | None:
        """Condition indices for a training batch: the sample's task with probability
        ``condition_prob``, else ``auto`` (always ``auto`` for ``clean`` and unknown labels)."""
        known = self.config.condition
        if not known:
            return None
        labels = batch.task or ("auto",) * batch.lq.shape[0]
        shown = torch.rand(len(labels)) < self.config.condition_prob
        index = [known.index(t) if (t in known and bool(s)) else 0 for t, s in zip(labels, shown)]
        return torch.tensor(index, dtype=torch.long, device=batch.lq.device)
