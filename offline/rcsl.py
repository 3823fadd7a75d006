"""Return- and future-conditioned supervised learning (RCSL) on Minari data: what RCBC and DoC share.

Both learners (one per file: rcbc.py, doc.py; registry :data:`RCSL_LEARNERS`) train on the steps of whole
episodes of a Minari dataset with a Discrete action space and flat Box observations:

1. :func:`step_data` turns the episodes into per-step tensors: the z-scored state s_t, the action a_t, the
   undiscounted return-to-go R_t = sum_{k >= t} r_k (divided by ``return_scale``, the largest |episode return|),
   and the future window tau_{t:t+F} = [s, one-hot a, r / scale, s'] of the F = longest-episode steps from t
   (zero-padded, with a mask). RCBC reads (s_t, a_t, R_t); DoC reads the window too.
2. At test time a learner gives a :class:`Conditioned` controller for a batch of episodes (RCBC: a target return;
   DoC: latents picked by its value function), and :func:`evaluate_conditioned` plays it in the environment and
   returns the achieved returns beside the returns the controller conditioned on or predicted.

Weights are saved with safetensors (:func:`gendiff.rl.common.write_checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from torch import Tensor, nn

from gendiff.config import check_numbers
from gendiff.offline.datasets import OfflineDataset
from gendiff.offline.learners import StateNormalizer, make_adam
from gendiff.registry import Registry
from gendiff.rl.common import load_modules, make_env, read_checkpoint, write_checkpoint


@dataclass
class RCSLConfig:
    """Hyper-parameters shared by RCBC and DoC."""

    lr: float = 1e-3  # Adam learning rate
    hidden: tuple[int, ...] = (64, 64)  # hidden widths of every MLP
    batch_size: int = 256  # steps per update

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        check_numbers(self, positive=("lr", "hidden", "batch_size"))


class StepData(NamedTuple):
    """Step 1: every step of a dataset (N steps in all, windows of F steps).

    Attributes:
        obs: [N, obs_dim] z-scored states s_t. act: [N] long actions a_t. rtg: [N] R_t / return_scale.
        future: [N, F, 2 obs_dim + num_actions + 1] rows [s, one-hot a, r / scale, s'] of steps t..t+F-1 (zeros
            past the episode's end). mask: [N, F] 1 for real steps of the window.
    """

    obs: Tensor
    act: Tensor
    rtg: Tensor
    future: Tensor
    mask: Tensor


def require_discrete(ds: OfflineDataset, what: str) -> int:
    """The number of actions of a Discrete-action dataset, else ValueError naming ``what``."""
    if ds.action_space != "Discrete":
        raise ValueError(f"dataset {ds.dataset_id!r} has {ds.action_space} actions; {what} needs Discrete actions")
    acts = np.concatenate([e.actions for e in ds.episodes]).ravel()
    if ds.act_dim != 1 or (acts != np.round(acts)).any() or acts.min() < 0:
        raise ValueError(f"dataset {ds.dataset_id!r}: Discrete actions must be integers >= 0 in one column")
    if ds.env_id is not None:
        env = make_env(ds.env_id)
        n = int(env.action_space.n)
        env.close()
        if acts.max() >= n:
            raise ValueError(f"dataset {ds.dataset_id!r} has action {int(acts.max())} >= the env's {n} actions")
        return n
    return int(acts.max()) + 1


def step_data(ds: OfflineDataset, normalizer: StateNormalizer, num_actions: int, return_scale: float,
              window: int) -> StepData:
    """Step 1 of the module docstring for every step of ``ds`` (windows of ``window`` steps)."""
    obs, act, rtg, fut, mask = [], [], [], [], []
    eye = np.eye(num_actions, dtype=np.float32)
    for e in ds.episodes:
        o = normalizer(torch.as_tensor(e.observations)).numpy()
        a = e.actions[:, 0].astype(np.int64)
        r = e.rewards / return_scale
        rows = np.concatenate([o[:-1], eye[a], r[:, None], o[1:]], 1)  # [T, D]
        pad = np.zeros((window, rows.shape[1]), np.float32)
        padded = np.concatenate([rows, pad])
        for t in range(len(e)):
            obs.append(o[t]), act.append(a[t]), rtg.append(r[t:].sum())
            fut.append(padded[t:t + window])
            mask.append(np.arange(window) < len(e) - t)
    f32 = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
    return StepData(f32(obs), torch.as_tensor(np.asarray(act)), f32(rtg), f32(fut), f32(mask))


class Conditioned(Protocol):
    """A controller for a batch of n episodes: ``predicted`` [n] is the return it conditions on or predicts."""

    predicted: np.ndarray

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Raw observations [n, obs_dim] -> actions [n] (ints)."""
        ...

    def observe(self, reward: np.ndarray) -> None:
        """The rewards [n] of the step just taken."""
        ...


class RCSLLearner:
    """Base class: sizes, the state normaliser, the return scale, batches of steps, save / load.

    Subclasses set ``name`` and ``config_class``, build their networks in ``build()`` (returning the modules to
    save, by name), and implement ``learn(batch) -> metrics`` and ``conditioned(n, target, generator)``.

    Args:
        ds: the training dataset (Discrete actions). config: hyper-parameters. seed: RNG seed.
    """

    name = ""
    config_class: type[RCSLConfig] = RCSLConfig

    def __init__(self, ds: OfflineDataset, config: RCSLConfig | None = None, seed: int = 0) -> None:
        self.config = config or self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(self.config).__name__}")
        torch.manual_seed(seed)
        self.num_actions = require_discrete(ds, self.name or type(self).__name__)
        self.obs_dim, self.window = ds.obs_dim, max(len(e) for e in ds.episodes)
        states = torch.as_tensor(np.concatenate([e.observations for e in ds.episodes]))
        self.normalizer = StateNormalizer.fit(states)
        self.return_scale = float(max(np.abs(ds.returns()).max(), 1e-6))
        self.data = step_data(ds, self.normalizer, self.num_actions, self.return_scale, self.window)
        self.generator = torch.Generator().manual_seed(seed)
        self.modules = self.build()
        self.optimizer = make_adam([p for m in self.modules.values() for p in m.parameters()], self.config.lr)
        self.steps = 0

    def build(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def sample(self) -> StepData:
        """A batch of ``batch_size`` steps drawn uniformly with replacement."""
        idx = torch.randint(len(self.data.act), (self.config.batch_size,), generator=self.generator)
        return StepData(*(t[idx] for t in self.data))

    def learn(self, batch: StepData) -> dict[str, float]:
        raise NotImplementedError

    def train(self, steps: int, progress: bool = False) -> list[dict[str, float]]:
        """``steps`` updates on sampled batches; the metrics of every update."""
        from tqdm.auto import tqdm

        return [self.learn(self.sample()) for _ in tqdm(range(steps), disable=not progress, desc=self.name)]

    def conditioned(self, n: int, target: float | None, generator: torch.Generator) -> Conditioned:
        raise NotImplementedError

    def norm_obs(self, obs: np.ndarray) -> Tensor:
        """Raw observations [n, obs_dim] (numpy) -> z-scored tensor [n, obs_dim]; ValueError on a wrong size."""
        o = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        if o.dim() != 2 or o.shape[1] != self.obs_dim:
            raise ValueError(f"{self.name}: observations must be [n, {self.obs_dim}], got {tuple(o.shape)}")
        return self.normalizer(o)

    def save(self, path: str | Path) -> Path:
        """Write the networks (safetensors) and sizes (config.json) to the folder ``path``."""
        meta = {"algo": self.name, "obs_dim": self.obs_dim, "num_actions": self.num_actions, "window": self.window,
                "return_scale": self.return_scale, "config": {**self.config.__dict__, "hidden": list(self.config.hidden)}}
        return write_checkpoint(path, {**self.modules, "normalizer": self.normalizer}, meta)

    def load(self, path: str | Path) -> None:
        """Load weights written by :meth:`save` for the same algorithm and sizes (ValueError otherwise)."""
        meta, state = read_checkpoint(path, f"{self.name} learner")
        mine = (self.name, self.obs_dim, self.num_actions, self.window)
        theirs = (meta.get("algo"), meta.get("obs_dim"), meta.get("num_actions"), meta.get("window"))
        if mine != theirs:
            raise ValueError(f"{path}: saved (algo, obs_dim, num_actions, window) {theirs} do not match {mine}")
        self.return_scale = float(meta["return_scale"])
        load_modules(state, {**self.modules, "normalizer": self.normalizer}, path)


def sample_actions(logits: Tensor, generator: torch.Generator, greedy: bool) -> np.ndarray:
    """Actions [n] from logits [n, num_actions]: argmax when ``greedy``, else categorical samples."""
    if greedy:
        return logits.argmax(-1).numpy()
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0].numpy()


def evaluate_conditioned(learner: RCSLLearner, env_id: str, episodes: int, target: float | None = None,
                         seed: int = 10_000) -> dict[str, Any]:
    """Step 2: play ``episodes`` episodes at once; achieved returns beside the conditioned / predicted ones.

    Returns:
        {"returns": [episodes], "predicted": [episodes], "return_mean", "return_std", "predicted_mean"}.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    envs = SyncVectorEnv([lambda: make_env(env_id) for _ in range(episodes)], autoreset_mode=AutoresetMode.SAME_STEP)
    try:
        obs, _ = envs.reset(seed=[seed + i for i in range(episodes)])
        ctrl = learner.conditioned(episodes, target, torch.Generator().manual_seed(seed))
        total, alive = np.zeros(episodes), np.ones(episodes, dtype=bool)
        while alive.any():
            obs, rew, term, trunc, _ = envs.step(ctrl.act(obs.astype(np.float32)))
            total += np.where(alive, rew, 0.0)
            ctrl.observe(np.asarray(rew, dtype=np.float64))
            alive &= ~(term | trunc)
    finally:
        envs.close()
    pred = np.asarray(ctrl.predicted, dtype=np.float64)
    return {"returns": total.tolist(), "predicted": pred.tolist(), "return_mean": float(total.mean()),
            "return_std": float(total.std()), "predicted_mean": float(pred.mean())}


RCSL_LEARNERS: Registry[type[RCSLLearner]] = Registry("return-conditioned learner")
