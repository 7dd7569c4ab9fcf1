"""Backbones TUR plugs into.

A backbone is an ``nn.Module`` with ``out_channels`` / ``feature_channels`` attributes and
``forward_features(x) -> (features, image)``: ``features`` are its last full-resolution features
``(B, feature_channels, H, W)`` (what the uncertainty head reads, METHODS.md §4.2) and ``image``
is its restored output ``(B, 3, H, W)``. ``forward(x)`` returns the image only.
"""

from irc.methods.tur.backbones.convunet import ConvUNet
from irc.methods.tur.backbones.nafnet import NAFNetLite
from irc.methods.tur.backbones.promptir import PromptIR

__all__ = ["ConvUNet", "NAFNetLite", "PromptIR"]
