"""Tests for gendiff.training: per-family noising/targets against diffusers, learning the analytic
Gaussian posterior mean, kill-and-resume, checkpoint errors and output-folder safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)
from torch import nn

from gendiff.models import ConditionalMLPDecoder, ResidualMLPDenoiser, call_denoiser, make_unet2d
from gendiff.parameterization import noise_coefficients, to_x0
from gendiff.schedulers import EDMHeunScheduler
from gendiff.training import CheckpointError, TrainConfig, denoising_loss, list_checkpoints, train_denoiser

SCHEDULERS = {
    "ddpm_eps": lambda: DDPMScheduler(),
    "ddim_v": lambda: DDIMScheduler(prediction_type="v_prediction"),
    "ddpm_x0": lambda: DDPMScheduler(prediction_type="sample"),
    "euler_eps": lambda: EulerDiscreteScheduler(),
    "flow": lambda: FlowMatchEulerDiscreteScheduler(),
    "edm_eps": lambda: EDMEulerScheduler(sigma_data=0.5),
    "edm_v": lambda: EDMEulerScheduler(sigma_data=0.5, prediction_type="v_prediction"),
}


def _cfg(**kw) -> TrainConfig:
    base = {"steps": 6, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 100, "log_every": 1}
    return TrainConfig(**{**base, **kw})


class _Probe(nn.Module):
    """A zero-output denoiser that records what the training loss fed it."""

    _gendiff_denoiser = True

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, cond=None):
        self.x, self.t = x.detach().clone(), t.detach().clone()
        return x * self.w


# ---- noising and targets agree with diffusers' own functions ---------------------------------------
@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
def test_vp_noising_and_targets_match_diffusers(pred):
    sched, x0, probe = DDPMScheduler(prediction_type=pred), torch.randn(8, 3), _Probe()
    loss = denoising_loss(probe, x0, sched, TrainConfig(), generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # replay the draws: eps, then t
    eps = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    assert torch.equal(probe.t, t)
    torch.testing.assert_close(probe.x, sched.add_noise(x0, eps, t))
    target = {"epsilon": eps, "v_prediction": sched.get_velocity(x0, eps, t), "sample": x0}[pred]
    torch.testing.assert_close(loss, (target**2).mean())


def test_flow_and_edm_noising_match_scheduler_conventions():
    x0, probe = torch.randn(8, 3), _Probe()
    loss = denoising_loss(probe, x0, FlowMatchEulerDiscreteScheduler(), generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    eps, sigma = torch.randn(x0.shape, generator=g), torch.rand(8, generator=g)
    torch.testing.assert_close(probe.x, sigma[:, None] * eps + (1 - sigma[:, None]) * x0)
    torch.testing.assert_close(probe.t, sigma * 1000)
    torch.testing.assert_close(loss, ((eps - x0) ** 2).mean())

    edm = EDMEulerScheduler(sigma_data=0.5)
    loss = denoising_loss(probe, x0, edm, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    eps = torch.randn(x0.shape, generator=g)
    sigma = torch.exp(torch.randn(8, generator=g) * 1.2 - 1.2)[:, None]  # EDM P_mean, P_std
    x_t = x0 + sigma * eps
    torch.testing.assert_close(probe.x, x_t / (sigma**2 + 0.25).sqrt())  # c_in
    torch.testing.assert_close(probe.t, 0.25 * sigma[:, 0].log())  # c_noise
    denoised = 0.25 / (sigma**2 + 0.25) * x_t  # c_skip x_t (+ c_out * 0)
    weight = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    torch.testing.assert_close(loss, (weight * (denoised - x0) ** 2).mean())


class _Oracle(nn.Module):
    """Knows the clean batch x0 and outputs the exact F with D(x_t; sigma) = x0 (EDM eq. 7 solved for F)."""

    _gendiff_denoiser = True

    def __init__(self, x0: torch.Tensor, sched) -> None:
        super().__init__()
        self.x0, self.sched, self.w = x0, sched, nn.Parameter(torch.zeros(()))

    def forward(self, x_in, c_noise, cond=None):
        sd, pred = float(self.sched.config.sigma_data), self.sched.config.prediction_type
        sigma = torch.exp(4 * torch.as_tensor(c_noise, dtype=x_in.dtype)).reshape(-1, *[1] * (x_in.dim() - 1))
        x_t = x_in * (sigma**2 + sd**2).sqrt()  # undo c_in
        if pred == "sample":
            return self.x0 + 0 * self.w
        c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2).sqrt()
        f = (self.x0 - c_skip * x_t) / c_out
        return (-f if pred == "v_prediction" else f) + 0 * self.w


@pytest.mark.parametrize("sched", [
    EDMEulerScheduler(sigma_data=1.0), EDMEulerScheduler(sigma_data=0.5, prediction_type="v_prediction"),
    EDMHeunScheduler(sigma_data=1.0), EDMHeunScheduler(sigma_data=1.0, prediction_type="v_prediction"),
    EDMHeunScheduler(sigma_data=0.5, prediction_type="sample"),
], ids=["euler_eps", "euler_v", "heun_eps", "heun_v", "heun_x0"])
def test_edm_preconditioning_of_an_exact_model_gives_the_clean_sample(sched):
    """A model that predicts the clean sample exactly (through c_skip, c_out, c_in, c_noise) has zero EDM loss,
    and the sampler's x0 estimate and the scheduler's denoised output are that sample, at every noise level."""
    x0 = torch.randn(16, 5, dtype=torch.float64)
    oracle = _Oracle(x0, sched)
    loss = denoising_loss(oracle, x0, sched, TrainConfig(), generator=torch.Generator().manual_seed(0))
    assert float(loss) < 1e-12  # float64 rounding, amplified by the weight (sigma^2 + sd^2) / (sigma sd)^2
    sched.set_timesteps(8)
    for k, t in enumerate(sched.timesteps[:4]):
        sched._step_index = k  # evaluate stage k without stepping (both schedulers keep the index here)
        sigma = float(sched.sigmas[k])
        x_t = x0 + sigma * torch.randn_like(x0)
        out = call_denoiser(oracle, sched.scale_model_input(x_t, t), t)
        torch.testing.assert_close(to_x0(sched, out, x_t, t), x0, atol=1e-6, rtol=1e-6)  # float32 sigmas


# ---- every family trains, and learns the right thing ------------------------------------------------
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_each_family_trains_a_tiny_model(name, tmp_path):
    torch.manual_seed(0)
    model = ResidualMLPDenoiser(4, width=16, depth=1)
    res = train_denoiser(model, torch.randn(64, 4), SCHEDULERS[name](), _cfg(), tmp_path, progress=False)
    assert res.global_step == 6 and [s for s, _ in res.losses] == list(range(1, 7))
    assert all(torch.isfinite(torch.tensor(v)) for _, v in res.losses)


def test_unet2d_trains_with_edm(tmp_path):
    torch.manual_seed(0)
    res = train_denoiser(make_unet2d("tiny", 8, 1), torch.randn(16, 1, 8, 8), EDMEulerScheduler(),
                         _cfg(steps=2, batch_size=4), tmp_path, progress=False)
    assert res.global_step == 2 and all(v == v for _, v in res.losses)


@pytest.mark.parametrize("name", ["ddpm_eps", "ddim_v", "ddpm_x0", "euler_eps", "flow", "edm_eps"])
def test_learns_gaussian_posterior_mean(name, tmp_path):
    """Data N(mu, s^2): E[x0 | x_t] = mu + a s^2 / (a^2 s^2 + sigma^2) (x_t - a mu) in closed form; the
    trained model, read through the sampler's to_x0, must match it (a wrong target or sign cannot)."""
    mu, s = 0.5, 0.5
    torch.manual_seed(0)
    data, sched = mu + s * torch.randn(2048, 2), SCHEDULERS[name]()
    model = ResidualMLPDenoiser(2, width=32, depth=2)
    cfg = _cfg(steps=300, batch_size=128, lr=3e-3, ema_decay=0.99, log_every=300)
    model = train_denoiser(model, data, sched, cfg, tmp_path, progress=False).model
    sched.set_timesteps(40)
    ratios = []
    for t in sched.timesteps:  # noise-to-signal ratio sigma / alpha at each sampling step
        sched._step_index = None
        a, sig = noise_coefficients(sched, t)
        ratios.append(float(sig / a))
    for target in (1.0, 0.5):
        k = min(range(len(ratios)), key=lambda i: abs(ratios[i] - target))
        t = sched.timesteps[k]
        sched._step_index = None
        a, sig = noise_coefficients(sched, t)
        x_t = a * (mu + s * torch.randn(512, 2)) + sig * torch.randn(512, 2)
        x_in = sched.scale_model_input(x_t, t) if hasattr(sched, "scale_model_input") else x_t
        with torch.no_grad():
            x0_hat = to_x0(sched, call_denoiser(model, x_in, t), x_t, t)
        post = mu + a * s**2 / (a**2 * s**2 + sig**2) * (x_t - a * mu)
        err, spread = (x0_hat - post).abs().mean(), (post - mu).abs().mean()
        assert spread > 0.15 and err < 0.06, (name, target, float(err), float(spread))


def test_loss_decreases_on_learnable_data(tmp_path):
    torch.manual_seed(0)
    data = torch.full((32, 4), 0.7)  # a point mass: x0-prediction is trivially learnable
    res = train_denoiser(ResidualMLPDenoiser(4, width=32, depth=1), data, DDPMScheduler(prediction_type="sample"),
                         _cfg(steps=80, lr=3e-3, log_every=20), tmp_path, progress=False)
    losses = [v for _, v in res.losses]
    assert losses[-1] < 0.1 * losses[0]


def test_conditional_training_tensor_and_dataset(tmp_path):
    states, actions = torch.randn(64, 3), torch.randn(64, 2)
    sched = FlowMatchEulerDiscreteScheduler()
    dec = ConditionalMLPDecoder(2, 3, width=16, depth=2)
    assert train_denoiser(dec, actions, sched, _cfg(steps=3), tmp_path / "a", cond=states,
                          progress=False).global_step == 3
    pairs = torch.utils.data.TensorDataset(actions, states)
    assert train_denoiser(dec, pairs, sched, _cfg(steps=3), tmp_path / "b", progress=False).global_step == 3
    with pytest.raises(ValueError, match="one row per sample"):
        train_denoiser(dec, actions, sched, _cfg(), tmp_path / "c", cond=states[:10], progress=False)


# ---- kill mid-run, then resume -----------------------------------------------------------------------
_CHILD = textwrap.dedent("""
    import sys, time, torch
    from diffusers import DDPMScheduler
    from gendiff.models import ResidualMLPDenoiser
    from gendiff.training import TrainConfig, train_denoiser

    class Slow(torch.utils.data.Dataset):  # ~0.05 s per step, so the parent can kill mid-run
        def __init__(self, x): self.x = x
        def __len__(self): return len(self.x)
        def __getitem__(self, i):
            time.sleep(0.006)
            return self.x[i]

    torch.manual_seed(0); data = torch.randn(64, 4)
    torch.manual_seed(1); model = ResidualMLPDenoiser(4, width=16, depth=1)
    cfg = TrainConfig(steps=20, batch_size=8, lr=1e-3, checkpoint_every=5, log_every=1)
    train_denoiser(model, Slow(data), DDPMScheduler(num_train_timesteps=100), cfg, sys.argv[1], progress=False)
""")


def _reference_run(out: Path):
    torch.manual_seed(0)
    data = torch.randn(64, 4)
    torch.manual_seed(1)
    model = ResidualMLPDenoiser(4, width=16, depth=1)
    cfg = TrainConfig(steps=20, batch_size=8, lr=1e-3, checkpoint_every=5, log_every=1)
    return data, cfg, train_denoiser(model, data, DDPMScheduler(num_train_timesteps=100), cfg, out, progress=False)


def test_killed_run_resumes_exactly(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(out)], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "checkpoint-5").exists():
        assert proc.poll() is None, f"child exited early: {proc.stderr.read().decode()[-2000:]}"
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.005)
    assert proc.poll() is None, "child finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model").exists()
    killed_at = int(list_checkpoints(out)[-1].name.split("-")[1])
    assert 5 <= killed_at < 20

    data, cfg, ref = _reference_run(tmp_path / "ref")
    res = train_denoiser(ResidualMLPDenoiser(4, width=16, depth=1), data, DDPMScheduler(num_train_timesteps=100),
                         cfg, out, progress=False, resume=True)
    assert res.resumed_from == killed_at and res.global_step == 20
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 21))
    loaded = ResidualMLPDenoiser.from_pretrained(out / "model")
    y = loaded(torch.randn(5, 4), torch.tensor([10] * 5))
    assert torch.isfinite(y).all()
    for p, q in zip(loaded.parameters(), ref.model.parameters()):  # same as never having been killed
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert DDPMScheduler.from_pretrained(out / "scheduler").config.num_train_timesteps == 100


# ---- errors and output-folder safety ----------------------------------------------------------------
def test_corrupt_and_missing_checkpoints(tmp_path):
    data, sched = torch.randn(32, 4), DDPMScheduler()
    model = ResidualMLPDenoiser(4, width=16, depth=1)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        train_denoiser(model, data, sched, _cfg(), tmp_path / "empty", progress=False, resume=True)
    train_denoiser(model, data, sched, _cfg(steps=4, checkpoint_every=2), tmp_path / "r", progress=False)
    weights = tmp_path / "r" / "checkpoint-4" / "ema.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(intact[:50])
    with pytest.raises(CheckpointError, match="checkpoint-4"):
        train_denoiser(model, data, sched, _cfg(steps=6, checkpoint_every=2), tmp_path / "r", progress=False,
                       resume=True)
    (tmp_path / "r" / "checkpoint-2" / "optimizer.pt").unlink()
    (tmp_path / "moved").mkdir()
    weights.parent.rename(tmp_path / "moved" / "checkpoint-4")  # now checkpoint-2 is the latest, lacking a file
    (tmp_path / "moved" / "checkpoint-4" / "ema.safetensors").write_bytes(intact)
    with pytest.raises(CheckpointError, match="optimizer.pt"):
        train_denoiser(model, data, sched, _cfg(steps=6), tmp_path / "r", progress=False, resume=True)
    other = ResidualMLPDenoiser(4, width=8, depth=1)  # a checkpoint of another architecture
    with pytest.raises(CheckpointError, match="size mismatch"):
        train_denoiser(other, data, sched, _cfg(steps=6), tmp_path / "moved", progress=False, resume=True)


def test_refuses_to_clobber_an_earlier_run(tmp_path):
    data, sched = torch.randn(32, 4), DDPMScheduler()
    model = ResidualMLPDenoiser(4, width=16, depth=1)
    train_denoiser(model, data, sched, _cfg(steps=4, checkpoint_every=2), tmp_path, progress=False)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(FileExistsError, match="resume=True"):
        train_denoiser(model, data, sched, _cfg(steps=4), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    res = train_denoiser(model, data, sched, _cfg(steps=3), tmp_path, progress=False, overwrite=True)
    assert res.global_step == 3 and [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-3"]


def test_checkpoint_pruning_and_extension(tmp_path):
    data, sched = torch.randn(32, 4), DDPMScheduler()
    model = ResidualMLPDenoiser(4, width=16, depth=1)
    train_denoiser(model, data, sched, _cfg(steps=8, checkpoint_every=2, checkpoints_keep=2), tmp_path,
                   progress=False)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-6", "checkpoint-8"]
    res = train_denoiser(model, data, sched, _cfg(steps=10, checkpoint_every=2), tmp_path, progress=False,
                         resume=True)
    assert res.resumed_from == 8 and res.global_step == 10 and [s for s, _ in res.losses] == [9, 10]


def test_time_budget_stops_early_saves_and_resumes(tmp_path):
    data, sched = torch.randn(32, 4), DDPMScheduler()
    model = ResidualMLPDenoiser(4, width=16, depth=1)
    with pytest.warns(UserWarning, match="max_minutes=1e-09 reached: stopped at step 1 of 50"):
        res = train_denoiser(model, data, sched, _cfg(steps=50, max_minutes=1e-9), tmp_path, progress=False)
    assert res.global_step == 1 and (tmp_path / "model").is_dir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-1"]
    res = train_denoiser(model, data, sched, _cfg(steps=4), tmp_path, progress=False, resume=True)
    assert res.resumed_from == 1 and res.global_step == 4
    with pytest.raises(ValueError, match="max_minutes"):
        TrainConfig(max_minutes=0.0)


def test_nan_loss_names_the_step(tmp_path):
    model = ResidualMLPDenoiser(4, width=16, depth=1)
    with torch.no_grad():
        model.out.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="at step 1"):
        train_denoiser(model, torch.randn(32, 4), DDPMScheduler(), _cfg(), tmp_path, progress=False)


def test_bad_inputs_fail_before_touching_out_dir(tmp_path):
    model, out = ResidualMLPDenoiser(4, width=16, depth=1), tmp_path / "never"
    with pytest.raises(ValueError, match="prediction mismatch"):
        train_denoiser(model, torch.randn(8, 4), DDPMScheduler(), _cfg(prediction="flow"), out, progress=False)
    assert not out.exists()
    with pytest.raises(ValueError, match="NaN"):
        train_denoiser(model, torch.tensor([[float("nan")] * 4]), DDPMScheduler(), _cfg(), out, progress=False)
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(TypeError, match="Tensor or a torch Dataset"):
        train_denoiser(model, [[0.0] * 4], DDPMScheduler(), _cfg(), out, progress=False)
