"""Fishery control ("pretty darn good control", Montealegre-Mora, Lapeyrolerie, Chapman and Boettiger 2023).

A fished population X lives with a competitor Y and a predator Z that eats both with a Holling type-III functional
response. Each year t the manager picks a fishing mortality F_t in [0, F_max]; the catch is removed *before* the
year's growth (the authors' code, ``boettiger-lab/approx-model-or-approx-soln``, harvests first and then grows):

    1. harvest      h_t = F_t X_t,   X_t <- X_t - h_t                                          (reward h_t - c F_t)
    2. growth, with g(u) = u^2 / (v0^2 + u^2) (type III) and xi ~ N(0, 1) per species and year:
       X_{t+1} = X + r_X X (1 - X / K_X) - beta Z g(X)     - c_XY X Y + sigma_X X xi_X
       Y_{t+1} = Y + r_Y Y (1 - Y / K_Y) - D beta Z g(Y)   - c_XY X Y + sigma_Y Y xi_Y
       Z_{t+1} = Z + alpha Z (f (g(X) + D g(Y)) - d_Z)                + sigma_Z Z xi_Z
    3. populations below 0 are set to 0.

The default parameters (:class:`Fishery3Params`) are those of ``src/parameters.py`` in the authors' repository
(r = K = 1, beta = 0.3, v0 = 0.3, D = 1.1, c_XY = 0.1, f = 0.1, d_Z = 0.1, alpha = 1, sigma = 0.1); that file was
read, the paper's own table was not, so they are **not verified against the paper** (the same repository holds
other sets, e.g. v0 = 0.1, c_XY = 0.5, f = 0.25, d_Z = 0.45, alpha = 0.3 in ``growth_functions.py``).

The stylised one-variable model (:class:`Fishery1Params`) is the harvested logistic map with the same order
(harvest, then growth) and multiplicative noise: X_{t+1} = S + r S (1 - S / K) + sigma S xi with escapement
S = (1 - F) X. Without noise its fixed point under a constant mortality F is

    X*(F) = K ((1 - F)(1 + r) - 1) / (r (1 - F)^2)        (0 when (1 - F)(1 + r) <= 1),

and the sustained yield F X* = r S (1 - S / K) is largest at escapement S = K / 2 (maximum sustainable yield r K / 4,
reached by F_MSY = r / (2 + r)); :func:`logistic_fixed_point` and the tests use these.

Environments (registered on import): ``gendiff/Fishery3-v0`` and ``gendiff/Fishery1-v0`` (:class:`FisheryEnv`).
Observation: the populations divided by ``obs_scale`` = 2 ([3] or [1], float32, >= 0; the authors observe all
three species too). Action: the mortality F in [0, F_max] (Box [1], F_max = 1). Reward: the catch h_t minus
``cost`` F_t (cost 0 by default, so the return is the profit at price 1). Episodes last ``horizon`` = 200 years and
end early (``terminated``) when X falls below ``threshold`` = 0.05 (a collapse; the authors also end on Y or Z and
add a training penalty -100 / (t + 1), here ``collapse_penalty`` = 0). The start is (0.7, 0.6, 1.0) (X = 0.7 for
the one-variable model) plus N(0, 0.05^2) per species, kept >= 0.05.

Policy families (vectorised over many episodes in :func:`simulate`, used by the optimum search):
constant mortality F_t = F, and constant escapement F_t = max(0, 1 - S / X_t) (fish down to S, not below).
:func:`best_constant_policy` finds each family's optimum by a grid search refined by golden-section search on the
mean profit over a fixed set of noise draws (common random numbers, so the objective is a smooth function of the
parameter).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

import gymnasium as gym
import numpy as np

__all__ = ["Fishery1Params", "Fishery3Params", "FisheryEnv", "FisheryRollout", "FisherySearchConfig", "PolicySearch",
           "best_constant_policy", "constant_escapement", "constant_mortality", "fishery_step", "fixed_point",
           "golden_section", "logistic_fixed_point", "run_fishery_search", "simulate"]

Family = Literal["mortality", "escapement"]
Policy = Callable[[np.ndarray], np.ndarray]  # populations [B, n] (natural units) -> mortality [B]


def _check_fields(obj: Any, positive: tuple[str, ...], nonnegative: tuple[str, ...]) -> None:
    """Raise ValueError naming the first field of ``obj`` that is not finite, or not > 0 / >= 0 as required."""
    name = type(obj).__name__
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, (int, float)) and not math.isfinite(v):
            raise ValueError(f"{name}.{f.name} must be finite, got {v}")
        if f.name in positive and not v > 0:
            raise ValueError(f"{name}.{f.name} must be > 0, got {v}")
        if f.name in nonnegative and not v >= 0:
            raise ValueError(f"{name}.{f.name} must be >= 0, got {v}")


@dataclass(frozen=True)
class Fishery3Params:
    """The three-variable model's parameters (see the module docstring; from the authors' ``src/parameters.py``)."""

    r_x: float = 1.0  # growth rate of the fished species X
    r_y: float = 1.0  # growth rate of the competitor Y
    k_x: float = 1.0  # carrying capacity of X
    k_y: float = 1.0  # carrying capacity of Y
    beta: float = 0.3  # predation rate of Z on X (D beta on Y)
    v0: float = 0.3  # half-saturation of the type-III response g(u) = u^2 / (v0^2 + u^2)
    d: float = 1.1  # Z's preference for Y relative to X
    c_xy: float = 0.1  # X-Y competition
    f: float = 0.1  # Z's conversion efficiency
    d_z: float = 0.1  # Z's death rate
    alpha: float = 1.0  # Z's time scale
    sigma_x: float = 0.1  # process-noise scale of X (multiplicative: sigma X xi)
    sigma_y: float = 0.1
    sigma_z: float = 0.1

    def __post_init__(self) -> None:
        _check_fields(self, positive=("r_x", "r_y", "k_x", "k_y", "v0", "alpha"),
                      nonnegative=("beta", "d", "c_xy", "f", "d_z", "sigma_x", "sigma_y", "sigma_z"))

    @property
    def sigma(self) -> np.ndarray:
        """Noise scales [3] (X, Y, Z)."""
        return np.array([self.sigma_x, self.sigma_y, self.sigma_z])


@dataclass(frozen=True)
class Fishery1Params:
    """The one-variable stylised model: the harvested logistic map with multiplicative noise."""

    r: float = 1.0  # growth rate
    k: float = 1.0  # carrying capacity
    sigma: float = 0.1  # process-noise scale (multiplicative)

    def __post_init__(self) -> None:
        _check_fields(self, positive=("r", "k"), nonnegative=("sigma",))


Params = Fishery1Params | Fishery3Params


def fishery_step(pop: np.ndarray, mortality: np.ndarray, params: Params,
                 noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One year: harvest then growth (module docstring, steps 1-3).

    Args:
        pop: populations [B, n] (n = 3: X, Y, Z; n = 1: X), natural units, >= 0.
        mortality: fishing mortality F [B] in [0, 1].
        params: the model (its kind sets n).
        noise: standard normal draws xi [B, n], or None for the deterministic model.
    Returns:
        (next populations [B, n], catch h [B]).
    """
    pop = np.asarray(pop, dtype=np.float64)
    n = 1 if isinstance(params, Fishery1Params) else 3
    if pop.ndim != 2 or pop.shape[1] != n:
        raise ValueError(f"fishery_step: pop must be [B, {n}] for {type(params).__name__}, got shape {pop.shape}")
    xi = np.zeros_like(pop) if noise is None else np.asarray(noise, dtype=np.float64)
    catch = np.asarray(mortality, dtype=np.float64) * pop[:, 0]  # 1. h = F X
    x = pop[:, 0] - catch
    if isinstance(params, Fishery1Params):  # 2. growth (logistic map)
        nxt = (x + params.r * x * (1 - x / params.k) + params.sigma * x * xi[:, 0])[:, None]
    else:
        p, y, z = params, pop[:, 1], pop[:, 2]
        gx, gy = x**2 / (p.v0**2 + x**2), y**2 / (p.v0**2 + y**2)
        nxt = np.stack([
            x + p.r_x * x * (1 - x / p.k_x) - p.beta * z * gx - p.c_xy * x * y + p.sigma_x * x * xi[:, 0],
            y + p.r_y * y * (1 - y / p.k_y) - p.d * p.beta * z * gy - p.c_xy * x * y + p.sigma_y * y * xi[:, 1],
            z + p.alpha * z * (p.f * (gx + p.d * gy) - p.d_z) + p.sigma_z * z * xi[:, 2],
        ], 1)
    return np.maximum(nxt, 0.0), catch  # 3. no negative populations


def logistic_fixed_point(mortality: float, params: Fishery1Params) -> float:
    """X*(F) = K ((1 - F)(1 + r) - 1) / (r (1 - F)^2) of the noise-free one-variable model (0 if that is < 0)."""
    s = 1.0 - mortality
    if s <= 0:
        return 0.0
    return max(0.0, params.k * (s * (1 + params.r) - 1) / (params.r * s**2))


def fixed_point(mortality: float, params: Params, start: np.ndarray | None = None, warmup: int = 100, iters: int = 50,
                tol: float = 1e-10) -> np.ndarray:
    """Root of G(p) = step(p, F) - p for the noise-free model by Newton's method (central-difference Jacobian).

    The model has several roots (e.g. Z = 0 or X = 0); Newton starts from ``start`` after ``warmup`` noise-free years
    at mortality F, i.e. it polishes the point that the deterministic trajectory approaches.

    Args:
        start: initial state [n] (default: the environment's start state).
    Returns:
        the fixed point [n] (natural units).
    Raises:
        RuntimeError: Newton did not reach max |G| < tol.
    """
    n = 1 if isinstance(params, Fishery1Params) else 3
    p = np.asarray(start if start is not None else INIT_POP[n], dtype=np.float64).copy()
    f = np.array([mortality])
    for _ in range(warmup):
        p = fishery_step(p[None], f, params)[0][0]

    def g(q: np.ndarray) -> np.ndarray:
        return fishery_step(q[None], f, params)[0][0] - q

    for _ in range(iters):
        r = g(p)
        if np.abs(r).max() < tol:
            return p
        h = 1e-7
        jac = np.stack([(g(p + h * e) - g(p - h * e)) / (2 * h) for e in np.eye(n)], 1)
        p = p - np.linalg.solve(jac, r)
    if np.abs(g(p)).max() < tol:
        return p
    raise RuntimeError(f"fixed_point: Newton did not converge for F = {mortality} (|G| = {np.abs(g(p)).max():.2e})")


INIT_POP = {1: np.array([0.7]), 3: np.array([0.7, 0.6, 1.0])}  # start states (natural units)


class FisheryEnv(gym.Env):
    """The fishery as a gymnasium env (module docstring: observation, action, reward, end of an episode).

    Args:
        model: "three" (X, Y, Z) or "one" (X only).
        params: the model's parameters (None: :class:`Fishery3Params` / :class:`Fishery1Params` defaults).
        horizon: years per episode.
        max_mortality: F_max, the action's upper bound.
        cost: cost per unit of mortality (reward h - cost F).
        threshold: X below this ends the episode (collapse).
        collapse_penalty: added to the reward of the collapse step (0 by default; the authors use -100 / (t + 1)).
        init_sigma: standard deviation of the start state's jitter.
        obs_scale: observation = populations / obs_scale.
    """

    metadata = {"render_modes": []}

    def __init__(self, model: Literal["three", "one"] = "three", params: Params | None = None, horizon: int = 200,
                 max_mortality: float = 1.0, cost: float = 0.0, threshold: float = 0.05,
                 collapse_penalty: float = 0.0, init_sigma: float = 0.05, obs_scale: float = 2.0) -> None:
        if model not in ("three", "one"):
            raise ValueError(f"FisheryEnv.model must be 'three' or 'one', got {model!r}")
        params = params if params is not None else (Fishery3Params() if model == "three" else Fishery1Params())
        if isinstance(params, Fishery3Params) != (model == "three"):
            raise ValueError(f"FisheryEnv.params: {type(params).__name__} does not fit model={model!r}")
        if horizon < 1:
            raise ValueError(f"FisheryEnv.horizon must be >= 1, got {horizon}")
        if not 0 < max_mortality <= 1:
            raise ValueError(f"FisheryEnv.max_mortality must lie in (0, 1], got {max_mortality}")
        for name, v in (("cost", cost), ("threshold", threshold), ("init_sigma", init_sigma)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"FisheryEnv.{name} must be finite and >= 0, got {v}")
        if not math.isfinite(collapse_penalty):
            raise ValueError(f"FisheryEnv.collapse_penalty must be finite, got {collapse_penalty}")
        if not obs_scale > 0:
            raise ValueError(f"FisheryEnv.obs_scale must be > 0, got {obs_scale}")
        self.params, self.horizon, self.max_mortality = params, int(horizon), float(max_mortality)
        self.cost, self.threshold, self.collapse_penalty = float(cost), float(threshold), float(collapse_penalty)
        self.init_sigma, self.obs_scale = float(init_sigma), float(obs_scale)
        self.n = 3 if model == "three" else 1
        self.observation_space = gym.spaces.Box(0.0, np.inf, (self.n,), np.float32)
        self.action_space = gym.spaces.Box(0.0, self.max_mortality, (1,), np.float32)
        self.pop, self.t = INIT_POP[self.n].copy(), 0

    def initial_state(self, rng: np.random.Generator, episodes: int) -> np.ndarray:
        """Start populations [episodes, n]: the start state plus N(0, init_sigma^2) per species, kept >= threshold."""
        jitter = self.init_sigma * rng.standard_normal((episodes, self.n))
        return np.maximum(INIT_POP[self.n] + jitter, max(self.threshold, 1e-3))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.pop, self.t = self.initial_state(self.np_random, 1)[0], 0
        return (self.pop / self.obs_scale).astype(np.float32), {}

    def step(self, action: np.ndarray):
        f = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], 0.0, self.max_mortality))
        xi = self.np_random.standard_normal((1, self.n))
        nxt, catch = fishery_step(self.pop[None], np.array([f]), self.params, xi)
        self.pop, self.t = nxt[0], self.t + 1
        collapsed = bool(self.pop[0] < self.threshold)
        reward = float(catch[0]) - self.cost * f + (self.collapse_penalty if collapsed else 0.0)
        obs = (self.pop / self.obs_scale).astype(np.float32)
        return obs, reward, collapsed, self.t >= self.horizon and not collapsed, {"catch": float(catch[0])}


@dataclass
class FisheryRollout:
    """Episodes of one policy: ``profit`` [E] (sum of rewards), ``final_x`` [E] (X at the episode's end),
    ``length`` [E] (years until the horizon or the collapse) and ``pop`` [T + 1, E, n] (the populations each year,
    NaN after the end)."""

    profit: np.ndarray
    final_x: np.ndarray
    length: np.ndarray
    pop: np.ndarray


def simulate(policy: Policy, env: FisheryEnv, episodes: int, seed: int) -> FisheryRollout:
    """Run ``episodes`` episodes of ``env``'s model at once (vectorised numpy), with ``policy`` pop [B, n] -> F [B].

    The noise of episode set ``seed`` is the same for every policy (common random numbers): draws come from
    ``numpy.random.default_rng(seed)`` (the start states first, then one [E, n] block per year).
    """
    if episodes < 1:
        raise ValueError(f"simulate: episodes must be >= 1, got {episodes}")
    rng = np.random.default_rng(seed)
    pop = env.initial_state(rng, episodes)
    noise = rng.standard_normal((env.horizon, episodes, env.n))
    profit, length = np.zeros(episodes), np.zeros(episodes, dtype=int)
    alive = np.ones(episodes, dtype=bool)
    pops = np.full((env.horizon + 1, episodes, env.n), np.nan)
    pops[0] = pop
    for t in range(env.horizon):
        f = np.clip(np.asarray(policy(pop), dtype=np.float64).reshape(episodes), 0.0, env.max_mortality)
        nxt, catch = fishery_step(pop, f, env.params, noise[t])
        collapsed = alive & (nxt[:, 0] < env.threshold)
        reward = catch - env.cost * f + np.where(collapsed, env.collapse_penalty, 0.0)
        profit += np.where(alive, reward, 0.0)
        length += alive
        pop = np.where(alive[:, None], nxt, pop)
        pops[t + 1] = np.where(alive[:, None], pop, np.nan)
        alive &= ~collapsed
    return FisheryRollout(profit, pop[:, 0].copy(), length, pops)


def constant_mortality(mortality: float) -> Policy:
    """F_t = ``mortality`` every year."""
    return lambda pop: np.full(len(pop), float(mortality))


def constant_escapement(escapement: float) -> Policy:
    """F_t = max(0, 1 - S / X_t): fish X down to the escapement S (no catch when X <= S)."""
    if not escapement >= 0:
        raise ValueError(f"constant_escapement: escapement S must be >= 0, got {escapement}")
    return lambda pop: np.maximum(0.0, 1.0 - escapement / np.maximum(pop[:, 0], 1e-12))


def golden_section(fn: Callable[[float], float], lo: float, hi: float, iters: int = 40) -> float:
    """Maximiser of a unimodal ``fn`` on [lo, hi] by golden-section search (bracket shrinks by 0.618 per step)."""
    inv = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - inv * (b - a), a + inv * (b - a)
    fc, fd = fn(c), fn(d)
    for _ in range(iters):
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - inv * (b - a)
            fc = fn(c)
        else:
            a, c, fc = c, d, fd
            d = a + inv * (b - a)
            fd = fn(d)
    return (a + b) / 2


@dataclass
class PolicySearch:
    """A family's optimum: ``value`` (F or S), its mean ``profit`` on the search episodes, and the grid scanned."""

    family: Family
    value: float
    profit: float
    grid: np.ndarray
    grid_profit: np.ndarray


def best_constant_policy(family: Family, env: FisheryEnv, episodes: int = 200, seed: int = 0,
                         grid_points: int = 51, refine_iters: int = 30) -> PolicySearch:
    """The constant-mortality F (in [0, F_max]) or constant-escapement S (in [0, 2 K_X]) of highest mean profit.

    Steps: 1. mean profit of ``grid_points`` evenly spaced values on ``episodes`` episodes of noise ``seed``;
    2. golden-section search between the best grid value's neighbours on the same episodes.
    """
    if family not in ("mortality", "escapement"):
        raise ValueError(f"best_constant_policy: family must be 'mortality' or 'escapement', got {family!r}")
    make = constant_mortality if family == "mortality" else constant_escapement
    k = env.params.k_x if isinstance(env.params, Fishery3Params) else env.params.k
    hi = env.max_mortality if family == "mortality" else 2.0 * k

    def profit(v: float) -> float:
        return float(simulate(make(v), env, episodes, seed).profit.mean())

    grid = np.linspace(0.0, hi, grid_points)  # 1.
    values = np.array([profit(v) for v in grid])
    i = int(values.argmax())
    best = golden_section(profit, grid[max(i - 1, 0)], grid[min(i + 1, grid_points - 1)], refine_iters)  # 2.
    best_profit = profit(best)
    if values[i] > best_profit:
        best, best_profit = float(grid[i]), float(values[i])
    return PolicySearch(family, float(best), best_profit, grid, values)


@dataclass
class FisherySearchConfig:
    """``gendiff fishery search``: the best constant policy of a family, then its evaluation
    (configs/fishery_search.yaml mirrors these defaults)."""

    model: Literal["three", "one"] = "three"  # gendiff/Fishery3-v0 ("three") or gendiff/Fishery1-v0 ("one")
    family: Family = "mortality"  # constant mortality F or constant escapement S
    episodes: int = 200  # episodes (noise draws) of the search
    seed: int = 0  # noise seed of the search episodes
    grid_points: int = 51  # grid values before the golden-section refinement
    eval_episodes: int = 500  # episodes of the evaluation (noise seed eval_seed)
    eval_seed: int = 2000
    horizon: int = 200  # years per episode
    cost: float = 0.0  # cost per unit of mortality

    def __post_init__(self) -> None:
        for name in ("episodes", "grid_points", "eval_episodes", "horizon"):
            if getattr(self, name) < (3 if name == "grid_points" else 1):
                raise ValueError(f"FisherySearchConfig.{name} (--{name.replace('_', '-')}) is too small: "
                                 f"{getattr(self, name)}")
        if self.family not in ("mortality", "escapement") or self.model not in ("three", "one"):
            raise ValueError(f"FisherySearchConfig: family must be mortality / escapement and model three / one, got "
                             f"{self.family!r}, {self.model!r}")


def run_fishery_search(cfg: FisherySearchConfig) -> dict[str, Any]:
    """Search (:func:`best_constant_policy`), evaluate on ``eval_episodes`` fresh episodes, print and return JSON:
    the optimum, its search profit, and the evaluation's mean profit, final X and collapse fraction."""
    import json

    env = FisheryEnv(cfg.model, horizon=cfg.horizon, cost=cfg.cost)
    res = best_constant_policy(cfg.family, env, cfg.episodes, cfg.seed, cfg.grid_points)
    make = constant_mortality if cfg.family == "mortality" else constant_escapement
    ro = simulate(make(res.value), env, cfg.eval_episodes, cfg.eval_seed)
    out = {"model": cfg.model, "family": cfg.family, "value": res.value, "search_profit": res.profit,
           "eval_profit": float(ro.profit.mean()), "eval_final_x": float(ro.final_x.mean()),
           "eval_collapsed": float((ro.length < env.horizon).mean())}
    print(json.dumps(out, indent=2))
    return out


def _register() -> None:
    if "gendiff/Fishery3-v0" not in gym.registry:
        gym.register("gendiff/Fishery3-v0", entry_point=FisheryEnv, kwargs={"model": "three"})
    if "gendiff/Fishery1-v0" not in gym.registry:
        gym.register("gendiff/Fishery1-v0", entry_point=FisheryEnv, kwargs={"model": "one"})


_register()
