"""Tests of irc.weights: manifest validation, resolution, verification and file I/O."""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import struct
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import irc
import irc.download as dl
from irc.errors import WeightsError
from irc.weights import (
    ResolvedWeights,
    WeightsEntry,
    default_entry,
    entry_location,
    find_entry,
    hub_url,
    load_manifest,
    load_weights,
    read_metadata,
    resolve_weights,
    save_weights,
    verify_entry,
    weights_dir,
)

REPO = Path(__file__).resolve().parents[1]
SHA_A = "a" * 64

pytestmark = pytest.mark.usefixtures("time_limit")


class Arbitrary:
    """A custom class: pickling an instance makes a checkpoint weights_only must refuse."""

    def __init__(self) -> None:
        self.value = 42


@pytest.fixture
def wdir(monkeypatch, tmp_path) -> Path:
    """An empty weights dir and cache, isolated from the user's environment."""
    root = tmp_path / "weights"
    root.mkdir()
    monkeypatch.setenv("IRC_WEIGHTS_DIR", str(root))
    monkeypatch.setenv("IRC_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("IRC_OFFLINE", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(dl, "_BACKOFF_BASE", 0.0)
    return root


def write_manifest(root: Path, body: str) -> Path:
    path = root / "manifest.toml"
    path.write_text(body)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def file_server(tmp_path):
    """A plain static-file server on 127.0.0.1 over ``tmp_path/served``."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    httpd.root = served  # type: ignore[attr-defined]
    httpd.base = f"http://{host}:{port}"  # type: ignore[attr-defined]
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- manifest
def test_shipped_manifest_is_valid_and_its_files_match(monkeypatch):
    """Every shipped file exists and has its sha256; every card exists."""
    monkeypatch.delenv("IRC_WEIGHTS_DIR", raising=False)
    assert weights_dir() == REPO / "weights"
    entries = load_manifest(REPO / "weights" / "manifest.toml")
    assert [e.name for e in load_manifest()] == [e.name for e in entries]
    for entry in entries:
        if entry.file:
            path = REPO / "weights" / entry.file
            assert path.is_file(), entry.name
            assert dl.sha256_file(path) == entry.sha256, entry.name
        if entry.card:
            assert (REPO / "weights" / entry.card).is_file(), entry.name


def test_weights_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("IRC_WEIGHTS_DIR", str(tmp_path))
    assert weights_dir() == tmp_path


def test_weights_dir_inside_installed_wheel(monkeypatch, tmp_path):
    monkeypatch.delenv("IRC_WEIGHTS_DIR", raising=False)
    package = tmp_path / "site-packages" / "irc"
    (package / "_weights").mkdir(parents=True)
    monkeypatch.setattr(irc, "__file__", str(package / "__init__.py"))
    assert weights_dir() == package / "_weights"


def test_missing_default_manifest_means_no_entries(wdir):
    assert load_manifest() == []
    with pytest.raises(WeightsError, match="not found"):
        load_manifest(wdir / "nope.toml")


def test_manifest_parsing(wdir):
    write_manifest(
        wdir,
        f"""
schema = 1

[[weights]]
name = "toy-denoise"
method = "toy"
task = "denoise"
file = "toy/denoise.safetensors"
sha256 = "{SHA_A}"
license = "MIT"
default = true
description = "toy weights"

[[weights]]
name = "toy-any"
method = "toy"
hub = "org/repo@v2/sub dir/model.safetensors"
sha256 = "{'b' * 64}"
default = true

[[weights]]
name = "other"
method = "other"
url = "https://example.invalid/w.pth"
sha256 = "{'c' * 64}"
license = "Apache-2.0"
default = true
""",
    )
    entries = load_manifest()
    assert [e.name for e in entries] == ["toy-denoise", "toy-any", "other"]
    first = entries[0]
    assert first == WeightsEntry(
        name="toy-denoise", method="toy", sha256=SHA_A, license="MIT", task="denoise",
        file="toy/denoise.safetensors", default=True, description="toy weights",
    )
    assert first.source_url() is None
    assert entries[1].license == "unknown"
    assert entries[1].source_url() == "https://huggingface.co/org/repo/resolve/v2/sub%20dir/model.safetensors"
    assert entries[2].source_url() == "https://example.invalid/w.pth"
    assert find_entry("other").method == "other"
    assert find_entry("missing") is None
    assert default_entry("toy", "denoise").name == "toy-denoise"
    assert default_entry("toy", "deblur").name == "toy-any"  # falls back to the task-less default
    assert default_entry("toy").name == "toy-any"
    assert default_entry("other").name == "other"
    assert default_entry("nobody") is None
    assert default_entry("toy", manifest=[first]).name == "toy-denoise"  # its only default


def test_hub_url(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hub_url("org/repo/a/b.safetensors") == "https://huggingface.co/org/repo/resolve/main/a/b.safetensors"
    assert hub_url("hf:org/repo@abc123/b.pth") == "https://huggingface.co/org/repo/resolve/abc123/b.pth"
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.local/")
    assert hub_url("org/repo/b.pth") == "http://mirror.local/org/repo/resolve/main/b.pth"
    with pytest.raises(WeightsError, match="invalid hub id"):
        hub_url("org/repo")


VALID = f'name = "x"\nmethod = "m"\nsha256 = "{SHA_A}"\nfile = "x.safetensors"\n'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (VALID + 'colour = "red"\n', r"unknown field\(s\) colour; valid fields: name, method, sha256, license"),
        ('name = "x"\nmethod = "m"\nfile = "x.pth"\n', r"missing required field\(s\): sha256"),
        (f'method = "m"\nsha256 = "{SHA_A}"\nfile = "x.pth"\n', r"missing required field\(s\): name"),
        (f'name = "x"\nsha256 = "{SHA_A}"\nfile = "x.pth"\n', r"missing required field\(s\): method"),
        (VALID.replace(SHA_A, SHA_A.upper()), "64 lower-case hex"),
        (VALID.replace(SHA_A, "abc"), "64 lower-case hex"),
        (VALID + "default = 1\n", "must be true or false"),
        (VALID + "task = 3\n", "'task' must be a string"),
        (VALID.replace('name = "x"', 'name = "a/b"'), "no '/'"),
        (VALID.replace('file = "x.safetensors"', 'file = "../x.safetensors"'), "relative to the weights directory"),
        (VALID.replace('file = "x.safetensors"\n', ""), "at least one of file, url or hub"),
        (VALID + 'url = "ftp://x/y"\n', "must start with http"),
        (VALID + 'hub = "org/repo"\n', "invalid hub id"),
    ],
)
def test_manifest_entry_errors(wdir, body, message):
    path = write_manifest(wdir, "[[weights]]\n" + body)
    with pytest.raises(WeightsError, match=message) as info:
        load_manifest()
    assert str(path) in str(info.value)
    assert "weights entry 1" in str(info.value)


def test_manifest_duplicate_name_and_default(wdir):
    write_manifest(wdir, f"[[weights]]\n{VALID}\n[[weights]]\n{VALID}")
    with pytest.raises(WeightsError, match="duplicate name 'x'"):
        load_manifest()
    second = VALID.replace('name = "x"', 'name = "y"')
    write_manifest(wdir, f"[[weights]]\n{VALID}default = true\n[[weights]]\n{second}default = true\n")
    with pytest.raises(WeightsError, match="'x' is already the default for method 'm'"):
        load_manifest()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("weights = [", "invalid TOML"),
        ("colour = 1\n", "unknown top-level key"),
        ("schema = 2\n", "schema 2 is not supported"),
        ("weights = 3\n", "array of tables"),
        ("weights = [1]\n", "must be a table"),
    ],
)
def test_manifest_file_errors(wdir, body, message):
    write_manifest(wdir, body)
    with pytest.raises(WeightsError, match=message):
        load_manifest()


# --------------------------------------------------------------------------- resolution
@pytest.fixture
def shipped(wdir) -> tuple[Path, bytes]:
    """A shipped file ``toy/w.bin`` listed as ``toy-w`` for method ``toy``."""
    data = os.urandom(4096)
    target = wdir / "toy" / "w.bin"
    target.parent.mkdir()
    target.write_bytes(data)
    write_manifest(
        wdir,
        f'[[weights]]\nname = "toy-w"\nmethod = "toy"\nfile = "toy/w.bin"\nsha256 = "{sha(data)}"\nlicense = "MIT"\n',
    )
    return target, data


def test_resolve_shipped_by_name(shipped):
    target, data = shipped
    resolved = resolve_weights("toy-w", method="toy")
    assert resolved == ResolvedWeights(path=target, entry=find_entry("toy-w"), sha256=sha(data))
    assert verify_entry(resolved.entry) == (True, f"{target}")


def test_resolve_detects_modified_shipped_file(shipped):
    target, data = shipped
    target.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # one byte changed (a fixed "!" was already there 1 time in 256)
    with pytest.raises(WeightsError, match="corrupt or modified") as info:
        resolve_weights("toy-w")
    assert str(target) in str(info.value)
    ok, message = verify_entry(find_entry("toy-w"))
    assert not ok and message.startswith("corrupt:")
    # verify=False trusts the file (and reports the manifest hash).
    assert resolve_weights("toy-w", verify=False).sha256 == sha(data)


def test_resolve_missing_shipped_file(shipped):
    target, _ = shipped
    target.unlink()
    with pytest.raises(WeightsError, match="shipped weights 'toy-w' are missing"):
        resolve_weights("toy-w")
    ok, message = verify_entry(find_entry("toy-w"))
    assert not ok and message.startswith("missing:")


def test_resolve_wrong_method(shipped):
    with pytest.raises(WeightsError, match="are for method 'toy', not 'other'"):
        resolve_weights("toy-w", method="other")


def test_resolve_unknown_name(shipped):
    with pytest.raises(WeightsError, match=r"unknown weights 'nope'.*known: toy-w"):
        resolve_weights("nope")


def test_missing_relative_path_under_an_existing_folder_is_not_a_hub_id(shipped, tmp_path, monkeypatch):
    from irc.errors import WeightsNotFoundError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights" / "lorun").mkdir(parents=True)
    with pytest.raises(WeightsNotFoundError, match="weights file not found") as err:
        resolve_weights("weights/lorun/missing.safetensors", offline=True)
    assert err.value.exit_code == 2
    # without such a folder, three segments with a suffix stay a hub id (offline: not downloaded)
    with pytest.raises(WeightsError, match="taken as a hub id"):
        resolve_weights("org/repo/missing.safetensors", offline=True)


def test_resolve_by_path(shipped, tmp_path):
    target, data = shipped
    # The shipped file by its path: recognised and verified.
    resolved = resolve_weights(target)
    assert resolved.entry is not None and resolved.entry.name == "toy-w"
    target.write_bytes(b"tampered")
    with pytest.raises(WeightsError, match="corrupt or modified"):
        resolve_weights(str(target))
    # An unrelated file: no entry, its own hash.
    other = tmp_path / "mine.pth"
    other.write_bytes(b"my weights")
    resolved = resolve_weights(str(other), method="anything")
    assert resolved == ResolvedWeights(other, None, sha(b"my weights"))
    # A copy of known weights elsewhere is reported as that entry.
    copy = tmp_path / "copy.bin"
    copy.write_bytes(data)
    assert resolve_weights(copy).entry.name == "toy-w"
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(str(tmp_path / "absent.pth"))
    with pytest.raises(WeightsError, match="not a file"):
        resolve_weights(tmp_path)


def test_resolve_local_safetensors_checks_stored_method(wdir, tmp_path):
    import torch

    path = save_weights(tmp_path / "w.safetensors", {"a": torch.zeros(2)}, {"method": "toy", "config": {}})
    assert resolve_weights(path, method="toy").entry is None
    with pytest.raises(WeightsError, match="for method 'toy', not 'other'"):
        resolve_weights(path, method="other")


def test_resolve_url_entry_downloads_into_cache(wdir, file_server, tmp_path):
    data = os.urandom(300_000)
    (file_server.root / "model.safetensors").write_bytes(data)
    url = f"{file_server.base}/model.safetensors"
    write_manifest(
        wdir,
        f'[[weights]]\nname = "remote"\nmethod = "toy"\nurl = "{url}"\nsha256 = "{sha(data)}"\nlicense = "MIT"\n',
    )
    entry = find_entry("remote")
    expected = tmp_path / "cache" / "weights" / "remote" / "model.safetensors"
    assert entry_location(entry) == expected
    assert verify_entry(entry) == (True, f"not downloaded (nothing to verify): {url} -> {expected}")
    with pytest.raises(WeightsError, match="not downloaded"):
        resolve_weights("remote", download_missing=False)

    resolved = resolve_weights("remote", method="toy")
    assert resolved == ResolvedWeights(expected, entry, sha(data))
    assert expected.read_bytes() == data
    # Cached now: works offline, by name and by URL.
    assert resolve_weights("remote", offline=True).path == expected
    assert resolve_weights(url, offline=True).entry == entry
    assert verify_entry(entry) == (True, f"{expected}")
    expected.unlink()
    assert verify_entry(entry, fetch=True) == (True, f"{expected} (downloaded)")
    assert expected.read_bytes() == data

    # A cached file that went bad is fetched again.
    expected.write_bytes(b"bad")
    assert resolve_weights("remote").path.read_bytes() == data


def test_resolve_url_entry_offline_names_destination(wdir, file_server, tmp_path):
    url = f"{file_server.base}/absent.pth"
    write_manifest(wdir, f'[[weights]]\nname = "r"\nmethod = "toy"\nurl = "{url}"\nsha256 = "{SHA_A}"\n')
    with pytest.raises(WeightsError) as info:
        resolve_weights("r", offline=True)
    dest = tmp_path / "cache" / "weights" / "r" / "absent.pth"
    assert f"download {url} and place it at {dest} (sha256 {SHA_A})" in str(info.value)


def test_resolve_plain_url(wdir, file_server, tmp_path):
    (file_server.root / "free.pth").write_bytes(b"free weights")
    url = f"{file_server.base}/free.pth"
    resolved = resolve_weights(url)
    assert resolved.entry is None and resolved.sha256 == sha(b"free weights")
    assert resolved.path.name == "free.pth" and (tmp_path / "cache") in resolved.path.parents
    assert resolve_weights(url, offline=True) == resolved  # cached


def test_resolve_hub_id_offline(wdir, tmp_path):
    # Offline with nothing cached: the message names the repository, the revision and the file.
    for spec in ("hf:org/repo/dir/w.safetensors", "org/repo/dir/w.safetensors", "org/repo@abc123/dir/w.safetensors"):
        with pytest.raises(WeightsError) as info:
            resolve_weights(spec, offline=True)
        message = str(info.value)
        revision = "abc123" if "@" in spec else "main"
        assert f"org/repo@{revision} is not in the Hugging Face cache" in message and "dir/w.safetensors" in message


def test_resolve_hub_entry_by_hub_id(wdir, tmp_path):
    write_manifest(wdir, f'[[weights]]\nname = "h"\nmethod = "toy"\nhub = "org/repo/w.pth"\nsha256 = "{SHA_A}"\n')
    with pytest.raises(WeightsError) as info:
        resolve_weights("hf:org/repo/w.pth", offline=True)
    assert "irc weights fetch h" in str(info.value) and "w.pth" in str(info.value)
    with pytest.raises(WeightsError, match="for method 'toy', not 'x'"):
        resolve_weights("hf:org/repo/w.pth", method="x", offline=True)


# --------------------------------------------------------------------------- file I/O
def test_save_load_safetensors_round_trip(tmp_path):
    import torch

    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {
        "weight": base.t(),  # non-contiguous
        "alias": base,  # shares storage with "weight"
        "bias": torch.ones(4, dtype=torch.float16),
    }
    config = {"channels": 64, "blocks": [2, 2], "name": "x"}
    path = save_weights(
        tmp_path / "out" / "w.safetensors", state, {"method": "toy", "config": config, "epochs": 3, "note": "hi"}
    )
    assert path.is_file()
    assert not any(p.name.endswith(".tmp") for p in path.parent.iterdir())
    loaded, meta = load_weights(path)
    assert set(loaded) == {"weight", "alias", "bias"}
    assert torch.equal(loaded["weight"], base.t()) and torch.equal(loaded["alias"], base)
    assert loaded["bias"].dtype == torch.float16
    assert meta["method"] == "toy"
    assert meta["config"] == config
    assert meta["epochs"] == "3" and meta["note"] == "hi"
    assert meta["irc_version"] == irc.__version__
    assert read_metadata(path) == meta


def test_save_weights_validation(tmp_path):
    import torch

    t = {"a": torch.zeros(1)}
    with pytest.raises(WeightsError, match="metadata lacks config"):
        save_weights(tmp_path / "w.safetensors", t, {"method": "toy"})
    with pytest.raises(WeightsError, match=r"\.safetensors only"):
        save_weights(tmp_path / "w.pth", t, {"method": "toy", "config": {}})
    with pytest.raises(WeightsError, match="not a tensor"):
        save_weights(tmp_path / "w.safetensors", {"a": 1}, {"method": "toy", "config": {}})
    assert not list(tmp_path.iterdir())


def test_load_pth_plain_and_nested(tmp_path):
    import torch

    state = {"conv.weight": torch.randn(2, 3), "conv.bias": torch.zeros(2)}
    plain = tmp_path / "plain.pth"
    torch.save(state, plain)
    loaded, meta = load_weights(plain)
    assert meta == {} and set(loaded) == set(state) and torch.equal(loaded["conv.weight"], state["conv.weight"])

    nested = tmp_path / "nested.ckpt"
    torch.save({"state_dict": state, "epoch": 7}, nested)
    loaded, _ = load_weights(nested)
    assert set(loaded) == set(state)


def test_load_pth_refuses_arbitrary_objects(tmp_path):
    import torch

    evil = tmp_path / "evil.pth"
    torch.save({"model": Arbitrary()}, evil)
    with pytest.raises(WeightsError, match="not a plain tensor checkpoint"):
        load_weights(evil)

    mixed = tmp_path / "mixed.pt"
    torch.save({"a": torch.zeros(1), "epoch": 3}, mixed)
    with pytest.raises(WeightsError, match="non-tensor entries epoch"):
        load_weights(mixed)


def test_load_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "none.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(WeightsError, match="not a"):
        load_weights(junk)
    odd = tmp_path / "w.npz"
    odd.write_bytes(b"x")
    with pytest.raises(WeightsError, match="unsupported weights format"):
        load_weights(odd)


def test_import_does_not_pull_in_torch():
    code = (
        "import sys, irc.weights, irc.download\n"
        "irc.weights.load_manifest()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'safetensors' not in sys.modules, 'safetensors imported'\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("IRC_WEIGHTS_DIR", None)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_save_weights_is_byte_reproducible_and_writes_once(tmp_path, monkeypatch):
    """The same tensors and metadata give the same bytes (safetensors orders its metadata by a
    hash map); the header is reordered in place, with no second copy of the data written."""
    import torch

    state = {name: torch.arange(i + 4, dtype=torch.float32) for i, name in enumerate("zyxwvu")}
    meta = {"method": "toy", "config": {"b": 1, "a": [1, 2]}, **{f"key{i}": f"value {i} é" for i in range(30)}}
    copies = []
    monkeypatch.setattr("shutil.copyfileobj", lambda *a, **k: copies.append(a))
    digests = {hashlib.sha256(save_weights(tmp_path / f"w{i}.safetensors", state, meta).read_bytes()).hexdigest() for i in range(4)}
    assert len(digests) == 1 and not copies
    raw = (tmp_path / "w0.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + size].decode()
    assert header.index('"__metadata__"') == 1 and header.index('"key0"') < header.index('"key1"') < header.index('"method"')
    assert not any(p.name.endswith((".raw", ".tmp")) for p in tmp_path.iterdir())


def test_a_header_of_another_length_is_rewritten_by_a_copy(tmp_path):
    """Should safetensors' JSON ever differ in length from Python's (another escaping), the file
    is copied once behind the reordered header: same bytes as the usual path."""
    import torch

    import irc.weights as weights

    path = save_weights(tmp_path / "w.safetensors", {"a": torch.ones(3), "b": torch.zeros(2, 2)}, {"method": "toy", "config": {}})
    expected = path.read_bytes()
    (size,) = struct.unpack("<Q", expected[:8])
    padded = tmp_path / "padded.safetensors"
    padded.write_bytes(struct.pack("<Q", size + 16) + expected[8 : 8 + size] + b" " * 16 + expected[8 + size :])
    assert load_weights(padded)[0].keys() == {"a", "b"}  # a valid file, with a longer header
    weights._canonicalise_header(padded)
    assert padded.read_bytes() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["padded.safetensors", "w.safetensors"]
