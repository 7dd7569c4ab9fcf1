"""A plain-convolution U-Net chosen for CPU speed: the backbone of irc's default photo model.

Why this shape (measured on the project's 2-core CPU with ``irc bench`` and a micro-benchmark
of single layers, see the photo model card):

* **Dense 3x3 convolutions only.** oneDNN runs a dense 3x3 convolution with 32-256 channels at
  130-230 GFLOP/s in fp32 and 650-900 GFLOP/s in bf16 (AMX) with channels-last tensors, while the
  depthwise convolutions, LayerNorms and gates of NAFNet-style blocks reach a few GFLOP/s (the
  former default managed 3.4 GFLOP/s). A network of plain convolutions does ten times the
  arithmetic in a tenth of the time.
* **Widths double as the resolution halves** (32, 64, 128, 256 at 1, 1/2, 1/4, 1/8), so every
  level costs the same per input pixel and the large receptive field (noise levels and JPEG
  blocks are estimated from context) comes from the cheap low-resolution levels.
* **ReLU residual blocks without normalisation**, the second convolution of each block scaled
  down at initialisation, and a **zero-initialised output convolution** with a global residual
  (``image = x + conv(features)``): the untrained network is the identity, the right start for a
  model that must leave clean photos alone.
* **Everything is local** (no global pooling or attention), so tiled restores equal untiled ones
  once the tile overlap covers the receptive field.
* **Optional task conditioning**: with ``tasks`` the network takes a task index per image and
  adds a learned per-channel bias after the first convolution and in the bottleneck (index 0 is
  ``auto``, the blind mode). It costs nothing at run time and lets ``--task noise`` tell the
  model what to remove instead of guessing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with 3x3 convolutions."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():  # keep the residual path small at first (no normalisation layers)
            self.conv2.weight.mul_(0.1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x), inplace=True))


class ConvUNet(nn.Module):
    """U-Net of plain 3x3 residual blocks, widths ``width * 2**level``.

    Args:
        width: channels at full resolution.
        enc_blocks: residual blocks per encoder level (one 2x down-sampling after each level).
        middle_blocks: blocks at the lowest resolution.
        dec_blocks: blocks per decoder level, lowest level first; same length as ``enc_blocks``.
        channels: image channels.
        tasks: number of task conditions (0: blind, no conditioning input).

    Input height and width must be multiples of ``2 ** len(enc_blocks)``.
    """

    def __init__(self, width: int = 32, enc_blocks=(1, 1, 1), middle_blocks: int = 2, dec_blocks=(1, 1, 1), channels: int = 3, tasks: int = 0):
        super().__init__()
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError(f"enc_blocks {enc_blocks} and dec_blocks {dec_blocks} need the same length")
        if width < 1 or middle_blocks < 0 or min((*enc_blocks, *dec_blocks), default=0) < 0:
            raise ValueError(f"width must be >= 1 and block counts >= 0, got width {width}")
        self.levels = len(enc_blocks)
        self.out_channels = channels
        self.feature_channels = width
        self.tasks = int(tasks)
        self.intro = nn.Conv2d(channels, width, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        c = width
        for n in enc_blocks:
            self.encoders.append(nn.Sequential(*[ResBlock(c) for _ in range(n)]))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle = nn.Sequential(*[ResBlock(c) for _ in range(middle_blocks)])
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for n in dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(nn.Sequential(*[ResBlock(c) for _ in range(n)]))
        self.ending = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.ending.weight)
        nn.init.zeros_(self.ending.bias)
        if self.tasks:
            self.task_intro = nn.Embedding(self.tasks, width)
            self.task_middle = nn.Embedding(self.tasks, width * 2**self.levels)
            nn.init.zeros_(self.task_intro.weight)
            nn.init.zeros_(self.task_middle.weight)

    @torch.no_grad()
    def make_identity_blocks(self, absent: set[str]) -> list[str]:
        """Turn the residual blocks whose parameters are all in ``absent`` into the identity.

        Used to start a deeper network from a shallower one's weights (``init_from`` with more
        blocks per level): a block's second convolution zeroed makes ``x + conv2(...)`` return
        ``x``, so the grown network computes exactly what the file's did, and training starts
        from there (the zeroed convolution still gets gradients; the first one once it moves).

        Args:
            absent: parameter names (this module's ``state_dict`` keys) the file lacks.

        Returns:
            the names of the blocks made the identity (``"decoders.0.1"``, ...).
        """
        grown = []
        for name, module in self.named_modules():
            if isinstance(module, ResBlock) and {f"{name}.{k}" for k in module.state_dict()} <= absent:
                module.conv2.weight.zero_()
                module.conv2.bias.zero_()
                grown.append(name)
        return grown

    @property
    def multiple_of(self) -> int:
        return 2**self.levels

    def forward_features(self, x: Tensor, task: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x`` ``(B, C, H, W)`` -> (last full-resolution features ``(B, width, H, W)``, image).

        Args:
            task: ``(B,)`` long task indices (only for a conditioned network; ``None`` = 0, auto).
        """
        h = self.intro(x)
        if self.tasks:
            if task is None:
                task = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            h = h + self.task_intro(task).to(h.dtype)[:, :, None, None]
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            h = encoder(h)
            skips.append(h)
            h = down(h)
        if self.tasks:
            h = h + self.task_middle(task).to(h.dtype)[:, :, None, None]
        h = self.middle(h)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            h = decoder(up(h) + skip)
        return h, x + self.ending(h)

    def forward(self, x: Tensor, task: Tensor | None = None) -> Tensor:
        return self.forward_features(x, task)[1]
