"""EXP3 (Auer, Cesa-Bianchi, Freund, Schapire, "The nonstochastic multiarmed bandit problem", SIAM J. Comput. 2002):
the adversarial-bandit subroutine of the test-time defence in "Beyond Worst-case Attacks" (Liu et al. 2024), where
the arms are the policies of a finite set and a round is one episode whose return, normalised to [0, 1], is the
reward.

Per round t, with K arms, log-weights log w_i (all 0 at the start) and exploration rate gamma in (0, 1]:
  1. p_i = (1 - gamma) w_i / sum_j w_j + gamma / K;
  2. draw the arm I_t ~ p and observe its reward x_t in [0, 1];
  3. importance-weighted estimate xhat_{I_t} = x_t / p_{I_t} (0 for the other arms);
  4. log w_{I_t} += gamma xhat_{I_t} / K.
The default gamma = min(1, sqrt(K ln K / ((e - 1) T))) for a known number of rounds T (Corollary 3.2 of the paper),
whose expected regret against the best fixed arm is at most 2 sqrt(e - 1) sqrt(T K ln K).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["EXP3", "BanditRun", "exp3_gamma", "run_exp3"]


def exp3_gamma(n_arms: int, rounds: int) -> float:
    """gamma = min(1, sqrt(K ln K / ((e - 1) T))) (Auer et al. 2002, Corollary 3.2; 1 for a single arm)."""
    if n_arms < 1 or rounds < 1:
        raise ValueError(f"exp3_gamma: n_arms and rounds must be >= 1, got {n_arms} and {rounds}")
    if n_arms == 1:
        return 1.0
    return min(1.0, math.sqrt(n_arms * math.log(n_arms) / ((math.e - 1) * rounds)))


class EXP3:
    """EXP3 over ``n_arms`` arms (module docstring).

    Args:
        n_arms: K >= 1.
        gamma: exploration rate in (0, 1]; None: :func:`exp3_gamma` for ``rounds``.
        rounds: the horizon T used for the default gamma.
        seed: seed of the arm draws.
    """

    def __init__(self, n_arms: int, gamma: float | None = None, rounds: int | None = None, seed: int = 0) -> None:
        if n_arms < 1:
            raise ValueError(f"EXP3: n_arms must be >= 1, got {n_arms}")
        if gamma is None:
            if rounds is None:
                raise ValueError("EXP3: give gamma, or rounds (the horizon T) for the default gamma")
            gamma = exp3_gamma(n_arms, rounds)
        if not 0 < gamma <= 1:
            raise ValueError(f"EXP3: gamma must lie in (0, 1], got {gamma}")
        self.n_arms, self.gamma = n_arms, float(gamma)
        self.log_w = np.zeros(n_arms)
        self.rng = np.random.default_rng(seed)

    def probabilities(self) -> np.ndarray:
        """Step 1: p [K]."""
        w = np.exp(self.log_w - self.log_w.max())  # shift for stability; p is unchanged
        return (1 - self.gamma) * w / w.sum() + self.gamma / self.n_arms

    def select(self) -> tuple[int, float]:
        """Step 2: the arm I_t and its probability p_{I_t}."""
        p = self.probabilities()
        arm = int(self.rng.choice(self.n_arms, p=p))
        return arm, float(p[arm])

    def update(self, arm: int, reward: float, prob: float) -> None:
        """Steps 3-4 for the arm drawn with probability ``prob`` and its reward in [0, 1]."""
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"EXP3: rewards must lie in [0, 1] (normalise them first), got {reward}")
        self.log_w[arm] += self.gamma * (reward / prob) / self.n_arms


@dataclass
class BanditRun:
    """The arms pulled [T] and the rewards seen [T] (in [0, 1]) of one EXP3 run, and its final probabilities [K]."""

    arms: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    final_probabilities: list[float] = field(default_factory=list)

    def pull_share(self, n_arms: int) -> list[float]:
        """Fraction of rounds each arm was pulled: [K]."""
        counts = np.bincount(np.asarray(self.arms, dtype=int), minlength=n_arms)
        return (counts / max(len(self.arms), 1)).tolist()


def run_exp3(pull: Callable[[int, int], float], n_arms: int, rounds: int, gamma: float | None = None,
             seed: int = 0) -> BanditRun:
    """``rounds`` rounds of EXP3; ``pull(t, arm)`` plays round t with the arm and returns its reward in [0, 1]."""
    if rounds < 1:
        raise ValueError(f"run_exp3: rounds must be >= 1, got {rounds}")
    bandit, run = EXP3(n_arms, gamma, rounds, seed), BanditRun()
    for t in range(rounds):
        arm, prob = bandit.select()
        reward = float(pull(t, arm))
        bandit.update(arm, reward, prob)
        run.arms.append(arm)
        run.rewards.append(reward)
    run.final_probabilities = bandit.probabilities().tolist()
    return run
