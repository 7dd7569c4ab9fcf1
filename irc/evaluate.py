"""The ``irc eval`` engine: run methods over a benchmark protocol and score them.

For each (method, weights) pair every sample of the benchmark is restored from its degraded
input (``Sample.lq``) and compared with the ground truth under the dataset's
:class:`~irc.data.protocols.Protocol` (colour space, crop border, 8-bit rounding). Results are
per-image rows (CSV and JSONL) and a summary JSON carrying a fingerprint of the whole protocol:
metric conventions, degradation seeds and the weights' sha256, so two numbers are only compared
when they were measured the same way. Everything is seeded: the same command gives the same
numbers.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from irc import __version__
from irc.data.benchmarks import Benchmark
from irc.data.protocols import Protocol
from irc.errors import IrcError
from irc.methods.base import Method
from irc.metrics import psnr, ssim

METRIC_IMPLEMENTATION = {
    "psnr": "irc.metrics.psnr: float64 MSE over all pixels and channels after preparation",
    "ssim": "irc.metrics.ssim: MATLAB ssim_index.m, 11x11 Gaussian sigma 1.5, K=(0.01,0.03), valid filtering, [0,255] scale",
    "y": "BT.601 studio-swing Y = (16 + 65.481 R + 128.553 G + 24.966 B)/255",
}


@dataclass(frozen=True)
class Run:
    """One column of an evaluation: a method built with particular weights and options."""

    label: str
    method: Method
    knobs: dict[str, Any]
    weights: str | None = None


@dataclass
class EvalResult:
    label: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def score(restored: Tensor, gt: Tensor, protocol: Protocol) -> dict[str, float]:
    """PSNR and SSIM of one image under ``protocol``.

    Args:
        restored: ``(C, H, W)`` in [0, 1].
        gt: ``(C, H, W)`` in [0, 1], the same size.
    """
    if protocol.task == "cassi":
        return score_spectral(restored, gt)
    kwargs = dict(y_channel=protocol.color == "y", crop_border=protocol.crop_border, round_to_uint8=protocol.round_to_uint8)
    x, ref = restored[None].double(), gt[None].double()
    return {"psnr": float(psnr(x, ref, **kwargs)[0]), "ssim": float(ssim(x, ref, **kwargs)[0])}


def score_spectral(restored: Tensor, gt: Tensor) -> dict[str, float]:
    """CASSI scores as MST / DAUHST compute them (Cai et al., ``simulation/test_code/utils.py``).

    PSNR: both cubes quantised to 256 levels (``round(x * 256)``), PSNR with peak 255 per band,
    averaged over bands. SSIM: irc's MATLAB SSIM per band on the [0, 1] cubes, averaged. SAM: the
    mean spectral angle in degrees.

    Args:
        restored, gt: ``(bands, H, W)`` in [0, 1].
    """
    from irc.metrics import sam

    a = (restored.double().clamp(0, 1) * 256).round()
    b = (gt.double() * 256).round()
    mse = (a - b).pow(2).flatten(1).mean(dim=1).clamp_min(1e-12)
    band_psnr = 10 * torch.log10(255.0**2 / mse)
    band_ssim = ssim(restored.double()[:, None], gt.double()[:, None], crop_border=0, round_to_uint8=False, y_channel=False)
    return {
        "psnr": float(band_psnr.mean()),
        "ssim": float(band_ssim.mean()),
        "sam": float(sam(restored[None].double(), gt[None].double())[0]),
    }


# Protocol task -> the method-side task name (benchmarks speak of "denoise", methods of "noise").
_PROTOCOL_TO_METHOD_TASK = {"denoise": "noise", "real-denoise": "noise", "deblur": "blur", "derain": "rain", "dehaze": "haze", "lowlight": "dark"}


def method_task(cls: type[Method], protocol: Protocol) -> str | None:
    """The task of ``cls`` a benchmark protocol measures (chooses the default weights), or
    ``None`` when the method has no such task (its declared default task is used then)."""
    task = protocol.task.split(":", 1)[1] if protocol.task.startswith("mixture:") else protocol.task
    task = _PROTOCOL_TO_METHOD_TASK.get(task, task)
    return task if task in cls.tasks else None


def protocol_knobs(method: Method, protocol: Protocol, knobs: dict[str, Any]) -> dict[str, Any]:
    """Fill method options the protocol implies (e.g. ``scale`` for SR) unless the user set them."""
    filled = dict(knobs)
    if "scale" in method.knob_names():
        filled.setdefault("scale", protocol.scale)
    if "kernel" in method.knob_names() and protocol.kernel is not None:
        filled.setdefault("kernel", protocol.kernel)
    return filled


def evaluate(
    run: Run, bench: Benchmark, *, tile: int | str = 0, tile_overlap: int | None = None, save_images: Path | None = None, progress=None, keep=None
) -> EvalResult:
    """Restore and score every sample of ``bench`` with ``run``.

    Args:
        run: method, weights label and options.
        bench: the benchmark (samples are generated deterministically from its protocol).
        save_images: directory for the restored images (``<label>/<name>.png``), or ``None``.
        progress: optional callable invoked after each image.
        keep: optional callable ``(index, sample, restored, row)`` invoked after each image
            (``irc eval --report`` keeps the first few for its pictures).
    """
    from irc.io import Image, write_image
    from irc.pipeline import restore_tensor
    from irc.runner import StageRunner

    protocol = bench.protocol
    knobs = protocol_knobs(run.method, protocol, run.knobs)
    result = EvalResult(run.label)
    for index in range(len(bench)):
        sample = bench[index]
        # stochastic methods draw from a generator of their own per image, keyed by the run seed
        # and the sample's name as irc restore keys a file by its path: the same numbers every run,
        # whatever other images, order or limit the run has (no global torch.manual_seed)
        runner = StageRunner(run.method.device, tile, tile_overlap, protocol.seed, [sample.name])
        start = time.perf_counter()
        restored = restore_tensor(run.method, sample.lq[None].float(), runner=runner, **knobs)[0]
        seconds = time.perf_counter() - start
        if restored.shape != sample.gt.shape:
            raise IrcError(
                f"{run.label} on {bench.name}/{sample.name}: output {tuple(restored.shape)} does not match the ground truth "
                f"{tuple(sample.gt.shape)}; does the method need an option such as --scale for this protocol?"
            )
        row = {"method": run.label, "image": sample.name, **score(restored, sample.gt, protocol), "seconds": round(seconds, 4)}
        result.rows.append(row)
        if save_images is not None:
            pixels = restored.clamp(0, 1).numpy()
            write_image(save_images / run.label / f"{sample.name}.png", Image(pixels=pixels, alpha=None, bit_depth=8, icc_profile=None, source_mode="RGB" if pixels.shape[0] == 3 else "L", format="PNG"))
        if keep is not None:
            keep(index, sample, restored, row)
        if progress is not None:
            progress()
    result.summary = summarise(run, bench, result.rows)
    return result


def _mean(values: list[float]) -> float:
    """Plain mean; an identical image (PSNR = inf) makes the mean inf, as it should."""
    return sum(values) / len(values) if values else float("nan")


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by the strings "inf", "-inf", "nan" (strict JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def summarise(run: Run, bench: Benchmark, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Averages plus everything needed to reproduce them."""
    return {
        "method": run.method.name,
        "label": run.label,
        "weights": run.weights,
        "weights_sha256": run.method.weights_sha256,
        "knobs": {k: v for k, v in protocol_knobs(run.method, bench.protocol, run.knobs).items()},
        "dataset": bench.name,
        "images": len(rows),
        "psnr": round(_mean([r["psnr"] for r in rows]), 4),
        "ssim": round(_mean([r["ssim"] for r in rows]), 5),
        **({"sam": round(_mean([r["sam"] for r in rows]), 4)} if rows and "sam" in rows[0] else {}),
        "seconds_per_image": round(_mean([r["seconds"] for r in rows]), 4),
        "protocol": {**bench.protocol.fingerprint(), "metrics": METRIC_IMPLEMENTATION},
        "device": str(run.method.device),
        "dtype": str(run.method.dtype).replace("torch.", ""),
        "irc_version": __version__,
        "torch_version": torch.__version__,
    }


def write_results(results: list[EvalResult], out_dir: Path) -> list[Path]:
    """Write ``rows.csv``, ``rows.jsonl`` and ``summary.json`` (atomically) into ``out_dir``."""
    from irc.atomic import atomic_write_text

    rows = [row for result in results for row in result.rows]
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = ["method", "image", "psnr", "ssim", *(["sam"] if any("sam" in row for result in results for row in result.rows) else []), "seconds"]
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(_csv_cell(row[c]) for c in columns))
    written = [
        atomic_write_text(out_dir / "rows.csv", "\n".join(lines) + "\n"),
        atomic_write_text(out_dir / "rows.jsonl", "".join(json.dumps(json_safe(r)) + "\n" for r in rows)),
        atomic_write_text(out_dir / "summary.json", json.dumps(json_safe([r.summary for r in results]), indent=2) + "\n"),
    ]
    return written


def _csv_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6f}" if math.isfinite(value) else str(value)
    text = str(value)
    if any(ch in text for ch in ',"\n'):
        import io

        buffer = io.StringIO()
        csv.writer(buffer).writerow([text])
        return buffer.getvalue().strip()
    return text
