"""GRPO / PPO-clip token loss with asymmetric clipping and every aggregation mode.

Shao et al. 2024 (GRPO), Yu et al. 2025 (DAPO: eps_high, token-mean), Liu et al. 2025 (Dr. GRPO:
seq-mean-token-sum-norm).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gendiff.entropy import masked_mean

from .common import (
    PPOClipConfig,
    agg_loss,
    base_metrics,
    check_policy_inputs,
    ppo_clip_token_loss,
    register_loss,
)


@dataclass
class GRPOLossConfig(PPOClipConfig):
    """PPO-clip with eps_low / eps_high (defaults 0.2 / 0.2) and ``loss_agg_mode``."""


@register_loss("grpo", GRPOLossConfig)
def grpo_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, config: GRPOLossConfig,
    entropy: Tensor | None = None, **_: object,
) -> tuple[Tensor, dict[str, float]]:
    """l_t = -min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t), r_t = exp(logp_t - old_logp_t).

    Args:
        logp: [B, T] log-probs of the sampled tokens under the current policy (with gradient).
        old_logp: [B, T] log-probs under the rollout policy.
        advantages: [B] or [B, T].
        mask: [B, T] valid-token mask.
        config: ``GRPOLossConfig``.
        entropy: optional [B, T] token entropy, only logged.

    Returns:
        (scalar loss, metrics with loss/policy, actor/clipfrac, actor/ppo_kl, actor/cov_mean, ...).
    """
    logp, old_logp, adv, m, entropy = check_policy_inputs(logp, old_logp, advantages, mask, entropy)
    ratio = torch.exp(logp - old_logp)  # 1. importance ratio
    token_loss, clipped = ppo_clip_token_loss(ratio, adv, 1.0 - config.eps_low, 1.0 + config.eps_high)  # 2.
    loss = agg_loss(token_loss, m, config.loss_agg_mode, config.norm_len)  # 3. aggregate
    metrics = base_metrics(logp, old_logp, adv, m, loss, entropy)
    metrics["actor/clipfrac"] = float(masked_mean(clipped.float(), m))
    return loss, metrics
