"""PPO-clip plus an entropy bonus, with a fixed coefficient or one adapted toward a target entropy.

Adaptive rule (Skywork-OR1, He et al. 2025, "adaptive entropy control", as we read it): with the
batch mean entropy H and target H*, the bonus is applied only while H < H*, and the coefficient moves
by +coef_step when H < H*, by -coef_step otherwise, clamped to [0, coef_max]. The loss stays pure: the
current coefficient comes in as the ``entropy_coef`` extra and the next one goes out as the metric
``actor/entropy_coef_next``; the trainer carries it from step to step.
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
class EntropyBonusConfig(PPOClipConfig):
    """Attributes: coef (fixed coefficient, or the initial one when adaptive, 1e-3); target_entropy
    (None: fixed coefficient; a number: adaptive); coef_step (5e-4); coef_max (1e-2)."""

    coef: float = 1e-3
    target_entropy: float | None = None
    coef_step: float = 5e-4
    coef_max: float = 1e-2


@register_loss("entropy_bonus", EntropyBonusConfig)
def entropy_bonus_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, config: EntropyBonusConfig,
    entropy: Tensor | None = None, entropy_coef: float | None = None, **_: object,
) -> tuple[Tensor, dict[str, float]]:
    """loss = agg(PPO-clip) - c * agg(H), c fixed or adaptive (see module docstring).

    Args:
        logp, old_logp: [B, T]; advantages: [B] or [B, T]; mask: [B, T]; config: ``EntropyBonusConfig``.
        entropy: [B, T] token entropy with gradient (required).
        entropy_coef: current coefficient for the adaptive mode (default ``config.coef``).

    Returns:
        (loss, metrics) with actor/entropy_coef (applied) and actor/entropy_coef_next.
    """
    require_entropy("entropy_bonus", entropy)
    logp, old_logp, adv, m, entropy = check_policy_inputs(logp, old_logp, advantages, mask, entropy)
    ratio = torch.exp(logp - old_logp)
    token_loss, clipped = ppo_clip_token_loss(ratio, adv, 1.0 - config.eps_low, 1.0 + config.eps_high)
    pg = agg_loss(token_loss, m, config.loss_agg_mode, config.norm_len)  # 1. policy term
    ent = agg_loss(entropy, m, config.loss_agg_mode, config.norm_len)  # 2. entropy term
    coef = config.coef if entropy_coef is None else float(entropy_coef)
    applied, coef_next = coef, coef
    if config.target_entropy is not None:  # 3. adaptive coefficient
        below = float(masked_mean(entropy.detach(), m)) < config.target_entropy
        applied = coef if below else 0.0
        coef_next = min(config.coef_max, max(0.0, coef + (config.coef_step if below else -config.coef_step)))
    loss = pg - applied * ent
    metrics = base_metrics(logp, old_logp, adv, m, loss, entropy)
    metrics.update({
        "actor/clipfrac": float(masked_mean(clipped.float(), m)),
        "loss/pg": float(pg.detach()),
        "loss/entropy": float(ent.detach()),
        "actor/entropy_coef": applied,
        "actor/entropy_coef_next": coef_next,
    })
    return loss, metrics
