"""What real photos carry: the degradation mixture of irc's default photo model.

The default ``irc restore photo.jpg`` must never make a photo worse, so its training
distribution is what cameras and the web actually do to pictures, and nothing that changes
content (haze, rain and low light leave the blind model; they stay available by name, see
:mod:`irc.operators.mixtures`). Every sample is one of five tasks:

=======  =========  ==========================================================================
task     share      what the input gets
=======  =========  ==========================================================================
clean    15%        nothing: the network must learn to leave a good photo alone
noise    35%        white Gaussian (sigma 3-55, colour or grey) or sensor noise (below), then a
                    camera JPEG (q 70-95) in 30% of cases
jpeg     20%        JPEG q 10-95 (4:2:0 or 4:4:4); a first compression at q 50-95 in 25%
blur     15%        mild Gaussian blur (sigma 0.4-2), defocus (disk radius 0.8-3) or motion
                    (2-9 px), then light noise (50%) and a JPEG q 75-95 (30%)
sr       15%        downscaling by 1.5-4 (MATLAB bicubic, area or bilinear), an optional JPEG
                    of the small image (30%, q 60-95), bicubic back up to the original size
=======  =========  ==========================================================================

Clean samples carry the label of a random degradation task (see :meth:`PhotoMixture.label`).
In 10% of the samples (``grey_prob``; recipes set it with ``data.grey_prob``) the image is made
grey first (one luma channel, degraded as a grey image, so JPEG works on one plane as in
classic5) and replicated to RGB with its target, the way irc feeds grey photos to an RGB
network. All of these shares and ranges are our choices (nothing in the literature fixes a
"photo" distribution); the model card states them.

**Sensor noise** (:class:`SensorNoise`) is the heteroscedastic Poisson-Gaussian model of raw
sensors, ``var(x) = read^2 + shot^2 * x / 0.5`` (Foi et al., "Practical Poissonian-Gaussian
noise modeling and fitting for single-image raw-data", TIP 2008), with a luma/chroma balance
(cameras' noise is partly shared between channels) and an optional spatial correlation (a
small Gaussian filter on the noise field, renormalised), which demosaicking and in-camera
denoising leave in JPEG photos such as PolyU's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from irc.operators.blur_kernels import KernelSampler, MotionKernelSampler, gaussian_kernel
from irc.operators.degradation import Compose, Degradation, Identity, OneOf
from irc.operators.filtering import Blur, reflect_pad
from irc.operators.jpeg import JPEG
from irc.operators.mixtures import TaskMixture
from irc.operators.noise import GaussianNoise
from irc.operators.pixels import _check_image, _work, quantize_8bit, rgb_to_gray
from irc.operators.resampling import resize
from irc.operators.resize import imresize
from irc.operators.seeding import _generator, _seed, _uniform

__all__ = ["PHOTO_TASKS", "DiskKernelSampler", "DownUp", "PhotoMixture", "SensorNoise", "photo_mixture"]

#: The photo model's tasks, ``clean`` first.
PHOTO_TASKS: tuple[str, ...] = ("clean", "noise", "jpeg", "blur", "sr")
_PHOTO_PROBS: tuple[float, ...] = (0.15, 0.35, 0.20, 0.15, 0.15)


class SensorNoise(Degradation):
    """Poisson-Gaussian sensor noise with a luma/chroma balance and spatial correlation.

    For a clean pixel value ``x`` (per channel), the noise standard deviation is
    ``sqrt((read/255)^2 + (shot/255)^2 * x / 0.5)``: ``read`` is the signal-independent part and
    ``shot`` the signal-dependent part's standard deviation at mid grey (both on the 0-255
    scale). The unit noise field is ``sqrt(luma_share) n_shared + sqrt(1 - luma_share) n_channel``
    (one field shared by the channels plus one per channel), optionally low-passed by a Gaussian
    of standard deviation ``corr`` pixels and rescaled to unit variance.

    Params: ``{"read", "shot", "luma_share", "corr", "seed"}``.

    Args:
        read_range: ``read`` uniform in this range (default 0.5-12).
        shot_range: ``shot`` uniform in this range (default 0-30).
        luma_share_range: default 0-0.8.
        corr_prob: probability of a spatially correlated field (default 0.5).
        corr_range: ``corr`` when correlated (default 0.4-1.0 pixels).
    """

    name = "sensor_noise"

    def __init__(
        self,
        read_range: tuple[float, float] = (0.5, 12.0),
        shot_range: tuple[float, float] = (0.0, 30.0),
        luma_share_range: tuple[float, float] = (0.0, 0.8),
        corr_prob: float = 0.5,
        corr_range: tuple[float, float] = (0.4, 1.0),
    ) -> None:
        self.read_range = tuple(float(v) for v in read_range)
        self.shot_range = tuple(float(v) for v in shot_range)
        self.luma_share_range = tuple(float(v) for v in luma_share_range)
        self.corr_prob = float(corr_prob)
        self.corr_range = tuple(float(v) for v in corr_range)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        corr = _uniform(rng, self.corr_range) if rng.uniform() < self.corr_prob else 0.0
        return {
            "read": _uniform(rng, self.read_range),
            "shot": _uniform(rng, self.shot_range),
            "luma_share": _uniform(rng, self.luma_share_range),
            "corr": corr,
            "seed": _seed(rng),
        }

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        _check_image(x)
        w = _work(x)
        b, c, h, wd = w.shape
        share = float(params["luma_share"]) if c > 1 else 1.0
        fields = []
        for i in range(b):
            g = _generator(int(params["seed"]), i)
            shared = torch.randn((1, h, wd), generator=g)
            own = torch.randn((c, h, wd), generator=g)
            fields.append(math.sqrt(share) * shared + math.sqrt(1.0 - share) * own)
        noise = torch.stack(fields).to(device=w.device, dtype=w.dtype)
        corr = float(params["corr"])
        if corr > 0:
            noise = _correlate(noise, corr)
        read, shot = float(params["read"]) / 255.0, float(params["shot"]) / 255.0
        std = torch.sqrt(read**2 + shot**2 * w.clamp(0.0, 1.0) / 0.5)
        return (w + std * noise).clamp(0.0, 1.0).to(x.dtype)


def _correlate(noise: Tensor, sigma: float) -> Tensor:
    """Low-pass a unit-variance white field with a Gaussian and rescale it to unit variance."""
    size = 2 * math.ceil(3 * sigma) + 1
    k = torch.as_tensor(gaussian_kernel(size, sigma), dtype=noise.dtype, device=noise.device)
    b, c, h, w = noise.shape
    pad = size // 2
    y = F.conv2d(reflect_pad(noise.reshape(b * c, 1, h, w), (pad, pad, pad, pad)), k[None, None])
    # white noise through a filter k has variance sum(k^2)
    return (y / torch.sqrt((k**2).sum())).reshape(b, c, h, w)


class DiskKernelSampler:
    """Draws defocus kernel specs ``{"type": "disk", "radius"}``, radius uniform in ``radius_range``."""

    def __init__(self, radius_range: tuple[float, float] = (0.8, 3.0)):
        if not 0 < radius_range[0] <= radius_range[1]:
            raise ValueError(f"radius_range must satisfy 0 < lo <= hi, got {radius_range}")
        self.radius_range = tuple(float(v) for v in radius_range)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {"type": "disk", "radius": _uniform(rng, self.radius_range)}


class DownUp(Degradation):
    """Lost resolution: downscale by ``scale``, optionally JPEG the small image, scale back up.

    The output has the input's size (a same-size restoration network sees a soft image). Down:
    ``mode`` (``matlab-bicubic`` antialiased as MATLAB, ``area``, or ``bilinear`` with torch's
    antialias), rounded to 8 bits as a stored small image is; up: MATLAB-compatible bicubic to
    exactly the input size.

    Params: ``{"scale": float, "mode": str, "jpeg": int or None}``.
    """

    name = "down_up"

    def __init__(
        self,
        scale_range: tuple[float, float] = (1.5, 4.0),
        modes: Sequence[str] = ("matlab-bicubic", "area", "bilinear"),
        jpeg_prob: float = 0.3,
        jpeg_range: tuple[int, int] = (60, 95),
    ) -> None:
        self.scale_range = tuple(float(v) for v in scale_range)
        self.modes = tuple(modes)
        self.jpeg_prob = float(jpeg_prob)
        self.jpeg = JPEG(quality_range=jpeg_range)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        scale = _uniform(rng, self.scale_range)
        mode = self.modes[int(rng.integers(len(self.modes)))]
        quality = self.jpeg.sample(rng)["quality"] if rng.uniform() < self.jpeg_prob else None
        return {"scale": scale, "mode": mode, "jpeg": quality}

    def apply(self, x: Tensor, params: Mapping[str, Any]) -> Tensor:
        _check_image(x)
        h, w = x.shape[-2:]
        factor = 1.0 / float(params["scale"])
        mode = params["mode"]
        if mode == "matlab-bicubic":
            small = imresize(_work(x), scale=factor)
        else:
            small = resize(_work(x), mode=mode, scale=factor, antialias=True)
        small = quantize_8bit(small.clamp(0.0, 1.0))
        if params.get("jpeg") is not None:
            small = self.jpeg.apply(small, {"quality": int(params["jpeg"])})
        return imresize(small, size=(h, w)).clamp(0.0, 1.0).to(x.dtype)


class PhotoMixture(TaskMixture):
    """A :class:`TaskMixture` whose samples may be made grey first (``params["grey"]``).

    A grey sample's target is its BT.601 luma replicated to the input's channels, and its input
    is the degradation applied to that one grey plane, then replicated likewise.
    """

    def __init__(self, degradations: Mapping[str, Degradation], probs: Sequence[float] | None = None, grey_prob: float = 0.1) -> None:
        super().__init__(degradations, probs=probs, quantize=True)
        self.grey_prob = float(grey_prob)

    def sample(self, rng: np.random.Generator, task: str | None = None) -> dict[str, Any]:
        drawn = super().sample(rng, task)
        drawn["grey"] = bool(rng.uniform() < self.grey_prob)
        others = [t for t in self.tasks if t != "clean"]
        drawn["group"] = others[int(rng.integers(len(others)))] if drawn["task"] == "clean" else drawn["task"]
        return drawn

    def label(self, sample: Mapping[str, Any]) -> str:
        """A clean sample is labelled with a random degradation task: it is the mildest member of
        that task (no degradation at all), not a task of its own. TUR's loss weights a task by the
        inverse of its average uncertainty; a "clean" task, with almost no error, would get by far
        the largest weight and pull the network to the identity (measured: 400 steps of TUR with a
        clean group left sigma-25 noise untouched, 20.5 -> 20.5 dB, while plain L1 reached 26.3 dB)."""
        return str(sample.get("group", sample["task"]))

    def target(self, x: Tensor, sample: Mapping[str, Any]) -> Tensor:
        if sample.get("grey") and x.shape[1] == 3:
            return rgb_to_gray(_work(x)).to(x.dtype).expand_as(x).contiguous()
        return x

    def apply(self, x: Tensor, sample: Mapping[str, Any]) -> Tensor:
        if sample.get("grey") and x.shape[1] == 3:
            grey = rgb_to_gray(_work(x)).to(x.dtype)
            return super().apply(grey, sample).expand_as(x).contiguous()
        return super().apply(x, sample)


def photo_mixture(probs: Sequence[float] | None = None, grey_prob: float = 0.1, strong_jpeg: float = 0.0) -> PhotoMixture:
    """The default photo model's mixture (tasks :data:`PHOTO_TASKS`; table in the module docstring).

    ``strong_jpeg``: the fraction of ``jpeg`` samples whose (last) compression is at quality
    10-30 rather than 10-95. The second training stage of the photo model raises it: with
    uniform qualities only a quarter of the JPEG samples are that strong, and the first stage
    gained +0.57 dB on classic5 q10 where ARCNN-sized networks reach +1.2 (the shipped second
    stage, at 0.25, +0.83; weights/tur/tur-photo.md).
    """
    if not 0.0 <= strong_jpeg <= 1.0:
        raise ValueError(f"strong_jpeg must be in [0, 1], got {strong_jpeg}")
    camera_jpeg = (JPEG(quality_range=(70, 95)), 0.3)

    def last_jpeg(quality_range: tuple[int, int]) -> OneOf:
        return OneOf([JPEG(quality_range=quality_range), JPEG(quality_range=quality_range, subsampling="4:4:4")], probs=(0.75, 0.25))

    any_jpeg = last_jpeg((10, 95)) if strong_jpeg == 0 else OneOf([last_jpeg((10, 30)), last_jpeg((10, 95))], probs=(strong_jpeg, 1.0 - strong_jpeg))
    noise = Compose([
        OneOf([GaussianNoise(sigma_range=(3.0, 55.0), gray_prob=0.2), SensorNoise()]),
        camera_jpeg,
    ])  # fmt: skip
    jpeg = Compose([(JPEG(quality_range=(50, 95)), 0.25), any_jpeg])
    mild_gaussian = KernelSampler(
        kernel_sizes=(13,), kernel_types=("iso",), kernel_probs=(1.0,), sigma_range=(0.4, 2.0), sinc_prob=0.0
    )
    blur = Compose([
        OneOf([Blur(mild_gaussian), Blur(DiskKernelSampler((0.8, 3.0))), Blur(MotionKernelSampler((2.0, 9.0)))], probs=(0.5, 0.3, 0.2)),
        (GaussianNoise(sigma_range=(0.5, 4.0), gray_prob=0.3), 0.5),
        (JPEG(quality_range=(75, 95)), 0.3),
    ])  # fmt: skip
    degradations = {"clean": Identity(), "noise": noise, "jpeg": jpeg, "blur": blur, "sr": DownUp()}
    return PhotoMixture(degradations, probs=probs if probs is not None else _PHOTO_PROBS, grey_prob=grey_prob)
