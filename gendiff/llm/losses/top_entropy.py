"""80/20 rule (Wang et al. 2025, "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective
RLVR"): the policy gradient only flows through the tokens whose entropy lies in the top rho quantile
of the batch; the normalisation still counts every valid token (the indicator sits inside the
token-mean of their objective).
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
    require_entropy,
)


@dataclass
class TopEntropyConfig(PPOClipConfig):
    """Attributes: rho, the kept share of highest-entropy tokens (0.2)."""

    rho: float = 0.2


def top_entropy_select(entropy: Tensor, mask: Tensor, rho: float) -> Tensor:
    """[B, T] bool: valid tokens with H >= tau, tau = the (1 - rho) quantile (linear interpolation,
    ``torch.quantile``) of the valid tokens' entropies."""
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    m = mask != 0
    with torch.no_grad():
        tau = torch.quantile(entropy.detach()[m].double(), 1.0 - rho)
        return m & (entropy.detach().double() >= tau)


@register_loss("top_entropy", TopEntropyConfig)
def top_entropy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, config: TopEntropyConfig,
    entropy: Tensor | None = None, **_: object,
) -> tuple[Tensor, dict[str, float]]:
    """l_t = 1[H_t >= tau_rho] * PPO-clip_t, aggregated over all valid tokens.

    Args:
        logp, old_logp: [B, T]; advantages: [B] or [B, T]; mask: [B, T]; config: ``TopEntropyConfig``.
        entropy: [B, T] token entropy (required; only used to select).

    Returns:
        (loss, metrics) with actor/top_entropy_frac (kept share) and actor/top_entropy_tau.
    """
    require_entropy("top_entropy", entropy)
    logp, old_logp, adv, m, entropy = check_policy_inputs(logp, old_logp, advantages, mask, entropy)
    keep = top_entropy_select(entropy, m, config.rho)  # 1. high-entropy minority
    ratio = torch.exp(logp - old_logp)
    token_loss, clipped = ppo_clip_token_loss(ratio, adv, 1.0 - config.eps_low, 1.0 + config.eps_high)
    token_loss = token_loss * keep.to(token_loss.dtype)  # 2. gradient only through kept tokens
    loss = agg_loss(token_loss, m, config.loss_agg_mode, config.norm_len)
    metrics = base_metrics(logp, old_logp, adv, m, loss, entropy)
    metrics["actor/clipfrac"] = float(masked_mean(clipped.float(), m))
    metrics["actor/top_entropy_frac"] = float(masked_mean(keep.float(), m))
    return loss, metrics
