"""KL-Cov (Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for Reasoning Language
Models", Sec. 4): the unclipped surrogate -A r on every token, plus kl_coef |logp - old_logp| on the
top-k tokens by logp-advantage covariance.

Property (tested): d|x|/dx is 0 at x = 0 in torch, so when old_logp == logp (one on-policy update per
rollout) the KL part has zero gradient and KL-Cov reduces to the unclipped -A r objective, i.e. plain
policy gradient. It only acts from the second update on the same rollout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gendiff.entropy import logp_advantage_covariance, masked_mean

from .common import PPOClipConfig, agg_loss, base_metrics, check_policy_inputs, register_loss


@dataclass
class KLCovConfig(PPOClipConfig):
    """Attributes: kl_ratio (share of valid tokens penalised, 2e-3), kl_coef (1.0). eps_* are unused."""

    kl_ratio: float = 2e-3
    kl_coef: float = 1.0


def kl_cov_select(logp: Tensor, advantages: Tensor, mask: Tensor, config: KLCovConfig | None = None) -> Tensor:
    """The KL-Cov top-k set as a [B, T] bool mask: the k = max(1, int(kl_ratio * n_valid)) valid tokens
    with the largest cov_i = (A_i - mean A)(logp_i - mean logp)."""
    config = config or KLCovConfig()
    logp, _, adv, m, _ = check_policy_inputs(logp, logp, advantages, mask)
    with torch.no_grad():
        cov = logp_advantage_covariance(logp, adv, m)
        n_valid = int(m.sum())
        k = min(n_valid, max(1, int(config.kl_ratio * n_valid)))
        scores = torch.where(m, cov, torch.full_like(cov, -torch.inf)).flatten()
        top = torch.topk(scores, k).indices
        selected = torch.zeros(m.numel(), dtype=torch.bool, device=m.device)
        selected[top] = True
    return selected.view_as(m)


@register_loss("kl_cov", KLCovConfig)
def kl_cov_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, config: KLCovConfig,
    entropy: Tensor | None = None, **_: object,
) -> tuple[Tensor, dict[str, float]]:
    """l_t = -A_t r_t + kl_coef |logp_t - old_logp_t| 1[t in top-k by cov].

    Args:
        logp, old_logp: [B, T]; advantages: [B] or [B, T]; mask: [B, T]; config: ``KLCovConfig``.
        entropy: optional [B, T], logged.

    Returns:
        (loss, metrics); ``actor/kl_cov_count`` = k, ``actor/ppo_kl_abs`` = mean |logp - old_logp|.
    """
    logp, old_logp, adv, m, entropy = check_policy_inputs(logp, old_logp, advantages, mask, entropy)
    selected = kl_cov_select(logp, advantages, mask, config)  # 1. top-k by covariance
    log_ratio = logp - old_logp
    token_loss = -adv * torch.exp(log_ratio)  # 2. unclipped surrogate
    token_loss = token_loss + config.kl_coef * log_ratio.abs() * selected.to(token_loss.dtype)  # 3. KL part
    loss = agg_loss(token_loss, m, config.loss_agg_mode, config.norm_len)
    metrics = base_metrics(logp, old_logp, adv, m, loss, entropy)
    metrics["actor/kl_cov_count"] = float(selected.sum())
    metrics["actor/ppo_kl_abs"] = float(masked_mean(log_ratio.detach().abs(), m))
    return loss, metrics
