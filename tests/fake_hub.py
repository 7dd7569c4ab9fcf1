"""A tiny fake Hugging Face Hub (stdlib only) good enough for huggingface_hub 2.4.0.

Serves, from an in-memory ``{repo_id: {commit_sha: {filename: bytes}}}`` dict:

* ``HEAD|GET /{repo_id}/resolve/{revision}/{path}``      (hf_hub_download)
* ``GET /api/models/{repo_id}[/revision/{revision}]``      (HfApi.model_info / repo_info, snapshot_download
                                                           calls it only when revision is NOT a 40-hex sha)
* ``GET /api/models/{repo_id}/tree/{revision}[/{path}]``  (list_repo_tree, used by snapshot_download)
* ``GET /api/agent-harnesses``                            (agent detection in the user-agent builder)
* ``GET /cdn/{sha256}`` on a *second* port ("CDN" origin)  (LFS redirect target)

Every request is appended to ``hub.requests`` (method, path, headers, server) so a test can assert that no
network call happened. ``hub.interrupt(filename, after_bytes=N, times=1)`` makes the next GET(s) of that file
advertise the full Content-Length but close the socket after N body bytes (a dropped connection).

Usage::

    with FakeHub({"org/model": {sha: {"config.json": b"{}"}}}) as hub:
        hf_hub_download("org/model", "config.json", revision=sha, endpoint=hub.url, cache_dir=tmp)
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".gguf", ".msgpack", ".h5")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)$")


def git_blob_sha1(data: bytes) -> str:
    """The git OID of a blob: what the Hub sends as ETag for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CIHeaders(dict):
    """Case-insensitive header dict (keys stored lower-cased)."""

    def __init__(self, items=()):
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default=None):
        return super().get(key.lower(), default)


@dataclass
class LoggedRequest:
    server: str  # "hub" or "cdn"
    method: str
    path: str  # path + query, unquoted
    headers: CIHeaders


@dataclass
class _Interruption:
    after_bytes: int
    times: int


class FakeHub:
    def __init__(
        self,
        repos: dict[str, dict[str, dict[str, bytes]]],
        refs: dict[str, dict[str, str]] | None = None,
        *,
        lfs_suffixes: tuple[str, ...] = LFS_SUFFIXES,
        redirect_lfs: bool = True,
    ) -> None:
        self.repos = repos
        # branch/tag -> sha. Default: "main" points at the last commit inserted for each repo.
        self.refs = refs if refs is not None else {r: {"main": list(c)[-1]} for r, c in repos.items() if c}
        self.lfs_suffixes = lfs_suffixes
        self.redirect_lfs = redirect_lfs
        self.requests: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._interruptions: dict[str, _Interruption] = {}
        self._hub: ThreadingHTTPServer | None = None
        self._cdn: ThreadingHTTPServer | None = None
        self._ports: tuple[int, int] | None = None  # kept after stop() so `url` still names the dead server

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeHub":
        self._hub = _make_server(self, "hub")
        self._cdn = _make_server(self, "cdn")  # distinct port => distinct origin, like a real CDN
        self._ports = (self._hub.server_address[1], self._cdn.server_address[1])
        for srv in (self._hub, self._cdn):
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        for srv in (self._hub, self._cdn):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        self._hub = self._cdn = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._ports is not None, "server never started"
        return f"http://127.0.0.1:{self._ports[0]}"

    @property
    def cdn_url(self) -> str:
        assert self._ports is not None, "server never started"
        return f"http://127.0.0.1:{self._ports[1]}"

    # ------------------------------------------------------------------ test helpers
    def interrupt(self, filename: str, after_bytes: int, times: int = 1) -> None:
        """Drop the connection after `after_bytes` body bytes on the next `times` GETs of `filename`."""
        with self._lock:
            self._interruptions[filename] = _Interruption(after_bytes, times)

    def _take_interruption(self, filename: str) -> int | None:
        with self._lock:
            it = self._interruptions.get(filename)
            if it is None or it.times <= 0:
                return None
            it.times -= 1
            return it.after_bytes

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def log(self, server: str, method: str, path: str, headers) -> None:
        with self._lock:
            self.requests.append(LoggedRequest(server, method, path, CIHeaders(headers)))

    def calls(self, method: str | None = None, contains: str = "") -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    # ------------------------------------------------------------------ model
    def is_lfs(self, filename: str) -> bool:
        return filename.endswith(self.lfs_suffixes)

    def resolve_revision(self, repo_id: str, revision: str) -> str | None:
        commits = self.repos[repo_id]
        if revision in commits:
            return revision
        return self.refs.get(repo_id, {}).get(revision)

    def blob_by_sha256(self, digest: str) -> bytes | None:
        for commits in self.repos.values():
            for files in commits.values():
                for data in files.values():
                    if sha256(data) == digest:
                        return data
        return None

    def tree_entries(self, repo_id: str, sha: str, recursive: bool, prefix: str = "") -> list[dict]:
        files = self.repos[repo_id][sha]
        prefix = prefix.strip("/")
        base = prefix + "/" if prefix else ""
        out: list[dict] = []
        dirs: set[str] = set()
        for name in sorted(files):
            if not name.startswith(base):
                continue
            rel = name[len(base) :]
            parts = rel.split("/")
            for i in range(1, len(parts)):  # parent directories
                if recursive or i == 1:
                    dirs.add(base + "/".join(parts[:i]))
            if not recursive and len(parts) > 1:
                continue
            data = files[name]
            entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": name}
            if self.is_lfs(name):
                entry["lfs"] = {"oid": sha256(data), "size": len(data), "pointerSize": 134}
            out.append(entry)
        out += [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d} for d in dirs]
        return sorted(out, key=lambda e: e["path"])


def _make_server(hub: FakeHub, role: str) -> ThreadingHTTPServer:
    handler = type(f"_{role.title()}Handler", (_Handler,), {"hub": hub, "role": role})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    return srv


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the Hub; every response carries Content-Length
    hub: FakeHub
    role: str

    def log_message(self, *args) -> None:  # silence stderr
        pass

    # ------------------------------------------------------------------ plumbing
    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _dispatch(self, head: bool) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.hub.log(self.role, self.command, unquote(self.path), self.headers.items())
        try:
            if self.role == "cdn":
                return self._cdn(path, head)
            if path == "/api/agent-harnesses":
                return self._json({"standardEnvVars": [], "harnesses": {}}, head)
            if path.startswith("/api/models/"):
                return self._api(path[len("/api/models/") :], query, head)
            if "/resolve/" in path:
                return self._resolve(split.path, head)
            self._error(404, None, "Not Found", head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(self, status: int, headers: dict[str, str], body: bytes, head: bool) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, obj, head: bool, extra: dict[str, str] | None = None) -> None:
        self._send(200, {"Content-Type": "application/json", **(extra or {})}, json.dumps(obj).encode(), head)

    def _error(self, status: int, code: str | None, msg: str, head: bool, extra: dict[str, str] | None = None):
        headers = {"Content-Type": "application/json", "X-Error-Message": msg, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, headers, json.dumps({"error": msg}).encode(), head)

    def _repo_split(self, parts: list[str], marker: str) -> tuple[str, list[str]] | None:
        """Find `<repo_id>/<marker>/<rest...>` where repo_id is a known repo (supports 1- or 2-segment ids)."""
        for i, p in enumerate(parts):
            if p == marker and "/".join(parts[:i]) in self.hub.repos:
                return "/".join(parts[:i]), parts[i + 1 :]
        return None

    # ------------------------------------------------------------------ /api/models/...
    def _api(self, rest: str, query: dict[str, str], head: bool) -> None:
        parts = rest.strip("/").split("/")
        if "/".join(parts) in self.hub.repos:  # /api/models/{repo_id}  => main
            return self._model_info("/".join(parts), "main", head)
        for marker in ("revision", "tree"):
            found = self._repo_split(parts, marker)
            if found is None:
                continue
            repo_id, tail = found
            revision, sub = (tail[0], "/".join(tail[1:])) if tail else ("main", "")
            if marker == "revision":
                return self._model_info(repo_id, revision, head)
            sha = self.hub.resolve_revision(repo_id, revision)
            if sha is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
            recursive = query.get("recursive", "false").lower() in ("1", "true")
            return self._json(self.hub.tree_entries(repo_id, sha, recursive, sub), head)
        self._error(401, "RepoNotFound", "Repository not found", head)

    def _model_info(self, repo_id: str, revision: str, head: bool) -> None:
        sha = self.hub.resolve_revision(repo_id, revision)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        files = self.hub.repos[repo_id][sha]
        info = {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": sha,
            "private": False,
            "gated": False,
            "disabled": False,
            "tags": [],
            "lastModified": "2024-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": name} for name in sorted(files)],
        }
        self._json(info, head)

    # ------------------------------------------------------------------ /{repo_id}/resolve/{rev}/{file}
    def _resolve(self, raw_path: str, head: bool) -> None:
        # Split the *raw* path first: the revision is quoted with safe="" (refs%2Fpr%2F1 stays one segment).
        raw_parts = raw_path.strip("/").split("/")
        parts = [unquote(p) for p in raw_parts]
        found = self._repo_split(parts, "resolve")
        if found is None:
            return self._error(401, "RepoNotFound", "Repository not found", head)
        repo_id, tail = found
        if len(tail) < 2:
            return self._error(404, "EntryNotFound", "Entry not found", head)
        revision, filename = tail[0], "/".join(tail[1:])
        sha = self.hub.resolve_revision(repo_id, revision)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        files = self.hub.repos[repo_id][sha]
        if filename not in files:
            # X-Repo-Commit on the 404 lets the client cache the non-existence under .no_exist/<sha>/
            return self._error(404, "EntryNotFound", "Entry not found", head, {"X-Repo-Commit": sha})
        data = files[filename]
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if self.hub.is_lfs(filename):
            digest = sha256(data)
            headers.update({"X-Linked-Etag": f'"{digest}"', "X-Linked-Size": str(len(data)), "ETag": f'"{digest}"'})
            if self.hub.redirect_lfs:
                headers["Location"] = f"{self.hub.cdn_url}/cdn/{digest}"
                return self._send(302, headers, b"", head)
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        self._serve_bytes(data, headers, head, interrupt_key=filename)

    # ------------------------------------------------------------------ CDN
    def _cdn(self, path: str, head: bool) -> None:
        m = re.fullmatch(r"/cdn/([0-9a-f]{64})", path)
        data = self.hub.blob_by_sha256(m.group(1)) if m else None
        if data is None:
            return self._error(404, None, "Not Found", head)
        # Interruptions are keyed by repo filename; look it up from the blob.
        name = next(
            (f for c in self.hub.repos.values() for fs in c.values() for f, d in fs.items() if d is data), ""
        )
        self._serve_bytes(data, {"ETag": f'"{m.group(1)}"', "Accept-Ranges": "bytes"}, head, interrupt_key=name)

    # ------------------------------------------------------------------ body + Range
    def _serve_bytes(self, data: bytes, headers: dict[str, str], head: bool, interrupt_key: str) -> None:
        total = len(data)
        status, start, end = 200, 0, total - 1
        rng = self.headers.get("Range")
        if rng and not head:
            m = _RANGE_RE.fullmatch(rng.strip())
            if m is None or (not m.group(1) and not m.group(2)):
                return self._error(416, None, "Bad range", head, {"Content-Range": f"bytes */{total}"})
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
            else:  # suffix range bytes=-N
                start = max(total - int(m.group(2)), 0)
            if start >= total or start > end:
                return self._error(416, None, "Range not satisfiable", head, {"Content-Range": f"bytes */{total}"})
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{total}"}
        body = data[start : end + 1]
        headers = {**headers, "Content-Length": str(len(body))}
        cut = None if head else self.hub._take_interruption(interrupt_key)
        if cut is None:
            return self._send(status, headers, body, head)
        # Simulated network drop: promise len(body) bytes, send `cut`, then kill the connection.
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
