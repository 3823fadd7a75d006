"""Tasks for gendiff.rl, registered with gymnasium on import.

- ``gendiff/TwoModes-v0`` (:class:`TwoModesEnv`): a task whose optimal action distribution is bimodal.
  Each step shows a context c ~ U[-1, 1] and the time fraction t/H; the two rewarded actions are
  a = +m(c) and a = -m(c) (every dimension), m(c) = 0.5 + 0.25 c, and the reward is
  r = exp(-min_k ||a - mode_k||^2 / (2 w^2)) in [0, 1] (w = 0.15). Both modes pay exactly the same, so
  the maximum-entropy optimal policy pi*(a|s) ~ exp(r(s, a) / alpha) has two equal modes for every
  temperature alpha > 0, while a Gaussian policy must either sit on one mode (losing half the optimal
  policy's support) or straddle both (earning ~0 in the valley a = 0). Episodes last H = 10 steps,
  so the return lies in [0, 10]. With an observed state a deterministic policy on one mode is already
  return-optimal, so only the maximum-entropy optimum is bimodal here.
- ``gendiff/TwoModesNoRepeat-v0``: the same task where repeating the previous step's mode pays only
  ``repeat_reward`` = 0.2 of the reward, the context is drawn once per episode (a fresh context every step
  would be a coin that a deterministic policy could flip: a = sign(c) m(c) switches modes half the time),
  and the observation is the context alone (no time, no previous mode). This is a POMDP: the best
  memoryless policy, which is what PPO, SAC and GoRL all learn, is the 50/50 mixture of the two modes
  (P(switch) = 2 p (1 - p) is largest at p = 1/2; Singh, Jaakkola and Jordan 1994: stochastic memoryless
  policies can beat every deterministic one). Its expected return is 1 + 9 (0.5 + 0.5 * 0.2) = 6.4, while
  any policy on one mode earns 1 + 9 * 0.2 = 2.8 and a Gaussian straddling both modes earns little in the
  valley: the optimum itself is bimodal.
- ``gendiff/Gamble-v0``, ``gendiff/GambleDeterministic-v0``: safe-or-gamble steps (:mod:`gendiff.rl.gamble`), the
  stochastic task of return- / future-conditioned supervised learning (gendiff.offline.rcbc, gendiff.offline.doc).
- ``gendiff/dmc-<domain>-<task>-v0``: DeepMind Control Suite tasks (HopperStand and the others of the
  GoRL reference) through :class:`DMControlEnv`. dm_control is not a dependency of gendiff; making one
  of these environments without it raises ``ImportError`` saying ``pip install dm_control``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["DMC_TASKS", "DMControlEnv", "TwoModesEnv"]


class TwoModesEnv(gym.Env):
    """Contextual task with two equally good action modes (see the module docstring).

    Args:
        action_dim: action size (modes are +-m(c) in every dimension).
        horizon: steps per episode.
        width: reward width w in action units.
        repeat_reward: factor on the reward when the action's nearest mode is the previous step's (1 = no
            penalty; the first step of an episode is never penalised).
        observe_time: include the time fraction t / H in the observation (False: the context only).
        context_per_step: draw a new context every step (True) or once per episode (False).
    """

    metadata = {"render_modes": []}

    def __init__(self, action_dim: int = 2, horizon: int = 10, width: float = 0.15, repeat_reward: float = 1.0,
                 observe_time: bool = True, context_per_step: bool = True) -> None:
        if action_dim < 1 or horizon < 1 or not width > 0:
            raise ValueError(f"need action_dim >= 1, horizon >= 1, width > 0; got {action_dim}, {horizon}, {width}")
        if not 0.0 <= repeat_reward <= 1.0:
            raise ValueError(f"repeat_reward must lie in [0, 1], got {repeat_reward}")
        self.action_dim, self.horizon, self.width = action_dim, horizon, width
        self.repeat_reward, self.observe_time = float(repeat_reward), bool(observe_time)
        self.context_per_step = bool(context_per_step)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2 if observe_time else 1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self._t, self._c, self._prev_mode = 0, 0.0, -1

    def modes(self, context: np.ndarray | float) -> np.ndarray:
        """The two optimal actions for context c: [..., 2, action_dim] (+m(c), -m(c))."""
        m = 0.5 + 0.25 * np.asarray(context, dtype=np.float64)[..., None, None]
        sign = np.array([1.0, -1.0])[:, None]
        return np.broadcast_to(sign * m, (*np.shape(context), 2, self.action_dim))

    def reward(self, context: np.ndarray | float, action: np.ndarray) -> np.ndarray:
        """r(c, a) = exp(-min_k ||a - mode_k||^2 / (2 w^2)); action [..., action_dim] -> [...]."""
        d2 = ((np.asarray(action, dtype=np.float64)[..., None, :] - self.modes(context)) ** 2).sum(-1)
        return np.exp(-d2.min(-1) / (2 * self.width**2))

    def context_obs(self, context: np.ndarray | float, t: np.ndarray | float = 0) -> np.ndarray:
        """Observations for contexts [n] (and time steps t): [n, 2] (c, t / H), or [n, 1] without time."""
        c = np.atleast_1d(np.asarray(context, dtype=np.float32))
        if not self.observe_time:
            return c[:, None]
        return np.stack([c, np.broadcast_to(np.asarray(t, np.float32) / self.horizon, c.shape)], 1)

    def _obs(self) -> np.ndarray:
        return self.context_obs(self._c, self._t)[0]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t, self._c, self._prev_mode = 0, float(self.np_random.uniform(-1.0, 1.0)), -1
        return self._obs(), {}

    def step(self, action: np.ndarray):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self.action_dim), -1.0, 1.0)
        r = float(self.reward(self._c, a))
        mode = int(np.argmin(((a - self.modes(self._c)) ** 2).sum(-1)))
        if mode == self._prev_mode:
            r *= self.repeat_reward
        self._prev_mode = mode
        self._t += 1
        if self.context_per_step:
            self._c = float(self.np_random.uniform(-1.0, 1.0))
        return self._obs(), r, False, self._t >= self.horizon, {"mode": mode}


DMC_TASKS: tuple[tuple[str, str], ...] = (
    ("hopper", "stand"), ("hopper", "hop"), ("walker", "walk"), ("walker", "run"), ("cheetah", "run"),
    ("quadruped", "walk"), ("humanoid", "stand"), ("humanoid", "walk"), ("finger", "spin"),
)


class DMControlEnv(gym.Env):
    """A dm_control suite task as a gymnasium env: flattened observations, the task's action bounds.

    ``terminated`` is True only when dm_control returns discount 0; the suite's time limit (1,000 steps)
    is reported as ``truncated``.

    Raises:
        ModuleNotFoundError: dm_control is not installed (the message says what to install).
    """

    metadata = {"render_modes": []}

    def __init__(self, domain: str, task: str, seed: int | None = None) -> None:
        try:
            from dm_control import suite
        except ImportError as err:
            raise ModuleNotFoundError(
                f"the dm_control task {domain}-{task} needs DeepMind's dm_control package, which is not "
                "installed: run `pip install dm_control`", name="dm_control"
            ) from err
        self._suite, self.domain, self.task = suite, domain, task
        self._env = suite.load(domain, task, task_kwargs={"random": seed})
        spec = self._env.action_spec()
        obs_dim = sum(int(np.prod(v.shape)) for v in self._env.observation_spec().values())
        self.action_space = gym.spaces.Box(spec.minimum.astype(np.float32), spec.maximum.astype(np.float32))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)

    @staticmethod
    def _flat(obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in obs.values()])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env = self._suite.load(self.domain, self.task, task_kwargs={"random": seed})
        return self._flat(self._env.reset().observation), {}

    def step(self, action: np.ndarray):
        ts = self._env.step(np.asarray(action, dtype=np.float64))
        terminated = ts.last() and ts.discount == 0.0
        truncated = ts.last() and not terminated
        return self._flat(ts.observation), float(ts.reward or 0.0), terminated, truncated, {}


def _register() -> None:
    if "gendiff/TwoModes-v0" not in gym.registry:
        gym.register("gendiff/TwoModes-v0", entry_point=TwoModesEnv)
    if "gendiff/TwoModesNoRepeat-v0" not in gym.registry:
        gym.register("gendiff/TwoModesNoRepeat-v0", entry_point=TwoModesEnv,
                     kwargs={"repeat_reward": 0.2, "observe_time": False, "context_per_step": False})
    if "gendiff/Gamble-v0" not in gym.registry:  # gendiff/rl/gamble.py
        gym.register("gendiff/Gamble-v0", entry_point="gendiff.rl.gamble:GambleEnv")
    if "gendiff/GambleDeterministic-v0" not in gym.registry:
        gym.register("gendiff/GambleDeterministic-v0", entry_point="gendiff.rl.gamble:GambleEnv",
                     kwargs={"win_prob": 1.0})
    for domain, task in DMC_TASKS:
        env_id = f"gendiff/dmc-{domain}-{task}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=DMControlEnv, kwargs={"domain": domain, "task": task},
                         disable_env_checker=True)


_register()
