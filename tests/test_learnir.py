"""LearnIR (METHODS.md section 1): the residual scheduler, the DRM sampler, DPSC and training, on
tiny configs on the CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irc.errors import UsageError, WeightsError
from irc.methods.base import TrainBatch
from irc.methods.learnir import LearnIR, parse_drm_schedule, resample
from irc.methods.learnir.scheduler import ResidualScheduler
from irc.runner import StageRunner

TINY = {"width": 8, "mu_width": 4, "levels": 1, "blocks": 1}


def tiny(**overrides) -> LearnIR:
    torch.manual_seed(0)
    return LearnIR.from_config({**TINY, **overrides})


def wake(net: torch.nn.Module, seed: int = 1, scale: float = 0.1) -> None:
    """Give a zero-initialised output layer random weights, so that the network does something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.ending.weight.copy_(scale * torch.randn(net.ending.weight.shape, generator=g))
        net.ending.bias.copy_(scale * torch.randn(net.ending.bias.shape, generator=g))


def knobs(**given) -> dict:
    return {"task": "", "steps": 0, "drm": "on", "drm_schedule": "", "dpsc": "on", **given}


def image(h: int = 48, w: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- scheduler


def test_scheduler_reproduces_resfusion_for_t12():
    s = ResidualScheduler(12)
    assert s.start == 4 and s.sampling_steps == 5 and s.forced
    np.testing.assert_allclose(s.alphas_cumprod.sqrt().numpy(), [0.9958, 0.9132, 0.7586, 0.5572, 0.5], atol=1e-4)
    # the forced step: alpha = 0.25 / abar of the step before, not the linspace value
    assert float(s.alphas[4]) == pytest.approx(0.80533, abs=1e-5)
    assert float(s.betas[4]) == pytest.approx(0.19467, abs=1e-5)
    assert float(s.alphas_cumprod[4]) == pytest.approx(0.25, abs=1e-15)
    np.testing.assert_allclose(s.betas[:4].numpy(), np.linspace(1000 / 12 * 1e-4, 1000 / 12 * 0.02, 12)[:4], rtol=1e-12)


def test_scheduler_without_truncation_for_t100():
    s = ResidualScheduler(100)
    assert s.sampling_steps == 37 and not s.forced
    assert float(s.alphas_cumprod[36].sqrt()) == pytest.approx(0.4938, abs=1e-4)
    np.testing.assert_allclose(s.betas.numpy(), np.linspace(10 * 1e-4, 10 * 0.02, 100), rtol=1e-12)


def test_forward_process_closed_form_at_first_step_and_acceleration_point():
    s = ResidualScheduler(12)
    g = torch.Generator().manual_seed(0)
    x0, y, eps = (torch.rand(2, 3, 8, 8, generator=g) * 2 - 1 for _ in range(3))
    # t = 0: sqrt(abar_0) = sqrt(1 - beta_0), beta_0 = 1e-4 * 1000 / 12
    a0 = math.sqrt(1 - 1e-4 * 1000 / 12)
    expected = a0 * x0 + (1 - a0) * (y - x0) + math.sqrt(1 - a0 * a0) * eps
    torch.testing.assert_close(s.add_noise(x0, y, eps, 0), expected, rtol=0, atol=1e-6)
    # the acceleration point: 0.5 y + sqrt(0.75) eps, whatever x0
    torch.testing.assert_close(s.add_noise(x0, y, eps, s.start), 0.5 * y + math.sqrt(0.75) * eps, rtol=0, atol=1e-6)


@pytest.mark.parametrize("t", [1, 2, 3, 4])
def test_step_with_the_true_resnoise_is_the_true_posterior_mean(t):
    """The reverse step's mean with the true eps_res equals the Gaussian posterior mean of the
    residual process (a DDPM on u = x - R, shifted back by R), including the forced step."""
    s = ResidualScheduler(12)
    g = torch.Generator().manual_seed(t)
    x0, y, eps = (torch.rand(1, 3, 6, 6, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(3))
    r = y - x0
    x_t = s.add_noise(x0, y, eps, t)
    abar, abar_prev, a, beta = (float(v) for v in (s.alphas_cumprod[t], s.alphas_cumprod[t - 1], s.alphas[t], s.betas[t]))
    u0, ut = x0 - r, x_t - r
    posterior = beta * math.sqrt(abar_prev) / (1 - abar) * u0 + (1 - abar_prev) * math.sqrt(a) / (1 - abar) * ut + r
    mean = s.step_mean(x_t, s.resnoise(x0, y, eps, t), t)
    torch.testing.assert_close(mean, posterior, rtol=0, atol=1e-10)
    # and the DPSC target is the gap between a predicted step and that mean
    wrong = s.resnoise(x0, y, eps, t) + 0.3
    torch.testing.assert_close(s.mean_gap(wrong, s.resnoise(x0, y, eps, t), t), s.step_mean(x_t, wrong, t) - posterior, rtol=0, atol=1e-10)


def test_posterior_variance_and_last_step_has_no_noise():
    s = ResidualScheduler(12)
    assert s.noise_scale(0) == 0.0
    t = 3
    expected = (1 - float(s.alphas_cumprod[t - 1])) / (1 - float(s.alphas_cumprod[t])) * float(s.betas[t])
    assert s.noise_scale(t) == pytest.approx(math.sqrt(expected))


# ----------------------------------------------------------------------------- sampler


def test_start_state_is_half_y_plus_noise():
    m = tiny(drm_schedule=())
    x = image()
    seen = []
    m.network.eps_net.register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
    m.restore(x, seed=7, **knobs())
    runner = StageRunner(seed=7)
    expected = 0.5 * (x * 2 - 1) + math.sqrt(0.75) * runner.noise(x.shape[1:])
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=1e-6)


def reference_sampler(m: LearnIR, x: torch.Tensor, seed: int, correct: bool) -> torch.Tensor:
    """The sampler written out plainly, at full resolution: m(z) - mu + C z."""
    s = ResidualScheduler(12)
    runner = StageRunner(seed=seed)
    y = x * 2 - 1
    z = 0.5 * y + math.sqrt(0.75) * runner.noise(x.shape[1:])
    for t in range(s.start, -1, -1):
        noise = runner.noise(x.shape[1:]) if t > 0 else torch.zeros_like(x)
        tv = s.timestep_value(t)
        eps = m.network.eps_net(z, y, tv)
        z = s.step_mean(z, eps, t) - (m.network.mu_net(z, y, tv) if correct else 0) + s.noise_scale(t) * noise
    return ((z + 1) / 2).clamp(0, 1)


def test_sampler_matches_the_equations_and_zero_mu_is_the_plain_sampler():
    m = tiny()
    wake(m.network.eps_net)
    x = image()
    with torch.no_grad():
        plain = reference_sampler(m, x, seed=3, correct=False)
        # an untrained mu is exactly zero: DPSC on equals the uncorrected sampler
        on, off = (m.restore(x, seed=3, **knobs(drm="off", dpsc=d)) for d in ("on", "off"))
        torch.testing.assert_close(on, plain, rtol=0, atol=1e-5)
        torch.testing.assert_close(off, plain, rtol=0, atol=1e-5)
        wake(m.network.mu_net, seed=2, scale=0.05)
        corrected = m.restore(x, seed=3, **knobs(drm="off"))
        torch.testing.assert_close(corrected, reference_sampler(m, x, seed=3, correct=True), rtol=0, atol=1e-5)
        assert (corrected - plain).abs().max() > 1e-3
        torch.testing.assert_close(m.restore(x, seed=3, **knobs(drm="off", dpsc="off")), plain, rtol=0, atol=1e-5)


def test_drm_runs_each_step_at_its_scale():
    m = tiny()
    sizes = []
    m.network.eps_net.register_forward_hook(lambda mod, args, out: sizes.append(tuple(args[0].shape[-2:])))
    x = image(64, 48)
    out = m.restore(x, **knobs())
    assert sizes == [(16, 12), (32, 24), (32, 24), (64, 48), (64, 48)] and out.shape == x.shape
    sizes.clear()
    m.restore(x, **knobs(drm="off"))
    assert sizes == [(64, 48)] * 5
    sizes.clear()
    m.restore(x, **knobs(drm_schedule="3,2,1,1,0"))
    assert sizes == [(8, 6), (16, 12), (32, 24), (32, 24), (64, 48)]
    sizes.clear()
    m.restore(image(30, 30), **knobs())  # odd sizes round up at each scale
    assert sizes == [(8, 8), (15, 15), (15, 15), (30, 30), (30, 30)]


def test_schedule_length_must_match_the_steps():
    m = tiny()
    with pytest.raises(UsageError, match=r"3 entries \(2,1,0\) but T = 12 gives 5 sampling steps"):
        m.restore(image(), **knobs(drm_schedule="2,1,0"))
    with pytest.raises(UsageError, match="37 sampling steps"):
        m.restore(image(), **knobs(steps=100))
    m.restore(image(16, 16), **knobs(steps=100, drm="off"))
    with pytest.raises(UsageError, match="exponent"):
        parse_drm_schedule("2,x")
    with pytest.raises(UsageError, match="exponent"):
        parse_drm_schedule("9")
    with pytest.raises(UsageError, match="restore noise, not haze"):
        m.restore(image(), **knobs(task="haze"))


def test_more_steps_run_more_network_calls():
    m = tiny()
    calls = []
    m.network.eps_net.register_forward_hook(lambda *a: calls.append(1))
    m.restore(image(16, 16), **knobs(steps=100, drm="off"))
    assert len(calls) == 37


def test_seeded_sampling_repeats_and_does_not_depend_on_the_batch():
    m = tiny()
    wake(m.network.eps_net)
    a, b = image(seed=1), image(seed=2)
    first = m.restore(a, seed=5, **knobs())
    torch.testing.assert_close(m.restore(a, seed=5, **knobs()), first, rtol=0, atol=0)
    assert (m.restore(a, seed=6, **knobs()) - first).abs().max() > 1e-4
    runner = StageRunner(seed=5, keys=["a.png", "b.png"])
    both = m.restore(torch.cat([a, b]), runner=runner, **knobs())
    alone = m.restore(b, runner=StageRunner(seed=5, keys=["b.png"]), **knobs())
    torch.testing.assert_close(both[1:], alone, rtol=0, atol=1e-6)


def test_eval_draws_each_image_from_its_own_generator_keyed_like_restore(data_root):
    """irc eval seeds a stochastic method per image (run seed + sample name, as irc restore keys
    a file by its path), not from one global or anonymous generator shared by the run."""
    from irc.data.benchmarks import open_benchmark
    from irc.evaluate import Run, evaluate

    m = tiny()
    wake(m.network.eps_net, scale=0.3)
    bench = open_benchmark("cbsd68", root=data_root, noise=25, seed=3, limit=2)
    kept = {}
    evaluate(Run("learnir", m, knobs(steps=12)), bench, keep=lambda i, sample, restored, row: kept.update({sample.name: restored}))
    for index in range(2):
        sample = bench[index]
        alone = m.restore(sample.lq[None].float(), runner=StageRunner(seed=3, keys=[sample.name]), **knobs(steps=12))[0]
        torch.testing.assert_close(kept[sample.name], alone, rtol=0, atol=0)
    other_seed = m.restore(bench[0].lq[None].float(), runner=StageRunner(seed=4, keys=[bench[0].name]), **knobs(steps=12))[0]
    assert (other_seed - kept[bench[0].name]).abs().max() > 1e-4


def test_tiled_sampling_agrees_with_untiled():
    m = tiny()
    wake(m.network.eps_net, scale=0.2)
    wake(m.network.mu_net, seed=3, scale=0.05)
    x = image(96, 80)
    whole = m.restore(x, seed=2, **knobs())
    tiled = m.restore(x, seed=2, tile=48, **knobs())
    # the noise is drawn whole and sliced: tiles differ from the whole image only where the
    # blend gives weight to a tile's border pixels
    assert (tiled - whole).abs().mean() < 2e-3
    assert (tiled - whole).abs().max() < 0.05


def test_resample_is_identity_at_the_same_size_and_antialiased_down():
    x = torch.rand(1, 3, 16, 16)
    assert resample(x, (16, 16)) is x
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2
    down = resample(checker.float()[None, None], (8, 8))
    assert (down - 0.5).abs().max() < 0.1  # a checkerboard averages to grey, not to an alias


# ----------------------------------------------------------------------------- weights and training


def test_save_load_round_trip(tmp_path):
    from irc.weights import save_weights

    m = tiny(task="haze")
    wake(m.network.eps_net)
    wake(m.network.mu_net, seed=4, scale=0.05)
    path = save_weights(tmp_path / "w.safetensors", m.state_dict(), m.metadata())
    loaded = LearnIR.from_weights(path)
    assert loaded.config == m.config
    x = image()
    torch.testing.assert_close(loaded.restore(x, seed=1, **knobs()), m.restore(x, seed=1, **knobs()), rtol=0, atol=0)


def batch(seed: int = 0) -> TrainBatch:
    gt = image(32, 32, seed=seed).repeat(4, 1, 1, 1)
    lq = (gt + 0.1 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(seed + 1))).clamp(0, 1)
    return TrainBatch(lq=lq, gt=gt)


def fit(m: LearnIR, steps: int) -> list[float]:
    params = [p for p in m.network.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-3)
    torch.manual_seed(0)
    losses = []
    for step in range(steps):
        loss = m.training_step(batch(), step)["main"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def held_out_loss(m: LearnIR) -> float:
    """The training loss on a fixed draw of steps and noise (another crop than training's)."""
    torch.manual_seed(123)
    with torch.no_grad():
        return float(np.mean([float(m.training_step(batch(seed=9), 0)["main"]) for _ in range(8)]))


def test_eps_stage_learns_and_mu_stage_freezes_eps(tmp_path):
    from irc.weights import save_weights

    m = tiny()
    losses = fit(m, 60)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    path = save_weights(tmp_path / "eps.safetensors", m.state_dict(), m.metadata())

    mu = tiny(stage="mu", init_from=str(path))
    torch.testing.assert_close(mu.network.eps_net.state_dict(), m.network.eps_net.state_dict())
    assert not any(p.requires_grad for p in mu.network.eps_net.parameters())
    before = {k: v.clone() for k, v in mu.network.eps_net.state_dict().items()}
    untrained = held_out_loss(mu)
    fit(mu, 60)
    assert held_out_loss(mu) < 0.9 * untrained
    torch.testing.assert_close(mu.network.eps_net.state_dict(), before, rtol=0, atol=0)
    assert mu.network.mu_net.ending.weight.abs().max() > 0
    assert mu.metadata()["config"]["init_from"] == ""  # the path does not travel with the weights


def test_joint_stage_trains_both(tmp_path):
    m = tiny(stage="joint", consistency_weight=0.5)
    fit(m, 3)
    assert m.network.eps_net.ending.weight.abs().max() > 0 and m.network.mu_net.ending.weight.abs().max() > 0


def test_init_from_weights_without_eps_is_a_clear_error(tmp_path):
    from irc.weights import save_weights

    other = tiny(width=16)
    path = save_weights(tmp_path / "eps16.safetensors", other.state_dict(), other.metadata())
    with pytest.raises(WeightsError, match="does not fit this config"):
        tiny(stage="mu", init_from=str(path))


def test_config_guards():
    with pytest.raises(UsageError, match="timesteps"):
        tiny(timesteps=1)
    with pytest.raises(UsageError, match="drm_schedule"):
        tiny(drm_schedule=(7, 0))


# ----------------------------------------------------------------------------- command line


@pytest.fixture
def tiny_weights(tmp_path):
    from irc.weights import save_weights

    m = tiny()
    wake(m.network.eps_net)
    return save_weights(tmp_path / "learnir-tiny.safetensors", m.state_dict(), m.metadata())


def test_cli_restore_prints_the_steps_and_refuses_a_bad_schedule(tmp_path, tiny_weights, capsys):
    from PIL import Image

    from irc.cli import main

    img = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)).save(img)
    code = main(["restore", "--method", "learnir", "--weights", str(tiny_weights), "--steps", "100", "--drm", "off", str(img), "-o", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "T = 100: 37 sampling steps" in err
    code = main(["restore", "--method", "learnir", "--weights", str(tiny_weights), "--drm-schedule", "2,1", str(img), "-o", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "2 entries (2,1) but T = 12 gives 5 sampling steps" in err
    code = main(["restore", "--method", "learnir", "--weights", str(tiny_weights), "--dpsc", "off", "--seed", "3", str(img), "-o", str(tmp_path / "c")])
    assert code == 0
    [out] = (tmp_path / "c").iterdir()
    with Image.open(out) as im:
        assert im.size == (48, 40)


def test_cli_bench_reports_the_drm_speedup(tiny_weights, capsys):
    import json

    from irc.cli import main

    code = main(["bench", "--method", "learnir", "--weights", str(tiny_weights), "--sizes", "64", "--repeats", "1", "--warmup", "0", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert {r["variant"] for r in report["results"]} == {"drm", "full-res"}
    flops = {r["variant"]: r["flops_per_pixel"] for r in report["results"]}
    # 1/16, 1/4, 1/4, 1, 1 of the pixels against five full steps
    assert flops["full-res"] / flops["drm"] == pytest.approx(5 / (1 / 16 + 1 / 4 + 1 / 4 + 1 + 1), rel=0.15)
    assert report["speedups"][0]["faster"] == "drm"
    # the table names each row's variant and prints the ratio
    code = main(["bench", "--method", "learnir", "--weights", str(tiny_weights), "--sizes", "64", "--repeats", "1", "--warmup", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert any(line.split()[:2] == ["drm", "64"] for line in out.splitlines())
    assert any(line.split()[:2] == ["full-res", "64"] for line in out.splitlines())
    assert "size 64, tile 0: drm is " in out and "x as fast as full-res" in out
