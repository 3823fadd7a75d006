"""Preference learning on locally made data: the preference-loss registry (``PREFERENCE_LOSSES``: dpo, adpo,
adpo_listwise, cpl), the data maker (``make_preferences``) and the trainer (``PrefTrainer``).

Kept apart from the token-level RL losses of ``gendiff.llm.losses``: preference losses score whole completions.
"""

from __future__ import annotations

from .adpo import ADPOConfig, ADPOListwiseConfig, adpo_listwise_loss, adpo_loss, anchored_kl
from .common import (
    PREFERENCE_LOSSES,
    check_preference_inputs,
    preference_config_defaults,
    register_preference_loss,
)
from .cpl import CPLConfig, cpl_loss
from .did import did_entropy, did_log_probs, optimal_rejected_log_weights, sample_rejected
from .dpo import DPOConfig, dpo_loss

__all__ = [
    "ADPOConfig", "ADPOListwiseConfig", "CPLConfig", "DPOConfig", "PREFERENCE_LOSSES", "adpo_listwise_loss", "adpo_loss",
    "anchored_kl", "check_preference_inputs", "cpl_loss", "did_entropy", "did_log_probs", "dpo_loss",
    "optimal_rejected_log_weights", "preference_config_defaults", "register_preference_loss", "sample_rejected",
]
