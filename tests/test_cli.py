"""The command line: help texts, lazy imports, exit codes, `irc methods`, `irc restore`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from irc.cli import app, main

COMMANDS = ["restore", "eval", "compare", "bench", "train", "methods", "weights", "datasets"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_importing_the_cli_loads_no_torch():
    code = "import sys, irc.cli; bad = [m for m in ('torch', 'numpy', 'accelerate', 'diffusers') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_every_command(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("command", [["restore"], ["eval"], ["compare"], ["bench"], ["methods"], ["weights", "list"], ["weights", "verify"], ["weights", "fetch"], ["datasets", "list"], ["datasets", "fetch"], ["train"]])
def test_every_option_has_help(command):
    """Every option and argument of every command carries a help text."""
    import typer.main

    group = typer.main.get_command(app)
    cmd = group
    for part in command:
        cmd = cmd.commands[part]
    for param in cmd.params:
        assert getattr(param, "help", None), f"{' '.join(command)}: {param.name} has no help"


def test_version(capsys):
    from irc import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0 and __version__ in out


def test_methods_json(capsys):
    code, out, _ = run(capsys, "methods", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows][:2] == ["identity", "bicubic"]
    assert rows[1]["knobs"][0]["name"] == "scale"


def test_methods_table(capsys):
    code, out, _ = run(capsys, "methods")
    assert code == 0 and "bicubic" in out and "identity" in out


def test_usage_errors_exit_2(capsys, tmp_path):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    code, _, err = run(capsys, "restore", "--method", "nope", str(img))
    assert code == 2 and "unknown method 'nope'" in err
    code, _, err = run(capsys, "restore", "--method", "lorn", str(img))
    assert code == 2 and "(did you mean 'lorun'?)" in err
    code, _, err = run(capsys, "restore", "--method", "lorun", "-O", "ration=0.1", str(img))
    assert code == 2 and "(did you mean 'ratio'?)" in err
    code, _, err = run(capsys, "restore", "--weights", "lorun-cs-r52", str(img))
    assert code == 2 and "(did you mean 'lorun-cs-r50'?)" in err
    code, _, err = run(capsys, "restore", "--method", "bicubic", "--ratio", "0.25", str(img))
    assert code == 2 and "--ratio is an option of lorun, not of bicubic" in err
    code, _, err = run(capsys, "restore", "--method", "bicubic", "-O", "ratio=0.25", str(img))
    assert code == 2 and "ratio" in err and "scale" in err
    code, _, err = run(capsys, "restore", "--device", "cpu", "--dtype", "fp16", str(img))
    assert code == 2 and "fp16" in err
    code, _, err = run(capsys, "restore", "--tile", "big", str(img))
    assert code == 2 and "--tile" in err
    code, _, err = run(capsys, "restore", "--bogus-flag", str(img))
    assert code == 2
    # weights that name nothing are a usage error too (a failed download or checksum stays 1)
    code, _, err = run(capsys, "restore", "--weights", str(tmp_path / "missing.safetensors"), str(img))
    assert code == 2 and "weights file not found" in err
    code, _, err = run(capsys, "restore", "--weights", "no-such-weights", str(img))
    assert code == 2 and "unknown weights 'no-such-weights'" in err


def test_restore_bicubic_on_real_images(capsys, tmp_path, data_root):
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "restore", "--method", "bicubic", "--scale", "4", "--device", "cpu", "--jsonl",
                         str(data_root / "Set5" / "LR_bicubic" / "X4"), "-o", str(out_dir))
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 5 and all(r["status"] == "done" for r in records)
    for record in records:
        assert record["out_width"] == 4 * record["width"] and record["out_height"] == 4 * record["height"]
    with Image.open(out_dir / "babyx4_bicubic.png") as im:
        assert im.size == (512, 512)


def test_python_dash_m_irc():
    out = subprocess.run([sys.executable, "-m", "irc", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "irc" in out.stdout


def test_restore_keeps_16_bit_alpha_and_icc(tmp_path, capsys):
    """A 16-bit RGBA PNG with an ICC profile through bicubic x2: 16-bit RGBA out, alpha resized, ICC kept."""
    from PIL import ImageCms

    from irc.io import Image as IrcImage
    from irc.io import read_image, write_image

    rng = np.random.default_rng(0)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    pixels = rng.random((3, 20, 28)).astype(np.float32)
    alpha = np.ones((1, 20, 28), np.float32)
    alpha[:, :, :14] = 0.25
    src = write_image(tmp_path / "in.png", IrcImage(pixels=pixels, alpha=alpha, bit_depth=16, icc_profile=icc, source_mode="RGBA", format="PNG"))
    code, _, err = run(capsys, "restore", "-m", "bicubic", "--scale", "2", "--device", "cpu", str(src), "-o", str(tmp_path / "out"))
    assert code == 0, err
    out = read_image(tmp_path / "out" / "in_bicubic.png")
    assert (out.height, out.width) == (40, 56)
    assert out.bit_depth == 16 and out.icc_profile == icc
    assert out.alpha is not None and out.alpha.shape == (1, 40, 56)
    assert abs(float(out.alpha[0, 20, 5]) - 0.25) < 1e-3 and abs(float(out.alpha[0, 20, 50]) - 1.0) < 1e-3
    # 16-bit precision survives: values are not on the 8-bit grid
    assert np.abs(out.pixels * 255 - np.round(out.pixels * 255)).max() > 0.01


def test_grey_image_stays_grey(tmp_path, capsys, data_root):
    code, _, err = run(capsys, "restore", "-m", "bicubic", "--scale", "2", "--device", "cpu", str(data_root / "Set11" / "Parrots.tif"), "-o", str(tmp_path), "--ext", "png")
    assert code == 0, err
    with Image.open(tmp_path / "Parrots_bicubic.png") as im:
        assert im.mode == "L" and im.size == (512, 512)


def test_tiled_restore_through_the_cli_matches(tmp_path, capsys, data_root):
    src = data_root / "Set5" / "LR_bicubic" / "X4" / "birdx4.png"
    assert run(capsys, "restore", "-m", "bicubic", "-s", "4", "--device", "cpu", str(src), "-o", str(tmp_path / "whole"))[0] == 0
    assert run(capsys, "restore", "-m", "bicubic", "-s", "4", "--device", "cpu", "--tile", "32", "--tile-overlap", "8", str(src), "-o", str(tmp_path / "tiled"))[0] == 0
    assert run(capsys, "restore", "-m", "bicubic", "-s", "4", "--device", "cpu", "--tile", "auto", str(src), "-o", str(tmp_path / "auto"))[0] == 0
    whole = np.asarray(Image.open(tmp_path / "whole" / "birdx4_bicubic.png"), dtype=int)
    tiled = np.asarray(Image.open(tmp_path / "tiled" / "birdx4_bicubic.png"), dtype=int)
    auto = np.asarray(Image.open(tmp_path / "auto" / "birdx4_bicubic.png"), dtype=int)
    assert np.abs(whole - tiled).max() <= 1 and np.array_equal(whole, auto)


def test_datasets_list_and_fetch_without_address(capsys, tmp_path):
    code, out, _ = run(capsys, "datasets", "list", "--json", "--data-root", str(tmp_path))
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and {"set5", "bsd68", "sots", "train400"} <= set(rows)
    assert rows["sots"]["present"] is False and rows["sots"]["path"] == str(tmp_path / "sots")
    assert "hazy/" in rows["sots"]["layout"] and rows["set5"]["layout"].startswith("HR/")
    code, out, _ = run(capsys, "datasets", "list", "--data-root", str(tmp_path))
    line = next(row for row in out.splitlines() if row.startswith("sots "))
    assert rows["sots"]["layout"] in line  # the table shows where each set's files go, too
    code, _, err = run(capsys, "datasets", "fetch", "sots", "--data-root", str(tmp_path))
    assert code == 1 and str(tmp_path / "sots") in err


def test_piped_tables_are_plain_and_uncut(tmp_path):
    """Through a pipe, tables have no box drawing and every digit (rich would cut at 80 columns)."""
    out = subprocess.run([sys.executable, "-m", "irc", "bench", "--method", "bicubic", "--sizes", "16", "--repeats", "1", "--warmup", "0", "--device", "cpu"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "…" not in out and "━" not in out and "│" not in out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("size"))
    assert header.split() == ["size", "tile", "median", "s", "min", "s", "max", "s", "first", "s", "MP/s", "peak", "dev", "MiB", "peak", "host", "MiB", "FLOP/px", "GFLOP/s"]
    row = next(line for line in out.splitlines() if line.split()[:1] == ["16"])
    assert float(row.split()[5]) > 0  # MP/s keeps significant digits, never a bare 0.00
    assert all(line == line.rstrip() for line in out.splitlines())


def test_small_figures_keep_significant_digits():
    from irc.tables import figure

    assert [figure(v) for v in (0.00123, 0.5, 12.345, 0.0)] == ["0.00123", "0.50", "12.35", "0.00"]


def test_methods_lists_help_real_defaults_and_default_weights():
    out = subprocess.run([sys.executable, "-m", "irc", "methods"], capture_output=True, text=True, check=True).stdout
    assert "task ()" not in out and "ratio (0.0)" not in out
    assert "--ratio RATIO    CS sampling ratio" in out
    assert "--drm on|off" in out and "[default: on]" in out
    assert "cs (default weights: lorun-cs-r25)" in out


def test_help_shows_no_python_types_for_flags_and_lists(capsys):
    for argv in (["restore", "--help"], ["eval", "--help"], ["train", "--help"], ["--help"]):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and "<bool>" not in out and "list[str]" not in out, argv
