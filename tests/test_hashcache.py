"""A large file's sha256 is remembered until the file changes (irc.hashcache)."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from irc import hashcache
from irc.hashcache import file_sha256, rehashing


@pytest.fixture
def cached(tmp_path, monkeypatch):
    """A cache in tmp_path, every file large enough to be remembered and old enough to be
    settled (the clock runs 10 s ahead), and a list of the reads."""
    monkeypatch.setenv("IRC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(hashcache, "_MIN_CACHED_BYTES", 0)
    monkeypatch.setattr(hashcache, "_now_ns", lambda: time.time_ns() + 10_000_000_000)
    reads = []
    real = hashcache._digest
    monkeypatch.setattr(hashcache, "_digest", lambda fh: reads.append(fh.name) or real(fh))
    return reads


def _next_tick() -> None:
    """Let the kernel's file-time clock move on (it may advance once per tick, up to 10 ms), so
    that a change made in the test carries a later time than the write before it: the same
    guarantee the settled rule gives real use (module docstring)."""
    time.sleep(0.05)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_unchanged_file_is_read_once(tmp_path, cached):
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 1000)
    assert file_sha256(f) == file_sha256(f) == _sha(b"a" * 1000)
    assert len(cached) == 1
    assert len(list((tmp_path / "cache" / "file-hashes").iterdir())) == 1


def test_a_symlink_shares_its_target_entry(tmp_path, cached):
    """The hub cache's snapshot files are symlinks to blobs: one entry per blob."""
    f = tmp_path / "blob"
    f.write_bytes(b"x" * 10)
    link = tmp_path / "link"
    link.symlink_to(f)
    assert file_sha256(f) == file_sha256(link) == _sha(b"x" * 10)
    assert len(cached) == 1


@pytest.mark.parametrize("change", ["rewrite same size", "append", "old mtime restored", "replaced by rename"])
def test_any_change_is_read_again(tmp_path, cached, change):
    """Same size and even the old modification time put back (touch -d) are not enough to reuse
    a hash: the change time moves with every write."""
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 1000)
    first = file_sha256(f)
    before = f.stat()
    _next_tick()
    if change == "rewrite same size":
        f.write_bytes(b"b" * 1000)
        expected = b"b" * 1000
    elif change == "append":
        with open(f, "ab") as fh:
            fh.write(b"c")
        expected = b"a" * 1000 + b"c"
    elif change == "old mtime restored":
        with open(f, "r+b") as fh:
            fh.write(b"z")
        os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))
        expected = b"z" + b"a" * 999
    else:
        other = tmp_path / "new.bin"
        other.write_bytes(b"d" * 1000)
        os.replace(other, f)
        expected = b"d" * 1000
    assert f.stat().st_size == len(expected)
    assert file_sha256(f) == _sha(expected) != first
    assert len(cached) == 2


def test_rehashing_reads_every_file_and_refreshes(tmp_path, cached):
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 100)
    file_sha256(f)
    with rehashing():
        assert file_sha256(f) == _sha(b"a" * 100)
    assert len(cached) == 2
    file_sha256(f)
    assert len(cached) == 2


def test_a_forged_entry_for_another_state_is_ignored(tmp_path, cached):
    """An entry is used only when every recorded field matches the file now."""
    import json

    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 100)
    file_sha256(f)
    (entry,) = (tmp_path / "cache" / "file-hashes").iterdir()
    record = json.loads(entry.read_text())
    record.update(sha256="0" * 64, ctime_ns=record["ctime_ns"] - 1)
    entry.write_text(json.dumps(record))
    assert file_sha256(f) == _sha(b"a" * 100)
    entry.write_text("not json")
    assert file_sha256(f) == _sha(b"a" * 100)
    assert len(cached) == 3


def test_an_unwritable_cache_only_costs_time(tmp_path, monkeypatch, cached):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder would be")
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 100)
    assert file_sha256(f) == file_sha256(f) == _sha(b"a" * 100)
    assert len(cached) == 2


def test_a_file_changed_just_now_is_not_remembered(tmp_path, monkeypatch):
    """Two writes within one tick of a coarse file clock can leave the same times: a file whose
    last change is under two seconds old is hashed but not remembered (as git's racy check)."""
    monkeypatch.setenv("IRC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(hashcache, "_MIN_CACHED_BYTES", 0)
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 100)
    assert file_sha256(f) == _sha(b"a" * 100)
    assert not (tmp_path / "cache" / "file-hashes").exists()
    monkeypatch.setattr(hashcache, "_now_ns", lambda: time.time_ns() + 10_000_000_000)
    file_sha256(f)
    assert len(list((tmp_path / "cache" / "file-hashes").iterdir())) == 1


def test_small_files_are_always_read(tmp_path, monkeypatch):
    monkeypatch.setenv("IRC_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "small.bin"
    f.write_bytes(b"a")
    assert file_sha256(f) == _sha(b"a")
    assert not (tmp_path / "cache").exists()


def test_weights_verify_reads_every_byte(tmp_path, cached, monkeypatch):
    """A load trusts the remembered hash of an unchanged file; `irc weights verify` reads it
    again, so bytes changed below the file system (bit rot, simulated here by an entry that
    remembers the good hash for bad bytes) are caught, and later loads see it too."""
    import json

    from typer.testing import CliRunner

    from irc.cli import app
    from irc.errors import WeightsError
    from irc.weights import resolve_weights

    good = b"weights" * 100
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"rotten!" * 100)
    (tmp_path / "manifest.toml").write_text(f'[[weights]]\nname = "w"\nmethod = "tiny"\nfile = "w.safetensors"\nsha256 = "{_sha(good)}"\n')
    monkeypatch.setenv("IRC_WEIGHTS_DIR", str(tmp_path))
    file_sha256(weights)
    (entry,) = (tmp_path / "cache" / "file-hashes").iterdir()
    entry.write_text(json.dumps({**json.loads(entry.read_text()), "sha256": _sha(good)}))
    assert resolve_weights("w").sha256 == _sha(good)  # the load trusts the entry
    result = CliRunner().invoke(app, ["weights", "verify", "w"])
    assert result.exit_code == 1 and "corrupt" in result.output, result.output
    with pytest.raises(WeightsError, match="corrupt or modified"):
        resolve_weights("w")  # verify refreshed the entry
