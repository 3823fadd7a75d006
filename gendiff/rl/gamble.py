"""A tiny stochastic task for return- and future-conditioned supervised learning (RCSL, DoC).

``gendiff/Gamble-v0`` (:class:`GambleEnv`): an episode lasts ``horizon`` steps; at every step the agent chooses
``safe`` (action 0, reward ``safe_reward``) or ``gamble`` (action 1, reward ``payout`` with probability
``win_prob``, else 0). The observation is the one-hot time step (all zeros once the episode is over). With the
defaults (horizon 2, safe 1, payout 3, win 0.25) the gamble's expected reward 0.75 is below the safe 1, so the
optimal policy is always safe (expected return 2), but the highest returns in any data set (up to 6) come only
from lucky gambles: the Dichotomy-of-Control example (Yang et al. 2022, Fig. 1), where a policy conditioned on a
high return copies the gamble and earns less than it was asked for.

``gendiff/GambleDeterministic-v0``: the same with ``win_prob = 1`` (the gamble always pays 3): a deterministic
task whose optimal return (6, always gamble) every return-conditioned learner should reach.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

SAFE, GAMBLE = 0, 1


class GambleEnv(gym.Env):
    """The safe-or-gamble task of the module docstring.

    Args:
        horizon: steps per episode (>= 1).
        safe_reward: reward of action 0.
        payout: reward of a won gamble (action 1).
        win_prob: probability that a gamble pays, in [0, 1].
    """

    metadata = {"render_modes": []}

    def __init__(self, horizon: int = 2, safe_reward: float = 1.0, payout: float = 3.0, win_prob: float = 0.25) -> None:
        if int(horizon) < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if not 0.0 <= win_prob <= 1.0:
            raise ValueError(f"win_prob must lie in [0, 1], got {win_prob}")
        self.horizon, self.safe_reward = int(horizon), float(safe_reward)
        self.payout, self.win_prob = float(payout), float(win_prob)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.horizon,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._t = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.horizon, np.float32)
        if self._t < self.horizon:
            obs[self._t] = 1.0
        return obs

    def expected_reward(self, action: int) -> float:
        """E[r | a]: ``safe_reward`` for safe, ``win_prob * payout`` for the gamble."""
        return self.safe_reward if int(action) == SAFE else self.win_prob * self.payout

    def optimal_return(self) -> float:
        """The largest expected return: horizon * max(E[r | safe], E[r | gamble])."""
        return self.horizon * max(self.expected_reward(SAFE), self.expected_reward(GAMBLE))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = int(np.asarray(action).reshape(()))
        if a not in (SAFE, GAMBLE):
            raise ValueError(f"action must be 0 (safe) or 1 (gamble), got {action!r}")
        if a == SAFE:
            reward = self.safe_reward
        else:
            reward = self.payout if self.np_random.random() < self.win_prob else 0.0
        self._t += 1
        return self._obs(), float(reward), self._t >= self.horizon, False, {}
