"""Glue between the CLI and the ``eval`` / ``bench`` engines: build runs, print tables.

Kept out of :mod:`irc.cli` so that the CLI module never imports torch; kept out of the engines so
that they stay free of presentation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from irc.errors import UsageError
from irc.restore import load_method
from irc.tables import figure, print_table


def _probe_writable_dir(path: Path) -> None:
    """Create ``path`` (a directory) now, or raise a one-line :class:`IrcError`."""
    from irc.errors import IrcError

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise IrcError(f"{path}: cannot create the output folder ({err.strerror or err})") from None
    if not os.access(path, os.W_OK):
        raise IrcError(f"{path}: the output folder is not writable")


def _pair_runs(methods: list[str], weights: list[str]) -> list[tuple[str, str | None]]:
    """Match ``--method`` and ``--weights`` lists (see ``irc eval --help``)."""
    normal = [None if w in ("default", "-", "") else w for w in weights]
    if not normal:
        return [(m, None) for m in methods]
    if len(methods) == 1:
        return [(methods[0], w) for w in normal]
    if len(normal) != len(methods):
        raise UsageError(f"{len(methods)} --method but {len(normal)} --weights: give one --weights per --method ('default' for the shipped ones)")
    return list(zip(methods, normal))


def load_runs(
    methods: list[str], weights: list[str], knobs: dict[str, Any], *, device: str, dtype: str, offline, base_model: str | None = None,
    compile: bool = False, task_of=None, check=None,
):
    """One :class:`~irc.evaluate.Run` per ``--method`` / ``--weights`` pair (``irc eval``,
    ``irc compare``), each method loaded once with the options it declares; an option no method
    declares is an error listing the valid ones, and so is the same pair twice.

    Args:
        task_of: ``(method class, its options) -> task`` choosing default weights (default: its
            ``task`` option).
        check: ``(method, its options) -> None`` validating the options before any image
            (default: :meth:`~irc.methods.base.Method.knob_values`).
    """
    from irc.evaluate import Run
    from irc.methods import get_method

    for key in knobs:
        if not any(key in get_method(m).knob_names() for m in methods):
            get_method(methods[0]).check_knobs({key: knobs[key]})  # the usual error, listing the valid options
    runs = []
    for name, weights_name in _pair_runs(methods, weights):
        cls = get_method(name)
        own = {k: v for k, v in knobs.items() if k in cls.knob_names()}
        task = task_of(cls, own) if task_of else own.get("task")
        method = load_method(name, weights_name, task=task, device=device, dtype=dtype, offline=offline, base_model=base_model, compile=compile)
        (check or (lambda m, o: m.knob_values(o)))(method, own)  # a mismatch fails before the first image
        label = name if weights_name is None else f"{name}:{Path(weights_name).stem}"
        runs.append(Run(label=label, method=method, knobs=own, weights=weights_name))
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise UsageError(f"the same method and weights appear twice: {', '.join(labels)}")
    return runs


def report_footer(runs, command: str) -> tuple[list[str], list[dict[str, str]]]:
    """The footer of a picture report: the command and the software, and each run's weights
    with their sha256."""
    import torch

    from irc import __version__

    dtypes = ", ".join(sorted({str(r.method.dtype).replace("torch.", "") for r in runs}))
    commands = [command, f"irc {__version__}, torch {torch.__version__}, device {runs[0].method.device}, {dtypes}"]
    weights = [{"label": r.label, "weights": r.weights or "default", "sha256": r.method.weights_sha256 or "(no weights)"} for r in runs]
    return commands, weights


def run_eval(
    *, dataset: str, methods: list[str], weights: list[str], scale, noise, quality, kernel, task, knobs: dict[str, Any], seed: int,
    limit, data_root, output: Path | None, save_images: Path | None, device: str, dtype: str, tile, tile_overlap, offline, as_json: bool, quiet: bool,
    base_model: str | None = None, blur: float | None = None, report: Path | None = None, report_images: int = 6, command: str = "irc eval",
) -> int:
    """``irc eval``: returns the exit code."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from irc.data.benchmarks import open_benchmark
    from irc.evaluate import evaluate, json_safe, method_task, protocol_knobs, write_results

    bench = open_benchmark(dataset, root=data_root, scale=scale, noise=noise, quality=quality, kernel=kernel, task=task, seed=seed, limit=limit, blur=blur)
    # the default folder names the whole protocol, so runs of other protocols never overwrite it
    out_dir = output or Path("eval-results") / protocol_label(bench.protocol)
    _probe_writable_dir(out_dir)  # fail before hours of evaluation, not after
    if report is not None:
        _probe_writable_dir(report)
    protocol = bench.protocol
    runs = load_runs(
        methods, weights, knobs, device=device, dtype=dtype, offline=offline, base_model=base_model,
        # default weights follow the benchmark protocol's task (set11 -> cs, cbsd68 noise -> noise)
        task_of=lambda cls, own: own.get("task") or method_task(cls, protocol),
        check=lambda method, own: method.knob_values(protocol_knobs(method, protocol, own)),
    )  # fmt: skip

    err = Console(stderr=True, emoji=False)
    results = []
    kept: dict[str, dict[int, tuple]] = {}  # run label -> image index -> (sample, restored, row), for --report
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=quiet or not err.is_terminal) as bar:
        for run in runs:
            task_id = bar.add_task(f"{run.label} on {bench.name}", total=len(bench))
            keep = _keeper(kept.setdefault(run.label, {}), report_images) if report is not None else None
            results.append(evaluate(run, bench, tile=tile, tile_overlap=tile_overlap, save_images=save_images, progress=lambda: bar.advance(task_id), keep=keep))
            written = write_results(results, out_dir)  # after every run: a later failure keeps these
    summaries = [r.summary for r in results]
    if as_json:
        print(json.dumps(json_safe(summaries), indent=2))
    else:
        protocol = bench.protocol
        title = f"{bench.name}: {protocol_label(protocol, readable=True)}"
        caption = "spectral (28-band cubes, PSNR after 256-level quantisation)" if protocol.color == "spectral" else f"{protocol.color.upper()} channel"
        table = Table(title=title, caption=f"{caption}, border {protocol.crop_border}, {len(bench)} images")
        spectral = all("sam" in s for s in summaries)  # CASSI: the spectral angle is part of the protocol
        for column in ("method", "PSNR (dB)", "SSIM", *(["SAM (deg)"] if spectral else []), "s/image"):
            table.add_column(column, justify="left" if column == "method" else "right")
        for s in summaries:
            sam = [f"{s['sam']:.2f}"] if spectral else []
            psnr = "identical" if s["psnr"] == float("inf") else f"{s['psnr']:.2f}"  # zero error: no PSNR to print
            table.add_row(s["label"], psnr, f"{s['ssim']:.4f}", *sam, f"{s['seconds_per_image']:.3f}")
        print_table(table)
    if report is not None:
        written += write_eval_report(report, bench, runs, kept, command=command)
    if not quiet:
        err.print(f"results: {', '.join(str(p) for p in written)}")
    return 0


def _keeper(store: dict[int, tuple], count: int):
    """``evaluate``'s ``keep`` callback for ``--report``: the first ``count`` images of a run."""

    def keep(index, sample, restored, row) -> None:
        if index < count:
            store[index] = (sample, restored, row)

    return keep


def write_eval_report(folder: Path, bench, runs, kept: dict[str, dict[int, tuple]], *, command: str) -> list[Path]:
    """``irc eval --report``: the first images of the benchmark as pictures (:mod:`irc.report`):
    degraded input, every run and the ground truth, scored as the eval table scores them."""
    from irc.report import Panel, ReportImage, choose_boxes, to_common_size, write_report

    images = []
    for index in sorted(next(iter(kept.values()), {})):
        sample = kept[runs[0].label][index][0]
        gt = sample.gt.float().numpy()
        height, width = gt.shape[1:]
        lq = sample.lq.float().numpy()
        shown = Panel("degraded input", to_common_size(lq, height, width), kind="input", note="bicubic to the output size" if lq.shape[1:] != (height, width) else "")
        if lq.shape[1:] == (height, width):
            from irc.evaluate import score

            shown.scores = {k.upper(): v for k, v in score(sample.lq.float(), sample.gt.float(), bench.protocol).items()}
        outputs = [Panel(r.label, kept[r.label][index][1].clamp(0, 1).float().numpy(), {k.upper(): kept[r.label][index][2][k] for k in ("psnr", "ssim")}) for r in runs]
        images.append(ReportImage(sample.name, [shown, *outputs, Panel("ground truth", gt, kind="reference")], scored_against=f"the ground truth ({bench.protocol.color.upper()}, border {bench.protocol.crop_border})"))
    boxes = [choose_boxes(image.panels, size=64, count=2) for image in images]
    commands, weights = report_footer(runs, command)
    return write_report(images, folder, title=f"irc eval: {bench.name}, {protocol_label(bench.protocol, readable=True)}", commands=commands, weights=weights, boxes=boxes)


def protocol_label(protocol, *, readable: bool = False) -> str:
    """The protocol in a few words: ``cbsd68-photo-noise-s25`` (a folder name) or
    ``photo-noise, sigma 25`` (a table title)."""
    parts = [protocol.task.replace("mixture:", "mio-")]
    if protocol.scale != 1:
        parts.append(f"x{protocol.scale}")
    if protocol.kernel is not None:
        parts.append(f"kernel {protocol.kernel}" if readable else f"k{protocol.kernel}")
    if protocol.noise_sigma:
        parts.append(f"sigma {protocol.noise_sigma:g}" if readable else f"s{protocol.noise_sigma:g}")
    if protocol.jpeg_quality is not None:
        parts.append(f"quality {protocol.jpeg_quality}" if readable else f"q{protocol.jpeg_quality}")
    if protocol.blur_sigma is not None:
        parts.append(f"blur sigma {protocol.blur_sigma:g}" if readable else f"b{protocol.blur_sigma:g}")
    if protocol.seed:
        parts.append(f"seed {protocol.seed}" if readable else f"seed{protocol.seed}")
    return ", ".join(parts) if readable else "-".join([protocol.dataset, *parts]).replace(" ", "")


def run_bench_command(
    *, method: str, weights, sizes: str, tiles: str, channels: int, warmup: int, repeats: int, knobs: dict[str, Any], device: str, dtype: str,
    threads, output: Path | None, as_json: bool, offline, base_model: str | None = None, compile: bool = False,
) -> int:
    """``irc bench``: returns the exit code."""
    import torch

    from irc.bench import BenchCase, run_bench, write_report

    if threads:
        torch.set_num_threads(threads)
    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--sizes {sizes!r}: expected comma-separated integers") from None
    tile_list: list[int | str] = []
    for text in tiles.split(","):
        text = text.strip().lower()
        if text == "auto":
            tile_list.append("auto")
        elif text.isdigit():
            tile_list.append(int(text))
        elif text:
            raise UsageError(f"--tiles {tiles!r}: expected comma-separated sizes, 0 or auto")
    if not size_list or min(size_list) < 8:
        raise UsageError("--sizes: give at least one size of 8 pixels or more")
    if not tile_list:
        raise UsageError("--tiles: give at least one tile setting (0 = none, N, auto)")
    if output is not None:
        _probe_writable_dir(output.parent)
    loaded = load_method(method, weights, task=knobs.get("task"), device=device, dtype=dtype, offline=offline, base_model=base_model, compile=compile)
    if compile and warmup < 1:
        raise UsageError("--compile needs at least one --warmup run (it absorbs the compilation)")
    channels = channels or (3 if 3 in loaded.input_channels else loaded.input_channels[0])
    if channels not in loaded.input_channels:
        raise UsageError(f"{method} takes {' or '.join(map(str, loaded.input_channels))}-channel images, not {channels}")
    cases = [BenchCase(size=s, tile=t, channels=channels) for s in size_list for t in tile_list]
    report = run_bench(loaded, cases, knobs, warmup=warmup, repeats=repeats)
    report["compiled"] = compile
    if output is not None:
        write_report(report, output)
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    table = Table(title=f"irc bench: {report['method']} on {report['device']} ({report['device_name']}, {report['dtype']}, {report['threads']} threads)",
                  caption=f"{report['parameters']:,} parameters")
    variants = any("variant" in r for r in report["results"])
    if variants:  # the same method run several ways (e.g. learnir: drm / full-res; hypir: irc / official)
        table.add_column("variant")
    for column in ("size", "tile", "median s", "min s", "max s", "first s", "MP/s", "peak dev MiB", "peak host MiB", "FLOP/px", "GFLOP/s"):
        table.add_column(column, justify="right")
    for r in report["results"]:
        lat = r["latency_s"]
        table.add_row(
            *([r.get("variant", "")] if variants else []), str(r["size"]), str(r["tile"]), f"{lat['median']:.4f}", f"{lat['min']:.4f}", f"{lat['max']:.4f}", f"{lat['first']:.4f}", figure(r['megapixels_per_s']),
            "-" if r["peak_device_mib"] is None else f"{r['peak_device_mib']:.0f}", "-" if r["peak_host_mib"] is None else f"{r['peak_host_mib']:.0f}",
            "-" if r["flops_per_pixel"] is None else f"{r['flops_per_pixel']:.0f}", "-" if r["achieved_gflop_per_s"] is None else figure(r["achieved_gflop_per_s"]),
        )
    print_table(table)
    for sp in report.get("speedups", []):
        print(f"size {sp['size']}, tile {sp['tile']}: {sp['faster']} is {sp['ratio']:g}x as fast as {sp['than']} (median latency; first call {sp['first_ratio']:g}x)")
    return 0
