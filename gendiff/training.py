"""Denoiser training for every scheduler family: epsilon / v / x0 prediction, flow matching and EDM.

One loss per noise family (told apart by :func:`gendiff.parameterization.noise_family`, never by class):

- ``vp`` / ``ve`` (DDPM, DDIM, Euler, ...; Ho et al. 2020 eq. 14): t ~ U{0..T-1},
  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (exactly ``DDPMScheduler.add_noise``); target eps,
  v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (``get_velocity``, Salimans & Ho 2022) or x0.
  Euler-type schedulers feed the model x_t / sqrt(sigma^2 + 1), the same variance-preserving sample.
- ``flow`` (rectified flow / flow matching, Lipman et al. 2023; ``FlowMatchEulerDiscreteScheduler``):
  sigma ~ U(0, 1) or logit-normal (Esser et al. 2024), x_t = sigma eps + (1 - sigma) x0, the model sees
  t = sigma * num_train_timesteps, target u = eps - x0.
- ``edm`` (Karras et al. 2022, eq. 7-8 and Table 1): ln sigma ~ N(P_mean, P_std^2), x_t = x0 + sigma eps,
  D(x_t) = c_skip x_t + c_out F(c_in x_t, c_noise) through the scheduler's own ``precondition_*``,
  loss lambda(sigma) ||D - x0||^2 with lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2.

The loop uses accelerate, AdamW with linear warm-up, an EMA of the weights, atomic checkpoints
(out_dir/checkpoint-<step>/) that ``resume=True`` continues exactly, and a train_log.jsonl.

Several processes (``accelerate launch``; README "Scaling out"): ``TrainConfig.batch_size`` is the global batch.
Every process draws the same batch indices and the same noise for all ``batch_size`` rows from one shared random
stream and computes the loss on its own ``batch_size / N`` rows; DDP averages the gradients, so N processes take
the step one process would take on the whole batch (equal up to the order of float additions), and a checkpoint
resumes under any N that divides the batch. The main process alone writes checkpoints, logs, the final model and
the progress bar; the logged loss is the mean over all processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from gendiff.checkpoints import (
    CKPT_PREFIX,
    TMP_PREFIX,
    CheckpointError,
    atomic_dir,
    check_resume_config,
    finish_run,
    list_checkpoints,
    log_step,
    prepare_out_dir,
)
from gendiff.config import load_yaml, save_config, to_dict
from gendiff.io import error_cause, staging_dir
from gendiff.models import call_denoiser
from gendiff.parameterization import check_prediction, noise_family
from gendiff.train_state import EMA, Batches, RngState

__all__ = [
    "CheckpointError", "Shard", "TrainConfig", "TrainResult", "denoising_loss", "list_checkpoints", "noise_family",
    "train_denoiser",
]


PRIOR_EMA_DECAY = 0.995
"""The EMA decay every training command uses (``gendiff train-prior``, ``gendiff mri train-prior``, ``gendiff offline
train-diffusion``): their configs default to it and pass it to :class:`TrainConfig`, whose own 0.999 therefore only
applies to direct library calls (and the tests) that leave ``ema_decay`` out. A horizon of ~200 steps, for runs of
a few thousand steps (0.999: ~1,000)."""


@dataclass
class TrainConfig:
    """Denoiser training settings (defaults suit a small CPU run; the YAML files override them).

    ``prediction`` None takes the scheduler's own prediction type; a value that disagrees with the
    scheduler raises (the sampler reads the scheduler's, so they must match).
    """

    steps: int = 1000
    batch_size: int = 64  # the global batch: rows per optimisation step over all processes
    lr: float = 2e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999  # library default; the training commands pass PRIOR_EMA_DECAY (0.995)
    prediction: Literal["epsilon", "v_prediction", "sample", "flow"] | None = None
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    grad_clip: float | None = 1.0
    warmup: int = 0
    flow_time_sampling: Literal["uniform", "logit_normal"] = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    edm_p_mean: float = -1.2
    edm_p_std: float = 1.2
    checkpoints_keep: int | None = 3
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    max_minutes: float | None = None  # wall-time budget: stop early (checkpoint + model) when it runs out

    def __post_init__(self) -> None:
        positive = {k: getattr(self, k) for k in ("steps", "batch_size", "checkpoint_every", "log_every")}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup < 0:
            raise ValueError(f"TrainConfig: need lr > 0, weight_decay >= 0, warmup >= 0 (got {self.lr}, "
                             f"{self.weight_decay}, {self.warmup})")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be positive or None, got {self.grad_clip}")
        if self.checkpoints_keep is not None and self.checkpoints_keep < 1:
            raise ValueError(f"TrainConfig.checkpoints_keep must be >= 1 or None, got {self.checkpoints_keep}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"TrainConfig.max_minutes must be positive or None, got {self.max_minutes}")


@dataclass
class TrainResult:
    """What :func:`train_denoiser` returns.

    Attributes:
        model: the trained model holding the EMA weights, in eval mode.
        global_step: the last optimisation step done (config.steps unless max_minutes ran out).
        losses: (step, mean loss) pairs logged by this call.
        out_dir / model_dir / log_path: where the run, the final model and the loss log live.
        resumed_from: the checkpoint step this call started from (0 for a fresh run).
    """

    model: nn.Module
    global_step: int
    losses: list[tuple[int, float]]
    out_dir: Path
    model_dir: Path
    log_path: Path
    resumed_from: int = 0



# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """This process's rows ``start:stop`` of a global batch of ``total`` rows (the whole batch: 0, total, total)."""

    start: int
    stop: int
    total: int

    @classmethod
    def of(cls, total: int, index: int, count: int) -> Shard:
        """Process ``index`` of ``count``'s equal share of ``total`` rows (``count`` must divide ``total``)."""
        if total % count:
            raise ValueError(f"the batch size {total} must be a multiple of the number of processes {count} "
                             f"(each process computes batch_size / {count} rows)")
        size = total // count
        return cls(index * size, (index + 1) * size, total)

    def draw(self, fn, *shape: int) -> Tensor:
        """``fn((total, *shape))`` drawn for the whole batch (the same stream in every process), this shard's rows."""
        out = fn((self.total, *shape))
        return out if (self.start, self.stop) == (0, self.total) else out[self.start : self.stop]


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    """[M] -> [M, 1, ..., 1] matching x's rank."""
    return v.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def denoising_loss(
    model: nn.Module,
    x0: Tensor,
    scheduler: Any,
    config: TrainConfig | None = None,
    cond: Tensor | None = None,
    generator: torch.Generator | None = None,
    shard: Shard | None = None,
) -> Tensor:
    """Monte-Carlo denoising loss of ``model`` on clean data ``x0`` for ``scheduler``'s family.

    Args:
        model: any denoiser accepted by :func:`gendiff.models.call_denoiser`.
        x0: [M, *shape] clean samples (with ``shard``: this process's M = stop - start rows of the global batch).
        scheduler: a diffusers scheduler (DDPM/DDIM/Euler, FlowMatchEuler or EDM family).
        config: noise-level sampling options and the expected prediction type (defaults if None).
        cond: [M, D] conditioning or None.
        generator: draws t / sigma and eps (on x0's device).
        shard: the rows of a global batch that ``x0`` holds: t / sigma and eps are drawn for all ``total`` rows
            (so every process advances the same random stream) and this shard's rows are used. None: x0 is the batch.
    Returns:
        Scalar loss (the mean over x0's rows).
    """
    config = config or TrainConfig()
    family, pred = noise_family(scheduler), check_prediction(scheduler, config.prediction)
    m, dev = x0.shape[0], x0.device
    shard = shard or Shard(0, m, m)
    if shard.stop - shard.start != m:
        raise ValueError(f"x0 has {m} rows but the shard is rows {shard.start}:{shard.stop} of {shard.total}")
    eps = shard.draw(lambda size: torch.randn(size, generator=generator, device=dev, dtype=x0.dtype), *x0.shape[1:])
    if family in ("vp", "ve"):
        abar = scheduler.alphas_cumprod.to(dev, torch.float32)
        t = shard.draw(lambda size: torch.randint(0, abar.shape[0], size, generator=generator, device=dev))
        a, s = _bcast(abar[t].sqrt(), x0), _bcast((1 - abar[t]).sqrt(), x0)
        x_t = a * x0 + s * eps  # 1. Ho et al. eq. 4
        target = {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}[pred]
        return nn.functional.mse_loss(call_denoiser(model, x_t, t, cond).float(), target.float())
    if family == "flow":
        if config.flow_time_sampling == "uniform":
            sigma = shard.draw(lambda size: torch.rand(size, generator=generator, device=dev))
        else:  # logit-normal (Esser et al. 2024, eq. 19)
            sigma = torch.sigmoid(shard.draw(lambda size: torch.randn(size, generator=generator, device=dev))
                                  * config.logit_std + config.logit_mean)
        x_t = _bcast(sigma, x0) * eps + (1 - _bcast(sigma, x0)) * x0  # 2. linear interpolation path
        out = call_denoiser(model, x_t, sigma * scheduler.config.num_train_timesteps, cond)
        return nn.functional.mse_loss(out.float(), (eps - x0).float())
    # 3. EDM: log-normal sigma, the scheduler's preconditioning, lambda-weighted x0 loss
    sigma = torch.exp(shard.draw(lambda size: torch.randn(size, generator=generator, device=dev)) * config.edm_p_std
                      + config.edm_p_mean)
    sb, sd = _bcast(sigma, x0), float(scheduler.config.sigma_data)
    x_t = x0 + sb * eps
    out = call_denoiser(model, scheduler.precondition_inputs(x_t, sb), scheduler.precondition_noise(sigma), cond)
    denoised = scheduler.precondition_outputs(x_t, out, sb)
    weight = (sb**2 + sd**2) / (sb * sd) ** 2
    return (weight * (denoised.float() - x0.float()) ** 2).mean()


class _Trainer:
    """State of one training run: model, optimiser, EMA, random state, output folder."""

    def __init__(self, model: nn.Module, scheduler: Any, config: TrainConfig, out: Path, acc: Accelerator):
        self.model, self.scheduler, self.config, self.out, self.acc = model, scheduler, config, out, acc
        self.model.to(acc.device).train()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        warm = config.warmup
        self.lr_sched = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0
        )
        self.ema = EMA(model, config.ema_decay)
        self.rng = RngState(config.seed, acc.device)  # the same stream in every process (module docstring)
        self.shard = Shard.of(config.batch_size, acc.process_index, acc.num_processes)
        self.log_path = out / "train_log.jsonl"

    def save_checkpoint(self, step: int) -> None:
        """Write out/checkpoint-<step>/ atomically: model, EMA, optimiser, LR schedule, RNG, step."""
        final, acc = self.out / f"{CKPT_PREFIX}{step}", self.acc
        tmp = final.parent / f"{TMP_PREFIX}{final.name}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        acc.wait_for_everyone()
        torch.save(self.rng.state_dict(), tmp / f"rng_{acc.process_index}.pt")
        if acc.is_main_process:
            self.model.save_pretrained(tmp / "model")
            save_file(self.ema.state_dict(), tmp / "ema.safetensors")
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.lr_sched.state_dict(), tmp / "lr_scheduler.pt")
            state = {"step": step, "config": dataclasses.asdict(self.config)}
            (tmp / "state.json").write_text(json.dumps(state, indent=1))
        acc.wait_for_everyone()
        if acc.is_main_process:
            os.replace(tmp, final)
            keep = self.config.checkpoints_keep
            for old in list_checkpoints(self.out)[: -keep if keep else 0]:
                shutil.rmtree(old)
        acc.wait_for_everyone()

    def load_checkpoint(self, path: Path) -> int:
        """Restore everything :meth:`save_checkpoint` wrote; returns the checkpoint's step."""
        try:
            state = json.loads((path / "state.json").read_text())
            step = int(state["step"])
            self.model.load_state_dict(load_file(path / "model" / SAFETENSORS_WEIGHTS_NAME))
            self.ema.load_state_dict(load_file(path / "ema.safetensors"))
            self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
            self.lr_sched.load_state_dict(torch.load(path / "lr_scheduler.pt", weights_only=True))
            rng = path / f"rng_{self.acc.process_index}.pt"  # the streams are shared: a checkpoint of fewer
            rng = rng if rng.exists() else path / "rng_0.pt"  # processes resumes from the main process's state
            self.rng.load_state_dict(torch.load(rng, weights_only=True))
        except Exception as e:  # every way a folder can be broken ends here, with its name
            raise CheckpointError(
                f"cannot resume from {path}: {error_cause(e)}. Delete this folder to resume from an "
                "earlier checkpoint, or start over with --overwrite (overwrite=True)"
            ) from None
        check_resume_config(state.get("config", {}), dataclasses.asdict(self.config), path)
        if step > self.config.steps:
            raise ValueError(f"{path} is at step {step}, past TrainConfig.steps={self.config.steps}")
        if self.acc.is_main_process and self.log_path.exists():  # drop log lines written after the save
            lines = [ln for ln in self.log_path.read_text().splitlines() if log_step(ln) <= step]
            self.log_path.write_text("".join(ln + "\n" for ln in lines))
        return step

    def log(self, step: int, values: list[float]) -> float:
        loss = sum(values) / len(values)
        if self.acc.is_main_process:
            with self.log_path.open("a") as f:
                f.write(json.dumps({"step": step, "loss": loss, "lr": self.lr_sched.get_last_lr()[0]}) + "\n")
        return loss



# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------
def _run_steps(tr: _Trainer, batches: Batches, start: int, progress: bool) -> tuple[list[tuple[int, float]], int]:
    """Optimisation steps start+1 .. config.steps (or until ``max_minutes`` runs out).

    Returns:
        The logged (step, loss) pairs and the last step done (checkpointed).
    """
    cfg, acc = tr.config, tr.acc
    deadline = math.inf if cfg.max_minutes is None else time.monotonic() + 60.0 * cfg.max_minutes
    step = start
    model, optimizer = acc.prepare(tr.model, tr.optimizer)
    logged, window = [], []
    bar = tqdm(total=cfg.steps, initial=start, desc="train", disable=not (progress and acc.is_main_process))
    for step in range(start + 1, cfg.steps + 1):
        # 1. a minibatch and the family's denoising loss (module docstring)
        x0, c = batches.sample(cfg.batch_size, tr.rng.index, tr.shard.start, tr.shard.stop)
        with acc.autocast():
            loss = denoising_loss(model, x0, tr.scheduler, cfg, c, tr.rng.noise, tr.shard)
        # the global batch's loss (equal shards: the mean of the shards' means); every process sees the same value
        value = (acc.reduce(loss.detach(), "mean") if acc.num_processes > 1 else loss).item()
        if not math.isfinite(value):
            bar.close()  # the message below then starts on a line of its own
            raise FloatingPointError(
                f"training loss is {value} at step {step}; lower the learning rate, enable grad_clip or check "
                "the data scale"
            )
        # 2. AdamW step with optional gradient clipping, LR warm-up, EMA update
        acc.backward(loss)
        if cfg.grad_clip is not None and acc.sync_gradients:
            acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        tr.lr_sched.step()
        optimizer.zero_grad(set_to_none=True)
        tr.ema.update(tr.model, step)
        # 3. log and checkpoint
        window.append(value)
        out_of_time = time.monotonic() >= deadline
        if step % cfg.log_every == 0 or step == cfg.steps or out_of_time:
            logged.append((step, tr.log(step, window)))
            bar.set_postfix(loss=f"{logged[-1][1]:.4g}")
            window = []
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
            tr.save_checkpoint(step)
        bar.update(1)
        if out_of_time:
            warnings.warn(f"max_minutes={cfg.max_minutes} reached: stopped at step {step} of {cfg.steps} "
                          "(resume continues from there)", stacklevel=2)
            break
    bar.close()
    return logged, step


def train_denoiser(
    model: nn.Module,
    data: Tensor | Dataset,
    scheduler: Any,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    cond: Tensor | None = None,
    progress: bool = True,
    *,
    resume: bool = False,
    overwrite: bool = False,
    run_config: Any = None,
) -> TrainResult:
    """Train a denoiser for ``scheduler``'s noise family and save it diffusers-style.

    Args:
        model: a diffusers ``ModelMixin`` denoiser (UNet2DModel or a gendiff model); trained in place.
        data: [N, *shape] clean samples, or a Dataset whose items are x or (x, cond).
        scheduler: the diffusers scheduler the model will sample with; saved beside the model.
        config: training settings.
        out_dir: run folder: checkpoint-<step>/, model/ (EMA weights), scheduler/, train_log.jsonl.
        cond: [N, D] conditioning rows for tensor ``data``, or None.
        progress: show a tqdm progress bar.
        resume: continue from the latest complete checkpoint in ``out_dir``.
        overwrite: replace an earlier run in ``out_dir`` (otherwise an earlier run is an error). The new run is
            built in a staging folder beside it and swapped in only when complete: a failed or killed run leaves
            the earlier one as it was.
        run_config: the application's config dataclass: written to ``out_dir/config.yaml`` when the run starts;
            a resumed run must match the saved one (:func:`gendiff.checkpoints.check_resume_config`).
    Returns:
        :class:`TrainResult` whose ``model`` holds the EMA weights.
    Raises:
        ValueError: bad config/data, a prediction type the scheduler does not use, or a resume with other settings.
        FileExistsError / FileNotFoundError: an earlier run without resume/overwrite; nothing to resume.
        CheckpointError: the latest checkpoint is corrupt or does not fit the model.
        FloatingPointError: a non-finite loss (the message names the step).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"{type(model).__name__} has no save_pretrained; use a diffusers ModelMixin model")
    check_prediction(scheduler, config.prediction)  # fail (unknown family or mismatch) before touching out_dir
    acc, out = Accelerator(mixed_precision=config.mixed_precision), Path(out_dir)
    Shard.of(config.batch_size, acc.process_index, acc.num_processes)  # a batch N processes cannot share: fail first
    batches = Batches(data, cond, acc.device)
    if resume and run_config is not None and (out / "config.yaml").is_file():
        check_resume_config(load_yaml(out / "config.yaml"), to_dict(run_config), out)
    if acc.is_main_process:
        work = prepare_out_dir(out, resume, overwrite)
        if run_config is not None:
            save_config(run_config, work)
    acc.wait_for_everyone()
    work = staging_dir(out) if staging_dir(out).is_dir() else out  # every process trains in the same folder
    torch.manual_seed(config.seed)
    tr = _Trainer(model, scheduler, config, work, acc)
    try:
        start = tr.load_checkpoint(list_checkpoints(work)[-1]) if resume else 0
        logged, last_step = _run_steps(tr, batches, start, progress)
    except BaseException:
        if work != out and acc.is_main_process:  # a failed replacement never counted: the earlier run stays
            shutil.rmtree(work, ignore_errors=True)
        raise
    # 4. final model = EMA weights, saved with the scheduler it was trained for; a replacement run is swapped in
    tr.ema.copy_to(tr.model)
    tr.model.eval()
    if acc.is_main_process:
        atomic_dir(work / "model", lambda d: tr.model.save_pretrained(d))
        atomic_dir(work / "scheduler", lambda d: scheduler.save_pretrained(d))
        finish_run(work, out)
    acc.wait_for_everyone()
    return TrainResult(tr.model, last_step, logged, out, out / "model", out / "train_log.jsonl", start)
