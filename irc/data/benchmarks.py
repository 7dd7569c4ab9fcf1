"""Named benchmark datasets and the exact protocols they are scored with.

``open_benchmark(name, ...)`` returns a :class:`Benchmark`: a sequence of :class:`Sample`
(``name``, ground truth ``gt``, method input ``lq``) plus the :class:`Protocol` that says how the
input was made and how the result must be scored. Every synthetic input is a deterministic
function of the protocol (its ``seed`` included) and of the image index, so numbers measured
twice, or on two machines, are comparable; ``Protocol.fingerprint()`` records all of it.

Datasets live in folders under :func:`irc.data.data_root` (``--data-root`` >
``$IRC_DATA_ROOT`` > ``~/.cache/irc/data``). :data:`BENCHMARKS` lists each one with its folder
layout; the project's data pack provides the ``in_pack`` ones, the others (marked "user") must
be placed there by the user. No download address is registered for any of them: the original
hosts are Google-Drive / Baidu / project pages whose files change. A user (or a later release)
can set ``url`` and ``sha256`` on an entry, and :func:`fetch_dataset` then downloads, verifies
and unpacks it.

Protocols (``border`` = pixels removed from every side before PSNR/SSIM; "rounded" = the
restored image is quantised to 8 bits before scoring, as papers score saved PNGs):

===========  ==============  =====  ==========  ===================================================
dataset      task            color  border      how ``lq`` is made
===========  ==============  =====  ==========  ===================================================
set5 set14   sr (x4)         y      s           MATLAB bicubic of the mod-cropped HR, uint8 after
                                                each pass (= the standard ``LR_bicubic`` files) [1]
 + kernel k  sr (USRNet)     rgb    s**2        circular blur with kernel k of ``kernels_12.mat``,
                                                s-fold upper-left decimation, truncated to uint8 [2]
set11        cs              grey   0           ``lq = gt``: the method measures it [3]
set14 (cs)   cs              grey   0           ``lq = gt``, gt = 8-bit BT.601 luma (OpenCV) [3]
set12 bsd68  denoise (25)    grey   0           ``gt + sigma/255 N(0,1)``, unclipped [4]
cbsd68       denoise (25)    rgb    0           same, colour [4]
cbsd68 +t    mixture:<t>     rgb    4           MiOIR task t, fixed params per image [5]
cbsd68       photo-noise     rgb    0           gt + sigma/255 N(0,1), clipped and rounded to 8 bits
cbsd68       photo-jpeg      rgb    0           colour JPEG (4:2:0) at --quality (default 30)
cbsd68       photo-blur      rgb    0           Gaussian blur, --blur sigma (default 1), 8-bit
cbsd68       clean           rgb    0           ``lq = gt``: how much a method changes a clean photo
cbsd68       shadow-synth    rgb    0           irc's cast shadows (:mod:`irc.operators.shadow`),
                                                fixed params per image, 8-bit
bsd68 +k     sr (USRNet)     rgb    s**2        as set5 + kernel, on the colour CBSD68 [2]
classic5     jpeg (q10)      grey   0           Pillow/libjpeg round trip at quality q [6]
polyu        real-denoise    rgb    0           real noisy photo (``*_real``) vs mean (``*_mean``),
                                                the test scenes of :data:`POLYU_TEST_SCENES` [7]
general100   cs / sr         grey   0 / s       as set14 [3] / as set5 [1]
urban100     sr (x4)         y      s           as set5 [1]
kaist-cassi  cassi           (28)   0           ``lq = gt`` cube: the method measures it [8]
rain100l     derain          rgb    0           real pair [9]
sots         dehaze          rgb    0           real pair (RESIDE SOTS-outdoor) [9]
lol          lowlight        rgb    0           real pair (LOL eval15) [10]
gopro        deblur          rgb    0           real pair [10]
istd         shadow          rgb    0           real pair, shadow mask in ``Sample.extra`` [11]
ohaze        dehaze          rgb    0           real pair, the 5 test scenes 41-45 [12]
revide       dehaze          rgb    0           real video frames, the test videos [13]
faceshadow   shadow          rgb    0           real pair (a user's FaceShadow-style folder) [14]
===========  ==============  =====  ==========  ===================================================

Choices worth knowing:

* Gaussian denoising keeps the noisy input unclipped and unrounded, as DnCNN's test script does
  (``input = label + sigma/255 * randn``), and scores the float output without rounding, so the
  ``identity`` row is the noisy-input PSNR that papers list (20.17 dB in expectation at sigma 25);
  a denoiser's output is in [0, 1] anyway and rounding it would move PSNR by < 0.01 dB. The noise comes from
  :class:`irc.operators.noise.GaussianNoise` with its ``seed`` parameter derived from
  ``SeedSequence([seed, index])``: the same (seed, image) always gets the same field, at any
  sigma (fields at sigma 15 and 50 differ only by the factor).
* USRNet's Table-1 script computes ``scipy.ndimage.convolve`` on the **uint8** HR, which
  *truncates* to uint8, and scores RGB PSNR with ``border = sf**2`` on an HR mod-cropped to
  ``lcm(sf, 8)`` (cszn/USRNet ``main_test_table1.py``). We reproduce that: the kernels are used as
  stored (float32 values summing to 1 only up to ~1e-8; normalising them would move flat areas
  across an integer and change the truncation), the blur runs in float64 through
  :class:`irc.operators.blur_sr.BlurDownsample` and the result is floored. On Set5's butterfly
  this matched scipy's output at every pixel for all 12 kernels. ``kernel`` is 0-based (0-11);
  USRNet's file names use ``k{index + 1}``.
* Grey images in colour SR sets (Set14 ``img_003`` is stored grey, ``img_010`` is RGB with equal
  channels) are replicated to RGB, so every SR input has 3 channels; on the Y channel this
  changes nothing.
* Block-CS test code (ISTA-Net and its successors) reads images with OpenCV and measures the Y
  channel of ``cv2.COLOR_BGR2YCrCb`` (full-range BT.601, 8-bit); colour sets used for CS
  (``set14``, ``general100``) get that luma. ISTA-Net scores the clipped float reconstruction;
  we round it (difference < 0.01 dB).
* The MiOIR mixture protocol (``cbsd68`` with ``task`` one of ``sr blur noise jpeg rain haze
  dark``) uses ``crop_border = 4``, the value of MiOIR's own validation configs, rather than the
  0 of the AirNet/PromptIR protocols, since it is MiOIR's degradations that are evaluated; the
  degraded input is rounded to 8 bits as MiOIR stored its test inputs as PNG.
* Derain/dehaze/low-light/deblur/shadow sets are scored on RGB with no border, as the all-in-one
  papers (AirNet, PromptIR, TUR) do; single-task derain papers often use the Y channel instead,
  and shadow papers often resize ISTD to 256x256 first (we keep the full size).
* KAIST-CASSI cubes are not rounded (``round_to_uint8=False``); MST's test code quantises with
  ``round(x * 256)`` per band, which a CASSI evaluator has to apply itself.

References: [1] Bevilacqua et al., BMVC 2012 (Set5); Zeyde et al., Curves and Surfaces 2010
(Set14); protocol of Dong et al., SRCNN, TPAMI 2016 and Lim et al., EDSR, CVPRW 2017. [2] Zhang,
Van Gool & Timofte, "Deep Unfolding Network for Image Super-Resolution", CVPR 2020.
[3] Kulkarni et al., ReconNet, CVPR 2016 (Set11); Zhang & Ghanem, ISTA-Net, CVPR 2018.
[4] Zhang et al., DnCNN, TIP 2017 (Set12, BSD68, CBSD68 from Martin et al., ICCV 2001).
[5] Kong et al., MiOIR, arXiv 2401.03379. [6] Foi et al., Pointwise SA-DCT, TIP 2007 (classic5);
Dong et al., ARCNN, ICCV 2015. [7] Xu et al., "Real-world Noisy Image Denoising: A New
Benchmark", arXiv 1804.02603. [8] Meng et al., TSA-Net, ECCV 2020; Cai et al., MST, CVPR 2022.
[9] Yang et al., JORDER, CVPR 2017 (Rain100L); Li et al., RESIDE, TIP 2019 (SOTS).
[10] Wei et al., RetinexNet, BMVC 2018 (LOL); Nah et al., CVPR 2017 (GoPro). [11] Wang et al.,
ST-CGAN, CVPR 2018 (ISTD). [12] Ancuti et al., O-HAZE, CVPRW 2018 (test split 41-45: the
NTIRE 2018 dehazing challenge's). [13] Zhang et al., "Learning to Restore Hazy Video", CVPR
2021 (REVIDE). [14] Bao et al., LearnIR, ICLR 2026 (FaceShadow, 1,000 test images; not yet
released: irc reads a ``shadow/`` + ``gt/`` folder of equal names).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch import Tensor

from irc.data import data_root
from irc.data._common import (
    grey_u8,
    keyed_seed,
    list_images,
    modcrop,
    read_float,
    read_u8,
    rgb,
    to_tensor,
)
from irc.errors import IrcError, UsageError, did_you_mean

__all__ = [
    "BENCHMARKS",
    "MIXTURE_TASKS",
    "TASKS",
    "TRAINING_SETS",
    "Benchmark",
    "BenchmarkInfo",
    "Protocol",
    "Sample",
    "TrainingSetInfo",
    "PAIRING_RULES",
    "PAIR_SETS",
    "POLYU_TEST_SCENES",
    "pair_set_files",
    "polyu_scene",
    "benchmark_names",
    "fetch_dataset",
    "open_benchmark",
    "training_files",
]

TASKS: tuple[str, ...] = (
    "sr", "denoise", "cs", "jpeg", "real-denoise", "cassi", "derain", "dehaze", "lowlight", "deblur", "shadow",
    "photo-noise", "photo-jpeg", "photo-blur", "clean", "shadow-synth",
)
"""Protocol tasks besides ``"mixture:<task>"``."""

MIXTURE_TASKS: tuple[str, ...] = ("sr", "blur", "noise", "jpeg", "rain", "haze", "dark")
"""MiOIR's seven tasks (``irc.operators.mixtures.TASKS``), accepted as ``task`` on cbsd68."""

_COLORS = ("y", "rgb", "grey", "spectral")
_HELP = "see `irc eval --help`"


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


@dataclass
class Sample:
    """One benchmark image.

    Attributes:
        name: Identifier, normally the file stem (unique within the benchmark).
        gt: ``(C, H, W)`` float32 ground truth in ``[0, 1]`` (C = 1, 3, or 28 for CASSI).
        lq: ``(C, h, w)`` float32 method input. For Gaussian denoising it is **not** clipped to
            ``[0, 1]`` (DnCNN's protocol feeds the raw noisy values); for SR ``h, w`` are
            ``H/s, W/s``; otherwise the size equals ``gt``'s.
        extra: Additional per-image tensors, e.g. ``{"mask": (1, H, W)}`` for ISTD.
    """

    name: str
    gt: Tensor
    lq: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class _Item:
    """Files behind one sample."""

    name: str
    gt: Path
    lq: Path | None = None
    extra: tuple[tuple[str, Path], ...] = ()


class _Missing(Exception):
    """A path the layout requires is absent (turned into the one-line IrcError by the caller)."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path


def _images(folder: Path, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    if not folder.is_dir():
        raise _Missing(folder)
    files = list_images(folder) if suffixes is None else list_images(folder, suffixes=suffixes)
    if not files:
        raise _Missing(folder)
    return files


def _clean(sub: str = "", suffixes: tuple[str, ...] | None = None) -> Callable[[Path], list[_Item]]:
    """Finder for a folder of clean images (the input is synthesised)."""

    def find(folder: Path) -> list[_Item]:
        return [_Item(p.stem, p) for p in _images(folder / sub if sub else folder, suffixes)]

    return find


def _first_dir(folder: Path, *subs: str) -> Path:
    for sub in subs:
        if (folder / sub).is_dir():
            return folder / sub
    return folder


def _paired(lq_sub: str, gt_sub: str, key: Callable[[str], str] = lambda s: s) -> Callable[[Path], list[_Item]]:
    """Finder for ``folder/lq_sub`` and ``folder/gt_sub`` matched by ``key(stem)``."""

    def find(folder: Path) -> list[_Item]:
        lq_files = _images(folder / lq_sub)
        gt_by_key = {key(p.stem): p for p in _images(folder / gt_sub)}
        items = []
        for lq in lq_files:
            gt = gt_by_key.get(key(lq.stem))
            if gt is None:
                raise IrcError(f"{lq}: no ground truth for it in {folder / gt_sub} (pairs are matched by name)")
            items.append(_Item(lq.stem, gt, lq))
        return items

    return find


#: PolyU scenes held out for testing, by scene word across cameras, so that no test scene is
#: ever trained on: 20 of the 100 cropped pairs, from all five camera models. ``irc eval
#: --dataset polyu`` scores these; the named pair set ``polyu-train`` (recipes' ``data.pairs``)
#: holds the other 80. Our split: PolyU publishes none for the cropped set.
POLYU_TEST_SCENES: frozenset[str] = frozenset({"bicycle", "book", "door", "flower", "fruit", "printer"})


def polyu_scene(stem: str) -> str:
    """The scene word of a PolyU file stem: ``Canon5D2_5_160_6400_bicycle_10_real`` -> ``bicycle``."""
    base = re.sub(r"_(real|mean)$", "", stem, flags=re.IGNORECASE)
    base = re.sub(r"_+\d+$", "", base)  # the crop index (one file has a double underscore)
    return base.rstrip("_").rsplit("_", 1)[-1].lower()


def _polyu_pairs(folder: Path, split: str) -> list[tuple[str, Path, Path]]:
    """``(name, noisy, clean)`` of one split (``test``, ``train`` or ``all``) of a PolyU folder."""
    from irc.data.folders import pair_files

    files = _images(folder)
    real = [p for p in files if p.stem.endswith("_real")]
    if not real:
        raise _Missing(folder / "*_real.JPG")
    if split != "all":
        real = [p for p in real if (polyu_scene(p.stem) in POLYU_TEST_SCENES) == (split == "test")]
    return pair_files(real, files, {"_real": "_mean"})


def _find_polyu(folder: Path) -> list[_Item]:
    return [_Item(name, gt, lq) for name, lq, gt in _polyu_pairs(folder, "test")]


def _rain_key(stem: str) -> str:
    # Rain100L is distributed as rain-001.png / norain-001.png (and as rain-001 / rain-001 in
    # other repacks): drop either prefix so both layouts pair by number.
    for prefix in ("norain-", "rain-", "norain_", "rain_"):
        if stem.lower().startswith(prefix):
            return stem[len(prefix):]
    return stem


def _sots_key(stem: str) -> str:
    # SOTS hazy images are named <id>_<A>_<beta> (e.g. 0001_0.8_0.2); the clear one is <id>.
    return stem.split("_", 1)[0]


PAIRING_RULES: dict[str, Callable[[str], str]] = {
    "stem": lambda stem: stem,
    "rain": _rain_key,
    "reside": _sots_key,
}
"""How a degraded file name matches its clean partner's (both stems go through the rule):
``stem`` (identical names), ``rain`` (Rain100L/Rain100H: ``rain-001`` / ``norain-001``),
``reside`` (RESIDE/SOTS: ``0001_0.8_0.2`` / ``0001``)."""

@dataclass(frozen=True)
class PairSetInfo:
    """A named set of real training pairs for recipes' ``data.pairs`` (``[task, name]``).

    Attributes:
        name: the name recipes use.
        folder: its folder under the data root.
        description: one line for ``irc datasets list``.
        split: ``(folder) -> (degraded files, clean folder, suffix pairing)``.
    """

    name: str
    folder: str
    description: str
    split: Callable[[Path], tuple[list[Path], Path, dict[str, str]]]


def _polyu_train(folder: Path) -> tuple[list[Path], Path, dict[str, str]]:
    return [lq for _, lq, _ in _polyu_pairs(folder, "train")], folder, {"_real": "_mean"}


def _ohaze_train(folder: Path) -> tuple[list[Path], Path, dict[str, str]]:
    return [it.lq for it in _ohaze_split(folder, test=False)], folder / "GT", {"_hazy": "_GT"}


PAIR_SETS: dict[str, PairSetInfo] = {
    "polyu-train": PairSetInfo(
        "polyu-train", "PolyU_cropped", "the 80 PolyU training pairs (all scenes but POLYU_TEST_SCENES)", _polyu_train
    ),
    "ohaze-train": PairSetInfo("ohaze-train", "O-HAZE", "O-HAZE scenes 01-40 (41-45 are irc eval's)", _ohaze_train),
}


def pair_set_files(name: str, root: str | os.PathLike[str] | None = None) -> tuple[list[Path], Path, dict[str, str]]:
    """Degraded files, clean folder and pairing of a named pair set (see :data:`PAIR_SETS`).

    Raises:
        UsageError: unknown name. IrcError: its folder is missing from the data root.
    """
    info = PAIR_SETS.get(_normalise(name))
    if info is None:
        raise UsageError(f"unknown pair set {name!r}; expected one of {', '.join(sorted(PAIR_SETS))} (or [task, degraded folder, clean folder])")
    folder = data_root(root) / info.folder
    if not folder.is_dir():
        raise IrcError(f"pair set {info.name} not found: expected {folder}; {_HELP}")
    try:
        return info.split(folder)
    except _Missing as missing:
        raise IrcError(f"pair set {info.name}: {missing} not found") from None



def _find_urban100(folder: Path) -> list[_Item]:
    return _clean()(_first_dir(folder, "HR", "hr"))


def _find_gopro(folder: Path) -> list[_Item]:
    test = folder / "test"
    if not test.is_dir():
        raise _Missing(test)
    scenes = sorted(p for p in test.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not scenes:
        raise _Missing(test / "<scene>" / "blur")
    items = []
    for scene in scenes:
        # GoPro frame numbers repeat across scenes, so the scene is part of the name
        items.extend(
            _Item(f"{scene.name}_{it.name}", it.gt, it.lq) for it in _paired("blur", "sharp")(scene)
        )
    return items


def _find_istd(folder: Path) -> list[_Item]:
    base = folder / "test"
    shadow = _paired("test_A", "test_C")(base)
    masks = {p.stem: p for p in _images(base / "test_B")}
    items = []
    for it in shadow:
        mask = masks.get(it.name)
        if mask is None:
            raise IrcError(f"{it.lq}: no shadow mask for it in {base / 'test_B'}")
        items.append(_Item(it.name, it.gt, it.lq, (("mask", mask),)))
    return items


def _ohaze_key(stem: str) -> str:
    # O-HAZE names the two halves of a pair NN_outdoor_hazy and NN_outdoor_GT
    return re.sub(r"_(hazy|gt)$", "", stem, flags=re.IGNORECASE)


#: O-HAZE scenes scored by ``irc eval --dataset ohaze`` (the NTIRE 2018 challenge's test split);
#: the pair set ``ohaze-train`` holds scenes 01-40.
OHAZE_TEST_SCENES = range(41, 46)


def _ohaze_scene(stem: str) -> int:
    match = re.match(r"\d+", stem)
    return int(match.group()) if match else 0


def _ohaze_split(folder: Path, test: bool) -> list[_Item]:
    items = [it for it in _paired("hazy", "GT", _ohaze_key)(folder) if (_ohaze_scene(it.name) in OHAZE_TEST_SCENES) == test]
    if not items:
        raise _Missing(folder / "hazy" / ("41_outdoor_hazy.jpg" if test else "01_outdoor_hazy.jpg"))
    return items


def _find_ohaze(folder: Path) -> list[_Item]:
    return _ohaze_split(folder, test=True)


def _find_revide(folder: Path) -> list[_Item]:
    test = folder / "Test" / "hazy"
    if not test.is_dir():
        raise _Missing(test)
    videos = sorted(p for p in test.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not videos:
        raise _Missing(test / "<video>")
    items = []
    for video in videos:
        # frame names repeat across videos, so the video is part of the name
        pairs = _paired(f"hazy/{video.name}", f"gt/{video.name}")(folder / "Test")
        items.extend(_Item(f"{video.name}_{it.name}", it.gt, it.lq) for it in pairs)
    return items


def _find_cassi(folder: Path) -> list[_Item]:
    if not folder.is_dir():
        raise _Missing(folder)
    scenes = sorted(p for p in folder.glob("scene*.mat") if p.is_file())
    if not scenes:
        raise _Missing(folder / "scene01.mat")
    return [_Item(p.stem, p) for p in scenes]


@dataclass(frozen=True)
class BenchmarkInfo:
    """A named benchmark: where its files are and how it is scored by default.

    Attributes:
        name: Registry key (lower case).
        folder: The dataset's folder under the data root; :func:`fetch_dataset` unpacks here.
        layout: The files expected inside ``folder`` (shown in "not found" errors).
        protocol: The default protocol (``open_benchmark`` options override parts of it).
        channels: Channels of ``gt`` under the default protocol (1, 3 or 28).
        in_pack: Whether the project's data pack provides it.
        description: What the set is and where it comes from.
        tasks: Values ``open_benchmark(task=...)`` accepts (the first is the default).
        url: Archive to download with :func:`fetch_dataset` (``None``: place it yourself).
        sha256: Expected SHA-256 of that archive.
        archive_subdir: Folder inside the archive that becomes ``folder``; ``None``: the
            archive's single top-level folder if it has exactly one, else its whole content.
        find: ``folder -> items`` (internal).
    """

    name: str
    folder: str
    layout: str
    protocol: Protocol
    channels: int
    in_pack: bool
    description: str
    tasks: tuple[str, ...]
    url: str | None = None
    sha256: str | None = None
    archive_subdir: str | None = None
    find: Callable[[Path], list[_Item]] = field(default=_clean(), repr=False, compare=False)

    def path(self, root: str | os.PathLike[str] | None = None) -> Path:
        """``data_root(root) / folder``."""
        return data_root(root) / self.folder


def _p(dataset: str, task: str, color: str, border: int, **kw: Any) -> Protocol:
    return Protocol(dataset=dataset, task=task, color=color, crop_border=border, **kw)


BENCHMARKS: dict[str, BenchmarkInfo] = {
    info.name: info
    for info in [
        BenchmarkInfo(
            "set5", "Set5", "HR/*.png (LR_bicubic/X{2,3,4} optional, unused)",
            _p("set5", "sr", "y", 4, scale=4), 3, True,
            "Set5 (Bevilacqua et al. 2012): 5 colour SR test images", ("sr",), find=_clean("HR"),
        ),
        BenchmarkInfo(
            "set14", "Set14", "*.png (14 images)",
            _p("set14", "sr", "y", 4, scale=4), 3, True,
            "Set14 (Zeyde et al. 2010): 14 SR test images (two are grey, replicated to RGB); "
            "task 'cs' gives their 8-bit luma", ("sr", "cs"),
        ),
        BenchmarkInfo(
            "set11", "Set11", "*.tif (11 grey images)",
            _p("set11", "cs", "grey", 0), 1, True,
            "Set11 (ReconNet, Kulkarni et al. 2016): compressive-sensing test set", ("cs",),
        ),
        BenchmarkInfo(
            "set12", "Set12", "*.png (12 grey images)",
            _p("set12", "denoise", "grey", 0, noise_sigma=25.0, round_to_uint8=False), 1, True,
            "Set12 (DnCNN, Zhang et al. 2017): grey denoising test set", ("denoise",),
        ),
        BenchmarkInfo(
            "bsd68", "BSD68", "*.png (68 grey images); with kernel: ../CBSD68/*.png",
            _p("bsd68", "denoise", "grey", 0, noise_sigma=25.0, round_to_uint8=False), 1, True,
            "BSD68 (Roth & Black 2005 split of BSDS): grey denoising; with a USRNet kernel the "
            "colour CBSD68 images are used ('srbsd68')", ("denoise", "sr"),
        ),
        BenchmarkInfo(
            "cbsd68", "CBSD68", "*.png (68 colour images)",
            _p("cbsd68", "denoise", "rgb", 0, noise_sigma=25.0, round_to_uint8=False), 3, True,
            "CBSD68: colour BSD68 for colour denoising, USRNet SR, the MiOIR task mixture and the photo protocols "
            "(8-bit noise, colour JPEG, Gaussian blur, clean)",
            ("denoise", "sr", *[f"mixture:{t}" for t in MIXTURE_TASKS], "photo-noise", "photo-jpeg", "photo-blur", "clean", "shadow-synth"),
        ),
        BenchmarkInfo(
            "classic5", "classic5", "*.png (5 grey images)",
            _p("classic5", "jpeg", "grey", 0, jpeg_quality=10), 1, True,
            "classic5 (Foi et al. 2007): grey JPEG-artefact removal test set", ("jpeg",),
        ),
        BenchmarkInfo(
            "polyu", "PolyU_cropped", "<name>_real.JPG (noisy) + <name>_mean.JPG (clean)",
            _p("polyu", "real-denoise", "rgb", 0), 3, True,
            "PolyU real-world noise (Xu et al. 2018): the 20 test pairs (6 held-out scenes) of the 100 cropped 512x512 pairs",
            ("real-denoise",),
            find=_find_polyu,
        ),
        BenchmarkInfo(
            "general100", "general100", "*.png or *.bmp (100 colour images)",
            _p("general100", "cs", "grey", 0), 1, False,
            "General100 (Dong et al., FSRCNN 2016): CS (8-bit luma) and SR test set",
            ("cs", "sr"), find=_clean(suffixes=(".png", ".bmp")),
        ),
        BenchmarkInfo(
            "urban100", "urban100", "HR/*.png or *.png (100 colour HR images)",
            _p("urban100", "sr", "y", 4, scale=4), 3, False,
            "Urban100 (Huang et al., CVPR 2015): urban-structure SR test set", ("sr",),
            find=_find_urban100,
        ),
        BenchmarkInfo(
            "kaist-cassi", "kaist-cassi",
            "scene01.mat ... scene10.mat, each a 256x256x28 array under key 'img' or 'img_expand'",
            _p("kaist-cassi", "cassi", "spectral", 0, round_to_uint8=False), 28, False,
            "The 10 KAIST scenes of the CASSI simulation benchmark (TSA-Net/MST 'Truth')",
            ("cassi",), find=_find_cassi,
        ),
        BenchmarkInfo(
            "rain100l", "rain100l", "rainy/rain-XXX.png + norain/norain-XXX.png (or equal names)",
            _p("rain100l", "derain", "rgb", 0), 3, False,
            "Rain100L test set (Yang et al. 2017), 100 pairs", ("derain",),
            find=_paired("rainy", "norain", _rain_key),
        ),
        BenchmarkInfo(
            "sots", "sots", "outdoor/hazy/<id>_<A>_<beta>.jpg + outdoor/gt/<id>.png",
            _p("sots", "dehaze", "rgb", 0), 3, False,
            "RESIDE SOTS-outdoor (Li et al. 2019), 500 pairs", ("dehaze",),
            find=_paired("outdoor/hazy", "outdoor/gt", _sots_key),
        ),
        BenchmarkInfo(
            "lol", "lol", "eval15/low/*.png + eval15/high/*.png (equal names)",
            _p("lol", "lowlight", "rgb", 0), 3, False,
            "LOL eval15 (Wei et al. 2018), 15 low/normal-light pairs", ("lowlight",),
            find=_paired("eval15/low", "eval15/high"),
        ),
        BenchmarkInfo(
            "gopro", "gopro", "test/<scene>/blur/*.png + test/<scene>/sharp/*.png (equal names)",
            _p("gopro", "deblur", "rgb", 0), 3, False,
            "GoPro test split (Nah et al. 2017), 1111 pairs in 11 scenes", ("deblur",),
            find=_find_gopro,
        ),
        BenchmarkInfo(
            "istd", "istd", "test/test_A (shadow), test/test_B (mask), test/test_C (shadow-free), equal names",
            _p("istd", "shadow", "rgb", 0), 3, False,
            "ISTD test split (Wang et al. 2018), 540 triplets", ("shadow",), find=_find_istd,
        ),
        BenchmarkInfo(
            "ohaze", "O-HAZE", "hazy/NN_outdoor_hazy.jpg + GT/NN_outdoor_GT.jpg (NN = 01-45; 41-45 are scored)",
            _p("ohaze", "dehaze", "rgb", 0), 3, False,
            "O-HAZE (Ancuti et al. 2018): 45 real outdoor hazy/clear pairs; the test split is scenes 41-45", ("dehaze",),
            find=_find_ohaze,
        ),
        BenchmarkInfo(
            "revide", "REVIDE", "Test/hazy/<video>/*.JPG + Test/gt/<video>/*.JPG (equal names)",
            _p("revide", "dehaze", "rgb", 0), 3, False,
            "REVIDE (Zhang et al. 2021): real hazy indoor video frames with clear references, the test videos", ("dehaze",),
            find=_find_revide,
        ),
        BenchmarkInfo(
            "faceshadow", "FaceShadow", "shadow/*.png + gt/*.png (equal names)",
            _p("faceshadow", "shadow", "rgb", 0), 3, False,
            "FaceShadow (LearnIR, Bao et al. 2026): face photos with soft and hard shadows and shadow-free references "
            "(not yet released; a folder of this layout)", ("shadow",),
            find=_paired("shadow", "gt"),
        ),
    ]
}


@dataclass(frozen=True)
class TrainingSetInfo:
    """A training collection of clean images (degradations are synthesised), or of clean
    hyperspectral cubes (CASSI measures them itself).

    Attributes:
        name: Registry key. folder: Folder under the data root. channels: 1 or 3 (images),
            28 (``.mat`` cubes).
        in_pack: Provided by the data pack. description: What it is.
        url, sha256, archive_subdir: As in :class:`BenchmarkInfo`.
    """

    name: str
    folder: str
    channels: int
    in_pack: bool
    description: str
    url: str | None = None
    sha256: str | None = None
    archive_subdir: str | None = None

    @property
    def spectral(self) -> bool:
        """Hyperspectral cubes (``.mat``) rather than images."""
        return self.channels > 3

    @property
    def layout(self) -> str:
        if self.spectral:
            return f"hyperspectral cubes (*.mat, variable img or img_expand, H x W x {self.channels})"
        return "image files (*.png, *.jpg, *.bmp, *.tif)"

    def path(self, root: str | os.PathLike[str] | None = None) -> Path:
        """``data_root(root) / folder``."""
        return data_root(root) / self.folder


TRAINING_SETS: dict[str, TrainingSetInfo] = {
    info.name: info
    for info in [
        TrainingSetInfo("train400", "Train400", 1, True, "400 grey 180x180 BSDS crops (DnCNN training set); CS training"),
        TrainingSetInfo("t91", "T91", 3, True, "91 images of Yang et al. 2010 (SR and CS training)"),
        TrainingSetInfo("bsd200", "BSD200", 3, True, "200 colour BSDS500 training images (481x321)"),
        TrainingSetInfo("div2k-crops", "DIV2K_valid_256crops", 3, True, "100 256x256 crops of DIV2K validation images"),
        TrainingSetInfo("cave", "cave_1024_28", 28, False, "CAVE hyperspectral scenes, 1024x1024x28 (MST's CASSI training set)"),
    ]
}


def benchmark_names() -> list[str]:
    """Names accepted by :func:`open_benchmark`, sorted."""
    return sorted(BENCHMARKS)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _not_found(info: BenchmarkInfo | TrainingSetInfo, path: Path) -> IrcError:
    where = "" if info.in_pack else " (not in the data pack: place your copy there)"
    return IrcError(f"dataset {info.name} not found: expected {path} (layout: {info.folder}/ holds {info.layout}){where}; {_HELP}")


def training_files(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The image files of a training set, sorted.

    Args:
        name: A key of :data:`TRAINING_SETS` (``train400``, ``t91``, ``bsd200``, ``div2k-crops``;
            ``cave`` lists ``.mat`` cubes).
        root: Data root override (see :func:`irc.data.data_root`).

    Raises:
        UsageError: Unknown name. IrcError: The folder is missing or holds no images.
    """
    key = _normalise(name)
    info = TRAINING_SETS.get(key)
    if info is None:
        raise UsageError(f"unknown training set {name!r}; expected one of {', '.join(sorted(TRAINING_SETS))}")
    folder = info.path(root)
    try:
        return _images(folder, (".mat",) if info.spectral else None)
    except _Missing:
        raise _not_found(info, folder) from None


class Benchmark(Sequence[Sample]):
    """The samples of a benchmark under one protocol; samples are built lazily on access.

    Attributes:
        name: Benchmark name (``protocol.dataset``).
        protocol: How inputs are made and results scored.
        files: Ground-truth files, one per sample, in sample order.
        lq_files: The degraded file of each sample for real-pair sets, else ``None`` entries.
        names: Sample names.
        root: The dataset folder.
    """

    def __init__(self, info: BenchmarkInfo, protocol: Protocol, items: list[_Item], root: Path, data_root: Path):
        self.info = info
        self._data_root = data_root
        self.name = protocol.dataset
        self.protocol = protocol
        self.root = root
        self._items = items
        self.files: list[Path] = [it.gt for it in items]
        self.lq_files: list[Path | None] = [it.lq for it in items]
        self.names: list[str] = [it.name for it in items]

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self)} samples")
        return _make_sample(self, index)

    def __repr__(self) -> str:
        return f"Benchmark({self.name!r}, {len(self)} samples, task={self.protocol.task!r}, root={str(self.root)!r})"

    @cached_property
    def _kernel(self) -> Tensor:
        """The USRNet kernel of the protocol, float64, unnormalised (see module docstring)."""
        from irc.operators.kernels_io import load_kernels_mat

        path = self._data_root / "kernels" / "kernels_12.mat"
        if not path.is_file():
            raise IrcError(
                f"USRNet kernels not found: expected {path} (layout: kernels/kernels_12.mat, key 'kernels', "
                f"a 1x12 cell of 25x25 kernels); {_HELP}"
            )
        kernels = load_kernels_mat(path, "kernels", normalize=False, dtype=torch.float64)
        k = self.protocol.kernel
        if not 0 <= k < len(kernels):
            raise UsageError(f"kernel must be in 0..{len(kernels) - 1}, got {k}")
        return kernels[k]

    @cached_property
    def _mixture(self) -> Any:
        from irc.operators.mixtures import mio_seven_task_mixture

        return mio_seven_task_mixture()


def _noise_seed(seed: int, index: int) -> int:
    """``GaussianNoise`` param ``seed`` for image ``index``: a function of (seed, index) only."""
    return keyed_seed(seed, index)


def _add_noise(x: Tensor, sigma: float, seed: int, index: int) -> Tensor:
    from irc.operators.noise import GaussianNoise

    params = {"sigma": float(sigma), "gray": False, "seed": _noise_seed(seed, index)}
    return GaussianNoise(clip=False).apply(x[None], params)[0]


def _sr_bicubic(hr: np.ndarray, s: int, path: Path) -> tuple[Tensor, Tensor]:
    from irc.operators.resize import imresize_uint8

    if hr.shape[0] < s or hr.shape[1] < s:
        raise IrcError(f"{path}: {hr.shape[1]}x{hr.shape[0]} is too small for scale {s}")
    hr = modcrop(rgb(hr), s)
    lr = imresize_uint8(hr, 1.0 / s)
    return to_tensor(hr), to_tensor(lr)


def _sr_kernel(bench: Benchmark, hr: np.ndarray, index: int, path: Path) -> tuple[Tensor, Tensor]:
    from irc.operators.blur_sr import BlurDownsample

    p = bench.protocol
    s = p.scale
    hr = modcrop(rgb(hr), math.lcm(s, 8))
    kernel = bench._kernel
    if hr.shape[0] < kernel.shape[0] or hr.shape[1] < kernel.shape[1]:
        raise IrcError(f"{path}: {hr.shape[1]}x{hr.shape[0]} is smaller than the {kernel.shape[0]}x{kernel.shape[1]} kernel")
    x = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1))).to(torch.float64)[None]
    with torch.no_grad():
        y = BlurDownsample(kernel, s).A(x)[0]
    # scipy.ndimage.convolve on uint8 input writes uint8 output by truncation (C cast), which is
    # what USRNet's LR images are; the kernels are non-negative, so y >= 0 up to FFT round-off.
    lr = torch.floor(y).clamp(0, 255).to(torch.float32) / 255.0
    if p.noise_sigma:
        lr = _add_noise(lr, p.noise_sigma, p.seed, index)
    return to_tensor(hr), lr


def _paired_images(item: _Item) -> tuple[Tensor, Tensor]:
    lq, gt = read_float(item.lq), read_float(item.gt)
    lq, gt = rgb(lq), rgb(gt)
    if gt.shape != lq.shape:
        dh, dw = gt.shape[0] - lq.shape[0], gt.shape[1] - lq.shape[1]
        if dh >= 0 and dw >= 0 and dh % 2 == 0 and dw % 2 == 0:
            # RESIDE-style: the hazy image is the centre of the clear one with a margin removed
            gt = gt[dh // 2 : gt.shape[0] - dh // 2, dw // 2 : gt.shape[1] - dw // 2]
        else:
            raise IrcError(
                f"{item.lq}: size {lq.shape[1]}x{lq.shape[0]} does not match its ground truth "
                f"{item.gt} ({gt.shape[1]}x{gt.shape[0]})"
            )
    return to_tensor(gt), to_tensor(lq)


def _make_sample(bench: Benchmark, index: int) -> Sample:
    from irc.operators.jpeg import jpeg_compress

    item = bench._items[index]
    p = bench.protocol
    t = p.task
    if t == "sr":
        hr = read_u8(item.gt)
        gt, lq = _sr_bicubic(hr, p.scale, item.gt) if p.kernel is None else _sr_kernel(bench, hr, index, item.gt)
    elif t == "cs":
        gt = to_tensor(grey_u8(read_u8(item.gt)))
        lq = gt.clone()
    elif t == "denoise":
        img = read_u8(item.gt)
        gt = to_tensor(grey_u8(img) if p.color == "grey" else rgb(img))
        lq = _add_noise(gt, p.noise_sigma, p.seed, index)
    elif t in ("jpeg", "photo-jpeg"):
        img = read_u8(item.gt)
        gt = to_tensor(grey_u8(img) if p.color == "grey" else rgb(img))
        lq = jpeg_compress(gt[None], int(p.jpeg_quality))[0]
    elif t == "photo-noise":
        gt = to_tensor(rgb(read_u8(item.gt)))
        lq = torch.round(_add_noise(gt, p.noise_sigma, p.seed, index).clamp(0, 1) * 255) / 255
    elif t == "photo-blur":
        from irc.operators.blur_kernels import gaussian_kernel
        from irc.operators.filtering import filter2d

        gt = to_tensor(rgb(read_u8(item.gt)))
        size = 2 * math.ceil(3 * p.blur_sigma) + 1
        lq = torch.round(filter2d(gt[None].double(), gaussian_kernel(size, p.blur_sigma))[0].clamp(0, 1) * 255).float() / 255
    elif t == "clean":
        gt = to_tensor(rgb(read_u8(item.gt)))
        lq = gt.clone()
    elif t == "shadow-synth":
        from irc.operators.shadow import Shadow

        gt = to_tensor(rgb(read_u8(item.gt)))
        shadow = Shadow()
        params = shadow.sample(np.random.default_rng(np.random.SeedSequence([int(p.seed), int(index)])))
        lq = torch.round(shadow.apply(gt[None].double(), params)[0].clamp(0, 1) * 255).float() / 255
    elif t == "cassi":
        from irc.operators.cassi import load_cube

        gt = load_cube(item.gt)
        lq = gt.clone()
    elif t.startswith("mixture:"):
        gt = to_tensor(rgb(read_u8(item.gt)))
        mixture = bench._mixture
        params = mixture.fixed_params(t.split(":", 1)[1], index, p.seed)
        with torch.no_grad():
            lq = mixture.apply(gt[None], params)[0].to(torch.float32)
    else:  # real pairs
        gt, lq = _paired_images(item)
    extra = {}
    for key, path in item.extra:
        mask = read_float(path)
        extra[key] = to_tensor(mask[..., :1] if mask.shape[2] == 3 else mask)
    return Sample(item.name, gt.contiguous(), lq.contiguous(), extra)


def _check_int(value: Any, what: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or (
        not isinstance(value, (int, np.integer)) and not (isinstance(value, float) and value.is_integer())
    ):
        raise UsageError(f"{what} must be a whole number, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        raise UsageError(f"{what} must be in {lo}..{hi}, got {value}" if hi is not None else f"{what} must be >= {lo}, got {value}")
    return value


def _resolve(
    info: BenchmarkInfo, *, scale, noise, quality, kernel, task, seed, blur=None
) -> tuple[Protocol, BenchmarkInfo]:
    """The protocol for the requested options, and the dataset whose files it reads."""
    name = info.name
    base = info.protocol
    if task is not None:
        task = task.strip().lower()
        if name == "cbsd68" and task in MIXTURE_TASKS and not (task == "sr" and kernel is not None):
            task = f"mixture:{task}"  # plain MiOIR task names on cbsd68 mean the mixture protocol
        elif name == "cbsd68" and task == "shadow":
            task = "shadow-synth"
    elif kernel is not None:
        task = "sr"
    task = task or base.task
    if task not in info.tasks:
        raise UsageError(f"task {task!r} does not apply to {name}; expected one of {', '.join(info.tasks)}")

    def refuse(option: str, value: Any) -> None:
        if value is not None:
            raise UsageError(f"{option} does not apply to {name} with task {task}")

    seed = _check_int(seed, "seed", 0)
    if task == "sr":
        refuse("--quality", quality)
        if kernel is None:
            if name in ("bsd68", "cbsd68"):
                raise UsageError(f"SR on {name} is the USRNet protocol: give a --kernel (0-11)")
            refuse("--noise", noise)
            s = _check_int(4 if scale is None else scale, "scale", 2)
            return _p(name, "sr", "y", s, scale=s, seed=seed), info
        kernel = _check_int(kernel, "kernel", 0, 11)
        s = _check_int(4 if scale is None else scale, "scale", 1)
        sigma = _check_sigma(0.0 if noise is None else noise)
        # USRNet's 'srbsd68' is colour BSD68, so bsd68 reads the CBSD68 files here
        files_from = BENCHMARKS["cbsd68"] if name == "bsd68" else info
        return _p(name, "sr", "rgb", s * s, scale=s, kernel=kernel, noise_sigma=sigma, seed=seed), files_from
    refuse("--scale", scale)
    refuse("--kernel", kernel)
    if task != "photo-blur":
        refuse("--blur", blur)
    if task in ("photo-noise", "photo-jpeg", "photo-blur", "clean", "shadow-synth"):
        # the photo protocols of a colour set: RGB, border 0, 8-bit inputs
        if task == "photo-noise":
            refuse("--quality", quality)
            return _p(name, task, "rgb", 0, noise_sigma=_check_sigma(25.0 if noise is None else noise), seed=seed), info
        refuse("--noise", noise)
        if task == "photo-jpeg":
            return _p(name, task, "rgb", 0, jpeg_quality=30 if quality is None else _check_int(quality, "quality", 1, 100), seed=seed), info
        refuse("--quality", quality)
        if task == "photo-blur":
            sigma = _check_sigma(1.0 if blur is None else blur)
            if sigma <= 0:
                raise UsageError("--blur must be a sigma > 0 in pixels")
            return _p(name, task, "rgb", 0, blur_sigma=sigma, seed=seed), info
        return _p(name, task, "rgb", 0, seed=seed), info
    if task == "denoise":
        refuse("--quality", quality)
        sigma = _check_sigma(base.noise_sigma if noise is None else noise)
        return dataclasses.replace(base, noise_sigma=sigma, seed=seed), info
    refuse("--noise", noise)
    if task == "jpeg":
        q = base.jpeg_quality if quality is None else _check_int(quality, "quality", 1, 100)
        return dataclasses.replace(base, jpeg_quality=q, seed=seed), info
    refuse("--quality", quality)
    if task == "cs":
        return _p(name, "cs", "grey", 0, seed=seed), info
    if task.startswith("mixture:"):
        return _p(name, task, "rgb", 4, seed=seed), info
    return dataclasses.replace(base, seed=seed), info


def _check_sigma(value: Any) -> float:
    try:
        sigma = float(value)
    except (TypeError, ValueError):
        sigma = float("nan")
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise UsageError(f"noise must be a finite sigma >= 0 (0-255 units), got {value!r}")
    return sigma


def open_benchmark(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    scale: int | None = None,
    noise: float | None = None,
    quality: int | None = None,
    kernel: int | None = None,
    task: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    blur: float | None = None,
) -> Benchmark:
    """Opens a named benchmark under its protocol.

    Args:
        name: A key of :data:`BENCHMARKS` (case-blind; ``_`` may stand for ``-``).
        root: Data root override (``--data-root``); see :func:`irc.data.data_root`.
        scale: SR factor (set5/set14/urban100/general100 bicubic, default 4; with ``kernel``
            any factor >= 1, default 4).
        noise: Gaussian noise sigma in 0-255 units (set12/bsd68/cbsd68, default 25; with
            ``kernel``, noise added to the LR image, default 0).
        quality: JPEG quality 1-100 (classic5, default 10).
        kernel: USRNet kernel index 0-11: SR with blur (set5, set14, urban100, general100;
            bsd68/cbsd68 use the colour CBSD68 images). Implies ``task="sr"``.
        task: Another task the set supports (``BENCHMARKS[name].tasks``): ``"cs"`` on set14 /
            general100, ``"sr"`` on general100, a MiOIR task (``sr blur noise jpeg rain haze
            dark``) on cbsd68.
        seed: Seed of the synthetic degradations (>= 0).
        limit: Keep only the first ``limit`` images (in file-name order).

    Returns:
        A :class:`Benchmark`; samples are built when indexed.

    Raises:
        UsageError: Unknown name, or an option that does not apply to the set.
        IrcError: The dataset folder (or a file its layout requires) is missing; the one-line
            message names the expected path.
    """
    key = _normalise(name)
    info = BENCHMARKS.get(key)
    if info is None:
        raise UsageError(f"unknown dataset {name!r}{did_you_mean(name, benchmark_names())}; expected one of {', '.join(benchmark_names())}")
    protocol, files_from = _resolve(info, scale=scale, noise=noise, quality=quality, kernel=kernel, task=task, seed=seed, blur=blur)
    folder = files_from.path(root)
    try:
        items = files_from.find(folder)
    except _Missing as missing:
        raise _not_found(files_from, missing.path) from None
    if limit is not None:
        items = items[: _check_int(limit, "limit", 1)]
    bench = Benchmark(info, protocol, items, folder, data_root(root))
    if protocol.kernel is not None:
        bench._kernel  # noqa: B018 - fail now (missing kernels file) rather than at the first sample
    return bench


def fetch_dataset(
    name: str, *, root: str | os.PathLike[str] | None = None, offline: bool | None = None, progress: bool = True
) -> Path:
    """Downloads, verifies and unpacks a dataset into ``data_root(root) / folder``.

    The archive goes to ``cache_dir()/downloads`` through :func:`irc.download.download`
    (resumable, SHA-256 checked, atomic), is unpacked into a temporary folder next to the
    destination (refusing absolute paths, ``..``, links and device files) and only then renamed
    into place, so the destination either does not exist or is complete.

    Args:
        name: A key of :data:`BENCHMARKS` or :data:`TRAINING_SETS`.
        root: Data root override.
        offline: Forbid network access (``None``: ``IRC_OFFLINE`` / ``HF_HUB_OFFLINE``).
        progress: Show a progress bar on a terminal.

    Returns:
        The dataset folder. An existing, non-empty folder is returned untouched.

    Raises:
        UsageError: Unknown name.
        IrcError: No download address is registered (the message says where to place the
            files), the download failed or did not match its checksum, or the archive is unsafe.
    """
    from irc.data._archive import extract_archive
    from irc.download import cache_dir, download

    key = _normalise(name)
    info: BenchmarkInfo | TrainingSetInfo | None = BENCHMARKS.get(key) or TRAINING_SETS.get(key)
    if info is None:
        names = sorted({*BENCHMARKS, *TRAINING_SETS})
        raise UsageError(f"unknown dataset {name!r}{did_you_mean(name, names)}; expected one of {', '.join(names)}")
    dest = info.path(root)
    if dest.is_dir() and any(dest.iterdir()):
        return dest
    if not info.url or not info.sha256:
        raise IrcError(
            f"dataset {info.name} has no registered download address: place it at {dest} "
            f"(layout: {info.folder}/ holds {info.layout}); {_HELP}"
        )
    archive_name = Path(urllib.parse.urlparse(info.url).path).name or f"{info.name}.archive"
    archive = cache_dir() / "downloads" / f"{info.sha256[:12]}-{archive_name}"
    try:
        download(info.url, archive, sha256=info.sha256, progress=progress, offline=offline)
    except IrcError as err:
        raise IrcError(f"cannot fetch dataset {info.name}: {err}; or unpack it yourself to {dest}") from err
    dest.parent.mkdir(parents=True, exist_ok=True)
    # the temporary folder sits beside the destination, so the final rename stays on one
    # filesystem and is atomic
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    try:
        extract_archive(archive, tmp)
        content = _archive_content(tmp, info.archive_subdir, archive)
        try:
            if dest.is_dir() and not any(dest.iterdir()):
                dest.rmdir()
            os.rename(content, dest)
        except OSError as err:
            if dest.is_dir() and any(dest.iterdir()):
                return dest  # another process finished first
            raise IrcError(f"cannot move the unpacked {info.name} to {dest}: {err.strerror or err}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _archive_content(tmp: Path, subdir: str | None, archive: Path) -> Path:
    if subdir:
        content = tmp / subdir
        if not content.is_dir():
            raise IrcError(f"{archive}: has no folder {subdir!r}")
        return content
    entries = [p for p in tmp.iterdir() if p.name not in ("__MACOSX",)]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    # several top-level entries: wrap them so the whole content can be renamed in one step
    wrapped = tmp / ".content"
    wrapped.mkdir()
    for entry in entries:
        entry.rename(wrapped / entry.name)
    return wrapped
