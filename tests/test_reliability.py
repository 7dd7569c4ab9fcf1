"""Regression tests for the reliability defects found by probing irc as a hostile world would
(issue: reliability and security). Each failed before its fix. The full probe is
scripts/reliability.py; CI runs a small slice of it (test_reliability_probe_slice)."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from irc.cli import main

REPO = Path(__file__).resolve().parents[1]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, rows: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def _photo(path: Path, size: int = 24, seed: int = 0) -> Path:
    Image.fromarray((np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_a_tiny_file_claiming_a_huge_image_is_refused_before_allocating(tmp_path, capsys):
    """A 65-byte PNG claiming 199,000,000 x 1 pixels drove a batch to 24 GB and the OOM killer."""
    bomb = tmp_path / "a-bomb.png"
    bomb.write_bytes(_png(199_000_000, 1, b""))
    good = _photo(tmp_path / "b-good.png")
    code = main(["restore", "-m", "identity", str(bomb), str(good), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "would need about" in err and "GiB of memory" in err
    assert (tmp_path / "out" / "b-good_identity.png").is_file()  # the good file after it is restored
    assert err.index("failed") < err.index("restored")  # the failure line came as it happened


def test_a_png_with_missing_rows_is_a_failure(tmp_path, capsys):
    short = tmp_path / "short.png"
    short.write_bytes(_png(16, 16, b"".join(b"\x00" + bytes([200] * 48) for _ in range(8))))
    assert main(["restore", "-m", "identity", str(short), "-o", str(tmp_path / "o")]) == 1
    assert "truncated PNG" in capsys.readouterr().err and not (tmp_path / "o" / "short_identity.png").exists()


@pytest.mark.parametrize("template", ["../{stem}.png", "/tmp/{stem}.png", "sub/../../{stem}.png"])
def test_name_templates_cannot_leave_the_output_folder(tmp_path, template, capsys):
    src = _photo(tmp_path / "in.png")
    assert main(["restore", "-m", "identity", str(src), "-o", str(tmp_path / "out"), "--name-template", template]) == 2
    assert "leaves the output folder" in capsys.readouterr().err
    assert not (tmp_path / "in.png.png").exists() and not Path("/tmp/in.png").exists()


def test_name_templates_cannot_leave_the_output_folder_through_a_symlink(tmp_path, capsys):
    src = _photo(tmp_path / "in.png")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere)
    assert main(["restore", "-m", "identity", str(src), "-o", str(out), "--name-template", "sub/{stem}.png"]) == 2
    assert "symbolic link" in capsys.readouterr().err and not list(elsewhere.iterdir())
    # the output folder itself may be a link: that is where the user sends the outputs
    (tmp_path / "link").symlink_to(elsewhere)
    assert main(["restore", "-m", "identity", str(src), "-o", str(tmp_path / "link"), "-q"]) == 0
    assert (elsewhere / "in_identity.png").is_file()


def test_binary_stdin_is_a_usage_error_and_paths_keep_their_spaces(tmp_path, monkeypatch, capsys):
    src = _photo(tmp_path / " leading space.png")

    class Stdin(io.TextIOWrapper):
        pass

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((tmp_path / " leading space.png").read_bytes())))
    assert main(["restore", "-", "-m", "identity", "-o", str(tmp_path / "o")]) == 2
    assert "binary data" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(f"{src}\n\n".encode())))
    assert main(["restore", "-", "-m", "identity", "-o", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / " leading space_identity.png").is_file()


def test_a_directory_where_an_output_goes_is_a_failure_not_a_skip(tmp_path, capsys):
    src = _photo(tmp_path / "x.png")
    (tmp_path / "o" / "x_identity.png").mkdir(parents=True)
    assert main(["restore", "-m", "identity", str(src), "-o", str(tmp_path / "o")]) == 1
    assert "is a directory" in capsys.readouterr().err


def test_two_identical_runs_at_once_do_not_fail_each_other(tmp_path):
    """Concurrent batches deleted each other's temporaries and reported false failures."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(16):
        _photo(inputs / f"p{i:02d}.png", size=96, seed=i)
    cmd = [sys.executable, "-m", "irc", "restore", "-m", "bicubic", "--scale", "2", str(inputs), "-o", str(tmp_path / "out"), "--jsonl"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True) for _ in range(2)]
    results = [r.communicate(timeout=300) for r in runs]
    for (out, err), run in zip(results, runs):
        assert run.returncode == 0, err
        statuses = [json.loads(line)["status"] for line in out.splitlines()]
        assert "failed" not in statuses and len(statuses) == 16
    outputs = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in outputs] == [f"p{i:02d}_bicubic.png" for i in range(16)]  # no temporaries, no claims left
    for p in outputs:
        assert Image.open(p).size == (192, 192)


def test_a_live_writers_temporary_is_kept_and_a_dead_ones_removed(tmp_path):
    from irc.atomic import claim_output, remove_stale_temporaries, writer_tag

    target = tmp_path / "x.png"
    live = tmp_path / f".x.png.{writer_tag()}.0123abcd.tmp"
    dead = tmp_path / f".x.png.{writer_tag().split('-')[0]}-999999999.0123abcd.tmp"
    old_style = tmp_path / ".x.png.0123abcd.tmp"
    for p in (live, dead, old_style):
        p.write_bytes(b"partial")
    assert remove_stale_temporaries(target) == 2 and live.exists() and not dead.exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        claim = tmp_path / ".x.png.irc-claim"
        claim.write_text(f"{writer_tag().split('-')[0]}-{sleeper.pid}")
        with claim_output(target) as holder:
            assert holder == claim.read_text()  # held by a live process: not ours
    finally:
        sleeper.kill()
        sleeper.wait()
    with claim_output(target) as holder:  # its writer is dead now: taken over
        assert holder is None
    assert not (tmp_path / ".x.png.irc-claim").exists()


def _tur_weights(tmp_path, **changes):
    """A weights file written directly with safetensors (irc's own writer refuses bad metadata)."""
    from safetensors.torch import save_file

    from irc.methods.tur import TUR

    method = TUR.from_config({"width": 8, "enc_blocks": [1], "dec_blocks": [1], "middle_blocks": 1, "loss": "l1"})
    state = changes.pop("state", lambda s: s)({k: v.clone() for k, v in method.state_dict().items()})
    meta = {"method": "tur", "config": json.dumps(method.metadata()["config"]), **changes}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path), metadata=meta)
    return path


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"state": lambda s: {**s, "backbone.intro.weight": torch.zeros(1, 1, 1, 1)}}, "shape"),
        ({"state": lambda s: {k: (v.half() if k == "backbone.intro.weight" else v) for k, v in s.items()}}, "float16, expected float32"),
        ({"state": lambda s: {k: (v.long() if k == "backbone.intro.bias" else v) for k, v in s.items()}}, "int64"),
        ({"config": "{not json"}, "not JSON"),
        ({"config": "[1, 2]"}, "not an object"),
        ({"config": json.dumps({"width": 1_000_000})}, "width"),
        ({"config": json.dumps({"width": -16})}, "width"),
    ],
)
def test_hostile_weights_give_one_line_errors(tmp_path, change, expected, capsys):
    path = _tur_weights(tmp_path, **change)
    src = _photo(tmp_path / "p.png")
    code = main(["restore", "-m", "tur", "--weights", str(path), str(src), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and expected in err and "Traceback" not in err and str(path) in err
    assert len(err.strip().splitlines()) == 1


def test_warnings_are_one_line_per_image(tmp_path, capsys):
    src = tmp_path / "alpha.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16, 4)) * 255).astype(np.uint8), "RGBA").save(src)
    assert main(["restore", "-m", "identity", str(src), "-o", str(tmp_path / "o"), "--ext", "jpg"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "composited onto white" in err and "UserWarning" not in err and ".py:" not in err


def test_reliability_probe_slice(tmp_path):
    """A small slice of scripts/reliability.py: fuzzed inputs, interrupted batches, checkpoint and
    pickle cases; every figure that must be zero is zero."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "reliability.py"), "--fuzz", "300", "--kills", "3", "--resumes", "2", "--corrupt", "3", "--root", str(tmp_path), "--json"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout)
    for key in ("tracebacks", "partial_files", "wrong_exits", "good_files_lost", "code_executed", "resume_mismatches"):
        assert figures[key] == 0, (key, figures)
    assert figures["cases"] >= 300


def test_libtiff_messages_stay_off_stderr(tmp_path):
    """A damaged deflate TIFF made libtiff print "ZIPDecode: Decoding error ..." (C-level stderr)
    beside irc's own one-line failure."""
    import subprocess
    import sys

    from PIL import Image

    pixels = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "t.tif", compression="tiff_adobe_deflate")
    data = bytearray((tmp_path / "t.tif").read_bytes())
    for i in range(200, 260):
        data[i] ^= 0x55
    (tmp_path / "bad.tif").write_bytes(bytes(data))
    done = subprocess.run([sys.executable, "-m", "irc", "restore", "-m", "identity", str(tmp_path / "bad.tif"), "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("failed ") and "Decod" not in done.stderr.replace("decoder error", ""), done.stderr
