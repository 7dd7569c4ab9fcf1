"""The sha256 of large weights files, remembered until the file changes.

irc checks every weights file it loads against a published or recorded sha256. For HYPIR that
is about 5 GB of Stable Diffusion 2.1 files (fp32 UNet, text encoder, VAE) plus the LoRA:
hashing them takes seconds on every ``irc restore --method hypir``, longer than fusing the LoRA.
So a hash, once computed, is remembered beside the file's identity and state as the operating
system reports it for the open file (``fstat``: device, inode, size, modification and *change*
time, ``st_ctime_ns``). A write to the file or a rename over it moves the change time, which
user programs cannot set (``touch -d`` sets only the modification time).

Like git's index, the cache guards against coarse clocks: Linux stamps file times from a clock
that advances once per scheduler tick (up to 10 ms; finer on recent kernels), so two writes
within one tick can leave the same times. A hash is therefore remembered only when the file's
last change is at least :data:`_SETTLED_NS` older than the moment its reading began: any later
write then necessarily carries a later time. Limits, said plainly: faults below the file system
(bit rot on the disk) keep the times, and a network file system may report attributes cached
for a while; ``irc weights verify`` re-reads every file (:func:`rehashing`) and catches both.
Only POSIX systems remember hashes (on Windows ``st_ctime`` is the creation time).

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
import time
from pathlib import Path
from typing import BinaryIO, Iterator

from irc.download import cache_dir

__all__ = ["file_sha256", "rehashing"]

_REHASH = contextvars.ContextVar("irc_rehash", default=False)

# Files smaller than this are hashed every time: reading them costs less than the cache entry.
_MIN_CACHED_BYTES = 64 << 20

# A file changed less than this before its hash began is not remembered (coarse file times).
_SETTLED_NS = 2_000_000_000
_now_ns = time.time_ns  # a name of its own, so that tests can age files without sleeping


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


def _state(resolved: Path, fh: BinaryIO) -> dict[str, int | str]:
    st = os.fstat(fh.fileno())
    return {
        "path": str(resolved),
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def _digest(fh: BinaryIO) -> str:
    fh.seek(0)
    return hashlib.file_digest(fh, "sha256").hexdigest()


def file_sha256(path: Path) -> str:
    """Lower-case hex SHA-256 of ``path`` (a symlink is followed), from the cache when the file
    is unchanged since it was last hashed (see the module docstring), else read and remembered.
    The state compared and the bytes hashed come from the same open file.
    """
    resolved = Path(path).resolve()
    with open(resolved, "rb") as fh:
        state = _state(resolved, fh)
        if int(state["size"]) < _MIN_CACHED_BYTES or os.name != "posix":
            return _digest(fh)
        entry = _entry_path(resolved)
        if not _REHASH.get():
            try:
                known = json.loads(entry.read_text())
                if {k: known.get(k) for k in state} == state and isinstance(known.get("sha256"), str):
                    return known["sha256"]
            except (OSError, ValueError):
                pass
        began = _now_ns()
        digest = _digest(fh)
        settled = max(int(state["mtime_ns"]), int(state["ctime_ns"])) <= began - _SETTLED_NS
        if settled and _state(resolved, fh) == state:  # not written to while it was read
            _remember(entry, {**state, "sha256": digest})
        elif not settled:
            with contextlib.suppress(OSError):
                entry.unlink()  # an older entry for this path is stale now
    return digest


def _remember(entry: Path, record: dict[str, int | str]) -> None:
    from irc.atomic import atomic_write_text

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(entry, json.dumps(record, sort_keys=True) + "\n")
    except OSError:
        pass  # the cache is an optimisation: a read-only or full cache only costs time
