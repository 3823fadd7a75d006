"""StepMix: conservative exploration under an episode-wise constraint (Li, Huang, Shen & Yang, ICML 2023,
"Near-optimal Conservative Exploration in Reinforcement Learning under Episode-wise Constraints").

Constraint: every episode's expected return must be >= (1 - alpha) V^b, V^b the known value of a safe baseline
policy pi_b. StepMix plays a mixture policy that "adaptively and smoothly interpolates between the baseline policy
and the optimistic policy" (the paper's abstract), mixing at the level of steps, where EpsMix (epsmix.py) mixes
whole episodes. The paper's exact schedule was not available to us; the rule below is our reading of it.

Steps (episode k):
  1. Optimism: pi_k = UCBVI's greedy optimistic policy (gendiff/rl/tabular/ucbvi.py, step 2).
  2. Path of policies from pi_b to pi_k, indexed by t in [0, 1]:
     ``rule="per_step"`` (default, "stepmix"): pi_t = t pi_k + (1 - t) pi_b at every step and state (each action
     is the optimistic one with probability t);
     ``rule="switch"`` ("stepmix_switch"): with j = floor(t H), play pi_k at steps 0 .. j-1, at step j play pi_k
     with probability t H - j, then pi_b to the end (explore first, then hand over to the baseline).
     Both are continuous in t, with pi_0 = pi_b and pi_1 = pi_k.
  3. Certificates on a grid t_0 = 0 < t_1 < ... < t_G = 1: l(t_i) = the lower-confidence return of pi_{t_i}
     (UCBVI's step 3, one batched evaluation), <= the true return of every pi_{t_i} at once w.p. >= 1 - delta;
     l(0) = V^b (exact, known).
     For ``switch`` the true return is affine in t between grid points t = j / H (only step j's mixing weight
     changes), so there the grid is t = j / H and the lower bound is interpolated linearly: exact step 4 below.
  4. Play pi_{t*}, t* = the largest certified t, l(t*) >= (1 - alpha) V^b (t* exists as l(0) = V^b); for
     ``switch``, t* solves the interpolated l(t) = (1 - alpha) V^b past the last certified grid point.
  5. Why it is safe: on the confidence event, V^{pi_{t*}} >= l(t*) >= (1 - alpha) V^b. As the counts grow the
     certificates tighten and t* moves smoothly to 1 (pure optimism), so the regret follows UCBVI's.
  6. Observe the episode (UCBVI's step 4).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from gendiff.rl.tabular.learner import TABULAR_LEARNERS, EpisodePlan, LearnerSetup
from gendiff.rl.tabular.ucbvi import UCBVI

__all__ = ["StepMix", "mixture_path"]

Rule = Literal["per_step", "switch"]


def mixture_path(optimistic: np.ndarray, baseline: np.ndarray, t: np.ndarray, rule: Rule) -> np.ndarray:
    """Step 2: the policies pi_t [T, H, S, A] for mixing parameters t [T] in [0, 1].

    Args:
        optimistic, baseline: policies [H, S, A].
        t: where on the path, 0 = ``baseline``, 1 = ``optimistic``.
        rule: "per_step" (t-mixture at every step) or "switch" (optimistic for the first t H steps).
    """
    t = np.asarray(t, dtype=np.float64)
    if rule == "per_step":
        weight = np.broadcast_to(t[:, None], (t.size, optimistic.shape[0]))
    else:
        weight = np.clip(t[:, None] * optimistic.shape[0] - np.arange(optimistic.shape[0])[None], 0.0, 1.0)
    weight = weight[..., None, None]  # [T, H, 1, 1]: probability of the optimistic action at step h
    return weight * optimistic[None] + (1 - weight) * baseline[None]


class StepMix(UCBVI):
    """UCBVI's optimism, played through the certified baseline-to-optimistic mixture of steps 2-5.

    Args:
        setup: what the learner knows (alpha, the baseline and V^b among it).
        rule: step 2's path ("per_step" or "switch").
        grid: G, the number of grid intervals for "per_step" (the "switch" grid is t = j / H).
    """

    def __init__(self, setup: LearnerSetup, rule: Rule = "per_step", grid: int = 32) -> None:
        super().__init__(setup)
        if rule not in ("per_step", "switch"):
            raise ValueError(f"StepMix.rule must be 'per_step' or 'switch', got {rule!r}")
        if grid < 1:
            raise ValueError(f"StepMix.grid must be >= 1, got {grid}")
        self.rule = rule
        self.t_grid = np.linspace(0, 1, (setup.horizon if rule == "switch" else grid) + 1)

    def plan(self) -> EpisodePlan:
        """Steps 1-4: the policy [H, S, A] to play; ``info`` holds t* and the optimistic policy's certificate."""
        s = self.setup
        thr = s.threshold
        pi_k = self.optimistic()[1]  # step 1
        path = mixture_path(pi_k, s.baseline, self.t_grid, self.rule)  # step 2
        lower = self.pessimistic_return(path)  # step 3
        lower[0] = s.baseline_value
        i = int(np.flatnonzero(lower >= thr).max())  # step 4
        t = float(self.t_grid[i])
        if self.rule == "switch" and i + 1 < len(lower):  # affine between grid points: solve l(t) = thr
            t += float((lower[i] - thr) / (lower[i] - lower[i + 1])) * (self.t_grid[i + 1] - t)
        played = mixture_path(pi_k, s.baseline, np.array([t]), self.rule)[0]
        return EpisodePlan((played,), (1.0,), {"t": t, "lower_opt": float(lower[-1])})


@TABULAR_LEARNERS.register("stepmix")
def build_stepmix(setup: LearnerSetup) -> StepMix:
    """StepMix mixing pi_k and pi_b at every step (step 2's "per_step" path)."""
    return StepMix(setup, "per_step")


@TABULAR_LEARNERS.register("stepmix_switch")
def build_stepmix_switch(setup: LearnerSetup) -> StepMix:
    """StepMix exploring with pi_k for the first t H steps, then handing over to pi_b (step 2's "switch" path)."""
    return StepMix(setup, "switch")
