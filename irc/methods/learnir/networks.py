"""LearnIR's two networks: the resnoise U-Net ``eps_res(z_t, z_y, t)`` and the DPSC correction
``mu(z_t, z_y, t)`` (the same design, half the width by default).

Why our own U-Net rather than diffusers' ``UNet2DModel``: its GroupNorm layers normalise over the
whole input, so a tile (or the same image at another DRM scale) sees other statistics than the
whole image, and its attention is global. Here every operation is local: 3x3 convolutions,
SiLU, and the timestep as a learned per-channel shift in every residual block (FiLM without the
scale), no normalisation. Tiled sampling then equals untiled sampling once the overlap covers the
receptive field, and the network runs at any resolution (inputs are padded to a multiple of
``2 ** levels``). The final convolution is zero-initialised: an untrained ``mu`` is exactly zero,
so the corrected sampler starts as the plain one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConditionalUNet", "timestep_features"]


def timestep_features(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features ``(B, dim)`` of timestep values ``(B,)`` (0-1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _Block(nn.Module):
    def __init__(self, channels: int, emb: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.shift = nn.Linear(emb, channels)
        with torch.no_grad():
            self.conv2.weight.mul_(0.1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = F.silu(self.conv1(x) + self.shift(emb)[:, :, None, None])
        return x + self.conv2(h)


class ConditionalUNet(nn.Module):
    """``(z_t, z_y, t) -> (B, out_channels, H, W)``: a U-Net on the concatenation of ``z_t`` and
    the condition ``z_y``, widths ``width * 2**level``.

    Args:
        channels: image channels (of ``z_t``, ``z_y`` and the output).
        width: channels at full resolution.
        levels: down-samplings (inputs are padded to a multiple of ``2 ** levels``).
        blocks: residual blocks per level, on each side, and in the middle.
    """

    def __init__(self, channels: int = 3, width: int = 32, levels: int = 2, blocks: int = 1):
        super().__init__()
        self.levels = levels
        emb = 4 * width
        self.embed = nn.Sequential(nn.Linear(width, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.width = width
        self.intro = nn.Conv2d(2 * channels, width, 3, padding=1)
        self.down_blocks, self.downs = nn.ModuleList(), nn.ModuleList()
        c = width
        for _ in range(levels):
            self.down_blocks.append(nn.ModuleList(_Block(c, emb) for _ in range(blocks)))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle = nn.ModuleList(_Block(c, emb) for _ in range(blocks))
        self.ups, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for _ in range(levels):
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.PixelShuffle(2)))
            c //= 2
            self.up_blocks.append(nn.ModuleList(_Block(c, emb) for _ in range(blocks)))
        self.ending = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.ending.weight)
        nn.init.zeros_(self.ending.bias)

    @property
    def multiple_of(self) -> int:
        return 2**self.levels

    def forward(self, z_t: Tensor, z_y: Tensor, t: Tensor) -> Tensor:
        h, w = z_t.shape[-2:]
        m = self.multiple_of
        ph, pw = (-h) % m, (-w) % m
        x = torch.cat([z_t, z_y], dim=1)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        emb = self.embed(timestep_features(t.reshape(-1).expand(x.shape[0]), self.width).to(x.dtype))
        h_ = self.intro(x)
        skips = []
        for blocks, down in zip(self.down_blocks, self.downs):
            for block in blocks:
                h_ = block(h_, emb)
            skips.append(h_)
            h_ = down(h_)
        for block in self.middle:
            h_ = block(h_, emb)
        for up, blocks, skip in zip(self.ups, self.up_blocks, reversed(skips)):
            h_ = up(h_) + skip
            for block in blocks:
                h_ = block(h_, emb)
        out = self.ending(h_)
        return out[..., :h, :w] if (ph or pw) else out
