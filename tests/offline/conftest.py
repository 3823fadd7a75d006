"""Fixtures for gendiff.offline tests: a temporary Minari folder and a task whose expert is known."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from gendiff.offline.datasets import Episode, OfflineDataset

LINE_ENV = "gendiff_test/OfflineLine-v0"


class LineEnv(gym.Env):
    """Known answer: context c ~ U[-1, 1], reward 1 - (a - 0.5 c)^2, 10 steps; the expert plays a = 0.5 c."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._t, self._c = 0, 0.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t, self._c = 0, float(self.np_random.uniform(-1, 1))
        return np.array([self._c], np.float32), {}

    def step(self, action):
        a = float(np.clip(np.asarray(action).reshape(-1)[0], -1, 1))
        r = 1.0 - (a - 0.5 * self._c) ** 2
        self._t += 1
        self._c = float(self.np_random.uniform(-1, 1))
        return np.array([self._c], np.float32), r, False, self._t >= 10, {}


if LINE_ENV not in gym.registry:
    gym.register(LINE_ENV, entry_point=LineEnv)


def line_dataset(episodes: int = 100, noise: float = 0.05, seed: int = 0) -> OfflineDataset:
    """Expert data of LineEnv (a = 0.5 c + noise); references: random ~ 10 (1 - E(a - c/2)^2), expert 10."""
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(episodes):
        c = rng.uniform(-1, 1, 11).astype(np.float32)
        a = np.clip(0.5 * c[:-1] + noise * rng.standard_normal(10), -1, 1).astype(np.float32)
        r = (1 - (a - 0.5 * c[:-1]) ** 2).astype(np.float32)
        trunc = np.zeros(10, np.float32)
        trunc[-1] = 1
        eps.append(Episode(c[:, None], a[:, None], r, np.zeros(10, np.float32), trunc))
    # random policy: E(a - c/2)^2 with a, c ~ U[-1, 1] = 1/3 + 1/12 = 5/12 -> return 10 * 7/12
    return OfflineDataset("line/expert-v0", LINE_ENV, eps, np.array([-1.0], np.float32), np.array([1.0], np.float32),
                          ref_min_score=10 * 7 / 12, ref_max_score=10.0)


@pytest.fixture
def minari_dir(tmp_path, monkeypatch):
    path = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path
