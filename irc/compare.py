"""The ``irc compare`` engine: restore a few images with several methods or weights and write
the pictures to judge them by (:mod:`irc.report`).

Every column is restored exactly as ``irc restore`` would restore it (the same weights, options,
tiling and per-image seed), so a crop in the report is what the user gets. Scores are measured
against ``--reference`` images (ground truth, matched by file stem) when given, else against the
input: then PSNR says how much a method changed the image, which is what matters on a clean photo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irc.errors import UsageError
from irc.report import Box, Panel, ReportImage, choose_boxes, parse_box, to_common_size, write_report


@dataclass
class CompareRequest:
    inputs: list[str]
    methods: list[str]
    weights: list[str] = field(default_factory=list)
    reference: Path | None = None
    output: Path = Path("compare-report")
    boxes: list[str] = field(default_factory=list)
    crops: int = 2
    crop_size: int = 64
    knobs: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    dtype: str = "auto"
    tile: int | str = "auto"
    tile_overlap: int | None = None
    seed: int = 0
    offline: bool | None = None
    base_model: str | None = None
    recursive: bool = False
    sheet_format: str = "png"
    quiet: bool = False
    command: str = "irc compare"  # as typed, for the report's footer
    compile: bool = False


def image_scores(restored: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of ``restored`` against ``reference`` (both ``(C, H, W)`` in [0, 1]): RGB
    (or grey), all pixels, both rounded to 8 bits first, as ``irc eval``'s photo protocols."""
    import torch

    from irc.metrics import psnr, ssim

    a, b = torch.from_numpy(np.ascontiguousarray(restored))[None].double(), torch.from_numpy(np.ascontiguousarray(reference))[None].double()
    if a.shape[1] != b.shape[1]:  # a grey image beside a colour one: compare in colour
        a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
    return {"PSNR": float(psnr(a, b, round_to_uint8=True)[0]), "SSIM": float(ssim(a, b, round_to_uint8=True)[0])}


def find_references(reference: Path | None, items: list) -> dict[Path, Path]:
    """Input path -> its ground truth: the file itself for one input, else the file of the same
    stem in the ``reference`` folder. Inputs without one are reported, not guessed."""
    from irc.io import is_image_path

    if reference is None:
        return {}
    if reference.is_file():
        if len(items) != 1:
            raise UsageError(f"--reference {reference} is one file but {len(items)} inputs were given: give a folder of references named like the inputs")
        return {items[0].path: reference}
    if not reference.is_dir():
        raise UsageError(f"--reference {reference}: no such file or folder")
    by_stem: dict[str, Path] = {}
    for path in sorted(reference.rglob("*")):
        if path.is_file() and is_image_path(path):
            by_stem.setdefault(path.stem, path)
    found = {item.path: by_stem[item.path.stem] for item in items if item.path.stem in by_stem}
    missing = [item.path.name for item in items if item.path not in found]
    if missing:
        raise UsageError(f"--reference {reference}: no reference image named like {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return found


def run_compare(request: CompareRequest) -> int:
    """``irc compare``: restore, score, choose crops, write ``index.html`` and the contact sheet."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from irc.batch import expand_inputs
    from irc.commands import load_runs, report_footer
    from irc.io import read_image
    from irc.pipeline import restore_image
    from irc.runner import StageRunner

    if request.crops < 0 or request.crop_size < 8:
        raise UsageError("--crops must be >= 0 and --crop-size at least 8 pixels")
    user_boxes: list[Box] = [parse_box(b) for b in request.boxes]
    expanded = expand_inputs(request.inputs, recursive=request.recursive)
    if expanded.missing:
        raise UsageError("; ".join(f"{arg}: {why}" for arg, why in expanded.missing))
    if not expanded.items:
        raise UsageError("no input images given (files, directories or glob patterns)")
    references = find_references(request.reference, expanded.items)
    columns = load_runs(
        request.methods, request.weights, request.knobs, device=request.device, dtype=request.dtype, offline=request.offline,
        base_model=request.base_model, compile=request.compile,
    )  # fmt: skip

    err = Console(stderr=True, emoji=False)
    images: list[ReportImage] = []
    bars = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*bars, console=err, disable=request.quiet or not err.is_terminal) as progress:
        task = progress.add_task("compare", total=len(expanded.items) * len(columns))
        for item in expanded.items:
            image = read_image(item.path)
            key = f"{item.relative_dir}/{item.path.name}" if item.relative_dir else item.path.name
            outputs = []
            for column in columns:
                runner = StageRunner(column.method.device, request.tile, request.tile_overlap, request.seed, [key])  # the seed irc restore uses
                outputs.append(Panel(column.label, restore_image(column.method, image, runner=runner, **column.knobs).pixels))
                progress.advance(task)
            images.append(row_for(key, image.pixels, outputs, read_image(references[item.path]).pixels if item.path in references else None))
    boxes = [choose_boxes(row.panels, size=request.crop_size, count=request.crops, user=user_boxes) for row in images]
    commands, weights = report_footer(columns, request.command)
    title = f"irc compare: {', '.join(c.label for c in columns)}"
    written = write_report(images, request.output, title=title, commands=commands, weights=weights, boxes=boxes, sheet_format=request.sheet_format)
    print(written[0])
    if not request.quiet:
        err.print(f"report: {written[0]} (open it in a browser); contact sheet: {written[1]}")
    return 0


def row_for(name: str, lq: np.ndarray, outputs: list[Panel], reference: np.ndarray | None) -> ReportImage:
    """One report row: input, outputs, reference; all shown at the outputs' size, scored
    against the reference (or the input when there is none and the sizes agree)."""
    height, width = outputs[0].pixels.shape[1:]
    for panel in outputs:
        if panel.pixels.shape[1:] != (height, width):
            raise UsageError(f"{name}: {outputs[0].label} gives {width} x {height} but {panel.label} gives {panel.pixels.shape[2]} x {panel.pixels.shape[1]}: compare methods with the same output size")
    resized = lq.shape[1:] != (height, width)
    shown = Panel("input", to_common_size(lq, height, width), kind="input", note="bicubic to the output size" if resized else "")
    if reference is not None and reference.shape[1:] != (height, width):
        raise UsageError(f"{name}: the reference is {reference.shape[2]} x {reference.shape[1]}, the outputs {width} x {height}")
    against = reference if reference is not None else (None if resized else lq)
    if against is not None:
        for panel in [shown, *outputs] if reference is not None else outputs:
            panel.scores = image_scores(panel.pixels, against)
    panels = [shown, *outputs, *([Panel("ground truth", reference, kind="reference")] if reference is not None else [])]
    return ReportImage(name, panels, scored_against="ground truth" if reference is not None else ("the input" if against is not None else "nothing (sizes differ)"))
