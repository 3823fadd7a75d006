"""What a tabular learner knows and returns, and the ``TABULAR_LEARNERS`` registry.

Every learner is built from a :class:`LearnerSetup` (what the agent is told: sizes, the known rewards and initial
distribution, the baseline policy and its exact value, the constraint level alpha; never the transitions) and plays
episodes through two calls: ``plan()`` -> :class:`EpisodePlan` (the policy or mixture of policies for the next
episode) and ``observe(transitions)`` (the episode's (s, a, s') rows). The runner (gendiff/rl/tabular/run.py) computes
each plan's exact expected return on the true MDP, so regret and constraint violations are counted exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from gendiff.registry import Registry
from gendiff.rl.tabular.mdp import ConservativeTask

__all__ = ["TABULAR_LEARNERS", "Baseline", "EpisodePlan", "LearnerSetup", "TabularLearner"]


@dataclass(frozen=True)
class LearnerSetup:
    """What a learner is told about a :class:`ConservativeTask` (everything but the transition kernel).

    Args:
        n_states, n_actions, horizon: S, A, H.
        R: known mean rewards [S, A]; mu: known initial distribution [S].
        baseline: the safe baseline policy [H, S, A]; baseline_value: its exact expected return V^b.
        alpha: the constraint level: every episode's expected return must stay >= (1 - alpha) V^b; in (0, 1).
        delta: the confidence level of the bonuses (the constraint holds w.p. >= 1 - delta); in (0, 1).
        n_episodes: K, the number of episodes (it enters the bonuses' union bound).
        bonus_scale: multiplies the confidence width (1 = the width with the stated guarantee).
    """

    n_states: int
    n_actions: int
    horizon: int
    R: np.ndarray
    mu: np.ndarray
    baseline: np.ndarray
    baseline_value: float
    alpha: float = 0.1
    delta: float = 0.05
    n_episodes: int = 1000
    bonus_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("alpha", "delta"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not 0 < v < 1:
                raise ValueError(f"LearnerSetup.{name} must lie in (0, 1), got {v!r}")
        if not isinstance(self.n_episodes, int) or self.n_episodes <= 0:
            raise ValueError(f"LearnerSetup.n_episodes must be a positive integer, got {self.n_episodes!r}")
        if not isinstance(self.bonus_scale, int | float) or not self.bonus_scale > 0:
            raise ValueError(f"LearnerSetup.bonus_scale must be > 0, got {self.bonus_scale!r}")

    @classmethod
    def from_task(cls, task: ConservativeTask, **kwargs: object) -> LearnerSetup:
        """The setup of ``task`` (its transitions withheld); ``kwargs`` set alpha, delta, n_episodes, ..."""
        m = task.mdp
        return cls(m.n_states, m.n_actions, m.horizon, m.R, m.mu, task.baseline, task.baseline_value,
                   **kwargs)  # type: ignore[arg-type]

    @property
    def threshold(self) -> float:
        """(1 - alpha) V^b: the least expected return any episode may have."""
        return (1.0 - self.alpha) * self.baseline_value


@dataclass(frozen=True)
class EpisodePlan:
    """What a learner plays in one episode: policy ``components[i]`` [H, S, A] with probability ``weights[i]``
    (the coin is tossed once per episode). Its expected return is sum_i weights[i] V^{components[i]}.

    ``info`` carries the learner's diagnostics (e.g. StepMix's switch step and mixing weight).
    """

    components: tuple[np.ndarray, ...]
    weights: tuple[float, ...]
    info: dict[str, float] = field(default_factory=dict)


class TabularLearner(Protocol):
    """A learner on a tabular episodic MDP."""

    def plan(self) -> EpisodePlan:
        """The policy (or randomisation over policies) for the next episode."""
        ...

    def observe(self, transitions: np.ndarray) -> None:
        """Learn from one episode: int [H, 3] rows (s_h, a_h, s_{h+1})."""
        ...


TABULAR_LEARNERS: Registry[Callable[[LearnerSetup], TabularLearner]] = Registry("tabular learner")


@TABULAR_LEARNERS.register("baseline")
class Baseline:
    """Plays the baseline policy every episode (never violates the constraint; linear regret)."""

    def __init__(self, setup: LearnerSetup) -> None:
        self.setup = setup

    def plan(self) -> EpisodePlan:
        return EpisodePlan((self.setup.baseline,), (1.0,))

    def observe(self, transitions: np.ndarray) -> None:
        return None
