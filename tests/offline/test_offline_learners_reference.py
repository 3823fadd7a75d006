"""The fast learners take the same steps as CORL's updates written out plainly (float64, several updates).

Each reference below is CORL's ``train`` (td3_bc.py / iql.py) on two separate critics (``TwinQ.q1`` / ``q2``),
plain ``torch.optim.Adam`` and, for IQL, ``CosineAnnealingLR``; the learner runs its own path (one batched
ensemble critic with a hand-written backward, fused Adam, one foreach Polyak update, the closed-form cosine
learning rate, packed rows). Same initial weights, same batches, same target-noise draws: the weights must
agree after every update.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F  # noqa: N812

from gendiff.offline.ensemble import EnsembleQ
from gendiff.offline.iql import IQL, IQLConfig
from gendiff.offline.learners import expectile_loss
from gendiff.offline.td3bc import TD3BC, TD3BCConfig
from gendiff.rl.common import soft_update
from gendiff.rl.sac import TwinQ

OBS, ACT, N = 5, 3, 96


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"obs": torch.randn(N, OBS, generator=g), "act": torch.rand(N, ACT, generator=g) * 2 - 1,
            "rew": torch.randn(N, generator=g), "next_obs": torch.randn(N, OBS, generator=g),
            "done": (torch.rand(N, generator=g) < 0.2).float()}


def _with_reference_critics(agent: TD3BC | IQL, hidden: tuple[int, ...]) -> tuple[TwinQ, TwinQ]:
    """Two separate critics (and targets) with the learner's weights, everything in float64."""
    for m in agent.__dict__.values():
        if isinstance(m, torch.nn.Module):
            m.double()  # in place: the optimisers and Polyak lists keep their parameter objects
    twin = TwinQ(OBS, ACT, hidden).double()
    agent.critic.net.load_members([twin.q1, twin.q2])
    agent.critic_target.net.load_members([twin.q1, twin.q2])
    return twin, copy.deepcopy(twin).requires_grad_(False)


def _close(ours: torch.nn.Module, ref_nets: list[torch.nn.Module]) -> None:
    """Weights equal: an EnsembleQ against its two reference critics, or a module against its reference copy."""
    if isinstance(ours, EnsembleQ):
        linears = [[m for m in net if isinstance(m, torch.nn.Linear)] for net in ref_nets]
        for w, b, lins in zip(ours.net.weights, ours.net.biases, zip(*linears), strict=True):
            torch.testing.assert_close(w, torch.stack([lin.weight for lin in lins]), rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(b[:, 0], torch.stack([lin.bias for lin in lins]), rtol=1e-9, atol=1e-12)
    else:
        for p, q in zip(ours.parameters(), ref_nets[0].parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


def test_td3bc_updates_equal_corl_td3bc():
    hidden, data = (16, 16), _data()
    cfg = TD3BCConfig(hidden=hidden)
    agent = TD3BC(OBS, ACT, [-1.0] * ACT, [1.0] * ACT, data["obs"], cfg, seed=3)
    twin, twin_t = _with_reference_critics(agent, hidden)
    actor, actor_t = copy.deepcopy(agent.actor), copy.deepcopy(agent.actor_target)
    opt_a = torch.optim.Adam(actor.parameters(), lr=cfg.lr)
    opt_c1, opt_c2 = (torch.optim.Adam(q.parameters(), lr=cfg.lr) for q in (twin.q1, twin.q2))
    noise_gen = torch.Generator().manual_seed(3)  # the learner's generator: the same target-noise draws
    rows = agent.pack(data).double()
    g = torch.Generator().manual_seed(1)
    for it in range(1, 7):
        batch = rows[torch.randint(0, N, (32,), generator=g)]
        agent.learn(batch)
        b = agent.split(batch)
        state, action, reward, next_state, done = b.obs, b.act, b.rew, b.next_obs, b.done
        # CORL td3_bc.py TD3_BC.train, line by line (max_action 1)
        with torch.no_grad():
            noise = (torch.randn(action.shape, generator=noise_gen) * cfg.policy_noise).clamp(-cfg.noise_clip,
                                                                                              cfg.noise_clip)
            next_action = (actor_t(next_state) + noise).clamp(-1.0, 1.0)
            sa_next = torch.cat([next_state, next_action], 1)
            target_q = torch.min(twin_t.q1(sa_next), twin_t.q2(sa_next)).squeeze(-1)
            target_q = reward + (1 - done) * cfg.gamma * target_q
        sa = torch.cat([state, action], 1)
        critic_loss = F.mse_loss(twin.q1(sa).squeeze(-1), target_q) + F.mse_loss(twin.q2(sa).squeeze(-1), target_q)
        opt_c1.zero_grad()
        opt_c2.zero_grad()
        critic_loss.backward()
        opt_c1.step()
        opt_c2.step()
        if it % cfg.policy_freq == 0:
            pi = actor(state)
            q = twin.q1(torch.cat([state, pi], 1))
            lmbda = cfg.alpha / q.abs().mean().detach()
            actor_loss = -lmbda * q.mean() + F.mse_loss(pi, action)
            opt_a.zero_grad()
            actor_loss.backward()
            opt_a.step()
            for tgt, src in ((twin_t, twin), (actor_t, actor)):
                soft_update(tgt, src, cfg.tau)
        _close(agent.critic, [twin.q1, twin.q2])
        _close(agent.critic_target, [twin_t.q1, twin_t.q2])
        _close(agent.actor, [actor])
        _close(agent.actor_target, [actor_t])
    assert agent.steps == 6


def test_iql_updates_equal_corl_iql():
    hidden, data = (16, 16), _data()
    cfg = IQLConfig(hidden=hidden, total_steps=8)  # a short cosine horizon: the learning rate changes every step
    agent = IQL(OBS, ACT, [-1.0] * ACT, [1.0] * ACT, data["obs"], cfg, seed=3)
    twin, twin_t = _with_reference_critics(agent, hidden)
    actor, value = copy.deepcopy(agent.actor), copy.deepcopy(agent.value)
    opt_a, opt_v, opt_q = (torch.optim.Adam(m.parameters(), lr=cfg.lr) for m in (actor, value, twin))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_a, cfg.total_steps)
    rows = agent.pack(data).double()
    g = torch.Generator().manual_seed(1)
    for _ in range(6):
        batch = rows[torch.randint(0, N, (32,), generator=g)]
        agent.learn(batch)
        b = agent.split(batch)
        observations, actions, rewards, next_observations, dones = b.obs, b.act, b.rew, b.next_obs, b.done
        # CORL iql.py ImplicitQLearning.train, line by line
        with torch.no_grad():
            next_v = value(next_observations).squeeze(-1)
        with torch.no_grad():  # _update_v
            sa = torch.cat([observations, actions], 1)
            target_q = torch.min(twin_t.q1(sa), twin_t.q2(sa)).squeeze(-1)
        v = value(observations).squeeze(-1)
        adv = target_q - v
        v_loss = expectile_loss(adv, cfg.expectile)
        opt_v.zero_grad()
        v_loss.backward()
        opt_v.step()
        targets = rewards + (1.0 - dones) * cfg.gamma * next_v  # _update_q
        qs = (twin.q1(sa).squeeze(-1), twin.q2(sa).squeeze(-1))
        q_loss = sum(F.mse_loss(q, targets) for q in qs) / len(qs)
        opt_q.zero_grad()
        q_loss.backward()
        opt_q.step()
        soft_update(twin_t, twin, cfg.tau)
        exp_adv = torch.exp(cfg.beta * adv.detach()).clamp(max=cfg.exp_adv_max)  # _update_policy
        mean, log_std = actor(observations)
        bc_losses = -torch.distributions.Normal(mean, log_std.exp()).log_prob(actions).sum(-1)
        policy_loss = torch.mean(exp_adv * bc_losses)
        opt_a.zero_grad()
        policy_loss.backward()
        opt_a.step()
        sched.step()
        _close(agent.critic, [twin.q1, twin.q2])
        _close(agent.critic_target, [twin_t.q1, twin_t.q2])
        _close(agent.value, [value])
        _close(agent.actor, [actor])
        assert abs(agent.actor_opt.param_groups[0]["lr"] - opt_a.param_groups[0]["lr"]) <= 1e-12 * cfg.lr
    assert agent.steps == 6 and agent.actor_opt.param_groups[0]["lr"] < 0.2 * cfg.lr  # the decay took effect
