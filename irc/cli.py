"""The ``irc`` command line: argv -> typed options -> one call into the engines.

This module must stay cheap to import: ``irc --help`` and shell completion run it on every key
press. torch, numpy and the method packages are imported inside the commands (a test checks that
importing this module loads no torch).
"""

from __future__ import annotations

import contextvars
import functools
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

import typer

from irc import __version__
from irc.errors import IrcError, UsageError
from irc.methods import REGISTRY
from irc.methods.options import OPTIONS, Knob, knob_choices

# `irc restore photo.jpg` with no --method: the TUR all-in-one model (blind, seven degradations)
# with its shipped weights, weights/tur/tur-nafnet-mio7.safetensors (see its model card).
DEFAULT_METHOD = "tur"

app = typer.Typer(
    name="irc",
    help=(
        "Image restoration from the command line: HYPIR, LoRun, LearnIR and TUR behind one CLI.\n\n"
        "Examples:\n\n"
        "  irc restore photo.jpg -o out/           restore with the default method\n\n"
        "  irc restore --method bicubic --scale 4 in.png -o out/\n\n"
        "  irc methods                             what is available\n\n"
        "Results go to stdout (--json/--jsonl), logs and progress to stderr. Exit codes: 0 ok, "
        "1 some inputs failed, 2 usage error."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
weights_app = typer.Typer(help="List, verify and download model weights.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
datasets_app = typer.Typer(help="List benchmark and training sets and where they are expected; fetch the downloadable ones.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


def _complete_method(incomplete: str) -> list[str]:
    return [name for name in REGISTRY if name.startswith(incomplete)]


class DType(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"irc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Image restoration from the command line."""


def _err_console():
    from rich.console import Console

    # soft_wrap: an error stays on one line, whatever the terminal width (scripts grep for it)
    return Console(stderr=True, soft_wrap=True, emoji=False)


def _parse_tile(text: str) -> int | str:
    text = text.strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit():
        return int(text)
    raise UsageError(f"--tile {text!r}: expected a size in pixels, 0 (no tiling) or auto")


def _parse_options(items: list[str] | None) -> dict[str, str]:
    from irc.config import parse_set_options

    return {k.replace("-", "_"): v for k, v in parse_set_options(items, flag="--option").items()}


# ----------------------------------------------------------------------------- method options
# Every method knob (irc/methods/options.py) becomes a real flag of `irc restore`, `irc eval` and
# `irc bench`, typed, with its help, grouped per method in --help and present in the completion
# scripts. typer builds its click commands from function signatures, which cannot grow with the
# registry, so the flags are added to the built click commands (see `command()`), and their
# values reach the command functions through this context variable.
_GIVEN_KNOBS: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("irc_given_knobs", default={})
# eval's own --scale/--task/--kernel describe the benchmark protocol (they fill the knobs of the
# same names), so eval does not get method flags with those names.
_EVAL_PROTOCOL_NAMES = ("scale", "task", "kernel")
# The arguments irc was started with, for reports that print the command that made them.
_ARGV: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("irc_argv", default=None)


def _command_line() -> str:
    """The command as typed (``irc compare ...``), shell-quoted."""
    import shlex

    args = _ARGV.get()
    return shlex.join(["irc", *(sys.argv[1:] if args is None else args)])


def _knob_owners() -> dict[str, list[tuple[str, Knob]]]:
    owners: dict[str, list[tuple[str, Knob]]] = {}
    for method_name, knobs in OPTIONS.items():
        for knob in knobs:
            owners.setdefault(knob.name, []).append((method_name, knob))
    return owners


def _knob_option(name: str, declared: list[tuple[str, Knob]]):
    """One typed option for a knob name declared by one or more methods (built by typer itself)."""
    from typing import Literal

    from typer.main import _get_param
    from typer.models import ParamMeta

    knob = declared[0][1]
    methods = [m for m, _ in declared]
    same_type = all(k.type == knob.type for _, k in declared)
    choices = knob_choices(knob) if same_type else None
    if choices:
        kind: Any = Literal[choices]  # type: ignore[valid-type]
    elif same_type and knob.type in (int, float):
        kind = knob.type
    else:
        kind = str
    text = knob.help if len(declared) == 1 else " ".join(f"{m}: {k.help}" for m, k in declared)
    info = typer.Option(
        None, knob.flag, *([knob.short] if knob.short else []), help=text, metavar=None if choices else knob.metavar, show_default=False,
        rich_help_panel=f"Options of {', '.join(methods)}",
    )  # fmt: skip
    return _get_param(ParamMeta(name=f"knob__{name}", default=info, annotation=Optional[kind]))


def _attach_knob_options(command, skip: tuple[str, ...] = ()) -> None:
    """Add the method flags to a built click command; their values go to ``_GIVEN_KNOBS``."""
    names = [n for n in _knob_owners() if n not in skip]
    command.params.extend(_knob_option(n, _knob_owners()[n]) for n in names)
    original = command.callback

    def callback(**kwargs: Any) -> Any:
        given = {n: kwargs.pop(f"knob__{n}") for n in names}
        token = _GIVEN_KNOBS.set({k: v for k, v in given.items() if v is not None})
        try:
            return original(**kwargs)
        finally:
            _GIVEN_KNOBS.reset(token)

    command.callback = callback


def _reflow(text: str) -> str:
    """Join the wrapped lines of a docstring's paragraphs (rich keeps every newline and would
    wrap twice); indented lines (examples) stay as they are."""
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith(" ") or "\n " in p else " ".join(p.split("\n")) for p in paragraphs)


def _readable_metavars(group) -> None:
    """Flags show no value type (typer prints ``<bool>``); repeatable options show what one
    value looks like instead of ``<list[str]>``; inputs read ``[INPUTS]... <path>...``."""
    for command in getattr(group, "commands", {}).values():
        _readable_metavars(command)
    if group.help:
        group.help = _reflow(group.help)
    made = group.get_help_option

    def help_option(ctx, made=made):
        option = made(ctx)
        if option is not None:
            option.metavar = ""
        return option

    group.get_help_option = help_option
    for param in getattr(group, "params", []):
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif param.metavar is None and getattr(param, "multiple", False):
            param.metavar = "KEY=VALUE" if any(o in ("--option", "-O", "--set") for o in param.opts) else "<str>"
        elif param.param_type_name == "argument" and param.nargs == -1:
            param.metavar = param.name.upper()
            param.display_type_rich = lambda ctx: "<path>..."  # typer would say <list[str]>


@functools.lru_cache(maxsize=1)
def command():
    """The click command tree of ``irc``: typer's, plus the method flags."""
    root = typer.main.get_command(app)
    _attach_knob_options(root.commands["restore"])
    _attach_knob_options(root.commands["bench"])
    _attach_knob_options(root.commands["compare"])
    _attach_knob_options(root.commands["eval"], skip=_EVAL_PROTOCOL_NAMES)
    _readable_metavars(root)
    return root


def _method_options(methods: str | list[str], option: list[str] | None) -> dict[str, Any]:
    """The knobs given for ``methods``: method flags, then ``-O key=value`` (which wins).

    A flag that none of ``methods`` declares is a usage error naming the methods that do, so an
    option is never accepted and silently ignored.
    """
    from irc.methods import get_method

    names = [methods] if isinstance(methods, str) else list(methods)
    given = dict(_GIVEN_KNOBS.get())
    known: set[str] = set()
    for name in names:
        known.update(k.name for k in (OPTIONS[name] if name in OPTIONS else get_method(name).knobs))
    for key in given:
        if key not in known:
            owners = [m for m, _ in _knob_owners().get(key, [])]
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"{flag} is an option of {', '.join(owners)}, not of {', '.join(names)} (choose --method {owners[0]})")
    return {**given, **_parse_options(option)}


# ----------------------------------------------------------------------------- restore
@app.command()
def restore(
    inputs: Optional[List[str]] = typer.Argument(None, help="Image files, directories, glob patterns, or - to read paths from stdin.", show_default=False),
    method: str = typer.Option(DEFAULT_METHOD, "--method", "-m", help="Restoration method (see `irc methods`).", autocompletion=_complete_method),
    weights: Optional[str] = typer.Option(None, "--weights", "-w", help="Weights: manifest name, file path, hub id or URL. Default: the method's shipped weights for the task."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Another base model for methods built on one (hypir: an SD2.1-layout folder or hub id, e.g. a local copy or a mirror)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output directory (default: next to each input).", file_okay=False),
    name_template: str = typer.Option("{stem}_{method}.{ext}", "--name-template", help="Output file name; fields {stem} {name} {parent} (the input's folder name) {ext} {method} {scale} {task}; a / makes sub-folders."),
    ext: Optional[str] = typer.Option(None, "--ext", help="Output format by suffix (png, jpg, tif, webp, bmp). Default: the input's."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into directories; outputs mirror the tree."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo outputs that already exist (default: skip them)."),
    measurement: Optional[Path] = typer.Option(None, "--measurement", help="Reconstruct this measurement file instead of images (lorun: CS .safetensors/.npz, CASSI .mat).", dir_okay=False),
    option: Optional[List[str]] = typer.Option(None, "--option", "-O", help="A method option as key=value (repeatable); the same as its flag below."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: DType = typer.Option(DType.auto, "--dtype", help="Compute precision; auto = fp32 on CPU (bf16 for the photo model and HYPIR on CPUs with AMX), the method's choice on GPU. fp16 is refused on CPU."),
    tile: str = typer.Option("auto", "--tile", help="Tile edge in pixels, 0 = whole image, auto = tiles sized from free memory (the whole image when it fits; halved on out-of-memory)."),
    tile_overlap: Optional[int] = typer.Option(None, "--tile-overlap", help="Tile overlap in pixels (default: the method's minimum).", min=0),
    seed: int = typer.Option(0, "--seed", help="Random seed, for stochastic methods."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the networks: the first image of each size pays the compilation (cached under ~/.cache/irc); whether it pays off depends on the model and device (measured numbers: the model cards)."),
    offline: bool = typer.Option(False, "--offline", help="Never download; say what to place where instead (also HF_HUB_OFFLINE=1)."),
    jsonl: bool = typer.Option(False, "--jsonl", help="Write one JSON object per image to stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
) -> None:
    """Restore images with a method; a bad file is reported and the batch goes on.

    Existing outputs are skipped (rerun an interrupted batch to finish it); inputs are never
    overwritten; every write is atomic. Method options are listed below by method.
    """
    from irc.restore import RestoreRequest, run_restore

    knobs = _method_options(method, option)
    if not inputs and measurement is None:
        raise typer.BadParameter("give input images (or --measurement FILE)", param_hint="inputs")
    request = RestoreRequest(
        inputs=list(inputs or []),
        method=method,
        weights=weights,
        output=output,
        name_template=name_template,
        ext=ext.lstrip(".").lower() if ext else None,
        recursive=recursive,
        overwrite=overwrite,
        knobs=knobs,
        device=device,
        dtype=dtype.value,
        tile=_parse_tile(tile),
        tile_overlap=tile_overlap,
        seed=seed,
        offline=offline or None,
        jsonl=jsonl,
        quiet=quiet,
        measurement=measurement,
        base_model=base_model,
        compile=compile_,
    )
    raise typer.Exit(run_restore(request))


# ----------------------------------------------------------------------------- eval
@app.command("eval")
def eval_cmd(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Benchmark: set5, set14, set11, set12, bsd68, cbsd68, classic5, polyu, or a user set (general100, urban100, kaist-cassi, rain100l, sots, lol, gopro, istd) under the data root.", show_default=False),
    method: Optional[List[str]] = typer.Option(None, "--method", "-m", help="Method(s) to evaluate; repeat for a side-by-side table (-m identity gives the degraded input's row).", autocompletion=_complete_method),
    weights: Optional[List[str]] = typer.Option(None, "--weights", "-w", help="Weights per method (repeat; 'default' for the shipped ones). One method with several weights compares them."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Another base model for methods built on one (hypir: an SD2.1-layout folder or hub id)."),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="SR factor of the protocol (set5/set14 default 4).", min=1),
    noise: Optional[float] = typer.Option(None, "--noise", help="Gaussian noise sigma in 0-255 units (set12/bsd68/cbsd68, default 25).", min=0),
    quality: Optional[int] = typer.Option(None, "--quality", help="JPEG quality (classic5, default 10).", min=1, max=100),
    kernel: Optional[int] = typer.Option(None, "--kernel", help="USRNet blur kernel index 0-11 (SR with blur, set5/bsd68).", min=0, max=11),
    blur: Optional[float] = typer.Option(None, "--blur", help="Gaussian blur sigma in pixels (cbsd68 --task photo-blur, default 1).", min=0),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Another protocol of the set (cbsd68: the MiOIR tasks sr, blur, noise, jpeg, rain, haze, dark; the photo protocols photo-noise, photo-jpeg, photo-blur, clean; set14/general100: cs)."),
    option: Optional[List[str]] = typer.Option(None, "--option", "-O", help="Method option key=value (repeatable), e.g. -O ratio=0.25; the same as its flag below."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic degradations and of stochastic methods."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N images (quick checks).", min=1),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Where benchmarks live (default: $IRC_DATA_ROOT, else ~/.cache/irc/data).", file_okay=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Directory for rows.csv, rows.jsonl, summary.json (default: eval-results/<dataset>/).", file_okay=False),
    save_images: Optional[Path] = typer.Option(None, "--save-images", help="Also save restored images under this directory.", file_okay=False),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write pictures of the first images (index.html and contact-sheet.png, as irc compare) into this folder.", file_okay=False),
    report_images: int = typer.Option(6, "--report-images", help="How many images --report shows.", min=1),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: DType = typer.Option(DType.auto, "--dtype", help="Compute precision (auto = fp32 on CPU; bf16 for the photo model and HYPIR on CPUs with AMX)."),
    tile: str = typer.Option("0", "--tile", help="Tile edge in pixels, 0 = whole image, auto = from free memory."),
    tile_overlap: Optional[int] = typer.Option(None, "--tile-overlap", help="Tile overlap in pixels (default: the method's minimum).", min=0),
    offline: bool = typer.Option(False, "--offline", help="Never download weights."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary JSON to stdout instead of a table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Evaluate methods on a benchmark protocol: PSNR/SSIM table, per-image rows, summary JSON.

    Deterministic: the same command gives the same numbers. Examples:

      irc eval --method bicubic --dataset set5 --scale 4

      irc eval --method identity --dataset bsd68 --noise 25
    """
    from irc.commands import run_eval

    if not method:
        raise UsageError("name the method(s) to evaluate: --method NAME (repeatable; -m identity scores the degraded input itself)")
    raise typer.Exit(
        run_eval(
            dataset=dataset, methods=list(method), weights=list(weights or []), scale=scale, noise=noise, quality=quality,
            kernel=kernel, blur=blur, task=task, knobs=_method_options(list(method), option), seed=seed, limit=limit, data_root=data_root,
            output=output, save_images=save_images, device=device, dtype=dtype.value, tile=_parse_tile(tile), base_model=base_model,
            tile_overlap=tile_overlap, offline=offline or None, as_json=as_json, quiet=quiet, report=report, report_images=report_images, command=_command_line(),
        )
    )


# ----------------------------------------------------------------------------- compare
@app.command("compare")
def compare_cmd(
    inputs: List[str] = typer.Argument(..., help="Image files, directories or glob patterns.", show_default=False),
    method: Optional[List[str]] = typer.Option(None, "--method", "-m", help="Method(s) to compare; repeat for several columns (default: the default method).", autocompletion=_complete_method),
    weights: Optional[List[str]] = typer.Option(None, "--weights", "-w", help="Weights per method (repeat; 'default' for the shipped ones). One method with several weights compares them."),
    reference: Optional[Path] = typer.Option(None, "--reference", "-r", help="Ground truth: a folder of images named like the inputs (by stem), or one file for one input. Without it, scores are measured against the input."),
    output: Path = typer.Option(Path("compare-report"), "--output", "-o", help="Folder for index.html and contact-sheet.png.", file_okay=False),
    box: Optional[List[str]] = typer.Option(None, "--box", help="A region to zoom into, X,Y,WIDTH,HEIGHT in output pixels (repeatable); shown before the automatic crops."),
    crops: int = typer.Option(2, "--crops", help="Automatic crops per image, where the outputs differ most (0 = only --box).", min=0),
    crop_size: int = typer.Option(64, "--crop-size", help="Edge of the automatic crops in output pixels.", min=8),
    sheet_format: str = typer.Option("png", "--sheet-format", help="Contact sheet format: png or jpg (smaller, for READMEs)."),
    recursive: bool = typer.Option(False, "--recursive", help="Descend into directories."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Another base model for methods built on one (hypir: an SD2.1-layout folder or hub id)."),
    option: Optional[List[str]] = typer.Option(None, "--option", "-O", help="A method option as key=value (repeatable); the same as its flag below."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: DType = typer.Option(DType.auto, "--dtype", help="Compute precision, as for irc restore."),
    tile: str = typer.Option("auto", "--tile", help="Tile edge in pixels, 0 = whole image, auto = from free memory (as irc restore)."),
    tile_overlap: Optional[int] = typer.Option(None, "--tile-overlap", help="Tile overlap in pixels (default: the method's minimum).", min=0),
    seed: int = typer.Option(0, "--seed", help="Random seed, for stochastic methods (the same per-image seeds as irc restore)."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the networks: the first image of each size pays the compilation (cached under ~/.cache/irc); whether it pays off depends on the model and device (measured numbers: the model cards)."),
    offline: bool = typer.Option(False, "--offline", help="Never download weights."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Compare methods or weights on images, as pictures: an HTML page and a PNG contact sheet.

    Each image gets a row: the input, every output and the ground truth (--reference) side by
    side, with PSNR/SSIM under each and zoomed crops at the same place in every panel (where the
    outputs differ most, plus --box regions). The page is one self-contained file; its footer
    holds the command and the weights' sha256. Examples:

      irc compare examples/ -m tur -w default -w tur-nafnet-mio7 -o report/

      irc compare noisy/ --reference clean/ -m tur -m learnir --task noise
    """
    from irc.compare import CompareRequest, run_compare

    methods = list(method or [DEFAULT_METHOD])
    if sheet_format.lower() not in ("png", "jpg", "jpeg"):
        raise UsageError(f"--sheet-format {sheet_format!r}: choose png or jpg")
    request = CompareRequest(
        inputs=list(inputs), methods=methods, weights=list(weights or []), reference=reference, output=output, boxes=list(box or []), crops=crops,
        crop_size=crop_size, knobs=_method_options(methods, option), device=device, dtype=dtype.value, tile=_parse_tile(tile), tile_overlap=tile_overlap,
        seed=seed, offline=offline or None, base_model=base_model, recursive=recursive, sheet_format=sheet_format.lower(), quiet=quiet,
        command=_command_line(), compile=compile_,
    )  # fmt: skip
    raise typer.Exit(run_compare(request))


# ----------------------------------------------------------------------------- bench
@app.command("bench")
def bench_cmd(
    method: str = typer.Option(DEFAULT_METHOD, "--method", "-m", help="Method to benchmark.", autocompletion=_complete_method),
    weights: Optional[str] = typer.Option(None, "--weights", "-w", help="Weights (default: the shipped ones)."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Another base model for methods built on one (hypir: a folder, a hub id, or random:sd21 for the real architecture with random weights, no download)."),
    sizes: str = typer.Option("256,512,1024", "--sizes", help="Comma-separated square input sizes in pixels."),
    tiles: str = typer.Option("0", "--tiles", help="Comma-separated tile settings to compare (0 = none, N, auto)."),
    channels: Optional[int] = typer.Option(None, "--channels", help="Input channels (default: what the method takes, e.g. 3 for RGB, 1 for CS on Y).", min=1),
    warmup: int = typer.Option(1, "--warmup", help="Untimed runs before timing.", min=0),
    repeats: int = typer.Option(5, "--repeats", help="Timed runs per configuration.", min=1),
    option: Optional[List[str]] = typer.Option(None, "--option", "-O", help="Method option key=value (repeatable); the same as its flag below."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: DType = typer.Option(DType.auto, "--dtype", help="Compute precision (auto = fp32 on CPU; bf16 for the photo model and HYPIR on CPUs with AMX)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice).", min=1),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the networks: warm-up runs absorb the compilation (cached under ~/.cache/irc); whether it pays off depends on the model and device (measured numbers: the model cards)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON report to this file.", dir_okay=False),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report to stdout instead of a table."),
    offline: bool = typer.Option(False, "--offline", help="Never download weights."),
) -> None:
    """Benchmark a method: latency, megapixels/s, peak memory, parameters, FLOPs per pixel.

    Example: irc bench --method bicubic --sizes 256,1024 --json
    """
    from irc.commands import run_bench_command

    knobs = _method_options(method, option)
    raise typer.Exit(
        run_bench_command(
            method=method, weights=weights, sizes=sizes, tiles=tiles, channels=channels, warmup=warmup, repeats=repeats,
            knobs=knobs, device=device, dtype=dtype.value, threads=threads, output=output, as_json=as_json, offline=offline or None, base_model=base_model,
            compile=compile_,
        )
    )


# ----------------------------------------------------------------------------- train
@app.command("train")
def train_cmd(
    recipe: Optional[Path] = typer.Argument(None, help="Training recipe (.toml); see recipes/README.md.", dir_okay=False, show_default=False),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a recipe value, key=value with dotted keys (repeatable): --set data.crop=64 --set optimizers.default.lr=2e-4."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run directory for checkpoints, metrics.jsonl, TensorBoard logs and resolved_recipe.toml (default: runs/<recipe name>).", file_okay=False),
    resume: Optional[str] = typer.Option(None, "--resume", help="auto = continue from the run directory's latest checkpoint (start fresh if none); or a checkpoint folder or another run directory."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimiser steps (overrides the recipe's steps).", min=1),
    stop_at: Optional[int] = typer.Option(None, "--stop-at", help="Stop after this step with a checkpoint (one session of a longer run; the schedule still spans all steps).", min=1),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda. GPUs and processes come from the launcher: accelerate launch -m irc train ... or torchrun -m irc train ..."),
    export: Optional[Path] = typer.Option(None, "--export", help="Write release weights (.safetensors, EMA weights if enabled) here at the end; prints the sha256 for the manifest.", dir_okay=False),
    export_only: bool = typer.Option(False, "--export-only", help="Do not train: write --export from the latest checkpoint of --run-dir (or of --resume PATH)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no log lines on stderr."),
) -> None:
    """Train a method from a recipe: checkpoints, exact resume, validation, release export.

    Exit codes: 0 done (or stopped by --stop-at), 1 error or too many non-finite losses,
    2 usage error, 130 / 143 interrupted by SIGINT / SIGTERM after saving a checkpoint.
    Examples:

      irc train recipes/example-tiny.toml --set steps=200

      irc train recipes/example-tiny.toml --resume auto --export weights/tiny.safetensors

      accelerate launch -m irc train recipes/example-tiny.toml
    """
    from irc.train import run_train_command

    raise typer.Exit(
        run_train_command(
            recipe=recipe, sets=list(set_ or []), run_dir=run_dir, resume=resume, steps=steps, stop_at=stop_at, device=device,
            export=export, export_only=export_only, quiet=quiet,
        )
    )


# ----------------------------------------------------------------------------- methods
@app.command("methods")
def methods_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the methods, their tasks and options, and the weights available for each."""
    from irc.methods import get_method
    from irc.weights import load_manifest

    manifest = load_manifest()
    rows = []
    for name in REGISTRY:
        try:
            cls = get_method(name)
            info = cls.describe()
            info["default_weights"] = {task: cls.default_weights(task) for task in cls.tasks} if cls.needs_weights else {}
        except IrcError as err:
            info = {"name": name, "summary": f"unavailable: {err}", "tasks": [], "knobs": [], "default_weights": {}}
        info["weights"] = [e.name + (" (default)" if e.default else "") for e in manifest if e.method == name]
        rows.append(info)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    from irc.tables import print_table

    for info in rows:
        defaults = info["default_weights"]
        typer.echo(f"{info['name']}: {info['summary']}")
        typer.echo("  tasks:   " + ", ".join(f"{t} (default weights: {defaults[t] or 'none yet'})" if defaults else t for t in info["tasks"]))
        typer.echo("  weights: " + (", ".join(info["weights"]) or ("not needed" if not info.get("needs_weights", True) else "none shipped yet")))
        if not info["knobs"]:
            typer.echo("  options: none\n")
            continue
        typer.echo("  options:")
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column("indent", width=2)
        table.add_column("flag", no_wrap=True)
        table.add_column("help")
        for k in info["knobs"]:
            value = "|".join(k["choices"]) if "choices" in k else k.get("metavar") or ""
            # 0 and "" mean "not set" (the help says what happens then); other defaults are shown
            shown = "" if k["default"] in ("", 0) else f" [default: {k['default']}]"
            table.add_row("", escape(f"{k['flag']} {value}".strip()), escape(k["help"] + shown))
        print_table(table)
        typer.echo("")


# ----------------------------------------------------------------------------- weights
@weights_app.command("list")
def weights_list(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List shipped and downloadable weights from the manifest."""
    from dataclasses import asdict

    from irc.weights import load_manifest, weights_dir

    entries = load_manifest()
    if as_json:
        typer.echo(json.dumps([asdict(e) for e in entries], indent=2))
        return
    from rich.table import Table

    from irc.tables import print_table

    table = Table(title=f"weights ({weights_dir()})")
    for column in ("name", "method", "task", "source", "licence", "sha256"):
        table.add_column(column)
    for e in entries:
        table.add_row(e.name + (" *" if e.default else ""), e.method, ", ".join(e.all_tasks) or "-", e.file or e.source_url() or "-", e.license, (e.sha256 or "first download")[:12])
    print_table(table)
    if not entries:
        _err_console().print("no weights in the manifest yet")


@weights_app.command("verify")
def weights_verify(names: Optional[List[str]] = typer.Argument(None, help="Entries to check (default: all present locally).")) -> None:
    """Check the sha256 of shipped and downloaded weights (every file read again); exit 1 on any mismatch."""
    from irc.weights import load_manifest, verify_entry

    entries = load_manifest()
    if names:
        known = {e.name for e in entries}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageError(f"unknown weights {', '.join(unknown)}; available: {', '.join(sorted(known)) or '(none)'}")
        entries = [e for e in entries if e.name in names]
    bad = 0
    for entry in entries:
        ok, message = verify_entry(entry)
        bad += not ok
        typer.echo(f"{'ok  ' if ok else 'FAIL'} {entry.name}: {message}")  # (issue: "ok ...: ok:" said twice)
    raise typer.Exit(1 if bad else 0)


@weights_app.command("fetch")
def weights_fetch(
    names: Optional[List[str]] = typer.Argument(None, help="Manifest names, hub ids (org/repo/file) or URLs to download into the cache."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Fetch this base model (hub id) instead of a bundle's own, or alone."),
    offline: bool = typer.Option(False, "--offline", help="Do not download; say what to place where."),
) -> None:
    """Download weights into the cache (checksummed, resumable); a bundle brings its base model.

    Example: irc weights fetch hypir-sd2   (the SD2.1-base files and HYPIR's LoRA)
    """
    from irc.weights import fetch_base_model, resolve_bundle

    if not names and not base_model:
        raise UsageError("name the weights to fetch (see `irc weights list`), or --base-model REPO")
    for name in names or []:
        bundle = resolve_bundle(name, offline=offline or None)
        entry = bundle.entry
        if entry is not None and entry.license:
            typer.echo(f"{name}: licence {entry.license}" + (f"; base {entry.base}: {entry.base_license}" if entry.base else ""))
        typer.echo(f"{name}: {bundle.files['lora']} (sha256 {(bundle.sha256 or '')[:12]})")
        base = base_model or bundle.base
        if base:
            folder = fetch_base_model(base, revision=None if base_model else bundle.base_revision, offline=offline or None)
            typer.echo(f"{name}: base {base} at {folder}")
    if base_model and not names:
        typer.echo(f"{base_model}: {fetch_base_model(base_model, offline=offline or None)}")


@weights_app.command("average")
def weights_average(
    weights: List[str] = typer.Argument(..., help="Two or more weights of one method and architecture (one run and its continuations): files, manifest names or hub ids.", metavar="WEIGHTS..."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the average (.safetensors); never one of the inputs."),
    ratios: Optional[str] = typer.Option(None, "--ratios", help="Share of each input, comma-separated, normalised to sum 1 (default: equal), e.g. 1,3."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Average the weights of several trained files (a "model soup"); prints the sha256.

    For the stages of one run: averaging a fine-tuned continuation with its start can keep part
    of the continuation's gains while undoing some of its harm (weights/tur/tur-photo.md
    measures averages of the photo model's stages). LoRA factors do not average (the mean of
    B·A is not mean(B)·mean(A)): HYPIR LoRA files are refused.

    Example: irc weights average runs/stage1.safetensors runs/stage2.safetensors -o runs/avg.safetensors
    """
    from irc.averaging import average_weights, parse_ratios
    from irc.download import sha256_file
    from irc.weights import manifest_snippet, resolve_weights, save_weights

    if len(weights) < 2:
        raise UsageError("give at least two weights to average")
    if out.suffix != ".safetensors":
        raise UsageError(f"--out {out}: weights are written as .safetensors")
    shares = parse_ratios(ratios, len(weights))
    files = [resolve_weights(spec).path for spec in weights]
    same = {f.resolve() for f in files}
    if len(same) < len(files):
        raise UsageError("the same file is given twice: give each file once and weigh them with --ratios")
    if out.resolve() in same:
        raise UsageError(f"--out {out} is one of the inputs: write the average elsewhere")
    if out.exists() and not overwrite:
        raise UsageError(f"--out {out} exists: add --overwrite to replace it")
    state, metadata = average_weights(files, shares)
    save_weights(out, state, metadata)
    sha = sha256_file(out)
    parts = ", ".join(f"{f.name} x {s:.4g}" for f, s in zip(files, shares))
    typer.echo(f"averaged {parts}\nwrote {out}\nsha256 {sha}\n\n{manifest_snippet(metadata.get('name') or out.stem, metadata['method'], out, sha)}")


# ----------------------------------------------------------------------------- datasets
@datasets_app.command("list")
def datasets_list(
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Where datasets live (default: $IRC_DATA_ROOT, else ~/.cache/irc/data).", file_okay=False),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Benchmarks (for `irc eval`) and training sets (for recipes), and whether each is present."""
    from irc.data.registry import BENCHMARKS, TRAINING_SETS

    rows = []
    for kind, table in (("benchmark", BENCHMARKS), ("training", TRAINING_SETS)):
        for name, info in table.items():
            path = info.path(data_root)
            present = path.is_dir() and any(path.iterdir())
            rows.append({"name": name, "kind": kind, "path": str(path), "present": present, "in_pack": info.in_pack,
                         "downloadable": bool(info.url), "description": info.description, "layout": info.layout})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from irc.tables import print_table

    table = Table(title="irc datasets")
    for column in ("name", "kind", "present"):
        table.add_column(column, no_wrap=True)
    table.add_column("expected at", overflow="fold")
    table.add_column("layout (inside that folder)", overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["kind"], "yes" if r["present"] else "no", r["path"], r["layout"])
    print_table(table)


@datasets_app.command("fetch")
def datasets_fetch(
    names: List[str] = typer.Argument(..., help="Dataset names (see `irc datasets list`)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Where to unpack (default: $IRC_DATA_ROOT, else ~/.cache/irc/data).", file_okay=False),
    offline: bool = typer.Option(False, "--offline", help="Do not download; say what to place where."),
) -> None:
    """Download, verify (sha256) and unpack datasets that have a registered address."""
    from irc.data.fetching import fetch_dataset

    for name in names:
        typer.echo(f"{name}: {fetch_dataset(name, root=data_root, offline=offline or None)}")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: runs the app and turns :class:`IrcError` into one line."""
    token = _ARGV.set(list(sys.argv[1:] if argv is None else argv))
    try:
        result = command()(args=argv, prog_name="irc", standalone_mode=False)
    except typer.Exit as done:
        return done.exit_code
    except IrcError as err:
        from rich.markup import escape

        _err_console().print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        return err.exit_code
    except KeyboardInterrupt:
        _err_console().print("interrupted")
        return 130
    except OSError as err:  # an unwritable output folder, a full disk: one line, not a traceback
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        _err_console().print(f"error: {where}{err.strerror or err}", markup=False, highlight=False)
        return 1
    except Exception as err:
        # click's usage errors (typer may vendor its own click, hence no isinstance check)
        if hasattr(err, "show") and isinstance(getattr(err, "exit_code", None), int):
            err.show()
            return err.exit_code
        if type(err).__name__ == "Abort":
            return 130
        raise
    finally:
        _ARGV.reset(token)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
