"""Trajectory windows for policy-guided diffusion (Jackson et al. 2024): [obs, action, reward, done] per step.

1. Each step of an episode becomes the feature vector [s_t, arctanh(clip(a~_t, +-0.999)), r_t, d_t], where
   a~_t is the action mapped from the environment's box to [-1, 1] and d_t the termination flag.
2. Windows of ``horizon`` consecutive steps (32 in the reference) start every ``stride`` (8) steps inside
   one episode; a window whose last step is a time-out (truncation) is dropped, as in the reference. A
   terminated episode also gets the window that ends at its termination, so that every termination is seen
   (with stride 8 alone, only the episodes with (T - horizon) % 8 == 0 would have one).
3. Every feature is z-scored with the mean / std over all windowed steps (:class:`TrajectoryNormalizer`), the
   done flag included, as in the reference. Mapping the done flag to +-1 instead was measured and dropped
   (benchmarks/offline/history/offline_fidelity_hopper_v2{,_donepm1}.md, one seed each): it tripled the dynamics MSE of a 10,000-step
   Hopper model (1.30 vs 0.44) and still produced no terminations; the model generates no falls at that budget.
4. Generated windows go back to transitions (s_i, a_i, r_i, s_{i+1}, d_i) for i < H - 1, plus a last
   step that terminates; steps after a generated termination are dropped (the episode has ended).

Residual layout (``residual=True``, a departure from the paper, measured against it in
benchmarks/offline/README.md): each step also carries the state change delta_t = s_{t+1} - s_t, z-scored on its
own, so a step is [s_t, a_t, r_t, d_t, delta_t] and every step is a whole transition with
s'_t = s_t + delta_t (as in SynthER's single-transition rows, but generated as a trajectory). The per-step change
is small next to the spread of the states, so its own z-scoring lets the model resolve the dynamics instead of
reconstructing s_{t+1} from scratch on the scale of the whole state distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gendiff.entropy import atanh_clipped
from gendiff.offline.datasets import Episode

ACTION_CLIP_EPS = 1e-3  # arctanh(clip(a, +-0.999))


@dataclass
class TrajectoryNormalizer:
    """Feature layout and z-scoring of windows [..., D], D = obs_dim + act_dim + 2 (+ obs_dim if residual).

    Attributes:
        obs_dim, act_dim: sizes; mean, std: [D] per-feature statistics.
        action_low, action_high: [act_dim] environment action bounds.
        residual: steps end with delta_t = s_{t+1} - s_t (module docstring).
    """

    obs_dim: int
    act_dim: int
    mean: Tensor
    std: Tensor
    action_low: Tensor
    action_high: Tensor
    residual: bool = False

    @property
    def dim(self) -> int:
        return self.obs_dim + self.act_dim + 2 + (self.obs_dim if self.residual else 0)

    @property
    def reward_index(self) -> int:
        return self.obs_dim + self.act_dim

    @property
    def done_index(self) -> int:
        return self.obs_dim + self.act_dim + 1

    @property
    def delta_slice(self) -> slice:
        """The state change's features (residual layout only)."""
        if not self.residual:
            raise ValueError("this layout has no state-change features (residual=False)")
        return slice(self.obs_dim + self.act_dim + 2, self.dim)

    @property
    def obs_slice(self) -> slice:
        return slice(0, self.obs_dim)

    @property
    def act_slice(self) -> slice:
        return slice(self.obs_dim, self.obs_dim + self.act_dim)

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    def unnormalize(self, x: Tensor) -> Tensor:
        return x * self.std.to(x) + self.mean.to(x)

    def to_env_action(self, pre_tanh: Tensor) -> Tensor:
        """Pre-tanh actions [..., act_dim] -> environment actions low + (tanh(u) + 1) / 2 (high - low)."""
        lo, hi = self.action_low.to(pre_tanh), self.action_high.to(pre_tanh)
        return lo + (torch.tanh(pre_tanh) + 1) / 2 * (hi - lo)

    def from_env_action(self, action: Tensor) -> Tensor:
        lo, hi = self.action_low.to(action), self.action_high.to(action)
        return atanh_clipped((action - lo) / (hi - lo) * 2 - 1, ACTION_CLIP_EPS)

    def to_config(self) -> dict[str, Any]:
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "mean": self.mean.tolist(),
                "std": self.std.tolist(), "action_low": self.action_low.tolist(),
                "action_high": self.action_high.tolist(), "residual": self.residual}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> TrajectoryNormalizer:
        t = lambda k: torch.tensor(cfg[k], dtype=torch.float32)  # noqa: E731
        return cls(int(cfg["obs_dim"]), int(cfg["act_dim"]), t("mean"), t("std"), t("action_low"),
                   t("action_high"), bool(cfg.get("residual", False)))

    @classmethod
    def fit(cls, windows: Tensor, obs_dim: int, act_dim: int, low: Sequence[float], high: Sequence[float],
            min_std: float = 1e-6, residual: bool = False) -> TrajectoryNormalizer:
        """Step 3: statistics over windows [W, H, D] (constant features keep std ``min_std``)."""
        expected = obs_dim + act_dim + 2 + (obs_dim if residual else 0)
        if windows.shape[-1] != expected:
            layout = "obs+act+2+obs (residual)" if residual else "obs+act+2"
            hint = "; residual windows (made with residual=True) need residual=True here too" if (
                not residual and windows.shape[-1] == expected + obs_dim) else ""
            raise ValueError(f"windows have {windows.shape[-1]} features, expected {layout} = {expected}{hint}")
        flat = windows.reshape(-1, windows.shape[-1]).double()
        mean, std = flat.mean(0).float(), flat.std(0, unbiased=False).clamp_min(min_std).float()
        return cls(obs_dim, act_dim, mean, std, torch.as_tensor(np.asarray(low), dtype=torch.float32),
                   torch.as_tensor(np.asarray(high), dtype=torch.float32), residual)


def episode_features(ep: Episode, low: Sequence[float], high: Sequence[float], residual: bool = False) -> Tensor:
    """Step 1: one episode -> [T, obs_dim + act_dim + 2 (+ obs_dim with ``residual``)] features."""
    lo, hi = torch.as_tensor(np.asarray(low), dtype=torch.float32), torch.as_tensor(np.asarray(high), dtype=torch.float32)
    a = torch.as_tensor(ep.actions, dtype=torch.float32)
    pre = atanh_clipped((a - lo) / (hi - lo) * 2 - 1, ACTION_CLIP_EPS)
    obs = torch.as_tensor(ep.observations[:-1], dtype=torch.float32)
    rew = torch.as_tensor(ep.rewards, dtype=torch.float32)[:, None]
    done = torch.as_tensor(ep.terminations, dtype=torch.float32)[:, None]
    parts = [obs, pre, rew, done]
    if residual:
        parts.append(torch.as_tensor(ep.observations[1:], dtype=torch.float32) - obs)
    return torch.cat(parts, dim=1)


def make_windows(episodes: Sequence[Episode], low: Sequence[float], high: Sequence[float], horizon: int = 32,
                 stride: int = 8, residual: bool = False) -> Tensor:
    """Steps 1-2: windows [W, horizon, D] from the episodes (D as :class:`TrajectoryNormalizer`).

    Raises:
        ValueError: horizon or stride < 1, no episodes, or a window longer than every episode.
    """
    if horizon < 1 or stride < 1:
        raise ValueError(f"horizon and stride must be >= 1, got {horizon}, {stride}")
    if not episodes:
        raise ValueError("no episodes to cut windows from")
    longest = max(len(e) for e in episodes)
    if horizon > longest:
        raise ValueError(f"window length {horizon} is longer than every episode (the longest has {longest} "
                         "steps); use a shorter --horizon or more/longer episodes")
    out = []
    for ep in episodes:
        t = len(ep)
        if t < horizon:
            continue
        feats = episode_features(ep, low, high, residual)
        timeout_end = bool(ep.truncations[-1]) and not bool(ep.terminations[-1])
        starts = list(range(0, t - horizon + 1, stride))
        if bool(ep.terminations[-1]) and starts[-1] != t - horizon:
            starts.append(t - horizon)  # the terminal step in a window for every episode, not ~1 in ``stride``
        for s in starts:
            if timeout_end and s + horizon == t:  # the window ends in a time-out: dropped
                continue
            out.append(feats[s:s + horizon])
    if not out:
        raise ValueError(f"no window of length {horizon} survives (every long-enough episode ends in a time-out "
                         "exactly at a window end); change horizon or stride")
    return torch.stack(out)


def windows_to_transitions(x: Tensor, norm: TrajectoryNormalizer, done_threshold: float = 0.5) -> dict[str, Tensor]:
    """Step 4: un-normalised windows [M, H, D] -> transitions (obs, act in env units, rew, next_obs, done).

    With the residual layout every step is a transition, s' = s + delta; otherwise s' is the next step's state.

    Returns:
        dict of obs / next_obs [K, obs_dim], act [K, act_dim], rew / done [K] and pos [K] (each transition's
        step index in its window; K <= M * H).
    """
    if x.dim() != 3 or x.shape[-1] != norm.dim:
        raise ValueError(f"windows must be [M, H, {norm.dim}], got {tuple(x.shape)}")
    obs, pre = x[..., norm.obs_slice], x[..., norm.act_slice]
    rew, done = x[..., norm.reward_index], (x[..., norm.done_index] > done_threshold).float()
    ended_before = torch.cumsum(done, dim=1) - done > 0  # a termination earlier in the window
    has_next = torch.ones_like(done, dtype=torch.bool)
    if norm.residual:
        next_obs = obs + x[..., norm.delta_slice]
    else:
        has_next[:, -1] = False
        next_obs = torch.cat([obs[:, 1:], obs[:, -1:]], dim=1)
    keep = ~ended_before & (has_next | (done > 0))
    pos = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
    return {"obs": obs[keep], "act": norm.to_env_action(pre[keep]), "rew": rew[keep],
            "next_obs": next_obs[keep], "done": done[keep], "pos": pos[keep]}
