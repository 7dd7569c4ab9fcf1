"""A light NAFNet-style U-Net: irc's CPU default backbone for TUR.

NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022) builds a U-Net from
blocks of LayerNorm -> 1x1 conv -> depthwise 3x3 conv -> SimpleGate (split channels in two and
multiply) -> 1x1 conv, plus a gated feed-forward half, each with a learned residual scale.

Our choices, and why:

* **No simplified channel attention.** NAFNet's SCA pools the whole image into one vector; that
  makes tiled and untiled outputs differ however large the overlap. Without it every operation
  is local, so ``irc restore --tile`` is exact once the overlap covers the receptive field.
* **Small:** width 16, three levels (16/32/64 channels), a few blocks per level: 0.39 M
  parameters and about 38 kFLOPs per pixel at the default config. A 12-megapixel photo takes a
  few CPU minutes with tiling, and 3,600 training steps take under an hour on one CPU core.
* **Zero-initialised output convolution**, with a global residual (``image = x + conv(features)``):
  the untrained network is the identity, so a short CPU training starts from the input's PSNR
  instead of from noise (the same trick as zero-initialised residual branches in ReZero /
  ControlNet).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LayerNorm2d(nn.Module):
    """LayerNorm over channels at each pixel (a purely local operation)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + self.eps)
        return y * self.weight[:, None, None] + self.bias[:, None, None]


class SimpleGate(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """NAFNet block without the global channel attention (see the module docstring)."""

    def __init__(self, c: int, expand: int = 2):
        super().__init__()
        dw = c * expand
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, c * expand, 1)
        self.conv5 = nn.Conv2d(c * expand // 2, c, 1)
        self.gate = SimpleGate()
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv3(self.gate(self.conv2(self.conv1(self.norm1(x)))))
        x = x + y * self.beta
        y = self.conv5(self.gate(self.conv4(self.norm2(x))))
        return x + y * self.gamma


class NAFNetLite(nn.Module):
    """NAFNet-style U-Net with ``len(enc_blocks)`` down-sampling levels.

    Args:
        width: channels at full resolution (doubled at each level).
        enc_blocks: blocks per encoder level (one down-sampling after each level).
        middle_blocks: blocks at the lowest resolution.
        dec_blocks: blocks per decoder level, lowest level first; same length as ``enc_blocks``.
        channels: image channels.

    Input height and width must be multiples of ``2 ** len(enc_blocks)``.
    """

    def __init__(self, width: int = 16, enc_blocks=(1, 1, 2), middle_blocks: int = 2, dec_blocks=(1, 1, 1), channels: int = 3):
        super().__init__()
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError(f"enc_blocks {enc_blocks} and dec_blocks {dec_blocks} need the same length")
        self.levels = len(enc_blocks)
        self.out_channels = channels
        self.feature_channels = width
        self.intro = nn.Conv2d(channels, width, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        c = width
        for n in enc_blocks:
            self.encoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle = nn.Sequential(*[NAFBlock(c) for _ in range(middle_blocks)])
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for n in dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))
        self.ending = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.ending.weight)
        nn.init.zeros_(self.ending.bias)

    @property
    def multiple_of(self) -> int:
        return 2**self.levels

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` ``(B, C, H, W)`` -> (last full-resolution features ``(B, width, H, W)``, image)."""
        h = self.intro(x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            h = encoder(h)
            skips.append(h)
            h = down(h)
        h = self.middle(h)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            h = decoder(up(h) + skip)
        return h, x + self.ending(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[1]
