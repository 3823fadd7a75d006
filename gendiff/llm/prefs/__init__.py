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
from .dpo import DPOConfig, dpo_loss

__all__ = [
    "ADPOConfig", "ADPOListwiseConfig", "CPLConfig", "DPOConfig", "PREFERENCE_LOSSES", "adpo_listwise_loss", "adpo_loss",
    "anchored_kl", "check_preference_inputs", "cpl_loss", "dpo_loss", "preference_config_defaults", "register_preference_loss",
]
