"""Reconstruct held-out targets with every acquisition strategy and compare them.

Used by ``gendiff mri benchmark`` (k-space lines of complex MRI images) and ``gendiff images benchmark``
(pixels or columns of real images). Every strategy runs the same ADS pipeline with the same prior,
guidance, particles, steps and random numbers; only the mask differs (``ads`` chooses it online).

Steps per (acceleration or budget, strategy):
  1. the strategy builds a mask from the problem's shape (and the training set for data_variance);
  2. the pipeline reconstructs each batch of targets through a MeasurementOracle;
  2b. optionally a classical reconstructor (mri/reconstruction.py: zero-filled, CS-TV, L1-wavelet) reconstructs
      the same targets from the same masks (ADS: its final masks), so mask and reconstructor are two axes;
  3. per-slice SSIM / PSNR / NMSE / MAE against the target magnitude (mri/metrics.py);
  4. mean, bootstrap 95% interval, and paired differences against ``ads`` with DPS.

Under ``accelerate launch`` the batches of Step 2 and the slices of Step 2b are shared round robin over the
processes and gathered in order (gendiff/distributed.py): every batch keeps its own generator, so the table is
the one a single process writes (only the timings differ).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from gendiff.distributed import gather_by_index, is_main_process, my_items
from gendiff.io import atomic_write_text
from gendiff.mri.metrics import slice_metrics
from gendiff.mri.reconstruction import RECONSTRUCTORS, ReconSettings, reconstruct
from gendiff.mri.strategies import ACTIVE, StrategyContext, line_variance, make_mask
from gendiff.operators import MeasurementOracle, make_operator
from gendiff.pipelines.ads import ADS_DEFAULTS, ActiveDiffusionSubsamplingPipeline
from gendiff.stats import bootstrap_ci

METRICS = ("ssim", "psnr", "nmse", "mae")


@dataclass
class RunSettings:
    """Reconstruction settings shared by every strategy of one benchmark, named as the pipeline's keywords.

    The pipeline's settings default to :data:`gendiff.pipelines.ads.ADS_DEFAULTS`; the benchmark's own settings
    (``batch_slices``, ``seed``, ``bootstrap``, ``precision``) have their one home here, and the benchmark configs
    (gendiff.mri.study) read them from here. Built from a config with :meth:`from_config`.
    """

    measurement: str = "kspace_line"
    num_particles: int = ADS_DEFAULTS.num_particles
    num_inference_steps: int = ADS_DEFAULTS.num_inference_steps
    acquisition_window: tuple[float, float] = ADS_DEFAULTS.acquisition_window
    sigma: float = ADS_DEFAULTS.sigma
    lookahead_steps: int = ADS_DEFAULTS.lookahead_steps  # ADS only: evaluations of the look-ahead path its scores use
    guidance: str = ADS_DEFAULTS.guidance
    guidance_scale: float = ADS_DEFAULTS.guidance_scale
    batch_slices: int = 4
    seed: int = 0
    bootstrap: int = 2000
    precision: str = "fp32"  # "bf16": the sampler runs under torch.autocast(bfloat16); metrics in float32

    @classmethod
    def from_config(cls, cfg: object, measurement: str) -> RunSettings:
        """The settings for ``measurement`` held by ``cfg``, a config with these field names (``ReconstructionConfig``).

        Every field but ``measurement`` is read from ``cfg`` (a list window becomes a tuple): nothing is defaulted
        here, so a config and its run cannot disagree.
        """
        values = {f.name: getattr(cfg, f.name) for f in fields(cls) if f.name != "measurement"}
        values["acquisition_window"] = tuple(values["acquisition_window"])
        return cls(measurement=measurement, **values)


@dataclass
class StrategyResult:
    """One strategy at one budget: per-slice metrics, reconstructions and cost."""

    name: str
    budget: int
    metrics: dict[str, np.ndarray]
    zero_filled: dict[str, np.ndarray]
    recon: Tensor  # [S, H, W] magnitudes (or [S, H, W] for 1-channel images)
    masks: Tensor  # [S, K]
    order: Tensor | None  # [S, A] for ads
    seconds_per_slice: float
    nfe_per_slice: int
    nbe_per_slice: int
    extra: dict = field(default_factory=dict)
    reconstructor: str = "dps"


def magnitude_image(x: Tensor) -> Tensor:
    """[..., C, H, W] -> [..., H, W]: complex magnitude for C = 2, the channel itself for C = 1."""
    return x.pow(2).sum(-3).sqrt() if x.shape[-3] == 2 else x[..., 0, :, :]


def _batch_mask(tgt: Tensor, name: str, budget: int, cfg: RunSettings, train_images: Tensor | None, i: int,
                fixed_masks: Tensor | None, s: int):
    """Step 1 for batch ``i`` (starting at slice ``s``): (operator, generator, mask or None for ads)."""
    op = make_operator(cfg.measurement, tuple(tgt.shape[1:]), tgt.shape[0])
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + i)  # same noise for every strategy
    ctx = StrategyContext(op, cfg.measurement, budget, tgt.shape[0], generator=gen, train_images=train_images)
    op.to(tgt.device)
    mask = make_mask(name, ctx) if fixed_masks is None else fixed_masks[s : s + cfg.batch_slices]
    return op, gen, mask


def run_strategy(
    pipe: ActiveDiffusionSubsamplingPipeline, targets: Tensor, name: str, budget: int, cfg: RunSettings,
    train_images: Tensor | None = None, progress: bool = True, fixed_masks: Tensor | None = None,
    dps: bool = True,
) -> StrategyResult:
    """Steps 1-3 for one strategy over all ``targets`` [S, C, H, W].

    ``fixed_masks`` [S, K]: optional masks given up front (e.g. another run's final ADS masks); Step 1 is
    then skipped and ``name`` only labels the result. The noise is the same as for a strategy that draws no
    random numbers for its mask (ads, equispaced, data_variance): random masks consume the batch's generator.
    ``dps=False`` (fixed masks only): Step 1 alone; the result holds the masks (the very masks a DPS run
    draws) and ``recon=None``, for the classical reconstructors.
    """
    if not dps and name in ACTIVE and fixed_masks is None:
        raise ValueError("ads chooses its mask while reconstructing: it needs the DPS run")
    done: dict[int, dict] = {}  # batch index -> this process's results (CPU tensors)
    start = time.perf_counter()
    batches = range(0, targets.shape[0], cfg.batch_slices)
    mine = my_items(len(batches))  # all of them in one process
    for i in tqdm(mine, desc=f"{name} @ {budget}", disable=not (progress and is_main_process()), leave=False):
        s = batches[i]
        tgt = targets[s : s + cfg.batch_slices].to(pipe.unet.device)
        op, gen, mask = _batch_mask(tgt, name, budget, cfg, train_images, i, fixed_masks, s)  # Step 1
        oracle = MeasurementOracle(tgt, op)
        if not dps:
            zf_op = op.with_mask(mask.to(tgt.device))
            done[i] = {"mask": mask.cpu(), "zf": magnitude_image(zf_op.adjoint(oracle.measure_mask(zf_op.mask))).cpu()}
            continue
        lpv = line_variance(op, train_images.to(tgt.device)) if name == "ads_total_variance" else None
        with torch.autocast(tgt.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            out = pipe(oracle=oracle, mask=mask, budget=None if mask is not None else budget,
                       num_particles=cfg.num_particles, num_inference_steps=cfg.num_inference_steps,
                       acquisition_window=cfg.acquisition_window, sigma=cfg.sigma, guidance=cfg.guidance,
                       guidance_scale=cfg.guidance_scale, generator=gen, lookahead_steps=cfg.lookahead_steps,
                       line_prior_variance=lpv)
        mag = out.magnitude if out.magnitude is not None else magnitude_image(out.reconstruction)
        zf_op = op.with_mask(out.mask.to(tgt.device))
        done[i] = {"recon": mag.float().cpu(), "mask": out.mask.cpu(), "order": out.order.cpu(),
                   "zf": magnitude_image(zf_op.adjoint(oracle.measure_mask(zf_op.mask))).cpu(),
                   "nfe": out.nfe * cfg.num_particles, "nbe": out.nbe * cfg.num_particles}
    parts = gather_by_index(done)  # every batch, in order, in every process
    seconds = (time.perf_counter() - start) / targets.shape[0]
    truth = magnitude_image(targets.cpu()).numpy()
    recon = torch.cat([p["recon"] for p in parts]) if dps else None
    return StrategyResult(
        name=name, budget=budget, metrics=slice_metrics(truth, recon.numpy()) if recon is not None else {},  # Step 3
        zero_filled=slice_metrics(truth, torch.cat([p["zf"] for p in parts]).numpy()), recon=recon,
        masks=torch.cat([p["mask"] for p in parts]),
        order=torch.cat([p["order"] for p in parts]) if name in ACTIVE and dps else None, seconds_per_slice=seconds,
        nfe_per_slice=parts[-1].get("nfe", 0), nbe_per_slice=parts[-1].get("nbe", 0),
    )


def mask_adaptivity(orders: Tensor, num_candidates: int) -> dict:
    """How much ADS's final masks differ between slices, from its acquisition orders ``[S, A]``.

    Returns ``pairwise_lines_differing`` (mean over slice pairs of the number of lines in one mask and not the
    other: 0 when ADS picks one fixed mask), the same as a fraction of the budget, ``distinct_masks``,
    ``modal_mask_share`` (share of slices whose mask is the most common one) and ``line_frequency`` [K] (share
    of slices that measured each line). A fixed mask gives 0 / 0 / 1 / 1.0.
    """
    s, a = orders.shape
    masks = torch.zeros(s, num_candidates, dtype=torch.bool)
    masks[torch.arange(s)[:, None], orders] = True
    m = masks.float()
    inter = m @ m.T  # [S, S] lines in common
    diff = (a - inter)[~torch.eye(s, dtype=torch.bool)]
    keys = ["".join("1" if v else "0" for v in row.tolist()) for row in masks]
    modal = max(set(keys), key=keys.count)
    return {"pairwise_lines_differing": float(diff.mean()) if s > 1 else 0.0,
            "pairwise_fraction_differing": float(diff.mean()) / a if s > 1 else 0.0,
            "distinct_masks": len(set(keys)), "modal_mask_share": keys.count(modal) / s,
            "line_frequency": m.mean(0).tolist()}


def check_reconstructors(names: tuple[str, ...] | list[str], kind: str) -> None:
    """Raise before any reconstruction if a reconstructor is unknown or not defined for ``kind``."""
    for r in names:
        if r not in RECONSTRUCTORS:
            raise ValueError(f"unknown reconstructor {r!r}; expected one of {list(RECONSTRUCTORS)}")
        if r != "dps" and kind != "kspace_line":
            raise ValueError(f"reconstructor {r!r} works on k-space lines only, not {kind!r} measurements")


def figure_rows(results: list[StrategyResult]) -> list[StrategyResult]:
    """The rows a figure shows: every DPS row, and each other reconstructor on its best strategy (mean SSIM)."""
    rows = [r for r in results if r.reconstructor == "dps"]
    for name in dict.fromkeys(r.reconstructor for r in results if r.reconstructor != "dps"):
        rows.append(max((r for r in results if r.reconstructor == name), key=lambda r: r.metrics["ssim"].mean()))
    return rows


def run_reconstructor(targets: Tensor, base: StrategyResult, reconstructor: str,
                      settings: ReconSettings | None = None) -> StrategyResult:
    """Step 2b: reconstruct ``targets [S, C, H, W]`` from ``base``'s masks with a classical reconstructor."""
    start = time.perf_counter()
    mine = my_items(targets.shape[0])  # slices round robin over the processes (all of them in one)
    part = reconstruct(reconstructor, targets.cpu()[mine], base.masks.cpu()[mine], settings) if mine else []
    recon = torch.stack(gather_by_index(dict(zip(mine, part, strict=True))))
    seconds = (time.perf_counter() - start) / targets.shape[0]
    truth = magnitude_image(targets.cpu()).numpy()
    return StrategyResult(
        name=base.name, budget=base.budget, metrics=slice_metrics(truth, recon.numpy()),
        zero_filled=base.zero_filled, recon=recon, masks=base.masks, order=None, seconds_per_slice=seconds,
        nfe_per_slice=0, nbe_per_slice=0, reconstructor=reconstructor,
    )


def summarise(results: list[StrategyResult], n_boot: int, reference: str = "ads") -> list[dict]:
    """Step 4: mean and 95% interval per metric, paired difference (reference - row) with its interval.

    The reference is strategy ``reference`` reconstructed with DPS, at the same budget.
    """
    ref = {r.budget: r for r in results if r.name == reference and r.reconstructor == "dps"}
    rows = []
    for r in results:
        row = {"strategy": r.name, "reconstructor": r.reconstructor, "budget": r.budget,
               "slices": int(r.metrics["ssim"].size),
               "seconds_per_slice": r.seconds_per_slice, "nfe_per_slice": r.nfe_per_slice,
               "nbe_per_slice": r.nbe_per_slice, "lines_measured_mean": float(r.masks.float().sum(-1).mean())}
        for m in METRICS:
            row[m] = float(r.metrics[m].mean())
            row[f"{m}_ci95"] = bootstrap_ci(r.metrics[m], n_boot)
            row[f"zero_filled_{m}"] = float(r.zero_filled[m].mean())
            if r.budget in ref and r is not ref[r.budget]:
                diff = ref[r.budget].metrics[m] - r.metrics[m]
                row[f"{reference}_minus_{m}"] = float(diff.mean())
                row[f"{reference}_minus_{m}_ci95"] = bootstrap_ci(diff, n_boot)
        row["per_slice"] = {m: r.metrics[m].tolist() for m in METRICS}
        rows.append(row)
    return rows


def _diff(row: dict, metric: str, scale: float = 1.0, digits: int = 2) -> str:
    """'+d [lo, hi]' for the paired difference ADS - this strategy (scaled), or '-' for ADS itself."""
    d = row.get(f"ads_minus_{metric}")
    if d is None:
        return "-"
    lo, hi = row[f"ads_minus_{metric}_ci95"]
    return f"{scale * d:+.{digits}f} [{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"


def markdown_table(rows: list[dict], header: str) -> str:
    """A readable table: SSIM x100, PSNR, NMSE, MAE, paired ADS differences with 95% intervals, cost."""
    lines = [header, "", "| budget | strategy | reconstructor | SSIM x100 [95% CI] | PSNR dB | NMSE | MAE | "
             "ADS - it: SSIM x100 [95% CI] | ADS - it: PSNR [95% CI] | ADS - it: MAE [95% CI] | zero-filled SSIM x100 "
             "| s / slice | NFE / slice |",
             "|---:|---|---|---|---:|---:|---:|---|---|---|---:|---:|---:|"]
    for r in rows:
        lo, hi = r["ssim_ci95"]
        lines.append(
            f"| {r['budget']} | {r['strategy']} | {r.get('reconstructor', 'dps')} | "
            f"{100 * r['ssim']:.2f} [{100 * lo:.2f}, {100 * hi:.2f}] | "
            f"{r['psnr']:.2f} | {r['nmse']:.4f} | {r['mae']:.4f} | {_diff(r, 'ssim', 100.0)} | {_diff(r, 'psnr')} | "
            f"{_diff(r, 'mae', 1.0, 4)} | {100 * r['zero_filled_ssim']:.2f} | {r['seconds_per_slice']:.2f} | "
            f"{r['nfe_per_slice']} |"
        )
    return "\n".join(lines) + "\n"


def write_results(out_json: Path, payload: dict, table: str) -> None:
    """Write results JSON and the markdown table beside it, each atomically (the old file or the new, never half)."""
    atomic_write_text(out_json, json.dumps(payload, indent=2))
    atomic_write_text(out_json.with_suffix(".md"), table)
