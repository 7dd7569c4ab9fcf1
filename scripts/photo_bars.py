#!/usr/bin/env python3
"""Measure the default photo model against its bars, side by side with the input and OpenCV.

    IRC_DATA_ROOT=../shared/data python scripts/photo_bars.py --weights tur-photo --out photo-bars/

Every figure comes from irc's own evaluation code (irc.evaluate, the same protocols as
``irc eval``) on the data pack, in one run:

* **clean photos** (the bundled examples and CBSD68 as they are): PSNR of the output against the
  input (bar: >= 40 dB) and the largest change of a 16 x 16 block's mean (bar: <= 2/255);
* **PolyU real noise**, the 20 held-out test pairs (bar: >= +1.0 dB over the noisy input);
* **classic5 JPEG q10** (grey; bar: >= +1.0 dB over the input);
* both blind (``--task auto``) and told the task (``--task noise`` / ``--task jpeg``: with the
  default weights, what ``irc restore --task T`` runs, i.e. ``tur-photo-jpeg`` for JPEG);
* **CBSD68 8-bit Gaussian noise** sigma 15 / 25 / 50 (``photo-noise``) against OpenCV's
  ``fastNlMeansDenoisingColored`` at its best ``h`` per sigma (chosen on the first 10 images from
  a grid, then scored on all 68; bar: at least as good);
* **CBSD68 JPEG q30 and Gaussian blur sigma 1.0 / 1.5** (``photo-jpeg``, ``photo-blur``; bar:
  never below the input);
* **a contact sheet** (PNG) of real photos from real47, RealSRSet and RNI15: input and output crops
  side by side, for the eye.

Writes ``bars.json`` and ``bars.md`` (the table of the model card) into ``--out``. OpenCV is
needed only for the NLM column (``pip install opencv-python-headless``); it is not a dependency
of irc.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from irc.data.benchmarks import open_benchmark  # noqa: E402
from irc.evaluate import Run, evaluate  # noqa: E402
from irc.io import read_image  # noqa: E402
from irc.metrics import psnr  # noqa: E402
from irc.pipeline import restore_tensor  # noqa: E402


def mean_psnr(bench, run: Run, **kw) -> float:
    return float(evaluate(run, bench, **kw).summary["psnr"])


def block_change(a: torch.Tensor, b: torch.Tensor, block: int = 16) -> float:
    """Largest absolute change of a ``block x block`` block's mean (0-255 units)."""
    h, w = (a.shape[-2] // block) * block, (a.shape[-1] // block) * block
    pa = torch.nn.functional.avg_pool2d(a[..., :h, :w].double(), block)
    pb = torch.nn.functional.avg_pool2d(b[..., :h, :w].double(), block)
    return float((pa - pb).abs().max()) * 255


def clean_bars(method, knobs, tile) -> dict:
    rows = []
    examples = [p for p in sorted((REPO / "examples").glob("*.png"))]
    bench = open_benchmark("cbsd68", task="clean")
    images = [(p.stem, torch.from_numpy(np.ascontiguousarray(read_image(p).pixels, dtype=np.float32))[None]) for p in examples]
    images += [(f"cbsd68/{bench.names[i]}", bench[i].gt[None]) for i in range(len(bench))]
    for name, x in images:
        y = restore_tensor(method, x, tile=tile, **knobs)
        rows.append({"image": name, "psnr": float(psnr(y.double(), x.double())[0]), "block_change": block_change(y, x)})
    return {
        "min_psnr": min(r["psnr"] for r in rows), "mean_psnr": float(np.mean([r["psnr"] for r in rows])),
        "max_block_change": max(r["block_change"] for r in rows), "worst": min(rows, key=lambda r: r["psnr"]), "images": len(rows),
        "worst_block": max(rows, key=lambda r: r["block_change"]),
        "below_40": sorted((r["image"], round(r["psnr"], 2)) for r in rows if r["psnr"] < 40),
    }  # fmt: skip


def nlm(image: torch.Tensor, h: float) -> torch.Tensor:
    import cv2

    u8 = (image[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    out = cv2.fastNlMeansDenoisingColored(u8, None, h, h, 7, 21)
    return torch.from_numpy(out.astype(np.float32) / 255).permute(2, 0, 1)[None]


def nlm_psnr(bench, h: float, limit: int | None = None) -> float:
    values = []
    for i in range(len(bench) if limit is None else min(limit, len(bench))):
        s = bench[i]
        y = nlm(s.lq[None], h)
        values.append(float(psnr(y.double(), s.gt[None].double())[0]))
    return float(np.mean(values))


def contact_sheet(method, knobs, tile, out: Path, crop: int = 160) -> Path:
    from PIL import Image

    from irc.data import data_root

    root = data_root()
    picks = [("real47", 0), ("real47", 5), ("real47", 12), ("RealSRSet+5images", 3), ("RealSRSet+5images", 10), ("RNI15", 0), ("RNI15", 8)]
    tiles = []
    for folder, index in picks:
        files = sorted(p for p in (root / folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
        if index >= len(files):
            continue
        img = read_image(files[index])
        x = torch.from_numpy(np.ascontiguousarray(img.pixels, dtype=np.float32))[None]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        y = restore_tensor(method, x, tile=tile, **knobs)
        h, w = x.shape[-2:]
        top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        pair = torch.cat([x[..., top : top + crop, left : left + crop], y[..., top : top + crop, left : left + crop]], dim=-1)
        tiles.append((pair[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8))
    width = max(t.shape[1] for t in tiles)
    rows = [np.pad(t, ((0, 4), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    sheet = np.concatenate(rows)
    path = out / "contact-sheet.png"
    Image.fromarray(sheet).save(path)
    return path


def main() -> int:
    from irc.restore import load_method

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="default", help="tur weights (default: the shipped default)")
    ap.add_argument("--out", type=Path, default=Path("photo-bars"))
    ap.add_argument("--tile", default="0", help="tile setting (0: whole images, as irc eval)")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--skip-nlm", action="store_true", help="no OpenCV column")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tile = int(args.tile) if args.tile.isdigit() else args.tile
    method = load_method("tur", None if args.weights == "default" else args.weights, task="auto", device="cpu", dtype=args.dtype, offline=None)
    knobs = {"task": "auto"}
    run = Run(label="tur", method=method, knobs=knobs, weights=args.weights)
    ident = Run(label="input", method=load_method("identity", None, task=None, device="cpu", dtype="fp32", offline=None), knobs={})
    bars: dict = {"weights": args.weights, "weights_sha256": method.weights_sha256}

    bars["clean"] = clean_bars(method, knobs, tile)
    print("clean", bars["clean"], flush=True)
    for name, kw, task in (("polyu", {}, "noise"), ("classic5", {"quality": 10}, "jpeg")):
        bench = open_benchmark(name, **kw)
        # what `irc restore --task T` runs: with the default weights, the task's own default
        # (--task jpeg: tur-photo-jpeg); with a given file, that file conditioned on the task
        told_method = load_method("tur", None, task=task, device="cpu", dtype=args.dtype, offline=None) if args.weights == "default" else method
        told = Run(label=f"tur --task {task}", method=told_method, knobs={"task": task}, weights=args.weights)
        bars[name] = {
            "input": mean_psnr(bench, ident), "tur": mean_psnr(bench, run, tile=tile), "tur_task": mean_psnr(bench, told, tile=tile), "task": task,
            "task_weights_sha256": told_method.weights_sha256,
        }  # fmt: skip
        print(name, bars[name], flush=True)
    for sigma in (15, 25, 50):
        bench = open_benchmark("cbsd68", task="photo-noise", noise=sigma)
        row = {"input": mean_psnr(bench, ident), "tur": mean_psnr(bench, run, tile=tile)}
        if not args.skip_nlm:
            grid = [round(sigma * f, 1) for f in (0.4, 0.55, 0.7, 0.85, 1.0, 1.2)]
            tuned = {h: nlm_psnr(bench, h, limit=10) for h in grid}
            best = max(tuned, key=tuned.get)
            row.update(nlm_h=best, nlm=nlm_psnr(bench, best))
        bars[f"noise{sigma}"] = row
        print(f"noise{sigma}", row, flush=True)
    for name, kw in (("jpeg30", {"task": "photo-jpeg", "quality": 30}), ("blur1.0", {"task": "photo-blur", "blur": 1.0}), ("blur1.5", {"task": "photo-blur", "blur": 1.5})):
        bench = open_benchmark("cbsd68", **kw)
        bars[name] = {"input": mean_psnr(bench, ident), "tur": mean_psnr(bench, run, tile=tile)}
        print(name, bars[name], flush=True)
    bars["contact_sheet"] = str(contact_sheet(method, knobs, tile, args.out))

    checks = {
        "clean >= 40 dB": bars["clean"]["min_psnr"] >= 40,
        "clean block change <= 2/255": bars["clean"]["max_block_change"] <= 2,
        "polyu >= +1 dB": bars["polyu"]["tur"] - bars["polyu"]["input"] >= 1,
        "classic5 q10 >= +1 dB": bars["classic5"]["tur"] - bars["classic5"]["input"] >= 1,
        # told the task: what `irc restore --task noise|jpeg` runs (with the default weights, the
        # task's own default: --task jpeg runs tur-photo-jpeg)
        "polyu >= +1 dB, --task noise": bars["polyu"]["tur_task"] - bars["polyu"]["input"] >= 1,
        "classic5 q10 >= +1 dB, --task jpeg": bars["classic5"]["tur_task"] - bars["classic5"]["input"] >= 1,
        **{f"noise {s} >= NLM": bars[f"noise{s}"]["tur"] >= bars[f"noise{s}"].get("nlm", -1) for s in (15, 25, 50)},
        **{f"{k} >= input": bars[k]["tur"] >= bars[k]["input"] for k in ("jpeg30", "blur1.0", "blur1.5")},
    }
    bars["checks"] = checks
    (args.out / "bars.json").write_text(json.dumps(bars, indent=2) + "\n")
    lines = ["| bar | input | OpenCV NLM (best h) | this model | met |", "|---|---|---|---|---|"]
    c = bars["clean"]
    lines.append(f"| clean photos ({c['images']}): PSNR output vs input >= 40 dB | - | - | min {c['min_psnr']:.2f}, mean {c['mean_psnr']:.2f} | {'yes' if checks['clean >= 40 dB'] else 'no'} |")
    lines.append(f"| clean photos: largest 16x16 block-mean change <= 2/255 | - | - | {c['max_block_change']:.2f}/255 | {'yes' if checks['clean block change <= 2/255'] else 'no'} |")
    for key, label, check in (("polyu", "PolyU real noise (20 test pairs): >= +1 dB", "polyu >= +1 dB"), ("classic5", "classic5 JPEG q10 (grey): >= +1 dB", "classic5 q10 >= +1 dB")):
        r = bars[key]
        lines.append(f"| {label} | {r['input']:.2f} | - | {r['tur']:.2f} ({r['tur'] - r['input']:+.2f}) | {'yes' if checks[check] else 'no'} |")
        told = f"{check}, --task {r['task']}"
        lines.append(f"| the same, told `--task {r['task']}` | {r['input']:.2f} | - | {r['tur_task']:.2f} ({r['tur_task'] - r['input']:+.2f}) | {'yes' if checks[told] else 'no'} |")
    for s in (15, 25, 50):
        r = bars[f"noise{s}"]
        nl = f"{r['nlm']:.2f} (h {r['nlm_h']:g})" if "nlm" in r else "-"
        lines.append(f"| CBSD68 8-bit noise sigma {s}: >= NLM | {r['input']:.2f} | {nl} | {r['tur']:.2f} | {'yes' if checks[f'noise {s} >= NLM'] else 'no'} |")
    for key, label in (("jpeg30", "CBSD68 JPEG q30: >= input"), ("blur1.0", "CBSD68 Gaussian blur 1.0: >= input"), ("blur1.5", "CBSD68 Gaussian blur 1.5: >= input")):
        r = bars[key]
        lines.append(f"| {label} | {r['input']:.2f} | - | {r['tur']:.2f} ({r['tur'] - r['input']:+.2f}) | {'yes' if checks[f'{key} >= input'] else 'no'} |")
    (args.out / "bars.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
