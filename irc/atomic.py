"""Atomic file writes: a temporary file in the target's directory, fsync, then ``os.replace``.

Readers (and a rerun after a crash) see either the old file or the complete new one, never a
partial write. Temporary files are named ``.<target name>.<random>.tmp`` so that
:func:`remove_stale_temporaries` can clear what a killed process left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path
from typing import Iterator

TEMP_SUFFIX = ".tmp"


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (best effort: some systems cannot open folders)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def create_temp_beside(target: Path) -> tuple[int, Path]:
    """Create ``.<target name>.<random>.tmp`` beside ``target``; returns ``(fd, path)``.

    ``O_EXCL`` with mode 0o666 lets the umask decide the final permissions, as a plain ``open``
    would; ``tempfile.mkstemp`` would leave every output readable by its owner only.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temp = target.parent / f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {target}")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    The caller writes the temporary file completely (any way it likes); on an exception the
    temporary file is removed and ``target`` is left untouched. Parent directories are created.
    ``OSError`` s (unwritable folder, full disk) propagate for the caller to word.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp_beside(target)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically; returns the target path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically; returns the target path."""
    return atomic_write_bytes(target, text.encode("utf-8"))


def remove_stale_temporaries(target: str | os.PathLike) -> int:
    """Delete temporaries a killed writer of ``target`` left behind; returns how many.

    Only call this when no other process may be writing ``target`` at the same time.
    """
    target = Path(target)
    removed = 0
    if target.parent.is_dir():
        # exact names only: ".<name>.<8 hex digits>.tmp" (glob would read [ ] in names as patterns)
        pattern = re.compile(re.escape(f".{target.name}.") + r"[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + "$")
        for stale in target.parent.iterdir():
            if pattern.match(stale.name):
                with contextlib.suppress(OSError):
                    stale.unlink()
                    removed += 1
    return removed
