"""Tests of irc.download against a local HTTP server that misbehaves on request.

The server runs on 127.0.0.1 in a thread, serves a generated 2 MB payload with Range support,
and can truncate, stall, ignore Range, corrupt the bytes or fail with a status. Every request
it sees is logged so the tests can assert what was (or was not) asked for.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import irc.download as dl
from irc.download import cache_dir, download, is_offline, sha256_file
from irc.errors import WeightsError

PAYLOAD = random.Random(1234).randbytes(2_000_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
CHUNK = 64 * 1024
TIMEOUT = 5.0

pytestmark = pytest.mark.usefixtures("time_limit")


@dataclass
class ServerState:
    """What the handler serves and how it misbehaves; mutated by the tests."""

    payload: bytes = PAYLOAD
    truncate: list[int] = field(default_factory=list)  # per request: body bytes sent before closing
    stall: list[tuple[int, float]] = field(default_factory=list)  # per request: (bytes, seconds) then close
    ignore_range: bool = False
    corrupt: bool = False
    status: int | None = None
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ranges(self) -> list[str | None]:
        with self.lock:
            return [rng for _, rng in self.requests]


class Handler(BaseHTTPRequestHandler):
    timeout = 10  # a stuck client cannot hold a server thread forever

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.path, rng))
            truncate = state.truncate.pop(0) if state.truncate else None
            stall = state.stall.pop(0) if state.stall else None
        if state.status is not None:
            self.send_error(state.status)
            return
        if self.path != "/file.bin":
            self.send_error(404)
            return
        body = state.payload
        if state.corrupt:
            body = bytes(b ^ 0xFF for b in body[:16]) + body[16:]
        start = 0
        if rng and not state.ignore_range:
            match = re.fullmatch(r"bytes=(\d+)-", rng)
            assert match, rng
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if truncate is not None:
            # Promise the full length, deliver less, hang up: what a dropped connection looks like.
            self.wfile.write(chunk[:truncate])
            self.wfile.flush()
            self.close_connection = True
            return
        if stall is not None:
            sent, seconds = stall
            self.wfile.write(chunk[:sent])
            self.wfile.flush()
            time.sleep(seconds)
            self.close_connection = True
            return
        self.wfile.write(chunk)


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    """No offline flags from the caller's shell, no real cache, no retry back-off delays."""
    for name in ("IRC_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IRC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(dl, "_BACKOFF_BASE", 0.0)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.state = ServerState()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    httpd.url = f"http://{host}:{port}/file.bin"  # type: ignore[attr-defined]
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def fetch(server, dest: Path, **kwargs) -> Path:
    kwargs.setdefault("sha256", PAYLOAD_SHA)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("chunk_size", CHUNK)
    return download(server.url, dest, **kwargs)


def assert_clean(dest: Path) -> None:
    """No leftovers next to the destination."""
    assert not dest.with_name(dest.name + ".part").exists()
    assert not dest.with_name(dest.name + ".lock").exists()


# --------------------------------------------------------------------------- success paths
def test_download_success_verifies_checksum(server, tmp_path):
    dest = tmp_path / "sub" / "file.bin"
    assert fetch(server, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert server.state.ranges() == [None]
    assert_clean(dest)


def test_download_without_checksum(server, tmp_path):
    dest = tmp_path / "file.bin"
    fetch(server, dest, sha256=None)
    assert sha256_file(dest) == PAYLOAD_SHA


def test_uppercase_checksum_accepted(server, tmp_path):
    dest = tmp_path / "file.bin"
    fetch(server, dest, sha256=PAYLOAD_SHA.upper())
    assert dest.read_bytes() == PAYLOAD


def test_existing_verified_dest_makes_no_request(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(PAYLOAD)
    assert fetch(server, dest) == dest
    assert server.state.requests == []


def test_existing_dest_without_checksum_makes_no_request(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"whatever")
    fetch(server, dest, sha256=None)
    assert server.state.requests == []
    assert dest.read_bytes() == b"whatever"


def test_existing_bad_dest_is_replaced(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"stale")
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.state.requests) == 1


# --------------------------------------------------------------------------- failures
def test_checksum_mismatch_removes_everything(server, tmp_path):
    server.state.corrupt = True
    dest = tmp_path / "file.bin"
    with pytest.raises(WeightsError) as info:
        fetch(server, dest)
    message = str(info.value)
    assert PAYLOAD_SHA in message
    got = hashlib.sha256(bytes(b ^ 0xFF for b in PAYLOAD[:16]) + PAYLOAD[16:]).hexdigest()
    assert got in message
    assert server.url in message
    assert not dest.exists()
    assert_clean(dest)


def test_corrupt_partial_file_is_discarded_after_mismatch(server, tmp_path):
    dest = tmp_path / "file.bin"
    part = dest.with_name("file.bin.part")
    part.write_bytes(b"\0" * 1000)  # wrong prefix: resuming it yields a bad file
    with pytest.raises(WeightsError, match="checksum mismatch"):
        fetch(server, dest)
    assert server.state.ranges() == ["bytes=1000-"]
    assert_clean(dest)
    fetch(server, dest)  # the next run starts from scratch and succeeds
    assert dest.read_bytes() == PAYLOAD


def test_not_found_is_not_retried(server, tmp_path):
    dest = tmp_path / "missing.bin"
    url = server.url.replace("file.bin", "nope.bin")
    with pytest.raises(WeightsError) as info:
        download(url, dest, sha256=PAYLOAD_SHA, progress=False, timeout=TIMEOUT)
    message = str(info.value)
    assert "404" in message and url in message and f"place it at {dest}" in message
    assert len(server.state.requests) == 1
    assert not dest.exists()


def test_server_errors_are_retried_then_reported(server, tmp_path):
    server.state.status = 503
    dest = tmp_path / "file.bin"
    with pytest.raises(WeightsError) as info:
        fetch(server, dest, retries=2)
    message = str(info.value)
    assert "503" in message and server.url in message and str(dest) in message and PAYLOAD_SHA in message
    assert len(server.state.requests) == 3
    assert not dest.exists()


def test_invalid_checksum_is_rejected_before_any_request(server, tmp_path):
    with pytest.raises(WeightsError, match="invalid sha256"):
        fetch(server, tmp_path / "file.bin", sha256="abc")
    assert server.state.requests == []


def test_connection_refused_is_reported(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    dest = tmp_path / "file.bin"
    url = f"http://127.0.0.1:{port}/file.bin"
    with pytest.raises(WeightsError) as info:
        download(url, dest, sha256=PAYLOAD_SHA, progress=False, timeout=2, retries=1)
    assert url in str(info.value) and f"place it at {dest}" in str(info.value)


# --------------------------------------------------------------------------- resume
def test_truncated_transfer_is_retried_with_range(server, tmp_path):
    server.state.truncate = [700_000]
    dest = tmp_path / "file.bin"
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.state.ranges() == [None, "bytes=700000-"]
    assert_clean(dest)


def test_repeated_truncation_keeps_making_progress(server, tmp_path):
    # More failures than `retries`, but each one gets further: that must not give up.
    server.state.truncate = [300_000] * 5
    dest = tmp_path / "file.bin"
    fetch(server, dest, retries=1)
    assert dest.read_bytes() == PAYLOAD
    assert server.state.ranges() == [None] + [f"bytes={300_000 * i}-" for i in range(1, 6)]


def test_stalled_transfer_times_out_and_resumes(server, tmp_path):
    server.state.stall = [(100_000, 2.0)]
    dest = tmp_path / "file.bin"
    fetch(server, dest, timeout=0.5)
    assert dest.read_bytes() == PAYLOAD
    ranges = server.state.ranges()
    assert ranges[0] is None and ranges[-1] is not None
    assert int(ranges[-1][len("bytes="):-1]) >= 100_000 - CHUNK


def test_existing_partial_file_is_resumed(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(PAYLOAD[:1_000_000])
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.state.ranges() == ["bytes=1000000-"]
    assert_clean(dest)


def test_resume_false_discards_partial_file(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(b"junk" * 100)
    fetch(server, dest, resume=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.state.ranges() == [None]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.state.ignore_range = True
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(PAYLOAD[:1_000_000])
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.state.ranges() == ["bytes=1000000-"]  # asked, got a 200 with everything


def test_server_ignoring_range_after_truncation(server, tmp_path):
    server.state.ignore_range = True
    server.state.truncate = [500_000]
    dest = tmp_path / "file.bin"
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.state.ranges() == [None, "bytes=500000-"]


def test_complete_partial_file_416_is_accepted(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(PAYLOAD)
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.state.ranges() == [f"bytes={len(PAYLOAD)}-"]
    assert_clean(dest)


def test_oversized_partial_file_restarts(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(PAYLOAD + b"extra")
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.state.ranges() == [f"bytes={len(PAYLOAD) + 5}-", None]


# --------------------------------------------------------------------------- offline
@pytest.mark.parametrize("how", ["flag", "IRC_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_makes_no_request_and_says_where(server, tmp_path, monkeypatch, how):
    if how != "flag":
        monkeypatch.setenv(how, "1")
    dest = tmp_path / "deep" / "file.bin"
    with pytest.raises(WeightsError) as info:
        fetch(server, dest, offline=True if how == "flag" else None)
    message = str(info.value)
    assert message.startswith("offline mode (HF_HUB_OFFLINE/IRC_OFFLINE/--offline): ")
    assert f"download {server.url} and place it at {dest} (sha256 {PAYLOAD_SHA})" in message
    assert server.state.requests == []
    assert not dest.parent.exists()


def test_offline_with_existing_verified_file_works(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dest = tmp_path / "file.bin"
    dest.write_bytes(PAYLOAD)
    assert fetch(server, dest) == dest
    assert server.state.requests == []


def test_explicit_online_beats_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv("IRC_OFFLINE", "yes")
    dest = tmp_path / "file.bin"
    fetch(server, dest, offline=False)
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("true", True), ("YES", True), ("0", False), ("", False), ("no", False)]
)
def test_is_offline_environment(monkeypatch, value, expected):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert is_offline() is expected
    assert is_offline(True) is True
    assert is_offline(False) is False


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("IRC_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("IRC_CACHE_DIR")
    assert cache_dir() == tmp_path / "b" / "irc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "irc"


# --------------------------------------------------------------------------- lock
def test_stale_lock_of_dead_process_is_broken(server, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.lock").write_text(f"{proc.pid} {socket.gethostname()}\n")
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert_clean(dest)


def test_waits_for_live_lock_holder_and_uses_its_result(server, tmp_path, capsys):
    dest = tmp_path / "file.bin"
    lock = dest.with_name("file.bin.lock")
    lock.write_text(f"{os.getpid()} {socket.gethostname()}\n")  # "another download" in progress

    def other_process_finishes() -> None:
        time.sleep(0.5)
        dest.write_bytes(PAYLOAD)
        lock.unlink()

    helper = threading.Thread(target=other_process_finishes)
    helper.start()
    fetch(server, dest)
    helper.join(timeout=5)
    assert server.state.requests == []
    assert "waiting for another process" in capsys.readouterr().err


# --------------------------------------------------------------------------- progress
def test_progress_bar_on_a_terminal(server, tmp_path, monkeypatch):
    class FakeTty(io.StringIO):
        def isatty(self) -> bool:
            return True

    fake = FakeTty()
    monkeypatch.setattr(sys, "stderr", fake)
    dest = tmp_path / "file.bin"
    fetch(server, dest, progress=True)
    assert dest.read_bytes() == PAYLOAD
    assert "file.bin" in fake.getvalue()
