"""BAPO (Xi et al. 2025, "BAPO: Stabilizing Off-Policy Reinforcement Learning for LLMs via Balanced
Policy Optimization with Adaptive Clipping"): per batch, widen the clip bounds until tokens with a
positive advantage carry a target share of the gradient-carrying contributions.

Contribution of token t: |A_t r_t| if the PPO surrogate still has a gradient there (A > 0 and
r < c_high, or A < 0 and r > c_low), else 0. Share rho = sum over A > 0 / sum over all.
1. Start at c_low = low_min, c_high = high_min.
2. While rho < rho0: raise c_low by low_step while it stays <= low_max (removes negative-advantage
   tokens with small ratios), otherwise raise c_high by high_step while <= high_max (admits more
   positive tokens), otherwise stop.
3. l_t = -min(r_t A_t, clip(r_t, c_low, c_high) A_t). The bounds are ratios, not eps offsets.
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
class BAPOConfig(PPOClipConfig):
    """Attributes: rho0 (0.5), low_min / low_max / low_step (0.6 / 0.9 / 0.05), high_min / high_max /
    high_step (1.2 / 3.0 / 0.05). eps_low / eps_high are unused."""

    rho0: float = 0.5
    low_min: float = 0.6
    low_max: float = 0.9
    low_step: float = 0.05
    high_min: float = 1.2
    high_max: float = 3.0
    high_step: float = 0.05


def positive_share(ratio: Tensor, adv: Tensor, mask: Tensor, c_low: float, c_high: float) -> float:
    """rho(c_low, c_high) of the module docstring; 1.0 when no token carries a gradient."""
    m = mask != 0
    active = m & (((adv > 0) & (ratio < c_high)) | ((adv < 0) & (ratio > c_low)))
    contrib = torch.where(active, (adv * ratio).abs(), torch.zeros_like(ratio))
    total = float(contrib.sum())
    return 1.0 if total == 0.0 else float(contrib[adv > 0].sum()) / total


def bapo_bounds(ratio: Tensor, adv: Tensor, mask: Tensor, config: BAPOConfig) -> tuple[float, float, float]:
    """Steps 1-2: (c_low, c_high, rho). Bounds are min + i * step with integer i (no float drift)."""
    ratio, adv = ratio.detach(), adv.detach()
    i_low = i_high = 0
    n_low = int(round((config.low_max - config.low_min) / config.low_step + 1e-9))
    n_high = int(round((config.high_max - config.high_min) / config.high_step + 1e-9))

    def bounds() -> tuple[float, float]:
        return config.low_min + i_low * config.low_step, config.high_min + i_high * config.high_step

    rho = positive_share(ratio, adv, mask, *bounds())
    while rho < config.rho0:
        if i_low < n_low:
            i_low += 1
        elif i_high < n_high:
            i_high += 1
        else:
            break
        rho = positive_share(ratio, adv, mask, *bounds())
    return (*bounds(), rho)


@register_loss("bapo", BAPOConfig)
def bapo_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, config: BAPOConfig,
    entropy: Tensor | None = None, **_: object,
) -> tuple[Tensor, dict[str, float]]:
    """PPO surrogate with the adaptive BAPO bounds (see module docstring).

    Args:
        logp, old_logp: [B, T]; advantages: [B] or [B, T]; mask: [B, T]; config: ``BAPOConfig``.
        entropy: optional [B, T], logged.

    Returns:
        (loss, metrics) with actor/bapo_c_low, actor/bapo_c_high, actor/bapo_pos_share.
    """
    logp, old_logp, adv, m, entropy = check_policy_inputs(logp, old_logp, advantages, mask, entropy)
    ratio = torch.exp(logp - old_logp)
    c_low, c_high, rho = bapo_bounds(ratio, adv, m, config)
    token_loss, clipped = ppo_clip_token_loss(ratio, adv, c_low, c_high)
    loss = agg_loss(token_loss, m, config.loss_agg_mode, config.norm_len)
    metrics = base_metrics(logp, old_logp, adv, m, loss, entropy)
    metrics.update({"actor/clipfrac": float(masked_mean(clipped.float(), m)), "actor/bapo_c_low": c_low,
                    "actor/bapo_c_high": c_high, "actor/bapo_pos_share": rho})
    return loss, metrics
