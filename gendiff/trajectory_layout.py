"""The step layout of PGD's trajectory windows, its z-scoring, and windows -> transitions (Jackson et al. 2024).

A window is [H, D] steps; each step is [s_t, arctanh(clip(a~_t, +-0.999)), r_t, d_t] (a~_t: the action mapped from
the environment's box to [-1, 1]; d_t: the termination flag), D = obs_dim + act_dim + 2. Every feature is z-scored
with the mean / std over the training windows, the done flag included, as in the reference
(:class:`TrajectoryNormalizer`). Generated windows go back to transitions (s_i, a_i, r_i, s_{i+1}, d_i) for
i < H - 1, plus a last step that terminates; steps after a generated termination are dropped
(:func:`windows_to_transitions`).

Residual layout (``residual=True``, a departure from the paper): each step also carries delta_t = s_{t+1} - s_t,
z-scored on its own, so every step is a whole transition with s'_t = s_t + delta_t.

Action layout (``action_layout``): ``"arctanh"`` is the paper's arctanh(clip(a~, +-0.999)); ``"linear"`` (a departure)
keeps a~ in [-1, 1] as it is and clips generated actions back into it. Where a behaviour policy saturates its actions
(HalfCheetah's SAC data: ~a quarter of the entries at |a~| > 0.99) arctanh turns the saturated entries into point
masses at +-3.8, far from the rest; the linear layout keeps them next to their neighbours.

This module is the contract between the data side (gendiff.offline.trajectories builds the windows) and the
pipeline (gendiff.pipelines.pgd generates them); it imports neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gendiff.entropy import atanh_clipped

ACTION_CLIP_EPS = 1e-3  # arctanh(clip(a, +-0.999))
ACTION_LAYOUTS = ("arctanh", "linear")  # how a step holds its action (module docstring)


def check_action_layout(layout: str) -> str:
    """``layout`` if it is one of :data:`ACTION_LAYOUTS`, else a ValueError naming them."""
    if layout not in ACTION_LAYOUTS:
        raise ValueError(f"action_layout must be one of {', '.join(ACTION_LAYOUTS)}, got {layout!r}")
    return layout


def encode_action(action: Tensor, low: Tensor, high: Tensor, layout: str = "arctanh") -> Tensor:
    """Environment actions [..., act_dim] in the box [low, high] -> the step's action features: a~ = the action
    mapped to [-1, 1], then arctanh(clip(a~, +-0.999)) (the paper's layout) or a~ itself (linear)."""
    unit = (action - low) / (high - low) * 2 - 1
    return atanh_clipped(unit, ACTION_CLIP_EPS) if check_action_layout(layout) == "arctanh" else unit


def decode_action(features: Tensor, low: Tensor, high: Tensor, layout: str = "arctanh") -> Tensor:
    """The step's action features [..., act_dim] -> environment actions low + (a~ + 1) / 2 (high - low), a~ = tanh of
    the features (the paper's layout) or the features clipped to [-1, 1] (linear)."""
    unit = torch.tanh(features) if check_action_layout(layout) == "arctanh" else features.clamp(-1.0, 1.0)
    return low + (unit + 1) / 2 * (high - low)


@dataclass
class TrajectoryNormalizer:
    """Feature layout and z-scoring of windows [..., D], D = obs_dim + act_dim + 2 (+ obs_dim if residual).

    Attributes:
        obs_dim, act_dim: sizes; mean, std: [D] per-feature statistics.
        action_low, action_high: [act_dim] environment action bounds.
        residual: steps end with delta_t = s_{t+1} - s_t (module docstring).
        action_layout: "arctanh" (the paper's) or "linear" (module docstring).
    """

    obs_dim: int
    act_dim: int
    mean: Tensor
    std: Tensor
    action_low: Tensor
    action_high: Tensor
    residual: bool = False
    action_layout: str = "arctanh"

    def __post_init__(self) -> None:
        check_action_layout(self.action_layout)

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

    def to_env_action(self, features: Tensor) -> Tensor:
        """Action features [..., act_dim] (un-normalised) -> environment actions (:func:`decode_action`)."""
        return decode_action(features, self.action_low.to(features), self.action_high.to(features), self.action_layout)

    def from_env_action(self, action: Tensor) -> Tensor:
        """Environment actions [..., act_dim] -> action features (:func:`encode_action`)."""
        return encode_action(action, self.action_low.to(action), self.action_high.to(action), self.action_layout)

    def to_config(self) -> dict[str, Any]:
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "mean": self.mean.tolist(),
                "std": self.std.tolist(), "action_low": self.action_low.tolist(),
                "action_high": self.action_high.tolist(), "residual": self.residual,
                "action_layout": self.action_layout}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> TrajectoryNormalizer:
        t = lambda k: torch.tensor(cfg[k], dtype=torch.float32)  # noqa: E731
        return cls(int(cfg["obs_dim"]), int(cfg["act_dim"]), t("mean"), t("std"), t("action_low"),
                   t("action_high"), bool(cfg.get("residual", False)), str(cfg.get("action_layout", "arctanh")))

    @classmethod
    def fit(cls, windows: Tensor, obs_dim: int, act_dim: int, low: Sequence[float], high: Sequence[float],
            min_std: float = 1e-6, residual: bool = False, action_layout: str = "arctanh") -> TrajectoryNormalizer:
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
                   torch.as_tensor(np.asarray(high), dtype=torch.float32), residual, action_layout)


def windows_to_transitions(x: Tensor, norm: TrajectoryNormalizer, done_threshold: float = 0.5) -> dict[str, Tensor]:
    """Un-normalised windows [M, H, D] -> transitions (obs, act in env units, rew, next_obs, done).

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
