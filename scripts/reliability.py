#!/usr/bin/env python3
"""Probe irc as a hostile world would, and print the figures that must all be zero.

    python scripts/reliability.py                          # the full run (see the README's figures)
    python scripts/reliability.py --fuzz 120 --kills 3 --resumes 2 --corrupt 3 --json   # CI's slice

What it does, every run under a temporary root (``--root``), every child process capped in memory
(``--memory-gb``, RLIMIT_AS) and in time, so a failure cannot take the machine down:

* **fuzz**: generates malformed and edge-case inputs (random bytes, truncated and bit-flipped PNG /
  JPEG / TIFF / WebP, headers claiming huge sizes, empty files, 1x1, grey, palette + tRNS, CMYK,
  16-bit, LA, animated GIF, EXIF orientations, odd names) and restores them in batches with
  ``--jsonl``. Counted: tracebacks, wrong exit codes (anything but 0 or 1), records missing,
  partial outputs (an output that does not decode completely), good files lost (an input Pillow
  decodes fully whose output is missing).
* **kills**: starts a batch and sends SIGKILL, SIGTERM or SIGINT at a random moment, then reruns
  it. Counted: partial outputs after the kill, and outputs of the rerun that differ from a clean
  run's bytes.
* **resumes / corrupt**: trains a tiny network, kills it (SIGKILL) and resumes, or corrupts its
  newest checkpoint (a flipped byte, a truncation, an empty file, a broken marker) and resumes.
  Counted: final weights that differ from an uninterrupted run's.
* **code**: plants pickles whose unpickling would create a file, in a checkpoint folder and as
  ``--weights``; counted when the file appears.
* **memory**: the peak resident memory per megapixel of a restore (identity, and the default
  method with ``--tile auto``) of a 6-megapixel image.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import random
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def limits(memory_gb: float):
    def apply() -> None:
        cap = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        os.setsid()

    return apply


def irc(args: list[str], *, memory_gb: float, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run ``irc ARGS`` capped; a run past ``timeout`` is killed (by subprocess.run) and reported
    as exit 124 with a note on stderr, never left running."""
    cmd = [sys.executable, "-m", "irc", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=timeout, preexec_fn=limits(memory_gb), **kw)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"reliability: killed after {timeout:g} s\n")


def finish(proc: subprocess.Popen, timeout: float) -> tuple[bytes, bytes, int]:
    """Wait for a child started with Popen; past ``timeout`` it is killed and waited for (no
    child outlives the probe) and its exit code reads 124."""
    try:
        out, err = proc.communicate(timeout=timeout)
        return out, err, proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return out, err + f"reliability: killed after {timeout:g} s\n".encode(), 124


# ------------------------------------------------------------------------------------ inputs


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def make_inputs(folder: Path, count: int, rng: random.Random) -> list[Path]:
    """``count`` files: a mix of valid edge cases and malformed ones."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        kind = i % 16
        w, h = rng.randint(1, 48), rng.randint(1, 48)
        pixels = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        base = Image.fromarray(pixels)
        name, data = f"f{i:05d}", b""
        if kind == 0:
            name, data = name + ".png", _encoded(base, "PNG")
        elif kind == 1:
            name, data = name + ".jpg", _encoded(base, "JPEG", quality=rng.randint(5, 100))
        elif kind == 2:  # truncated
            full = _encoded(base, rng.choice(["PNG", "JPEG"]))
            name, data = name + ".png", full[: rng.randint(1, max(2, len(full) - 1))]
        elif kind == 3:  # bit flips
            full = bytearray(_encoded(base, "PNG"))
            for _ in range(rng.randint(1, 8)):
                full[rng.randrange(len(full))] ^= 1 << rng.randrange(8)
            name, data = name + ".png", bytes(full)
        elif kind == 4:  # random bytes
            name, data = name + rng.choice([".png", ".jpg", ".tif", ".webp"]), os.urandom(rng.randint(0, 2000))
        elif kind == 5:  # a header claiming a huge image
            header = struct.pack(">IIBBBBB", rng.choice([199_000_000, 50_000, 1]), rng.choice([1, 50_000, 199_000_000]), 8, 2, 0, 0, 0)
            name, data = name + ".png", b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")
        elif kind == 6:
            name, data = name + ".png", _encoded(base.convert("L"), "PNG")
        elif kind == 7:
            pal = base.convert("P", palette=Image.ADAPTIVE, colors=8)
            name, data = name + ".png", _encoded(pal, "PNG", transparency=0)
        elif kind == 8:
            name, data = name + ".tif", _encoded(base.convert("CMYK"), "TIFF")
        elif kind == 9:
            arr16 = (np.random.default_rng(i).integers(0, 65536, (h, w), dtype=np.uint16))
            name, data = name + ".png", _encoded(Image.fromarray(arr16), "PNG")
        elif kind == 10:
            name, data = name + ".png", _encoded(base.convert("LA"), "PNG")
        elif kind == 11:
            frames = [base, base.transpose(Image.FLIP_LEFT_RIGHT)]
            buf = io.BytesIO()
            frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
            name, data = name + ".gif", buf.getvalue()
        elif kind == 12:
            exif = Image.Exif()
            exif[0x0112] = rng.randint(0, 9)
            name, data = name + ".jpg", _encoded(base, "JPEG", exif=exif.tobytes())
        elif kind == 13:
            name, data = name + ".webp", _encoded(base, "WEBP", quality=rng.randint(1, 100))
        elif kind == 14:
            name, data = name + ".png", b""
        else:  # odd names
            name, data = f"{name} [odd] ü'$(x).png", _encoded(base, "PNG")
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def decodes_fully(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            if im.width * im.height > 50_000_000:
                return False
            im.load()
        return True
    except Exception:  # noqa: BLE001 - anything Pillow cannot decode is not a good file
        return False


# ------------------------------------------------------------------------------------ probes


def probe_fuzz(root: Path, count: int, rng: random.Random, memory_gb: float, figures: dict) -> None:
    inputs = make_inputs(root / "fuzz-in", count, rng)
    out = root / "fuzz-out"
    for start in range(0, len(inputs), 40):
        batch = inputs[start : start + 40]
        proc = irc(["restore", "-m", "identity", *map(str, batch), "-o", str(out), "--jsonl", "--ext", "png"], memory_gb=memory_gb)
        figures["cases"] += len(batch)
        figures["tracebacks"] += proc.stderr.count("Traceback")
        figures["wrong_exits"] += proc.returncode not in (0, 1)
        records = {json.loads(line)["input"]: json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")}
        figures["records_missing"] += sum(1 for p in batch if str(p) not in records)
        for p in batch:
            rec = records.get(str(p), {})
            target = Path(rec["output"]) if rec.get("output") else None
            if decodes_fully(p) and rec.get("status") != "done":
                figures["good_files_lost"] += 1
                figures.setdefault("lost", []).append(f"{p.name}: {rec.get('error')}")
            if target is not None and target.exists() and not decodes_fully(target):
                figures["partial_files"] += 1
    figures["partial_files"] += sum(1 for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".irc-claim"))


def probe_kills(root: Path, kills: int, rng: random.Random, memory_gb: float, figures: dict) -> None:
    src = root / "kill-in"
    src.mkdir(parents=True, exist_ok=True)
    for i in range(24):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (160, 160, 3), dtype=np.uint8)).save(src / f"k{i:02d}.png")
    clean = root / "kill-clean"
    irc(["restore", "-m", "bicubic", "--scale", "2", str(src), "-o", str(clean), "-q"], memory_gb=memory_gb)
    reference = {p.name: p.read_bytes() for p in clean.iterdir()}
    for k in range(kills):
        out = root / f"kill-{k}"
        proc = subprocess.Popen([sys.executable, "-m", "irc", "restore", "-m", "bicubic", "--scale", "2", str(src), "-o", str(out), "-q"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), preexec_fn=limits(memory_gb))  # fmt: skip
        time.sleep(rng.uniform(1.0, 4.0))
        proc.send_signal(rng.choice([signal.SIGKILL, signal.SIGTERM, signal.SIGINT]))
        finish(proc, 120)
        figures["interrupted_batches"] += 1
        if out.is_dir():
            figures["partial_files"] += sum(1 for p in out.iterdir() if not p.name.startswith(".") and not decodes_fully(p))
        rerun = irc(["restore", "-m", "bicubic", "--scale", "2", str(src), "-o", str(out), "-q"], memory_gb=memory_gb)
        figures["wrong_exits"] += rerun.returncode != 0
        figures["tracebacks"] += rerun.stderr.count("Traceback")
        got = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
        figures["good_files_lost"] += len(set(reference) - set(got))
        figures["bytes_mismatched"] += sum(1 for name, data in got.items() if reference.get(name) != data)


RECIPE = """
method = "tur"
steps = {steps}
batch = 2
seed = 5
log_every = 1
[config]
backbone = "convunet"
width = 4
enc_blocks = [1]
middle_blocks = 1
dec_blocks = [1]
loss = "l1"
[data]
train = ["{images}"]
crop = 16
degradation = "noise:25"
[checkpoint]
every = 2
keep = 0
[validation]
dataset = "none"
"""


def _train(recipe: Path, run: Path, extra: list[str], memory_gb: float, **kw):
    return subprocess.Popen([sys.executable, "-m", "irc", "train", str(recipe), "--run-dir", str(run), "-q", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), preexec_fn=limits(memory_gb), **kw)  # fmt: skip


def _final_weights(run: Path) -> bytes:
    from irc.train.checkpoints import latest_checkpoint, load_checkpoint

    state, _ = load_checkpoint(latest_checkpoint(run))
    return b"".join(state["weights"][k].numpy().tobytes() for k in sorted(state["weights"]))


def probe_training(root: Path, resumes: int, corrupt: int, rng: random.Random, memory_gb: float, figures: dict) -> None:
    images = root / "train-images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(6):
        Image.fromarray(np.random.default_rng(100 + i).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(images / f"t{i}.png")
    steps = 12
    recipe = root / "tiny.toml"
    recipe.write_text(RECIPE.format(steps=steps, images=images))
    clean = root / "run-clean"
    finish(_train(recipe, clean, [], memory_gb), 600)
    reference = _final_weights(clean)
    for k in range(resumes):
        run = root / f"run-resume-{k}"
        proc = _train(recipe, run, [], memory_gb)
        time.sleep(rng.uniform(3.0, 8.0))
        proc.send_signal(signal.SIGKILL)
        finish(proc, 60)
        _, err, _ = finish(_train(recipe, run, ["--resume", "auto"], memory_gb), 600)
        figures["interrupted_trainings"] += 1
        figures["tracebacks"] += err.decode(errors="replace").count("Traceback")
        figures["resume_mismatches"] += _final_weights(run) != reference
    for k in range(corrupt):
        run = root / f"run-corrupt-{k}"
        finish(_train(recipe, run, ["--stop-at", "6"], memory_gb), 600)
        from irc.train.checkpoints import list_checkpoints

        newest = list_checkpoints(run)[-1]
        damage = ["flip", "truncate", "empty", "marker"][k % 4]
        target = newest / ("irc_checkpoint.json" if damage == "marker" else "tensors.safetensors")
        data = bytearray(target.read_bytes())
        if damage == "flip":
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif damage == "truncate":
            data = data[: len(data) // 2]
        elif damage == "empty":
            data = bytearray()
        else:
            data = bytearray(b"{")
        target.write_bytes(bytes(data))
        _, err, code = finish(_train(recipe, run, ["--resume", "auto"], memory_gb), 600)
        figures["corrupted_resumes"] += 1
        figures["tracebacks"] += err.decode(errors="replace").count("Traceback")
        figures["wrong_exits"] += code != 0
        figures["resume_mismatches"] += _final_weights(run) != reference


class _Payload:
    def __init__(self, witness: Path):
        self.witness = str(witness)

    def __reduce__(self):
        return (open, (self.witness, "w"))


def probe_code(root: Path, memory_gb: float, figures: dict) -> None:
    witness = root / "code-ran"
    run = root / "run-clean"
    from irc.train.checkpoints import list_checkpoints

    if run.is_dir() and list_checkpoints(run):
        ckpt = list_checkpoints(run)[-1]
        for name in ("custom_checkpoint_0.pkl", "optimizer.bin", "random_states_0.pkl"):
            (ckpt / name).write_bytes(pickle.dumps(_Payload(witness)))
        finish(_train(root / "tiny.toml", root / "run-code", ["--resume", str(ckpt)], memory_gb), 600)
        figures["pickle_cases"] += 1
    evil = root / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": _Payload(witness)}))
    img = root / "kill-in" / "k00.png"
    for method in ("tur", "hypir"):
        irc(["restore", "-m", method, "--weights", str(evil), "--base-model", "random:tiny", str(img), "-o", str(root / "evil-out"), "-q"], memory_gb=memory_gb)
        figures["pickle_cases"] += 1
    figures["code_executed"] += witness.exists()


def probe_memory(root: Path, memory_gb: float, figures: dict) -> None:
    big = root / "six-mp.png"
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (2000, 3000, 3), dtype=np.uint8)).save(big)
    base = subprocess.run([sys.executable, "-c", "import resource, torch, irc.cli; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                          capture_output=True, text=True, env=child_env())  # fmt: skip
    baseline = int(base.stdout.strip() or 0) * 1024
    for label, args in (("identity", ["-m", "identity"]), ("default", []), ("default_tiled", ["--tile", "512"])):
        script = (
            "import resource, sys; from irc.cli import main; "
            f"code = main(['restore', {str(big)!r}, '-o', {str(root / 'mem-out')!r}, '--overwrite', '-q', *{args!r}]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
        )
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=child_env(), preexec_fn=limits(memory_gb), timeout=1800)
        peak = int(proc.stdout.strip().splitlines()[-1]) * 1024 if proc.returncode == 0 else None
        figures[f"peak_bytes_per_pixel_{label}"] = None if peak is None else round((peak - baseline) / 6e6, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fuzz", type=int, default=10_000, help="malformed inputs (default 10000)")
    ap.add_argument("--kills", type=int, default=50, help="interrupted batches (default 50)")
    ap.add_argument("--resumes", type=int, default=20, help="killed and resumed trainings (default 20)")
    ap.add_argument("--corrupt", type=int, default=10, help="corrupted checkpoints resumed (default 10)")
    ap.add_argument("--memory", action="store_true", help="also measure the peak memory per megapixel (slow)")
    ap.add_argument("--memory-gb", type=float, default=8.0, help="address-space cap of every child (default 8)")
    ap.add_argument("--root", type=Path, default=None, help="work folder (default: a new temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="irc-reliability-"))
    rng = random.Random(args.seed)
    figures = {k: 0 for k in ("cases", "tracebacks", "wrong_exits", "records_missing", "partial_files", "good_files_lost", "code_executed",
                              "bytes_mismatched", "resume_mismatches", "interrupted_batches", "interrupted_trainings", "corrupted_resumes", "pickle_cases")}  # fmt: skip
    sys.path.insert(0, str(REPO))
    started = time.time()
    probe_fuzz(root, args.fuzz, rng, args.memory_gb, figures)
    if args.kills:
        probe_kills(root, args.kills, rng, args.memory_gb, figures)
    if args.resumes or args.corrupt:
        probe_training(root, args.resumes, args.corrupt, rng, args.memory_gb, figures)
    probe_code(root, args.memory_gb, figures)
    if args.memory:
        probe_memory(root, args.memory_gb, figures)
    figures["seconds"] = round(time.time() - started, 1)
    figures["root"] = str(root)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key:28s} {value}")
    must_be_zero = ("tracebacks", "wrong_exits", "records_missing", "partial_files", "good_files_lost", "code_executed", "bytes_mismatched", "resume_mismatches")
    return 1 if any(figures[k] for k in must_be_zero) else 0


if __name__ == "__main__":
    sys.exit(main())
