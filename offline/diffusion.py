"""Train the trajectory-diffusion model of PGD: a temporal 1D U-Net on z-scored windows, EDM.

1. Windows of [obs, arctanh action, reward, done] (:mod:`gendiff.offline.trajectories`), z-scored.
2. ``TemporalUNet1D`` trained with :func:`gendiff.training.train_denoiser` against diffusers'
   ``EDMEulerScheduler`` (Karras et al. 2022: P_mean -1.2, P_std 1.2, sigma_data 1, sigma_min 0.002,
   sigma_max 80, rho 7).
3. Saved as a :class:`gendiff.pipelines.PolicyGuidedTrajectoryPipeline` (``save_pretrained``), with the
   training dataset's id in ``pipeline/gendiff_dataset.json`` so that a pipeline is never reused for another dataset.

Sampling as in the reference (EDM's stochastic Heun sampler, Algorithm 2) uses the same trained model with
:func:`edm_heun_scheduler`: ``pipe.with_scheduler(edm_heun_scheduler(pipe.scheduler))``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import EDMEulerScheduler
from torch import Tensor

from gendiff.checkpoints import atomic_dir
from gendiff.config import check_numbers
from gendiff.distributed import is_main_process, wait_for_everyone
from gendiff.io import loading, seed_everything
from gendiff.models import TemporalUNet1D
from gendiff.offline.datasets import OfflineDataset, load_dataset
from gendiff.offline.trajectories import make_windows
from gendiff.pipelines.pgd import PolicyGuidedTrajectoryPipeline
from gendiff.schedulers import EDMHeunScheduler
from gendiff.training import PRIOR_EMA_DECAY, TrainConfig, train_denoiser
from gendiff.trajectory_layout import TrajectoryNormalizer, check_action_layout

DATASET_RECORD = "gendiff_dataset.json"  # pipeline/<this>: the id of the dataset the pipeline was trained on


@dataclass
class TrajectoryDiffusionConfig:
    """``gendiff offline train-diffusion`` (configs/offline_train_diffusion.yaml). CPU-sized defaults;
    the reference trains a larger U-Net for ~100k steps."""

    dataset_id: str = "gendiff/hopper/medium-v0"  # Minari dataset to train on
    out_dir: str = "runs/pgd_diffusion"  # run folder: train/ (checkpoints) and pipeline/
    horizon: int = 32  # trajectory window length in env steps
    stride: int = 8  # env steps between the starts of training windows
    dim: int = 32  # U-Net base channels
    dim_mults: tuple[int, ...] = (1, 2, 4)  # channel multiple per U-Net level
    residual: bool = False  # steps carry s_{t+1} - s_t (gendiff.offline.trajectories); False: the paper's layout
    action_layout: str = "arctanh"  # the step's action: "arctanh" (the paper's) or "linear" (gendiff.trajectory_layout)
    skips: str = "all"  # TemporalUNet1D's up path: "all" (every skip, as the reference; 2-4x lower dynamics error,
    # benchmarks/offline/README.md) or "janner" (first level's skip unused; pipelines saved before 2026-12-04)
    train_steps: int = 2000  # training steps
    batch_size: int = 64  # windows per step
    lr: float = 2e-3  # Adam learning rate (the PGD reference's; 2e-4 trained ~3x slower: benchmarks/offline/README.md)
    ema_decay: float = PRIOR_EMA_DECAY  # decay of the exponential moving average of the weights
    seed: int = 0  # random seed
    overwrite: bool = False  # replace out_dir's run and pipeline (after the new run completes)
    progress: bool = True  # show a progress bar
    resume: bool = False  # continue the run in out_dir/train from its latest checkpoint
    checkpoint_every: int = 1000  # steps between checkpoints of out_dir/train (what --resume continues from)
    terminal_repeat: int = 1  # training windows holding a termination appear this many times (1: as in the data and
    # the paper; more: the model sees falls more often, an option measured in benchmarks/offline/README.md)

    def __post_init__(self) -> None:
        check_numbers(self, positive=("horizon", "stride", "dim", "dim_mults", "train_steps", "batch_size", "lr",
                                      "checkpoint_every", "terminal_repeat"), fraction=("ema_decay",))
        check_action_layout(self.action_layout)


def edm_scheduler() -> EDMEulerScheduler:
    return EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=1.0, rho=7.0, prediction_type="epsilon")


def edm_heun_scheduler(base: EDMEulerScheduler | EDMHeunScheduler | None = None) -> EDMHeunScheduler:
    """The reference sampler of PGD: EDM Algorithm 2 (S_churn 80, S_tmin 0.05, S_tmax 50, S_noise 1.003).

    Args:
        base: a scheduler whose noise schedule and preconditioning (sigma_min/max, sigma_data, rho,
            prediction_type) to keep, e.g. a trained pipeline's ``pipe.scheduler``; default :func:`edm_scheduler`.
    """
    base = edm_scheduler() if base is None else base
    return EDMHeunScheduler.from_config(base.config, s_churn=80.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003)


def trajectory_windows(dataset: OfflineDataset, cfg: TrajectoryDiffusionConfig,
                       episodes: list | None = None) -> tuple[Tensor, TrajectoryNormalizer]:
    """Step 1: the dataset's (or ``episodes``') windows [W, horizon, D] and their normaliser."""
    eps = dataset.episodes if episodes is None else episodes
    windows = make_windows(eps, dataset.action_low, dataset.action_high, cfg.horizon, cfg.stride, cfg.residual,
                           cfg.action_layout)
    norm = TrajectoryNormalizer.fit(windows, dataset.obs_dim, dataset.act_dim, dataset.action_low,
                                    dataset.action_high, residual=cfg.residual, action_layout=cfg.action_layout)
    return windows, norm


def repeat_terminal_windows(windows: Tensor, norm: TrajectoryNormalizer, repeat: int) -> Tensor:
    """Training windows [W, H, D] (raw units) with every window that holds a termination (done flag > 0.5) present
    ``repeat`` times in all: [W + (repeat - 1) * W_done, H, D]. The normaliser stays the one fitted on the data."""
    if repeat < 1:
        raise ValueError(f"terminal_repeat must be >= 1, got {repeat}")
    if repeat == 1:
        return windows
    has_done = (windows[..., norm.done_index] > 0.5).any(dim=1)
    return torch.cat([windows, windows[has_done].repeat(repeat - 1, 1, 1)])


def trajectory_unet(norm: TrajectoryNormalizer, cfg: TrajectoryDiffusionConfig) -> TemporalUNet1D:
    """Step 2's network for windows laid out as ``norm``."""
    return TemporalUNet1D(transition_dim=norm.dim, dim=cfg.dim, dim_mults=tuple(cfg.dim_mults), skips=cfg.skips)


def train_trajectory_diffusion(dataset: OfflineDataset, cfg: TrajectoryDiffusionConfig) -> PolicyGuidedTrajectoryPipeline:
    """Steps 1-3; returns the pipeline (also saved under ``cfg.out_dir/pipeline``).

    An existing ``out_dir`` is replaced only with ``overwrite`` and only when the new run is complete (the run folder
    is built beside the old one, the pipeline folder written under a temporary name); ``resume`` continues it.
    """
    pipe_dir = Path(cfg.out_dir) / "pipeline"
    if pipe_dir.exists() and not (cfg.overwrite or cfg.resume):
        raise FileExistsError(f"{pipe_dir} exists; pass --overwrite to replace it (after the new run completes) "
                              "or --resume to continue its run")
    windows, norm = trajectory_windows(dataset, cfg)
    windows = repeat_terminal_windows(windows, norm, cfg.terminal_repeat)
    seed_everything(cfg.seed)  # before the U-Net's random initial weights
    unet = trajectory_unet(norm, cfg)
    sched = edm_scheduler()
    tcfg = TrainConfig(steps=cfg.train_steps, batch_size=cfg.batch_size, lr=cfg.lr, ema_decay=cfg.ema_decay,
                       seed=cfg.seed, checkpoint_every=min(cfg.checkpoint_every, cfg.train_steps),
                       log_every=max(cfg.train_steps // 20, 1))
    res = train_denoiser(unet, norm.normalize(windows), sched, tcfg, Path(cfg.out_dir) / "train",
                         progress=cfg.progress, overwrite=cfg.overwrite, resume=cfg.resume, run_config=cfg)
    pipe = PolicyGuidedTrajectoryPipeline(unet=res.model, scheduler=sched, normalizer=norm.to_config())
    record = json.dumps({"dataset_id": dataset.dataset_id, "transitions": dataset.num_transitions}, indent=2)

    def write(folder: Path) -> None:
        pipe.save_pretrained(folder)
        (folder / DATASET_RECORD).write_text(record)

    if is_main_process():  # under accelerate launch: the main process writes, the others wait for it
        atomic_dir(pipe_dir, write)
    wait_for_everyone()
    return pipe


def load_trajectory_pipeline(saved: str | Path, dataset: OfflineDataset,
                             strict: bool = True) -> PolicyGuidedTrajectoryPipeline:
    """A saved pipeline, checked against the dataset it is about to serve.

    A pipeline whose normaliser does not fit ``dataset`` (observation / action sizes) is always an error. One
    trained on another dataset id is an error with ``strict`` (a shared out_dir) and a warning without (a pipeline
    the user named on purpose); one saved without a dataset record (before the record existed) gets a warning.
    """
    saved = Path(saved)
    record = saved / DATASET_RECORD
    if record.exists():
        with loading(record, "the pipeline's dataset record"):
            trained_on = json.loads(record.read_text()).get("dataset_id")
        if trained_on != dataset.dataset_id:
            msg = f"the pipeline in {saved} was trained on dataset {trained_on!r}, not {dataset.dataset_id!r}"
            if strict:
                raise ValueError(msg + "; use another out_dir")
            warnings.warn(msg, stacklevel=2)
    else:
        warnings.warn(f"{saved} records no training dataset ({DATASET_RECORD}); using it for "
                      f"{dataset.dataset_id!r} unchecked", stacklevel=2)
    with loading(saved, "the trajectory pipeline"):
        pipe = PolicyGuidedTrajectoryPipeline.from_pretrained(saved, use_safetensors=True)
    norm = pipe.normalizer
    if (norm.obs_dim, norm.act_dim) != (dataset.obs_dim, dataset.act_dim):
        raise ValueError(f"the pipeline in {saved} models obs_dim={norm.obs_dim}, act_dim={norm.act_dim}, but "
                         f"dataset {dataset.dataset_id!r} has obs_dim={dataset.obs_dim}, act_dim={dataset.act_dim}")
    return pipe


def load_or_train_trajectory_diffusion(dataset: OfflineDataset,
                                       cfg: TrajectoryDiffusionConfig) -> PolicyGuidedTrajectoryPipeline:
    """The pipeline saved under ``cfg.out_dir/pipeline`` if there is one (checked by
    :func:`load_trajectory_pipeline`, strict), else :func:`train_trajectory_diffusion`.

    Lets several benchmarks (fidelity, agents) share one trained model per dataset.
    """
    saved = Path(cfg.out_dir) / "pipeline"
    if not (saved / "model_index.json").exists():
        return train_trajectory_diffusion(dataset, cfg)
    return load_trajectory_pipeline(saved, dataset, strict=True)


def run_train_diffusion(cfg: TrajectoryDiffusionConfig) -> str:
    """``gendiff offline train-diffusion``: train on ``cfg.dataset_id`` and print the saved pipeline's folder."""
    ds = load_dataset(cfg.dataset_id)
    ds.require_continuous("the trajectory diffusion model")
    train_trajectory_diffusion(ds, cfg)
    path = str(Path(cfg.out_dir) / "pipeline")
    if is_main_process():
        print(json.dumps({"pipeline": path}))
    return path
