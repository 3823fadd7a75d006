"""STEER (Hao et al. 2025, "Rethinking Entropy Interventions in RLVR: An Entropy Change Perspective"):
reweight each token's loss by how much it is predicted to change the entropy.

Omega_t = (A_t / pi_old,t) pi_t (1 - pi_t) (log pi_t + H_t)   (first-order entropy change of token t),
k = -ln(w_min) / max(max_t |Omega_t|, omega_floor),   w_t = clamp(exp(-k |Omega_t|), w_min, 1),
l_t = w_t * PPO-clip_t, with w_t detached (pi_t = exp(logp_t) of the current policy).
"""

from __future__ import annotations

import math
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
class SteerConfig(PPOClipConfig):
    """Attributes: w_min (smallest weight, 0.8), omega_floor (floor of max |Omega| in k, 0.02)."""

    w_min: float = 0.8
    omega_floor: float = 0.02


def steer_weights(
    logp: Tensor, old_logp: Tensor, adv: Tensor, entropy: Tensor, mask: Tensor, config: SteerConfig
) -> Tensor:
    """[B, T] detached STEER weights w_t (1 at invalid tokens). All inputs [B, T]."""
    if not 0.0 < config.w_min <= 1.0:
        raise ValueError(f"w_min must be in (0, 1], got {config.w_min}")
    m = mask != 0
    with torch.no_grad():
        pi, pi_old = torch.exp(logp.detach()), torch.exp(old_logp.detach())
        omega = adv / pi_old * pi * (1.0 - pi) * (logp.detach() + entropy.detach())  # 1. entropy change
        omega = torch.where(m, omega, torch.zeros_like(omega))
        k = -math.log(config.w_min) / max(float(omega.abs().max()), config.omega_floor)  # 2. sharpness
        return torch.exp(-k * omega.abs()).clamp(config.w_min, 1.0)  # 3. weights


@register_loss("steer", SteerConfig)
def steer_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, config: SteerConfig,
    entropy: Tensor | None = None, **_: object,
) -> tuple[Tensor, dict[str, float]]:
    """l_t = w_t * PPO-clip_t (see module docstring).

    Args:
        logp, old_logp: [B, T]; advantages: [B] or [B, T]; mask: [B, T]; config: ``SteerConfig``.
        entropy: [B, T] token entropy (required).

    Returns:
        (loss, metrics) with actor/steer_weight_mean and actor/steer_weight_min.
    """
    require_entropy("steer", entropy)
    logp, old_logp, adv, m, entropy = check_policy_inputs(logp, old_logp, advantages, mask, entropy)
    w = steer_weights(logp, old_logp, adv, entropy, m, config)
    ratio = torch.exp(logp - old_logp)
    token_loss, clipped = ppo_clip_token_loss(ratio, adv, 1.0 - config.eps_low, 1.0 + config.eps_high)
    loss = agg_loss(w * token_loss, m, config.loss_agg_mode, config.norm_len)  # 4. reweighted loss
    metrics = base_metrics(logp, old_logp, adv, m, loss, entropy)
    metrics["actor/clipfrac"] = float(masked_mean(clipped.float(), m))
    metrics["actor/steer_weight_mean"] = float(masked_mean(w, m))
    metrics["actor/steer_weight_min"] = float(w[m].min())
    return loss, metrics
