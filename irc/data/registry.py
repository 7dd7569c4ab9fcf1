"""The dataset registry: named benchmarks, training sets and real-pair sets, their folders and layouts.

Datasets live in folders under :func:`irc.data.data_root` (``--data-root`` >
``$IRC_DATA_ROOT`` > ``~/.cache/irc/data``). :data:`BENCHMARKS` lists each one with its folder
layout; the project's data pack provides the ``in_pack`` ones, the others (marked "user") must
be placed there by the user. No download address is registered for any of them: the original
hosts are Google-Drive / Baidu / project pages whose files change. A user (or a later release)
can set ``url`` and ``sha256`` on an entry, and :func:`~irc.data.fetching.fetch_dataset` then downloads, verifies
and unpacks it.

Also the finders that list a dataset's files (``_clean``, ``_paired``, the PolyU, GoPro, ISTD,
O-HAZE, REVIDE and CASSI layouts), :func:`benchmark_names`, :func:`training_files` and
:func:`pair_set_files`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from irc.data import data_root
from irc.data._common import list_images
from irc.data.protocols import MIXTURE_TASKS, Protocol, _p
from irc.errors import IrcError, UsageError

__all__ = [
    "BENCHMARKS",
    "TRAINING_SETS",
    "BenchmarkInfo",
    "TrainingSetInfo",
    "PAIRING_RULES",
    "PAIR_SETS",
    "POLYU_TEST_SCENES",
    "pair_set_files",
    "polyu_scene",
    "benchmark_names",
    "training_files",
]

_HELP = "see `irc eval --help`"


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

