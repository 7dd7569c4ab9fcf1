"""Benchmark samples: ``open_benchmark`` and the exact protocols the named datasets are scored with.

``open_benchmark(name, ...)`` returns a :class:`Benchmark`: a sequence of :class:`Sample`
(``name``, ground truth ``gt``, method input ``lq``) plus the :class:`Protocol` that says how the
input was made and how the result must be scored. Every synthetic input is a deterministic
function of the protocol (its ``seed`` included) and of the image index, so numbers measured
twice, or on two machines, are comparable; ``Protocol.fingerprint()`` records all of it.

The datasets themselves (folders, layouts, finders) are registered in :mod:`irc.data.registry`,
the :class:`Protocol` record is defined in :mod:`irc.data.protocols`, and downloads are done by
:mod:`irc.data.fetching`. This module builds the samples.

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
                                                the test scenes of :data:`~irc.data.registry.POLYU_TEST_SCENES` [7]
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
from collections.abc import Sequence
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
    modcrop,
    read_float,
    read_u8,
    rgb,
    to_tensor,
)
from irc.data.protocols import MIXTURE_TASKS, Protocol, _p
from irc.data.registry import BENCHMARKS, BenchmarkInfo, _HELP, _Item, _Missing, _normalise, _not_found, benchmark_names
from irc.errors import IrcError, UsageError, did_you_mean

__all__ = [
    "Benchmark",
    "Sample",
    "open_benchmark",
]


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
