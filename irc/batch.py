"""Batch mechanics shared by ``irc restore`` (and later ``irc eval --save-images``).

* :func:`expand_inputs` turns files, directories (``--recursive`` mirrors the tree), globs and
  ``-`` (paths on stdin) into :class:`InputItem` s, reporting missing paths instead of aborting.
* :func:`plan_output` names each output from a template, refuses to overwrite an input, and
  skips existing outputs unless asked to overwrite.
* :func:`run_batch` processes items one by one: a bad file is recorded and the batch goes on;
  progress goes to stderr (quiet when stderr is not a terminal); ``--jsonl`` records go to stdout.

Writes themselves are atomic (:func:`irc.io.write_image`), so an interrupted batch leaves no
partial output and a rerun only does what is missing.
"""

from __future__ import annotations

import glob
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

from irc.errors import IrcError, UsageError
from irc.io import SUPPORTED_SUFFIXES, is_image_path

DEFAULT_TEMPLATE = "{stem}_{method}.{ext}"
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputItem:
    """One input image.

    Attributes:
        path: the file to read.
        relative_dir: directory of the file relative to the directory argument it was found
            under (``""`` for plain files); ``--recursive`` outputs mirror it.
    """

    path: Path
    relative_dir: str = ""


@dataclass
class ExpandedInputs:
    items: list[InputItem] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _image_files(directory: Path, recursive: bool) -> Iterable[Path]:
    walker = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(p for p in walker if p.is_file() and is_image_path(p) and not p.name.startswith("."))


def expand_inputs(inputs: list[str], *, recursive: bool = False, stdin: TextIO | None = None) -> ExpandedInputs:
    """Expand command-line inputs into image files, in a stable order without duplicates.

    Args:
        inputs: files, directories, glob patterns, or ``-`` to read one path per line from stdin.
        recursive: descend into sub-directories (outputs then mirror the tree).
        stdin: stream used for ``-`` (default ``sys.stdin``).

    Returns:
        The items found and the arguments that matched nothing (listed as failures later).
    """
    result = ExpandedInputs()
    seen: set[Path] = set()

    def add(path: Path, relative_dir: str = "") -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            result.items.append(InputItem(path, relative_dir))

    def expand_one(arg: str) -> None:
        path = Path(arg).expanduser()
        if path.is_dir():
            found = _image_files(path, recursive)
            for file in found:
                rel = file.parent.relative_to(path).as_posix() if recursive else ""
                add(file, "" if rel == "." else rel)
            if not found:
                result.missing.append(f"{arg} (no images with suffix {', '.join(SUPPORTED_SUFFIXES)})")
        elif path.exists():
            add(path)
        elif _GLOB_CHARS & set(arg):
            matches = sorted(Path(m) for m in glob.glob(arg, recursive=True))
            files = [m for m in matches if m.is_file() and is_image_path(m)]
            for m in files:
                add(m)
            if not files:
                result.missing.append(f"{arg} (no matching images)")
        else:
            result.missing.append(f"{arg} (no such file or directory)")

    for arg in inputs:
        if arg == "-":
            stream = stdin if stdin is not None else sys.stdin
            for line in stream:
                line = line.strip()
                if line:
                    expand_one(line)
        else:
            expand_one(arg)
    return result


def plan_output(item: InputItem, *, output_dir: Path | None, template: str, fields: dict[str, Any], ext: str | None) -> Path:
    """The output path of ``item``.

    Args:
        output_dir: where outputs go (``None``: next to each input).
        template: a ``str.format`` template with ``{stem}``, ``{name}``, ``{ext}``, ``{method}`` and
            any key of ``fields``; it may contain ``/`` to create sub-directories.
        fields: extra template fields (method, scale, task...).
        ext: output suffix without dot (``None``: the input's).

    Raises:
        UsageError: for an unknown template field.
        IrcError: when the output would be the input file itself.
    """
    suffix = (ext or item.path.suffix.lstrip(".")).lower()
    values = {"stem": item.path.stem, "name": item.path.name, "ext": suffix, **fields}
    try:
        name = template.format(**values)
    except (KeyError, IndexError, ValueError) as err:
        raise UsageError(f"--name-template {template!r}: unknown field {err}; available: {', '.join('{' + k + '}' for k in values)}") from None
    base = (output_dir / item.relative_dir) if output_dir is not None else item.path.parent
    out = base / name
    if out.resolve() == item.path.resolve():
        raise IrcError(f"{item.path}: output would overwrite the input; choose another --output or --name-template")
    return out


@dataclass
class BatchReport:
    """What a batch did; ``exit_code`` follows the CLI convention (1 when anything failed)."""

    done: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def run_batch(
    items: list[InputItem],
    process: Callable[[InputItem], dict[str, Any]],
    *,
    plan: Callable[[InputItem], Path],
    overwrite: bool = False,
    jsonl: TextIO | None = None,
    progress: bool | None = None,
    description: str = "restoring",
    known_failures: Iterable[str] = (),
) -> BatchReport:
    """Run ``process`` over ``items``, never stopping on a bad file.

    Args:
        process: called as ``process(item)`` when the item's output does not exist yet (or
            ``overwrite``); it writes the output and returns extra fields for the JSONL record.
            An :class:`IrcError` (or any ``Exception``) marks the item failed.
        plan: the output path of an item (see :func:`plan_output`).
        jsonl: stream for one JSON object per item (``status`` is ``done``, ``skipped`` or
            ``failed``).
        progress: show a progress bar on stderr; default: only when stderr is a terminal.
        known_failures: inputs that already failed during expansion (missing paths).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    report = BatchReport()
    console = Console(stderr=True)
    for failure in known_failures:
        report.failures.append((failure, "input not found"))
        _emit(jsonl, {"input": failure, "status": "failed", "error": "input not found"})
    show = console.is_terminal if progress is None else progress
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not show, transient=False) as bar:
        task = bar.add_task(description, total=len(items))
        for item in items:
            record: dict[str, Any] = {"input": str(item.path)}
            try:
                out = plan(item)
                record["output"] = str(out)
                if out.exists() and not overwrite:
                    record["status"] = "skipped"
                    report.skipped += 1
                else:
                    start = time.perf_counter()
                    record.update(process(item))
                    record["seconds"] = round(time.perf_counter() - start, 4)
                    record["status"] = "done"
                    report.done += 1
            except KeyboardInterrupt:
                raise
            except IrcError as err:
                _fail(report, record, item, str(err))
            except Exception as err:  # a decoder or a method failing on one file must not end the batch
                _fail(report, record, item, f"{item.path}: {type(err).__name__}: {err}".splitlines()[0])
            _emit(jsonl, record)
            bar.advance(task)
    return report


def _fail(report: BatchReport, record: dict[str, Any], item: InputItem, message: str) -> None:
    report.failures.append((str(item.path), message))
    record["status"] = "failed"
    record["error"] = message


def _emit(stream: TextIO | None, record: dict[str, Any]) -> None:
    if stream is not None:
        stream.write(json.dumps(record) + "\n")
        stream.flush()


def print_summary(report: BatchReport, *, console=None, verb: str = "restored") -> None:
    """One summary line on stderr, then every failure on its own line."""
    from rich.console import Console
    from rich.markup import escape

    console = console or Console(stderr=True, soft_wrap=True)
    console.print(f"{report.done} {verb}, {report.skipped} skipped (exist; --overwrite to redo), {len(report.failures)} failed")
    for path, message in report.failures:
        text = message if message.startswith(path) else f"{path}: {message}"
        console.print(f"[red]failed[/red] {escape(text)}")

