"""PPO: GAE against a slow reference, observation statistics, the mixture head's density, smoke runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from gendiff.entropy import gaussian_log_prob
from gendiff.rl.common import RunningMeanStd
from gendiff.rl.pmoe import MixtureGaussianHead
from gendiff.rl.ppo import PPO, PPOConfig

TINY = {"num_envs": 2, "num_steps": 64, "num_minibatches": 2, "update_epochs": 2, "eval_every": 128,
        "eval_episodes": 2}


def test_gae_matches_slow_reference():
    cfg = PPOConfig(gamma=0.9, gae_lambda=0.8, num_envs=3, num_steps=6, num_minibatches=1)
    agent = PPO(2, 1, np.array([-1.0]), np.array([1.0]), cfg)
    gen = torch.Generator().manual_seed(0)
    ro = {"rew": torch.randn(6, 3, generator=gen), "value": torch.randn(6, 3, generator=gen),
          "done": (torch.rand(6, 3, generator=gen) < 0.3).float()}
    last_v = torch.randn(3, generator=gen)
    adv, ret = agent._gae(ro, last_v)
    for env in range(3):  # direct sum over future TD errors, cut at episode ends
        for t in range(6):
            total, coef = 0.0, 1.0
            for k in range(t, 6):
                nv = last_v[env] if k == 5 else ro["value"][k + 1, env]
                nonterm = 1 - ro["done"][k, env]
                delta = ro["rew"][k, env] + 0.9 * nv * nonterm - ro["value"][k, env]
                total += coef * delta
                if nonterm == 0:
                    break
                coef *= 0.9 * 0.8
            assert adv[t, env] == pytest.approx(float(total), abs=1e-5)
    torch.testing.assert_close(ret, adv + ro["value"])


def test_running_mean_std_matches_numpy():
    rms = RunningMeanStd(3)
    data = np.random.default_rng(0).normal(2.0, 3.0, size=(500, 3))
    for chunk in np.array_split(data, 7):
        rms.update(chunk)
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0), rtol=1e-6)
    np.testing.assert_allclose(rms.var.numpy(), data.var(0), rtol=1e-4)


def test_mixture_head_density():
    torch.manual_seed(0)
    head = MixtureGaussianHead(2, 1, (16,), num_experts=3)
    obs = torch.randn(4, 2)
    grid = torch.linspace(-30, 30, 60_001)[:, None]
    for i in range(4):  # integrates to one over a fine grid (1-D)
        o = obs[i:i + 1].expand(grid.shape[0], 2)
        with torch.no_grad():
            logp, _ = head.log_prob_entropy(o, grid)
        assert float(logp.exp().sum() * (grid[1] - grid[0])) == pytest.approx(1.0, abs=1e-3)
    one = MixtureGaussianHead(2, 2, (16,), num_experts=1)
    u = torch.randn(4, 2)
    log_w, mean, log_std = one.params(obs)
    torch.testing.assert_close(one.log_prob_entropy(obs, u)[0], gaussian_log_prob(u, mean[:, 0], log_std[:, 0]))


def test_config_errors():
    with pytest.raises(ValueError, match="divisible"):
        PPOConfig(num_envs=3, num_steps=5, num_minibatches=2)
    with pytest.raises(ValueError, match="head='gaussian'"):
        PPOConfig(head="pmoe", latent_kl_coef=0.1)


@pytest.mark.parametrize("env_id", ["gendiff/TwoModes-v0", "Pendulum-v1"])
@pytest.mark.parametrize("head", ["gaussian", "pmoe"])
def test_smoke_runs(env_id, head):
    agent = PPO.from_env(env_id, PPOConfig(**TINY, head=head), seed=0)
    before = [p.detach().clone() for p in agent.actor.parameters()]
    log = agent.learn(env_id, 256, seed=0, progress=False)
    assert log.steps == [128, 256] and np.isfinite(log.eval_mean).all()
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.actor.parameters()))
    a = agent.act(np.zeros((3, agent.obs_dim), dtype=np.float32))
    assert a.shape == (3, agent.act_dim)
    assert (a >= agent.scaler.to_env(-torch.ones(1)).numpy() - 1e-6).all()


def test_actor_lr_scale_scales_the_actor_step_only():
    """One Adam step from the same seed: with actor_lr_scale 2 the actor moves exactly twice as far and the
    critic the same; a config replaced on the agent takes effect at its next learn."""
    with pytest.raises(ValueError, match="actor_lr_scale"):
        PPOConfig(actor_lr_scale=-1.0)
    one_step = {**TINY, "num_minibatches": 1, "update_epochs": 1, "eval_every": 0, "anneal_lr": False}
    moves = {}
    for scale in (1.0, 2.0):
        agent = PPO.from_env("Pendulum-v1", PPOConfig(**one_step, actor_lr_scale=scale), seed=0)
        before = [p.detach().clone() for net in (agent.actor, agent.critic) for p in net.parameters()]
        agent.learn("Pendulum-v1", 128, seed=0, progress=False)  # one rollout of 2 x 64 steps, one step
        after = [p.detach() for net in (agent.actor, agent.critic) for p in net.parameters()]
        n_actor = len(list(agent.actor.parameters()))
        moves[scale] = [a - b for a, b in zip(after, before)]
        assert [g["lr"] for g in agent.opt.param_groups] == pytest.approx([3e-4 * scale, 3e-4])
    for i, (m1, m2) in enumerate(zip(moves[1.0], moves[2.0])):
        torch.testing.assert_close(m2, 2 * m1 if i < n_actor else m1, rtol=1e-4, atol=1e-7)
    agent.config = dataclasses.replace(agent.config, actor_lr_scale=0.5)
    agent.learn("Pendulum-v1", 128, seed=1, progress=False)
    assert [g["lr"] for g in agent.opt.param_groups] == pytest.approx([1.5e-4, 3e-4])
