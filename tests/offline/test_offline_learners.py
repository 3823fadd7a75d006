"""Offline learners: IQL expectile loss, TD3+BC's normalised Q term, target updates, known-answer runs."""

from __future__ import annotations

import pytest
import torch
from conftest import line_dataset

from gendiff.offline.iql import IQL, IQLConfig
from gendiff.offline.learners import OFFLINE_LEARNERS, build_learner, expectile_loss
from gendiff.offline.prdc import PRDCConfig
from gendiff.offline.td3bc import TD3BC, TD3BCConfig, td3bc_actor_loss


def test_expectile_loss_values_and_minimiser():
    diff = torch.tensor([-1.0, 2.0])
    assert expectile_loss(diff, 0.7).item() == pytest.approx((0.3 * 1 + 0.7 * 4) / 2)
    # the minimiser m of E L_tau(x - m) is the tau-expectile: sum_i w_i (x_i - m) = 0, solved by bisection
    x = torch.tensor([0.0, 1.0, 5.0, -2.0, 3.0])
    lo, hi = -2.0, 5.0
    for _ in range(60):
        m = (lo + hi) / 2
        w = torch.where(x - m < 0, 0.1, 0.9)
        lo, hi = (m, hi) if (w * (x - m)).sum() > 0 else (lo, m)
    v = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.1)
    for _ in range(3000):
        opt.zero_grad()
        expectile_loss(x - v, 0.9).backward()
        opt.step()
    assert v.item() == pytest.approx(m, abs=1e-3)
    assert expectile_loss(x - x.mean(), 0.5) <= expectile_loss(x - x.mean() - 0.1, 0.5)
    with pytest.raises(ValueError, match="expectile"):
        expectile_loss(diff, 1.0)


def test_td3bc_q_term_is_scale_free():
    torch.manual_seed(0)
    pi = torch.randn(32, 3, requires_grad=True)
    act = torch.randn(32, 3)
    grads = []
    for scale in (1.0, 100.0):
        q = scale * (pi * torch.tensor([1.0, -2.0, 0.5])).sum(-1)
        loss, metrics = td3bc_actor_loss(q, pi, act, alpha=2.5)
        (g,) = torch.autograd.grad(loss, pi)
        grads.append(g)
        assert metrics["actor/lambda"] == pytest.approx(2.5 / q.abs().mean().item(), rel=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)  # lambda = alpha / mean|Q| cancels Q's scale
    # with Q constant the loss is pure behaviour cloning: MSE(pi, a)
    loss, _ = td3bc_actor_loss(torch.ones(32), pi, act, alpha=2.5)
    assert loss.item() == pytest.approx((-2.5 + (pi - act).square().mean()).item(), rel=1e-5)


def _transitions(n: int = 64):
    g = torch.Generator().manual_seed(0)
    return {"obs": torch.randn(n, 4, generator=g), "act": torch.rand(n, 2, generator=g) * 2 - 1,
            "rew": torch.randn(n, generator=g), "next_obs": torch.randn(n, 4, generator=g), "done": torch.zeros(n)}


def test_soft_target_updates():
    tr = _transitions()
    agent = TD3BC(4, 2, [-1, -1], [1, 1], tr["obs"], TD3BCConfig(hidden=(16,), tau=0.1))
    before_c = [p.clone() for p in agent.critic_target.parameters()]
    before_a = [p.clone() for p in agent.actor_target.parameters()]
    agent.update(tr)  # step 1: critic only, no target update (policy delay 2)
    assert all(torch.equal(a, b) for a, b in zip(before_c, agent.critic_target.parameters()))
    agent.update(tr)  # step 2: actor + both targets
    for old, new, tgt in zip(before_c, agent.critic.parameters(), agent.critic_target.parameters()):
        assert torch.allclose(tgt, 0.9 * old + 0.1 * new, atol=1e-6)
    for old, new, tgt in zip(before_a, agent.actor.parameters(), agent.actor_target.parameters()):
        assert torch.allclose(tgt, 0.9 * old + 0.1 * new, atol=1e-6)
    iql = IQL(4, 2, [-1, -1], [1, 1], tr["obs"], IQLConfig(hidden=(16,), tau=0.2))
    before = [p.clone() for p in iql.critic_target.parameters()]
    iql.update(tr)
    for old, new, tgt in zip(before, iql.critic.parameters(), iql.critic_target.parameters()):
        assert torch.allclose(tgt, 0.8 * old + 0.2 * new, atol=1e-6)


def test_actor_rows_move_only_the_actors_step():
    """``learn(rows, actor_rows)`` (the actor_batch=real diagnostic): the critic's step is the one on ``rows``, the
    actor's step is the one it would take on ``actor_rows``, for TD3+BC and IQL."""
    import copy

    tr, other = _transitions(), _transitions(96)
    base = TD3BC(4, 2, [-1, -1], [1, 1], tr["obs"], TD3BCConfig(hidden=(16,)), seed=3)
    rows, a_rows = base.pack(tr), base.pack({k: v[:64] + 0.5 * (k != "done") for k, v in other.items()})
    mixed, split = copy.deepcopy(base), copy.deepcopy(base)
    for _ in range(2):  # step 2 holds the actor's step (policy delay 2)
        m_mixed, m_split = mixed.learn(rows), split.learn(rows, a_rows)
    assert all(torch.equal(a, b) for a, b in zip(mixed.critic.parameters(), split.critic.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(mixed.actor.parameters(), split.actor.parameters()))
    # the split agent's actor took the step TD3+BC takes on a_rows from the same critic
    ref = copy.deepcopy(base)
    ref.learn(rows)
    ref.steps += 1
    ref.critic_update(ref.split(rows))
    ref.actor_update(ref.split(a_rows))
    assert all(torch.equal(a, b) for a, b in zip(ref.actor.parameters(), split.actor.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ref.critic_target.parameters(), split.critic_target.parameters()))
    assert m_split["actor/bc_mse"] != m_mixed["actor/bc_mse"]
    # IQL: the same rows as actor_rows give the plain update exactly; other rows move its actor only
    iql = IQL(4, 2, [-1, -1], [1, 1], tr["obs"], IQLConfig(hidden=(16,)), seed=3)
    plain, same, other_rows = copy.deepcopy(iql), copy.deepcopy(iql), copy.deepcopy(iql)
    for _ in range(2):
        plain.learn(rows)
        same.learn(rows, rows)
        other_rows.learn(rows, a_rows)
    for net in ("actor", "value", "critic", "critic_target"):
        p_plain, p_same, p_other = (list(getattr(a, net).parameters()) for a in (plain, same, other_rows))
        assert all(torch.equal(a, b) for a, b in zip(p_plain, p_same)), net
        moved = not all(torch.equal(a, b) for a, b in zip(p_plain, p_other))
        assert moved == (net == "actor"), net


def test_prdc_pulls_toward_nearest_dataset_pair():
    tr = _transitions(50)
    agent = build_learner("prdc", tr, [-1, -1], [1, 1], PRDCConfig(hidden=(16,)))
    obs_n = agent.state_norm(tr["obs"][:10])
    target = agent.bc_regulariser(obs_n, tr["act"][:10], tr["act"][:10])
    assert torch.allclose(target, tr["act"][:10])  # at a dataset pair the nearest neighbour is that pair


def test_bad_input():
    tr = _transitions()
    with pytest.raises(KeyError, match="valid names: iql, prdc, td3bc"):
        OFFLINE_LEARNERS.get("cql")
    agent = build_learner("td3bc", tr, [-1, -1], [1, 1], TD3BCConfig(hidden=(16,)))
    bad = dict(tr, obs=tr["obs"].clone())
    bad["obs"][3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        agent.update(bad)
    with pytest.raises(KeyError, match="done"):
        agent.update({k: v for k, v in tr.items() if k != "done"})


@pytest.mark.parametrize("algo", ["td3bc", "iql"])
def test_learners_reach_expert_on_known_answer_data(algo):
    torch.manual_seed(0)
    ds = line_dataset()
    tr = ds.transitions()
    cfg = OFFLINE_LEARNERS.get(algo).config_class(hidden=(64, 64))
    agent = build_learner(algo, tr, ds.action_low, ds.action_high, cfg, seed=0)
    g = torch.Generator().manual_seed(0)
    for _ in range(600):
        idx = torch.randint(0, tr["obs"].shape[0], (128,), generator=g)
        agent.update({k: v[idx] for k, v in tr.items()})
    res = agent.evaluate(ds.env_id, episodes=10, ref=(ds.ref_min_score, ds.ref_max_score))
    assert res["episodes"] == 10
    assert res["score_mean"] > 90.0, res  # random policy = 0, expert = 100


@pytest.mark.gpu
@pytest.mark.parametrize("algo", ["td3bc", "iql", "prdc"])
def test_learn_on_cuda_never_synchronises_with_the_host(algo):
    """The training loop's path (BatchSampler.sample + learn) runs on the GPU with no host sync at all."""
    from gendiff.offline.pgd_loop import BatchSampler

    tr = _transitions(512)
    agent = build_learner(algo, tr, [-1, -1], [1, 1], OFFLINE_LEARNERS.get(algo).config_class(hidden=(32, 32)),
                          device="cuda")
    sampler = BatchSampler(agent, tr, 64, 16, seed=0)
    sampler.set_synthetic(_transitions(256))
    agent.learn(sampler.sample())  # first call: lazy CUDA / cuBLAS initialisation may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(4):  # covers the actor's every-2nd-update branch
            metrics = agent.learn(sampler.sample())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(v.device.type == "cuda" and torch.isfinite(v) for v in metrics.values())
    assert agent.act(tr["obs"][:3].numpy()).shape == (3, 2)
