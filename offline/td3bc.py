"""TD3+BC (Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning"), CORL defaults.

One update on a batch (states z-scored, actions in [-1, 1]):
  1. Critic (TD3, target policy smoothing): a' = clip(pi'(s') + clip(N(0, 0.2^2), -0.5, 0.5), -1, 1),
     y = r + gamma (1 - d) min_k Q'_k(s', a');  L_Q = sum_k E (Q_k(s, a) - y)^2.
  2. Every ``policy_freq`` (2) updates, the actor (eq. 3):
     lambda = alpha / mean |Q_1(s, pi(s))| (no gradient), L_pi = -lambda E Q_1(s, pi(s)) + E (pi(s) - a)^2.
  3. Targets: theta' <- (1 - tau) theta' + tau theta, for actor and critics.
The twin critics are one :class:`~gendiff.offline.ensemble.EnsembleQ` (both networks in batched matrix
products); the actor's loss evaluates Q_1 alone with frozen weights, so no critic gradient is computed there.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gendiff.offline.ensemble import EnsembleQ
from gendiff.offline.learners import OFFLINE_LEARNERS, LearnerConfig, OfflineLearner, PackedBatch, make_adam
from gendiff.rl.common import mlp, soft_update


@dataclass
class TD3BCConfig(LearnerConfig):
    alpha: float = 2.5
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_freq: int = 2


def td3bc_actor_loss(q: Tensor, pi: Tensor, act: Tensor, alpha: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Step 2: -lambda mean Q + mean (pi - a)^2 with lambda = alpha / mean |Q| (held constant).

    Args:
        q: [B] Q_1(s, pi(s)); pi: [B, act_dim] actor actions; act: [B, act_dim] dataset actions.
    Returns:
        (loss, metrics as detached 0-dim tensors).
    """
    lmbda = alpha / q.abs().mean().detach().clamp_min(1e-8)
    bc = (pi - act).square().mean()
    loss = -lmbda * q.mean() + bc
    return loss, {"loss/actor": loss.detach(), "actor/bc_mse": bc.detach(), "actor/lambda": lmbda}


class Actor(nn.Module):
    """Deterministic tanh actor [B, obs_dim] -> [B, act_dim] in [-1, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden)

    def forward(self, obs: Tensor) -> Tensor:
        return torch.tanh(self.net(obs))


@OFFLINE_LEARNERS.register("td3bc")
class TD3BC(OfflineLearner):
    """TD3+BC agent (see the module docstring)."""

    config_class = TD3BCConfig
    config: TD3BCConfig

    def __init__(self, obs_dim: int, act_dim: int, low: Sequence[float], high: Sequence[float], states: Tensor,
                 config: TD3BCConfig | None = None, seed: int = 0, device: str | torch.device | None = None) -> None:
        super().__init__(obs_dim, act_dim, low, high, states, config, seed, device)
        cfg = self.config
        self.actor = Actor(obs_dim, act_dim, cfg.hidden).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = EnsembleQ(obs_dim, act_dim, cfg.hidden, members=2).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = make_adam(self.actor.parameters(), cfg.lr)
        self.critic_opt = make_adam(self.critic.parameters(), cfg.lr)
        self._polyak = ([*self.actor_target.parameters(), *self.critic_target.parameters()],
                        [*self.actor.parameters(), *self.critic.parameters()])

    def actor_mean(self, obs_n: Tensor) -> Tensor:
        return self.actor(obs_n)

    def bc_regulariser(self, obs: Tensor, pi: Tensor, act: Tensor) -> Tensor | None:
        """PRDC replaces the dataset action here; None keeps TD3+BC's (pi - a)^2."""
        return None

    def critic_update(self, b: PackedBatch) -> dict[str, Tensor]:
        cfg = self.config
        with torch.no_grad():  # 1.
            noise = torch.randn(b.act.shape, generator=self.generator, device=self.device) * cfg.policy_noise
            noise = noise.clamp_(-cfg.noise_clip, cfg.noise_clip)
            next_a = (self.actor_target(b.next_obs) + noise).clamp_(-1.0, 1.0)
            y = b.rew + cfg.gamma * (1.0 - b.done) * self.critic_target(b.next_obs, next_a).amin(0)
        q = self.critic(b.obs_act)
        loss = (q - y).square().mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        return {"loss/critic": loss.detach(), "critic/q": q.detach().mean()}

    def actor_update(self, b: PackedBatch) -> dict[str, Tensor]:
        pi = self.actor(b.obs)  # 2.
        q = self.critic(b.obs, pi, member=0, frozen=True)  # Q_1; gradients reach pi only
        target_a = self.bc_regulariser(b.obs, pi, b.act)
        loss, metrics = td3bc_actor_loss(q, pi, b.act if target_a is None else target_a, self.config.alpha)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        soft_update(*self._polyak, self.config.tau)  # 3. actor and critics in one call
        return metrics

    def learn(self, rows: Tensor, actor_rows: Tensor | None = None) -> dict[str, Tensor]:
        b = self.split(rows)
        self.steps += 1
        metrics = self.critic_update(b)
        if self.steps % self.config.policy_freq == 0:
            metrics.update(self.actor_update(b if actor_rows is None else self.split(actor_rows)))
        return metrics
