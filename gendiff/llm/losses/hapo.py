"""HAPO (Liu et al. 2025, "From Uniform to Heterogeneous: Tailoring Policy Optimization to Every
Token's Nature"): token-level treatment driven by a normalised entropy h in [-1, 1], following the
authors' code (github.com/starriver030515/HAPO, ``compute_entropy_h``, ``ada_clip``, ``ada_advantage``,
``compute_entropy_based_temperature``).

1. h: z = (log H - Q_q(log H)) / s over the batch's valid tokens, Q_q the pivot quantile (nearest
   rank) and s = sqrt(mean (log H - Q_q)^2) (spread about the pivot); positive z are divided by max z,
   negative z by |min z|, so h lies in [-1, 1] (low-entropy tokens h <= 0). The authors' code divides
   the negative side by min z itself, which flips its sign; we keep the paper's [-1, 1].
   ``HAPOStats`` holds (pivot, s, 1 / max z, 1 / |min z|), so that the same map applies later.
2. Adaptive temperature for sampling: T_t = T (1 + tau h_t), h_t from the current token's entropy with
   the stats of the last update (``hapo_token_temperature``, used by the trainer's rollout).
3. Token-level group average advantage: ``gendiff.llm.advantages`` key ``hapo``.
4. Asymmetric adaptive clipping (``hapo_clip_bounds``): a token with h <= 0 widens only its lower
   bound, ratio >= 1 - eps_low (1 - h); a token with h > 0 widens only its upper bound,
   ratio <= 1 + eps_high (1 + h); the other bound keeps eps_low / eps_high.
5. Differential advantage redistribution (adv_scale > 0, off by default): A_h = A (1 + adv_scale h);
   inside the neutral zone 1 - eps_low,t / 2 < r < 1 + eps_high,t / 2 high-entropy tokens keep A and
   low-entropy tokens take A_h, outside it the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from gendiff.entropy import masked_mean, token_entropy

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
    """Attributes: pivot_quantile (0.8: the top-20 % entropy tokens get h > 0), adv_scale (0.0: no
    redistribution; the authors use 1.0 when on), temperature_tau (0.05, the authors' default; 0: no
    adaptive temperature), eps (1e-8, inside log and divisions)."""

    pivot_quantile: float = 0.8
    adv_scale: float = 0.0
    temperature_tau: float = 0.05
    eps: float = 1e-8


class HAPOStats(NamedTuple):
    """The normalisation of step 1: pivot of log H, spread s, and the positive / negative scales."""

    pivot: float
    spread: float
    scale_pos: float
    scale_neg: float


def hapo_entropy_stats(entropy: Tensor, mask: Tensor, pivot_quantile: float = 0.8, eps: float = 1e-8) -> HAPOStats:
    """Step 1's statistics over the valid tokens of [B, T] ``entropy`` (detached)."""
    m = mask != 0
    with torch.no_grad():
        log_h = torch.log(entropy.detach().double()[m].clamp_min(eps))
        pivot = torch.quantile(log_h, pivot_quantile, interpolation="nearest")
        spread = (log_h - pivot).pow(2).mean().clamp_min(eps).sqrt()
        z = (log_h - pivot) / spread
        return HAPOStats(float(pivot), float(spread), 1.0 / float(z.max().clamp_min(eps)),
                         1.0 / float((-z.min()).clamp_min(eps)))


def hapo_apply_stats(entropy: Tensor, stats: HAPOStats, eps: float = 1e-8) -> Tensor:
    """h = clamp(z * scale, -1, 1) of ``entropy`` (any shape) under ``stats``; detached."""
    with torch.no_grad():
        z = (torch.log(entropy.detach().double().clamp_min(eps)) - stats.pivot) / stats.spread
        return torch.where(z > 0, z * stats.scale_pos, z * stats.scale_neg).clamp(-1.0, 1.0).to(entropy.dtype)


def hapo_normalized_entropy(entropy: Tensor, mask: Tensor, pivot_quantile: float = 0.8, eps: float = 1e-8) -> Tensor:
    """Step 1: [B, T] detached normalised entropy h in [-1, 1] (0 at invalid tokens)."""
    m = mask != 0
    h = hapo_apply_stats(entropy, hapo_entropy_stats(entropy, m, pivot_quantile, eps), eps)
    return torch.where(m, h, torch.zeros_like(h))


def hapo_temperature(h: Tensor, temperature: float = 1.0, tau: float = 0.05) -> Tensor:
    """Step 2: per-token sampling temperature T (1 + tau h), same shape as ``h``."""
    return temperature * (1.0 + tau * h)


def hapo_token_temperature(stats: HAPOStats, tau: float, eps: float = 1e-8):
    """Step 2 for the sampler: ``fn(scaled logits [B, V]) -> [B]`` factors 1 + tau h of the rows'
    entropies (``sample_completions(token_temperature=...)``); needs 0 <= tau < 1."""
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"temperature_tau must be in [0, 1) so that T (1 + tau h) stays positive, got {tau}")

    def factor(scaled: Tensor) -> Tensor:
        return hapo_temperature(hapo_apply_stats(token_entropy(scaled), stats, eps), 1.0, tau)

    return factor


def hapo_clip_bounds(h: Tensor, eps_low: float, eps_high: float) -> tuple[Tensor, Tensor]:
    """Step 4: per-token ratio bounds (low [B, T], high [B, T]) from h [B, T]."""
    low = 1.0 - eps_low * torch.where(h <= 0, 1.0 - h, torch.ones_like(h))
    high = 1.0 + eps_high * torch.where(h > 0, 1.0 + h, torch.ones_like(h))
    return low, high


def hapo_redistribute(adv: Tensor, h: Tensor, ratio: Tensor, low: Tensor, high: Tensor, scale: float) -> Tensor:
    """Step 5: [B, T] redistributed advantages (all inputs [B, T]; ratio is only compared, detached)."""
    adv_h = adv * (1.0 + scale * h)
    r = ratio.detach()
    neutral = (r > 1.0 - (1.0 - low) / 2) & (r < 1.0 + (high - 1.0) / 2)
    return torch.where(h > 0, torch.where(neutral, adv, adv_h), torch.where(neutral, adv_h, adv))


@register_loss("hapo", HAPOConfig)
def hapo_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, config: HAPOConfig,
    entropy: Tensor | None = None, **_: object,
) -> tuple[Tensor, dict[str, float]]:
    """PPO-clip with entropy-adaptive per-token bounds and advantage (steps 1, 4, 5).

    Args:
        logp, old_logp: [B, T]; advantages: [B] or [B, T]; mask: [B, T]; config: ``HAPOConfig``.
        entropy: [B, T] token entropy (required; only used through the detached h).

    Returns:
        (loss, metrics) with actor/hapo_h_mean and the step-1 stats (``actor/hapo_pivot``,
        ``actor/hapo_spread``, ``actor/hapo_scale_pos``, ``actor/hapo_scale_neg``) that the trainer
        carries to the next rollout's adaptive temperature.
    """
    require_entropy("hapo", entropy)
    logp, old_logp, adv, m, entropy = check_policy_inputs(logp, old_logp, advantages, mask, entropy)
    stats = hapo_entropy_stats(entropy, m, config.pivot_quantile, config.eps)  # 1.
    h = torch.where(m, hapo_apply_stats(entropy, stats, config.eps), torch.zeros_like(entropy))
    low, high = hapo_clip_bounds(h, config.eps_low, config.eps_high)  # 4.
    ratio = torch.exp(logp - old_logp)
    adv_h = hapo_redistribute(adv, h, ratio, low, high, config.adv_scale) if config.adv_scale else adv  # 5.
    token_loss, clipped = ppo_clip_token_loss(ratio, adv_h, low, high)
    loss = agg_loss(token_loss, m, config.loss_agg_mode, config.norm_len)
    metrics = base_metrics(logp, old_logp, adv, m, loss, entropy)
    metrics["actor/clipfrac"] = float(masked_mean(clipped.float(), m))
    metrics["actor/hapo_h_mean"] = float(masked_mean(h, m))
    metrics.update({f"actor/hapo_{k}": v for k, v in stats._asdict().items()})
    return loss, metrics
