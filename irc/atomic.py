"""Atomic file writes: a temporary file in the target's directory, fsync, then ``os.replace``.

Readers (and a rerun after a crash) see either the old file or the complete new one, never a
partial write. Temporary files are named ``.<target name>.<writer>.<random>.tmp``, ``<writer>``
being ``<host>-<pid>``, so that :func:`remove_stale_temporaries` clears what a *dead* writer left
behind and never the file another live process is writing (two identical batches running at
once used to delete each other's temporaries). :func:`claim_output` lets one process own an
output while it computes it, so that a second run skips it instead of doing the work twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Iterator

TEMP_SUFFIX = ".tmp"
CLAIM_SUFFIX = ".irc-claim"
#: a writer on another host is presumed dead when its file has not changed for this long
FOREIGN_STALE_SECONDS = 6 * 3600


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def writer_tag() -> str:
    """``<host>-<pid>`` of this process (the host hashed: names stay short and plain)."""
    return f"{_host()}-{os.getpid()}"


def _alive(tag: str, path: Path) -> bool:
    """Whether the writer ``tag`` may still be working on ``path``."""
    host, _, pid = tag.partition("-")
    if host != _host() or not pid.isdigit():
        try:
            return time.time() - path.stat().st_mtime < FOREIGN_STALE_SECONDS
        except OSError:
            return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def create_temp_beside(target: Path) -> tuple[int, Path]:
    """Create ``.<target name>.<writer>.<random>.tmp`` beside ``target``; returns ``(fd, path)``.

    ``O_EXCL`` with mode 0o666 lets the umask decide the final permissions, as a plain ``open``
    would; ``tempfile.mkstemp`` would leave every output readable by its owner only.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temp = target.parent / f".{target.name}.{writer_tag()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
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
        # writers that replace the file themselves (safetensors' save_file) leave it 0600: give
        # it the mode a plain open() would, as for every other output
        os.chmod(tmp, 0o666 & ~current_umask())
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
    """Delete the temporaries of ``target`` whose writer is dead (a killed earlier run); returns
    how many. Those of live processes, here or on another host sharing the folder, stay."""
    target = Path(target)
    removed = 0
    if target.parent.is_dir():
        # exact names only (glob would read [ ] in names as patterns); the writer-less form is
        # what irc 0.1 wrote
        pattern = re.compile(re.escape(f".{target.name}.") + r"(?:([0-9a-f]{6}-\d+)\.)?[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + "$")
        for stale in target.parent.iterdir():
            match = pattern.match(stale.name)
            if match and not (match.group(1) and _alive(match.group(1), stale)):
                with contextlib.suppress(OSError):
                    stale.unlink()
                    removed += 1
    return removed


def _claim_of(target: Path) -> Path:
    return target.parent / f".{target.name}{CLAIM_SUFFIX}"


def _live_holder(claim: Path) -> str | None:
    """The writer tag of the live process holding ``claim``; a dead writer's claim (or one left
    empty by a writer killed before writing its tag) is deleted and ``None`` returned."""
    try:
        owner = claim.read_text().strip()
    except OSError:
        return None
    if owner and _alive(owner, claim):
        return owner
    with contextlib.suppress(OSError):
        claim.unlink()
    return None


def remove_stale_claim(target: str | os.PathLike) -> bool:
    """Delete the claim of ``target`` left by a dead writer (killed after its output was in
    place, before it released the claim); returns whether one was removed."""
    claim = _claim_of(Path(target))
    return claim.exists() and _live_holder(claim) is None and not claim.exists()


@contextlib.contextmanager
def claim_output(target: str | os.PathLike) -> Iterator[str | None]:
    """Own ``target`` while computing it: yields ``None`` when claimed (released on exit), or the
    writer tag of the live process that holds it (then do not write it).

    The claim is a file ``.<name>.irc-claim`` created with ``O_EXCL`` holding the writer's tag; a
    claim whose writer is dead is taken over.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    claim = _claim_of(target)
    me = writer_tag()
    for _ in range(3):
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = _live_holder(claim)
            if holder is not None:
                yield holder
                return
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(me)
        try:
            yield None
        finally:
            with contextlib.suppress(OSError):
                if claim.read_text().strip() == me:
                    claim.unlink()
        return
    yield "unknown"
