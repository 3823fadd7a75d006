"""LLM RL on the shared entropy utilities: token-level policy losses (``POLICY_LOSSES``) and advantage
estimators (``ADVANTAGES``). Every entropy / covariance formula comes from ``gendiff.entropy``."""

from __future__ import annotations

from .advantages import ADVANTAGES, empo_rewards, target_temperature
from .losses import (
    AGG_MODES,
    POLICY_LOSSES,
    agg_loss,
    clip_cov_select,
    config_defaults,
    default_config,
    get_policy_loss,
    kl_cov_select,
)

__all__ = [
    "ADVANTAGES", "AGG_MODES", "POLICY_LOSSES", "agg_loss", "clip_cov_select", "config_defaults",
    "default_config", "empo_rewards", "get_policy_loss", "kl_cov_select", "target_temperature",
]
