"""PromptIR (Potlapalli et al., "PromptIR: Prompting for All-in-One Blind Image Restoration",
NeurIPS 2023), written from the paper's description, as the second TUR backbone.

A Restormer U-Net (Zamir et al., CVPR 2022) with four levels of transformer blocks; each block is
multi-Dconv head transposed attention (MDTA: attention across channels, so its cost is linear
in the pixel count) followed by a gated-Dconv feed-forward network (GDFN). On the decoder side,
before each of the three up-sampling steps, a *prompt generation block* mixes ``prompt_len``
learned prompt tensors with weights from the globally pooled features (softmax of a linear
layer), resizes the mix to the feature size and refines it with a 3x3 conv; a *prompt
interaction* transformer block runs on the concatenation of features and prompt, and a 1x1
conv returns to the level's width. The paper's configuration: dim 48, blocks [4, 6, 6, 8],
heads [1, 2, 4, 8], FFN expansion 2.66, 4 refinement blocks, prompt dims 64 / 128 / 320
(prompt sizes 64 / 32 / 16, length 5). The last full-resolution features are the refinement
output (``2 * dim`` = 96 channels), where TUR's head reads (METHODS.md §4.2).

MDTA and the prompt weights use global statistics, so tiled restores with PromptIR are close
to, not equal to, untiled ones. We do not train it here: it builds, runs and trains in tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irc.methods.tur.backbones.nafnet import LayerNorm2d


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention: a C/heads x C/heads attention map per head."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dw = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project((attn @ v).reshape(b, c, h, w))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward: GELU(dw(W1 x)) * dw(W2 x), then a 1x1 projection."""

    def __init__(self, dim: int, expansion: float):
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dw = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.dw(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, expansion: float):
        super().__init__()
        if dim % heads:
            heads = math.gcd(dim, heads)
        self.norm1, self.attn = LayerNorm2d(dim, eps=1e-5), MDTA(dim, heads)
        self.norm2, self.ffn = LayerNorm2d(dim, eps=1e-5), GDFN(dim, expansion)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class PromptGenBlock(nn.Module):
    """Prompt generation: a feature-conditioned softmax mix of ``length`` learned prompts."""

    def __init__(self, prompt_dim: int, length: int, size: int, feature_dim: int):
        super().__init__()
        self.prompts = nn.Parameter(torch.rand(1, length, prompt_dim, size, size))
        self.linear = nn.Linear(feature_dim, length)
        self.conv = nn.Conv2d(prompt_dim, prompt_dim, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        weights = self.linear(x.mean(dim=(-2, -1))).softmax(dim=1)  # (B, length)
        prompt = (weights[:, :, None, None, None] * self.prompts).sum(dim=1)
        prompt = F.interpolate(prompt, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(prompt)


def _stage(dim: int, n: int, heads: int, expansion: float) -> nn.Sequential:
    return nn.Sequential(*[TransformerBlock(dim, heads, expansion) for _ in range(n)])


class PromptIR(nn.Module):
    """PromptIR with four levels (three down-samplings); input sides must be multiples of 8.

    Args:
        dim: width at full resolution (``dim * 2 ** l`` at level ``l``).
        blocks: transformer blocks per level, full resolution first (the last is the latent).
        refinement_blocks: blocks after the decoder, at ``2 * dim`` channels.
        heads: attention heads per level.
        expansion: GDFN expansion factor.
        prompt_dims: prompt channels at decoder levels 1, 2, 3.
        prompt_len: number of learned prompts per level.
        channels: image channels.
    """

    multiple_of = 8

    def __init__(
        self,
        dim: int = 48,
        blocks=(4, 6, 6, 8),
        refinement_blocks: int = 4,
        heads=(1, 2, 4, 8),
        expansion: float = 2.66,
        prompt_dims=(64, 128, 320),
        prompt_len: int = 5,
        channels: int = 3,
    ):
        super().__init__()
        if len(blocks) != 4 or len(heads) != 4 or len(prompt_dims) != 3:
            raise ValueError("PromptIR takes 4 block counts, 4 head counts and 3 prompt dims")
        d = [dim, dim * 2, dim * 4, dim * 8]
        self.out_channels = channels
        self.feature_channels = 2 * dim
        self.embed = nn.Conv2d(channels, dim, 3, padding=1, bias=False)
        self.encoders = nn.ModuleList(_stage(d[i], blocks[i], heads[i], expansion) for i in range(3))
        self.downs = nn.ModuleList(nn.Sequential(nn.Conv2d(d[i], d[i] // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2)) for i in range(3))
        self.latent = _stage(d[3], blocks[3], heads[3], expansion)
        # decoder level l (3, 2, 1) starts from features of width d[l] (d[3] for the latent)
        self.prompts = nn.ModuleList()
        self.interactions = nn.ModuleList()
        self.prompt_reduce = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.skip_reduce = nn.ModuleList()
        self.decoders = nn.ModuleList()
        sizes = (64, 32, 16)
        for level in (3, 2, 1):
            width = d[level]
            p = prompt_dims[level - 1]
            self.prompts.append(PromptGenBlock(p, prompt_len, sizes[level - 1], width))
            self.interactions.append(TransformerBlock(width + p, heads[level], expansion))
            self.prompt_reduce.append(nn.Conv2d(width + p, width, 1, bias=False))
            self.ups.append(nn.Sequential(nn.Conv2d(width, width * 2, 3, padding=1, bias=False), nn.PixelShuffle(2)))
            out = d[level - 1]
            # Restormer keeps the concatenated 2*dim channels at full resolution
            self.skip_reduce.append(nn.Conv2d(2 * out, out, 1, bias=False) if level > 1 else nn.Identity())
            dec_width = out if level > 1 else 2 * dim
            self.decoders.append(_stage(dec_width, blocks[level - 1], heads[level - 1], expansion))
        self.refinement = _stage(2 * dim, refinement_blocks, heads[0], expansion)
        self.output = nn.Conv2d(2 * dim, channels, 3, padding=1, bias=False)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` -> (refinement features ``(B, 2 * dim, H, W)``, restored image)."""
        h = self.embed(x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            h = encoder(h)
            skips.append(h)
            h = down(h)
        h = self.latent(h)
        for i, skip in enumerate(reversed(skips)):
            prompt = self.prompts[i](h)
            h = self.prompt_reduce[i](self.interactions[i](torch.cat([h, prompt], dim=1)))
            h = self.ups[i](h)
            h = self.decoders[i](self.skip_reduce[i](torch.cat([h, skip], dim=1)))
        features = self.refinement(h)
        return features, x + self.output(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[1]
