"""Tabular episodic MDPs: the type, exact policy evaluation, optimal planning, sampling, and a small suite.

An MDP here is stationary: transition kernel ``P`` [S, A, S] and mean reward ``R`` [S, A] in [0, 1] are the same at
every step h = 0 .. H-1 of an episode; the initial state is drawn from ``mu`` [S]. A (Markov, possibly stochastic)
policy is an array [H, S, A] of action probabilities per step and state; a batch of policies is [..., H, S, A].
Values are finite-horizon and undiscounted: V_h(s) = E[sum_{t >= h} R(s_t, a_t) | s_h = s], in [0, H - h].

The suite (``TABULAR_TASKS``) pairs each MDP with a safe baseline policy for conservative exploration (StepMix,
gendiff/rl/tabular/stepmix.py): ``river_swim`` (hard exploration, Strehl & Littman 2008) and ``random_dirichlet``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gendiff.registry import Registry

__all__ = ["TABULAR_TASKS", "ConservativeTask", "TabularMDP", "bellman_q", "evaluate_policy", "expected_return",
           "greedy_policy", "optimal_values",
           "random_dirichlet", "river_swim", "sample_episode", "uniform_policy"]

_TOL = 1e-6


@dataclass(frozen=True)
class TabularMDP:
    """A finite-horizon tabular MDP with stationary dynamics.

    Args:
        P: transition probabilities [S, A, S]; every row P[s, a] is a distribution.
        R: mean rewards [S, A] in [0, 1] (deterministic and known to the learners in this package).
        mu: initial-state distribution [S].
        horizon: H, the number of steps per episode (> 0).
    Bad input raises ValueError naming the field.
    """

    P: np.ndarray
    R: np.ndarray
    mu: np.ndarray
    horizon: int

    def __post_init__(self) -> None:
        P, R, mu = (np.asarray(x, dtype=np.float64) for x in (self.P, self.R, self.mu))
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int | np.integer) or self.horizon <= 0:
            raise ValueError(f"TabularMDP.horizon must be a positive integer, got {self.horizon!r}")
        if P.ndim != 3 or P.shape[0] != P.shape[2] or P.shape[0] == 0 or P.shape[1] == 0:
            raise ValueError(f"TabularMDP.P must have shape [S, A, S], got {P.shape}")
        S, A = P.shape[:2]
        if R.shape != (S, A):
            raise ValueError(f"TabularMDP.R must have shape [S, A] = {(S, A)}, got {R.shape}")
        if mu.shape != (S,):
            raise ValueError(f"TabularMDP.mu must have shape [S] = {(S,)}, got {mu.shape}")
        for name, x in (("P", P), ("R", R), ("mu", mu)):
            if not np.all(np.isfinite(x)):
                raise ValueError(f"TabularMDP.{name} has non-finite entries")
        if P.min() < 0 or np.abs(P.sum(-1) - 1).max() > _TOL:
            s, a = np.unravel_index(np.abs(P.sum(-1) - 1).argmax(), (S, A))
            raise ValueError(f"TabularMDP.P must hold probabilities (>= 0, each P[s, a] summing to 1); "
                             f"P[{s}, {a}] sums to {P[s, a].sum():.6g}, min entry {P.min():.3g}")
        if R.min() < 0 or R.max() > 1:
            raise ValueError(f"TabularMDP.R must lie in [0, 1], got range [{R.min():.3g}, {R.max():.3g}]")
        if mu.min() < 0 or abs(mu.sum() - 1) > _TOL:
            raise ValueError(f"TabularMDP.mu must be a distribution (>= 0, sum 1), sums to {mu.sum():.6g}")
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "horizon", int(self.horizon))

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    def check_policy(self, policy: np.ndarray, name: str = "policy") -> np.ndarray:
        """``policy`` as float64 [..., H, S, A], or a ValueError naming ``name`` (shape, probabilities)."""
        pi = np.asarray(policy, dtype=np.float64)
        want = (self.horizon, self.n_states, self.n_actions)
        if pi.ndim < 3 or pi.shape[-3:] != want:
            raise ValueError(f"{name} must have shape [..., H, S, A] = [..., {', '.join(map(str, want))}], "
                             f"got {pi.shape}")
        if not np.all(np.isfinite(pi)) or pi.min() < 0 or np.abs(pi.sum(-1) - 1).max() > _TOL:
            raise ValueError(f"{name} must hold action probabilities (>= 0, summing to 1 over actions)")
        return pi


def bellman_q(P: np.ndarray, R: np.ndarray, V_next: np.ndarray) -> np.ndarray:
    """One Bellman backup Q = R + P V_next.

    Args:
        P: transitions [S, A, S]; R: rewards [S, A]; V_next: next-step values [..., S].
    Returns:
        Q: [..., S, A].
    """
    return R + np.einsum("sat,...t->...sa", P, V_next)


def evaluate_policy(mdp: TabularMDP, policy: np.ndarray) -> np.ndarray:
    """Exact values of a batch of policies by backward induction (V_H = 0; V_h = sum_a pi_h (R + P V_{h+1})).

    Args:
        mdp: the MDP.
        policy: [..., H, S, A] action probabilities.
    Returns:
        V: [..., H + 1, S] values per step (V[..., H, :] = 0); the expected return is ``V[..., 0, :] @ mdp.mu``.
    """
    pi = mdp.check_policy(policy)
    H, S = mdp.horizon, mdp.n_states
    V = np.zeros(pi.shape[:-3] + (H + 1, S))
    for h in range(H - 1, -1, -1):
        V[..., h, :] = (pi[..., h, :, :] * bellman_q(mdp.P, mdp.R, V[..., h + 1, :])).sum(-1)
    return V


def expected_return(mdp: TabularMDP, policy: np.ndarray) -> np.ndarray:
    """E[sum_h R] from s_0 ~ mu for a batch of policies [..., H, S, A]; returns [...] (a float array)."""
    return evaluate_policy(mdp, policy)[..., 0, :] @ mdp.mu


def greedy_policy(Q: np.ndarray) -> np.ndarray:
    """The deterministic policy [..., S, A] (one-hot) taking argmax_a Q [..., S, A] (lowest index on ties)."""
    return np.eye(Q.shape[-1])[Q.argmax(-1)]


def optimal_values(mdp: TabularMDP) -> tuple[np.ndarray, np.ndarray]:
    """Optimal planning by backward induction: V*_h = max_a (R + P V*_{h+1}).

    Returns:
        V: [H + 1, S] optimal values (V[H] = 0); pi: [H, S, A] an optimal deterministic policy.
    """
    H, S = mdp.horizon, mdp.n_states
    V = np.zeros((H + 1, S))
    pi = np.zeros((H, S, mdp.n_actions))
    for h in range(H - 1, -1, -1):
        Q = bellman_q(mdp.P, mdp.R, V[h + 1])
        pi[h] = greedy_policy(Q)
        V[h] = Q.max(-1)
    return V, pi


def uniform_policy(mdp: TabularMDP) -> np.ndarray:
    """The uniformly random policy [H, S, A]."""
    return np.full((mdp.horizon, mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions)


def sample_episode(mdp: TabularMDP, policy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One episode of ``policy`` [H, S, A] on the true MDP.

    Returns:
        transitions: int64 [H, 3] rows (s_h, a_h, s_{h+1}); the rewards are ``mdp.R[s_h, a_h]``.
    """
    H = mdp.horizon
    out = np.zeros((H, 3), dtype=np.int64)
    u = rng.random((H, 2))
    s = int(np.searchsorted(np.cumsum(mdp.mu), rng.random() * mdp.mu.sum()))
    s = min(s, mdp.n_states - 1)
    for h in range(H):
        a = min(int(np.searchsorted(np.cumsum(policy[h, s]), u[h, 0])), mdp.n_actions - 1)
        s2 = min(int(np.searchsorted(np.cumsum(mdp.P[s, a]), u[h, 1])), mdp.n_states - 1)
        out[h] = (s, a, s2)
        s = s2
    return out


@dataclass(frozen=True)
class ConservativeTask:
    """An MDP of the suite with its safe baseline policy (known to the learner, with its exact value).

    Args:
        name: the suite name.
        mdp: the true MDP (the learner sees only its rewards and samples of its transitions).
        baseline: the baseline policy [H, S, A].
    """

    name: str
    mdp: TabularMDP
    baseline: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "baseline", self.mdp.check_policy(self.baseline, "ConservativeTask.baseline"))

    @property
    def baseline_value(self) -> float:
        """V^b: the baseline's exact expected return."""
        return float(expected_return(self.mdp, self.baseline))

    @property
    def optimal_value(self) -> float:
        """V*: the optimal expected return."""
        return float(optimal_values(self.mdp)[0][0] @ self.mdp.mu)


TABULAR_TASKS: Registry[Callable[..., ConservativeTask]] = Registry("tabular task")


@TABULAR_TASKS.register("river_swim")
def river_swim(n_states: int = 6, horizon: int = 20, seed: int = 0, baseline_skill: float = 0.9) -> ConservativeTask:
    """RiverSwim (Strehl & Littman 2008; Osband et al. 2013's variant), rewards scaled into [0, 1].

    A chain 0 .. S-1 starting at 0 (probability 1). Action 0 (left) moves left deterministically; action 1 (right,
    against the current) moves right w.p. 0.35, stays w.p. 0.6, moves left w.p. 0.05 (at the ends the mass that
    would leave the chain stays). Rewards: 0.005 for left at state 0, 1 for right at S-1. The baseline is a
    mediocre swimmer: each step it plays the optimal action w.p. ``baseline_skill`` and "left" otherwise (S = 6,
    H = 20, skill 0.9: V^b = 2.06 of V* = 4.85); a learner exploring without it earns ~0 until it has found the
    far end (the uniform policy: 0.05). ``seed`` is unused (the construction is deterministic).
    """
    S = n_states
    if S < 2:
        raise ValueError(f"river_swim: n_states must be >= 2, got {S}")
    P = np.zeros((S, 2, S))
    for s in range(S):
        P[s, 0, max(s - 1, 0)] = 1.0
        P[s, 1, min(s + 1, S - 1)] += 0.35
        P[s, 1, s] += 0.6
        P[s, 1, max(s - 1, 0)] += 0.05
    R = np.zeros((S, 2))
    R[0, 0], R[S - 1, 1] = 0.005, 1.0
    mdp = TabularMDP(P, R, np.eye(S)[0], horizon)
    left = np.zeros((horizon, S, 2))
    left[..., 0] = 1.0
    return ConservativeTask("river_swim", mdp, _skilled(mdp, left, baseline_skill))


def _skilled(mdp: TabularMDP, fallback: np.ndarray, skill: float) -> np.ndarray:
    """The policy [H, S, A] playing an optimal action w.p. ``skill`` and ``fallback`` [H, S, A] otherwise."""
    if not 0 <= skill <= 1:
        raise ValueError(f"baseline_skill must lie in [0, 1], got {skill}")
    return skill * optimal_values(mdp)[1] + (1 - skill) * fallback


@TABULAR_TASKS.register("random_dirichlet")
def random_dirichlet(n_states: int = 10, horizon: int = 10, seed: int = 0, n_actions: int = 4,
                     concentration: float = 0.1, reward_power: float = 8.0,
                     baseline_skill: float = 0.5) -> ConservativeTask:
    """A random MDP: P[s, a] ~ Dirichlet(concentration * 1_S) (near-deterministic for small concentration),
    R[s, a] = U[0, 1] ** reward_power (a few rewarding pairs), mu uniform; all drawn from ``seed``. The baseline
    plays an optimal action w.p. ``baseline_skill`` and a uniformly random one otherwise: a fair deployed policy,
    better than the exploratory policies of early learning.
    """
    rng = np.random.default_rng(seed)
    S, A = n_states, n_actions
    P = rng.dirichlet(np.full(S, concentration), size=(S, A))
    R = rng.random((S, A)) ** reward_power
    mdp = TabularMDP(P, R, np.full(S, 1.0 / S), horizon)
    return ConservativeTask("random_dirichlet", mdp, _skilled(mdp, uniform_policy(mdp), baseline_skill))
