"""`irc weights average`: the weighted mean of weights files of one network, checked end to end."""

from __future__ import annotations

import json

import pytest
import torch

from irc.averaging import average_weights, parse_ratios
from irc.errors import UsageError, WeightsError
from irc.methods.tur import TUR
from irc.weights import load_weights, read_metadata, save_weights

SMALL = {"backbone": "convunet", "width": 8, "enc_blocks": [1, 1, 1], "middle_blocks": 1, "dec_blocks": [1, 1, 1],
         "condition": ["auto", "noise"]}  # fmt: skip


def _weights(tmp_path, name, seed, init_from="", **config):
    torch.manual_seed(seed)
    method = TUR.from_config({**SMALL, **config})
    with torch.no_grad():
        for p in method.network.parameters():
            p.add_(0.1 * torch.randn_like(p))
    meta = {**method.metadata(), "name": "tur-small", "steps": str(100 * (seed + 1))}
    meta["config"] = {**meta["config"], "init_from": init_from}  # as a file written before Method.metadata cleared it
    return save_weights(tmp_path / f"{name}.safetensors", method.state_dict(), meta), method


def test_the_average_is_the_weighted_mean_and_loads_as_the_method(tmp_path):
    from irc.restore import load_method

    a, net_a = _weights(tmp_path, "a", 0)
    b, net_b = _weights(tmp_path, "b", 1, init_from=str(a))  # a continuation names its start: still one network
    assert read_metadata(b)["config"]["init_from"] == str(a)
    state, meta = average_weights([a, b], parse_ratios("1,3", 2))
    save_weights(tmp_path / "avg.safetensors", state, meta)
    sa, sb = net_a.state_dict(), net_b.state_dict()
    for key, value in state.items():
        assert value.dtype == sa[key].dtype
        torch.testing.assert_close(value, 0.25 * sa[key] + 0.75 * sb[key], rtol=0, atol=1e-6)
    # an equal average of float32 files is exactly their float32 midpoint
    half, _ = average_weights([a, b], parse_ratios(None, 2))
    assert all(torch.equal(half[k], ((sa[k].double() + sb[k].double()) / 2).float()) for k in half)

    written = read_metadata(tmp_path / "avg.safetensors")
    assert written["method"] == "tur" and written["name"] == "tur-small" and written["config"]["init_from"] == ""
    sources = json.loads(written["averaged_from"])
    assert [(s["file"], s["share"], s["steps"]) for s in sources] == [("a.safetensors", 0.25, "100"), ("b.safetensors", 0.75, "200")]
    method = load_method("tur", str(tmp_path / "avg.safetensors"), task="auto", device="cpu", dtype="fp32", offline=True)
    x = torch.rand(1, 3, 24, 24)
    expected = TUR.from_config(SMALL)
    expected.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(method.restore(x, task="auto"), expected.restore(x, task="auto"))


def test_files_of_different_networks_or_methods_are_refused(tmp_path):
    a, _ = _weights(tmp_path, "a", 0)
    wide, _ = _weights(tmp_path, "wide", 1, width=12)
    with pytest.raises(WeightsError, match="config differs in width"):
        average_weights([a, wide], [0.5, 0.5])
    state, meta = load_weights(a)
    save_weights(tmp_path / "other.safetensors", state, {**meta, "method": "lorun"})
    with pytest.raises(WeightsError, match="only one method's weights average"):
        average_weights([a, tmp_path / "other.safetensors"], [0.5, 0.5])
    save_weights(tmp_path / "short.safetensors", dict(list(state.items())[1:]), meta)
    with pytest.raises(WeightsError, match="other tensors"):
        average_weights([a, tmp_path / "short.safetensors"], [0.5, 0.5])
    save_weights(tmp_path / "count.safetensors", {**state, "steps": torch.tensor([3])}, meta)
    save_weights(tmp_path / "count2.safetensors", {**state, "steps": torch.tensor([4])}, meta)
    with pytest.raises(WeightsError, match="cannot be averaged"):
        average_weights([tmp_path / "count.safetensors", tmp_path / "count2.safetensors"], [0.5, 0.5])
    from safetensors.torch import save_file

    save_file(dict(state), str(tmp_path / "foreign.safetensors"))  # no irc metadata
    with pytest.raises(WeightsError, match="only weights irc wrote"):
        average_weights([a, tmp_path / "foreign.safetensors"], [0.5, 0.5])
    with pytest.raises(WeightsError, match="at least two"):
        average_weights([a], [1.0])
    lora = {"unet.to_q.lora_A.default.weight": torch.rand(4, 8), "unet.to_q.lora_B.default.weight": torch.rand(8, 4)}
    for name in ("l1", "l2"):
        save_weights(tmp_path / f"{name}.safetensors", lora, {"method": "hypir", "config": {}})
    with pytest.raises(WeightsError, match="LoRA factors"):
        average_weights([tmp_path / "l1.safetensors", tmp_path / "l2.safetensors"], [0.5, 0.5])


def test_metadata_that_says_how_to_load_must_agree_and_is_kept(tmp_path):
    """Loading-relevant metadata (LoRun's ``cs_phi`` says how its matrix is stored) is carried
    over when the files agree and refused when they differ; training descriptions are not."""
    a, _ = _weights(tmp_path, "a", 0)
    b, _ = _weights(tmp_path, "b", 1)
    for path, layout in ((a, "unscaled"), (b, "unscaled")):
        state, meta = load_weights(path)
        save_weights(path, state, {**meta, "cs_phi": layout, "recipe": path.stem})
    state, meta = average_weights([a, b], [0.5, 0.5])
    assert meta["cs_phi"] == "unscaled" and "recipe" not in meta and "steps" not in meta and meta["name"] == "tur-small"
    state, meta_b = load_weights(b)
    save_weights(b, state, {**meta_b, "cs_phi": "scaled"})
    with pytest.raises(WeightsError, match="'cs_phi' differs"):
        average_weights([a, b], [0.5, 0.5])


@pytest.mark.parametrize("text", ["1", "1,x", "1,-1", "0,0", "1,nan", "1e308,1e308"])
def test_bad_ratios_are_usage_errors(text):
    with pytest.raises(UsageError, match="--ratios"):
        parse_ratios(text, 2)


def test_cli_writes_the_average_and_prints_its_sha(tmp_path, capsys):
    from irc.cli import main
    from irc.download import sha256_file

    a, _ = _weights(tmp_path, "a", 0)
    b, _ = _weights(tmp_path, "b", 1)
    out = tmp_path / "soup.safetensors"
    assert main(["weights", "average", str(a), str(b), "-o", str(out), "--ratios", "1,1"]) == 0
    printed = capsys.readouterr().out
    assert f"sha256 {sha256_file(out)}" in printed and 'name = "tur-small"' in printed
    first = out.read_bytes()
    # the same inputs give the same file, byte for byte (a release must be reproducible)
    assert main(["weights", "average", str(a), str(b), "-o", str(out), "--overwrite"]) == 0
    assert out.read_bytes() == first


@pytest.mark.parametrize("case", ["one file", "same file twice", "out is an input", "out exists", "not safetensors", "ratio count"])
def test_cli_refuses_what_would_lose_or_fake_something(case, tmp_path, capsys):
    from irc.cli import main

    a, _ = _weights(tmp_path, "a", 0)
    b, _ = _weights(tmp_path, "b", 1)
    before = {p: p.read_bytes() for p in (a, b)}
    (tmp_path / "taken.safetensors").write_bytes(b"keep me")
    args = {
        "one file": [str(a), "-o", str(tmp_path / "x.safetensors")],
        "same file twice": [str(a), str(a), "-o", str(tmp_path / "x.safetensors")],
        "out is an input": [str(a), str(b), "-o", str(b)],
        "out exists": [str(a), str(b), "-o", str(tmp_path / "taken.safetensors")],
        "not safetensors": [str(a), str(b), "-o", str(tmp_path / "x.pt")],
        "ratio count": [str(a), str(b), "-o", str(tmp_path / "x.safetensors"), "--ratios", "1,2,3"],
    }[case]
    assert main(["weights", "average", *args]) == 2
    assert capsys.readouterr().err.strip()
    assert {p: p.read_bytes() for p in (a, b)} == before
    assert (tmp_path / "taken.safetensors").read_bytes() == b"keep me" and not (tmp_path / "x.safetensors").exists()
