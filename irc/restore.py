"""The ``irc restore`` engine: resolve the method and weights once, then run the batch.

Under ``accelerate launch`` / ``torchrun`` every process takes its share of the inputs
(``PartialState.split_between_processes``) on its own device; outputs do not collide because each
input belongs to exactly one process.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irc.batch import expand_inputs, plan_batch, plan_output, print_summary, run_batch
from irc.errors import UsageError

def _dtype_names() -> dict[str, Any]:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class RestoreRequest:
    """Everything ``irc restore`` was asked to do (see ``irc restore --help``)."""

    inputs: list[str]
    method: str
    weights: str | None = None
    output: Path | None = None
    name_template: str = "{stem}_{method}.{ext}"
    ext: str | None = None
    recursive: bool = False
    overwrite: bool = False
    knobs: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    dtype: str = "auto"
    tile: int | str = 0
    tile_overlap: int | None = None
    seed: int = 0
    offline: bool | None = None
    jsonl: bool = False
    quiet: bool = False
    measurement: Path | None = None
    base_model: str | None = None
    compile: bool = False


def load_method(
    name: str, weights: str | None, *, task: str | None, device: str, dtype: str, offline: bool | None, base_model: str | None = None, compile: bool = False
):
    """Build a ready-to-run method: registry lookup, device/dtype, default or given weights.

    Without ``weights`` the manifest default for ``task`` is used (``task`` defaults to the
    method's declared default task); the error names the tasks that do have defaults.
    ``compile`` applies ``torch.compile`` to the method's networks (``--compile``).
    """
    from irc.device import resolve_device, resolve_dtype
    from irc.methods import get_method

    cls = get_method(name)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device, cls.accelerator_dtype)
    dtype_name = {v: k for k, v in _dtype_names().items()}.get(torch_dtype)
    if dtype_name and dtype_name not in cls.dtypes:
        raise UsageError(f"method {name!r} runs in {', '.join(cls.dtypes)}, not {dtype_name}")
    if not cls.needs_weights:
        if weights or base_model:
            raise UsageError(f"method {name!r} takes no weights (got {'--weights ' + weights if weights else '--base-model'})")
        method = cls.from_config(None, device=torch_device, dtype=torch_dtype)
        return method.compile() if compile else method
    wanted = task or cls.default_task
    chosen = weights or cls.default_weights(wanted)
    if chosen is None:
        have = cls.tasks_with_default_weights()
        listed = f"default weights exist for task {', '.join(have)}" if have else "no default weights ship for it"
        raise UsageError(f"method {name!r} has no default weights for task {wanted!r} ({listed}); choose --task or pass --weights (see `irc weights list`)")
    extra = {"base_model": base_model} if base_model else {}
    method = cls.from_weights(chosen, device=torch_device, dtype=torch_dtype, offline=offline, **extra)
    if (dtype or "auto").strip().lower() == "auto" and torch_device.type == "cpu":
        # Some weights run faster at the same quality in bf16 on this CPU (the photo model on AMX).
        preferred = method.auto_cpu_dtype()
        if preferred != torch_dtype:
            method.to(torch_device, preferred)
    return method.compile() if compile else method


def run_restore(request: RestoreRequest) -> int:
    """Run a restore batch; returns the process exit code (0 ok, 1 some inputs failed)."""
    from irc.atomic import claim_output, remove_stale_temporaries
    from irc.batch import OutputBusy
    from irc.io import read_image, write_image
    from irc.pipeline import restore_image
    from irc.runner import StageRunner

    method = load_method(
        request.method, request.weights, task=request.knobs.get("task"), device=request.device, dtype=request.dtype, offline=request.offline,
        base_model=request.base_model, compile=request.compile,
    )
    knobs = method.knob_values(request.knobs)  # fail fast on a typo or a mismatch, before touching any file
    if request.measurement is not None:
        return _run_measurement(method, request, knobs)

    expanded = expand_inputs(request.inputs, recursive=request.recursive)
    fields = {"method": method.name, **{k: v for k, v in knobs.items() if isinstance(v, (int, float, str))}}
    fields.setdefault("scale", "")
    fields.setdefault("task", "")

    def plan(item):
        return plan_output(item, output_dir=request.output, template=request.name_template, fields=fields, ext=request.ext)

    # Planned on the whole batch, identically in every process, before any work: a template
    # error is a usage error, and no output may land on an input or on another output.
    jobs, conflicts, dropped = plan_batch(expanded.items, plan)
    if not jobs and not conflicts and not expanded.missing and not dropped:
        raise UsageError("no input images given (files, directories, globs, or - for paths on stdin)")
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes > 1:
        with state.split_between_processes(jobs) as share:
            jobs = list(share)

    record = restore_record(method, request, knobs)
    advice: collections.Counter[str] = collections.Counter()  # the method's suggestions, said once at the end

    def image_key(job) -> str:
        """The image's place in the input tree: seeds its randomness (never the batch order) and
        names its per-image options (HYPIR's prompt file in --prompt-dir)."""
        return f"{job.item.relative_dir}/{job.item.path.name}" if job.item.relative_dir else job.item.path.name

    def image_record(job) -> dict[str, Any]:
        own = method.image_options(knobs, image_key(job))
        return {**record, "options": {**record["options"], **own}} if own else record

    def process(job) -> dict[str, Any]:
        with claim_output(job.output) as holder:
            if holder is not None:
                raise OutputBusy(f"{job.output}: another irc process ({holder}) is writing it")
            if job.output.exists() and not request.overwrite:
                raise OutputBusy(f"{job.output}: another irc process has just written it")
            return compute(job)

    def compute(job) -> dict[str, Any]:
        check_memory(method, request.knobs, job.item.path, request.tile)  # before decoding a single pixel
        image = read_image(job.item.path)
        note = method.advice(knobs, image)
        if note:
            advice[note] += 1
        mine = image_record(job)
        runner = StageRunner(method.device, request.tile, request.tile_overlap, request.seed, [image_key(job)])
        restored = restore_image(method, image, runner=runner, **request.knobs)
        restored = dataclasses.replace(restored, description=json.dumps(mine, sort_keys=True))
        remove_stale_temporaries(job.output)  # only dead writers' leftovers; this process owns the claim
        write_image(job.output, restored)
        made = {k: mine[k] for k in ("method", "weights", "weights_sha256", "seed", "dtype")}  # as in the output's metadata
        return {"width": image.width, "height": image.height, "out_width": restored.width, "out_height": restored.height, "options": mine["options"], **made}

    def why_skipped(job) -> str | None:
        try:
            return _option_change(job.output, image_record(job))
        except Exception:  # noqa: BLE001 - e.g. its prompt file is gone or unreadable: nothing to compare with
            return None

    report = run_batch(
        jobs,
        process,
        overwrite=request.overwrite,
        jsonl=sys.stdout if request.jsonl else None,
        progress=False if request.quiet else None,
        description=f"{method.name}",
        known_failures=[*expanded.missing, *conflicts] if state.is_main_process else (),
        why_skipped=why_skipped,
    )
    print_summary(report, quiet=request.quiet)
    if (dropped or advice) and not request.quiet:
        from rich.console import Console
        from rich.markup import escape

        err = Console(stderr=True, emoji=False)
        if dropped:
            err.print(f"{dropped} input(s) ignored: they are outputs of this same batch")
        for note, count in advice.items():
            err.print(escape(f"note ({count} input{'s' if count > 1 else ''}): {note}"))
    return report.exit_code


#: host bytes per input pixel besides the method's own working memory: the float32 image (12),
#: decoding (4), the output (12) and, for a stage run whole, its padded input copy (12). Measured
#: 45-55 bytes per pixel for ``identity`` (README, Reliability); a tiled stage no longer copies
#: its input or keeps a full-size weight map, so the estimate errs on the safe side for it.
HOST_BYTES_PER_PIXEL = 44


def memory_needed(method, knobs: dict[str, Any], width: int, height: int, tile: int | str) -> int:
    """Bytes a restore of a ``width x height`` image will take on the host, estimated before
    decoding: the image and output copies (with the stages' padding: a 1-pixel-high image padded
    to 8 rows costs 8 rows) plus, untiled, the method's activations on the whole image."""
    import math

    values = method.knob_values(knobs)
    stages = method.task_profile(method.task)["stages"].values()
    multiple = max([8, *(s.multiple_of for s in stages)])
    hp, wp = math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple
    scale = method.output_scale(values)
    scale = scale if math.isfinite(scale) and scale > 0 else 1.0
    need = hp * wp * HOST_BYTES_PER_PIXEL * max(1.0, scale * scale)
    if tile in (0, "0"):
        need += hp * wp * max(s.bytes_per_pixel for s in stages)
    return int(need)


def check_memory(method, knobs: dict[str, Any], path: Path, tile: int | str) -> None:
    """One-line :class:`ImageReadError` when an image would not fit in the available memory."""
    from irc.io import ImageReadError, image_size
    from irc.tiling import _host_available_bytes

    width, height = image_size(path)
    need, have = memory_needed(method, knobs, width, height, tile), _host_available_bytes()
    if need > 0.9 * have:
        hint = "; try --tile auto" if tile in (0, "0") else ""
        raise ImageReadError(path, f"{width} x {height} pixels would need about {need / 2**30:.1f} GiB of memory, {have / 2**30:.1f} GiB are available{hint}")


def restore_record(method, request: RestoreRequest, knobs: dict[str, Any]) -> dict[str, Any]:
    """How an output was made, written into its metadata and the ``--jsonl`` record: method,
    weights (name and sha256), every option (the prompt included), seed, dtype."""
    from irc import __version__

    plain = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in knobs.items()}
    return {
        "irc": __version__, "method": method.name, "weights": request.weights or "default", "weights_sha256": method.weights_sha256,
        "options": plain, "seed": request.seed, "dtype": str(method.dtype).replace("torch.", ""),
    }  # fmt: skip


def _option_change(output: Path, record: dict[str, Any]) -> str | None:
    """Why an existing output would differ from this run's, from the record in its metadata."""
    from irc.io import read_description

    try:
        text = read_description(output)
        old = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict):
        return None
    changes = [f"{k} {old.get(k)!r} -> {record.get(k)!r}" for k in ("method", "weights", "seed") if old.get(k) != record.get(k)]
    before, now = old.get("options") or {}, record["options"]
    changes += [f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    return ", ".join(changes) or None


def _run_measurement(method, request: RestoreRequest, knobs: dict[str, Any]) -> int:
    """``--measurement FILE``: a method that reconstructs measurements (lorun) writes one output.

    Images go to ``{stem}_{method}.png`` (or ``--ext``); spectral cubes to ``{stem}_{method}.mat``
    (variable ``pred``, ``H x W x bands``, the MST / TSA-Net convention).
    """
    import json

    import numpy as np

    from irc.atomic import atomic_write_bytes
    from irc.io import Image, write_image

    if request.inputs:
        raise UsageError("--measurement reconstructs one measurement file: give no input images with it")
    kind = method.measurement_kind()
    if kind is None:
        raise UsageError(f"method {method.name!r}{f' (task {method.task})' if method.task else ''} does not reconstruct measurement files")
    src = Path(request.measurement)
    folder = request.output or src.parent
    stem = f"{src.stem}_{method.name}"
    # cubes are written as .mat, images as PNG (or --ext); known before the (long)
    # reconstruction, so an existing output is skipped first, as in image mode
    spectral = kind == "cube"
    ext = "mat" if spectral else (request.ext or "png")
    target = folder / f"{stem}.{ext}"
    if target.exists() and not request.overwrite:
        record = {"input": str(src), "output": str(target), "status": "skipped"}
        if request.jsonl:
            print(json.dumps(record), file=sys.stdout)
        elif not request.quiet:
            print(f"{target} exists: skipped (--overwrite to redo)", file=sys.stderr)
        return 0
    out = method.restore_measurement(src, **request.knobs)[0]
    if not spectral:
        pixels = out.numpy()
        write_image(target, Image(pixels=pixels, alpha=None, bit_depth=8, icc_profile=None, source_mode="L" if pixels.shape[0] == 1 else "RGB", format=ext.upper()))
    else:
        import io

        import scipy.io

        buffer = io.BytesIO()
        scipy.io.savemat(buffer, {"pred": np.ascontiguousarray(out.numpy().transpose(1, 2, 0))})
        atomic_write_bytes(target, buffer.getvalue())
    record = {"input": str(src), "output": str(target), "status": "done", "shape": list(out.shape)}
    if request.jsonl:
        print(json.dumps(record), file=sys.stdout)
    elif not request.quiet:
        print(f"{src} -> {target} {tuple(out.shape)}", file=sys.stderr)
    return 0
