"""Dataset measures from "A Dataset Perspective on Offline Reinforcement Learning" (Schweighofer et al. 2022).

- TQ (trajectory quality): the average trajectory return, normalised between the random and the expert
  (best) return: TQ = (mean_R - R_random) / (R_expert - R_random). For transition sets without episodes
  (synthetic data) the mean per-step reward times the reference episode length stands in for mean_R.
- SACo (state-action coverage): the number of unique state-action pairs, normalised by a reference count
  (the paper: the replay dataset's). Continuous states and actions are discretised first: z-scored with the
  statistics of ``reference`` (or of the data itself) and binned with width ``bin_width``. Without a
  reference count the number of transitions is used, so SACo is the unique fraction in [0, 1].
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class DatasetStats:
    """TQ, SACo and the numbers behind them."""

    tq: float
    saco: float
    mean_return: float
    unique_pairs: int
    num_transitions: int


def trajectory_quality(mean_return: float, ref_min: float, ref_max: float) -> float:
    """TQ = (mean_R - R_random) / (R_expert - R_random)."""
    if ref_max == ref_min:
        raise ValueError("TQ needs distinct random and expert returns")
    return float((mean_return - ref_min) / (ref_max - ref_min))


def unique_state_actions(obs: Tensor, act: Tensor, bin_width: float = 0.1,
                         stats: tuple[Tensor, Tensor] | None = None) -> int:
    """Count unique discretised (s, a) pairs; obs [N, obs_dim], act [N, act_dim]."""
    if obs.shape[0] != act.shape[0] or obs.shape[0] == 0:
        raise ValueError(f"obs and act need the same non-zero number of rows, got {obs.shape[0]} and {act.shape[0]}")
    if not bin_width > 0:
        raise ValueError(f"bin_width must be positive, got {bin_width}")
    x = torch.cat([obs, act], dim=1).double()
    mean, std = stats if stats is not None else (x.mean(0), x.std(0, unbiased=False))
    codes = torch.floor((x - mean) / std.clamp_min(1e-8) / bin_width).long().numpy()
    return int(np.unique(codes, axis=0).shape[0])


def dataset_stats(transitions: dict[str, Tensor], ref_min: float, ref_max: float,
                  episode_returns: np.ndarray | None = None, episode_length: int = 1000, bin_width: float = 0.1,
                  reference: dict[str, Tensor] | None = None, reference_count: int | None = None) -> DatasetStats:
    """TQ and SACo of a dataset (real: pass its episode returns; synthetic: per-step reward x episode_length).

    Args:
        transitions: obs [N, obs_dim], act [N, act_dim], rew [N].
        reference: transitions whose statistics define the grid (compare real and synthetic on one grid).
        reference_count: SACo denominator (default N).
    """
    n = int(transitions["obs"].shape[0])
    if episode_returns is not None and len(episode_returns):
        mean_ret = float(np.mean(episode_returns))
    else:
        mean_ret = float(transitions["rew"].double().mean()) * episode_length
    stats = None
    if reference is not None:
        ref = torch.cat([reference["obs"], reference["act"]], dim=1).double()
        stats = (ref.mean(0), ref.std(0, unbiased=False))
    unique = unique_state_actions(transitions["obs"], transitions["act"], bin_width, stats)
    return DatasetStats(trajectory_quality(mean_ret, ref_min, ref_max), unique / float(reference_count or n),
                        mean_ret, unique, n)


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


def run_dataset_stats(cfg: DatasetStatsConfig) -> dict:
    """``gendiff offline dataset-stats``: print (and with ``cfg.out`` write) TQ and SACo of ``cfg.dataset_id``."""
    from gendiff.io import atomic_write_text, refuse_existing
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
