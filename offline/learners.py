"""Offline RL learners: the common base, state normalisation, evaluation, and the OFFLINE_LEARNERS registry.

Conventions (CORL): Adam 3e-4, gamma 0.99, tau 0.005, MLPs 256x2, states z-scored with the dataset's mean /
std (+1e-3), actions handled inside the learner in the squashed box [-1, 1] (:class:`ActionScaler`), batches
given in environment units. Evaluation reports the D4RL normalised score 100 (R - R_random) / (R_expert -
R_random) over >= 10 episodes. Algorithms live one per file: td3bc.py, iql.py, prdc.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from gendiff.offline.datasets import normalized_score
from gendiff.registry import Registry
from gendiff.rl.common import ActionScaler, evaluate

OBS_STD_EPS = 1e-3  # CORL's compute_mean_std(..., eps=1e-3)


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """IQL's asymmetric L2 (Kostrikov et al. 2022, eq. 5): mean |tau - 1(u < 0)| u^2 over diff u [B]."""
    if not 0.0 < expectile < 1.0:
        raise ValueError(f"expectile must lie in (0, 1), got {expectile}")
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.square()).mean()


class StateNormalizer(nn.Module):
    """z-scoring of states with fixed dataset statistics: (s - mean) / std, [..., obs_dim] -> [..., obs_dim]."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clone())

    @classmethod
    def fit(cls, obs: Tensor, enabled: bool = True) -> StateNormalizer:
        if not enabled:
            return cls(torch.zeros(obs.shape[1]), torch.ones(obs.shape[1]))
        return cls(obs.mean(0), obs.std(0, unbiased=False) + OBS_STD_EPS)

    def forward(self, obs: Tensor) -> Tensor:
        return (obs - self.mean) / self.std


@dataclass
class LearnerConfig:
    """Hyper-parameters shared by every learner (CORL defaults)."""

    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    hidden: tuple[int, ...] = (256, 256)
    normalize_states: bool = True

    def __post_init__(self) -> None:
        if not (self.lr > 0 and 0 <= self.gamma <= 1 and 0 < self.tau <= 1):
            raise ValueError(f"need lr > 0, 0 <= gamma <= 1, 0 < tau <= 1; got {self.lr}, {self.gamma}, {self.tau}")
        self.hidden = tuple(int(h) for h in self.hidden)


class PackedBatch(NamedTuple):
    """Views into packed rows [B, D] = [s | a | s' | r | d] (states z-scored, actions in [-1, 1]).

    Attributes:
        obs, next_obs: [B, obs_dim]; act: [B, act_dim]; obs_act: [B, obs_dim + act_dim] the critics' input
        [s, a] (no concatenation needed); rew, done: [B].
    """

    obs: Tensor
    act: Tensor
    obs_act: Tensor
    next_obs: Tensor
    rew: Tensor
    done: Tensor


def make_adam(params: Any, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel (one kernel for all tensors; CPU and CUDA), same update rule as the default."""
    return torch.optim.Adam(params, lr=lr, fused=True)


class OfflineLearner:
    """Base class: sizes, action scaling, state normalisation, packed batches and evaluation.

    Data enters an update in one of two ways:

    - ``update(batch)``: a dict of environment-unit tensors (obs, act, rew, next_obs, done), checked for
      NaN/inf and normalised on every call (one host sync for the check);
    - ``learn(rows)``: rows of a tensor made once by :meth:`pack` (checked and normalised there) and
      indexed by the training loop. Subclasses implement ``learn``; it never synchronises with the host
      and returns its metrics as 0-dim tensors (read them only when logging).

    Subclasses also implement ``actor_mean(obs_n) -> [B, act_dim]`` in [-1, 1].

    Args:
        obs_dim, act_dim: sizes; low, high: [act_dim] environment action bounds.
        states: [N, obs_dim] dataset states for the normaliser; config: hyper-parameters; seed: RNG seed.
        device: where the networks live and updates run (``"cpu"``, ``"cuda"``, ...); default CPU.
    """

    config_class: type[LearnerConfig] = LearnerConfig
    deterministic: bool = True  # PGD treats a deterministic actor as N(pi(s), I)

    def __init__(self, obs_dim: int, act_dim: int, low: Sequence[float], high: Sequence[float], states: Tensor,
                 config: LearnerConfig | None = None, seed: int = 0, device: str | torch.device | None = None) -> None:
        self.config = config or self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(self.config).__name__}")
        if states.dim() != 2 or states.shape[1] != obs_dim or not torch.isfinite(states).all():
            raise ValueError(f"states must be finite [N, {obs_dim}], got {tuple(states.shape)}")
        torch.manual_seed(seed)
        self.device = torch.device(device or "cpu")
        self.obs_dim, self.act_dim, self.steps = obs_dim, act_dim, 0
        self.scaler = ActionScaler(low, high).to(self.device)
        self.state_norm = StateNormalizer.fit(states.float(), self.config.normalize_states).to(self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    @torch.no_grad()
    def pack(self, batch: dict[str, Tensor]) -> Tensor:
        """Check, normalise and pack transitions into rows [N, D = 2 obs_dim + act_dim + 2] on the learner's device.

        The row layout is :class:`PackedBatch`'s: [s | a | s' | r | d].

        Args:
            batch: obs / next_obs [N, obs_dim], act [N, act_dim] (environment units), rew / done [N].
        Raises:
            KeyError: a key is missing. ValueError: wrong shapes or NaN/inf.
        """
        missing = {"obs", "act", "rew", "next_obs", "done"} - set(batch)
        if missing:
            raise KeyError(f"batch lacks {sorted(missing)}")
        n = batch["obs"].shape[0]
        want = {"obs": (n, self.obs_dim), "next_obs": (n, self.obs_dim), "act": (n, self.act_dim), "rew": (n,),
                "done": (n,)}
        for k, shape in want.items():
            if tuple(batch[k].shape) != shape:
                raise ValueError(f"batch[{k!r}] must have shape {shape}, got {tuple(batch[k].shape)}")
        t = {k: batch[k].to(self.device, torch.float32) for k in want}
        bad = [k for k, v in t.items() if not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"batch[{bad[0]!r}] contains NaN/inf")
        return torch.cat([self.state_norm(t["obs"]), self.scaler.from_env(t["act"]).clamp(-1, 1),
                          self.state_norm(t["next_obs"]), t["rew"][:, None], t["done"][:, None]], dim=1)

    def split(self, rows: Tensor) -> PackedBatch:
        """Views of packed rows [B, D] (no copies)."""
        o, a = self.obs_dim, self.act_dim
        return PackedBatch(rows[:, :o], rows[:, o:o + a], rows[:, :o + a], rows[:, o + a:2 * o + a],
                           rows[:, 2 * o + a], rows[:, 2 * o + a + 1])

    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One update on a dict of environment-unit transitions (checked and normalised here)."""
        return self.learn(self.pack(batch))

    def learn(self, rows: Tensor, actor_rows: Tensor | None = None) -> dict[str, Tensor]:
        """One update on packed rows [B, D]; metrics as detached 0-dim tensors. ``actor_rows`` [B', D]: a separate
        batch for the actor's step (a diagnostic); None: the actor learns from ``rows``."""
        raise NotImplementedError

    def actor_mean(self, obs_n: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, obs: Tensor) -> Tensor:
        """Differentiable deterministic action in environment units for raw obs [B, obs_dim]."""
        return self.scaler.to_env(self.actor_mean(self.state_norm(obs)))

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic environment actions for raw obs [B, obs_dim] (numpy)."""
        return self(torch.as_tensor(obs, dtype=torch.float32, device=self.device)).cpu().numpy()

    def evaluate(self, env_id: str, episodes: int = 10, ref: tuple[float | None, float | None] = (None, None),
                 seed: int = 10_000) -> dict[str, Any]:
        """Mean/std return and D4RL normalised score over ``episodes`` (>= 10 for reported scores)."""
        returns = np.asarray(evaluate(self.act, env_id, episodes, seed=seed))
        out: dict[str, Any] = {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
                               "episodes": int(episodes)}
        if ref[0] is not None and ref[1] is not None:
            scores = normalized_score(returns, ref[0], ref[1])
            out.update(score_mean=float(scores.mean()), score_std=float(scores.std()))
        return out


def build_learner(name: str, dataset_transitions: dict[str, Tensor], low: Sequence[float], high: Sequence[float],
                  config: LearnerConfig | None = None, seed: int = 0,
                  device: str | torch.device | None = None) -> OfflineLearner:
    """Build a registered learner for a dataset's transitions (obs [N, obs_dim], act [N, act_dim], ...)."""
    cls = OFFLINE_LEARNERS.get(name)
    obs, act = dataset_transitions["obs"], dataset_transitions["act"]
    kwargs: dict[str, Any] = {"dataset": dataset_transitions} if getattr(cls, "needs_dataset", False) else {}
    return cls(obs.shape[1], act.shape[1], low, high, obs, config, seed, device=device, **kwargs)


OFFLINE_LEARNERS: Registry[type[OfflineLearner]] = Registry("offline learner")
