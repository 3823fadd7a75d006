"""SAC: temperature tuning, log-prob against torch.distributions, save/load, buffer, soft update, smoke runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from gendiff.rl.common import ReplayBuffer, soft_update
from gendiff.rl.pmoe import PMOESAC, PMOESACConfig
from gendiff.rl.sac import SAC, SACConfig

SMALL = {"hidden": (32, 32), "batch_size": 64}


def _toy_batch(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One-step bandit: reward -10 (a - 0.5)^2 on actions uniform in (-1, 1)."""
    act = torch.rand(n, 1, generator=gen) * 2 - 1
    return {"obs": torch.randn(n, 2, generator=gen), "act": act, "rew": -10 * (act[:, 0] - 0.5) ** 2,
            "next_obs": torch.zeros(n, 2), "done": torch.ones(n)}


@pytest.mark.parametrize("target", [-2.0, 0.0])
def test_temperature_moves_toward_target_entropy(target):
    torch.manual_seed(0)
    above = target < -1.0  # -2: the fresh policy has more entropy than the target
    cfg = SACConfig(**SMALL, lr=3e-3, target_entropy=target, init_alpha=1.0 if above else 1e-3)
    agent = SAC(2, 1, [-1.0], [1.0], cfg, seed=0)
    gen = torch.Generator().manual_seed(1)
    if not above:  # first make the policy sharper than the target with a fixed tiny alpha
        agent.config.autotune = False
        for _ in range(300):
            agent.update(_toy_batch(64, gen))
        agent.config.autotune = True
    first = agent.update(_toy_batch(64, gen))
    h0, alpha0 = first["actor/entropy"], agent.alpha
    assert (h0 > target) == above
    for _ in range(300):
        m = agent.update(_toy_batch(64, gen))
    assert (agent.alpha < alpha0) if above else (agent.alpha > alpha0)
    assert abs(m["actor/entropy"] - target) < abs(h0 - target)


def test_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    low, high = [-2.0, 0.0], [2.0, 1.0]
    agent = SAC(3, 2, low, high, SACConfig(**SMALL))
    obs = torch.randn(16, 3)
    act = agent.policy.act(obs)  # strictly inside the box
    mean, log_std = agent.policy(obs)
    center, half = torch.tensor([0.0, 0.5]), torch.tensor([2.0, 0.5])
    ref = TransformedDistribution(Normal(mean.double(), log_std.exp().double()),
                                  [TanhTransform(), AffineTransform(center.double(), half.double())])
    squashed = (act.double() - center) / half
    inside = squashed.abs().max(-1).values < 0.999  # log_prob clips beyond 1 - 1e-3
    expected = ref.log_prob(act.double()).sum(-1)
    got = agent.policy.log_prob(obs, act)
    torch.testing.assert_close(got[inside].double(), expected[inside], rtol=1e-4, atol=1e-3)
    assert inside.sum() >= 4


@pytest.mark.parametrize("cls,cfg", [(SAC, SACConfig(**SMALL)), (PMOESAC, PMOESACConfig(**SMALL, num_experts=3))])
def test_save_load_round_trip(tmp_path, cls, cfg):
    agent = cls(3, 2, [-1.0, -2.0], [1.0, 2.0], cfg, seed=3)
    gen = torch.Generator().manual_seed(0)
    batch = {"obs": torch.randn(64, 3, generator=gen), "act": torch.rand(64, 2, generator=gen) * 2 - 1,
             "rew": torch.randn(64, generator=gen), "next_obs": torch.randn(64, 3, generator=gen),
             "done": torch.zeros(64)}
    for _ in range(3):
        agent.update(batch)
    agent.save(tmp_path / "agent")
    loaded = cls.load(tmp_path / "agent")
    assert type(loaded.config) is type(cfg) and loaded.alpha == pytest.approx(agent.alpha)
    obs, act = torch.randn(8, 3), torch.rand(8, 2) * 2 - 1
    torch.testing.assert_close(loaded.policy.log_prob(obs, act), agent.policy.log_prob(obs, act))
    np.testing.assert_array_equal(loaded.policy.act(obs.numpy(), deterministic=True),
                                  agent.policy.act(obs.numpy(), deterministic=True))
    torch.testing.assert_close(loaded.critic_target(obs, act), agent.critic_target(obs, act))


def test_load_missing_files_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved SAC agent"):
        SAC.load(tmp_path)


def test_soft_update_and_replay_buffer():
    src, tgt = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = [0.9 * t.detach() + 0.1 * s.detach() for t, s in zip(tgt.parameters(), src.parameters())]
    soft_update(tgt, src, 0.1)
    for p, e in zip(tgt.parameters(), expected):
        torch.testing.assert_close(p.detach(), e)
    with pytest.raises(ValueError, match="tau"):
        soft_update(tgt, src, 1.5)
    buf = ReplayBuffer(2, 1, capacity=5)
    for i in range(7):  # wraps around
        buf.add(np.full((1, 2), i), np.full((1, 1), i), np.array([i]), np.full((1, 2), i), np.array([0.0]))
    assert buf.size == 5 and sorted(buf.rew.tolist()) == [2, 3, 4, 5, 6]
    assert buf.recent(2)["rew"].tolist() == [6.0, 5.0]


@pytest.mark.parametrize("env_id", ["gendiff/TwoModes-v0", "Pendulum-v1"])
@pytest.mark.parametrize("cls,cfg_cls", [(SAC, SACConfig), (PMOESAC, PMOESACConfig)])
def test_smoke_runs(env_id, cls, cfg_cls):
    cfg = cfg_cls(**SMALL, learning_starts=100, eval_every=300, eval_episodes=2, num_envs=2)
    agent = cls.from_env(env_id, cfg, seed=0)
    log = agent.learn(env_id, 300, seed=0, progress=False)
    assert log.steps == [300] and np.isfinite(log.eval_mean).all()
    assert np.isfinite(list(log.metrics.values())).all() and "loss/critic" in log.metrics
