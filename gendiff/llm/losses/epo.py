"""EPO (Xu et al. 2025, "EPO: Entropy-regularized Policy Optimization for LLM Agents Reinforcement
Learning"): entropy bonus, an entropy-smoothing penalty and a phase-based weight.

1. Bonus: -beta(p) * agg(H), with the phase weight beta(p) = coef for training progress
   p < phase_split, then linearly down to 0 at p = 1 (our reading of "phase-based weighting").
2. Smoothing: + smooth_coef * agg(relu(band_lo Hbar - H_t) + relu(H_t - band_hi Hbar)), where Hbar is
   the historical average entropy (extra ``entropy_history_mean``; default: this batch's mean,
   detached). Tokens inside [band_lo, band_hi] x Hbar are not penalised.
3. Plus the PPO-clip policy term.
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
class EPOConfig(PPOClipConfig):
    """Attributes: coef (1e-3), smooth_coef (0.1), band_lo / band_hi (0.5 / 1.5), phase_split (0.5)."""

    coef: float = 1e-3
    smooth_coef: float = 0.1
    band_lo: float = 0.5
    band_hi: float = 1.5
    phase_split: float = 0.5


def epo_phase_weight(progress: float, coef: float, phase_split: float) -> float:
    """beta(p) of step 1."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    if progress < phase_split:
        return coef
    return coef * (1.0 - progress) / max(1.0 - phase_split, 1e-12)


@register_loss("epo", EPOConfig)
def epo_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, config: EPOConfig,
    entropy: Tensor | None = None, entropy_history_mean: float | None = None, progress: float = 0.0,
    **_: object,
) -> tuple[Tensor, dict[str, float]]:
    """loss = agg(PPO-clip) - beta(p) agg(H) + smooth_coef agg(band penalty).

    Args:
        logp, old_logp: [B, T]; advantages: [B] or [B, T]; mask: [B, T]; config: ``EPOConfig``.
        entropy: [B, T] token entropy with gradient (required).
        entropy_history_mean: Hbar, the running mean entropy of past steps.
        progress: training progress in [0, 1].

    Returns:
        (loss, metrics) with loss/entropy_smooth, actor/epo_beta, actor/epo_out_of_band_frac.
    """
    require_entropy("epo", entropy)
    logp, old_logp, adv, m, entropy = check_policy_inputs(logp, old_logp, advantages, mask, entropy)
    ratio = torch.exp(logp - old_logp)
    token_loss, clipped = ppo_clip_token_loss(ratio, adv, 1.0 - config.eps_low, 1.0 + config.eps_high)
    pg = agg_loss(token_loss, m, config.loss_agg_mode, config.norm_len)  # 3.
    beta = epo_phase_weight(float(progress), config.coef, config.phase_split)  # 1.
    ent = agg_loss(entropy, m, config.loss_agg_mode, config.norm_len)
    h_bar = float(masked_mean(entropy.detach(), m)) if entropy_history_mean is None else float(entropy_history_mean)
    below = torch.relu(config.band_lo * h_bar - entropy)  # 2.
    above = torch.relu(entropy - config.band_hi * h_bar)
    smooth = agg_loss(below + above, m, config.loss_agg_mode, config.norm_len)
    loss = pg - beta * ent + config.smooth_coef * smooth
    metrics = base_metrics(logp, old_logp, adv, m, loss, entropy)
    metrics.update({
        "actor/clipfrac": float(masked_mean(clipped.float(), m)),
        "loss/pg": float(pg.detach()),
        "loss/entropy": float(ent.detach()),
        "loss/entropy_smooth": float(smooth.detach()),
        "actor/epo_beta": beta,
        "actor/epo_out_of_band_frac": float(masked_mean(((below + above) > 0).float(), m)),
    })
    return loss, metrics
