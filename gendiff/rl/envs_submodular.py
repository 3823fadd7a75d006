"""Grid tasks whose trajectory objective is a submodular set function (Submodular RL, Prajapat et al., ICLR 2024).

An agent walks on an N x N grid for H steps from a start cell s_0 (5 actions: stay, up, down, left, right; a move
off the grid stays put). A visited cell s senses the square footprint D(s) of cells within Chebyshev distance
``radius``. With a non-negative weight map w over the cells the objective of a trajectory tau = (s_0, ..., s_H) is
the weighted coverage of its set of visited cells S = {s_0, ..., s_H}:

    F(S) = sum_{c in U_{s in S} D(s)} w_c                                                     (weighted coverage)

F is monotone (S c S' => F(S) <= F(S')) and submodular (diminishing returns: F(S u {s}) - F(S) >= F(S' u {s}) - F(S')
for S c S'), since w >= 0. Two reward signals are exposed per step t (state s_{t+1} reached from history S_t):

- the **marginal gain** F(s_{t+1} | S_t) = F(S_t u {s_{t+1}}) - F(S_t) (what SubPO optimises; the gains of an episode
  add up to F(S_H) - F({s_0}), so their sum is the objective up to the constant F({s_0})), and
- the **additive reward** F({s_{t+1}}), the sensed value of the cell regardless of history (the modular reward a
  standard MDP would use; revisiting a valuable cell pays every time).

Weight maps: ``"uniform"`` (w = 1: F counts covered cells, plain coverage) and ``"biodiversity"`` (a smooth random
density: a sum of Gaussian bumps of random centres, widths and heights, scaled to max 1, the "species density" map
of a biodiversity-monitoring survey), or any array [N, N] of non-negative weights.

:class:`SubmodularGrid` is the task, batched over B episodes in numpy (SubPO's rollouts use it directly);
:class:`SubmodularGridEnv` is the same task as a gymnasium env (B = 1), registered as
``gendiff/SubmodularCoverage-v0`` (uniform weights) and ``gendiff/BiodiversityMap-v0``. The observation is the
current cell (one-hot [N^2]), the covered map [N^2] and t / H: with the covered map the marginal gain is a function
of the observation, so the task is a Markov decision process in it. ``observe="position"`` drops the covered map
(a Markov policy over (s_t, t) only, as the SubPO paper's Markovian policies).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np

__all__ = ["ACTIONS", "GridState", "SubmodularGrid", "SubmodularGridEnv", "biodiversity_map", "brute_force",
           "coverage_value", "footprints"]

ACTIONS = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])  # stay, up, down, left, right: (d_row, d_col)
Observe = Literal["coverage", "position"]


def footprints(grid_size: int, radius: int) -> np.ndarray:
    """Sensed cells of every cell: bool [N^2, N^2], row s = D(s) = cells within Chebyshev distance ``radius``."""
    rc = np.stack(np.divmod(np.arange(grid_size * grid_size), grid_size), 1)
    return np.abs(rc[:, None, :] - rc[None, :, :]).max(-1) <= radius


def coverage_value(cells: np.ndarray | list[int], weights: np.ndarray, radius: int) -> float:
    """F(S) for a set of cell indices S (flat, r * N + c) on the weight map ``weights`` [N, N] (the slow reference)."""
    n = weights.shape[0]
    covered = footprints(n, radius)[np.asarray(list(cells), dtype=int)].any(0)
    return float(weights.reshape(-1)[covered].sum())


def biodiversity_map(grid_size: int, seed: int = 0, n_sites: int = 4) -> np.ndarray:
    """A smooth random species density [N, N] in [0, 1]: ``n_sites`` Gaussian bumps (centres uniform on the grid,
    widths N/10 to N/4 cells, heights 0.3 to 1), scaled so that its maximum is 1."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:grid_size, 0:grid_size].astype(np.float64)
    density = np.zeros((grid_size, grid_size))
    for _ in range(n_sites):
        (cr, cc), width = rng.uniform(0, grid_size - 1, 2), rng.uniform(grid_size / 10, grid_size / 4)
        density += rng.uniform(0.3, 1.0) * np.exp(-((r - cr) ** 2 + (c - cc) ** 2) / (2 * width**2))
    return density / density.max()


@dataclass
class GridState:
    """B episodes in progress: ``pos`` int [B] (flat cell index), ``covered`` bool [B, N^2], ``t`` (steps taken)."""

    pos: np.ndarray
    covered: np.ndarray
    t: int


class SubmodularGrid:
    """The coverage task of the module docstring, batched over episodes.

    Args:
        grid_size: N (cells per side), >= 1.
        horizon: H, steps per episode, >= 1.
        radius: sensing radius in cells (Chebyshev), >= 0.
        weights: ``"uniform"``, ``"biodiversity"`` or an array [N, N] of finite non-negative weights.
        map_seed: seed of the biodiversity map.
        start: start cell (row, col); None: the centre cell (N // 2, N // 2).
        observe: ``"coverage"`` (cell, covered map, t / H) or ``"position"`` (cell, t / H).

    Raises:
        ValueError: naming the field, for N < 1, H < 1, radius < 0, a weight map of the wrong shape, with a
            negative or non-finite weight, a start cell off the grid or an unknown ``weights`` / ``observe``.
    """

    def __init__(self, grid_size: int = 8, horizon: int = 16, radius: int = 1,
                 weights: str | np.ndarray = "uniform", map_seed: int = 0, start: tuple[int, int] | None = None,
                 observe: Observe = "coverage") -> None:
        for name, value, low in (("grid_size", grid_size, 1), ("horizon", horizon, 1), ("radius", radius, 0)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ValueError(f"SubmodularGrid.{name} must be an integer >= {low}, got {value!r}")
        if observe not in ("coverage", "position"):
            raise ValueError(f"SubmodularGrid.observe must be 'coverage' or 'position', got {observe!r}")
        self.grid_size, self.horizon, self.radius, self.observe = int(grid_size), int(horizon), int(radius), observe
        self.weights = self._weight_map(weights, map_seed)
        start = (grid_size // 2, grid_size // 2) if start is None else tuple(start)
        if len(start) != 2 or not all(0 <= v < grid_size for v in start):
            raise ValueError(f"SubmodularGrid.start must be a cell (row, col) on the {grid_size} x {grid_size} grid, "
                             f"got {start!r}")
        self.start = int(start[0] * grid_size + start[1])
        self.footprint = footprints(self.grid_size, self.radius)  # [N^2, N^2]
        self.w = self.weights.reshape(-1)  # [N^2]
        self.cell_value = self.footprint.astype(np.float64) @ self.w  # F({s}) for every cell s, [N^2]
        rc = np.stack(np.divmod(np.arange(self.n_cells), grid_size), 1)  # [N^2, 2]
        nxt = np.clip(rc[:, None, :] + ACTIONS[None], 0, grid_size - 1)  # [N^2, 5, 2]
        self.next_cell = nxt[..., 0] * grid_size + nxt[..., 1]  # [N^2, 5]

    def _weight_map(self, weights: str | np.ndarray, map_seed: int) -> np.ndarray:
        n = self.grid_size
        if isinstance(weights, str):
            if weights == "uniform":
                return np.ones((n, n))
            if weights == "biodiversity":
                return biodiversity_map(n, map_seed)
            raise ValueError(f"SubmodularGrid.weights must be 'uniform', 'biodiversity' or an array, got {weights!r}")
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n, n):
            raise ValueError(f"SubmodularGrid.weights must have shape ({n}, {n}), got {w.shape}")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"SubmodularGrid.weights must be finite and >= 0 (a coverage objective with a negative "
                             f"weight is not monotone); got min {w.min()}")
        return w

    @property
    def n_cells(self) -> int:
        return self.grid_size * self.grid_size

    @property
    def obs_dim(self) -> int:
        return self.n_cells * (2 if self.observe == "coverage" else 1) + 1

    def value(self, covered: np.ndarray) -> np.ndarray:
        """F of covered maps: bool [..., N^2] -> [...]."""
        return covered.astype(np.float64) @ self.w

    def reset(self, batch: int) -> GridState:
        """``batch`` episodes at s_0, with S_0 = {s_0} already sensed."""
        pos = np.full(batch, self.start)
        return GridState(pos, np.repeat(self.footprint[self.start][None], batch, 0), 0)

    def step(self, state: GridState, actions: np.ndarray) -> tuple[GridState, np.ndarray, np.ndarray]:
        """One step of every episode: actions int [B] -> (next state, marginal gains [B], additive rewards [B]).

        The marginal gain is F(S_t u {s_{t+1}}) - F(S_t) = sum of w over the newly sensed cells of D(s_{t+1}).
        """
        pos = self.next_cell[state.pos, np.asarray(actions)]
        sensed = self.footprint[pos]  # [B, N^2]
        gain = (sensed & ~state.covered).astype(np.float64) @ self.w
        return GridState(pos, state.covered | sensed, state.t + 1), gain, self.cell_value[pos]

    def observation(self, state: GridState) -> np.ndarray:
        """float32 [B, obs_dim]: one-hot cell [N^2], covered map [N^2] (``observe="coverage"``), t / H."""
        b = state.pos.shape[0]
        onehot = np.zeros((b, self.n_cells), np.float32)
        onehot[np.arange(b), state.pos] = 1.0
        parts = [onehot] + ([state.covered.astype(np.float32)] if self.observe == "coverage" else [])
        return np.concatenate(parts + [np.full((b, 1), state.t / self.horizon, np.float32)], 1)

    def greedy_actions(self, state: GridState, rng: np.random.Generator) -> np.ndarray:
        """The one-step greedy action of every episode: argmax_a F(next(s, a) | S_t), ties broken at random; [B]."""
        nxt = self.next_cell[state.pos]  # [B, 5]
        gains = (self.footprint[nxt] & ~state.covered[:, None, :]).astype(np.float64) @ self.w  # [B, 5]
        best = gains >= gains.max(1, keepdims=True) - 1e-12
        return np.array([rng.choice(np.flatnonzero(row)) for row in best])


def brute_force(task: SubmodularGrid, objective: Literal["submodular", "additive"] = "submodular"
                ) -> tuple[float, tuple[int, ...], float]:
    """The best open-loop action sequence over all 5^H of them (the dynamics are deterministic, so this is optimal).

    Args:
        objective: ``"submodular"`` maximises F(S_H); ``"additive"`` maximises the sum of additive rewards.
    Returns:
        (the maximised objective, the best action sequence, F(S_H) of that sequence).
    Raises:
        ValueError: 5^H above 5^8 (too many sequences to enumerate).
    """
    if task.horizon > 8:
        raise ValueError(f"brute_force enumerates 5^H sequences; horizon {task.horizon} > 8 is too many")
    seqs = np.array(list(itertools.product(range(len(ACTIONS)), repeat=task.horizon)))  # [5^H, H]
    state, additive = task.reset(len(seqs)), np.zeros(len(seqs))
    for t in range(task.horizon):
        state, _, add = task.step(state, seqs[:, t])
        additive += add
    f = task.value(state.covered)
    score = f if objective == "submodular" else additive
    best = int(np.argmax(score))
    return float(score[best]), tuple(int(a) for a in seqs[best]), float(f[best])


class SubmodularGridEnv(gym.Env):
    """:class:`SubmodularGrid` as a gymnasium env (one episode); the same arguments plus ``reward``.

    Args:
        reward: ``"marginal"`` (the step reward is the marginal gain F(s_{t+1} | S_t), SubPO's) or ``"additive"``
            (F({s_{t+1}}), the cell's value regardless of history).
        **task: the arguments of :class:`SubmodularGrid`.

    ``info`` of every step holds ``marginal_gain``, ``additive_reward``, ``objective`` (F(S_{t+1})) and ``visited``
    (the sorted tuple of the distinct cells visited so far, flat indices); ``reset``'s info holds ``objective`` =
    F({s_0}) and ``visited``. Episodes end by truncation after H steps.
    """

    metadata = {"render_modes": []}

    def __init__(self, reward: Literal["marginal", "additive"] = "marginal", **task: Any) -> None:
        if reward not in ("marginal", "additive"):
            raise ValueError(f"SubmodularGridEnv.reward must be 'marginal' or 'additive', got {reward!r}")
        self.task, self.reward_kind = SubmodularGrid(**task), reward
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.task.obs_dim,), np.float32)
        self.action_space = gym.spaces.Discrete(len(ACTIONS))
        self._state, self._visited = self.task.reset(1), {self.task.start}

    def _info(self) -> dict[str, Any]:
        return {"objective": float(self.task.value(self._state.covered)[0]), "visited": tuple(sorted(self._visited))}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._state, self._visited = self.task.reset(1), {self.task.start}
        return self.task.observation(self._state)[0], self._info()

    def step(self, action: int):
        if self._state.t >= self.task.horizon:
            raise RuntimeError("SubmodularGridEnv.step called after the episode ended; call reset()")
        self._state, gain, additive = self.task.step(self._state, np.array([int(action)]))
        self._visited.add(int(self._state.pos[0]))
        reward = float(gain[0] if self.reward_kind == "marginal" else additive[0])
        info = {"marginal_gain": float(gain[0]), "additive_reward": float(additive[0]), **self._info()}
        return self.task.observation(self._state)[0], reward, False, self._state.t >= self.task.horizon, info


ENV_KWARGS: dict[str, dict[str, Any]] = {
    "gendiff/SubmodularCoverage-v0": {"grid_size": 10, "horizon": 20, "radius": 1, "weights": "uniform"},
    "gendiff/BiodiversityMap-v0": {"grid_size": 10, "horizon": 20, "radius": 1, "weights": "biodiversity",
                                   "map_seed": 0},
}


def _register() -> None:
    for env_id, kwargs in ENV_KWARGS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=SubmodularGridEnv, kwargs=kwargs)


_register()
