"""OREO (Offline REasoning Optimization, Wang et al. 2024): a policy and a value model trained jointly on the soft
Bellman equation from offline trajectories with a sparse final reward, and the value-guided step-level beam search
that uses the learned value at test time.

- ``losses``: ``oreo_value_loss`` and ``oreo_policy_loss`` (pure functions, ``OREOConfig``);
- ``value``: ``state_values``, ``last_values`` and save / load of the value model (PPO-max's ``ValueModel``);
- ``data``: ``make_trajectories`` (trajectories, plus pairs / lists for the DPO baseline on the same samples);
- ``trainer``: ``OREOTrainer``; ``search``: ``value_guided_search``; ``run``: ``gendiff llm oreo make|train|search``.
"""

from __future__ import annotations

from .data import TRAJECTORY_COLUMNS, make_trajectories
from .losses import OREOConfig, oreo_policy_loss, oreo_value_loss, suffix_sums
from .search import SearchConfig, SearchOutput, value_guided_search
from .trainer import OREOTrainConfig, OREOTrainer
from .value import ValueModel, last_values, load_value_model, save_value_model, state_values

__all__ = [
    "OREOConfig", "OREOTrainConfig", "OREOTrainer", "SearchConfig", "SearchOutput", "TRAJECTORY_COLUMNS", "ValueModel",
    "last_values", "load_value_model", "make_trajectories", "oreo_policy_loss", "oreo_value_loss", "save_value_model", "state_values", "suffix_sums", "value_guided_search",
]
