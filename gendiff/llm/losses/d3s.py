"""D3S (Wang et al. 2025, "Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework for
Efficient Policy Optimization").

Sample level (``d3s_select_samples``): within each group keep the m rollouts that maximise the
variance of their advantages. The maximiser takes j of the largest and m - j of the smallest values
for some j (a subset containing an interior value can swap it for an extreme one without lowering
the variance), so all m + 1 splits are scored and the best is kept.

Token level (loss ``d3s_tokens``): keep the k = max(1, ceil(keep * n_valid)) valid tokens with the
largest |A_t| H_t and drop the rest from the batch (the loss is normalised over the kept tokens).
The keep-ratio relaxes over training: keep(p) = keep_start + (keep_end - keep_start) p.
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
class D3SConfig(PPOClipConfig):
    """Attributes: keep_start (0.5), keep_end (1.0): token keep-ratio at progress 0 and 1;
    sample_keep (0.5): share of each group's rollouts the trainer keeps (``d3s_select_samples``,
    m = max(1, round(sample_keep * group size)); 1.0: no sample-level selection)."""

    keep_start: float = 0.5
    keep_end: float = 1.0
    sample_keep: float = 0.5


def d3s_keep_ratio(progress: float, config: D3SConfig) -> float:
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    return config.keep_start + (config.keep_end - config.keep_start) * progress


def d3s_token_select(adv: Tensor, entropy: Tensor, mask: Tensor, keep: float) -> Tensor:
    """[B, T] bool: the k valid tokens with the largest |A| H (k = max(1, ceil(keep * n_valid)))."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep ratio must be in (0, 1], got {keep}")
    m = mask != 0
    with torch.no_grad():
        score = torch.where(m, adv.detach().abs() * entropy.detach(), torch.full_like(adv, -torch.inf))
        n_valid = int(m.sum())
        k = min(n_valid, max(1, math.ceil(keep * n_valid)))
        out = torch.zeros(m.numel(), dtype=torch.bool, device=m.device)
        out[torch.topk(score.flatten(), k).indices] = True
    return out.view_as(m)


def d3s_select_samples(advantages: Tensor, group_ids: Tensor, keep_per_group: int) -> Tensor:
    """Sample level: [B] bool keeping, in each group, the ``keep_per_group`` rollouts with max Var(A).

    Groups with at most ``keep_per_group`` members are kept whole.
    """
    if advantages.dim() != 1 or group_ids.shape != advantages.shape:
        raise ValueError("advantages and group_ids must both be [B]")
    if keep_per_group < 1:
        raise ValueError(f"keep_per_group must be >= 1, got {keep_per_group}")
    keep = torch.zeros_like(advantages, dtype=torch.bool)
    for g in torch.unique(group_ids):
        idx = torch.nonzero(group_ids == g).flatten()
        if len(idx) <= keep_per_group:
            keep[idx] = True
            continue
        order = idx[torch.argsort(advantages[idx])]
        best, best_var = None, -1.0
        for j in range(keep_per_group + 1):  # j largest + (m - j) smallest
            cand = torch.cat([order[: keep_per_group - j], order[len(order) - j:]])
            var = float(advantages[cand].double().var(unbiased=False))
            if var > best_var:
                best, best_var = cand, var
        keep[best] = True
    return keep


@register_loss("d3s_tokens", D3SConfig)
def d3s_tokens_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, config: D3SConfig,
    entropy: Tensor | None = None, progress: float = 0.0, **_: object,
) -> tuple[Tensor, dict[str, float]]:
    """PPO-clip over the D3S token subset (aggregated over the kept tokens only).

    Args:
        logp, old_logp: [B, T]; advantages: [B] or [B, T]; mask: [B, T]; config: ``D3SConfig``.
        entropy: [B, T] token entropy (required; only used to select).
        progress: training progress in [0, 1] for the keep-ratio schedule.

    Returns:
        (loss, metrics) with actor/d3s_keep_ratio and actor/d3s_kept_tokens.
    """
    require_entropy("d3s_tokens", entropy)
    logp, old_logp, adv, m, entropy = check_policy_inputs(logp, old_logp, advantages, mask, entropy)
    keep_ratio = d3s_keep_ratio(float(progress), config)
    kept = d3s_token_select(adv, entropy, m, keep_ratio)
    ratio = torch.exp(logp - old_logp)
    token_loss, clipped = ppo_clip_token_loss(ratio, adv, 1.0 - config.eps_low, 1.0 + config.eps_high)
    loss = agg_loss(token_loss, kept, config.loss_agg_mode, config.norm_len)
    metrics = base_metrics(logp, old_logp, adv, m, loss, entropy)
    metrics.update({"actor/clipfrac": float(masked_mean(clipped.float(), kept)),
                    "actor/d3s_keep_ratio": keep_ratio, "actor/d3s_kept_tokens": float(kept.sum())})
    return loss, metrics
