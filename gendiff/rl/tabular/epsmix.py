"""EpsMix: conservative exploration by randomising whole episodes (Li, Huang, Shen & Yang, ICML 2023, the
randomisation-based alternative to StepMix; gendiff/rl/tabular/stepmix.py).

Constraint: every episode's expected return (over the episode's coin and the dynamics) >= (1 - alpha) V^b.

Steps (episode k):
  1. Optimism: pi_k = UCBVI's greedy optimistic policy (gendiff/rl/tabular/ucbvi.py, step 2).
  2. Certificate: l_k = the lower-confidence return of pi_k (UCBVI's step 3), l_k <= V^{pi_k} w.p. >= 1 - delta.
  3. Coin: play pi_k for the whole episode with probability rho_k and pi_b otherwise, rho_k the largest value with
     (1 - rho) V^b + rho l_k >= (1 - alpha) V^b: rho_k = 1 if l_k >= (1 - alpha) V^b, else
     rho_k = alpha V^b / (V^b - l_k) (>= alpha, as l_k >= 0). The episode's expected return is then
     (1 - rho_k) V^b + rho_k V^{pi_k} >= (1 - alpha) V^b.
  4. Observe the episode (UCBVI's step 4).
The constraint holds in expectation over the coin; an episode whose coin picks pi_k may itself fall below the
threshold (the runner counts those separately as ``component_violations``).
"""

from __future__ import annotations

from gendiff.rl.tabular.learner import TABULAR_LEARNERS, EpisodePlan
from gendiff.rl.tabular.ucbvi import UCBVI

__all__ = ["EpsMix"]


@TABULAR_LEARNERS.register("epsmix")
class EpsMix(UCBVI):
    """UCBVI's optimistic policy, played in a certified fraction rho_k of the episodes (steps 1-3)."""

    def plan(self) -> EpisodePlan:
        """Steps 1-3: (pi_b, pi_k) with weights (1 - rho_k, rho_k); ``info`` holds rho_k and l_k."""
        s = self.setup
        pi_k = self.optimistic()[1]
        lower = float(self.pessimistic_return(pi_k))
        rho = 1.0 if lower >= s.threshold else s.alpha * s.baseline_value / (s.baseline_value - lower)
        return EpisodePlan((s.baseline, pi_k), (1.0 - rho, rho), {"rho": rho, "lower_opt": lower})
