"""GoRL: identity decoder, the flow-matching loss at the exact velocity, decoders from latents=z, staged runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gendiff.config import from_dict
from gendiff.rl.decoders import (
    DiffusionDecoder,
    FlowDecoder,
    IdentityDecoder,
    decoder_loss,
    make_decoder,
    short_cosine_betas,
)
from gendiff.rl.gorl import GoRL, GoRLConfig
from gendiff.rl.ppo import PPO, PPOConfig
from gendiff.rl.sac import SAC, SACConfig
from gendiff.sampler import GuidedSampler

W = torch.tensor([[0.5, -1.0], [2.0, 0.3], [-0.7, 0.1]], dtype=torch.float64)  # a0(s) = s W, s in R^3


class ExactVelocity(nn.Module):
    """For a point mass a0(s) per state, x_t = t eps + (1 - t) a0 gives eps - a0 = (x_t - a0(s)) / t exactly."""

    _gendiff_denoiser = True

    def forward(self, x, t, cond=None):
        sigma = (t.to(x.dtype) / 1000.0)[:, None]
        return (x - cond.to(x.dtype) @ W.to(x.dtype)) / sigma


def test_identity_decoder_returns_z_exactly():
    dec, obs, z = IdentityDecoder(), torch.randn(5, 3), torch.randn(5, 2) * 3
    assert dec.decode(obs, z) is z and dec.nfe_per_action == 0
    agent = GoRL("gendiff/TwoModes-v0", GoRLConfig(), PPOConfig(num_envs=2, num_steps=16, num_minibatches=2))
    assert isinstance(agent.decoder, IdentityDecoder)
    obs2 = torch.randn(5, 2)
    assert torch.equal(agent.transform(obs2, z), z)
    assert torch.equal(agent.env_action(obs2, z), agent.scaler.to_env(torch.tanh(z)))  # stage 0 = tanh-Gaussian


def test_flow_matching_loss_is_zero_at_the_exact_velocity():
    gen = torch.Generator().manual_seed(0)
    sched = FlowDecoder(3, 2).scheduler
    obs = torch.randn(64, 3, dtype=torch.float64, generator=gen)
    actions = obs @ W
    loss = decoder_loss(ExactVelocity(), sched, obs, actions, noise_draws=8, generator=gen)
    assert float(loss) < 1e-8
    zero = nn.Module()
    zero._gendiff_denoiser = True
    zero.forward = lambda x, t, cond=None: torch.zeros_like(x)
    wrong = decoder_loss(zero, sched, obs, actions, noise_draws=8, generator=gen)  # E||eps - a0||^2 / d
    expected = 1.0 + float(actions.pow(2).mean())
    assert float(wrong) == pytest.approx(expected, rel=0.15)


def test_flow_decoder_starts_from_z_and_follows_the_velocity():
    dec = FlowDecoder(3, 2)
    dec.sampler = GuidedSampler(ExactVelocity().double(), dec.scheduler, prediction_type="flow")
    obs = torch.randn(6, 3, dtype=torch.float64)
    z = torch.randn(6, 2, dtype=torch.float64)
    out = dec.sampler((2,), batch_size=6, num_inference_steps=10, cond=obs, latents=z[:, None], dtype=torch.float64,
                      device="cpu")
    torch.testing.assert_close(out.sample[:, 0], obs @ W)  # Euler is exact on straight paths
    assert out.nfe == 10 == dec.nfe_per_action


class GaussianMarginalVelocity(nn.Module):
    """The exact marginal velocity for u ~ N(0, 1) (any state) and independent noise: x_t = t eps + (1 - t) u has
    Cov(eps - u, x_t) = 2t - 1 and Var(x_t) = t^2 + (1 - t)^2, so E[eps - u | x_t] = (2t - 1) x_t / Var(x_t).
    The exact flow maps z ~ N(0, 1) to N(0, 1): any shrinkage of z is the solver's."""

    _gendiff_denoiser = True

    def forward(self, x, t, cond=None):
        s = torch.as_tensor(t).to(x.dtype) / 1000.0
        s = s.reshape(-1, *([1] * (x.dim() - 1))) if s.dim() else s
        return (2 * s - 1) / (s**2 + (1 - s) ** 2) * x


def test_heun_flow_solver_keeps_the_spread_that_few_euler_steps_shrink():
    factor = {}
    for solver, steps in (("euler", 10), ("heun", 5)):
        dec = FlowDecoder(3, 2, width=8, depth=1, num_inference_steps=steps, solver=solver)
        dec.sampler.denoiser = GaussianMarginalVelocity()
        out = dec.sampler((2,), batch_size=4, num_inference_steps=steps, cond=torch.zeros(4, 3, dtype=torch.float64),
                          latents=torch.ones(4, 1, 2, dtype=torch.float64), dtype=torch.float64, device="cpu")
        assert out.nfe == dec.nfe_per_action == (10 if solver == "euler" else 9)
        factor[solver] = float(out.sample.mean())  # linear flow: the output is factor * z
    assert factor["euler"] < 0.92 and abs(factor["heun"] - 1) < 0.05, factor
    with pytest.raises(ValueError, match="euler' or 'heun"):
        FlowDecoder(3, 2, solver="rk4")


def test_set_solver_switches_sampling_and_keeps_the_network():
    dec = FlowDecoder(3, 2, width=8, depth=1, num_inference_steps=10)
    obs, z = torch.randn(5, 3), torch.randn(5, 2)
    euler10 = dec.decode(obs, z)
    weights = [p.clone() for p in dec.net.parameters()]
    dec.set_solver("heun", 3)
    assert dec.nfe_per_action == 5 and dec.solver == "heun"
    assert all(torch.equal(a, b) for a, b in zip(weights, dec.net.parameters()))
    assert not torch.allclose(dec.decode(obs, z), euler10)
    dec.set_solver("euler", 10)
    assert torch.equal(dec.decode(obs, z), euler10)
    with pytest.raises(ValueError, match="num_inference_steps must be >= 1"):
        dec.set_solver("euler", 0)


@pytest.mark.parametrize("cls,min_near", [(FlowDecoder, 0.7), (DiffusionDecoder, 0.7)])
def test_decoder_fit_learns_two_modes(cls, min_near):
    """A Gaussian matched to the data's mean / variance puts ~0.32 of its mass within 0.5 of +-1.5."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(512, 2, generator=gen)
    sign = torch.where(torch.rand(512, 1, generator=gen) < 0.5, -1.0, 1.0)
    actions = sign * 1.5 + 0.05 * torch.randn(512, 1, generator=gen)
    dec = cls(2, 1, width=64, depth=2)
    losses = dec.fit(obs, actions, steps=400, batch_size=128, lr=3e-3, noise_draws=8, generator=gen)
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    u = dec.decode(torch.randn(1000, 2, generator=gen), torch.randn(1000, 1, generator=gen))[:, 0]
    near = ((u.abs() - 1.5).abs() < 0.5).float().mean()
    assert near > min_near and 0.25 < float((u > 0).float().mean()) < 0.75  # both modes, little in between
    # the latent policy steers through z: the decoded action must be a monotone map of z (1-D), not a sign
    mapped = dec.decode(torch.zeros(41, 2), torch.linspace(-3, 3, 41)[:, None])[:, 0]
    assert (mapped.diff() > -1e-3).all(), mapped


def test_short_cosine_schedule_matches_the_reference_levels():
    betas = short_cosine_betas(10)
    abar = torch.cumprod(1 - betas.double(), 0)
    f = torch.cos((torch.arange(10, dtype=torch.float64) / 10 + 0.008) / 1.008 * torch.pi / 2) ** 2
    torch.testing.assert_close(abar[1:], (f / f[0])[1:] * (1 - 1e-4), rtol=1e-6, atol=1e-6)  # beta_0 clipped to 1e-4
    assert 0.02 < abar[-1] < 0.03  # SNR ~0.025 at the noisiest level: decoding from z is well conditioned
    dec = DiffusionDecoder(2, 1, width=8, depth=1)
    assert dec.sampler((1,), batch_size=3, num_inference_steps=10, cond=torch.zeros(3, 2),
                       latents=torch.zeros(3, 1, 1)).nfe == 10 == dec.nfe_per_action
    with pytest.raises(ValueError, match=">= 2 noise levels"):
        short_cosine_betas(1)


def test_decoder_input_errors():
    with pytest.raises(KeyError, match="valid names"):
        make_decoder("vae", 3, 2)
    dec = FlowDecoder(3, 2, width=16, depth=1)
    with pytest.raises(ValueError, match="decode needs"):
        dec.decode(torch.randn(4, 3), torch.randn(4, 3))
    with pytest.raises(ValueError, match="NaN"):
        dec.fit(torch.full((4, 3), float("nan")), torch.zeros(4, 2), steps=1)
    with pytest.raises(ValueError, match="stage_steps"):
        GoRLConfig(stage_steps=0)


SMALL_GORL = {"stage_steps": 128, "recent_steps": 256, "decoder_fit_steps": 5, "decoder_width": 32,
              "decoder_depth": 1, "decoder_batch_size": 32}


@pytest.mark.parametrize("decoder", ["flow", "diffusion"])
def test_staged_ppo_run_swaps_in_the_decoder(decoder):
    cfg = GoRLConfig(decoder=decoder, **SMALL_GORL)
    ppo = PPOConfig(num_envs=2, num_steps=64, num_minibatches=2, update_epochs=1, eval_every=256, eval_episodes=2)
    agent = GoRL("gendiff/TwoModes-v0", cfg, ppo, seed=0)
    log = agent.learn(384, progress=False)
    assert [s.step for s in agent.stages] == [128, 256, 384]
    assert all(s.z_spread > 0 and s.data_spread > 0 for s in agent.stages)  # the per-refit diagnostic
    assert agent.decoder is agent.generative and isinstance(agent.decoder, FlowDecoder if decoder == "flow"
                                                             else DiffusionDecoder)
    assert np.isfinite(log.eval_mean).all() and log.metrics["actor/latent_kl"] >= 0
    a = agent.act(np.zeros((4, 2), dtype=np.float32))
    assert a.shape == (4, 2) and np.abs(a).max() <= 1.0


def test_staged_sac_run_on_pendulum():
    sac = SACConfig(hidden=(32, 32), batch_size=32, learning_starts=64, eval_every=300, eval_episodes=1)
    agent = GoRL("Pendulum-v1", GoRLConfig(base="sac", **SMALL_GORL), sac_config=sac, seed=0)
    log = agent.learn(300, progress=False)
    assert len(agent.stages) == 2 and agent.decoder is agent.generative
    assert agent.agent.buffer.size < 300  # emptied at each refit
    assert np.isfinite(log.eval_mean).all()
    a = agent.act(np.zeros((2, 3), dtype=np.float32))
    assert a.shape == (2, 1) and np.abs(a).max() <= 2.0


def _reset_twins(base: str, **gorl) -> dict[bool, PPO | SAC]:
    """The inner agents of two GoRL runs without / with ``reset_latent``, identical up to the refit at step 128
    (which comes after the last update, so the reset is the only difference)."""
    env = "gendiff/TwoModes-v0" if base == "ppo" else "Pendulum-v1"
    ppo = PPOConfig(num_envs=2, num_steps=64, num_minibatches=2, update_epochs=2, eval_every=0, init_log_std=-0.5)
    sac = SACConfig(hidden=(32, 32), batch_size=32, learning_starts=64, eval_every=0)
    runs = {}
    for reset in (False, True):
        agent = GoRL(env, GoRLConfig(base=base, reset_latent=reset, **gorl, **SMALL_GORL), ppo, sac, seed=0)
        agent.learn(128, progress=False)
        assert len(agent.stages) == 1
        runs[reset] = agent.agent
    return runs


@pytest.mark.parametrize("base", ["ppo", "sac"])
def test_reset_latent_gives_a_fresh_latent_policy_and_keeps_the_critic(base):
    runs = _reset_twins(base)
    inner = runs[True]
    actor, opt = (inner.actor, inner.opt) if base == "ppo" else (inner.policy, inner.actor_opt)
    assert all(p not in opt.state for p in actor.parameters())  # the actor's Adam moments are dropped
    assert next(inner.critic.parameters()) in (inner.opt if base == "ppo" else inner.critic_opt).state
    twin = runs[False].actor if base == "ppo" else runs[False].policy
    assert torch.equal(next(inner.critic.parameters()), next(runs[False].critic.parameters()))  # critic kept
    assert not any(torch.equal(a, b) for a, b in zip(actor.parameters(), twin.parameters()))  # actor is new
    if base == "ppo":
        assert torch.equal(actor.log_std.detach(), torch.full((2,), -0.5))  # back at init_log_std
        assert not torch.equal(twin.log_std.detach(), torch.full((2,), -0.5))  # the trained one had moved


@pytest.mark.parametrize("base", ["ppo", "sac"])
def test_gaussian_latent_reset_restarts_the_latent_policy_at_standard_normal(base):
    env = "gendiff/TwoModes-v0" if base == "ppo" else "Pendulum-v1"
    ppo = PPOConfig(num_envs=2, num_steps=64, num_minibatches=2, update_epochs=2, eval_every=0, init_log_std=-0.5)
    sac = SACConfig(hidden=(32, 32), batch_size=32, learning_starts=64, eval_every=0)
    agent = GoRL(env, GoRLConfig(base=base, reset_latent=True, latent_reset_init="gaussian", **SMALL_GORL), ppo, sac,
                 seed=0)
    agent.learn(128, progress=False)
    assert len(agent.stages) == 1
    obs = torch.randn(16, agent.obs_dim)
    if base == "ppo":
        mean, log_std = agent.agent.actor.params(obs)
        assert float(agent.agent.actor.kl_to_standard_normal(obs).abs().max()) == 0.0  # exactly N(0, I)
    else:
        mean, log_std = agent.agent.policy(obs)  # pre-squash Gaussian
    assert torch.equal(mean, torch.zeros_like(mean)) and torch.equal(log_std, torch.zeros_like(log_std))
    with pytest.raises(ValueError, match="latent_reset_init"):
        GoRLConfig(latent_reset_init="zero")


@pytest.mark.parametrize("base", ["ppo", "sac"])
def test_recentre_latent_reset_keeps_the_hidden_layers_and_restarts_at_standard_normal(base):
    runs = _reset_twins(base, latent_reset_init="recentre")
    inner, twin = runs[True], runs[False]
    actor, opt = (inner.actor, inner.opt) if base == "ppo" else (inner.policy, inner.actor_opt)
    layers = list((actor.mean if base == "ppo" else actor.net).parameters())
    trained = list((twin.actor.mean if base == "ppo" else twin.policy.net).parameters())
    for p, q in zip(layers[:-2], trained[:-2]):  # hidden layers: kept, with their Adam moments
        assert torch.equal(p, q) and p in opt.state
    for p in layers[-2:]:  # output layer: zeroed, moments dropped
        assert not p.any() and p not in opt.state
    obs = torch.randn(16, inner.obs_dim)
    mean, log_std = actor.params(obs) if base == "ppo" else actor(obs)
    assert torch.equal(mean, torch.zeros_like(mean)) and torch.equal(log_std, torch.zeros_like(log_std))


@pytest.mark.parametrize("schedule", ["run", "stage"])
def test_lr_schedule_restarts_the_anneal_at_every_refit_with_stage(schedule):
    ppo = PPOConfig(num_envs=2, num_steps=64, num_minibatches=2, update_epochs=1, eval_every=0, lr=1e-3)
    small = {**SMALL_GORL, "stage_steps": 256}  # stages of 2 PPO iterations (128 env steps each)
    agent = GoRL("gendiff/TwoModes-v0", GoRLConfig(reset_latent=True, lr_schedule=schedule, **small), ppo, seed=0)
    seen: list[float] = []
    step = agent.agent.update

    def spy(*args, **kwargs):  # the learning rate each PPO iteration used
        seen.append(agent.agent.opt.param_groups[0]["lr"])
        return step(*args, **kwargs)

    agent.agent.update = spy
    agent.learn(512, progress=False)  # 4 iterations; refits after the 2nd and the 4th
    assert [s.step for s in agent.stages] == [256, 512]
    if schedule == "run":  # one anneal over the run's 4 iterations
        assert seen == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    else:  # 1 -> 0 within each stage, restarted at the refit
        assert seen == pytest.approx([1e-3, 5e-4, 1e-3, 5e-4])
    with pytest.raises(ValueError, match="lr_schedule"):
        GoRLConfig(lr_schedule="cosine")


def test_actor_lr_decay_restarts_the_actor_multiple_at_every_refit():
    """Step 6: with a constant rate the actor's multiple falls from actor_lr_scale (4) toward 1 within each stage
    and restarts at the refit; the critic keeps lr throughout."""
    ppo = PPOConfig(num_envs=2, num_steps=64, num_minibatches=2, update_epochs=1, eval_every=0, lr=1e-3,
                    anneal_lr=False, actor_lr_scale=4.0)
    small = {**SMALL_GORL, "stage_steps": 256}  # stages of 2 PPO iterations (128 env steps each)
    agent = GoRL("gendiff/TwoModes-v0", GoRLConfig(reset_latent=True, actor_lr_decay=True, **small), ppo, seed=0)
    seen: list[float] = []
    step = agent.agent.update

    def spy(*args, **kwargs):  # the actor's and the critic's rates each PPO iteration used
        seen.extend(g["lr"] for g in agent.agent.opt.param_groups)
        return step(*args, **kwargs)

    agent.agent.update = spy
    agent.learn(512, progress=False)  # 4 iterations; refits after the 2nd and the 4th
    assert [s.step for s in agent.stages] == [256, 512]
    # multiple 1 + 3 f with f = 1, 0.5 in each stage: 4, 2.5, then 4, 2.5 again after the refit
    assert seen == pytest.approx([4e-3, 1e-3, 2.5e-3, 1e-3, 4e-3, 1e-3, 2.5e-3, 1e-3])
    with pytest.raises(ValueError, match="actor_lr_decay"):
        GoRLConfig(base="sac", actor_lr_decay=True)


def test_stage_steps_list_gives_each_stage_its_length():
    # stages of 128, 256, then 128 repeated: refits after 128, 384 and 512 env steps (PPO iterations of 128)
    cfg = GoRLConfig(**{**SMALL_GORL, "stage_steps": [128, 256, 128]})
    assert [cfg.stage_length(k) for k in range(5)] == [128, 256, 128, 128, 128]
    ppo = PPOConfig(num_envs=2, num_steps=64, num_minibatches=2, update_epochs=1, eval_every=0)
    agent = GoRL("gendiff/TwoModes-v0", cfg, ppo, seed=0)
    agent.learn(512, progress=False)
    assert [s.step for s in agent.stages] == [128, 384, 512]
    # the int form keeps its meaning, and YAML / flag text is read as a list
    assert [GoRLConfig(stage_steps=50, first_stage_steps=100).stage_length(k) for k in range(3)] == [100, 50, 50]
    assert from_dict(GoRLConfig, {"stage_steps": "100,100,50"}).stage_steps == [100, 100, 50]
    with pytest.raises(ValueError, match="not both"):
        GoRLConfig(stage_steps=[100, 50], first_stage_steps=100)
    with pytest.raises(ValueError, match="stage_steps"):
        GoRLConfig(stage_steps=[100, 0])
    with pytest.raises(ValueError, match="stage_steps"):
        GoRLConfig(stage_steps=[])
    with pytest.raises(ValueError, match="first_stage_steps"):
        GoRLConfig(first_stage_steps=0)


def _record_refit_pairs(agent: GoRL) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Wrap the decoder's fit so that each refit's (obs, u) pairs are appended to the returned list."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    fit = agent.generative.fit

    def spy(obs, u, *args, **kwargs):
        seen.append((obs, u))
        return fit(obs, u, *args, **kwargs)

    agent.generative.fit = spy
    return seen


def test_final_policy_refit_data_are_the_final_latent_policy_through_the_old_decoder():
    # PPO base with a frozen latent policy N(1.5, 0.1^2) (lr 0): at the stage-0 refit the identity decoder's
    # inputs are the pairs, so the decoder is fitted on u ~ N(1.5, 0.1^2), not on the rollouts' actions
    ppo = PPOConfig(num_envs=2, num_steps=64, num_minibatches=2, update_epochs=1, eval_every=0, lr=0.0)
    agent = GoRL("gendiff/TwoModes-v0", GoRLConfig(decoder_data="final_policy", **SMALL_GORL), ppo, seed=0)
    out = agent.agent.actor.mean[-1]
    with torch.no_grad():
        out.weight.zero_()
        out.bias.fill_(1.5)
        agent.agent.actor.log_std.fill_(float(np.log(0.1)))
    seen = _record_refit_pairs(agent)
    agent.learn(128, progress=False)
    (obs, u), = seen
    assert obs.shape == (128, agent.obs_dim) and u.shape == (128, agent.act_dim)
    assert float(u.mean()) == pytest.approx(1.5, abs=0.03) and float(u.std()) == pytest.approx(0.1, abs=0.02)
    assert agent.stages[0].data_spread == pytest.approx(float(u.std(0).mean()))
    assert np.isfinite(agent.stages[0].policy_shift)
    # SAC base: z from the latent tanh-Gaussian over the box [-L, L], then the current decoder
    sac = SACConfig(hidden=(32, 32), batch_size=32, learning_starts=64, eval_every=0)
    agent = GoRL("Pendulum-v1", GoRLConfig(base="sac", decoder_data="final_policy", **SMALL_GORL), None, sac, seed=0)
    with torch.no_grad():
        agent.agent.policy.net[-1].weight.zero_()
        agent.agent.policy.net[-1].bias.copy_(torch.tensor([0.5, -9.0]))  # mean 0.5, std ~ 1e-4
    u = agent._final_policy_actions(torch.randn(64, agent.obs_dim), torch.Generator().manual_seed(0))
    assert torch.allclose(u, torch.full_like(u, 3.0 * np.tanh(0.5)), atol=1e-3)
    with pytest.raises(ValueError, match="decoder_data"):
        GoRLConfig(decoder_data="best")


def test_final_policy_draws_redraw_several_actions_per_state_and_policy_shift_measures_the_refit():
    # K = 3 redraws of the frozen latent policy N(-1, 0.2^2) per recent state: 3 x 128 pairs, the states repeated
    ppo = PPOConfig(num_envs=2, num_steps=64, num_minibatches=2, update_epochs=1, eval_every=0, lr=0.0)
    cfg = GoRLConfig(decoder_data="final_policy", final_policy_draws=3, reset_latent=True,
                     latent_reset_init="gaussian", **SMALL_GORL)
    agent = GoRL("gendiff/TwoModes-v0", cfg, ppo, seed=0)
    with torch.no_grad():
        agent.agent.actor.mean[-1].weight.zero_()
        agent.agent.actor.mean[-1].bias.fill_(-1.0)
        agent.agent.actor.log_std.fill_(float(np.log(0.2)))
    gen = torch.Generator().manual_seed(1)
    states = torch.randn(32, agent.obs_dim)
    mean, noise = agent._mean_action(states, gen, draws=4096)
    assert torch.allclose(mean, torch.full((32, agent.act_dim), -1.0), atol=0.02)
    assert torch.allclose(noise, torch.full_like(noise, 0.2**2 / 4096), rtol=0.2)  # var of the 4096-draw mean
    seen = _record_refit_pairs(agent)
    agent.learn(128, progress=False)
    (obs, u), = seen
    assert obs.shape == (3 * 128, agent.obs_dim) and torch.equal(obs[:128], obs[128:256])
    assert not torch.equal(u[:128], u[128:256])  # fresh draws, not copies
    assert float(u.mean()) == pytest.approx(-1.0, abs=0.05) and agent.stages[0].pairs == 3 * 128
    # after the swap the latent policy is N(0, I) through the new decoder; policy_shift (on the 128 recent states)
    # is the RMS distance of its mean action from -1, the fit error of this 5-step fit
    after, _ = agent._mean_action(obs[:128], gen, draws=4096)
    assert agent.stages[0].policy_shift == pytest.approx(float((after + 1.0).square().mean().sqrt()), abs=0.03)
    # SAC base: the stage's 128 buffered states (the buffer is emptied at each refit), 2 draws each
    sac = SACConfig(hidden=(32, 32), batch_size=32, learning_starts=64, eval_every=0)
    agent = GoRL("Pendulum-v1", GoRLConfig(base="sac", decoder_data="final_policy", final_policy_draws=2,
                                           **SMALL_GORL), None, sac, seed=0)
    agent.learn(300, progress=False)
    assert [st.pairs for st in agent.stages] == [2 * 128, 2 * 128]
    with pytest.raises(ValueError, match="final_policy_draws"):
        GoRLConfig(final_policy_draws=0)


@pytest.mark.parametrize("base", ["ppo", "sac"])
def test_gorl_reaches_its_base_learner_through_the_latent_learner_protocol(base):
    from gendiff.rl.latent import LATENT_BASES, LatentLearner

    sac = SACConfig(hidden=(32, 32), batch_size=32, learning_starts=64, eval_every=0)
    agent = GoRL("gendiff/TwoModes-v0", GoRLConfig(base=base, **SMALL_GORL), PPOConfig(num_envs=2, num_steps=16,
                                                                                  num_minibatches=2), sac, seed=0)
    assert isinstance(agent.base, LatentLearner) and type(agent.base) is LATENT_BASES[base]
    assert agent.agent is agent.base.learner and isinstance(agent.agent, PPO if base == "ppo" else SAC)
    actor, opt = agent.base.latent_actor()
    assert all(any(p is q for g in opt.param_groups for q in g["params"]) for p in actor.parameters())
    assert all(any(p is q for q in actor.parameters()) for p in agent.base.standard_normal_params())
    z = agent.base.sample_latent(torch.zeros(5, agent.obs_dim), generator=torch.Generator().manual_seed(0))
    assert z.shape == (5, agent.act_dim)


def test_gorl_source_has_no_isinstance_against_its_base_learners():
    import inspect
    import re

    import gendiff.rl.gorl as gorl

    source = inspect.getsource(gorl)
    assert not re.search(r"isinstance\([^)]*\b(PPO|SAC)\b", source)
    assert not re.search(r"hasattr\(", source)
