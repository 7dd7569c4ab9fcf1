"""The sha256 of large weights files, remembered until the file changes.

irc checks every weights file it loads against a published or recorded sha256. For HYPIR that
is about 5 GB of Stable Diffusion 2.1 files (UNet, text encoder, VAE) plus the LoRA: hashing
them takes seconds on every ``irc restore --method hypir``, longer than fusing the LoRA. So a
hash, once computed, is remembered beside the file's identity and state as the operating system
reports it: device, inode, size, modification time and *change* time (``st_ctime_ns``), all to
the nanosecond. Any write to the file, a rename over it, or ``touch -d`` to an old date moves
the change time (it cannot be set from user space), so a remembered hash is used only for the
very bytes it was computed on, barring faults below the file system (bit rot on the disk):
``irc weights verify`` re-reads every file to catch those (:func:`rehashing`).

Entries live in ``cache_dir()/file-hashes/`` (one small JSON file per weights file, named by a
hash of its resolved path, written atomically). A cache that cannot be read or written (a
read-only home, a full disk) costs only the time: the file is hashed as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

from irc.download import cache_dir, sha256_file

__all__ = ["file_sha256", "rehashing"]

_REHASH = contextvars.ContextVar("irc_rehash", default=False)

# Files smaller than this are hashed every time: reading them costs less than the cache entry.
_MIN_CACHED_BYTES = 64 << 20


@contextlib.contextmanager
def rehashing() -> Iterator[None]:
    """Within this block :func:`file_sha256` reads every file again (and refreshes its entry)."""
    token = _REHASH.set(True)
    try:
        yield
    finally:
        _REHASH.reset(token)


def _entry_path(resolved: Path) -> Path:
    key = hashlib.sha256(str(resolved).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return cache_dir() / "file-hashes" / f"{key}.json"


def _state(resolved: Path) -> dict[str, int | str]:
    st = resolved.stat()
    return {
        "path": str(resolved),
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def file_sha256(path: Path) -> str:
    """Lower-case hex SHA-256 of ``path`` (a symlink is followed), from the cache when the file
    is unchanged since it was last hashed (see the module docstring), else read and remembered.
    """
    resolved = Path(path).resolve()
    state = _state(resolved)
    if int(state["size"]) < _MIN_CACHED_BYTES:
        return sha256_file(resolved)
    entry = _entry_path(resolved)
    if not _REHASH.get():
        try:
            known = json.loads(entry.read_text())
            if {k: known.get(k) for k in state} == state and isinstance(known.get("sha256"), str):
                return known["sha256"]
        except (OSError, ValueError):
            pass
    digest = sha256_file(resolved)
    if _state(resolved) == state:  # not written to while it was read: the hash is of these bytes
        _remember(entry, {**state, "sha256": digest})
    return digest


def _remember(entry: Path, record: dict[str, int | str]) -> None:
    from irc.atomic import atomic_write_text

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(entry, json.dumps(record, sort_keys=True) + "\n")
    except OSError:
        pass  # the cache is an optimisation: a read-only or full cache only costs time
