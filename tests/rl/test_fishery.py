"""Fishery control (gendiff/rl/fishery.py): known answers of the models, the policy families and their search,
the gymnasium environments, and clear errors for bad input."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import gendiff.rl  # noqa: F401  (registers the environments)
from gendiff.rl.fishery import (
    Fishery1Params,
    Fishery3Params,
    FisheryEnv,
    best_constant_policy,
    constant_escapement,
    constant_mortality,
    fishery_step,
    fixed_point,
    golden_section,
    logistic_fixed_point,
    simulate,
)


def _noise_free(model: str, horizon: int = 200) -> FisheryEnv:
    params = Fishery1Params(sigma=0.0) if model == "one" else Fishery3Params(sigma_x=0.0, sigma_y=0.0, sigma_z=0.0)
    return FisheryEnv(model, params, horizon=horizon, init_sigma=0.0)


@pytest.mark.parametrize("mortality", [0.0, 0.2, 1 / 3, 0.45])
def test_logistic_fixed_point_is_reached(mortality: float) -> None:
    """X*(F) = K ((1 - F)(1 + r) - 1) / (r (1 - F)^2): the noise-free map under constant F converges to it."""
    env = _noise_free("one", horizon=400)
    ro = simulate(constant_mortality(mortality), env, episodes=1, seed=0)
    assert ro.final_x[0] == pytest.approx(logistic_fixed_point(mortality, env.params), abs=1e-9)
    assert logistic_fixed_point(0.0, Fishery1Params(r=1.5, k=2.0)) == pytest.approx(2.0)  # unfished: X* = K


def test_logistic_msy() -> None:
    """Sustained yield F X*(F) is largest at F_MSY = r / (2 + r), where it is r K / 4 (escapement S = K / 2)."""
    p = Fishery1Params(r=1.0, k=1.0)
    grid = np.linspace(0.0, 0.5, 5001)
    yields = np.array([f * logistic_fixed_point(f, p) for f in grid])
    assert grid[yields.argmax()] == pytest.approx(1 / 3, abs=1e-4)
    assert yields.max() == pytest.approx(0.25, abs=1e-8)
    assert (1 - 1 / 3) * logistic_fixed_point(1 / 3, p) == pytest.approx(0.5)  # escapement K / 2


def test_escapement_search_finds_the_finite_horizon_optimum() -> None:
    """Noise-free logistic map, T years from X0 = 0.7: profit(S) = (X0 - S) + (T - 1) r S (1 - S / K), so the best
    constant escapement is S* = K / 2 (1 - 1 / ((T - 1) r)) = 0.497487... for T = 200; the search must find it."""
    env = _noise_free("one")
    res = best_constant_policy("escapement", env, episodes=1, seed=0)
    assert res.value == pytest.approx(0.5 * (1 - 1 / 199), abs=1e-5)
    s = res.value
    assert res.profit == pytest.approx((0.7 - s) + 199 * s * (1 - s), abs=1e-9)


def test_mortality_search_beats_its_grid_and_is_near_msy() -> None:
    """The constant-mortality optimum on the noise-free logistic map lies near F_MSY = 1/3 (transients from X0
    shift it slightly) and is at least as good as every grid value."""
    env = _noise_free("one")
    res = best_constant_policy("mortality", env, episodes=1, seed=0)
    assert res.value == pytest.approx(1 / 3, abs=0.01)
    assert res.profit >= res.grid_profit.max()


def test_three_species_fixed_point() -> None:
    """Newton's root of step(p) = p at F = 0.2 is a coexistence point (all three species > 0) and the noise-free
    simulation converges to it."""
    params = Fishery3Params(sigma_x=0.0, sigma_y=0.0, sigma_z=0.0)
    p_star = fixed_point(0.2, params)
    nxt, catch = fishery_step(p_star[None], np.array([0.2]), params)
    np.testing.assert_allclose(nxt[0], p_star, atol=1e-10)
    assert (p_star > 0.05).all() and catch[0] == pytest.approx(0.2 * p_star[0])
    ro = simulate(constant_mortality(0.2), _noise_free("three", horizon=1000), episodes=1, seed=0)
    np.testing.assert_allclose(ro.pop[-1, 0], p_star, atol=1e-8)


def test_three_species_reduces_to_logistic_without_y_and_z() -> None:
    """With Y = Z = 0 the three-variable model's X follows the logistic map (same r, K)."""
    x = np.array([[0.3, 0.0, 0.0], [0.9, 0.0, 0.0]])
    f = np.array([0.1, 0.4])
    three, c3 = fishery_step(x, f, Fishery3Params(sigma_x=0.0, sigma_y=0.0, sigma_z=0.0))
    one, c1 = fishery_step(x[:, :1], f, Fishery1Params(sigma=0.0))
    np.testing.assert_allclose(three[:, 0], one[:, 0])
    np.testing.assert_allclose(three[:, 1:], 0.0)
    np.testing.assert_allclose(c3, c1)
    s = (1 - f) * x[:, 0]  # harvest first, then logistic growth of the escapement
    np.testing.assert_allclose(one[:, 0], s + s * (1 - s))


def test_escapement_policy_harvest() -> None:
    """F = max(0, 1 - S / X): the catch F X is X - S above S and 0 below it."""
    pop = np.array([[0.8], [0.4]])
    f = constant_escapement(0.5)(pop)
    np.testing.assert_allclose(f, [0.375, 0.0])
    _, catch = fishery_step(pop, f, Fishery1Params(sigma=0.0))
    np.testing.assert_allclose(catch, [0.3, 0.0])


@pytest.mark.parametrize("env_id", ["gendiff/Fishery3-v0", "gendiff/Fishery1-v0"])
def test_registered_envs_pass_check_env(env_id: str) -> None:
    env = gym.make(env_id)
    with pytest.warns(UserWarning, match="infinity"):  # populations have no upper bound
        check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == ((3,) if "3" in env_id else (1,)) and env.action_space.high[0] == 1.0
    short = gym.make(env_id, horizon=5, max_mortality=0.5)  # the constructor's settings pass through gym.make
    assert short.unwrapped.horizon == 5 and short.action_space.high[0] == 0.5


def test_env_matches_simulate_without_noise() -> None:
    """The gym env and the vectorised simulator give the same return for the same (noise-free) policy."""
    env = _noise_free("three")
    env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        _, r, term, trunc, _ = env.step(np.array([0.25], dtype=np.float32))  # exact in float32
        total, done = total + r, term or trunc
    ro = simulate(constant_mortality(0.25), env, episodes=2, seed=5)
    np.testing.assert_allclose(ro.profit, total, rtol=1e-12)
    assert env.t == env.horizon == ro.length[0]


def test_collapse_ends_the_episode() -> None:
    """F = 1 removes all of X: the catch is the whole stock and the episode terminates (X < threshold)."""
    env = _noise_free("three")
    obs, _ = env.reset(seed=0)
    _, r, term, trunc, info = env.step(np.array([1.0], dtype=np.float32))
    assert term and not trunc and r == pytest.approx(obs[0] * env.obs_scale, rel=1e-6)
    ro = simulate(constant_mortality(1.0), env, episodes=3, seed=0)
    np.testing.assert_array_equal(ro.length, 1)
    assert np.isnan(ro.pop[2]).all()


def test_golden_section_known_maximum() -> None:
    assert golden_section(lambda v: -(v - 0.3) ** 2, 0.0, 1.0) == pytest.approx(0.3, abs=1e-6)


@pytest.mark.parametrize(("make", "field"), [
    (lambda: Fishery1Params(k=-1.0), "Fishery1Params.k"),
    (lambda: Fishery3Params(k_x=0.0), "Fishery3Params.k_x"),
    (lambda: Fishery3Params(sigma_y=-0.1), "Fishery3Params.sigma_y"),
    (lambda: Fishery1Params(sigma=float("nan")), "Fishery1Params.sigma"),
    (lambda: FisheryEnv(max_mortality=0.0), "max_mortality"),
    (lambda: FisheryEnv(max_mortality=1.5), "max_mortality"),
    (lambda: FisheryEnv(horizon=0), "horizon"),
    (lambda: FisheryEnv(init_sigma=-1.0), "init_sigma"),
    (lambda: FisheryEnv("one", Fishery3Params()), "params"),
    (lambda: FisheryEnv("two"), "model"),
    (lambda: FisheryEnv(collapse_penalty=float("inf")), "collapse_penalty"),
    (lambda: fishery_step(np.ones((2, 3)), np.zeros(2), Fishery1Params()), "pop must be"),
    (lambda: constant_escapement(-0.1), "escapement"),
    (lambda: best_constant_policy("quota", FisheryEnv()), "family"),
    (lambda: simulate(constant_mortality(0.1), FisheryEnv(), 0, 0), "episodes"),
])
def test_bad_input_names_the_field(make, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make()


def test_ppo_trains_on_fishery3() -> None:
    """One PPO rollout + update through the ``gendiff gorl train`` builder; actions stay within [0, F_max]."""
    from gendiff.rl.train import GorlTrainConfig, build

    built = build(GorlTrainConfig(env="gendiff/Fishery3-v0", algo="ppo", steps=2048, eval_every=0, progress=False))
    built.learner.learn(2048, progress=False)
    a = built.agent.act(np.array([[0.35, 0.3, 0.5]], dtype=np.float32), True)
    assert a.shape == (1, 1) and 0.0 <= a[0, 0] <= 1.0
    assert dataclasses.is_dataclass(built.agent.config)


def test_search_command(capsys: pytest.CaptureFixture[str]) -> None:
    """``gendiff fishery search`` on the (noisy) one-variable model with few episodes:
    prints the optimum and its evaluation; the escapement optimum of the logistic map lies near K / 2."""
    from gendiff.cli import main

    main(["fishery", "search", "--model", "one", "--family", "escapement", "--episodes", "20", "--eval-episodes", "20"])
    out = json.loads(capsys.readouterr().out)
    assert out["family"] == "escapement" and abs(out["value"] - 0.5) < 0.05 and out["eval_profit"] > 0
