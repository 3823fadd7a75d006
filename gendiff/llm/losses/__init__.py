"""Token-level policy losses for LLM RL, one file per family, all in the ``POLICY_LOSSES`` registry.

Keys: grpo, clip_cov, kl_cov, entropy_bonus, top_entropy, steer, hapo, bapo, epo, d3s_tokens, ebpo.
See docs/llm_losses.md for formulas, defaults and papers.
"""

from __future__ import annotations

from .bapo import BAPOConfig, bapo_bounds, bapo_loss, positive_share
from .clip_cov import ClipCovConfig, clip_cov_loss, clip_cov_select
from .common import (
    AGG_MODES,
    KNOWN_EXTRAS,
    POLICY_LOSSES,
    AggMode,
    PPOClipConfig,
    agg_loss,
    check_policy_inputs,
    config_defaults,
    default_config,
    k3_kl,
    ppo_clip_token_loss,
)
from .d3s import D3SConfig, d3s_keep_ratio, d3s_select_samples, d3s_token_select, d3s_tokens_loss
from .ebpo import EBPOConfig, ebpo_loss, entropy_aware_advantage
from .entropy_bonus import EntropyBonusConfig, entropy_bonus_loss
from .epo import EPOConfig, epo_loss, epo_phase_weight
from .grpo import GRPOLossConfig, grpo_loss
from .hapo import (
    HAPOConfig,
    HAPOStats,
    hapo_apply_stats,
    hapo_clip_bounds,
    hapo_entropy_stats,
    hapo_loss,
    hapo_normalized_entropy,
    hapo_redistribute,
    hapo_temperature,
    hapo_token_temperature,
)
from .kl_cov import KLCovConfig, kl_cov_loss, kl_cov_select
from .steer import SteerConfig, steer_loss, steer_weights
from .top_entropy import TopEntropyConfig, top_entropy_loss, top_entropy_select


def get_policy_loss(name: str):
    """The registered loss function ``name`` (KeyError listing valid names when unknown)."""
    return POLICY_LOSSES.get(name)


__all__ = [
    "AGG_MODES", "KNOWN_EXTRAS", "POLICY_LOSSES", "AggMode", "BAPOConfig", "ClipCovConfig", "D3SConfig", "EBPOConfig",
    "EPOConfig", "EntropyBonusConfig", "GRPOLossConfig", "HAPOConfig", "KLCovConfig", "PPOClipConfig",
    "SteerConfig", "TopEntropyConfig", "agg_loss",
    "k3_kl", "bapo_bounds", "bapo_loss", "check_policy_inputs",
    "clip_cov_loss", "clip_cov_select", "config_defaults", "d3s_keep_ratio", "d3s_select_samples",
    "d3s_token_select", "d3s_tokens_loss", "default_config", "ebpo_loss", "entropy_aware_advantage", "entropy_bonus_loss", "epo_loss",
    "epo_phase_weight", "get_policy_loss", "grpo_loss", "HAPOStats", "hapo_apply_stats", "hapo_clip_bounds",
    "hapo_entropy_stats", "hapo_loss", "hapo_normalized_entropy", "hapo_redistribute", "hapo_temperature",
    "hapo_token_temperature", "kl_cov_loss", "kl_cov_select", "positive_share", "ppo_clip_token_loss",
    "steer_loss", "steer_weights", "top_entropy_loss", "top_entropy_select",
]
