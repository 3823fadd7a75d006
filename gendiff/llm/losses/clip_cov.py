"""Clip-Cov (Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for Reasoning
Language Models", Sec. 4): detach the gradient of a few random tokens whose logp-advantage covariance
lies in a band, because high-covariance tokens drive entropy down.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gendiff.entropy import logp_advantage_covariance, masked_mean

from .common import (
    PPOClipConfig,
    agg_loss,
    base_metrics,
    check_policy_inputs,
    ppo_clip_token_loss,
    register_loss,
)


@dataclass
class ClipCovConfig(PPOClipConfig):
    """Attributes: clip_ratio (share of valid tokens to detach, 2e-4), cov_lb / cov_ub (band, 1 / 5)."""

    clip_ratio: float = 2e-4
    cov_lb: float = 1.0
    cov_ub: float = 5.0


def clip_cov_select(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, config: ClipCovConfig | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The Clip-Cov selected set, as a [B, T] bool mask.

    1. cov_i = (A_i - mean A)(logp_i - mean logp) over valid tokens (gendiff.entropy).
    2. Candidates: valid, lb < cov_i < ub, and not already clipped by PPO (-A clip(r) > -A r).
    3. Pick n = max(1, int(clip_ratio * n_valid)) of them uniformly at random: the candidates in
       row-major order are permuted by ``torch.randperm(len, generator=generator)`` and the first n kept
       (all of them when there are fewer than n).
    """
    config = config or ClipCovConfig()
    logp, old_logp, adv, m, _ = check_policy_inputs(logp, old_logp, advantages, mask)
    with torch.no_grad():
        ratio = torch.exp(logp - old_logp)
        _, ppo_clipped = ppo_clip_token_loss(ratio, adv, 1.0 - config.eps_low, 1.0 + config.eps_high)
        cov = logp_advantage_covariance(logp, adv, m)
        eligible = m & ~ppo_clipped & (cov > config.cov_lb) & (cov < config.cov_ub)
        candidates = torch.nonzero(eligible)
        n_pick = max(1, int(config.clip_ratio * int(m.sum())))
        device = generator.device if generator is not None else torch.device("cpu")
        perm = torch.randperm(len(candidates), generator=generator, device=device).to(candidates.device)
        chosen = candidates[perm[:n_pick]]
        selected = torch.zeros_like(m)
        selected[chosen[:, 0], chosen[:, 1]] = True
    return selected


@register_loss("clip_cov", ClipCovConfig)
def clip_cov_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, config: ClipCovConfig,
    entropy: Tensor | None = None, generator: torch.Generator | None = None, **_: object,
) -> tuple[Tensor, dict[str, float]]:
    """PPO-clip loss with the gradient of the ``clip_cov_select`` tokens removed (their loss is 0).

    Args:
        logp, old_logp: [B, T]; advantages: [B] or [B, T]; mask: [B, T]; config: ``ClipCovConfig``.
        entropy: optional [B, T], logged.
        generator: makes the random pick reproducible (``clip_cov_select`` with the same generator
            state returns the same set).

    Returns:
        (loss, metrics); ``actor/clip_cov_count`` is the number of detached tokens.
    """
    logp, old_logp, adv, m, entropy = check_policy_inputs(logp, old_logp, advantages, mask, entropy)
    selected = clip_cov_select(logp, old_logp, advantages, mask, config, generator)  # 1-3.
    ratio = torch.exp(logp - old_logp)
    token_loss, clipped = ppo_clip_token_loss(ratio, adv, 1.0 - config.eps_low, 1.0 + config.eps_high)
    token_loss = token_loss * (~selected).to(token_loss.dtype)  # 4. corr = 0 on the selected tokens
    loss = agg_loss(token_loss, m, config.loss_agg_mode, config.norm_len)
    metrics = base_metrics(logp, old_logp, adv, m, loss, entropy)
    metrics["actor/clipfrac"] = float(masked_mean(clipped.float(), m))
    metrics["actor/clip_cov_count"] = float(selected.sum())
    metrics["actor/clip_cov_frac"] = float(masked_mean(selected.float(), m))
    return loss, metrics
