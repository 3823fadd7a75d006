"""``gendiff offline ...``: make-dataset, train-agent, dataset-stats, train-diffusion.

Each sub-command takes one typed config (``--config FILE`` plus ``--field value`` overrides, configs/offline_*.yaml)
and prints its result as JSON; train-agent also writes markdown and a learning-curve PNG beside ``--out``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gendiff.cli import add_experiment


@dataclass
class DatasetStatsConfig:
    """``gendiff offline dataset-stats``: TQ and SACo of a Minari dataset (configs/offline_dataset_stats.yaml)."""

    dataset_id: str = "gendiff/hopper/medium-v0"  # Minari dataset to measure
    reference_id: str = ""  # a dataset whose statistics define the discretisation grid ("" -> itself)
    bin_width: float = 0.1  # bin width of the discretised z-scored states and actions (SACo)
    out: str = ""  # JSON file for the result ("": print only)
    overwrite: bool = False  # replace an existing --out file

    def __post_init__(self) -> None:
        from gendiff.config import check_numbers

        check_numbers(self, positive=("bin_width",))


def run_make_dataset(cfg: Any) -> dict[str, Any]:
    from gendiff.offline.datasets import make_dataset

    ds = make_dataset(cfg.env, cfg.level, cfg.steps, cfg.dataset_id, cfg.force, cfg)
    rets = ds.returns()
    info = {"dataset_id": ds.dataset_id, "episodes": len(ds.episodes), "transitions": ds.num_transitions,
            "mean_return": float(rets.mean()), "normalised_score": float(ds.normalized_score(rets).mean()),
            "ref_min_score": ds.ref_min_score, "ref_max_score": ds.ref_max_score,
            **{k: v for k, v in ds.metadata.items() if k.startswith("gendiff_")}}
    print(json.dumps(info, indent=2, default=str))
    return info


def run_dataset_stats(cfg: DatasetStatsConfig) -> dict[str, Any]:
    from gendiff.io import atomic_write_text, refuse_existing
    from gendiff.offline.dataset_stats import dataset_stats
    from gendiff.offline.datasets import load_dataset

    if cfg.out:
        refuse_existing([cfg.out], cfg.overwrite)
    ds = load_dataset(cfg.dataset_id)
    ref = load_dataset(cfg.reference_id).transitions() if cfg.reference_id else None
    if ds.ref_min_score is None or ds.ref_max_score is None:
        raise ValueError(f"dataset {cfg.dataset_id!r} has no reference returns (ref_min_score/ref_max_score)")
    st = dataset_stats(ds.transitions(), ds.ref_min_score, ds.ref_max_score, ds.returns(), bin_width=cfg.bin_width,
                       reference=ref)
    info = {"dataset_id": cfg.dataset_id, **asdict(st)}
    print(json.dumps(info, indent=2))
    if cfg.out:
        atomic_write_text(cfg.out, json.dumps(info, indent=2))
    return info


def run_train_agent(cfg: Any) -> dict[str, Any]:
    from gendiff.offline.pgd_loop import train_agent

    res = train_agent(cfg)
    print(json.dumps(res["final"], indent=2))
    return res


def run_train_diffusion(cfg: Any) -> str:
    from gendiff.offline.datasets import load_dataset
    from gendiff.offline.diffusion import train_trajectory_diffusion

    ds = load_dataset(cfg.dataset_id)
    ds.require_continuous("the trajectory diffusion model")
    train_trajectory_diffusion(ds, cfg)
    path = str(Path(cfg.out_dir) / "pipeline")
    print(json.dumps({"pipeline": path}))
    return path


def add_offline_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``offline`` group (make-dataset, train-agent, dataset-stats, train-diffusion)."""
    from gendiff.offline.datasets import MakeDatasetConfig
    from gendiff.offline.diffusion import TrajectoryDiffusionConfig
    from gendiff.offline.pgd_loop import TrainAgentConfig

    group = subparsers.add_parser("offline", help="offline RL: Minari datasets, learners, policy-guided diffusion")
    sub = group.add_subparsers(dest="offline_command", required=True)
    add_experiment(sub, "make-dataset", MakeDatasetConfig, run_make_dataset,
                   "build a D4RL-style Minari dataset with SAC behaviour policies (never overwrites without --force; "
                   "replaces only after success)")
    add_experiment(sub, "train-agent", TrainAgentConfig, run_train_agent,
                   "train TD3+BC / IQL / PRDC on real + synthetic (none, unguided, pgd, synther) data")
    add_experiment(sub, "dataset-stats", DatasetStatsConfig, run_dataset_stats,
                   "TQ and SACo of a dataset (A Dataset Perspective on Offline RL)")
    add_experiment(sub, "train-diffusion", TrajectoryDiffusionConfig, run_train_diffusion,
                   "train the trajectory diffusion model (temporal U-Net, EDM) and save the PGD pipeline")
