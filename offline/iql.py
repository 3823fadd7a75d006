"""IQL (Kostrikov et al. 2022, "Offline Reinforcement Learning with Implicit Q-Learning"), CORL defaults.

One update on a batch (states z-scored, actions in [-1, 1]):
  1. Value (eq. 5): L_V = E L_2^tau(min_k Q'_k(s, a) - V(s)), L_2^tau(u) = |tau - 1(u < 0)| u^2, tau = 0.7.
  2. Critic (eq. 6): L_Q = 1/2 sum_k E (r + gamma (1 - d) V(s') - Q_k(s, a))^2, the mean of the two critics'
     losses (CORL), with V(s') taken before step 1 changes V (CORL's order).
  3. Actor, advantage-weighted regression (eq. 7):
     L_pi = -E exp(beta (min_k Q'_k(s, a) - V(s))) log pi(a | s), weights clipped at 100, beta = 3.
     pi(a|s) = N(tanh(mu(s)), diag exp(log_std)) with a state-independent log_std (CORL's GaussianPolicy);
     the actor's learning rate follows a cosine decay over ``total_steps`` (CORL).
  4. Q targets: theta' <- (1 - tau) theta' + tau theta.
The twin critics are one :class:`~gendiff.offline.ensemble.EnsembleQ` (both networks in batched matrix products).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gendiff.entropy import gaussian_log_prob
from gendiff.offline.ensemble import EnsembleQ
from gendiff.offline.learners import (
    OFFLINE_LEARNERS,
    LearnerConfig,
    OfflineLearner,
    expectile_loss,
    make_adam,
)
from gendiff.rl.common import mlp, soft_update


@dataclass
class IQLConfig(LearnerConfig):
    expectile: float = 0.7
    beta: float = 3.0
    exp_adv_max: float = 100.0
    total_steps: int = 1_000_000  # actor cosine LR horizon (CORL: max_timesteps)


class GaussianActor(nn.Module):
    """[B, obs_dim] -> (mean [B, act_dim] in (-1, 1), log_std [act_dim])."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden)
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        return torch.tanh(self.net(obs)), self.log_std.clamp(-5.0, 2.0)


@OFFLINE_LEARNERS.register("iql")
class IQL(OfflineLearner):
    """IQL agent (see the module docstring). Stochastic: ``log_prob`` guides PGD."""

    config_class = IQLConfig
    config: IQLConfig
    deterministic = False

    def __init__(self, obs_dim: int, act_dim: int, low: Sequence[float], high: Sequence[float], states: Tensor,
                 config: IQLConfig | None = None, seed: int = 0, device: str | torch.device | None = None) -> None:
        super().__init__(obs_dim, act_dim, low, high, states, config, seed, device)
        cfg = self.config
        self.actor = GaussianActor(obs_dim, act_dim, cfg.hidden).to(self.device)
        self.value = mlp(obs_dim, 1, cfg.hidden).to(self.device)
        self.critic = EnsembleQ(obs_dim, act_dim, cfg.hidden, members=2).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = make_adam(self.actor.parameters(), cfg.lr)
        self.value_opt = make_adam(self.value.parameters(), cfg.lr)
        self.critic_opt = make_adam(self.critic.parameters(), cfg.lr)
        self._polyak = (list(self.critic_target.parameters()), list(self.critic.parameters()))

    def actor_lr(self, step: int) -> float:
        """CORL's cosine decay (``CosineAnnealingLR(T_max=total_steps)``, eta_min 0) after ``step`` updates."""
        return 0.5 * self.config.lr * (1.0 + math.cos(math.pi * step / max(self.config.total_steps, 1)))

    def actor_mean(self, obs_n: Tensor) -> Tensor:
        return self.actor(obs_n)[0]

    def log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        """log pi(action | obs) for raw obs [B, obs_dim] and environment actions [B, act_dim] -> [B]."""
        mean, log_std = self.actor(self.state_norm(obs))
        return gaussian_log_prob(self.scaler.from_env(action), mean, log_std.expand_as(mean)) - self.scaler.log_abs_det()

    def _step(self, opt: torch.optim.Optimizer, loss: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def learn(self, rows: Tensor, actor_rows: Tensor | None = None) -> dict[str, Tensor]:
        cfg, b = self.config, self.split(rows)
        self.steps += 1
        with torch.no_grad():
            next_v = self.value(b.next_obs).squeeze(-1)  # for step 2, from V before its update (CORL)
            q_t = self.critic_target(b.obs_act).amin(0)
        v = self.value(b.obs).squeeze(-1)
        adv = q_t - v
        ab, adv_actor = b, adv
        if actor_rows is not None:  # a diagnostic: step 3 on its own rows, their advantages from the same networks
            ab = self.split(actor_rows)
            with torch.no_grad():
                adv_actor = self.critic_target(ab.obs_act).amin(0) - self.value(ab.obs).squeeze(-1)
        v_loss = expectile_loss(adv, cfg.expectile)  # 1.
        self._step(self.value_opt, v_loss)
        y = b.rew + cfg.gamma * (1.0 - b.done) * next_v  # 2.
        q = self.critic(b.obs_act)
        q_loss = (q - y).square().mean()  # [E, B]: the mean over both critics of their MSEs
        self._step(self.critic_opt, q_loss)
        weights = torch.exp(cfg.beta * adv_actor.detach()).clamp_(max=cfg.exp_adv_max)  # 3.
        mean, log_std = self.actor(ab.obs)
        logp = gaussian_log_prob(ab.act, mean, log_std.expand_as(mean), check_finite=False)
        actor_loss = -(weights * logp).mean()
        self._step(self.actor_opt, actor_loss)
        self.actor_opt.param_groups[0]["lr"] = self.actor_lr(self.steps)  # (a float: no scheduler object per step)
        soft_update(*self._polyak, cfg.tau)  # 4.
        return {"loss/value": v_loss.detach(), "loss/critic": q_loss.detach(), "loss/actor": actor_loss.detach(),
                "critic/q": q.detach().mean(), "actor/adv": adv.detach().mean()}
