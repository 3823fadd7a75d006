"""PRDC (Ran et al. 2023, "Policy Regularization with Dataset Constraint for Offline RL").

TD3+BC's critic and actor, with the behaviour-cloning term replaced by a dataset constraint: the policy is
pulled toward the action of the *nearest dataset state-action pair* rather than the action logged at s.
  1. Keys of the dataset: k_i = [beta * s_i, a_i] (states z-scored, actions in [-1, 1]); a KD-tree over them.
  2. For a batch state s, query the nearest key to [beta * s, pi(s)] (no gradient); its action a_nn.
  3. L_pi = -lambda E Q_1(s, pi(s)) + E (pi(s) - a_nn)^2, lambda = alpha / mean |Q| (as TD3+BC).
beta trades state closeness against action closeness (beta -> inf recovers TD3+BC); paper default 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from gendiff.offline.td3bc import TD3BC, TD3BCConfig


@dataclass
class PRDCConfig(TD3BCConfig):
    beta: float = 2.0


class PRDC(TD3BC):
    """PRDC agent; needs the dataset (``dataset={"obs": [N, obs_dim], "act": [N, act_dim]}``) for its KD-tree."""

    config_class = PRDCConfig
    config: PRDCConfig
    needs_dataset = True

    def __init__(self, obs_dim: int, act_dim: int, low: Sequence[float], high: Sequence[float], states: Tensor,
                 config: PRDCConfig | None = None, seed: int = 0, dataset: dict[str, Tensor] | None = None) -> None:
        super().__init__(obs_dim, act_dim, low, high, states, config, seed)
        if dataset is None:
            raise ValueError("PRDC needs dataset={'obs': ..., 'act': ...} to build its nearest-neighbour tree")
        self.set_dataset(dataset["obs"], dataset["act"])

    def set_dataset(self, obs: Tensor, act: Tensor) -> None:
        """Step 1: KD-tree over [beta * normalised s, a in [-1, 1]]."""
        with torch.no_grad():
            s = self.state_norm(obs) * self.config.beta
            a = self.scaler.from_env(act).clamp(-1, 1)
        self.actions = a.clone()
        self.tree = cKDTree(torch.cat([s, a], dim=1).numpy().astype(np.float64))

    def bc_regulariser(self, obs: Tensor, pi: Tensor, act: Tensor) -> Tensor:
        """Step 2: the nearest dataset action to [beta s, pi(s)] for each row, [B, act_dim]."""
        query = torch.cat([obs * self.config.beta, pi.detach()], dim=1).numpy().astype(np.float64)
        _, idx = self.tree.query(query, k=1)
        return self.actions[torch.as_tensor(idx, dtype=torch.long)]
