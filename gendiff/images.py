"""Image datasets for priors and subsampling studies: bundled ones (offline) or a folder of images.

- ``digits``: scikit-learn's 1,797 handwritten digits (8 x 8), resized to ``size``.
- ``faces``: scikit-image's ``lfw_subset`` (200 faces, 25 x 25), resized to ``size``.
- ``phantoms``: scikit-image's Shepp-Logan phantom under random rotations, scales and shifts.
- a folder path: every .png / .jpg / .jpeg / .bmp / .tif image in it, as greyscale, resized.
Images come back as float32 [S, 1, size, size] in [-1, 1] (the usual diffusion range).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from diffusers import DDIMScheduler
from skimage import data as skdata
from skimage import io, transform
from skimage.color import rgb2gray
from torch import Tensor

from gendiff.config import check_literal_fields, check_numbers
from gendiff.io import seed_everything
from gendiff.models.unet2d import make_unet2d
from gendiff.training import PRIOR_EMA_DECAY, TrainConfig, TrainResult, train_denoiser

BUNDLED = ("digits", "faces", "phantoms")
_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _resize(stack: np.ndarray, size: int) -> np.ndarray:
    return np.stack([transform.resize(im, (size, size), anti_aliasing=True, preserve_range=True) for im in stack])


def _to_unit_range(stack: np.ndarray) -> Tensor:
    lo = stack.min(axis=(1, 2), keepdims=True)
    hi = stack.max(axis=(1, 2), keepdims=True)
    x = (stack - lo) / np.maximum(hi - lo, 1e-8)
    return torch.from_numpy(2 * x - 1).float().unsqueeze(1)


def _phantoms(count: int, size: int, seed: int) -> np.ndarray:
    base = skdata.shepp_logan_phantom()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        im = transform.rotate(base, rng.uniform(-30, 30))
        im = transform.rescale(im, rng.uniform(0.7, 1.0), anti_aliasing=True)
        pad = base.shape[0] - im.shape[0]
        dx, dy = rng.integers(0, pad + 1, size=2)
        canvas = np.zeros_like(base)
        canvas[dy : dy + im.shape[0], dx : dx + im.shape[1]] = im
        out.append(transform.resize(canvas, (size, size), anti_aliasing=True))
    return np.stack(out)


def _folder(path: Path, size: int) -> np.ndarray:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in _SUFFIXES)
    if not files:
        raise ValueError(f"{path} holds no images ({', '.join(sorted(_SUFFIXES))})")
    ims = []
    for f in files:
        try:
            im = io.imread(f)
        except Exception as err:  # skimage raises many types for unreadable files
            raise ValueError(f"cannot read image {f}: {err}") from err
        if im.ndim == 3:
            im = rgb2gray(im[..., :3])
        ims.append(transform.resize(im.astype(np.float64), (size, size), anti_aliasing=True))
    return np.stack(ims)


def load_image_dataset(name: str, size: int = 16, count: int | None = None, seed: int = 0) -> Tensor:
    """Images [S, 1, size, size] in [-1, 1] from a bundled set or a folder (see the module docstring)."""
    if size < 4:
        raise ValueError(f"image size must be >= 4, got {size}")
    if name == "digits":
        from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

        stack = _resize(load_digits().images.astype(np.float64), size)
    elif name == "faces":
        stack = _resize(skdata.lfw_subset().astype(np.float64), size)
    elif name == "phantoms":
        stack = _phantoms(count or 256, size, seed)
    else:
        path = Path(name)
        if not path.is_dir():
            raise ValueError(f"unknown image data {name!r}: use one of {BUNDLED} or a folder of images")
        stack = _folder(path, size)
    images = _to_unit_range(stack)
    return images[:count] if count is not None else images


def train_test_split(images: Tensor, test: int) -> tuple[Tensor, Tensor]:
    """The last ``test`` images are held out (deterministic)."""
    if not 0 < test < images.shape[0]:
        raise ValueError(f"test size must be between 1 and {images.shape[0] - 1}, got {test}")
    return images[:-test], images[-test:]


@dataclass
class ImagePriorConfig:
    """Settings of ``gendiff train-prior`` (defaults mirrored in configs/train_prior.yaml)."""

    data: str = "digits"  # digits, faces or phantoms (bundled) or a folder of images
    out: str = ""  # run folder: the trained pipeline and its checkpoints
    size: int = 16  # image side in pixels
    test: int = 97  # images held out for testing (the last ones)
    unet: Literal["tiny", "small", "base"] = "tiny"  # U-Net size
    steps: int = 2000  # training steps
    batch_size: int = 64  # images per step
    lr: float = 2e-4  # learning rate
    ema_decay: float = PRIOR_EMA_DECAY  # decay of the exponential moving average of the weights
    checkpoint_every: int = 500  # steps between checkpoints (what --resume continues from)
    max_minutes: float | None = None  # wall-time budget (stops early, saves the model)
    seed: int = 0  # random seed
    resume: bool = False  # continue the run in --out from its latest checkpoint
    overwrite: bool = False  # replace an earlier run in --out (after the new run completes)

    def __post_init__(self) -> None:
        check_literal_fields(self)
        check_numbers(self, positive=("size", "steps", "batch_size", "lr", "checkpoint_every", "max_minutes"),
                      nonnegative=("test",), fraction=("ema_decay",))


def train_image_prior(cfg: ImagePriorConfig, progress: bool = True) -> TrainResult:
    """Train a U-Net prior (epsilon, DDIM) on all but the last ``cfg.test`` images of ``cfg.data``."""
    if not cfg.out:
        raise ValueError("train-prior needs --out DIR")
    images = load_image_dataset(cfg.data, cfg.size, seed=cfg.seed)
    train, _ = train_test_split(images, cfg.test) if cfg.test else (images, None)
    seed_everything(cfg.seed)  # before the U-Net's random initial weights
    model = make_unet2d(cfg.unet, sample_size=cfg.size, in_channels=1)
    sched = DDIMScheduler(num_train_timesteps=1000, prediction_type="epsilon", clip_sample=True)  # data in [-1, 1]
    tcfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, ema_decay=cfg.ema_decay,
                       prediction="epsilon", checkpoint_every=cfg.checkpoint_every, seed=cfg.seed,
                       max_minutes=cfg.max_minutes)
    return train_denoiser(model, train, sched, tcfg, cfg.out, progress=progress, resume=cfg.resume,
                          overwrite=cfg.overwrite, run_config=cfg)
