"""Probabilistic Mixture-of-Experts policies (Ren et al. 2021, "Probabilistic Mixture-of-Experts for
Efficient Deep Reinforcement Learning"), a multimodal baseline for GoRL.

pi(u|s) = sum_k w_k(s) N(u; mu_k(s), diag sigma_k(s)^2), w = softmax(gating logits). Its log-density is
exact (logsumexp over experts), so PPO uses it unchanged (``PPOConfig(head="pmoe")``). For SAC
(:class:`PMOESAC`) the actions are squashed, a = tanh(u), and the actor is trained as in PMOE:

  1. Experts: an expert k ~ w(s) is drawn per state, its action reparameterised a~ = tanh(mu_k + sigma_k e);
     L_experts = E [alpha log pi(a~|s) - min_j Q_j(s, a~)] with the mixture's log pi (SAC's actor loss).
  2. Gating ("frequency" / back-propagation-free update of PMOE, Sec. 4.2): each expert proposes one
     action; the gate is trained by cross-entropy toward the expert whose action has the largest Q.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from gendiff.entropy import atanh_clipped, gaussian_log_prob, tanh_gaussian_log_prob
from gendiff.rl.common import ActionScaler, mlp
from gendiff.rl.sac import LOG_STD_MAX, LOG_STD_MIN, SAC, SACConfig

__all__ = ["MixtureGaussianHead", "MixtureTanhGaussianPolicy", "PMOESAC", "PMOESACConfig"]


class MixtureGaussianHead(nn.Module):
    """K-expert Gaussian mixture over pre-squash actions u.

    Args:
        obs_dim, act_dim: sizes; hidden: MLP widths; num_experts: K; act: hidden activation.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], num_experts: int = 4,
                 act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.k, self.d = num_experts, act_dim
        self.net = mlp(obs_dim, num_experts * (1 + 2 * act_dim), hidden, act)

    def params(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """obs [B, obs_dim] -> (log weights [B, K], means [B, K, d], log_stds [B, K, d])."""
        out = self.net(obs)
        logits, rest = out[:, : self.k], out[:, self.k:].reshape(-1, self.k, 2 * self.d)
        mean, log_std = rest.chunk(2, dim=-1)
        return logits.log_softmax(-1), mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def expert_samples(self, obs: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
        """One reparameterised u per expert: (u [B, K, d], log_w, mean, log_std)."""
        log_w, mean, log_std = self.params(obs)
        u = mean + log_std.exp() * torch.randn(mean.shape, generator=generator)
        return u, log_w, mean, log_std

    @staticmethod
    def mixture_log_prob(u: Tensor, log_w: Tensor, mean: Tensor, log_std: Tensor, squash: bool = False) -> Tensor:
        """log sum_k w_k p_k(u) for u [B, d] (or [B, K', d] against all K experts) -> [B] (or [B, K'])."""
        comp = tanh_gaussian_log_prob if squash else gaussian_log_prob
        if u.dim() == 2:
            return torch.logsumexp(log_w + comp(u[:, None], mean, log_std), dim=-1)
        lp = comp(u[:, :, None], mean[:, None], log_std[:, None])  # [B, K', K]
        return torch.logsumexp(log_w[:, None] + lp, dim=-1)

    def sample(self, obs: Tensor, deterministic: bool = False,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """u [B, d] (expert k ~ w, or the mean of the heaviest expert) and log pi(u|s) [B]."""
        u_all, log_w, mean, log_std = self.expert_samples(obs, generator)
        if deterministic:
            k = log_w.argmax(-1)
            src = mean
        else:
            k = torch.multinomial(log_w.exp(), 1, generator=generator).squeeze(-1)
            src = u_all
        u = src[torch.arange(obs.shape[0]), k]
        return u, self.mixture_log_prob(u, log_w, mean, log_std)

    def log_prob_entropy(self, obs: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """(log pi(u|s) [B], one-sample entropy estimate -log pi(u'|s), u' ~ pi, detached sample [B])."""
        log_w, mean, log_std = self.params(obs)
        with torch.no_grad():
            k = torch.multinomial(log_w.exp(), 1).squeeze(-1)
            idx = torch.arange(obs.shape[0])
            u_new = mean[idx, k] + log_std[idx, k].exp() * torch.randn_like(u)
        return (self.mixture_log_prob(u, log_w, mean, log_std),
                -self.mixture_log_prob(u_new, log_w, mean, log_std))


class MixtureTanhGaussianPolicy(nn.Module):
    """Squashed mixture policy with the :class:`~gendiff.rl.sac.TanhGaussianPolicy` API."""

    def __init__(self, obs_dim: int, act_dim: int, low: Sequence[float], high: Sequence[float],
                 hidden: Sequence[int] = (256, 256), num_experts: int = 4) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.head = MixtureGaussianHead(obs_dim, act_dim, hidden, num_experts)
        self.scaler = ActionScaler(low, high)

    def sample(self, obs: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Step 1: a~ [B, d] in (-1, 1) (expert drawn from the gate, reparameterised within it), log pi [B]."""
        u_all, log_w, mean, log_std = self.head.expert_samples(obs, generator)
        k = torch.multinomial(log_w.detach().exp(), 1, generator=generator).squeeze(-1)
        u = u_all[torch.arange(obs.shape[0]), k]
        return torch.tanh(u), self.head.mixture_log_prob(u, log_w, mean, log_std, squash=True)

    def log_prob(self, obs: Tensor, action: Tensor, eps: float = 1e-3) -> Tensor:
        """log pi(action | obs), ``action`` [B, d] in environment units -> [B]."""
        log_w, mean, log_std = self.head.params(obs)
        u = atanh_clipped(self.scaler.from_env(action), eps)
        return self.head.mixture_log_prob(u, log_w, mean, log_std, squash=True) - self.scaler.log_abs_det()

    @torch.no_grad()
    def act(self, obs: np.ndarray | Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None) -> np.ndarray | Tensor:
        is_np = isinstance(obs, np.ndarray)
        o = torch.as_tensor(obs, dtype=torch.float32)
        o = o[None] if o.dim() == 1 else o
        u, _ = self.head.sample(o, deterministic, generator)
        a = self.scaler.to_env(torch.tanh(u)).reshape(*np.shape(obs)[:-1], self.act_dim)
        return a.numpy() if is_np else a


@dataclass
class PMOESACConfig(SACConfig):
    """SAC settings plus the number of experts."""

    num_experts: int = 4


class PMOESAC(SAC):
    """SAC with a probabilistic mixture-of-experts actor (steps 1-2 of the module docstring)."""

    config_class = PMOESACConfig

    def __init__(self, obs_dim: int, act_dim: int, low: Sequence[float], high: Sequence[float],
                 config: PMOESACConfig | None = None, seed: int = 0) -> None:
        config = config or PMOESACConfig()
        super().__init__(obs_dim, act_dim, low, high, config, seed)
        self.policy = MixtureTanhGaussianPolicy(obs_dim, act_dim, low, high, config.hidden, config.num_experts)
        self.actor_opt = torch.optim.Adam(self.policy.parameters(), lr=config.lr)

    def update(self, batch: dict[str, Tensor]) -> dict[str, float]:
        metrics = super().update(batch)  # critic, step-1 experts, temperature, targets
        obs = batch["obs"]
        with torch.no_grad():  # 2. gate toward the expert whose proposal has the highest Q
            u_all, _, _, _ = self.policy.head.expert_samples(obs, self.generator)
            b, k, d = u_all.shape
            q = self.critic(obs.repeat_interleave(k, 0), torch.tanh(u_all).reshape(b * k, d)).min(0).values
            best = q.reshape(b, k).argmax(-1)
        log_w, _, _ = self.policy.head.params(obs)
        gate_loss = nn.functional.nll_loss(log_w, best)
        self.actor_opt.zero_grad(set_to_none=True)
        gate_loss.backward()
        self.actor_opt.step()
        metrics["loss/gate"] = gate_loss.item()
        return metrics
