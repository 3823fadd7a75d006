"""HAPO (Liu et al. 2025, "From Uniform to Heterogeneous: Tailoring Policy Optimization to Every
Token's Nature"): token-level treatment driven by a normalised entropy h in [-1, 1].

1. h: z = (log H - Q_q(log H)) / std(log H) over valid tokens (Q_q: the pivot quantile); positive z
   are divided by max z, negative z by |min z|, so h lies in [-1, 1].
2. Adaptive temperature for sampling: T_t = T (1 + tau h_t) (``hapo_temperature``, used at rollout).
3. Token-level group average advantage: ``gendiff.llm.advantages`` key ``hapo``.
4. Advantage redistribution: A'_t = A_t (1 + adv_scale h_t). Our simplified form; off by default
   (adv_scale 0) because the paper's exact redistribution rule is not reproduced here.
5. Asymmetric adaptive clipping: ratio in [1 - eps_low (1 - h_t), 1 + eps_high (1 + h_t)]: low-entropy
   tokens may lose probability faster, high-entropy tokens may gain it faster.
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
class HAPOConfig(PPOClipConfig):
    """Attributes: pivot_quantile (0.8: the top-20% entropy tokens get h > 0), adv_scale (0.0),
    eps (1e-8, inside log and divisions)."""

    pivot_quantile: float = 0.8
    adv_scale: float = 0.0
    eps: float = 1e-8


def hapo_normalized_entropy(entropy: Tensor, mask: Tensor, pivot_quantile: float = 0.8, eps: float = 1e-8) -> Tensor:
    """Step 1: [B, T] detached normalised entropy h in [-1, 1] (0 at invalid tokens)."""
    m = mask != 0
    with torch.no_grad():
        log_h = torch.log(entropy.detach().double() + eps)
        valid = log_h[m]
        pivot = torch.quantile(valid, pivot_quantile)
        z = (log_h - pivot) / (valid.std(unbiased=False) + eps)
        z_max = float(z[m].max().clamp_min(eps))
        z_min = float(z[m].min().clamp_max(-eps))
        h = torch.where(z > 0, z / z_max, z / abs(z_min)).clamp(-1.0, 1.0)
        return torch.where(m, h, torch.zeros_like(h)).to(entropy.dtype)


def hapo_temperature(h: Tensor, temperature: float = 1.0, tau: float = 0.1) -> Tensor:
    """Step 2: per-token sampling temperature T (1 + tau h), same shape as ``h``."""
    return temperature * (1.0 + tau * h)


@register_loss("hapo", HAPOConfig)
def hapo_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, config: HAPOConfig,
    entropy: Tensor | None = None, **_: object,
) -> tuple[Tensor, dict[str, float]]:
    """PPO-clip with entropy-adaptive per-token bounds and advantage (steps 1, 4, 5).

    Args:
        logp, old_logp: [B, T]; advantages: [B] or [B, T]; mask: [B, T]; config: ``HAPOConfig``.
        entropy: [B, T] token entropy (required).

    Returns:
        (loss, metrics) with actor/hapo_h_mean.
    """
    require_entropy("hapo", entropy)
    logp, old_logp, adv, m, entropy = check_policy_inputs(logp, old_logp, advantages, mask, entropy)
    h = hapo_normalized_entropy(entropy, m, config.pivot_quantile, config.eps)  # 1.
    adv_h = adv * (1.0 + config.adv_scale * h)  # 4.
    low = 1.0 - config.eps_low * (1.0 - h)  # 5.
    high = 1.0 + config.eps_high * (1.0 + h)
    ratio = torch.exp(logp - old_logp)
    token_loss, clipped = ppo_clip_token_loss(ratio, adv_h, low, high)
    loss = agg_loss(token_loss, m, config.loss_agg_mode, config.norm_len)
    metrics = base_metrics(logp, old_logp, adv, m, loss, entropy)
    metrics["actor/clipfrac"] = float(masked_mean(clipped.float(), m))
    metrics["actor/hapo_h_mean"] = float(masked_mean(h, m))
    return loss, metrics
