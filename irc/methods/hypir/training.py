"""HYPIR training (METHODS.md §3.4-3.5): the generator's losses and the multi-level discriminator.

* **Generator** (loss group ``g``): the one-step forward of inference, untiled — VAE encode (a
  posterior sample), UNet at ``config.train_t`` with the prompt's embedding, the predicted clean
  latent at the same timestep, VAE decode — trained through the LoRA only; the VAE and the text
  encoder are frozen. Loss ``weight_mse * MSE + weight_lpips * LPIPS + weight_gan * BCE(D(x), 0.8)``
  on images in [-1, 1] (1 / 5 / 0.5 upstream).
* **Discriminator** (loss group ``d``, the heads only): a frozen feature backbone and trainable
  heads on several of its levels — per map BlurPool, a spectral-norm 3x3 convolution with stride
  2, LeakyReLU(0.2), BlurPool, a spectral-norm 1x1 convolution with stride 2 to one logit map; on
  the pooled vector two spectral-norm linear layers. BCE with logits per level, spatially
  averaged and summed over levels; real target 0.8 (one-sided smoothing), fake target 0
  (vision-aided GAN's ``multilevel_loss``). Backbones: ``tiny`` (ours: a small frozen, randomly
  initialised ConvNeXt-style stack — random features still separate real from generated
  statistics; for tests and CPU runs), ``timm`` (timm's ``convnext_tiny``, pretrained when its
  weights can be loaded) and ``openclip`` (the paper's OpenCLIP ConvNeXt-XXL,
  ``laion2b_s34b_b82k_augreg_soup``). timm and open_clip stay optional.
* **LPIPS**: the ``lpips`` package (VGG) when it and its network weights are present; otherwise
  (``config.lpips = "auto"``) the run says so once and uses the documented fallback: the mean L1
  distance of the discriminator backbone's normalised features at every level, a
  feature-matching perceptual loss that needs no download.
* **The encoder stage** (``config.stage = "encoder"``, recipes/hypir-sd2-encoder.toml): the VAE
  encoder (and its ``quant_conv``) is fine-tuned so that ``decode(encode'(lq))`` approaches the
  ground truth with the decoder frozen: MSE + LPIPS, no UNet, no discriminator. HYPIR's paper
  describes this degradation-removal stage but its code does not include it (upstream issues #6,
  #38); this is irc's implementation of the description.

EMA (the training loop's) covers the trainable components that ship: the LoRA, or the encoder.
Checkpoints hold the LoRA (or encoder), the discriminator heads and the optimisers' state, never
the frozen base.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from irc.errors import UsageError
from irc.methods.base import TrainBatch

__all__ = ["Discriminator", "TinyBackbone", "generator_forward", "parameter_groups", "training_step"]

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class BlurPool(nn.Module):
    """Anti-aliasing blur ``[1 2 1]^T [1 2 1] / 16`` per channel, stride 1, reflect padding."""

    def __init__(self, channels: int):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16).expand(channels, 1, 3, 3).contiguous(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel.to(x.dtype), groups=x.shape[1])


class TinyBackbone(nn.Module):
    """A small frozen ConvNeXt-style feature extractor (random, seeded): three maps and a vector."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), seed: int = 0):
        super().__init__()
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            layers, c = [], 3
            self.stem = nn.Conv2d(3, widths[0], 4, stride=4)
            c = widths[0]
            for i, w in enumerate(widths):
                layers.append(nn.Sequential(
                    nn.Conv2d(c, w, 2, stride=2) if i else nn.Identity(),
                    nn.Conv2d(w, w, 7, padding=3, groups=w), nn.GroupNorm(1, w), nn.Conv2d(w, 2 * w, 1), nn.GELU(), nn.Conv2d(2 * w, w, 1),
                ))  # fmt: skip
                c = w
            self.stages = nn.ModuleList(layers)
        finally:
            torch.random.set_rng_state(state)
        self.map_channels = list(widths)
        self.vector_channels = widths[-1]
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        h = self.stem(x)
        maps = []
        for stage in self.stages:
            h = stage(h)
            maps.append(h)
        return maps, h.mean(dim=(2, 3))


class _TimmBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        try:
            import timm
        except ImportError:
            raise UsageError("hypir discriminator = \"timm\" needs the timm package: pip install timm (or discriminator = \"tiny\")") from None
        try:
            self.model = timm.create_model("convnext_tiny", pretrained=True, features_only=False)
        except Exception as err:  # noqa: BLE001 - no weights reachable: say so, use random ones
            print(f"irc: timm convnext_tiny weights unavailable ({type(err).__name__}); using random initialisation", file=sys.stderr)
            self.model = timm.create_model("convnext_tiny", pretrained=False)
        self.map_channels = [96, 192, 384]
        self.vector_channels = 768
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        _, intermediates = self.model.forward_intermediates(x)
        return list(intermediates[:3]), self.model.forward_head(self.model.forward_features(x), pre_logits=True)


class _OpenClipBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        try:
            import open_clip
        except ImportError:
            raise UsageError("hypir discriminator = \"openclip\" needs open_clip: pip install open_clip_torch (or discriminator = \"tiny\")") from None
        model, _, _ = open_clip.create_model_and_transforms("convnext_xxlarge", pretrained="laion2b_s34b_b82k_augreg_soup")
        self.visual = model.visual
        self.map_channels = [384, 768, 1536]
        self.vector_channels = 1024
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        trunk = self.visual.trunk
        _, intermediates = trunk.forward_intermediates(x)
        return list(intermediates[1:4]), self.visual(x)


def build_backbone(kind: str) -> nn.Module:
    if kind == "tiny":
        return TinyBackbone()
    if kind == "timm":
        return _TimmBackbone()
    if kind == "openclip":
        return _OpenClipBackbone()
    raise UsageError(f"unknown hypir discriminator backbone {kind!r}; expected tiny, timm or openclip")


class Discriminator(nn.Module):
    """Frozen backbone + trainable multi-level heads (see the module docstring)."""

    def __init__(self, backbone: nn.Module, width: int = 512):
        super().__init__()
        self.backbone = backbone
        self.map_heads = nn.ModuleList(
            nn.Sequential(
                BlurPool(c), spectral_norm(nn.Conv2d(c, width, 3, stride=2, padding=1)), nn.LeakyReLU(0.2),
                BlurPool(width), spectral_norm(nn.Conv2d(width, 1, 1, stride=2)),
            )  # fmt: skip
            for c in backbone.map_channels
        )
        self.vector_head = nn.Sequential(spectral_norm(nn.Linear(backbone.vector_channels, width)), nn.LeakyReLU(0.2), spectral_norm(nn.Linear(width, 1)))
        self.register_buffer("mean", torch.tensor(_CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """Backbone features of images ``x`` in [-1, 1] (mapped to [0, 1], CLIP-normalised)."""
        return self.backbone(((x + 1) / 2 - self.mean.to(x)) / self.std.to(x))

    def forward(self, x: Tensor) -> list[Tensor]:
        """Logits per level: one map per feature map, then the vector's."""
        maps, vector = self.features(x)
        return [head(m) for head, m in zip(self.map_heads, maps)] + [self.vector_head(vector)]


def multilevel_bce(logits: list[Tensor], target: float) -> Tensor:
    """BCE with logits against ``target``, averaged per level and summed over levels."""
    return sum(F.binary_cross_entropy_with_logits(z.float(), torch.full_like(z.float(), target)) for z in logits)


# ------------------------------------------------------------------------------------ losses


class Perceptual(nn.Module):
    """LPIPS (VGG) when available, else the feature-matching fallback of the module docstring."""

    def __init__(self, mode: str, discriminator: Discriminator | None):
        super().__init__()
        self.lpips = None
        self.discriminator = [discriminator]  # not a submodule: its heads train in group d
        if mode != "none":
            try:
                import lpips

                self.lpips = lpips.LPIPS(net="vgg", verbose=False).requires_grad_(False)
            except Exception as err:  # noqa: BLE001 - the package or its weights are missing
                if mode == "lpips":
                    raise UsageError(f"hypir lpips = \"lpips\" but the lpips package or its VGG weights are unavailable ({err})") from None
                print("irc: lpips (and its VGG weights) unavailable: the perceptual loss is the discriminator backbone's feature distance", file=sys.stderr)
        self.mode = mode

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Distance of images in [-1, 1]."""
        if self.mode == "none":
            return x.new_zeros(())
        if self.lpips is not None:
            return self.lpips(x.float(), y.float()).mean()
        disc = self.discriminator[0]
        fx, vx = disc.features(x)
        with torch.no_grad():
            fy, vy = disc.features(y)
        norm = lambda t: t / (t.flatten(1).norm(dim=1).view(-1, *[1] * (t.dim() - 1)) / math.sqrt(t[0].numel()) + 1e-6)  # noqa: E731
        return sum((norm(a) - norm(b)).abs().mean() for a, b in zip(fx + [vx], fy + [vy])) / (len(fx) + 1)


def _training_parts(method):
    """Build the discriminator and the perceptual loss the first time a step needs them."""
    if getattr(method, "_disc", None) is None:
        cfg = method.config
        disc = Discriminator(build_backbone(cfg.discriminator)).to(method.device)
        method._disc = disc
        method._perceptual = Perceptual(cfg.lpips, disc).to(method.device)
    return method._disc, method._perceptual


def generator_forward(method, lq: Tensor, prompts: list[str] | None = None, noise: Tensor | None = None) -> Tensor:
    """The one-step forward of inference, untiled, differentiable: ``lq`` in [0, 1] -> image in [-1, 1]."""
    from irc.methods.hypir import VAE_SCALE
    from irc.methods.hypir.enhance import x0_from_eps

    net, cfg = method.network, method.config
    dist = net.vae.encode(lq * 2 - 1).latent_dist
    z = dist.mean + dist.std * (torch.randn_like(dist.mean) if noise is None else noise)
    if cfg.stage == "encoder":
        return net.vae.decode(z).sample
    text = torch.cat([method.embed(p) for p in (prompts or [""] * lq.shape[0])])
    t = torch.full((lq.shape[0],), int(cfg.train_t), device=lq.device, dtype=torch.long)
    eps = net.unet(z * VAE_SCALE, t, encoder_hidden_states=text).sample
    abar = float(method.scheduler.alphas_cumprod[int(cfg.train_t)])
    return net.vae.decode(x0_from_eps(z * VAE_SCALE, eps, abar) / VAE_SCALE).sample


def parameter_groups(method) -> dict[str, list[nn.Parameter]]:
    """``g``: the LoRA (or the encoder); ``d``: the discriminator's heads (lora stage only)."""
    train = "encoder" if method.config.stage == "encoder" else "lora"
    groups = {"g": [p for p in method.component(train).parameters() if p.requires_grad]}
    if method.config.stage == "lora":
        disc, _ = _training_parts(method)
        groups["d"] = [p for n, p in disc.named_parameters() if not n.startswith("backbone.")]
    return groups


def training_step(method, batch: TrainBatch, step: int) -> dict[str, Tensor]:
    """``{"g": ..., "d": ...}`` (lora stage) or ``{"g": ...}`` (encoder stage)."""
    cfg = method.config
    disc, perceptual = _training_parts(method)
    gt = batch.gt * 2 - 1
    fake = generator_forward(method, batch.lq)
    loss_g = cfg.weight_mse * F.mse_loss(fake.float(), gt.float()) + cfg.weight_lpips * perceptual(fake, gt)
    if cfg.stage == "encoder":
        return {"g": loss_g}
    loss_g = loss_g + cfg.weight_gan * multilevel_bce(disc(fake), cfg.real_target)
    loss_d = multilevel_bce(disc(gt), cfg.real_target) + multilevel_bce(disc(fake.detach()), 0.0)
    return {"g": loss_g, "d": loss_d}
