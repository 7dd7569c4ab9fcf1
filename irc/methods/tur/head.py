"""TUR's uncertainty head ("var_conv", METHODS.md §4.2).

Conv3x3(C->C) -> ELU -> Conv3x3(C->C) -> ELU -> Conv3x3(C->3) -> Softplus, on the backbone's last
full-resolution features, in parallel with its image output. The Softplus keeps U > 0 (Wu et
al., "Debiased All-in-one Image Restoration with Task Uncertainty Regularization", AAAI 2025).
Used only by the training loss; inference never runs it.
"""

from __future__ import annotations

from torch import nn


class UncertaintyHead(nn.Sequential):
    """``(B, C, H, W)`` features -> per-pixel uncertainty ``(B, out_channels, H, W)``, > 0."""

    def __init__(self, channels: int, out_channels: int = 3):
        super().__init__(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ELU(),
            nn.Conv2d(channels, out_channels, 3, padding=1),
            nn.Softplus(),
        )

