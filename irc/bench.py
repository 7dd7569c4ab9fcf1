"""The ``irc bench`` engine: latency, throughput, memory and FLOP rate of a method.

For every (image size, tile setting) the method restores a fixed random image ``warmup`` times
untimed, then ``repeats`` times timed (CUDA work is synchronised before each clock read). We
report median / min / max latency, the first call's latency (``first``: the first warm-up, or
the first timed run without one; it carries one-time costs such as HYPIR's LoRA fusion, oneDNN's
kernel creation or ``--compile``, which a single-image ``irc restore`` pays), throughput in
input megapixels per second, peak device memory (``torch.cuda.max_memory_allocated``), peak
host memory (Linux ``VmHWM``, reset between runs where the kernel allows), parameter count,
and FLOPs per input pixel counted once by
``torch.utils.flop_counter.FlopCounterMode`` (matmul/conv FLOPs; element-wise work is not
counted), from which the achieved FLOP/s follows.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from irc import __version__
from irc.methods.base import Method


@dataclass(frozen=True)
class BenchCase:
    """One measured configuration: a square ``size`` x ``size`` input and a tile edge (0 = none)."""

    size: int
    tile: int | str = 0
    channels: int = 3


@dataclass
class BenchResult:
    case: BenchCase
    latencies: list[float] = field(default_factory=list)
    first_latency: float | None = None
    peak_device_bytes: int | None = None
    peak_host_bytes: int | None = None
    flops: float | None = None
    output_shape: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        median = statistics.median(self.latencies)
        pixels = self.case.size * self.case.size
        return {
            "size": self.case.size,
            "tile": self.case.tile,
            "channels": self.case.channels,
            "output_shape": list(self.output_shape),
            "latency_s": {"median": round(median, 6), "min": round(min(self.latencies), 6), "max": round(max(self.latencies), 6), "repeats": len(self.latencies),
                          "first": round(self.latencies[0] if self.first_latency is None else self.first_latency, 6)},
            "megapixels_per_s": round(pixels / 1e6 / median, 4),
            "peak_device_mib": None if self.peak_device_bytes is None else round(self.peak_device_bytes / 2**20, 2),
            "peak_host_mib": None if self.peak_host_bytes is None else round(self.peak_host_bytes / 2**20, 2),
            "flops_per_pixel": None if self.flops is None else round(self.flops / pixels, 2),
            "achieved_gflop_per_s": None if not self.flops else round(self.flops / median / 1e9, 3),
        }


def _host_peak_bytes() -> int | None:
    """Peak resident set size of this process (Linux VmHWM), or None elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_host_peak() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0); elsewhere the
    # reported peak is the process peak so far, which is still an upper bound.
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def count_parameters(method: Method) -> int:
    """Number of parameters that ship (training-only modules excluded)."""
    return sum(t.numel() for t in method.state_dict().values() if t.is_floating_point())


def count_flops(method: Method, x: torch.Tensor, knobs: dict[str, Any]) -> float | None:
    """FLOPs of one untiled restore of ``x`` (None when the counter cannot trace the method)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        counter = FlopCounterMode(display=False)
        with counter:
            method.restore(x, **knobs)
        return float(counter.get_total_flops())
    except Exception:  # a method using ops the counter does not know: report no FLOPs, not a crash
        return None


def bench_case(method: Method, case: BenchCase, knobs: dict[str, Any], *, warmup: int, repeats: int, seed: int = 0, flops: bool = True) -> BenchResult:
    """Measure one configuration (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(1, case.channels, case.size, case.size, generator=generator)
    device = method.device
    result = BenchResult(case)
    for i in range(warmup):
        start = time.perf_counter()
        method.restore(x, tile=case.tile, **knobs)
        _sync(device)
        if i == 0:
            result.first_latency = time.perf_counter() - start
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _reset_host_peak()
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = method.restore(x, tile=case.tile, **knobs)
        _sync(device)
        result.latencies.append(time.perf_counter() - start)
    result.output_shape = tuple(out.shape)
    result.peak_host_bytes = _host_peak_bytes()
    if device.type == "cuda":
        result.peak_device_bytes = torch.cuda.max_memory_allocated(device)
    if flops and case.tile in (0, "0"):
        result.flops = count_flops(method, x, knobs)
    return result


def run_bench(method: Method, cases: list[BenchCase], knobs: dict[str, Any], *, warmup: int = 1, repeats: int = 5, progress=None) -> dict[str, Any]:
    """Benchmark ``method`` over ``cases`` (and over its :meth:`~Method.bench_variants`, whose
    speed ratios to the first variant are reported); returns a JSON-able report."""
    knobs = method.knob_values(knobs)
    results = []
    for case in cases:
        for label, variant in method.bench_variants().items():
            with variant:
                row = bench_case(method, case, knobs, warmup=warmup, repeats=repeats, flops=method.bench_counts_flops).as_dict()
            if label:
                row["variant"] = label
            results.append(row)
            if progress is not None:
                progress()
    device = method.device
    return {
        "method": method.name,
        "weights_sha256": method.weights_sha256,
        "knobs": knobs,
        "parameters": count_parameters(method),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "dtype": str(method.dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "irc_version": __version__,
        "results": results,
        **({"speedups": speedups(results)} if any("variant" in r for r in results) else {}),
    }


def speedups(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median latency of every other variant over the first one's, per (size, tile); also the
    first calls' ratio (``first_ratio``: one-time costs included)."""
    out = []
    by_case: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        by_case.setdefault((r["size"], r["tile"]), []).append(r)
    for (size, tile), rows in by_case.items():
        first = rows[0]
        for other in rows[1:]:
            out.append({
                "size": size, "tile": tile, "faster": first["variant"], "than": other["variant"],
                "ratio": round(other["latency_s"]["median"] / first["latency_s"]["median"], 3),
                "first_ratio": round(other["latency_s"]["first"] / first["latency_s"]["first"], 3),
            })  # fmt: skip
    return out


def write_report(report: dict[str, Any], path: Path) -> Path:
    import json

    from irc.atomic import atomic_write_text

    return atomic_write_text(path, json.dumps(report, indent=2) + "\n")
