"""Entropy-Balanced Policy Optimization, the policy-update half of agentic AEPO (Dong et al. 2025, "Agentic
Entropy-Balanced Policy Optimization", arXiv 2510.14545, Sec. 3.2), following the authors' verl code
(``compute_policy_loss_entropy_balanced_clipping``). Its rollout half is ``gendiff.llm.entropy_balanced``.

1. Entropy-aware advantage: H_n = (H - mean H) / std H over the batch's valid tokens (unbiased std; std 0 -> 1),
   A~_t = A_t (1 + adv_alpha H_n,t), detached (the authors' code: alpha 0.2). High-entropy tokens weigh more.
2. Stop-gradient high clip: the upper bound is (1 + eps_high) r / sg(r), whose value is 1 + eps_high and whose
   gradient is (1 + eps_high) grad log pi. Where PPO clips a token (A~ > 0, r > 1 + eps_high) its gradient is
   zero; here the token keeps the gradient -(1 + eps_high) A~ grad log pi (preserved and rescaled). The lower
   bound stays 1 - eps_low (no gradient), as in the authors' code.
3. l_t = max(-A~_t r_t, -A~_t clip(r_t, 1 - eps_low, upper_t)); aggregated by ``agg_loss``.

The authors' code also applies dual-clip PPO (c = 3) to negative advantages; gendiff's ``grpo`` has no dual clip
and neither has this loss, so the two differ only by steps 1-2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gendiff.entropy import masked_mean

from .common import PPOClipConfig, agg_loss, base_metrics, check_policy_inputs, register_loss, require_entropy


@dataclass
class EBPOConfig(PPOClipConfig):
    """PPO-clip fields plus adv_alpha (0.2: weight of the normalised entropy in step 1; 0: plain advantage) and
    preserve_high (True: step 2's stop-gradient upper bound; False: the ordinary clip)."""

    adv_alpha: float = 0.2
    preserve_high: bool = True


def entropy_aware_advantage(adv: Tensor, entropy: Tensor, mask: Tensor, alpha: float) -> Tensor:
    """Step 1: [B, T] A (1 + alpha H_n), H_n the entropy standardised over the valid tokens (detached)."""
    m = mask != 0
    h = entropy.detach()
    vals = h[m]
    std = vals.std() if vals.numel() > 1 else torch.zeros((), dtype=h.dtype, device=h.device)
    std = torch.where(std > 0, std, torch.ones_like(std))
    h_n = (h - vals.mean()) / std
    return torch.where(m, adv * (1.0 + alpha * h_n), torch.zeros_like(adv))


@register_loss("ebpo", EBPOConfig)
def ebpo_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, config: EBPOConfig,
    entropy: Tensor | None = None, **_: object,
) -> tuple[Tensor, dict[str, float]]:
    """Steps 1-3.

    Args:
        logp, old_logp: [B, T] log-probs (current with gradient, rollout); advantages: [B] or [B, T];
        mask: [B, T]; config: ``EBPOConfig``; entropy: [B, T] token entropy (required when adv_alpha != 0).

    Returns:
        (loss, metrics with actor/clipfrac_high: tokens past the upper bound with A~ > 0, whose gradient step 2
        keeps, and ebpo/adv_scale_mean: mean of 1 + alpha H_n).
    """
    if config.adv_alpha:
        require_entropy("ebpo", entropy)
    logp, old_logp, adv, m, entropy = check_policy_inputs(logp, old_logp, advantages, mask, entropy)
    adv_t = entropy_aware_advantage(adv, entropy, m, config.adv_alpha) if config.adv_alpha else adv  # 1.
    ratio = torch.exp(logp - old_logp)
    high = 1.0 + config.eps_high
    upper = high * ratio / ratio.detach() if config.preserve_high else torch.full_like(ratio, high)  # 2.
    low = torch.full_like(ratio, 1.0 - config.eps_low)
    clipped_r = torch.where(ratio > high, upper, torch.where(ratio < low, low, ratio))
    unclipped, clipped = -adv_t * ratio, -adv_t * clipped_r
    token_loss = torch.maximum(unclipped, clipped)  # 3.
    loss = agg_loss(token_loss, m, config.loss_agg_mode, config.norm_len)
    metrics = base_metrics(logp, old_logp, adv, m, loss, entropy)
    with torch.no_grad():
        metrics["actor/clipfrac"] = float(masked_mean((clipped > unclipped).float(), m))
        metrics["actor/clipfrac_high"] = float(masked_mean(((ratio > high) & (adv_t > 0)).float(), m))
        if config.adv_alpha:
            scale = torch.where(adv != 0, adv_t / torch.where(adv != 0, adv, torch.ones_like(adv)), torch.ones_like(adv))
            metrics["ebpo/adv_scale_mean"] = float(masked_mean(scale, m))
    return loss, metrics
