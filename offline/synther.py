"""SynthER (Lu et al. 2023, "Synthetic Experience Replay"): the unguided single-transition baseline.

1. Each transition becomes one flat vector x = [s, a, r, s', d] (d the termination flag), z-scored per
   feature over the dataset.
2. A residual-MLP denoiser (:class:`gendiff.models.ResidualMLPDenoiser`; the paper: width 2048, 6 blocks) is
   trained with EDM (:func:`gendiff.training.train_denoiser`, diffusers' ``EDMEulerScheduler``).
3. Sampling: :class:`gendiff.sampler.GuidedSampler` without guidance (128 steps in the paper); actions are
   clipped to the action box, d thresholded at 0.5. The result replaces or upsamples the real buffer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gendiff.models import ResidualMLPDenoiser
from gendiff.offline.diffusion import edm_scheduler
from gendiff.sampler import GuidedSampler
from gendiff.training import TrainConfig, train_denoiser

KEYS = ("obs", "act", "rew", "next_obs", "done")


@dataclass
class SynthERConfig:
    """SynthER settings (CPU-sized; the paper uses width 2048, depth 6, 100k steps, batch 256)."""

    width: int = 256
    depth: int = 3
    train_steps: int = 2000
    batch_size: int = 256
    lr: float = 3e-4
    num_inference_steps: int = 128
    seed: int = 0


class SynthER:
    """A trained SynthER generator: ``sample(n)`` returns transitions in environment units."""

    def __init__(self, model: ResidualMLPDenoiser, obs_dim: int, act_dim: int, mean: Tensor, std: Tensor,
                 low: np.ndarray, high: np.ndarray) -> None:
        self.model, self.scheduler = model.eval(), edm_scheduler()
        self.obs_dim, self.act_dim, self.mean, self.std = obs_dim, act_dim, mean, std
        self.low, self.high = torch.as_tensor(np.asarray(low)).float(), torch.as_tensor(np.asarray(high)).float()

    @staticmethod
    def flatten(tr: dict[str, Tensor]) -> Tensor:
        """Step 1: dict of transitions -> [N, 2 obs_dim + act_dim + 2]."""
        return torch.cat([tr["obs"], tr["act"], tr["rew"][:, None], tr["next_obs"], tr["done"][:, None]], dim=1)

    def unflatten(self, x: Tensor) -> dict[str, Tensor]:
        o, a = self.obs_dim, self.act_dim
        return {"obs": x[:, :o], "act": torch.maximum(torch.minimum(x[:, o:o + a], self.high), self.low),
                "rew": x[:, o + a], "next_obs": x[:, o + a + 1:2 * o + a + 1], "done": (x[:, -1] > 0.5).float()}

    @classmethod
    def fit(cls, transitions: dict[str, Tensor], low: np.ndarray, high: np.ndarray, cfg: SynthERConfig,
            out_dir: str | Path, progress: bool = False) -> SynthER:
        """Steps 1-2 on real transitions (obs, act, rew, next_obs, done)."""
        x = cls.flatten(transitions)
        mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
        model = ResidualMLPDenoiser(dim=x.shape[1], width=cfg.width, depth=cfg.depth)
        tcfg = TrainConfig(steps=cfg.train_steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                           checkpoint_every=cfg.train_steps, log_every=max(cfg.train_steps // 20, 1))
        res = train_denoiser(model, (x - mean) / std, edm_scheduler(), tcfg, out_dir, progress=progress,
                             overwrite=True)
        gen = cls(res.model, transitions["obs"].shape[1], transitions["act"].shape[1], mean, std, low, high)
        gen.save(out_dir)
        return gen

    @torch.no_grad()
    def sample(self, n: int, num_inference_steps: int = 128, generator: torch.Generator | None = None,
               chunk: int = 4096) -> dict[str, Tensor]:
        """Step 3: ``n`` synthetic transitions."""
        sampler = GuidedSampler(self.model, self.scheduler)
        parts = []
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            out = sampler((self.mean.shape[0],), m, 1, num_inference_steps, generator=generator)
            parts.append(out.sample[:, 0] * self.std + self.mean)
        return self.unflatten(torch.cat(parts))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        self.model.save_pretrained(path / "synther_model")
        meta = {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "mean": self.mean.tolist(),
                "std": self.std.tolist(), "low": self.low.tolist(), "high": self.high.tolist()}
        (path / "synther.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: str | Path) -> SynthER:
        path = Path(path)
        if not (path / "synther.json").is_file():
            raise FileNotFoundError(f"{path} holds no SynthER model (synther.json missing)")
        meta = json.loads((path / "synther.json").read_text())
        model = ResidualMLPDenoiser.from_pretrained(path / "synther_model", use_safetensors=True)
        return cls(model, meta["obs_dim"], meta["act_dim"], torch.tensor(meta["mean"]), torch.tensor(meta["std"]),
                   np.asarray(meta["low"]), np.asarray(meta["high"]))
