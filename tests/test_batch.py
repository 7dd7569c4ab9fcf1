"""Batch behaviour of `irc restore`: bad files, skipping, mirroring, stdin, interruption."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from irc.batch import InputItem, expand_inputs, plan_batch, plan_output
from irc.cli import main
from irc.errors import UsageError


def make_png(path: Path, size=(24, 16), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def mixed_dir(tmp_path) -> Path:
    """Three good images and four bad ones (zero-byte, truncated, not an image, bomb)."""
    d = tmp_path / "in"
    for i in range(3):
        make_png(d / f"good{i}.png", seed=i)
    (d / "empty.png").write_bytes(b"")
    full = (d / "good0.png").read_bytes()
    (d / "truncated.png").write_bytes(full[: len(full) // 2])
    (d / "noise.jpg").write_bytes(os.urandom(2000))
    make_png(d / "bomb.png", size=(300, 300))
    return d


def test_bad_files_do_not_stop_the_batch(mixed_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IRC_MAX_PIXELS", "50000")  # makes bomb.png (90,000 px) "too large"
    out = tmp_path / "out"
    code = main(["restore", "-m", "bicubic", "--scale", "2", "--device", "cpu", "--jsonl", str(mixed_dir), "-o", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 1
    records = {Path(r["input"]).name: r for r in map(json.loads, stdout.splitlines())}
    assert {n for n, r in records.items() if r["status"] == "done"} == {"good0.png", "good1.png", "good2.png"}
    assert {n for n, r in records.items() if r["status"] == "failed"} == {"empty.png", "truncated.png", "noise.jpg", "bomb.png"}
    for name in ("empty.png", "truncated.png", "noise.jpg", "bomb.png"):
        assert name in records[name]["error"] and "\n" not in records[name]["error"]
        assert name in stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == ["good0_bicubic.png", "good1_bicubic.png", "good2_bicubic.png"]


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path, capsys):
    src = make_png(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["restore", "-m", "identity", str(src), "-o", str(out), "--jsonl"]) == 0
    target = out / "a_identity.png"
    target.write_bytes(b"sentinel")
    capsys.readouterr()
    assert main(["restore", "-m", "identity", str(src), "-o", str(out), "--jsonl"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "skipped"
    assert target.read_bytes() == b"sentinel"
    assert main(["restore", "-m", "identity", str(src), "-o", str(out), "--overwrite", "--jsonl"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "done"
    with Image.open(target) as im:
        assert im.size == (24, 16)


def test_input_is_never_overwritten(tmp_path, capsys):
    src = make_png(tmp_path / "a.png")
    before = src.read_bytes()
    code = main(["restore", "-m", "identity", str(src), "--name-template", "{name}", "--overwrite"])
    assert code == 1 and "overwrite the input" in capsys.readouterr().err
    assert src.read_bytes() == before


def test_recursive_mirrors_the_tree(tmp_path, capsys):
    make_png(tmp_path / "in" / "a.png")
    make_png(tmp_path / "in" / "sub" / "deeper" / "b.png")
    out = tmp_path / "out"
    assert main(["restore", "-m", "identity", "-r", str(tmp_path / "in"), "-o", str(out)]) == 0
    assert (out / "a_identity.png").is_file() and (out / "sub" / "deeper" / "b_identity.png").is_file()
    # without --recursive only the top level is taken
    items = expand_inputs([str(tmp_path / "in")]).items
    assert [i.path.name for i in items] == ["a.png"]


def test_globs_stdin_and_missing_inputs(tmp_path):
    a = make_png(tmp_path / "a.png")
    b = make_png(tmp_path / "b.png")
    (tmp_path / "notes.txt").write_text("x")
    found = expand_inputs([str(tmp_path / "*.png")])
    assert [i.path for i in found.items] == [a, b] and not found.missing
    found = expand_inputs(["-", str(a)], stdin=io.StringIO(f"{b}\n\n{a}\n{tmp_path / 'gone.png'}\n"))
    assert [i.path for i in found.items] == [b, a]  # duplicates removed, order kept
    assert len(found.missing) == 1 and found.missing[0] == (str(tmp_path / "gone.png"), "no such file or directory")


def test_missing_input_fails_the_run_but_not_the_batch(tmp_path, capsys):
    a = make_png(tmp_path / "a.png")
    code = main(["restore", "-m", "identity", str(a), str(tmp_path / "nope.png"), "-o", str(tmp_path / "out")])
    assert code == 1
    assert (tmp_path / "out" / "a_identity.png").exists()
    assert "nope.png" in capsys.readouterr().err


def test_name_template_fields(tmp_path):
    item = InputItem(tmp_path / "x.jpg", "sub")
    out = plan_output(item, output_dir=tmp_path / "o", template="{method}/{stem}-x{scale}.{ext}", fields={"method": "bicubic", "scale": 4.0}, ext="png")
    assert out == tmp_path / "o" / "sub" / "bicubic" / "x-x4.0.png"
    with pytest.raises(UsageError, match="KeyError 'nope'"):
        plan_output(item, output_dir=None, template="{nope}", fields={}, ext=None)
    for bad in ("", "{stem.x}", "sub/"):
        with pytest.raises(UsageError, match="--name-template"):
            plan_output(item, output_dir=None, template=bad, fields={}, ext=None)
    with pytest.raises(UsageError, match="--ext 'xyz'"):
        plan_output(item, output_dir=None, template="{stem}.{ext}", fields={}, ext="xyz")
    assert plan_output(InputItem(tmp_path / "x.gif"), output_dir=None, template="{stem}.{ext}", fields={}, ext=None).name == "x.png"


def test_plan_batch_protects_inputs_and_outputs(tmp_path):
    a_png, a_jpg, b_png = tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "b.png"
    for p in (a_png, a_jpg, b_png):
        p.write_bytes(b"x")
    items = [InputItem(a_jpg), InputItem(b_png), InputItem(a_png)]

    def to_png(item):
        return plan_output(item, output_dir=None, template="{stem}.{ext}", fields={}, ext="png")

    jobs, failures, dropped = plan_batch(items, to_png)
    # a.jpg -> a.png is an input of the batch; b.png -> itself; a.png -> itself: all refused
    assert jobs == [] and dropped == 0
    assert [f[0] for f in failures] == [str(a_jpg), str(b_png), str(a_png)]
    assert "another input" in failures[0][1] and "the input itself" in failures[1][1]

    out = tmp_path / "out"
    jobs, failures, _ = plan_batch([InputItem(a_png), InputItem(a_jpg)], lambda i: plan_output(i, output_dir=out, template="{stem}.png", fields={}, ext=None))
    assert [j.output for j in jobs] == [out / "a.png"]
    assert "already produced by" in failures[0][1] and "{name}" in failures[0][1]

    # a previous run's output found in the directory is not an input again; named explicitly, it is
    jobs, failures, dropped = plan_batch([InputItem(b_png), InputItem(tmp_path / "b_m.png")], lambda i: plan_output(i, output_dir=None, template="{stem}_m.{ext}", fields={}, ext=None))
    assert [j.item.path for j in jobs] == [tmp_path / "b_m.png"] and "another input" in failures[0][1] and dropped == 0
    (tmp_path / "b_m.png").write_bytes(b"x")
    items = [InputItem(b_png), InputItem(tmp_path / "b_m.png", explicit=False)]
    jobs, failures, dropped = plan_batch(items, lambda i: plan_output(i, output_dir=None, template="{stem}_m.{ext}", fields={}, ext=None))
    assert [j.item.path for j in jobs] == [b_png] and dropped == 1 and not failures


def test_rerun_in_place_does_not_restore_its_own_outputs(tmp_path, capsys):
    d = tmp_path / "d"
    make_png(d / "a.png")
    make_png(d / "b.png", seed=1)
    assert main(["restore", "-m", "identity", str(d)]) == 0
    assert main(["restore", "-m", "identity", str(d), "--jsonl"]) == 0
    assert sorted(p.name for p in d.iterdir()) == ["a.png", "a_identity.png", "b.png", "b_identity.png"]
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["status"] for r in records] == ["skipped", "skipped"]


def test_template_errors_are_usage_errors(tmp_path, capsys):
    src = make_png(tmp_path / "a.png")
    assert main(["restore", "-m", "identity", str(src), "-o", str(tmp_path / "o"), "--name-template", "{stem.x}.png"]) == 2
    assert main(["restore", "-m", "identity", str(src), "-o", str(tmp_path / "o"), "--ext", "xyz"]) == 2
    assert "--name-template" in capsys.readouterr().err


def test_empty_input_list_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["restore", "-m", "identity", "-"]) == 2
    assert "no input images" in capsys.readouterr().err


def test_interrupted_batch_leaves_no_partial_file_and_resumes(tmp_path, data_root):
    """Kill the process mid-batch: every output present is complete; a rerun does only the rest."""
    src = tmp_path / "in"
    src.mkdir()
    photo = data_root / "DIV2K_valid_256crops"
    names = sorted(os.listdir(photo))[:24]
    for name in names:
        shutil.copy(photo / name, src / name)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "irc", "restore", "-m", "bicubic", "--scale", "4", "--device", "cpu", str(src), "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        done = [p for p in out.glob("*.png")] if out.exists() else []
        if len(done) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finished = sorted(p.name for p in out.glob("*.png"))
    assert 2 <= len(finished) < len(names), "the batch was not interrupted mid-run"
    for name in finished:  # whatever carries a final name is a whole, decodable image
        with Image.open(out / name) as im:
            im.load()
            assert im.size == (1024, 1024)

    rerun = subprocess.run(cmd + ["--jsonl"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    records = [json.loads(line) for line in rerun.stdout.splitlines()]
    skipped = sorted(Path(r["output"]).name for r in records if r["status"] == "skipped")
    assert skipped == finished
    assert sum(r["status"] == "done" for r in records) == len(names) - len(finished)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{Path(n).stem}_bicubic.png" for n in names)


def test_same_names_in_two_folders_get_a_hint_that_works(tmp_path, capsys):
    """c1/x.png and c2/x.png into one folder: the hint names {parent}, and following it works."""
    from irc.cli import main

    for folder, value in (("c1", 10), ("c2", 200)):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(tmp_path / folder / "x.png")
    inputs = [str(tmp_path / "c1" / "x.png"), str(tmp_path / "c2" / "x.png")]
    out = tmp_path / "out"
    code = main(["restore", "--method", "identity", *inputs, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "--name-template '{parent}/{stem}_{method}.{ext}'" in err
    code = main(["restore", "--method", "identity", *inputs, "-o", str(out), "--name-template", "{parent}/{stem}_{method}.{ext}"])
    assert code == 0, capsys.readouterr().err
    for folder, value in (("c1", 10), ("c2", 200)):
        with Image.open(out / folder / "x_identity.png") as im:
            assert np.asarray(im)[0, 0, 0] == value


def test_a_killed_writers_claim_beside_its_finished_output_is_cleared(tmp_path):
    """A run killed after its output was in place, before it released the claim, left
    `.x.png.irc-claim` behind for good: the next run skips the output and clears the claim."""
    from irc.atomic import CLAIM_SUFFIX, remove_stale_claim

    out = tmp_path / "x.png"
    out.write_bytes(b"done")
    claim = tmp_path / f".x.png{CLAIM_SUFFIX}"
    claim.write_text("")  # killed between O_EXCL and writing its tag
    assert remove_stale_claim(out) and not claim.exists()
    from irc.atomic import writer_tag

    claim.write_text(writer_tag())  # this live process: kept
    assert not remove_stale_claim(out) and claim.exists()
