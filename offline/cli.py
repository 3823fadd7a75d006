"""``gendiff offline ...``: make-dataset, train-agent, make-gamble, train-rcsl, dataset-stats, train-diffusion,
synthesize (wiring only).

Each sub-command takes one typed config (``--config FILE`` plus ``--field value`` overrides, configs/offline_*.yaml)
and prints its result as JSON; train-agent also writes markdown and a learning-curve PNG beside ``--out``. The configs
and run functions live beside their algorithms in gendiff.offline.
"""

from __future__ import annotations

import argparse

from gendiff.commands import add_experiment, add_group


def add_offline_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``offline`` group (make-dataset, train-agent, make-gamble, train-rcsl, dataset-stats, train-diffusion,
    synthesize)."""
    from gendiff.offline.dataset_stats import DatasetStatsConfig, run_dataset_stats
    from gendiff.offline.datasets import MakeDatasetConfig, run_make_dataset
    from gendiff.offline.diffusion import TrajectoryDiffusionConfig, run_train_diffusion
    from gendiff.offline.gamble_data import MakeGambleConfig, run_make_gamble
    from gendiff.offline.pgd_loop import TrainAgentConfig, run_train_agent
    from gendiff.offline.rcsl_train import RCSLTrainConfig, run_train_rcsl
    from gendiff.offline.synthesize import SynthesizeConfig, run_synthesize

    sub = add_group(subparsers, "offline", "offline RL: Minari datasets, learners, policy-guided diffusion")
    add_experiment(sub, "make-dataset", MakeDatasetConfig, run_make_dataset,
                   "build a D4RL-style Minari dataset with SAC behaviour policies (never overwrites without --force; "
                   "replaces only after success)")
    add_experiment(sub, "train-agent", TrainAgentConfig, run_train_agent,
                   "train TD3+BC / IQL / PRDC on real + synthetic (none, unguided, pgd, synther; resample: a control) data")
    add_experiment(sub, "make-gamble", MakeGambleConfig, run_make_gamble,
                   "a Minari dataset of the safe-or-gamble task (gendiff/Gamble-v0) from a mix of behaviour policies")
    add_experiment(sub, "train-rcsl", RCSLTrainConfig, run_train_rcsl,
                   "train RCBC (return-conditioned BC) or DoC (Dichotomy of Control) on Discrete-action data; "
                   "achieved vs conditioned / predicted returns")
    add_experiment(sub, "dataset-stats", DatasetStatsConfig, run_dataset_stats,
                   "TQ and SACo of a dataset (A Dataset Perspective on Offline RL)")
    add_experiment(sub, "train-diffusion", TrajectoryDiffusionConfig, run_train_diffusion,
                   "train the trajectory diffusion model (temporal U-Net, EDM) and save the PGD pipeline", multiprocess=True)
    add_experiment(sub, "synthesize", SynthesizeConfig, run_synthesize,
                   "write synthetic transitions (unguided, PGD-guided by a train-agent policy, or SynthER) to a "
                   ".safetensors file; split over the processes of an accelerate launch", multiprocess=True)
