"""Pieces every online-RL algorithm of gendiff shares.

- :func:`check_action_space` / :class:`ActionScaler`: the one place where environment action spaces are
  validated and where policy actions in (-1, 1) are mapped to the environment's box.
  **Squashing convention** (SAC, PPO, PMOE and GoRL alike): every policy produces a *pre-squash* action
  u in R^d; the environment receives ``low + (tanh(u) + 1) / 2 * (high - low)``. GoRL's decoders map a
  latent z to u, so the identity decoder (u = z exactly) makes stage-0 GoRL a tanh-squashed Gaussian.
- **Bad action spaces**: a discrete (or any non-Box) action space raises ``TypeError``. A Box with
  infinite bounds raises ``ValueError`` unless ``unbounded_action_bound`` is given; then the infinite
  bounds are replaced by +-bound and a ``UserWarning`` says so (tanh squashing to that bound).
- :class:`ReplayBuffer`, :func:`soft_update`, :class:`RunningMeanStd`, :func:`mlp`.
- :func:`make_vec_env` (``gymnasium.vector.SyncVectorEnv`` in same-step autoreset mode, so a finished
  episode's last observation is in ``info["final_obs"]``), :class:`EpisodeTracker`, :func:`evaluate`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

__all__ = [
    "ActionScaler", "ActionSpaceError", "EpisodeTracker", "ReplayBuffer", "RunningMeanStd", "TrainLog", "check_action_space",
    "evaluate", "final_next_obs", "load_modules", "make_env", "make_vec_env", "mlp", "read_checkpoint", "soft_update",
    "write_checkpoint",
]


# --------------------------------------------------------------------------- action spaces
class ActionSpaceError(TypeError, ValueError):
    """An environment's action space is of a kind gendiff.rl does not handle (e.g. ``Discrete``).

    A TypeError for Python callers; also a ValueError, so that ``gendiff`` reports it as bad input (one line,
    no traceback) like every other wrong argument.
    """


def check_action_space(space: gym.Space, unbounded_action_bound: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a continuous action space and return its (low, high) bounds, float32 [act_dim] each.

    Raises:
        ActionSpaceError: (a TypeError) the space is not a ``gymnasium.spaces.Box`` (e.g. ``Discrete``).
        ValueError: a bound is infinite and ``unbounded_action_bound`` is None, or low >= high.
    """
    if not isinstance(space, gym.spaces.Box):
        raise ActionSpaceError(
            f"gendiff.rl needs a continuous Box action space; got {type(space).__name__} ({space}). "
            "Discrete action spaces are not supported by SAC / PPO / GoRL here."
        )
    if len(space.shape) != 1:
        raise ValueError(f"action space must be 1-D (a vector of actions), got shape {space.shape}")
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        if unbounded_action_bound is None:
            raise ValueError(
                f"action space {space} is unbounded; tanh-squashed policies need finite bounds. Pass "
                "unbounded_action_bound=B to squash the infinite dimensions to [-B, B]."
            )
        if not unbounded_action_bound > 0:
            raise ValueError(f"unbounded_action_bound must be positive, got {unbounded_action_bound}")
        warnings.warn(
            f"action space {space} has infinite bounds; squashing those dimensions to "
            f"[-{unbounded_action_bound}, {unbounded_action_bound}] with tanh", UserWarning, stacklevel=2,
        )
        low = np.where(np.isfinite(low), low, -unbounded_action_bound)
        high = np.where(np.isfinite(high), high, unbounded_action_bound)
    if not (low < high).all():
        raise ValueError(f"action space needs low < high in every dimension, got low={low}, high={high}")
    return low.astype(np.float32), high.astype(np.float32)


class ActionScaler(nn.Module):
    """Affine map between the squashed box (-1, 1)^d and the environment's [low, high].

    Args:
        low, high: [act_dim] bounds (finite).
    """

    def __init__(self, low: Sequence[float] | np.ndarray, high: Sequence[float] | np.ndarray) -> None:
        super().__init__()
        low_t, high_t = torch.as_tensor(np.asarray(low), dtype=torch.float32), torch.as_tensor(
            np.asarray(high), dtype=torch.float32)
        self.register_buffer("center", (high_t + low_t) / 2)
        self.register_buffer("halfwidth", (high_t - low_t) / 2)

    def to_env(self, squashed: Tensor) -> Tensor:
        """[..., d] in (-1, 1) -> [..., d] in [low, high]."""
        return self.center + self.halfwidth * squashed

    def from_env(self, action: Tensor) -> Tensor:
        """[..., d] in [low, high] -> [..., d] in [-1, 1]."""
        return (action - self.center) / self.halfwidth

    def log_abs_det(self) -> Tensor:
        """log |d to_env / d squashed| summed over dims (a scalar)."""
        return self.halfwidth.log().sum()


# --------------------------------------------------------------------------- networks and buffers
def mlp(in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256), act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Plain MLP [M, in_dim] -> [M, out_dim]."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), act()]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


@torch.no_grad()
def soft_update(target: nn.Module | Sequence[Tensor], source: nn.Module | Sequence[Tensor], tau: float) -> None:
    """Polyak averaging theta_target <- (1 - tau) theta_target + tau theta_source (in place).

    ``target`` / ``source``: modules, or matching lists of their parameters (lists made once save the
    per-call module traversal in tight update loops).
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    targets = list(target.parameters()) if isinstance(target, nn.Module) else list(target)
    sources = list(source.parameters()) if isinstance(source, nn.Module) else list(source)
    torch._foreach_lerp_(targets, sources, tau)


class ReplayBuffer:
    """Fixed-size FIFO of transitions (s, a, r, s', terminated), stored as float32 tensors.

    Args:
        obs_dim, act_dim: sizes of one observation / action.
        capacity: maximum number of transitions kept.
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.size, self.ptr = capacity, 0, 0
        self.obs = torch.zeros(capacity, obs_dim)
        self.act = torch.zeros(capacity, act_dim)
        self.rew = torch.zeros(capacity)
        self.next_obs = torch.zeros(capacity, obs_dim)
        self.done = torch.zeros(capacity)

    def add(self, obs: np.ndarray, act: np.ndarray, rew: np.ndarray, next_obs: np.ndarray, done: np.ndarray) -> None:
        """Add a batch of n transitions: obs [n, obs_dim], act [n, act_dim], rew [n], next_obs, done [n]."""
        n = len(obs)
        idx = (self.ptr + np.arange(n)) % self.capacity
        for buf, val in ((self.obs, obs), (self.act, act), (self.rew, rew), (self.next_obs, next_obs),
                         (self.done, done)):
            buf[idx] = torch.as_tensor(np.asarray(val), dtype=torch.float32).reshape(buf[idx].shape)
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Uniform minibatch (with replacement): dict of obs, act, rew, next_obs, done."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), generator=generator)
        return {"obs": self.obs[idx], "act": self.act[idx], "rew": self.rew[idx],
                "next_obs": self.next_obs[idx], "done": self.done[idx]}

    def recent(self, n: int) -> dict[str, Tensor]:
        """The last min(n, size) transitions added (GoRL's "recent rollouts")."""
        n = min(n, self.size)
        idx = (self.ptr - 1 - torch.arange(n)) % self.capacity
        return {"obs": self.obs[idx], "act": self.act[idx], "rew": self.rew[idx],
                "next_obs": self.next_obs[idx], "done": self.done[idx]}

    def clear(self) -> None:
        self.size, self.ptr = 0, 0


class RunningMeanStd(nn.Module):
    """Running mean / variance of observations (parallel-variance update, Chan et al. 1979)."""

    def __init__(self, dim: int, clip: float = 10.0) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    def update(self, x: np.ndarray | Tensor) -> None:
        """Fold a batch [n, dim] into the running statistics."""
        x = torch.as_tensor(np.asarray(x), dtype=torch.float64).reshape(-1, self.mean.shape[0])
        b_mean, b_var, b_n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta, tot = b_mean - self.mean, self.count + b_n
        self.mean += delta * b_n / tot
        self.var.copy_((self.var * self.count + b_var * b_n + delta**2 * self.count * b_n / tot) / tot)
        self.count.fill_(float(tot))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise x [..., dim] (float32 out), clipped to +-clip."""
        return ((x - self.mean.float()) / (self.var.float() + 1e-8).sqrt()).clamp(-self.clip, self.clip)


# --------------------------------------------------------------------------- environments
def make_env(env_id: str, seed: int | None = None, **kwargs: object) -> gym.Env:
    """``gym.make`` that also knows gendiff's own tasks (imports :mod:`gendiff.rl.envs` first)."""
    import gendiff.rl.envs  # noqa: F401  (registers gendiff/... ids)

    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        raise ValueError(f"unknown or unavailable environment {env_id!r}: {err}") from None
    env.reset(seed=seed)
    return env


def require_box_spaces(env_id: str, what: str) -> None:
    """Raise unless ``env_id`` exists with flat Box observations and continuous (Box) actions.

    Args:
        what: who needs them, for the message (e.g. "make-dataset").
    Raises:
        ValueError: unknown env, or observations that are not a flat Box; ActionSpaceError (also a ValueError):
            actions that are not a Box (e.g. ``Discrete``).
    """
    env = make_env(env_id)  # unknown env: ValueError
    obs, act = env.observation_space, env.action_space
    env.close()
    check_action_space(act, unbounded_action_bound=1.0)
    if not isinstance(obs, gym.spaces.Box) or len(obs.shape) != 1:
        raise ValueError(f"environment {env_id!r} has {obs} observations; {what} needs flat Box observations")


def make_vec_env(env_id: str, num_envs: int, seed: int, wrapper: Callable[[gym.Env], gym.Env] | None = None,
                 **kwargs: object) -> SyncVectorEnv:
    """``num_envs`` copies in a SyncVectorEnv (same-step autoreset), seeded seed, seed+1, ...; ``wrapper`` (e.g. a
    state-adversarial attack, gendiff.rl.attacks.AttackedObservation) wraps each copy."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    wrap = wrapper or (lambda env: env)
    envs = SyncVectorEnv([lambda: wrap(make_env(env_id, **kwargs)) for _ in range(num_envs)],
                         autoreset_mode=AutoresetMode.SAME_STEP)
    envs.reset(seed=[seed + i for i in range(num_envs)])
    envs.action_space.seed(seed)
    return envs


def final_next_obs(next_obs: np.ndarray, info: dict) -> np.ndarray:
    """The true s' per env: ``info["final_obs"]`` where an episode just ended (same-step autoreset)."""
    if "_final_obs" not in info:
        return next_obs
    real = next_obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        real[i] = info["final_obs"][i]
    return real


@dataclass
class EpisodeTracker:
    """Accumulates per-env returns and lengths; finished episodes land in ``returns`` / ``lengths``."""

    num_envs: int
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ret = np.zeros(self.num_envs)
        self._len = np.zeros(self.num_envs, dtype=int)

    def step(self, reward: np.ndarray, done: np.ndarray) -> None:
        self._ret += reward
        self._len += 1
        for i in np.flatnonzero(done):
            self.returns.append(float(self._ret[i]))
            self.lengths.append(int(self._len[i]))
            self._ret[i], self._len[i] = 0.0, 0


@dataclass
class TrainLog:
    """Learning curve of one run: (env step, mean evaluation return, std) plus named scalars."""

    steps: list[int] = field(default_factory=list)
    eval_mean: list[float] = field(default_factory=list)
    eval_std: list[float] = field(default_factory=list)
    train_returns: list[tuple[int, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    def add_eval(self, step: int, returns: Sequence[float]) -> None:
        self.steps.append(int(step))
        self.eval_mean.append(float(np.mean(returns)))
        self.eval_std.append(float(np.std(returns)))


@torch.no_grad()
def evaluate(act: Callable[[np.ndarray], np.ndarray], env_id: str, episodes: int = 5, seed: int = 10_000,
             max_steps: int = 100_000) -> list[float]:
    """Run ``episodes`` full episodes with ``act`` (obs [n, obs_dim] -> env actions [n, act_dim]).

    All episodes run at once in a vector env (one episode per copy); returns their undiscounted returns.
    """
    envs = SyncVectorEnv([lambda: make_env(env_id) for _ in range(episodes)],
                         autoreset_mode=AutoresetMode.SAME_STEP)  # finished copies restart; masked out
    obs, _ = envs.reset(seed=[seed + i for i in range(episodes)])
    total, alive = np.zeros(episodes), np.ones(episodes, dtype=bool)
    for _ in range(max_steps):
        obs, rew, term, trunc, _ = envs.step(act(obs.astype(np.float32)))
        total += np.where(alive, rew, 0.0)
        alive &= ~(term | trunc)
        if not alive.any():
            break
    envs.close()
    if not np.isfinite(total).all() or math.isnan(total.sum()):
        raise FloatingPointError("evaluation returns contain NaN/inf")
    return total.tolist()


# --------------------------------------------------------------------------- checkpoints
def write_checkpoint(path: str | Path, modules: dict[str, nn.Module], meta: dict,
                     extra: dict[str, Tensor] | None = None) -> Path:
    """Write ``path/model.safetensors`` (every module's state_dict under ``"<name>."``, plus ``extra`` tensors)
    and ``path/config.json`` (``meta``: sizes, bounds, config; JSON-serialisable). Returns ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
    state.update(extra or {})
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(meta, indent=2))
    return path


def read_checkpoint(path: str | Path, what: str) -> tuple[dict, dict[str, Tensor]]:
    """(meta, flat state) of a folder written by :func:`write_checkpoint` (safetensors, no pickle).

    Raises:
        FileNotFoundError: ``path`` lacks config.json or model.safetensors (the message names ``what``).
    """
    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path} is not a saved {what} (needs config.json and model.safetensors)")
    return json.loads((path / "config.json").read_text()), load_file(str(path / "model.safetensors"))


def load_modules(state: dict[str, Tensor], modules: dict[str, nn.Module], where: str | Path) -> None:
    """Load each module from the ``"<name>."`` entries of ``state``; a missing or mismatched tensor is a ValueError
    that names the checkpoint ``where`` (not torch's stack trace)."""
    for name, module in modules.items():
        part = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
        try:
            module.load_state_dict(part)
        except RuntimeError as err:
            raise ValueError(f"{where}: the saved '{name}' weights do not fit this agent: "
                             f"{str(err).splitlines()[0]}") from None
