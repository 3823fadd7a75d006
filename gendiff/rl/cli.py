"""``gendiff gorl ...``: ``train`` (one run) and ``benchmark`` (algorithms x seeds), wiring only.

``gendiff gorl train --env ID --algo {gorl_fm,gorl_diffusion,ppo,sac,pmoe_sac} --steps N --seed S --out DIR``
writes DIR/metrics.json, DIR/curve.png, DIR/config.yaml and the trained agent (DIR/model/); ``gendiff gorl
benchmark`` runs algorithms x seeds and writes summary.json / .md and curves.png. Each command takes one typed
config (``--config FILE`` plus ``--field value`` overrides; configs/gorl_train.yaml, configs/gorl_benchmark.yaml).
The configs and run functions live in gendiff.rl.train and gendiff.rl.benchmark. ``gendiff tabular conservative``
(gendiff.rl.tabular.run) runs UCBVI / StepMix / EpsMix / the baseline on a tabular task under the episode-wise
conservative constraint.
"""

from __future__ import annotations

import argparse

from gendiff.commands import add_experiment, add_group


def add_gorl_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``gorl`` group (train, benchmark) to the ``gendiff`` command's sub-parsers."""
    from gendiff.rl.benchmark import GorlBenchmarkConfig, run_benchmark_command
    from gendiff.rl.train import GorlTrainConfig, run_train_command

    sub = add_group(subparsers, "gorl", "online RL: GoRL, PPO, SAC, PMOE")
    add_experiment(sub, "train", GorlTrainConfig, run_train_command,
                   "train one agent; writes metrics.json, curve.png, weights")
    add_experiment(sub, "benchmark", GorlBenchmarkConfig, run_benchmark_command,
                   "algorithms x seeds; writes summary.json / .md and curves.png")


def add_subrl_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``subrl`` group (train, benchmark: SubPO and the additive policy gradient, gendiff.rl.subrl)."""
    from gendiff.rl.subrl import SubRLBenchmarkConfig, SubRLTrainConfig, run_subrl_benchmark, run_subrl_train

    sub = add_group(subparsers, "subrl", "submodular RL: SubPO vs the additive-reward policy gradient")
    add_experiment(sub, "train", SubRLTrainConfig, run_subrl_train,
                   "train one policy (--reward marginal: SubPO, additive: baseline); writes metrics.json, curve.png")
    add_experiment(sub, "benchmark", SubRLBenchmarkConfig, run_subrl_benchmark,
                   "subpo / additive_pg / random / greedy x seeds; writes OUT.json, OUT.md, OUT_curves.png")


def add_tabular_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tabular`` group (conservative) to the ``gendiff`` command's sub-parsers."""
    from gendiff.rl.tabular.run import ConservativeConfig, run_conservative_command

    sub = add_group(subparsers, "tabular", "tabular episodic RL: UCBVI, StepMix / EpsMix conservative exploration")
    add_experiment(sub, "conservative", ConservativeConfig, run_conservative_command,
                   "learners x seeds under the episode-wise constraint; writes results.json, summary.md, regret.png")


def add_fishery_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fishery`` group (search: the best constant-mortality / constant-escapement policy, gendiff.rl.fishery).
    DRL agents train on ``gendiff/Fishery3-v0`` with ``gendiff gorl train --env gendiff/Fishery3-v0``."""
    from gendiff.rl.fishery import FisherySearchConfig, run_fishery_search

    sub = add_group(subparsers, "fishery", "fishery control: constant-mortality / constant-escapement optima")
    add_experiment(sub, "search", FisherySearchConfig, run_fishery_search,
                   "grid + golden-section search of a constant policy's mean profit, then its evaluation")


def add_robust_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``robust`` group (discover: the non-dominated policy set against state-adversarial attacks,
    gendiff.rl.nondominated)."""
    from gendiff.rl.robust import RobustDiscoverConfig, run_robust_discover

    sub = add_group(subparsers, "robust", "robust RL: non-dominated policies against state-adversarial attacks")
    add_experiment(sub, "discover", RobustDiscoverConfig, run_robust_discover,
                   "PPO policies trained under the attacks where the set is weakest; writes set.json / .md, weights")
