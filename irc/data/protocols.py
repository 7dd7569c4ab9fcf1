"""The :class:`Protocol` record: how a benchmark's inputs are made and how results are scored.

Also the task names a protocol accepts (:data:`TASKS`, :data:`MIXTURE_TASKS`). The protocol of
each dataset is tabulated in :mod:`irc.data.benchmarks`; :func:`~irc.data.benchmarks.open_benchmark`
resolves its options into one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["MIXTURE_TASKS", "TASKS", "Protocol"]

TASKS: tuple[str, ...] = (
    "sr", "denoise", "cs", "jpeg", "real-denoise", "cassi", "derain", "dehaze", "lowlight", "deblur", "shadow",
    "photo-noise", "photo-jpeg", "photo-blur", "clean", "shadow-synth",
)
"""Protocol tasks besides ``"mixture:<task>"``."""

MIXTURE_TASKS: tuple[str, ...] = ("sr", "blur", "noise", "jpeg", "rain", "haze", "dark")
"""MiOIR's seven tasks (``irc.operators.mixtures.TASKS``), accepted as ``task`` on cbsd68."""

_COLORS = ("y", "rgb", "grey", "spectral")


@dataclass(frozen=True)
class Protocol:
    """How a benchmark's inputs are made and how results are scored.

    Attributes:
        dataset: Benchmark name.
        task: ``"sr" | "denoise" | "cs" | "jpeg" | "real-denoise" | "cassi" | "derain" |
            "dehaze" | "lowlight" | "deblur" | "shadow"`` or ``"mixture:<task>"``.
        color: Channel(s) scored: ``"y"`` (BT.601 studio-swing luma of RGB, MATLAB
            ``rgb2ycbcr``), ``"rgb"``, ``"grey"``, or ``"spectral"`` (all bands of a cube).
        crop_border: Pixels removed from every side before scoring.
        round_to_uint8: Quantise the restored image to 8 bits before scoring.
        scale: SR factor (1 otherwise).
        noise_sigma: Gaussian noise standard deviation, 0-255 units, or ``None``.
        jpeg_quality: JPEG quality of the input, or ``None``.
        kernel: 0-based index into USRNet's 12 test kernels, or ``None``.
        blur_sigma: Gaussian blur standard deviation in pixels (``gblur``), or ``None``.
        seed: Seed of every synthetic random choice (with the image index).
    """

    dataset: str
    task: str
    color: str
    crop_border: int
    round_to_uint8: bool = True
    scale: int = 1
    noise_sigma: float | None = None
    jpeg_quality: int | None = None
    kernel: int | None = None
    blur_sigma: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS and not (
            self.task.startswith("mixture:") and self.task.split(":", 1)[1] in MIXTURE_TASKS
        ):
            raise ValueError(f"unknown protocol task {self.task!r}")
        if self.color not in _COLORS:
            raise ValueError(f"unknown protocol color {self.color!r}; expected one of {_COLORS}")

    def describe(self) -> str:
        """One sentence saying how ``lq`` (and ``gt``) are made."""
        s, t = self.scale, self.task
        if t == "sr" and self.kernel is None:
            return (
                f"gt: HR mod-cropped to a multiple of {s}, RGB; lq: MATLAB imresize(gt, 1/{s}) "
                "(bicubic, antialiased) on uint8 with rounding after each 1-D pass, identical to "
                f"the standard LR_bicubic/X{s} images"
            )
        if t == "sr":
            noise = f", plus unclipped Gaussian noise sigma {self.noise_sigma:g}/255" if self.noise_sigma else ""
            return (
                f"gt: RGB HR mod-cropped to a multiple of lcm({s}, 8); lq: circular convolution with "
                f"USRNet kernel {self.kernel} (0-based, kernels_12.mat as stored) in float64, "
                f"{s}-fold upper-left decimation, truncated to uint8 like scipy.ndimage.convolve on "
                f"uint8 (USRNet main_test_table1.py){noise}; noise seed SeedSequence([seed, index])"
            )
        if t == "cs":
            return "lq = gt (grey, 8-bit; the CS method applies its own sampling operator)"
        if t == "denoise":
            return (
                f"lq = gt + {self.noise_sigma:g}/255 * N(0, 1), unclipped and unrounded (DnCNN protocol); "
                "GaussianNoise field seeded from SeedSequence([seed, index])"
            )
        if t in ("jpeg", "photo-jpeg"):
            kind = "grey" if self.color == "grey" else "RGB (4:2:0)"
            return f"lq = Pillow (libjpeg) JPEG round trip of the uint8 {kind} gt at quality {self.jpeg_quality}"
        if t == "photo-noise":
            return (
                f"lq = round(clip(gt + {self.noise_sigma:g}/255 * N(0, 1), 0, 1) * 255) / 255: noise as a stored photo "
                "carries it (clipped, 8-bit); GaussianNoise field seeded from SeedSequence([seed, index])"
            )
        if t == "photo-blur":
            return f"lq = gt blurred by an isotropic Gaussian, sigma {self.blur_sigma:g} px (size 2 ceil(3 sigma) + 1, reflect), rounded to 8 bits"
        if t == "clean":
            return "lq = gt: a clean photo; scores how much a method changes what needs no restoration"
        if t == "shadow-synth":
            return (
                "lq = irc.operators.shadow.Shadow() cast on the RGB gt with params drawn from "
                "SeedSequence([seed, index]), clipped and rounded to 8 bits"
            )
        if t == "cassi":
            return "lq = gt cube (28 bands in [0, 1]; the CASSI method applies its own mask and dispersion)"
        if t.startswith("mixture:"):
            task = t.split(":", 1)[1]
            return (
                f"lq = MiOIR '{task}' degradation of the RGB gt with TaskMixture.fixed_params('{task}', "
                "index, seed) (irc.operators.mixtures.mio_seven_task_mixture), clipped and rounded to 8 bits"
            )
        extra = ", shadow mask in Sample.extra['mask']" if t == "shadow" else ""
        return f"lq = the dataset's real degraded image, gt = its reference image{extra}"

    def fingerprint(self) -> dict[str, Any]:
        """Every field plus ``description`` (:meth:`describe`), JSON-able."""
        return {**dataclasses.asdict(self), "description": self.describe()}


def _p(dataset: str, task: str, color: str, border: int, **kw: Any) -> Protocol:
    return Protocol(dataset=dataset, task=task, color=color, crop_border=border, **kw)
