"""Tests of irc.data: the data root setting, benchmarks and their protocols, folder datasets, fetching.

Benchmarks in the data pack are read from it (``data_root`` fixture of conftest.py, which skips
when the pack is absent); datasets that are not in the pack are tested on tiny synthetic
stand-ins written into ``tmp_path`` with the documented layouts.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import irc.data as irc_data
from irc.data.benchmarks import Benchmark, open_benchmark
from irc.data.fetching import fetch_dataset
from irc.data.protocols import Protocol
from irc.data.registry import (
    POLYU_TEST_SCENES,
    pair_set_files,
    polyu_scene,
    BENCHMARKS,
    TRAINING_SETS,
    BenchmarkInfo,
    benchmark_names,
    training_files,
)
from irc.data.folders import ImageFolder, PairedFolder
from irc.errors import IrcError, UsageError


def u8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W, C) uint8 (exact for values on the 8-bit grid)."""
    return np.rint(x.numpy().transpose(1, 2, 0) * 255.0).astype(np.uint8)


def save_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[2] == 1 else arr).save(path)
    return path


def flat(value: int, size=(12, 16), channels: int = 3) -> np.ndarray:
    return np.full((*size, channels), value, dtype=np.uint8)


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("IRC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("IRC_DATA_ROOT", raising=False)
    assert irc_data.data_root() == tmp_path / "cache" / "data"
    monkeypatch.setenv("IRC_DATA_ROOT", str(tmp_path / "env"))
    assert irc_data.data_root() == tmp_path / "env"
    assert irc_data.data_root(tmp_path / "flag") == tmp_path / "flag"
    assert irc_data.data_root(str(tmp_path / "flag")) == tmp_path / "flag"
    monkeypatch.setenv("IRC_DATA_ROOT", "")
    assert irc_data.data_root() == tmp_path / "cache" / "data"


def test_open_benchmark_uses_the_data_root_setting(monkeypatch, data_root):
    monkeypatch.setenv("IRC_DATA_ROOT", str(data_root))
    assert open_benchmark("set5", limit=1).root == data_root / "Set5"


IN_PACK_CASES = [
    ("set5", {}), ("set14", {}), ("set14", {"task": "cs"}), ("set11", {}), ("set12", {}), ("bsd68", {}),
    ("cbsd68", {}), ("classic5", {}), ("polyu", {}), ("set5", {"kernel": 0, "scale": 3}),
    ("bsd68", {"kernel": 11, "scale": 2}), ("cbsd68", {"task": "noise"}), ("cbsd68", {"task": "sr"}),
]


def test_registry_covers_the_pack(data_root):
    assert {n for n, i in BENCHMARKS.items() if i.in_pack} == {
        "set5", "set14", "set11", "set12", "bsd68", "cbsd68", "classic5", "polyu"
    }
    assert benchmark_names() == sorted(BENCHMARKS)
    for info in BENCHMARKS.values():
        assert info.tasks[0] == info.protocol.task
        if info.in_pack:
            assert (data_root / info.folder).is_dir(), info.folder


@pytest.mark.parametrize("name,options", IN_PACK_CASES, ids=[f"{n}-{'-'.join(map(str, o.values())) or 'default'}" for n, o in IN_PACK_CASES])
def test_in_pack_benchmark_yields_samples(data_root, name, options):
    bench = open_benchmark(name, root=data_root, limit=2, **options)
    assert isinstance(bench, Benchmark) and len(bench) == 2
    p = bench.protocol
    assert p.dataset == name
    json.dumps(p.fingerprint())  # JSON-able, for the eval summary
    assert p.fingerprint()["description"]
    for sample in bench:
        assert sample.gt.dtype == torch.float32 and sample.lq.dtype == torch.float32
        assert sample.gt.ndim == 3 and 0.0 <= float(sample.gt.min()) and float(sample.gt.max()) <= 1.0
        assert torch.isfinite(sample.lq).all()
        c, h, w = sample.gt.shape
        if p.task == "sr":
            assert c == 3 and sample.lq.shape == (3, h // p.scale, w // p.scale)
            assert h % p.scale == 0 and w % p.scale == 0
        else:
            assert sample.lq.shape == sample.gt.shape
        expected_c = 1 if p.color == "grey" else 3
        assert c == expected_c
    assert bench[-1].name == bench.names[-1]
    with pytest.raises(IndexError):
        bench[2]


def test_protocol_defaults_and_overrides(data_root):
    set5 = open_benchmark("set5", root=data_root, limit=1).protocol
    assert (set5.task, set5.scale, set5.color, set5.crop_border, set5.round_to_uint8) == ("sr", 4, "y", 4, True)
    assert open_benchmark("set14", root=data_root, scale=3, limit=1).protocol.crop_border == 3
    usr = open_benchmark("set5", root=data_root, kernel=5, scale=3, limit=1).protocol
    assert (usr.color, usr.crop_border, usr.kernel, usr.noise_sigma) == ("rgb", 9, 5, 0.0)
    bsd = open_benchmark("bsd68", root=data_root, noise=50, seed=3, limit=1).protocol
    assert (bsd.color, bsd.crop_border, bsd.noise_sigma, bsd.seed) == ("grey", 0, 50.0, 3)
    assert open_benchmark("classic5", root=data_root, limit=1).protocol.jpeg_quality == 10
    mix = open_benchmark("cbsd68", root=data_root, task="haze", limit=1).protocol
    assert (mix.task, mix.color, mix.crop_border) == ("mixture:haze", "rgb", 4)
    srbsd = open_benchmark("bsd68", root=data_root, kernel=0, limit=1)
    assert srbsd.root == data_root / "CBSD68" and srbsd[0].gt.shape[0] == 3


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_lq_is_exactly_lr_bicubic(data_root, scale):
    bench = open_benchmark("set5", root=data_root, scale=scale)
    assert len(bench) == 5
    for sample in bench:
        with Image.open(data_root / "Set5" / "LR_bicubic" / f"X{scale}" / f"{sample.name}x{scale}.png") as im:
            ref = np.asarray(im.convert("RGB"))
        got = u8(sample.lq)
        assert got.shape == ref.shape
        assert np.array_equal(got, ref), sample.name
        assert sample.gt.shape[1] == ref.shape[0] * scale


def test_usrnet_lq_matches_scipy_on_uint8(data_root):
    """USRNet's main_test_table1: ndimage.convolve(uint8 HR, k, mode='wrap') then [::s, ::s]."""
    from scipy import io as sio
    from scipy import ndimage

    kernels = sio.loadmat(data_root / "kernels" / "kernels_12.mat")["kernels"]
    bench = open_benchmark("set5", root=data_root, kernel=7, scale=3)
    index = bench.names.index("butterfly")
    sample = bench[index]
    with Image.open(bench.files[index]) as im:
        hr = np.asarray(im.convert("RGB"))
    hr = hr[: hr.shape[0] // 24 * 24, : hr.shape[1] // 24 * 24]  # modcrop lcm(3, 8)
    ref = ndimage.convolve(hr, kernels[0, 7].astype(np.float64)[..., None], mode="wrap")[0::3, 0::3]
    assert np.array_equal(u8(sample.gt), hr)
    assert np.array_equal(u8(sample.lq), ref)


def test_set11_is_eleven_grey_images(data_root):
    bench = open_benchmark("set11", root=data_root)
    assert len(bench) == 11
    assert {"Parrots", "foreman", "fingerprint"} <= set(bench.names)
    for sample in bench:
        assert sample.gt.shape[0] == 1 and torch.equal(sample.lq, sample.gt)
    parrots = bench[bench.names.index("Parrots")]
    with Image.open(bench.files[bench.names.index("Parrots")]) as im:
        assert im.mode == "P"
        ref = np.asarray(im.convert("L"))
    assert np.array_equal(u8(parrots.gt)[..., 0], ref)


def test_set14_grey_images_are_replicated_for_sr(data_root):
    bench = open_benchmark("set14", root=data_root)
    assert len(bench) == 14
    grey = bench[bench.names.index("img_003")]
    assert grey.gt.shape[0] == 3 and torch.equal(grey.gt[0], grey.gt[1]) and torch.equal(grey.gt[0], grey.gt[2])
    cs = open_benchmark("set14", root=data_root, task="cs")
    assert cs[0].gt.shape[0] == 1 and cs.protocol.color == "grey"


def test_bsd68_noise_is_deterministic_and_has_the_right_sigma(data_root):
    a = open_benchmark("bsd68", root=data_root, noise=25, seed=0, limit=3)
    b = open_benchmark("bsd68", root=data_root, noise=25, seed=0, limit=3)
    c = open_benchmark("bsd68", root=data_root, noise=25, seed=1, limit=3)
    residuals = []
    for i in range(3):
        sa, sb, sc = a[i], b[i], c[i]
        assert torch.equal(sa.lq, sb.lq)
        assert not torch.equal(sa.lq, sc.lq)
        assert torch.equal(sa.gt, sc.gt)
        residuals.append((sa.lq - sa.gt).flatten())
    assert not torch.equal(a[0].lq - a[0].gt, a[1].lq - a[1].gt)  # a fresh field per image
    r = torch.cat(residuals).double()
    assert abs(float(r.std()) - 25 / 255) < 0.01 * 25 / 255
    assert abs(float(r.mean())) < 1e-3
    assert float(a[0].lq.min()) < 0 or float(a[0].lq.max()) > 1  # not clipped (DnCNN protocol)
    # the same field at every sigma, scaled
    s50 = open_benchmark("bsd68", root=data_root, noise=50, seed=0, limit=1)[0]
    assert torch.allclose(s50.lq - s50.gt, 2 * (a[0].lq - a[0].gt), atol=1e-5)


def test_classic5_jpeg_is_deterministic(data_root):
    q10 = open_benchmark("classic5", root=data_root, limit=2)
    again = open_benchmark("classic5", root=data_root, limit=2)
    q40 = open_benchmark("classic5", root=data_root, quality=40, limit=2)
    for i in range(2):
        s = q10[i]
        assert s.gt.shape[0] == 1
        assert not torch.equal(s.lq, s.gt)
        assert torch.equal(s.lq, again[i].lq)
        assert not torch.equal(s.lq, q40[i].lq)
        assert torch.equal(s.lq * 255, torch.round(s.lq * 255))  # decoded JPEG is on the 8-bit grid
        err10 = float((s.lq - s.gt).abs().mean())
        err40 = float((q40[i].lq - s.gt).abs().mean())
        assert err40 < err10


def test_polyu_pairs_match_by_name(data_root):
    bench = open_benchmark("polyu", root=data_root)
    assert len(bench) == 20  # the held-out test scenes only
    assert {polyu_scene(n) for n in bench.names} == set(POLYU_TEST_SCENES)
    for name, lq, gt in zip(bench.names, bench.lq_files, bench.files):
        assert lq.name.startswith(name) and lq.stem == name + "_real"
        assert gt.stem == name + "_mean"
    s = bench[0]
    assert s.gt.shape == s.lq.shape == (3, 512, 512)
    assert not torch.equal(s.gt, s.lq)


def test_polyu_split_is_by_scene_and_complete(data_root):
    """Train and test share no scene, and together they are the 100 pairs."""
    lq_files, folder, pairing = pair_set_files("polyu-train", data_root)
    test = open_benchmark("polyu", root=data_root)
    train_scenes = {polyu_scene(p.stem) for p in lq_files}
    assert len(lq_files) == 80 and len(test) == 20
    assert not train_scenes & {polyu_scene(n) for n in test.names}
    assert polyu_scene("NikonD800_6-3_125_5000_plant__4_real") == "plant"
    assert polyu_scene("Canon80D_8_8_800_GO_11_mean") == "go"
    pairs = PairedFolder(lq_files, folder, pairing, crop=64)
    assert len(pairs) == 80 and pairs[0]["lq"].shape == (3, 64, 64)


def test_mixture_protocol_is_deterministic(data_root):
    a = open_benchmark("cbsd68", root=data_root, task="noise", limit=2)
    b = open_benchmark("cbsd68", root=data_root, task="noise", limit=2)
    c = open_benchmark("cbsd68", root=data_root, task="noise", seed=5, limit=2)
    assert torch.equal(a[1].lq, b[1].lq) and not torch.equal(a[1].lq, c[1].lq)
    assert torch.equal(a[1].lq * 255, torch.round(a[1].lq * 255))  # stored-PNG quantisation


@pytest.mark.parametrize(
    "name,options",
    [
        ("nope", {}), ("set5", {"quality": 10}), ("set12", {"scale": 2}), ("classic5", {"noise": 15}),
        ("set5", {"kernel": 12}), ("bsd68", {"task": "sr"}), ("set11", {"task": "sr"}), ("cbsd68", {"task": "fog"}),
        ("set12", {"noise": -1}), ("set5", {"scale": 1}), ("set5", {"seed": -1}),
    ],
)
def test_bad_options_are_usage_errors(data_root, name, options):
    with pytest.raises(UsageError):
        open_benchmark(name, root=data_root, **options)


def test_training_sets(data_root):
    assert set(TRAINING_SETS) == {"train400", "t91", "bsd200", "div2k-crops", "cave"}
    assert len(training_files("train400", root=data_root)) == 400
    assert len(training_files("t91", root=data_root)) == 91
    assert len(training_files("bsd200", root=data_root)) == 200
    assert len(training_files("div2k-crops", root=data_root)) == 100
    with pytest.raises(UsageError):
        training_files("imagenet", root=data_root)


def test_cave_training_set_lists_mat_cubes(tmp_path):
    (tmp_path / "cave_1024_28").mkdir()
    with pytest.raises(IrcError, match="hyperspectral cubes"):
        training_files("cave", root=tmp_path)
    for name in ("scene02.mat", "scene01.mat", "notes.txt", "preview.png"):
        (tmp_path / "cave_1024_28" / name).write_bytes(b"")
    assert [p.name for p in training_files("cave", root=tmp_path)] == ["scene01.mat", "scene02.mat"]
    assert TRAINING_SETS["cave"].spectral and not TRAINING_SETS["t91"].spectral


USER_SETS = {
    "general100": "general100",
    "urban100": "urban100",
    "kaist-cassi": "kaist-cassi",
    "rain100l": "rain100l",
    "sots": "sots",
    "lol": "lol",
    "gopro": "gopro",
    "istd": "istd",
    "ohaze": "O-HAZE",
    "revide": "REVIDE",
    "faceshadow": "FaceShadow",
}


@pytest.mark.parametrize("name", sorted(USER_SETS))
def test_missing_user_dataset_names_the_expected_path(tmp_path, name):
    assert not BENCHMARKS[name].in_pack
    with pytest.raises(IrcError) as err:
        open_benchmark(name, root=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"dataset {name} not found: expected {tmp_path / USER_SETS[name]}")
    assert "layout:" in message and "irc eval --help" in message


def test_half_present_dataset_names_the_missing_folder(tmp_path):
    save_png(tmp_path / "lol" / "eval15" / "low" / "1.png", flat(10))
    with pytest.raises(IrcError, match=str(tmp_path / "lol" / "eval15" / "high").replace("\\", "\\\\")):
        open_benchmark("lol", root=tmp_path)


def test_rain100l_standin(tmp_path):
    for i, v in [(1, 10), (2, 20), (3, 30)]:
        save_png(tmp_path / "rain100l" / "rainy" / f"rain-{i:03d}.png", flat(v + 100))
        save_png(tmp_path / "rain100l" / "norain" / f"norain-{i:03d}.png", flat(v))
    bench = open_benchmark("rain100l", root=tmp_path)
    assert bench.names == ["rain-001", "rain-002", "rain-003"]
    assert bench.protocol.task == "derain" and bench.protocol.color == "rgb"
    for s in bench:
        assert s.gt.shape == s.lq.shape == (3, 12, 16)
        assert u8(s.lq)[0, 0, 0] == u8(s.gt)[0, 0, 0] + 100


def test_sots_standin(tmp_path):
    hazy = tmp_path / "sots" / "outdoor" / "hazy"
    hazy.mkdir(parents=True)
    for ident, v in [("0001", 10), ("0002", 20)]:
        save_png(tmp_path / "sots" / "outdoor" / "gt" / f"{ident}.png", flat(v))
        Image.fromarray(flat(v + 100)).save(hazy / f"{ident}_0.8_0.2.jpg", quality=100)
    bench = open_benchmark("sots", root=tmp_path)
    assert bench.names == ["0001_0.8_0.2", "0002_0.8_0.2"]
    assert [f.name for f in bench.files] == ["0001.png", "0002.png"]
    for s in bench:
        assert abs(int(u8(s.lq)[0, 0, 0]) - int(u8(s.gt)[0, 0, 0]) - 100) <= 1


def test_lol_standin(tmp_path):
    for name, v in [("1", 100), ("22", 200)]:
        save_png(tmp_path / "lol" / "eval15" / "low" / f"{name}.png", flat(v // 10))
        save_png(tmp_path / "lol" / "eval15" / "high" / f"{name}.png", flat(v))
    bench = open_benchmark("lol", root=tmp_path)
    assert bench.names == ["1", "22"] and bench.protocol.task == "lowlight"
    assert [int(u8(s.gt)[0, 0, 0]) for s in bench] == [100, 200]
    assert [int(u8(s.lq)[0, 0, 0]) for s in bench] == [10, 20]


def test_gopro_standin(tmp_path):
    for scene, v in [("GOPR0384_11_00", 10), ("GOPR0385_11_01", 50)]:
        for frame in ("000001", "000002"):
            save_png(tmp_path / "gopro" / "test" / scene / "blur" / f"{frame}.png", flat(v + 1))
            save_png(tmp_path / "gopro" / "test" / scene / "sharp" / f"{frame}.png", flat(v))
    bench = open_benchmark("gopro", root=tmp_path)
    assert len(bench) == 4 and len(set(bench.names)) == 4  # frame numbers repeat across scenes
    assert bench.names[0] == "GOPR0384_11_00_000001"
    for s in bench:
        assert int(u8(s.lq)[0, 0, 0]) == int(u8(s.gt)[0, 0, 0]) + 1


def test_istd_standin_has_masks(tmp_path):
    for name, v in [("90-1", 30), ("91-2", 60)]:
        save_png(tmp_path / "istd" / "test" / "test_A" / f"{name}.png", flat(v))
        save_png(tmp_path / "istd" / "test" / "test_B" / f"{name}.png", flat(255, channels=1))
        save_png(tmp_path / "istd" / "test" / "test_C" / f"{name}.png", flat(v + 50))
    bench = open_benchmark("istd", root=tmp_path)
    assert bench.names == ["90-1", "91-2"]
    s = bench[1]
    assert int(u8(s.gt)[0, 0, 0]) == 110 and int(u8(s.lq)[0, 0, 0]) == 60
    assert s.extra["mask"].shape == (1, 12, 16) and float(s.extra["mask"].min()) == 1.0


def test_ohaze_standin_scores_scenes_41_to_45_and_trains_on_the_rest(tmp_path):
    from irc.data.registry import pair_set_files

    for scene in (1, 2, 40, 41, 45):
        save_png(tmp_path / "O-HAZE" / "hazy" / f"{scene:02d}_outdoor_hazy.png", flat(scene + 100))
        save_png(tmp_path / "O-HAZE" / "GT" / f"{scene:02d}_outdoor_GT.png", flat(scene))
    bench = open_benchmark("ohaze", root=tmp_path)
    assert bench.names == ["41_outdoor_hazy", "45_outdoor_hazy"] and bench.protocol.task == "dehaze"
    assert [int(u8(s.gt)[0, 0, 0]) for s in bench] == [41, 45]
    degraded, clean, pairing = pair_set_files("ohaze-train", root=tmp_path)
    assert [p.name for p in degraded] == ["01_outdoor_hazy.png", "02_outdoor_hazy.png", "40_outdoor_hazy.png"]
    assert clean == tmp_path / "O-HAZE" / "GT" and pairing == {"_hazy": "_GT"}


def test_revide_standin_names_frames_by_video(tmp_path):
    for video, v in [("C005", 10), ("W002", 50)]:
        for frame in ("00001", "00002"):
            save_png(tmp_path / "REVIDE" / "Test" / "hazy" / video / f"{frame}.png", flat(v + 100))
            save_png(tmp_path / "REVIDE" / "Test" / "gt" / video / f"{frame}.png", flat(v))
    bench = open_benchmark("revide", root=tmp_path)
    assert bench.names == ["C005_00001", "C005_00002", "W002_00001", "W002_00002"]
    assert [int(u8(s.gt)[0, 0, 0]) for s in bench] == [10, 10, 50, 50]


def test_faceshadow_standin(tmp_path):
    save_png(tmp_path / "FaceShadow" / "shadow" / "0001.png", flat(40))
    save_png(tmp_path / "FaceShadow" / "gt" / "0001.png", flat(90))
    bench = open_benchmark("faceshadow", root=tmp_path)
    assert bench.names == ["0001"] and bench.protocol.task == "shadow"
    assert int(u8(bench[0].lq)[0, 0, 0]) == 40


def test_synthetic_shadow_protocol_on_cbsd68(data_root):
    bench = open_benchmark("cbsd68", task="shadow", limit=2)
    assert bench.protocol.task == "shadow-synth" and bench.protocol.crop_border == 0
    a, again = bench[0], open_benchmark("cbsd68", task="shadow", limit=2)[0]
    torch.testing.assert_close(a.lq, again.lq, rtol=0, atol=0)  # fixed per image
    darker = a.lq < a.gt - 2 / 255
    assert 0.05 < darker.float().mean() < 0.6 and not (a.lq > a.gt + 1 / 255).any()
    assert torch.equal(a.lq, torch.round(a.lq * 255) / 255)
    other = open_benchmark("cbsd68", task="shadow", seed=1, limit=1)[0]
    assert not torch.equal(other.lq, a.lq)


def test_kaist_cassi_standin(tmp_path):
    from scipy.io import savemat

    folder = tmp_path / "kaist-cassi"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cubes = [rng.random((8, 10, 28)) for _ in range(2)]
    savemat(folder / "scene01.mat", {"img": cubes[0]})
    savemat(folder / "scene02.mat", {"img_expand": cubes[1] * 65536.0})  # MST's 16-bit scaling
    bench = open_benchmark("kaist-cassi", root=tmp_path)
    assert bench.names == ["scene01", "scene02"]
    assert bench.protocol.round_to_uint8 is False and bench.protocol.color == "spectral"
    for s, cube in zip(bench, cubes):
        assert s.gt.shape == (28, 8, 10)
        assert torch.allclose(s.gt, torch.from_numpy(cube.transpose(2, 0, 1)).float(), atol=1e-6)
        assert torch.equal(s.lq, s.gt)


def test_general100_and_urban100_standins(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (34, 27, 3), dtype=np.uint8)
    save_png(tmp_path / "general100" / "im_001.png", img)
    Image.fromarray(img).save(tmp_path / "general100" / "im_002.bmp")
    cs = open_benchmark("general100", root=tmp_path)
    assert cs.names == ["im_001", "im_002"] and cs.protocol.task == "cs"
    assert cs[0].gt.shape == (1, 34, 27) and torch.equal(cs[0].gt, cs[1].gt)
    # OpenCV's 8-bit BT.601 luma (what block-CS test code measures)
    r, g, b = (img[..., c].astype(np.int64) for c in range(3))
    y = (4899 * r + 9617 * g + 1868 * b + 8192) >> 14
    assert np.array_equal(u8(cs[0].gt)[..., 0], y.astype(np.uint8))
    sr = open_benchmark("general100", root=tmp_path, task="sr", scale=2)
    assert sr[0].gt.shape == (3, 34, 26) and sr[0].lq.shape == (3, 17, 13)
    save_png(tmp_path / "urban100" / "HR" / "img_001.png", img)
    urban = open_benchmark("urban100", root=tmp_path, scale=3)
    assert urban[0].gt.shape == (3, 33, 27) and urban[0].lq.shape == (3, 11, 9)


@pytest.fixture()
def image_dir(tmp_path) -> Path:
    rng = np.random.default_rng(2)
    folder = tmp_path / "imgs"
    save_png(folder / "a.png", rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    save_png(folder / "sub" / "b.png", rng.integers(0, 256, (36, 36, 1), dtype=np.uint8))
    save_png(folder / "tiny.png", rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    return folder


def test_image_folder_crops_are_deterministic(image_dir):
    a = ImageFolder(image_dir, crop=16, augment=True, repeat=2, seed=7)
    b = ImageFolder(image_dir, crop=16, augment=True, repeat=2, seed=7)
    assert len(a) == 6 and [p.name for p in a.files] == ["a.png", "b.png", "tiny.png"]
    for i in range(len(a)):
        x = a[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert torch.equal(x, b[i])
    assert torch.equal(a[1], a[1])
    assert not torch.equal(a[0], a[3])  # the repeated copy gets its own crop
    other_seed = ImageFolder(image_dir, crop=16, augment=True, repeat=2, seed=8)
    assert any(not torch.equal(a[i], other_seed[i]) for i in range(2))


def test_image_folder_set_epoch_changes_crops(image_dir):
    ds = ImageFolder(image_dir, crop=16, seed=0)
    first = [ds[i] for i in range(2)]
    ds.set_epoch(1)
    second = [ds[i] for i in range(2)]
    assert any(not torch.equal(x, y) for x, y in zip(first, second))
    ds.set_epoch(0)
    assert all(torch.equal(x, ds[i]) for i, x in enumerate(first))
    with pytest.raises(UsageError):
        ds.set_epoch(-1)


def test_image_folder_crop_is_a_window_of_the_image(image_dir):
    ds = ImageFolder(image_dir / "a.png", crop=16, seed=3)
    with Image.open(image_dir / "a.png") as im:
        full = np.asarray(im).astype(np.float32) / 255
    crop = ds[0].numpy().transpose(1, 2, 0)
    hits = [
        (top, left)
        for top in range(40 - 15)
        for left in range(50 - 15)
        if np.allclose(full[top : top + 16, left : left + 16], crop, atol=1e-6)
    ]
    assert hits


def test_image_folder_augment_is_a_dihedral_transform(image_dir):
    plain = ImageFolder(image_dir / "sub" / "b.png", crop=None, grey=True, seed=1)
    aug = ImageFolder(image_dir / "sub" / "b.png", crop=None, grey=True, augment=True, seed=1, repeat=8)
    x = plain[0][0]
    variants = [torch.rot90(v, k, (0, 1)) for v in (x, x.flip(1)) for k in range(4)]
    seen = set()
    for i in range(len(aug)):
        y = aug[i][0]
        match = [j for j, v in enumerate(variants) if v.shape == y.shape and torch.equal(v, y)]
        assert match
        seen.add(match[0])
    assert len(seen) > 1


def test_image_folder_channels_and_padding(image_dir):
    grey = ImageFolder(image_dir, crop=24, grey=True)
    assert all(grey[i].shape == (1, 24, 24) for i in range(len(grey)))
    colour = ImageFolder(image_dir / "sub", crop=8)
    x = colour[0]
    assert x.shape == (3, 8, 8) and torch.equal(x[0], x[1])  # grey source replicated
    tiny = ImageFolder(image_dir / "tiny.png", crop=20)
    t = tiny[0]
    assert t.shape == (3, 20, 20)
    with Image.open(image_dir / "tiny.png") as im:
        src = torch.from_numpy(np.asarray(im).astype(np.float32).transpose(2, 0, 1) / 255)
    assert torch.allclose(t[:, :5, :7], src)  # reflect-padded at the bottom/right, origin kept
    assert torch.allclose(t[:, 5, :7], src[:, 3])  # reflection without repeating the edge row
    with pytest.raises(IrcError):
        ImageFolder(image_dir / "nothing-here")
    whole = ImageFolder(image_dir / "a.png")
    assert whole[0].shape == (3, 40, 50)


def test_paired_folder_alignment_with_scale(tmp_path):
    rng = np.random.default_rng(4)
    for name, (h, w) in {"p1": (20, 24), "p2": (18, 30)}.items():
        lr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        hr = np.kron(lr, np.ones((2, 2, 1), dtype=np.uint8))  # every LR pixel is a 2x2 HR block
        save_png(tmp_path / "lq" / f"{name}.png", lr)
        save_png(tmp_path / "gt" / f"{name}.png", np.pad(hr, ((0, 1), (0, 1), (0, 0))))  # one extra row/col
    ds = PairedFolder(tmp_path / "lq", tmp_path / "gt", crop=16, scale=2, augment=True, seed=3, repeat=4)
    assert len(ds) == 8
    for i in range(len(ds)):
        item = ds[i]
        assert item["lq"].shape == (3, 8, 8) and item["gt"].shape == (3, 16, 16)
        assert torch.equal(item["gt"][:, ::2, ::2], item["lq"])
        assert torch.equal(item["gt"][:, 1::2, 1::2], item["lq"])
        assert torch.equal(ds[i]["gt"], item["gt"])
    epoch0 = [ds[i]["gt"] for i in range(len(ds))]
    ds.set_epoch(1)
    assert any(not torch.equal(ds[i]["gt"], epoch0[i]) for i in range(len(ds)))
    with pytest.raises(UsageError):
        PairedFolder(tmp_path / "lq", tmp_path / "gt", crop=15, scale=2)


def test_paired_folder_suffix_map_and_errors(tmp_path):
    folder = tmp_path / "polyu-like"
    save_png(folder / "cam_1_real.png", flat(50))
    save_png(folder / "cam_1_mean.png", flat(40))
    save_png(folder / "cam_2_real.png", flat(70))
    save_png(folder / "cam_2_mean.png", flat(60))
    ds = PairedFolder(folder, folder, {"_real": "_mean"}, crop=8, seed=0)
    assert len(ds) == 2
    item = ds[1]
    assert item["name"] == "cam_2"
    assert int(u8(item["lq"])[0, 0, 0]) == 70 and int(u8(item["gt"])[0, 0, 0]) == 60
    save_png(tmp_path / "lq" / "x.png", flat(1))
    save_png(tmp_path / "gt" / "y.png", flat(1))
    with pytest.raises(IrcError, match="no ground-truth partner"):
        PairedFolder(tmp_path / "lq", tmp_path / "gt")
    save_png(tmp_path / "lq2" / "y.png", flat(1, size=(5, 5)))
    with pytest.raises(IrcError, match="does not match"):
        PairedFolder(tmp_path / "lq2", tmp_path / "gt")[0]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1; yields (folder, base url)."""
    folder = tmp_path / "www"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _png_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(flat(value)).save(buf, format="PNG")
    return buf.getvalue()


def _toy_info(url: str, sha256: str) -> BenchmarkInfo:
    return BenchmarkInfo(
        "toyset", "toyset", "low/*.png + high/*.png", Protocol("toyset", "lowlight", "rgb", 0), 3, False,
        "test entry", ("lowlight",), url=url, sha256=sha256,
        find=_toy_find,
    )


def _toy_find(folder: Path):
    from irc.data.registry import _paired

    return _paired("low", "high")(folder)


@pytest.fixture()
def fetch_env(monkeypatch, tmp_path):
    monkeypatch.setenv("IRC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("IRC_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    root = tmp_path / "data"
    return root


def test_fetch_dataset_downloads_verifies_and_unpacks(served, fetch_env, monkeypatch):
    folder, base = served
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, v in [("a", 10), ("b", 20)]:
            zf.writestr(f"toyset-v1/low/{name}.png", _png_bytes(v))
            zf.writestr(f"toyset-v1/high/{name}.png", _png_bytes(v + 100))
    (folder / "toy.zip").write_bytes(buf.getvalue())
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    monkeypatch.setitem(BENCHMARKS, "toyset", _toy_info(f"{base}/toy.zip", sha))
    dest = fetch_dataset("toyset", root=fetch_env, progress=False)
    assert dest == fetch_env / "toyset"
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.png")) == [
        "high/a.png", "high/b.png", "low/a.png", "low/b.png"
    ]
    assert [p.name for p in fetch_env.iterdir()] == ["toyset"]  # no temporary folder left
    bench = open_benchmark("toyset", root=fetch_env)
    assert bench.names == ["a", "b"] and int(u8(bench[1].gt)[0, 0, 0]) == 120
    # present now: a second call does not download again
    (folder / "toy.zip").unlink()
    assert fetch_dataset("toyset", root=fetch_env, progress=False) == dest


def test_fetch_dataset_checksum_mismatch_leaves_nothing(served, fetch_env, monkeypatch, tmp_path):
    folder, base = served
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("low/a.png", _png_bytes(1))
    (folder / "toy.zip").write_bytes(buf.getvalue())
    monkeypatch.setitem(BENCHMARKS, "toyset", _toy_info(f"{base}/toy.zip", "0" * 64))
    with pytest.raises(IrcError, match="checksum mismatch"):
        fetch_dataset("toyset", root=fetch_env, progress=False)
    assert not (fetch_env / "toyset").exists()
    assert not fetch_env.exists() or not any(fetch_env.iterdir())
    downloads = tmp_path / "cache" / "downloads"
    assert not downloads.exists() or not [p for p in downloads.iterdir() if not p.name.endswith(".lock")]


def test_fetch_dataset_refuses_path_traversal(served, fetch_env, monkeypatch, tmp_path):
    folder, base = served
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("toyset/low/a.png", _png_bytes(1))
        zf.writestr("../../evil.txt", b"gotcha")
    (folder / "evil.zip").write_bytes(buf.getvalue())
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    monkeypatch.setitem(BENCHMARKS, "toyset", _toy_info(f"{base}/evil.zip", sha))
    with pytest.raises(IrcError, match="outside the target folder"):
        fetch_dataset("toyset", root=fetch_env, progress=False)
    assert not (fetch_env / "toyset").exists()
    assert not list(tmp_path.rglob("evil.txt"))
    assert not fetch_env.exists() or not any(fetch_env.iterdir())


def test_fetch_dataset_without_address_says_where_to_place_it(tmp_path):
    with pytest.raises(IrcError) as err:
        fetch_dataset("sots", root=tmp_path)
    assert str(tmp_path / "sots") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UsageError):
        fetch_dataset("nope", root=tmp_path)


def test_tar_archives_are_checked_too(tmp_path):
    import tarfile

    from irc.data._archive import extract_archive

    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        data = _png_bytes(3)
        info = tarfile.TarInfo("set/x.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    extract_archive(good, tmp_path / "out")
    assert (tmp_path / "out" / "set" / "x.png").is_file()
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tf:
        link = tarfile.TarInfo("set/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(IrcError, match="link"):
        extract_archive(bad, tmp_path / "out2")
    assert not (tmp_path / "out2" / "set" / "link").exists()
