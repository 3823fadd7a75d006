"""Offline RL data synthesis: Minari datasets, offline learners, policy-guided trajectory diffusion.

Modules: ``datasets`` (load / make Minari datasets), ``behaviour`` (SAC behaviour policies), ``trajectories``
(windows for trajectory diffusion), ``learners`` (TD3+BC, IQL, PRDC registry), ``synther`` (single-transition
baseline), ``pgd_loop`` (train an agent on real + synthetic data), ``dataset_stats`` (TQ, SACo),
``dynamics`` (dynamics MSE in MuJoCo) and ``cli``.
"""

from __future__ import annotations

from gendiff.offline import iql, prdc, td3bc  # noqa: F401  (each registers itself in OFFLINE_LEARNERS)
from gendiff.offline.datasets import (
    LEVELS,
    Episode,
    MakeDatasetConfig,
    OfflineDataset,
    load_dataset,
    make_dataset,
    normalized_score,
)
from gendiff.offline.learners import OFFLINE_LEARNERS, build_learner

__all__ = ["LEVELS", "OFFLINE_LEARNERS", "Episode", "MakeDatasetConfig", "OfflineDataset", "load_dataset", "make_dataset",
           "build_learner", "normalized_score"]
