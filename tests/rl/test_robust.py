"""State-adversarial attacks, EXP3 and the non-dominated policy set (known answers; real gymnasium MuJoCo)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from gendiff.config import from_dict, load_yaml
from gendiff.rl.attacks import (
    AttackedObservation,
    AttackedVectorObservation,
    AttackSpec,
    StateAttack,
    attacked_act,
    evaluate_policies_under_attack,
    ppo_policy,
)
from gendiff.rl.common import evaluate, make_vec_env
from gendiff.rl.exp3 import EXP3, exp3_gamma, run_exp3
from gendiff.rl.nondominated import (
    NonDominatedConfig,
    adaptive_defence,
    attack_grid,
    defence_table,
    discover,
    dominated,
    trained_steps,
)
from gendiff.rl.ppo import PPO, PPOConfig

ROOT = Path(__file__).resolve().parents[2]
ENV = "InvertedPendulum-v5"


@pytest.mark.parametrize("kind", ["random", "mad"])
def test_perturbation_stays_in_the_ball(kind):
    w = torch.tensor([[0.5, -2.0, 0.0, 1.0], [1.0, 1.0, -1.0, 0.2]])
    policy = lambda o: torch.tanh(o @ w.T)  # noqa: E731
    obs = torch.randn(64, 4)
    for eps in (0.0, 0.03, 0.5):
        delta = StateAttack(AttackSpec(kind, eps), steps=5, seed=1).delta(obs, policy)
        assert delta.shape == obs.shape and delta.abs().max() <= eps + 1e-7
        if eps and kind == "random":
            assert delta.abs().max() > 0.9 * eps  # it uses the ball, not a point
    assert (StateAttack(AttackSpec("none", 0.3)).delta(obs) == 0).all()


@pytest.mark.parametrize("steps", [1, 3])
def test_mad_attack_moves_a_linear_policy_by_the_analytic_maximum(steps):
    w, b, eps = torch.tensor([0.5, -2.0, 0.0, 1.5]), 0.3, 0.1
    policy = lambda o: (o @ w + b)[:, None]  # noqa: E731  pi(s) = w.s + b, one action
    obs = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    delta = StateAttack(AttackSpec("mad", eps), steps=steps, seed=2).delta(obs, policy)
    moved = (policy(obs + delta) - policy(obs)).abs()[:, 0]
    assert torch.allclose(moved, torch.full_like(moved, eps * w.abs().sum().item()), atol=1e-5)  # eps ||w||_1
    nz = w != 0  # delta = +-eps sign(w) on the coordinates that matter
    assert torch.allclose(delta[:, nz].abs(), torch.full_like(delta[:, nz], eps))
    sign = torch.sign(delta[:, nz] * w[nz])
    assert (sign == sign[:, :1]).all()
    # a random perturbation of the same size moves it less
    rand = StateAttack(AttackSpec("random", eps), seed=2).delta(obs, policy)
    assert ((policy(obs + rand) - policy(obs)).abs()[:, 0] < moved - 1e-6).float().mean() > 0.9


def test_attack_wrappers_and_bad_input():
    with pytest.raises(ValueError, match="kind"):
        AttackSpec("fgsm", 0.1)
    with pytest.raises(ValueError, match="eps"):
        AttackSpec("mad", -0.1)
    with pytest.raises(ValueError, match="steps"):
        StateAttack(AttackSpec("mad", 0.1), steps=0)
    with pytest.raises(ValueError, match="policy"):
        StateAttack(AttackSpec("mad", 0.1)).perturb(np.zeros((1, 4)))
    seen = []
    act = attacked_act(lambda o: seen.append(o) or np.zeros((len(o), 1)), StateAttack(AttackSpec("random", 0.2)))
    act(np.zeros((3, 4), np.float32))
    assert seen[0].shape == (3, 4) and 0 < np.abs(seen[0]).max() <= 0.2 + 1e-7
    env = AttackedObservation(gym.make(ENV), StateAttack(AttackSpec("random", 0.05), seed=0))
    clean = gym.make(ENV)
    o_att, _ = env.reset(seed=3)
    o_clean, _ = clean.reset(seed=3)
    assert o_att.dtype == o_clean.dtype and 0 < np.abs(o_att - o_clean).max() <= 0.05 + 1e-6


def test_exp3_finds_the_best_arm_with_sublinear_regret():
    means, T = np.array([0.3, 0.5, 0.8]), 3000
    gap = means[2] - means[1]
    rng = np.random.default_rng(12345)  # not the bandit's seed: equal streams would correlate draw and reward
    run = run_exp3(lambda t, a: float(rng.random() < means[a]), 3, T, seed=0)
    regret = T * means.max() - means[np.asarray(run.arms)].sum()  # pseudo-regret
    assert run.pull_share(3)[2] > 0.7
    assert regret < T * gap / 2
    # regret per round falls: the second half loses less than the first
    half = np.asarray(run.arms)
    assert means.max() - means[half[T // 2:]].mean() < means.max() - means[half[:T // 2]].mean()
    assert exp3_gamma(3, T) == pytest.approx(np.sqrt(3 * np.log(3) / ((np.e - 1) * T)))


def test_exp3_probabilities_and_bad_input():
    bandit = EXP3(4, gamma=0.2, seed=0)
    assert np.allclose(bandit.probabilities(), 0.25)
    bandit.update(1, 1.0, 0.25)
    p = bandit.probabilities()
    assert p.sum() == pytest.approx(1.0) and p[1] > p[0] and p.min() >= 0.2 / 4
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bandit.update(0, 2.0, 0.5)
    with pytest.raises(ValueError, match="gamma"):
        EXP3(3, gamma=0.0)
    with pytest.raises(ValueError, match="rounds"):
        EXP3(3)


def test_dominance_and_grid():
    members = np.array([[1000.0, 200.0, 50.0], [900.0, 800.0, 300.0]])
    assert dominated(np.array([800.0, 700.0, 300.0]), members)  # the second row is >= everywhere
    assert not dominated(np.array([500.0, 900.0, 10.0]), members)
    assert [s.name for s in attack_grid(("random", "mad"), (0.05, 0.1))] == [
        "none", "random@0.05", "random@0.1", "mad@0.05", "mad@0.1"]
    with pytest.raises(ValueError, match="kinds"):
        NonDominatedConfig(kinds=("fgsm",))
    with pytest.raises(ValueError, match="set_size"):
        NonDominatedConfig(set_size=0)


def test_discovery_and_defence_run_on_mujoco():
    torch.set_num_threads(1)
    tiny = PPOConfig(num_envs=1, num_steps=64, num_minibatches=2, update_epochs=1, eval_every=0)
    cfg = NonDominatedConfig(env=ENV, base_steps=128, candidate_steps=64, set_size=3, max_iterations=2,
                             kinds=("mad",), eps_grid=(0.1,), eval_episodes=2, progress=False)
    found = discover(cfg, tiny)
    assert found.returns.shape == (len(found.policies), 2) and 1 <= len(found.policies) <= 2
    assert len(found.history) == 1 and found.history[0]["attack"] == "mad@0.1"  # the grid's one attack, tried once
    # every env step is counted: pi_1's 128 and the candidate's 64 training steps (kept or not), and the evaluation
    # episodes of R; InvertedPendulum-v5 pays 1 per step except 0 on the step that ends it (these untrained policies
    # all fall), so an episode's length is its return + 1
    assert found.env_steps["train"] == trained_steps(128, tiny) + trained_steps(64, tiny) == 192
    evaluated = found.returns[0].sum() + sum(sum(h["candidate_returns"]) for h in found.history)
    n_episodes = cfg.eval_episodes * 2 * (1 + len(found.history))  # 2 grid columns per evaluated policy
    assert found.env_steps["eval"] == round(cfg.eval_episodes * evaluated) + n_episodes
    assert found.total_env_steps == 192 + found.env_steps["eval"]
    run, raw = adaptive_defence(found.policies, ENV, AttackSpec("mad", 0.1), 4, (0.0, 1000.0))
    assert len(run.arms) == len(raw) == 4 and all(0 <= r <= 1 for r in run.rewards)
    assert run.rewards == pytest.approx([min(r / 1000.0, 1.0) for r in raw])
    assert ppo_policy(found.policies[0])(torch.zeros(2, 4)).shape == (2, 1)
    with pytest.raises(ValueError, match="return_range"):
        adaptive_defence(found.policies, ENV, AttackSpec("mad", 0.1), 2, (1.0, 1.0))


def test_yaml_mirrors_dataclass_defaults():
    from gendiff.rl.robust import RobustDiscoverConfig

    data = load_yaml(ROOT / "configs" / "robust_discover.yaml")
    assert set(data) == {f.name for f in dataclasses.fields(RobustDiscoverConfig)}
    assert from_dict(RobustDiscoverConfig, data) == RobustDiscoverConfig()


def test_cli_discover_writes_its_results_and_reports_bad_input(tmp_path, capsys):
    import json

    from gendiff.cli import main

    assert main(["robust", "discover", "--set-size", "0"]) == 2
    assert "set_size" in capsys.readouterr().err
    ppo = tmp_path / "ppo.yaml"
    ppo.write_text("num_envs: 1\nnum_steps: 64\nnum_minibatches: 2\nupdate_epochs: 1\neval_every: 0\n")
    args = ["robust", "discover", "--ppo-config", str(ppo), "--base-steps", "64", "--candidate-steps", "64",
            "--kinds", "random", "--eps-grid", "0.1", "--eval-episodes", "1", "--no-progress", "--out", str(tmp_path / "r")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "r" / "set.json").read_text())
    assert summary["grid"] == ["none", "random@0.1"] and len(summary["returns"]) == len(summary["policies"])
    assert summary["env_steps"]["train"] == 64 + 64 * len(summary["history"]) and summary["env_steps"]["eval"] > 0
    assert (tmp_path / "r" / "policy_1" / "model.safetensors").exists() and "| pi_1 |" in (tmp_path / "r" / "set.md").read_text()
    assert main(args) == 2  # no overwrite


def test_ppo_public_helpers_warm_start_and_normalise():
    torch.set_num_threads(1)
    a, b = PPO.from_env(ENV, seed=0), PPO.from_env(ENV, seed=1)
    a.obs_rms.update(np.random.default_rng(0).normal(2.0, 3.0, (50, 4)))
    obs = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    assert not np.allclose(a.act(obs, True), b.act(obs, True))
    b.load_weights_from(a)
    assert np.array_equal(a.act(obs, True), b.act(obs, True))
    o = torch.as_tensor(obs)
    torch.testing.assert_close(b.normalize_obs(o), (o - b.obs_rms.mean.float()) / torch.sqrt(b.obs_rms.var.float() + 1e-8),
                               rtol=1e-5, atol=1e-5)
    assert set(a.checkpoint_modules()) == {"actor", "critic", "obs_rms"}
    raw = PPO.from_env(ENV, PPOConfig(norm_obs=False), seed=0)
    assert torch.equal(raw.normalize_obs(o), o)


def test_batched_evaluation_matches_one_policy_at_a_time():
    torch.set_num_threads(1)
    agents = [PPO.from_env(ENV, seed=s) for s in (0, 1)]
    clean, length = evaluate_policies_under_attack([ppo_policy(x) for x in agents], ENV, AttackSpec("none", 0.0), 4,
                                                   seed=7)
    for k, agent in enumerate(agents):  # the per-policy evaluator on the same env seeds: identical returns
        assert clean[k].tolist() == evaluate(lambda o, x=agent: x.act(o, True), ENV, 4, seed=7)
    assert np.array_equal(length, clean + 1)  # 1 per step but 0 on the falling one (untrained: all fall)
    # the same policy twice under a random attack: the same attack stream, so the same returns (common noise)
    p = ppo_policy(agents[0])
    noisy, _ = evaluate_policies_under_attack([p, p], ENV, AttackSpec("random", 0.2), 4, seed=7, attack_seed=3)
    assert np.array_equal(noisy[0], noisy[1])
    with pytest.raises(ValueError, match="empty"):
        evaluate_policies_under_attack([], ENV, AttackSpec("none", 0.0), 2)
    with pytest.raises(ValueError, match="episodes"):
        evaluate_policies_under_attack([p], ENV, AttackSpec("none", 0.0), 0)


def test_vector_attack_perturbs_every_copy_and_final_observations():
    eps, act = 0.05, np.full((3, 1), 3.0, np.float32)  # a constant push: every copy falls within a few dozen steps
    clean = make_vec_env(ENV, 3, seed=0)
    attacked = AttackedVectorObservation(make_vec_env(ENV, 3, seed=0), StateAttack(AttackSpec("random", eps), seed=0))
    o_c, o_a = clean.reset(seed=0)[0], attacked.reset(seed=0)[0]
    assert o_a.dtype == o_c.dtype and 0 < np.abs(o_a - o_c).max() <= eps + 1e-6
    for _ in range(200):
        o_c, _, _, _, info_c = clean.step(act)
        o_a, _, _, _, info_a = attacked.step(act)
        assert 0 < np.abs(o_a - o_c).max() <= eps + 1e-6  # the env itself is not changed, only what is seen
        if "_final_obs" in info_c and info_c["_final_obs"].any():
            i = int(np.flatnonzero(info_c["_final_obs"])[0])
            gap = np.abs(np.asarray(info_a["final_obs"][i]) - np.asarray(info_c["final_obs"][i]))
            assert 0 < gap.max() <= eps + 1e-6
            break
    else:
        raise AssertionError("no episode ended")


def test_defence_table_plays_exp3_on_the_table():
    rng = np.random.default_rng(0)
    T = 600
    returns = np.stack([rng.uniform(0, 300, T), rng.uniform(700, 1000, T), rng.uniform(200, 500, T)])
    table = defence_table(returns, (0.0, 1000.0), [0, 1, 2])
    for s, run in enumerate(table.runs):  # the same game as run_exp3 pulling from the table
        ref = run_exp3(lambda t, a: returns[a, t] / 1000.0, 3, T, seed=s)
        assert run.arms == ref.arms and run.rewards == pytest.approx(ref.rewards)
        assert np.array_equal(table.bandit_returns[s], returns[np.asarray(run.arms), np.arange(T)])
    assert table.mean_return == pytest.approx(table.bandit_returns.mean())
    assert table.best_member_return == pytest.approx(returns[1].mean())
    assert sum(table.pull_share()) == pytest.approx(1.0) and table.pull_share()[1] > 0.6  # it finds the best member
    assert table.mean_return_window(2 * T // 3, T) > table.mean_return_window(0, T // 3)
    single = defence_table(returns[1:2], (0.0, 1000.0), [5])  # one arm: the bandit's return is that arm's
    assert single.mean_return == pytest.approx(single.best_member_return) and single.pull_share() == [1.0]
    with pytest.raises(ValueError, match="shape"):
        defence_table(returns[0], (0.0, 1000.0), [0])
    with pytest.raises(ValueError, match="return_range"):
        defence_table(returns, (5.0, 5.0), [0])
    with pytest.raises(ValueError, match="seed"):
        defence_table(returns, (0.0, 1000.0), [])
