"""Submodular RL: the coverage objective, the grid tasks, SubPO and the additive policy gradient (known answers)."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import gendiff.rl  # noqa: F401  (registers the gym ids)
from gendiff.cli import main
from gendiff.config import from_dict, load_yaml
from gendiff.rl.envs_submodular import SubmodularGrid, brute_force, coverage_value, footprints
from gendiff.rl.subpo import SubPO, SubPOConfig, rollout, run_baseline_policy
from gendiff.rl.subrl import SubRLBenchmarkConfig, SubRLTrainConfig, coverage_upper_bound

ROOT = Path(__file__).resolve().parents[2]


def _all_subsets_value(weights: np.ndarray, radius: int) -> np.ndarray:
    """F of every subset of the cells (bitmask index) of a small grid: [2^(N^2)]."""
    n_cells = weights.size
    masks = (np.arange(2**n_cells)[:, None] >> np.arange(n_cells)) & 1  # [2^n, n]
    covered = (masks[:, :, None].astype(bool) & footprints(weights.shape[0], radius)[None]).any(1)  # [2^n, n]
    return covered.astype(np.float64) @ weights.reshape(-1)


def _diminishing_returns_violations(values: np.ndarray, n_cells: int) -> tuple[int, int]:
    """(monotonicity violations, submodularity violations) over all S, u, s: F(S+u) >= F(S) and
    F(S+s) - F(S) >= F(S+u+s) - F(S+u) (one-element extensions imply it for every S c T)."""
    sets = np.arange(values.size)
    mono = sub = 0
    for u in range(n_cells):
        su = sets | (1 << u)
        mono += int((values[su] < values - 1e-12).sum())
        for s in range(n_cells):
            sub += int((values[sets | (1 << s)] - values < values[su | (1 << s)] - values[su] - 1e-12).sum())
    return mono, sub


@pytest.mark.parametrize("radius", [0, 1])
def test_weighted_coverage_is_monotone_and_submodular_on_every_subset(radius):
    w = np.random.default_rng(radius).uniform(0, 1, (3, 3))
    values = _all_subsets_value(w, radius)
    assert _diminishing_returns_violations(values, 9) == (0, 0)
    for cells in ([0], [4, 8], [0, 2, 6, 8]):  # the vectorised table agrees with the slow reference
        assert values[sum(1 << c for c in cells)] == pytest.approx(coverage_value(cells, w, radius))
    # the check can fail: F^2 (supermodular growth) breaks diminishing returns on the same sets
    assert _diminishing_returns_violations(values**2, 9)[1] > 0


@pytest.mark.parametrize("env_id", ["gendiff/SubmodularCoverage-v0", "gendiff/BiodiversityMap-v0"])
def test_env_marginal_gains_sum_to_the_objective_of_the_visited_set(env_id):
    env = gym.make(env_id)
    obs, info = env.reset(seed=0)
    task = env.unwrapped.task
    assert obs.shape == (task.obs_dim,) and info["visited"] == (task.start,)
    total, additive, rng, done = info["objective"], 0.0, np.random.default_rng(0), False
    while not done:
        obs, r, terminated, truncated, info = env.step(int(rng.integers(5)))
        assert r == info["marginal_gain"] and info["marginal_gain"] >= 0
        total, additive, done = total + r, additive + info["additive_reward"], terminated or truncated
    f = coverage_value(info["visited"], task.weights, task.radius)
    assert total == pytest.approx(info["objective"]) and info["objective"] == pytest.approx(f)
    assert additive >= f - task.cell_value[task.start] - 1e-9  # additive rewards count revisits and overlaps again
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step(0)


def test_additive_env_reward_is_the_cell_value_every_visit():
    env = gym.make("gendiff/SubmodularCoverage-v0", reward="additive", grid_size=5, horizon=3)
    env.reset()
    rewards = [env.step(0)[1] for _ in range(3)]  # stay at the centre of a 5 x 5 grid, radius 1
    assert rewards == [9.0, 9.0, 9.0]
    assert env.unwrapped.task.value(env.unwrapped._state.covered)[0] == 9.0  # F counted the cell once


def test_brute_force_known_answers():
    # radius 0, 3 x 3 from the centre: three moves reach three new cells, F = 4 (hand count)
    assert brute_force(SubmodularGrid(3, 3, 0))[0] == 4.0
    # radius 1, 5 x 5, H = 2: 9 cells at the start, then one new row of 3 per step: 15 = the upper bound
    assert brute_force(SubmodularGrid(5, 2, 1))[0] == 15.0 == coverage_upper_bound(5, 2, 1)
    with pytest.raises(ValueError, match="horizon"):
        brute_force(SubmodularGrid(3, 9, 0))


def _trained(reward: str, task: SubmodularGrid, seed: int, iterations: int) -> SubPO:
    torch.set_num_threads(1)
    cfg = SubPOConfig(grid_size=task.grid_size, horizon=task.horizon, radius=task.radius, iterations=iterations,
                      batch_episodes=32, lr=1e-2, eval_every=0, seed=seed, reward=reward)
    agent = SubPO(cfg, task=task)
    agent.learn()
    return agent


def test_subpo_reaches_the_brute_force_optimum_on_a_biodiversity_map():
    task = SubmodularGrid(5, 5, 0, "biodiversity", map_seed=3)
    best, _, _ = brute_force(task)  # 4.796 (3,125 action sequences)
    untrained = SubPO(SubPOConfig(grid_size=5, horizon=5, radius=0, seed=0), task=task).evaluate(256).mean()
    assert untrained < 0.8 * best  # the task is not solved by chance
    for seed in (0, 1):
        agent = _trained("marginal", task, seed, iterations=100)
        assert agent.evaluate(1, deterministic=True)[0] == pytest.approx(best)
        assert agent.evaluate(64).mean() >= 0.98 * best


def test_additive_policy_gradient_gets_stuck_revisiting_a_high_value_cell():
    # one cell of value 10 right of the centre, every other cell 1; radius 0, H = 4
    w = np.ones((3, 3))
    w[1, 2] = 10.0
    task = SubmodularGrid(3, 4, 0, w)
    add_best, add_actions, add_f = brute_force(task, "additive")
    assert (add_best, add_f, add_actions) == (40.0, 11.0, (4, 0, 0, 0))  # go right, then stay: 4 x 10
    assert brute_force(task)[0] == 14.0  # the submodular optimum visits 5 distinct cells: 1 + 10 + 1 + 1 + 1
    for seed in (0, 1):
        additive, subpo = _trained("additive", task, seed, 60), _trained("marginal", task, seed, 60)
        stuck = rollout(task, lambda o, _s, a=additive: a.act(o, True), 1)
        assert (stuck["objective"][0], stuck["distinct"][0]) == (11.0, 2)
        good = rollout(task, lambda o, _s, a=subpo: a.act(o, True), 1)
        assert (good["objective"][0], good["distinct"][0]) == (14.0, 5)


def test_greedy_and_random_baselines():
    task = SubmodularGrid(5, 2, 1)
    assert (run_baseline_policy(task, "greedy", 8, 0) == 15.0).all()  # greedy is optimal on a straight line
    rand = run_baseline_policy(task, "random", 256, 0)
    assert 9.0 <= rand.min() and rand.max() <= 15.0 and rand.mean() < 15.0
    with pytest.raises(ValueError, match="kind"):
        run_baseline_policy(task, "oracle", 8, 0)


@pytest.mark.parametrize("kwargs,field", [
    ({"grid_size": 0}, "grid_size"), ({"horizon": 0}, "horizon"), ({"radius": -1}, "radius"),
    ({"weights": -np.ones((3, 3))}, "weights"), ({"weights": np.ones((2, 2))}, "weights"),
    ({"weights": "forest"}, "weights"), ({"start": (3, 0)}, "start"), ({"observe": "map"}, "observe"),
])
def test_bad_task_inputs_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SubmodularGrid(**{"grid_size": 3, **kwargs})


@pytest.mark.parametrize("kwargs,field", [
    ({"grid_size": 0}, "grid_size"), ({"horizon": 0}, "horizon"), ({"radius": -1}, "radius"),
    ({"lr": -1.0}, "lr"), ({"reward": "sum"}, "reward"), ({"batch_episodes": 0}, "batch_episodes"),
])
def test_bad_config_inputs_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SubPOConfig(**kwargs)
    with pytest.raises(ValueError, match="methods"):
        SubRLBenchmarkConfig(methods=("subpo", "oracle"))
    with pytest.raises(ValueError, match="reward"):
        gym.make("gendiff/SubmodularCoverage-v0", reward="sum")


def test_cli_reports_bad_input_in_one_line(capsys):
    assert main(["subrl", "train", "--horizon", "0"]) == 2
    assert "horizon" in capsys.readouterr().err


def test_cli_train_and_benchmark_write_their_results(tmp_path):
    tiny = ["--grid-size", "4", "--horizon", "4", "--iterations", "3", "--batch-episodes", "8", "--eval-every", "1",
            "--eval-episodes", "8"]
    assert main(["subrl", "train", *tiny, "--reward", "additive", "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["curve"]["iterations"] == [0, 1, 2, 3] and 9.0 <= metrics["objective"] <= 16.0
    assert (tmp_path / "run" / "curve.png").stat().st_size > 0
    assert main(["subrl", "benchmark", *tiny, "--seeds", "0,1", "--out", str(tmp_path / "b")]) == 0
    summary = json.loads((tmp_path / "b.json").read_text())
    assert set(summary["results"]) == {"subpo", "additive_pg", "random", "greedy"}
    assert summary["upper_bound"] == 16 and summary["results"]["greedy"]["objective_mean"] == 16.0
    assert [r["seed"] for r in summary["results"]["subpo"]["per_seed"]] == [0, 1]
    assert "| subpo |" in (tmp_path / "b.md").read_text() and (tmp_path / "b_curves.png").exists()
    assert main(["subrl", "benchmark", *tiny, "--seeds", "0", "--out", str(tmp_path / "b")]) == 2  # no overwrite


@pytest.mark.parametrize("name,cls", [("subrl_train.yaml", SubRLTrainConfig),
                                      ("subrl_benchmark.yaml", SubRLBenchmarkConfig)])
def test_yaml_mirrors_dataclass_defaults(name, cls):
    data = load_yaml(ROOT / "configs" / name)
    assert set(data) == {f.name for f in dataclasses.fields(cls)}
    assert from_dict(cls, data) == cls()


def test_batched_task_matches_one_episode_at_a_time():
    task = SubmodularGrid(6, 7, 1, "biodiversity", map_seed=1)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 5, (7, 4))
    batch = rollout(task, lambda o, s: actions[s.t], 4)
    for b in range(4):
        state, cells = task.reset(1), [task.start]
        for t in range(7):
            state, _, _ = task.step(state, actions[t, b : b + 1])
            cells.append(int(state.pos[0]))
        assert batch["objective"][b] == pytest.approx(coverage_value(cells, task.weights, 1))
        assert batch["distinct"][b] == len(set(cells))
    assert list(itertools.accumulate(batch["marginal"][:, 0]))[-1] == pytest.approx(
        batch["objective"][0] - task.cell_value[task.start])
