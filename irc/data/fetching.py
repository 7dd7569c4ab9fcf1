"""Downloading a registered dataset: :func:`fetch_dataset` fetches, verifies and unpacks it into the data root."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path

from irc.data.registry import BENCHMARKS, TRAINING_SETS, BenchmarkInfo, TrainingSetInfo, _HELP, _normalise
from irc.errors import IrcError, UsageError, did_you_mean

__all__ = ["fetch_dataset"]


def fetch_dataset(
    name: str, *, root: str | os.PathLike[str] | None = None, offline: bool | None = None, progress: bool = True
) -> Path:
    """Downloads, verifies and unpacks a dataset into ``data_root(root) / folder``.

    The archive goes to ``cache_dir()/downloads`` through :func:`irc.download.download`
    (resumable, SHA-256 checked, atomic), is unpacked into a temporary folder next to the
    destination (refusing absolute paths, ``..``, links and device files) and only then renamed
    into place, so the destination either does not exist or is complete.

    Args:
        name: A key of :data:`BENCHMARKS` or :data:`TRAINING_SETS`.
        root: Data root override.
        offline: Forbid network access (``None``: ``IRC_OFFLINE`` / ``HF_HUB_OFFLINE``).
        progress: Show a progress bar on a terminal.

    Returns:
        The dataset folder. An existing, non-empty folder is returned untouched.

    Raises:
        UsageError: Unknown name.
        IrcError: No download address is registered (the message says where to place the
            files), the download failed or did not match its checksum, or the archive is unsafe.
    """
    from irc.data._archive import extract_archive
    from irc.download import cache_dir, download

    key = _normalise(name)
    info: BenchmarkInfo | TrainingSetInfo | None = BENCHMARKS.get(key) or TRAINING_SETS.get(key)
    if info is None:
        names = sorted({*BENCHMARKS, *TRAINING_SETS})
        raise UsageError(f"unknown dataset {name!r}{did_you_mean(name, names)}; expected one of {', '.join(names)}")
    dest = info.path(root)
    if dest.is_dir() and any(dest.iterdir()):
        return dest
    if not info.url or not info.sha256:
        raise IrcError(
            f"dataset {info.name} has no registered download address: place it at {dest} "
            f"(layout: {info.folder}/ holds {info.layout}); {_HELP}"
        )
    archive_name = Path(urllib.parse.urlparse(info.url).path).name or f"{info.name}.archive"
    archive = cache_dir() / "downloads" / f"{info.sha256[:12]}-{archive_name}"
    try:
        download(info.url, archive, sha256=info.sha256, progress=progress, offline=offline)
    except IrcError as err:
        raise IrcError(f"cannot fetch dataset {info.name}: {err}; or unpack it yourself to {dest}") from err
    dest.parent.mkdir(parents=True, exist_ok=True)
    # the temporary folder sits beside the destination, so the final rename stays on one
    # filesystem and is atomic
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    try:
        extract_archive(archive, tmp)
        content = _archive_content(tmp, info.archive_subdir, archive)
        try:
            if dest.is_dir() and not any(dest.iterdir()):
                dest.rmdir()
            os.rename(content, dest)
        except OSError as err:
            if dest.is_dir() and any(dest.iterdir()):
                return dest  # another process finished first
            raise IrcError(f"cannot move the unpacked {info.name} to {dest}: {err.strerror or err}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _archive_content(tmp: Path, subdir: str | None, archive: Path) -> Path:
    if subdir:
        content = tmp / subdir
        if not content.is_dir():
            raise IrcError(f"{archive}: has no folder {subdir!r}")
        return content
    entries = [p for p in tmp.iterdir() if p.name not in ("__MACOSX",)]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    # several top-level entries: wrap them so the whole content can be renamed in one step
    wrapped = tmp / ".content"
    wrapped.mkdir()
    for entry in entries:
        entry.rename(wrapped / entry.name)
    return wrapped
