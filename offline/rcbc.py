"""Return-conditioned behaviour cloning (RCBC), the RCSL baseline of Dichotomy of Control (Yang et al. 2022).

A small MLP policy pi(a | s_t, R_t) conditioned on the return-to-go, as decision transformer conditions on it
(without the transformer's history: the tasks here are Markov in the observation).

Training, one update on a batch of steps (gendiff.offline.rcsl, step 1):
  1. The RCSL objective (DoC eq. 1): L(pi) = E_{tau ~ D} [ sum_t -log pi(a_t | s_t, R_t) ], R_t = sum_{k >= t} r_k,
     i.e. cross-entropy of the dataset action given the state and its own return-to-go (R_t / return_scale).
Acting (decision transformer's inference, DoC eq. 2):
  2. Condition the first step on the target return R_0 = target.
  3. After each reward r_t, condition the next step on R_{t+1} = R_t - r_t.
In a stochastic task the returns that follow an action in the data are partly luck, so conditioning on a high
target copies whatever action the lucky episodes took: the achieved return need not match the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gendiff.offline.rcsl import RCSL_LEARNERS, Conditioned, RCSLConfig, RCSLLearner, StepData, sample_actions
from gendiff.rl.common import mlp


@dataclass
class RCBCConfig(RCSLConfig):
    """RCBC hyper-parameters (the shared ones of :class:`RCSLConfig`)."""

    greedy: bool = False  # act with the most likely action (False: sample pi(a | s, R))


class _ReturnConditioned:
    """Steps 2-3 for n episodes."""

    def __init__(self, learner: RCBC, n: int, target: float, generator: torch.Generator) -> None:
        self.learner, self.generator = learner, generator
        self.rtg = np.full(n, float(target))
        self.predicted = self.rtg.copy()

    def act(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = self.learner.logits(self.learner.norm_obs(obs), torch.as_tensor(self.rtg, dtype=torch.float32))
        return sample_actions(logits, self.generator, self.learner.config.greedy)

    def observe(self, reward: np.ndarray) -> None:
        self.rtg = self.rtg - reward  # 3.


@RCSL_LEARNERS.register("rcbc")
class RCBC(RCSLLearner):
    """Return-conditioned behaviour cloning (see the module docstring)."""

    name = "rcbc"
    config_class = RCBCConfig
    config: RCBCConfig

    def build(self) -> dict[str, nn.Module]:
        self.policy = mlp(self.obs_dim + 1, self.num_actions, self.config.hidden)
        return {"policy": self.policy}

    def logits(self, obs_n: Tensor, rtg: Tensor) -> Tensor:
        """pi's logits [B, num_actions] for z-scored states [B, obs_dim] and returns-to-go [B] (environment units)."""
        return self.policy(torch.cat([obs_n, (rtg / self.return_scale)[:, None]], 1))

    def learn(self, batch: StepData) -> dict[str, float]:
        logits = self.policy(torch.cat([batch.obs, batch.rtg[:, None]], 1))
        loss = F.cross_entropy(logits, batch.act)  # 1.
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return {"loss/policy": loss.item()}

    def conditioned(self, n: int, target: float | None, generator: torch.Generator) -> Conditioned:
        """Steps 2-3: a controller for n episodes conditioned on ``target`` (required for RCBC)."""
        if target is None or not np.isfinite(target):
            raise ValueError(f"rcbc needs a finite target return to condition on, got {target!r}")
        return _ReturnConditioned(self, n, target, generator)
