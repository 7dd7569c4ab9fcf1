"""Hugging Face hub files and repositories, through ``huggingface_hub``, verified by irc.

``huggingface_hub`` does the transfer: its cache (``HF_HUB_CACHE``, shared with diffusers and
transformers, so a base model downloaded by either is reused), resumable downloads, file locks,
``HF_ENDPOINT`` for mirrors, and ``local_files_only`` offline. irc adds what the library does
not do:

* **Verification of every file we name.** Files with a published sha256 in the manifest are
  checked against it. Where no hash could be computed when the manifest was written (the
  third-party HYPIR and SD2.1 files: irc's developers had no network), the revision is pinned
  where it is known, and the sha256 of each file is **recorded at its first download** (in
  ``cache_dir()/hub-hashes/``) and checked at every later use: trust on first use, so a file
  that is changed in the cache afterwards is caught. The first download says so; nothing is
  skipped silently. A large file's hash is remembered until the file changes
  (:mod:`irc.hashcache`: a HYPIR load would otherwise re-read 5 GB each time), so damage that
  keeps a file's times (bit rot) is caught by ``irc weights verify``, which re-reads everything.
* **Offline messages that say what to place where** (``--offline``, ``IRC_OFFLINE=1`` or
  ``HF_HUB_OFFLINE=1``): the repository, revision and file names, and the command that fetches
  them on a connected machine.
* **No network, no wait.** When the hub's host name does not resolve (a laptop on a train, a
  cluster node without DNS), the library would retry for about 25 s before giving up; irc looks
  the name up once, then uses the cache alone (what is cached still works) or says at once that
  the hub is out of reach and what to fetch.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from irc.download import cache_dir, is_offline
from irc.errors import WeightsError
from irc.hashcache import file_sha256

__all__ = ["hub_file", "hub_snapshot", "recorded_hashes"]


def _quiet() -> None:
    from huggingface_hub.utils import disable_progress_bars

    if not sys.stderr.isatty():
        disable_progress_bars()


def _record_path(repo_id: str, revision: str) -> Path:
    return cache_dir() / "hub-hashes" / repo_id.replace("/", "--") / f"{revision}.json"


def recorded_hashes(repo_id: str, revision: str) -> dict[str, str]:
    """The sha256 recorded at the first download of each file of ``repo_id`` at ``revision``."""
    path = _record_path(repo_id, revision)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _check_or_record(repo_id: str, revision: str, files: dict[str, Path], expected: dict[str, str] | None = None) -> dict[str, str]:
    """Verify ``files`` against published or recorded hashes; record the unknown ones."""
    from irc.atomic import atomic_write_text

    record = recorded_hashes(repo_id, revision)
    new: list[str] = []
    hashes: dict[str, str] = {}
    for name, path in files.items():
        got = hashes[name] = file_sha256(path)
        want = (expected or {}).get(name) or record.get(name)
        if want is None:
            record[name] = got
            new.append(name)
        elif got != want:
            source = "the manifest" if (expected or {}).get(name) else f"its first download (recorded in {_record_path(repo_id, revision)})"
            raise WeightsError(
                f"{repo_id}@{revision}/{name} at {path} is corrupt or modified: sha256 {got}, {source} says {want}; "
                f"delete it and fetch again (irc weights fetch)"
            )
    if new:
        target = _record_path(repo_id, revision)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, json.dumps(record, indent=2, sort_keys=True) + "\n")
        print(
            f"irc: recorded the sha256 of {len(new)} file(s) of {repo_id}@{revision[:12]} at their first download "
            f"(no published hash; later uses are checked against it): {target}",
            file=sys.stderr,
        )
    return hashes


def _offline_error(repo_id: str, revision: str, names: Sequence[str], fetch: str, err: BaseException | None) -> WeightsError:
    from huggingface_hub import constants

    listed = ", ".join(names[:6]) + (" ..." if len(names) > 6 else "")
    reason = f" ({type(err).__name__})" if err is not None else ""
    return WeightsError(
        f"{repo_id}@{revision} is not in the Hugging Face cache{reason} and downloads are off (--offline, IRC_OFFLINE or "
        f"HF_HUB_OFFLINE): on a connected machine run `{fetch}` and copy {constants.HF_HUB_CACHE} here, or pass a local "
        f"folder; files needed: {listed}"
    )


def _hub_out_of_reach() -> str | None:
    """Why the hub cannot be reached at all (its host name does not exist for this machine's
    resolver), else ``None``.

    Only a definite "no such name" counts: a temporary resolver failure or a host that resolves
    but does not answer may pass, which the library's own retries are for; and behind a proxy
    (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY``, not bypassed by ``NO_PROXY``) the proxy
    resolves the name, so nothing is decided here."""
    import urllib.request
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    parts = urlsplit(constants.ENDPOINT)
    if not parts.hostname:
        return None
    proxies = urllib.request.getproxies()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(parts.hostname):
        return None
    try:
        socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror as err:
        definite = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
        return f"{parts.hostname} does not resolve: {err.strerror or err}" if err.errno in definite else None
    except (OSError, UnicodeError):
        return None
    return None


def _unreachable_error(what: str, reason: str, fetch: str) -> WeightsError:
    from huggingface_hub import constants

    return WeightsError(
        f"cannot download {what}: the Hugging Face hub is out of reach ({reason}) and it is not in the cache "
        f"{constants.HF_HUB_CACHE}; connect and retry, set HF_ENDPOINT to a mirror, or run `{fetch}` on a connected "
        f"machine and copy that cache here"
    )


def hub_file(repo_id: str, filename: str, *, revision: str | None = None, sha256: str | None = None, offline: bool | None = None, fetch_hint: str = "irc weights fetch") -> tuple[Path, str, str]:
    """One file of a hub repository, downloaded into the shared cache if needed, and verified.

    Returns:
        ``(path, sha256, commit)``: the cached file, its verified hash and the commit it came from.

    Raises:
        WeightsError: offline with nothing cached, a failed download, or a hash mismatch.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    _quiet()
    rev = revision or "main"
    unreachable = None if is_offline(offline) else _hub_out_of_reach()
    try:
        path = Path(hf_hub_download(repo_id, filename, revision=rev, local_files_only=is_offline(offline) or bool(unreachable)))
    except LocalEntryNotFoundError as err:
        if is_offline(offline):
            raise _offline_error(repo_id, rev, [filename], fetch_hint, None) from None
        if unreachable:
            raise _unreachable_error(f"{repo_id}@{rev}/{filename}", unreachable, fetch_hint) from None
        raise WeightsError(f"cannot download {repo_id}@{rev}/{filename}: {err}") from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise WeightsError(f"cannot download {repo_id}@{rev}/{filename}: {str(err).splitlines()[0]}") from None
    commit = path.parent.name if path.parent.parent.name == "snapshots" else rev
    hashes = _check_or_record(repo_id, commit, {filename: path}, {filename: sha256} if sha256 else None)
    return path, hashes[filename], commit


def hub_snapshot(
    repo_id: str, *, revision: str | None = None, allow_patterns: Sequence[str] | None = None, offline: bool | None = None,
    fetch_hint: str = "irc weights fetch", expected: dict[str, str] | None = None,
) -> Path:
    """A (partial) snapshot of a hub repository in the shared cache, every file verified:
    against ``expected`` (file path in the repository -> published sha256) where given, else
    against the hash recorded at its first download.

    Returns:
        The snapshot folder (diffusers and transformers load from it).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    _quiet()
    rev = revision or "main"
    unreachable = None if is_offline(offline) else _hub_out_of_reach()
    try:
        folder = Path(snapshot_download(
            repo_id, revision=rev, allow_patterns=list(allow_patterns) if allow_patterns else None, local_files_only=is_offline(offline) or bool(unreachable)
        ))  # fmt: skip
    except LocalEntryNotFoundError:
        if is_offline(offline):
            raise _offline_error(repo_id, rev, list(allow_patterns or ["(all files)"]), fetch_hint, None) from None
        if unreachable:
            raise _unreachable_error(f"{repo_id}@{rev}", unreachable, fetch_hint) from None
        raise WeightsError(f"cannot download {repo_id}@{rev}: not found in the cache and the hub gave no answer") from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        hint = ""
        if "404" in str(err) or "not found" in str(err).lower():
            hint = "; if the repository moved, pass a mirror or a local copy with --base-model"
        raise WeightsError(f"cannot download {repo_id}@{rev}: {str(err).splitlines()[0]}{hint}") from None
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    commit = folder.name
    _check_or_record(repo_id, commit, files, expected)
    return folder
