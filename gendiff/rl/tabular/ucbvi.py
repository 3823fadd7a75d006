"""UCBVI: optimistic value iteration on the empirical model (Azar, Osband & Munos 2017), the learner StepMix and
EpsMix build on; also the pessimistic (lower-confidence) evaluation of any policy that they use as a certificate.

The model is stationary (P [S, A, S] shared by all steps, so visit counts pool over h) and the rewards R [S, A]
are known, so only the transitions are estimated. The bonus is the L1 (Weissman et al. 2003) width, as in UCRL2
(Jaksch et al. 2010), rather than UCBVI-CH's Hoeffding width on P V*: since |(P_hat - P) V| <= ||P_hat - P||_1
span(V) / 2 for every V, one event makes the optimistic values of UCBVI and the pessimistic values of any
data-dependent policy (StepMix's certificate) valid together with probability >= 1 - delta, and the bonus can use
the span of the very function it backs up (small where the values are small: e.g. RiverSwim's baseline):

    w(n)       = min(2, bonus_scale * sqrt(2 (S ln 2 + ln(S A H K / delta)) / n))   (w = 2 when n = N(s, a) = 0)
    b(s, a; V) = w(N(s, a)) * (max V - min V) / 2                                  (P(s, a) V is within b of P_hat V)

Steps (episode k; h = H-1 .. 0, V_H = 0):
  1. P_hat(s, a) = N(s, a, .) / N(s, a) (uniform where N(s, a) = 0; there w = 2 covers every distribution).
  2. Optimism (Azar et al. 2017, Alg. 1, with the bonus above): Q_up_h = min(R + max V_up_{h+1},
     R + P_hat V_up_{h+1} + b(V_up_{h+1})), V_up_h = max_a Q_up_h; play the greedy policy pi_k.
  3. Pessimism for a policy pi [..., H, S, A]: Q_lo_h = max(R + min V_lo_{h+1}, R + P_hat V_lo_{h+1}
     - b(V_lo_{h+1})), V_lo_h = sum_a pi_h Q_lo_h; its lower-confidence return V_lo_0 . mu is <= the true return
     of pi (for every pi at once) w.p. >= 1 - delta.
  4. Observe the episode's (s, a, s') and add them to the counts.
"""

from __future__ import annotations

import math

import numpy as np

from gendiff.rl.tabular.learner import TABULAR_LEARNERS, EpisodePlan, LearnerSetup
from gendiff.rl.tabular.mdp import bellman_q, greedy_policy

__all__ = ["UCBVI"]


@TABULAR_LEARNERS.register("ucbvi")
class UCBVI:
    """Unconstrained optimistic learner (plays its greedy optimistic policy every episode).

    Args:
        setup: what the learner knows (sizes, R, mu, the baseline and its value, delta, K, bonus_scale).
    """

    def __init__(self, setup: LearnerSetup) -> None:
        self.setup = setup
        S, A, H = setup.n_states, setup.n_actions, setup.horizon
        self.counts = np.zeros((S, A, S))  # N(s, a, s')
        self.log_term = S * math.log(2) + math.log(S * A * H * setup.n_episodes / setup.delta)

    def model(self) -> tuple[np.ndarray, np.ndarray]:
        """Step 1 and the bonus's width: P_hat [S, A, S] and w [S, A] (the L1 radius, at most 2)."""
        n = self.counts.sum(-1)  # [S, A]
        S = self.setup.n_states
        P_hat = np.where(n[..., None] > 0, self.counts / np.maximum(n, 1)[..., None], 1.0 / S)
        w = np.where(n > 0, self.setup.bonus_scale * np.sqrt(2 * self.log_term / np.maximum(n, 1)), 2.0)
        return P_hat, np.minimum(2.0, w)

    def _backup(self, P_hat: np.ndarray, w: np.ndarray, V: np.ndarray, sign: float) -> np.ndarray:
        """R + P_hat V + sign * b(V), clipped to [R + min V, R + max V]; V [..., S] -> Q [..., S, A]."""
        R = self.setup.R
        lo, hi = V.min(-1)[..., None, None], V.max(-1)[..., None, None]
        Q = bellman_q(P_hat, R, V) + sign * w * (hi - lo) / 2
        return np.clip(Q, R + lo, R + hi)

    def optimistic(self) -> tuple[np.ndarray, np.ndarray]:
        """Step 2: Q_up [H, S, A] and the greedy optimistic policy pi_k [H, S, A]."""
        P_hat, w = self.model()
        H = self.setup.horizon
        Q = np.zeros((H, self.setup.n_states, self.setup.n_actions))
        V = np.zeros(self.setup.n_states)
        for h in range(H - 1, -1, -1):
            Q[h] = self._backup(P_hat, w, V, 1.0)
            V = Q[h].max(-1)
        return Q, greedy_policy(Q)

    def pessimistic_return(self, policy: np.ndarray) -> np.ndarray:
        """Step 3: lower-confidence expected returns [...] of policies [..., H, S, A]."""
        P_hat, w = self.model()
        V = np.zeros(policy.shape[:-3] + (self.setup.n_states,))
        for h in range(self.setup.horizon - 1, -1, -1):
            V = (policy[..., h, :, :] * self._backup(P_hat, w, V, -1.0)).sum(-1)
        return V @ self.setup.mu

    def plan(self) -> EpisodePlan:
        """Play pi_k (no constraint)."""
        return EpisodePlan((self.optimistic()[1],), (1.0,))

    def observe(self, transitions: np.ndarray) -> None:
        """Step 4: add the episode's (s_h, a_h, s_{h+1}) rows [H, 3] to the counts."""
        t = np.asarray(transitions)
        np.add.at(self.counts, (t[:, 0], t[:, 1], t[:, 2]), 1.0)
