"""Trajectory windows for policy-guided diffusion (Jackson et al. 2024): [obs, action, reward, done] per step.

1. Each step of an episode becomes the feature vector [s_t, arctanh(clip(a~_t, +-0.999)), r_t, d_t], where
   a~_t is the action mapped from the environment's box to [-1, 1] and d_t the termination flag.
2. Windows of ``horizon`` consecutive steps (32 in the reference) start every ``stride`` (8) steps inside
   one episode; a window whose last step is a time-out (truncation) is dropped, as in the reference. A
   terminated episode also gets the window that ends at its termination, so that every termination is seen
   (with stride 8 alone, only the episodes with (T - horizon) % 8 == 0 would have one).
3. Every feature is z-scored with the mean / std over all windowed steps
   (:class:`gendiff.trajectory_layout.TrajectoryNormalizer`), the
   done flag included, as in the reference. Mapping the done flag to +-1 instead was measured and dropped
   (benchmarks/offline/history/offline_fidelity_hopper_v2{,_donepm1}.md, one seed each): it tripled the dynamics MSE of a 10,000-step
   Hopper model (1.30 vs 0.44) and still produced no terminations; the model generates no falls at that budget.
4. Generated windows go back to transitions (s_i, a_i, r_i, s_{i+1}, d_i) for i < H - 1, plus a last step that
   terminates; steps after a generated termination are dropped (the episode has ended):
   :func:`gendiff.trajectory_layout.windows_to_transitions`.

Residual layout (``residual=True``, a departure from the paper, measured against it in
benchmarks/offline/README.md): each step also carries the state change delta_t = s_{t+1} - s_t, z-scored on its
own, so a step is [s_t, a_t, r_t, d_t, delta_t] and every step is a whole transition with
s'_t = s_t + delta_t (as in SynthER's single-transition rows, but generated as a trajectory). The per-step change
is small next to the spread of the states, so its own z-scoring lets the model resolve the dynamics instead of
reconstructing s_{t+1} from scratch on the scale of the whole state distribution.

Action layout (``action_layout="linear"``, a departure from the paper): the action in [-1, 1] as it is, instead of
its arctanh (:mod:`gendiff.trajectory_layout`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from gendiff.offline.datasets import Episode
from gendiff.trajectory_layout import encode_action


def episode_features(ep: Episode, low: Sequence[float], high: Sequence[float], residual: bool = False,
                     action_layout: str = "arctanh") -> Tensor:
    """Step 1: one episode -> [T, obs_dim + act_dim + 2 (+ obs_dim with ``residual``)] features; the action as
    ``action_layout`` holds it (:func:`gendiff.trajectory_layout.encode_action`)."""
    lo, hi = torch.as_tensor(np.asarray(low), dtype=torch.float32), torch.as_tensor(np.asarray(high), dtype=torch.float32)
    a = torch.as_tensor(ep.actions, dtype=torch.float32)
    pre = encode_action(a, lo, hi, action_layout)
    obs = torch.as_tensor(ep.observations[:-1], dtype=torch.float32)
    rew = torch.as_tensor(ep.rewards, dtype=torch.float32)[:, None]
    done = torch.as_tensor(ep.terminations, dtype=torch.float32)[:, None]
    parts = [obs, pre, rew, done]
    if residual:
        parts.append(torch.as_tensor(ep.observations[1:], dtype=torch.float32) - obs)
    return torch.cat(parts, dim=1)


def make_windows(episodes: Sequence[Episode], low: Sequence[float], high: Sequence[float], horizon: int = 32,
                 stride: int = 8, residual: bool = False, action_layout: str = "arctanh") -> Tensor:
    """Steps 1-2: windows [W, horizon, D] from the episodes (D as :class:`gendiff.trajectory_layout.TrajectoryNormalizer`).

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
        feats = episode_features(ep, low, high, residual, action_layout)
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


def split_episodes(episodes: Sequence[Episode], seed: int, frac: float = 0.05) -> tuple[list[Episode], list[Episode]]:
    """Seeded (training, held-out) episodes: ``round(frac * len)`` held out, at least one; order kept in each.

    The split the trajectory-model benchmarks train and check with (the reference holds out 5 % of windows).
    """
    order = np.random.default_rng(seed).permutation(len(episodes))
    held = set(order[: max(1, int(round(frac * len(episodes))))].tolist())
    return [e for i, e in enumerate(episodes) if i not in held], [e for i, e in enumerate(episodes) if i in held]
