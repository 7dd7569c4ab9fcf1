"""Resumable, checksum-verified downloads with nothing but the standard library.

Weights and data sets are fetched through :func:`download`. The guarantees it gives:

* ``dest`` only ever appears complete and verified: bytes go to ``<dest>.part`` and are moved
  into place with :func:`os.replace` after the length and SHA-256 checks pass.
* An interrupted transfer is continued, not restarted: the ``.part`` file is extended with an
  HTTP ``Range`` request, both across retries inside one call and across separate runs.
* Offline mode (``IRC_OFFLINE`` / ``HF_HUB_OFFLINE`` / ``--offline``) never touches the network
  and tells the user exactly which file to put where.
* Two processes asking for the same file do not write the same ``.part``: a small lock file
  (created with ``O_EXCL``) serialises them, and the second one finds the finished file.

Why this module exists next to ``huggingface_hub``: files on the Hugging Face Hub never come
here, :mod:`irc.hub` resolves them through ``hf_hub_download`` / ``snapshot_download`` (their
cache shared with diffusers, ``HF_ENDPOINT``, offline mode). What is left is what that library
does not do: plain URLs (the data sets' archives on university and archive servers, weights on
release pages) checked against the sha256 a manifest lists, resumed across runs and guarded
against a second process. ``huggingface_hub`` 2.x exports no generic URL download (its
``http_get`` is internal, not in the public API), so building on it would tie irc to private
code that may change in any release.

No torch here, and no third-party HTTP client: ``urllib`` is enough and keeps the install small.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Iterator

from irc import __version__
from irc.atomic import fsync_dir
from irc.errors import WeightsError

__all__ = ["cache_dir", "download", "is_offline", "sha256_file"]

_TRUTHY = {"1", "true", "yes", "on"}
_OFFLINE_ENV = ("IRC_OFFLINE", "HF_HUB_OFFLINE")

# Seconds to wait before retry ``n`` (0-based) is ``min(_BACKOFF_BASE * 2**n, _BACKOFF_MAX)``.
# Module-level so tests can set it to zero.
_BACKOFF_BASE = 0.5
_BACKOFF_MAX = 8.0

# A lock whose owner stopped refreshing it this long ago is considered abandoned. The owner
# touches it every ``_LOCK_REFRESH`` seconds while bytes flow, so only a dead (or wedged,
# possibly remote) process leaves an old lock behind.
_LOCK_STALE_AFTER = 600.0
_LOCK_REFRESH = 10.0
_LOCK_POLL = 0.2

# HTTP statuses worth retrying; every other 4xx is final (retrying a 404 only wastes time).
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


# --------------------------------------------------------------------------- small helpers
def is_offline(offline: bool | None = None) -> bool:
    """Whether network access is forbidden.

    Args:
        offline: An explicit choice (from ``--offline``); it wins over the environment.

    Returns:
        ``offline`` when it is not ``None``; otherwise ``True`` when ``IRC_OFFLINE`` or
        ``HF_HUB_OFFLINE`` is set to ``1``/``true``/``yes``/``on`` (any case).
    """
    if offline is not None:
        return bool(offline)
    return any(os.environ.get(name, "").strip().lower() in _TRUTHY for name in _OFFLINE_ENV)


def cache_dir() -> Path:
    """Root of irc's download cache.

    Returns:
        ``$IRC_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/irc``, else ``~/.cache/irc``. The
        directory is not created here; :func:`download` creates parents as needed.
    """
    if os.environ.get("IRC_CACHE_DIR"):
        return Path(os.environ["IRC_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "irc"
    return Path.home() / ".cache" / "irc"


def sha256_file(path: Path, *, chunk_size: int = 1 << 20) -> str:
    """Lower-case hex SHA-256 of a file, read in chunks so large weights do not fill memory.

    Args:
        path: The file to hash.
        chunk_size: Bytes read per step.

    Returns:
        The 64-character hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _place_hint(url: str, dest: Path, sha256: str | None) -> str:
    """The "put this file there yourself" sentence shared by every failure message."""
    tail = f" (sha256 {sha256})" if sha256 else ""
    return f"download {url} and place it at {dest}{tail}"


class _Transient(Exception):
    """A failure worth retrying (network hiccup, short read, 5xx)."""


class _Restart(Exception):
    """The ``.part`` file cannot be continued; start again from byte zero."""


class _Fatal(Exception):
    """A failure that retrying will not fix; the message is the reason only."""


# --------------------------------------------------------------------------- lock
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell (e.g. platform quirk): assume alive, the age check still applies
    return True


def _lock_is_stale(lock: Path) -> bool:
    """A lock is stale if its owner on this host is gone, or nobody refreshed it for a long time."""
    try:
        age = time.time() - lock.stat().st_mtime
        owner = lock.read_text().split()
    except FileNotFoundError:
        return False  # just released; the caller retries the O_EXCL create
    except OSError:
        return False
    if age > _LOCK_STALE_AFTER:
        return True
    if len(owner) >= 2 and owner[1] == socket.gethostname():
        with contextlib.suppress(ValueError):
            return not _pid_alive(int(owner[0]))
    # Unreadable content or another host (shared cache on NFS): only the age can tell.
    return False


@contextlib.contextmanager
def _locked(lock: Path, on_wait) -> Iterator[bool]:
    """Hold ``lock`` (an ``O_EXCL`` file); wait while another live process has it.

    Yields:
        Whether we had to wait, i.e. whether another process may have changed things meanwhile.
    """
    waited = False
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _lock_is_stale(lock):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            if not waited:
                on_wait()
                waited = True
            time.sleep(_LOCK_POLL)
            continue
        except OSError as err:
            raise WeightsError(f"cannot create lock file {lock}: {err.strerror or err}") from err
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()} {socket.gethostname()}\n")
        break
    try:
        yield waited
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


# --------------------------------------------------------------------------- progress
class _NullProgress:
    def start(self, total: int | None, completed: int) -> None:
        pass

    def reset(self, total: int | None, completed: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _RichProgress:
    """A single rich progress bar on stderr; rich is imported only when a bar is shown."""

    def __init__(self, label: str):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._label = label
        self._task = None

    def start(self, total: int | None, completed: int) -> None:
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=total, completed=completed)
        else:
            self.reset(total, completed)

    def reset(self, total: int | None, completed: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, total=total, completed=completed)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)

    def close(self) -> None:
        if self._task is not None:
            self._progress.stop()


def _make_progress(enabled: bool, label: str):
    if not enabled:
        return _NullProgress()
    try:
        if not sys.stderr.isatty():
            return _NullProgress()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return _NullProgress()
    return _RichProgress(label)


# --------------------------------------------------------------------------- download
def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    resume: bool = True,
    progress: bool = True,
    timeout: float = 30,
    offline: bool | None = None,
    retries: int = 3,
    chunk_size: int = 1 << 20,
) -> Path:
    """Fetch ``url`` to ``dest``, resuming partial transfers and verifying the result.

    Args:
        url: ``http(s)://`` (or ``file://``) address of the file.
        dest: Final location. Parents are created. It appears only once complete and verified.
        sha256: Expected lower-case hex digest. ``None`` skips the content check (the byte
            count is still checked against ``Content-Length``); pass it whenever it is known.
        resume: Continue an existing ``<dest>.part`` with a ``Range`` request. With ``False``
            any partial file is discarded first.
        progress: Show a rich progress bar on stderr (only when stderr is a terminal).
        timeout: Socket timeout in seconds for connecting and for each read.
        offline: Forbid network access; ``None`` defers to :func:`is_offline`.
        retries: Extra attempts after transient failures (resets, timeouts, short reads, 5xx).
            An attempt that got further than any before it does not count.
        chunk_size: Bytes read and written per step.

    Returns:
        ``dest``.

    Raises:
        WeightsError: offline and missing, checksum mismatch, a final HTTP error, or network
            failure after all retries. Every message names the URL and where to put the file.
    """
    dest = Path(dest)
    expected = sha256.lower().strip() if sha256 else None
    if expected is not None and (len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected)):
        # Catch a typo here rather than after downloading gigabytes.
        raise WeightsError(f"invalid sha256 {sha256!r} for {url}: expected 64 hex digits")
    stale_dest = False
    if dest.is_file():
        # The cheap path: an existing verified file never needs the network.
        if expected is None:
            return dest
        if sha256_file(dest) == expected:
            return dest
        stale_dest = True

    if is_offline(offline):
        note = "; the file there now has a different sha256" if stale_dest else ""
        raise WeightsError(
            "offline mode (HF_HUB_OFFLINE/IRC_OFFLINE/--offline): " + _place_hint(url, dest, expected) + note
        )

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsError(f"cannot create {dest.parent}: {err.strerror or err}") from err
    part = dest.with_name(dest.name + ".part")
    lock = dest.with_name(dest.name + ".lock")

    def on_wait() -> None:
        print(f"irc: waiting for another process downloading {dest.name} ({lock})", file=sys.stderr)

    with _locked(lock, on_wait) as waited:
        # Another process may have finished the file while we waited for the lock.
        if waited and dest.is_file() and (expected is None or sha256_file(dest) == expected):
            return dest
        if not resume:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        bar = _make_progress(progress, dest.name)
        try:
            state = _fetch_with_retries(url, part, lock, expected, timeout, retries, chunk_size, bar)
        except _Fatal as err:
            raise WeightsError(f"cannot download {url}: {err}; {_place_hint(url, dest, expected)}") from None
        finally:
            bar.close()
        state.catch_up(part, _part_size(part), chunk_size)
        got = state.hexdigest()
        if expected is not None and got != expected:
            # A bad .part must not be resumed next time: it would only fail again.
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise WeightsError(
                f"checksum mismatch for {url}: expected sha256 {expected}, got {got}; "
                "the partial download was deleted, run again to retry"
            )
        try:
            with open(part, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(part, dest)
        except OSError as err:
            raise WeightsError(f"cannot move {part} to {dest}: {err.strerror or err}") from err
        fsync_dir(dest.parent)
    return dest


class _Hash:
    """SHA-256 of the first ``length`` bytes of the ``.part`` file, carried across attempts.

    Hashing while writing means the common case (one clean transfer) reads the file only once;
    a resumed transfer hashes the bytes already on disk once, then continues incrementally.
    """

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.length = 0

    def catch_up(self, part: Path, upto: int, chunk_size: int) -> None:
        """Make the digest cover exactly the first ``upto`` bytes of ``part``."""
        if self.length == upto:
            return
        self.digest = hashlib.sha256()
        self.length = 0
        with contextlib.suppress(FileNotFoundError), open(part, "rb") as fh:
            while self.length < upto:
                block = fh.read(min(chunk_size, upto - self.length))
                if not block:
                    break
                self.digest.update(block)
                self.length += len(block)

    def update(self, block: bytes) -> None:
        self.digest.update(block)
        self.length += len(block)

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def _part_size(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0


def _fetch_with_retries(
    url: str, part: Path, lock: Path, expected: str | None, timeout: float, retries: int, chunk_size: int, bar
) -> _Hash:
    """Run attempts until ``part`` holds the whole file; raise :class:`_Fatal` otherwise."""
    state = _Hash()
    failures = 0
    best = _part_size(part)
    last_reason = "unknown error"
    while True:
        try:
            _attempt(url, part, lock, expected, timeout, chunk_size, bar, state)
            return state
        except _Restart:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            state = _Hash()
            failures += 1
            last_reason = "server could not continue the partial file"
        except _Transient as err:
            last_reason = str(err)
            size = _part_size(part)
            # Progress beyond everything seen so far means the link works, just badly: keep going.
            if size > best:
                best = size
                failures = 0
            else:
                failures += 1
        if failures > retries:
            raise _Fatal(f"{last_reason} (gave up after {retries + 1} attempts without progress)")
        if failures:
            time.sleep(min(_BACKOFF_BASE * 2 ** (failures - 1), _BACKOFF_MAX))


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": f"irc/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - the scheme is the caller's choice


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``"bytes 10-99/100"`` → ``(10, 100)``; ``"bytes */100"`` → ``(None, 100)``."""
    if not value:
        return None, None
    try:
        unit, _, spec = value.strip().partition(" ")
        if unit.lower() != "bytes":
            return None, None
        span, _, total = spec.partition("/")
        start = None if span.strip() == "*" else int(span.split("-")[0])
        return start, (None if total.strip() in ("", "*") else int(total))
    except ValueError:
        return None, None


def _attempt(
    url: str, part: Path, lock: Path, expected: str | None, timeout: float, chunk_size: int, bar, state: _Hash
) -> None:
    """One HTTP request that extends (or rewrites) ``part``; raises on anything short of complete."""
    offset = _part_size(part)
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:
            # The range starts at or after the end: the .part may already be the whole file.
            _, total = _parse_content_range(err.headers.get("Content-Range") if err.headers else None)
            if total is not None and total == offset:
                return
            if total is None and expected is not None:
                state.catch_up(part, offset, chunk_size)
                if state.hexdigest() == expected:
                    return
            raise _Restart() from None
        if err.code in _TRANSIENT_STATUS:
            raise _Transient(f"HTTP {err.code} {err.reason}") from None
        raise _Fatal(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, (OSError, socket.timeout)):
            raise _Transient(f"{reason}") from None
        raise _Fatal(str(reason)) from None
    except (OSError, http.client.HTTPException) as err:
        raise _Transient(f"{type(err).__name__}: {err}") from None
    except ValueError as err:  # malformed URL or unknown scheme
        raise _Fatal(str(err)) from None

    with response:
        status = getattr(response, "status", None) or 200  # file:// responses have no status
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                raise _Restart()
            if total is None and length is not None:
                total = offset + length
        elif status == 200:
            # Either a fresh start or a server that ignored Range: both mean "from byte zero".
            offset = 0
            total = length
        else:
            raise _Fatal(f"unexpected HTTP status {status}")

        try:
            if offset:
                state.catch_up(part, offset, chunk_size)
                fh: BinaryIO = open(part, "r+b")
                fh.seek(offset)
                fh.truncate()
            else:
                state.catch_up(part, 0, chunk_size)
                fh = open(part, "wb")
        except OSError as err:
            raise _Fatal(f"cannot write {part}: {err.strerror or err}") from None

        bar.start(total, offset)
        size = offset
        last_touch = time.monotonic()
        with fh:
            while True:
                try:
                    block = response.read(chunk_size)
                except (OSError, http.client.HTTPException) as err:
                    fh.flush()
                    raise _Transient(f"{type(err).__name__} after {size} bytes: {err}") from None
                if not block:
                    break
                try:
                    fh.write(block)
                except OSError as err:
                    raise _Fatal(f"cannot write {part}: {err.strerror or err}") from None
                state.update(block)
                size += len(block)
                bar.advance(len(block))
                if total is not None and size > total:
                    raise _Restart()
                now = time.monotonic()
                if now - last_touch > _LOCK_REFRESH:
                    # Tell waiting processes the owner is alive (see _lock_is_stale).
                    with contextlib.suppress(OSError):
                        os.utime(lock)
                    last_touch = now
        if total is not None and size < total:
            raise _Transient(f"connection closed after {size} of {total} bytes")
