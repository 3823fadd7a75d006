"""Dynamics fidelity of (synthetic) transitions in MuJoCo (PGD, Jackson et al. 2024, Sec. 5).

For each transition (s, a, s'):
  1. recover the simulator state from s: gymnasium's MuJoCo locomotion tasks observe
     [qpos[1:], qvel] (the x position is left out and does not affect these tasks' dynamics), so
     qpos = [0, s[:nq - 1]] and qvel = s[nq - 1 : nq - 1 + nv];
  2. ``set_state(qpos, qvel)``, apply a (one environment step, frame_skip simulator steps);
  3. error = mean over the qpos/qvel dimensions of (s'_sim - s')^2; the simulator's reward and termination
     for the step are kept too, to check the generated reward and done flag.
The dynamics MSE is the mean error over transitions. Real transitions give ~0 (up to float32 rounding and
the tasks' velocity clipping in the observation). Rows that make the simulator diverge count as NaN-free
``inf``-guarded errors: a non-finite simulated state raises a ValueError naming the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gendiff.rl.common import make_env
from gendiff.stats import bootstrap_ci


@dataclass
class DynamicsResult:
    """Per-transition errors [N] and their mean / median.

    Attributes:
        errors: [N] mean squared error over the qpos/qvel dimensions; mse, median: its mean and median.
        sq_errors: [N, k] the squared error per dimension (k = nq - skip + nv).
        rewards: [N] the simulator's reward for each step; terminated: [N] its termination flag.
        next_obs: [N, obs_dim] the simulator's next observation (what a perfect dynamics model would give).
    """

    errors: np.ndarray
    mse: float
    median: float
    sq_errors: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    next_obs: np.ndarray


def _layout(env: object) -> tuple[int, int, int]:
    u = env.unwrapped
    if not hasattr(u, "set_state") or not hasattr(u, "model"):
        raise TypeError(f"{type(u).__name__} is not a MuJoCo environment (needs set_state and model)")
    nq, nv = int(u.model.nq), int(u.model.nv)
    skip = 1 if getattr(u, "_exclude_current_positions_from_observation", True) else 0
    return nq, nv, skip


def dynamics_mse(env_id: str, obs: Tensor | np.ndarray, act: Tensor | np.ndarray,
                 next_obs: Tensor | np.ndarray) -> DynamicsResult:
    """Steps 1-3 for N transitions: obs / next_obs [N, obs_dim], act [N, act_dim]."""
    obs, act, next_obs = (np.asarray(torch.as_tensor(x).double()) for x in (obs, act, next_obs))
    if not (len(obs) == len(act) == len(next_obs)) or len(obs) == 0:
        raise ValueError(f"need the same non-zero number of obs, act, next_obs rows, got {len(obs)}, {len(act)}, "
                         f"{len(next_obs)}")
    env = make_env(env_id)
    try:
        nq, nv, skip = _layout(env)
        k = nq - skip + nv
        if obs.shape[1] < k or next_obs.shape[1] < k:
            raise ValueError(f"{env_id} needs observations with >= {k} entries (qpos[{skip}:], qvel), got {obs.shape[1]}")
        env.reset(seed=0)
        u = env.unwrapped
        sq, rewards, terminated = np.empty((len(obs), k)), np.empty(len(obs)), np.zeros(len(obs), dtype=bool)
        sim = np.empty_like(next_obs)
        for i in range(len(obs)):
            qpos = np.concatenate([np.zeros(skip), obs[i, :nq - skip]])  # 1.
            u.set_state(qpos, obs[i, nq - skip:k])
            sim_next, rewards[i], terminated[i], *_ = u.step(act[i].astype(np.float64))  # 2.
            if not np.isfinite(sim_next[:k]).all():
                raise ValueError(f"transition {i}: the simulator diverged from the generated state")
            sq[i] = (sim_next[:k] - next_obs[i, :k]) ** 2  # 3.
            sim[i] = sim_next[: next_obs.shape[1]]
    finally:
        env.close()
    errors = sq.mean(1)
    return DynamicsResult(errors, float(errors.mean()), float(np.median(errors)), sq, rewards, terminated, sim)


def relabel_with_simulator(env_id: str, tr: dict[str, Tensor]) -> dict[str, Tensor]:
    """``tr`` with next_obs, rew and done replaced by the simulator's for the same (obs, act) (steps 1-2): the
    transitions a perfect dynamics model would have generated from these states and actions. A diagnostic that
    separates a generator's dynamics error from its choice of states and actions; MuJoCo tasks only."""
    res = dynamics_mse(env_id, tr["obs"], tr["act"], tr["next_obs"])
    like = tr["next_obs"]
    return {**tr, "next_obs": torch.as_tensor(res.next_obs, dtype=like.dtype),
            "rew": torch.as_tensor(res.rewards, dtype=tr["rew"].dtype),
            "done": torch.as_tensor(res.terminated, dtype=tr["done"].dtype)}


def check_transitions(env_id: str, tr: dict[str, Tensor], horizon: int | None = None) -> dict[str, Any]:
    """The simulator's verdict on transitions (obs, act, next_obs, rew, done[, pos]) as a JSON-able dict.

    Returns:
        n; dynamics_mse / dynamics_median; dynamics_mse_ci95, the bootstrap 95 % interval of dynamics_mse over the
        transitions; per_dim [k] mean squared error; reward_mse against the simulator's
        reward; done_rate (generated), sim_terminated_rate (the simulator's flag on the same steps), done_recall
        (share of the simulator's terminations the generator flagged); per_pos [horizon] mean error by position
        in the generated window when ``tr`` has "pos" and ``horizon`` is given.
    """
    dyn = dynamics_mse(env_id, tr["obs"], tr["act"], tr["next_obs"])
    done = np.asarray(tr["done"]) > 0.5
    out: dict[str, Any] = {
        "n": len(dyn.errors), "dynamics_mse": dyn.mse, "dynamics_median": dyn.median,
        "dynamics_mse_ci95": bootstrap_ci(dyn.errors, 1000),
        "per_dim": dyn.sq_errors.mean(0).tolist(),
        "reward_mse": float(np.mean((dyn.rewards - np.asarray(tr["rew"], dtype=np.float64)) ** 2)),
        "done_rate": float(done.mean()), "sim_terminated_rate": float(dyn.terminated.mean()),
        "done_recall": float((done & dyn.terminated).sum() / max(int(dyn.terminated.sum()), 1)),
    }
    if "pos" in tr and horizon is not None:
        pos = np.asarray(tr["pos"])
        out["per_pos"] = [float(dyn.errors[pos == p].mean()) if (pos == p).any() else None for p in range(horizon)]
    return out
