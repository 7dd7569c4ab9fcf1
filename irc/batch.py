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
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

from irc.atomic import remove_stale_claim
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
        explicit: named on the command line or on stdin, rather than found in a directory or
            by a glob (see :func:`plan_batch`).
    """

    path: Path
    relative_dir: str = ""
    explicit: bool = True


@dataclass
class ExpandedInputs:
    """Images found, and ``(argument, reason)`` for each argument that yielded none."""

    items: list[InputItem] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)


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

    def add(path: Path, relative_dir: str = "", explicit: bool = False) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            result.items.append(InputItem(path, relative_dir, explicit))

    def expand_one(arg: str) -> None:
        try:
            expand_path(arg)
        except OSError as err:  # a name too long, a permission denied: this argument fails, not the batch
            result.missing.append((arg, err.strerror or str(err)))

    def expand_path(arg: str) -> None:
        path = Path(arg).expanduser()
        if path.is_dir():
            found = _image_files(path, recursive)
            for file in found:
                rel = file.parent.relative_to(path).as_posix() if recursive else ""
                add(file, "" if rel == "." else rel)
            if not found:
                result.missing.append((arg, f"no images with suffix {', '.join(SUPPORTED_SUFFIXES)}"))
        elif path.exists():
            add(path, explicit=True)
        elif _GLOB_CHARS & set(arg):
            matches = sorted(Path(m) for m in glob.glob(arg, recursive=True))
            files = [m for m in matches if m.is_file() and is_image_path(m)]
            for m in files:
                add(m)
            if not files:
                result.missing.append((arg, "no matching images"))
        else:
            result.missing.append((arg, "no such file or directory"))

    for arg in inputs:
        if arg == "-":
            for line in _stdin_paths(stdin if stdin is not None else sys.stdin):
                expand_one(line)
        else:
            expand_one(arg)
    return result


def _stdin_paths(stream: TextIO) -> Iterable[str]:
    """Paths from ``-``: one per line (blank lines skipped; leading and trailing spaces kept, a
    file may start with one). Image bytes piped by mistake (``cat photo.jpg | irc restore -``)
    are a usage error, not a traceback."""
    data = getattr(stream, "buffer", None)
    raw = data.read() if data is not None else stream.read().encode("utf-8", "surrogateescape")
    if b"\x00" in raw or _looks_binary(raw):
        raise UsageError("stdin holds binary data, not a list of paths: pass image files as arguments (irc restore photo.jpg), or pipe paths (find . -name '*.jpg' | irc restore -)")
    text = raw.decode("utf-8", "surrogateescape")
    for line in text.splitlines():
        if line.strip():
            yield line


def _looks_binary(raw: bytes) -> bool:
    sample = raw[:4096]
    if not sample:
        return False
    control = sum(1 for b in sample if b < 32 and b not in (9, 10, 13))
    return control / len(sample) > 0.05


def plan_output(item: InputItem, *, output_dir: Path | None, template: str, fields: dict[str, Any], ext: str | None) -> Path:
    """The output path of ``item``.

    Args:
        output_dir: where outputs go (``None``: next to each input).
        template: a ``str.format`` template with ``{stem}``, ``{name}``, ``{parent}`` (the input's
            folder name), ``{ext}``, ``{method}`` and any key of ``fields``; it may contain ``/``
            to create sub-directories.
        fields: extra template fields (method, scale, task...).
        ext: output suffix without dot (``None``: the input's).

    Raises:
        UsageError: for a template that fails (unknown field, bad format spec, no file name) or
            an ``ext`` that cannot be written. Overwriting inputs is checked by
            :func:`plan_batch`, which sees the whole batch.
    """
    suffix = (ext or item.path.suffix.lstrip(".")).lower()
    if f".{suffix}" not in SUPPORTED_SUFFIXES:
        if ext:
            raise UsageError(f"--ext {ext!r}: cannot write that format; choose one of {', '.join(s.lstrip('.') for s in SUPPORTED_SUFFIXES)}")
        suffix = "png"  # readable but not writable (gif, pgm, ...): write PNG, which keeps everything
    values = {"stem": item.path.stem, "name": item.path.name, "parent": item.path.resolve().parent.name, "ext": suffix, **fields}
    try:
        name = template.format(**values)
    except (KeyError, IndexError, ValueError, AttributeError) as err:
        raise UsageError(f"--name-template {template!r}: {type(err).__name__} {err}; fields: {', '.join('{' + k + '}' for k in values)}") from None
    if not name.strip() or name.endswith(("/", "\\")) or not Path(name).name.strip("."):
        raise UsageError(f"--name-template {template!r} gives no file name for {item.path.name}")
    base = (output_dir / item.relative_dir) if output_dir is not None else item.path.parent
    # the name may make sub-folders, never leave its folder (../x, /abs, a/../../x)
    root = output_dir if output_dir is not None else item.path.parent
    out = base / name
    if Path(name).is_absolute() or not _inside(out, root):
        raise UsageError(f"--name-template {template!r} gives {name!r}, which leaves the output folder {root}; outputs stay inside it")
    # ... nor through a symbolic link already inside it (sub/ -> /elsewhere): the folders below
    # the output folder are followed as the write would follow them. The output folder itself
    # may be a link: that is where the user sent the outputs.
    if not _inside(out.parent.resolve(), root.resolve()):
        raise UsageError(
            f"--name-template {template!r} writes {out} through a symbolic link to {out.parent.resolve()}, outside the output folder {root}; outputs stay inside it"
        )
    return out


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` stays in ``root`` lexically (``..`` counted, symlinks not followed: pass
    resolved paths to follow them)."""
    norm_path, norm_root = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    return norm_path == norm_root or norm_path.startswith(norm_root.rstrip(os.sep) + os.sep)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


@dataclass
class Job:
    """One planned unit of work: an input and the output it will produce."""

    item: InputItem
    output: Path


def _clash_hint(path: Path, other: Path) -> str:
    """What resolves two inputs planned onto one output (a hint that is true for these two)."""
    if path.resolve().parent.name != other.resolve().parent.name:
        return "add {parent} (the input's folder name) to --name-template, e.g. --name-template '{parent}/{stem}_{method}.{ext}'"
    if path.suffix.lower() != other.suffix.lower():
        return "add {name} (the file name with its suffix) to --name-template, e.g. --name-template '{name}_{method}.{ext}'"
    return "their folders have the same name: restore them in separate runs with different --output folders"


def plan_batch(items: list[InputItem], plan: Callable[[InputItem], Path]) -> tuple[list[Job], list[tuple[str, str]], int]:
    """Plan every output before any work, so that a batch never destroys anything.

    * An input found in a directory or by a glob that is the planned output of another input is
      a previous run's result: it is dropped, so rerunning a batch finishes it instead of
      restoring its own outputs.
    * An output that would land on an input named explicitly, or on its own input, fails that
      item: inputs are never overwritten.
    * Two inputs planned onto the same output: the later one fails (nothing is silently lost).

    Returns:
        ``(jobs, failures, dropped)`` with failures as ``(input, message)``.

    Raises:
        UsageError: a name template or output format that cannot work for any file.
    """
    outputs = {id(item): plan(item) for item in items}
    output_keys = {out.resolve(): item for item in items for out in [outputs[id(item)]]}
    kept = [item for item in items if item.explicit or output_keys.get(item.path.resolve(), item) is item]
    dropped = len(items) - len(kept)
    protected = [item.path for item in kept]
    protected_keys = {p.resolve() for p in protected}
    jobs: list[Job] = []
    failures: list[tuple[str, str]] = []
    claimed: dict[Path, Path] = {}
    for item in kept:
        out = outputs[id(item)]
        key = out.resolve()
        if key in protected_keys or any(_same_file(out, p) for p in protected if out.name.lower() == p.name.lower()):
            victim = "the input itself" if _same_file(out, item.path) or key == item.path.resolve() else "another input of this batch"
            failures.append((str(item.path), f"{item.path}: output {out} would overwrite {victim}; choose another --output or --name-template"))
        elif key in claimed:
            failures.append((str(item.path), f"{item.path}: output {out} is already produced by {claimed[key]} in this batch; {_clash_hint(item.path, claimed[key])}"))
        else:
            claimed[key] = item.path
            jobs.append(Job(item, out))
    return jobs, failures, dropped


class OutputBusy(IrcError):
    """Another process is writing this output (or just wrote it): skipped, not failed."""


@dataclass
class BatchReport:
    """What a batch did; ``exit_code`` follows the CLI convention (1 when anything failed)."""

    done: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: skipped outputs that were made with other options: ``(output, what differs)``
    stale: list[tuple[str, str]] = field(default_factory=list)
    #: outputs skipped because another process was writing them
    busy: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def run_batch(
    jobs: list[Job],
    process: Callable[[Job], dict[str, Any]],
    *,
    overwrite: bool = False,
    jsonl: TextIO | None = None,
    progress: bool | None = None,
    description: str = "restoring",
    known_failures: Iterable[tuple[str, str]] = (),
    why_skipped: Callable[[Job], str | None] | None = None,
) -> BatchReport:
    """Run ``process`` over planned ``jobs`` (see :func:`plan_batch`), never stopping on a bad file.

    Args:
        process: called as ``process(job)`` when the job's output does not exist yet (or
            ``overwrite``); it writes the output and returns extra fields for the JSONL record.
            An :class:`IrcError` (or any ``Exception``) marks the job failed.
        jsonl: stream for one JSON object per input (``status`` is ``done``, ``skipped`` or
            ``failed``).
        progress: show a progress bar on stderr; default: only when stderr is a terminal.
        known_failures: ``(input, message)`` pairs that failed before processing (missing
            paths, planning conflicts); reported first.
        why_skipped: for an existing output, what differs between how it was made and this
            run (``None``: nothing known); reported with the skip.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from rich.markup import escape

    report = BatchReport()
    console = Console(stderr=True, emoji=False, soft_wrap=True)

    def announce(path: str, message: str) -> None:
        # printed as it happens: a batch killed later (out of memory, a signal) keeps its lines
        text = message if message.startswith(path) else f"{path}: {message}"
        console.print(f"[red]failed[/red] {escape(text)}", highlight=False)

    for path, message in known_failures:
        report.failures.append((path, message))
        announce(path, message)
        _emit(jsonl, {"input": path, "status": "failed", "error": message})
    show = console.is_terminal if progress is None else progress
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not show, transient=False) as bar:
        task = bar.add_task(description, total=len(jobs))
        for job in jobs:
            record: dict[str, Any] = {"input": str(job.item.path), "output": str(job.output)}
            try:
                if job.output.exists() and not overwrite:
                    if job.output.is_dir():
                        raise IrcError(f"{job.output} is a directory, not an output image: choose another --output or --name-template")
                    record["status"] = "skipped"
                    report.skipped += 1
                    remove_stale_claim(job.output)  # a killed run's, left beside its finished output
                    change = why_skipped(job) if why_skipped is not None and job.output.is_file() else None
                    if change:
                        record["differs"] = change
                        report.stale.append((str(job.output), change))
                else:
                    start = time.perf_counter()
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        record.update(process(job))
                    notes = list(dict.fromkeys(str(w.message).splitlines()[0] for w in caught))
                    if notes:
                        # one line per distinct warning, not Python's two-line file:line form
                        record["warnings"] = notes
                        for note in notes:
                            console.print(f"[yellow]warning[/yellow] {escape(str(job.item.path))}: {escape(note)}", highlight=False)
                    record["seconds"] = round(time.perf_counter() - start, 4)
                    record["status"] = "done"
                    report.done += 1
            except KeyboardInterrupt:
                raise
            except OutputBusy as busy:
                record["status"] = "skipped"
                record["busy"] = str(busy)
                report.skipped += 1
                report.busy += 1
            except IrcError as err:
                _fail(report, record, job.item, str(err))
                announce(str(job.item.path), str(err))
            except Exception as err:  # a decoder or a method failing on one file must not end the batch
                line = f"{job.item.path}: {type(err).__name__}: {err}".splitlines()[0]
                _fail(report, record, job.item, line)
                announce(str(job.item.path), line)
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


def print_summary(report: BatchReport, *, console=None, verb: str = "restored", quiet: bool = False) -> None:
    """The summary on stderr (not when ``quiet``); each failure was printed when it happened."""
    from rich.console import Console
    from rich.markup import escape

    if quiet:
        return
    console = console or Console(stderr=True, soft_wrap=True, emoji=False)
    for output, change in report.stale[:5]:
        console.print(f"skipped {escape(output)}: it exists, made with other options ({escape(change)}); --overwrite redoes it, or add {{task}} / {{scale}} to --name-template")
    if len(report.stale) > 5:
        console.print(f"... and {len(report.stale) - 5} more skipped outputs made with other options")
    if report.busy:
        console.print(f"{report.busy} output(s) skipped: another irc process was writing them (run again afterwards to check)")
    console.print(f"{report.done} {verb}, {report.skipped} skipped (exist; --overwrite to redo), {len(report.failures)} failed")
