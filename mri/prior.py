"""Train an image prior on a folder of fastMRI-format files (real or synthetic).

The prior is a diffusers ``UNet2DModel`` over complex images stored as 2 channels (real, imag),
magnitudes normalised to [0, 1] per slice, trained for v-prediction (default) or epsilon prediction with a
DDIM scheduler (ADS samples with deterministic DDIM). Output folder: ``model/`` (EMA weights, safetensors),
``scheduler/``, ``checkpoint-*/``, ``train_log.jsonl``, ``config.yaml``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import diffusers
import torch
from diffusers import DDIMScheduler, SchedulerMixin, UNet2DModel
from torch import Tensor

from gendiff.config import check_literal_fields, check_numbers
from gendiff.io import LoadError, loading, resolve_device, seed_everything
from gendiff.models.unet2d import make_unet2d
from gendiff.mri.data import load_images
from gendiff.pipelines.ads import ActiveDiffusionSubsamplingPipeline
from gendiff.training import PRIOR_EMA_DECAY, TrainConfig, TrainResult, train_denoiser


@dataclass
class MRIPriorConfig:
    """Settings of ``gendiff mri train-prior`` (defaults mirrored in configs/mri_train_prior.yaml)."""

    data: str = ""  # folder of fastMRI-format .h5 files
    out: str = ""  # run folder: the trained pipeline and its checkpoints
    size: int = 64  # image side in pixels (slices are cropped to it)
    crop_mode: Literal["image", "kspace"] = "kspace"  # crop slices to size in image space or k-space
    challenge: Literal["singlecoil", "multicoil"] = "singlecoil"  # multicoil: coil-combined RSS images
    unet: Literal["tiny", "small", "base"] = "tiny"  # U-Net size
    steps: int = 3000  # training steps
    batch_size: int = 32  # slices per step
    lr: float = 2e-4  # learning rate
    ema_decay: float = PRIOR_EMA_DECAY  # decay of the exponential moving average of the weights
    checkpoint_every: int = 500  # steps between checkpoints (what --resume continues from)
    max_minutes: float | None = None  # wall-time budget (stops early, saves the model)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"  # accelerate autocast (GPU)
    # v-prediction keeps x0_hat clean at high noise, where ADS chooses its lines: with epsilon prediction
    # x0_hat = (x_t - sigma_t eps_hat) / alpha_t multiplies the network's error by sigma_t / alpha_t (~20 at
    # t = 780 of the linear schedule), so the particles' early estimates are dominated by white noise.
    prediction: Literal["epsilon", "v_prediction"] = "v_prediction"
    max_slices: int | None = None  # train on the first N slices only (None: all)
    # "flips": each slice also flipped left-right, up-down and both (4x the slices); "dihedral": also the
    # transposes (8x). For small real sets (benchmarks/ads/real); a flipped MR image is still an MR image.
    augment: Literal["none", "flips", "dihedral"] = "none"
    # start from a trained prior's weights (its model/ folder; same size and U-Net), e.g. to fine-tune the
    # phantom prior on a small real set (benchmarks/ads/real); None: random initialisation
    init: str | None = None
    seed: int = 0  # random seed
    resume: bool = False  # continue the run in --out from its latest checkpoint
    overwrite: bool = False  # replace an earlier run in --out (after the new run completes)
    train_timesteps: int = 1000  # diffusion timesteps of the training noise schedule

    def __post_init__(self) -> None:
        check_literal_fields(self)
        check_numbers(self, positive=("size", "steps", "batch_size", "lr", "checkpoint_every", "max_minutes",
                                      "max_slices", "train_timesteps"), fraction=("ema_decay",))


def make_scheduler(train_timesteps: int = 1000, prediction: str = "epsilon") -> DDIMScheduler:
    """The DDIM scheduler ADS priors are trained and sampled with (``prediction``: what the model predicts).

    x0 is clipped to [-1, 1]: images are normalised so that every magnitude is <= 1, hence so are the
    real and imaginary parts. Without the clip, deterministic DDIM from a small prior diverges (final
    image norms 10-30x the data's, measured on the 32 x 32 synthetic prior); with it, it does not.
    """
    return DDIMScheduler(num_train_timesteps=train_timesteps, prediction_type=prediction, clip_sample=True,
                         clip_sample_range=1.0)


def _init_from(model: UNet2DModel, path: Path) -> UNet2DModel:
    """``model`` with the weights of the prior at ``path`` (a run folder with model/, or model/ itself)."""
    folder = path / "model" if (path / "model").is_dir() else path
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"--init {path}: no trained model (model/config.json) there")
    init = UNet2DModel.from_pretrained(folder, use_safetensors=True)
    def norm(v):
        return list(v) if isinstance(v, tuple | list) else v

    diff = sorted(k for k in model.config if not k.startswith("_") and norm(init.config.get(k)) != norm(model.config[k]))
    if diff:
        raise ValueError(f"--init {path}: its U-Net differs from --unet / --size ({diff})")
    return init


def augment_images(images: Tensor, kind: str) -> Tensor:
    """[S, C, H, W] -> [A * S, C, H, W]: the slices and their flips (A = 4) or all 8 dihedral copies (A = 8)."""
    if kind == "none":
        return images
    if kind not in ("flips", "dihedral"):
        raise ValueError(f"augment must be 'none', 'flips' or 'dihedral', got {kind!r}")
    flips = [images, images.flip(-1), images.flip(-2), images.flip(-2, -1)]
    if kind == "dihedral":
        flips += [f.transpose(-2, -1) for f in flips]
    return torch.cat(flips)


def train_mri_prior(cfg: MRIPriorConfig, progress: bool = True) -> TrainResult:
    """Load every slice of ``cfg.data``, train a U-Net prior, save it to ``cfg.out``."""
    if not cfg.data or not cfg.out:
        raise ValueError("train-prior needs --data DIR (fastMRI .h5 files) and --out DIR")
    images, _ = load_images(cfg.data, crop=cfg.size, challenge=cfg.challenge, max_slices=cfg.max_slices,
                            crop_mode=cfg.crop_mode)
    images = augment_images(images, cfg.augment)
    in_channels = images.shape[1]
    seed_everything(cfg.seed)  # before the U-Net's random initial weights
    model = make_unet2d(cfg.unet, sample_size=cfg.size, in_channels=in_channels)
    if cfg.init:
        model = _init_from(model, Path(cfg.init))
    train_cfg = TrainConfig(
        steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, ema_decay=cfg.ema_decay,
        prediction=cfg.prediction, checkpoint_every=cfg.checkpoint_every, seed=cfg.seed,
        max_minutes=cfg.max_minutes, mixed_precision=cfg.mixed_precision,
    )
    return train_denoiser(model, images, make_scheduler(cfg.train_timesteps, cfg.prediction), train_cfg, cfg.out,
                          progress=progress, resume=cfg.resume, overwrite=cfg.overwrite, run_config=cfg)


def load_prior(path: str | Path, device: str = "cpu") -> ActiveDiffusionSubsamplingPipeline:
    """An ADS pipeline from a saved pipeline folder or a training run folder (model/ + scheduler/).

    Raises:
        FileNotFoundError: ``path`` is neither (a run killed before its end says so: resume it).
        LoadError: a broken or foreign file (weights, config.json, scheduler); one line naming it and the cause.
    """
    path, dev = Path(path), resolve_device(device)
    if (path / "model_index.json").exists():
        with loading(path, "the ADS pipeline"):
            return ActiveDiffusionSubsamplingPipeline.from_pretrained(path, use_safetensors=True).to(dev)
    if not (path / "model").is_dir() or not (path / "scheduler").is_dir():
        unfinished = " (it holds checkpoints of a run that did not finish: resume it with --resume)" \
            if any(path.glob("checkpoint-*")) else ""
        raise FileNotFoundError(f"{path} is neither a saved pipeline nor a training run (model/ + scheduler/)"
                                f"{unfinished}")
    with loading(path / "model", "the prior's U-Net"):
        unet = UNet2DModel.from_pretrained(path / "model", use_safetensors=True).eval()
    sched_file = path / "scheduler" / "scheduler_config.json"
    with loading(sched_file, "the prior's scheduler config"):
        cls_name = json.loads(sched_file.read_text()).get("_class_name")
    sched_cls = getattr(diffusers, cls_name, None) if isinstance(cls_name, str) else None
    if not (isinstance(sched_cls, type) and issubclass(sched_cls, SchedulerMixin)):
        raise LoadError(f"cannot load the prior's scheduler from {sched_file}: _class_name {cls_name!r} is not a "
                        "diffusers scheduler (e.g. DDIMScheduler)")
    with loading(path / "scheduler", "the prior's scheduler"):
        sched = sched_cls.from_pretrained(path / "scheduler")
    return ActiveDiffusionSubsamplingPipeline(unet, sched).to(dev)
