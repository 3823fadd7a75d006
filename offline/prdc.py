"""PRDC (Ran et al. 2023, "Policy Regularization with Dataset Constraint for Offline RL").

TD3+BC's critic and actor, with the behaviour-cloning term replaced by a dataset constraint: the policy is
pulled toward the action of the *nearest dataset state-action pair* rather than the action logged at s.
  1. Keys of the dataset: k_i = [beta * s_i, a_i] (states z-scored, actions in [-1, 1]); a KD-tree over them.
  2. For a batch state s, query the nearest key to [beta * s, pi(s)] (no gradient); its action a_nn.
  3. L_pi = -lambda E Q_1(s, pi(s)) + E (pi(s) - a_nn)^2, lambda = alpha / mean |Q| (as TD3+BC).
beta trades state closeness against action closeness (beta -> inf recovers TD3+BC); paper default 2.
The nearest neighbour is exact either way: a KD-tree on the host (``nn_backend="kdtree"``, the CPU default)
or a brute-force search in blocks on the learner's device (``"brute"``, the CUDA default: no host round trip).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from gendiff.offline.learners import OFFLINE_LEARNERS
from gendiff.offline.td3bc import TD3BC, TD3BCConfig


@dataclass
class PRDCConfig(TD3BCConfig):
    beta: float = 2.0
    nn_backend: Literal["auto", "kdtree", "brute"] = "auto"  # auto: kdtree on CPU, brute on an accelerator
    brute_block: int = 65_536  # dataset rows per block of the brute-force search

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.nn_backend not in ("auto", "kdtree", "brute") or self.brute_block < 1:
            raise ValueError(f"nn_backend must be auto / kdtree / brute and brute_block >= 1, "
                             f"got {self.nn_backend!r}, {self.brute_block}")


@OFFLINE_LEARNERS.register("prdc")
class PRDC(TD3BC):
    """PRDC agent; needs the dataset (``dataset={"obs": [N, obs_dim], "act": [N, act_dim]}``) for its KD-tree."""

    config_class = PRDCConfig
    config: PRDCConfig
    needs_dataset = True

    def __init__(self, obs_dim: int, act_dim: int, low: Sequence[float], high: Sequence[float], states: Tensor,
                 config: PRDCConfig | None = None, seed: int = 0, dataset: dict[str, Tensor] | None = None,
                 device: str | torch.device | None = None) -> None:
        super().__init__(obs_dim, act_dim, low, high, states, config, seed, device)
        if dataset is None:
            raise ValueError("PRDC needs dataset={'obs': ..., 'act': ...} to build its nearest-neighbour tree")
        backend = self.config.nn_backend
        self.backend = ("kdtree" if self.device.type == "cpu" else "brute") if backend == "auto" else backend
        self.set_dataset(dataset["obs"], dataset["act"])

    @torch.no_grad()
    def set_dataset(self, obs: Tensor, act: Tensor) -> None:
        """Step 1: keys [beta * normalised s, a in [-1, 1]] ([N, obs_dim + act_dim]) and their search structure."""
        s = self.state_norm(obs.to(self.device, torch.float32)) * self.config.beta
        a = self.scaler.from_env(act.to(self.device, torch.float32)).clamp(-1, 1)
        self.actions = a.clone()
        self.keys = torch.cat([s, a], dim=1)
        self.tree = cKDTree(self.keys.cpu().numpy().astype(np.float64)) if self.backend == "kdtree" else None

    @torch.no_grad()
    def nearest(self, query: Tensor) -> Tensor:
        """Index [B] of the nearest key (Euclidean) to each query row [B, obs_dim + act_dim]."""
        if self.tree is not None:
            _, idx = self.tree.query(query.cpu().numpy().astype(np.float64), k=1)
            return torch.as_tensor(idx, dtype=torch.long, device=self.device)
        best_d = torch.full((query.shape[0],), float("inf"), device=self.device)
        best_i = torch.zeros(query.shape[0], dtype=torch.long, device=self.device)
        for start in range(0, self.keys.shape[0], self.config.brute_block):
            block = self.keys[start:start + self.config.brute_block]
            d, i = torch.cdist(query, block, compute_mode="donot_use_mm_for_euclid_dist").min(1)
            better = d < best_d  # a tie keeps the earlier block's row
            best_d, best_i = torch.where(better, d, best_d), torch.where(better, i + start, best_i)
        return best_i

    def bc_regulariser(self, obs: Tensor, pi: Tensor, act: Tensor) -> Tensor:
        """Step 2: the nearest dataset action to [beta s, pi(s)] for each row, [B, act_dim]."""
        return self.actions[self.nearest(torch.cat([obs * self.config.beta, pi.detach()], dim=1))]
