"""The ADS benchmark as a library: its configs and runners (``gendiff mri benchmark``, ``gendiff images benchmark``),
and the helpers the study scripts in benchmarks/ads/ share (slice selection, prior + data loading).

Each run reconstructs held-out slices with every strategy (and reconstructor) on the same slices and noise, then
writes JSON + a markdown table with paired intervals + one PNG figure per budget (mri/benchmark.py does the
per-strategy work and the statistics).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from gendiff.bench import machine_info
from gendiff.config import add_renamed_argument, check_literal_fields, check_numbers, save_config, to_dict
from gendiff.distributed import is_main_process, process_device, wait_for_everyone
from gendiff.io import atomic_path, refuse_existing, resolve_device
from gendiff.mri.benchmark import (
    RunSettings,
    check_reconstructors,
    figure_rows,
    magnitude_image,
    markdown_table,
    run_reconstructor,
    run_strategy,
    summarise,
    write_results,
)
from gendiff.mri.data import load_images
from gendiff.mri.figures import benchmark_figure
from gendiff.mri.prior import load_prior
from gendiff.mri.reconstruction import ReconSettings
from gendiff.mri.strategies import ACTIVE, check_plan
from gendiff.operators import make_operator
from gendiff.pipelines.ads import ADS_DEFAULTS, ActiveDiffusionSubsamplingPipeline

RUN_DEFAULTS = RunSettings()  # the one home of the reconstruction defaults below (and ADS_DEFAULTS behind it)


@dataclass
class ReconstructionConfig:
    """The reconstruction settings every benchmark command shares (each strategy is reconstructed with them).

    Defaults: :data:`RUN_DEFAULTS` (gendiff.mri.benchmark.RunSettings, which takes the pipeline's from
    gendiff.pipelines.ads.ADS_DEFAULTS); none is written here.
    """

    # particles (posterior samples) per slice
    num_particles: int = field(default=RUN_DEFAULTS.num_particles, metadata={"aliases": ("particles",)})
    # ads_steps.md (32x32) and ads_steps64v.md (64x64, 16 particles): within 0.5 SSIM of 1,000 steps
    num_inference_steps: int = field(default=RUN_DEFAULTS.num_inference_steps, metadata={"aliases": ("steps",)})
    # (start, stop) fractions of the reverse steps that hold the acquisitions
    acquisition_window: list[float] = field(default_factory=lambda: list(RUN_DEFAULTS.acquisition_window),
                                            metadata={"aliases": ("window",)})
    sigma: float = RUN_DEFAULTS.sigma
    # ADS scores on Tweedie estimates (1, the paper) or J-evaluation DDIM look-aheads
    lookahead_steps: int = field(default=RUN_DEFAULTS.lookahead_steps, metadata={"aliases": ("lookahead",)})
    guidance: Literal["dps", "x0_space"] = RUN_DEFAULTS.guidance
    guidance_scale: float = RUN_DEFAULTS.guidance_scale
    batch_slices: int = RUN_DEFAULTS.batch_slices
    precision: Literal["fp32", "bf16"] = RUN_DEFAULTS.precision  # bf16: torch.autocast over the sampler (GPU)
    seed: int = RUN_DEFAULTS.seed
    bootstrap: int = RUN_DEFAULTS.bootstrap
    progress: bool = True
    device: str = "auto"

    def __post_init__(self) -> None:
        check_literal_fields(self)
        check_numbers(self, positive=("num_particles", "num_inference_steps", "sigma", "lookahead_steps",
                                      "batch_slices", "bootstrap"),
                      nonnegative=("guidance_scale",), fraction=("acquisition_window",))
        window = self.acquisition_window
        if len(window) != 2 or not window[0] < window[1]:
            raise ValueError(f"{type(self).__name__}.acquisition_window (--acquisition-window) must be two fractions "
                             f"start < stop, got {window}")
        resolve_device(self.device)  # a device that does not exist fails here, not after loading the prior

    def _check_strategies(self, strategies: list[str]) -> None:
        if not strategies:
            raise ValueError(f"{type(self).__name__}.strategies (--strategies) is empty: name at least one strategy")


@dataclass
class MRIBenchmarkConfig(ReconstructionConfig):
    """``gendiff mri benchmark`` (configs/mri_benchmark.yaml)."""

    prior: str = ""
    data: str = ""
    out: str = "results.json"
    acceleration: list[float] = field(default_factory=lambda: [4.0])
    strategies: list[str] = field(default_factory=lambda: ["ads", "equispaced", "random", "fixed_dps",
                                                           "fastmri_equispaced", "fastmri_random"])
    train_data: str | None = None
    slices: int = 8
    crop_mode: Literal["image", "kspace"] = "kspace"
    # the second axis: how each strategy's masks are reconstructed (mri/reconstruction.py); "dps" = the prior
    reconstructors: list[str] = field(default_factory=lambda: ["dps"])
    cs_tv_weight: float = 1e-3  # chosen on validation slices: benchmarks/ads/real/README.md
    cs_wavelet_weight: float = 1e-3
    cs_iterations: int = 100
    challenge: Literal["singlecoil", "multicoil"] = "singlecoil"  # multicoil: coil-combined RSS images (mri/data.py)
    overwrite: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_numbers(self, positive=("acceleration", "slices", "cs_iterations"),
                      nonnegative=("cs_tv_weight", "cs_wavelet_weight"))
        self._check_strategies(self.strategies)


@dataclass
class ImagesBenchmarkConfig(ReconstructionConfig):
    """``gendiff images benchmark`` (configs/images_benchmark.yaml)."""

    prior: str = ""
    data: str = "digits"
    out: str = "images_results.json"
    measurement: Literal["pixel", "column"] = "pixel"
    budgets: list[int] = field(default_factory=lambda: [10, 25, 50, 100])
    strategies: list[str] = field(default_factory=lambda: ["ads", "random", "data_variance"])
    test: int = 97
    slices: int = 16
    # overrides ADS_DEFAULTS' (0, 0.5): images acquire over more of the run
    acquisition_window: list[float] = field(default_factory=lambda: [0.0, 0.8], metadata={"aliases": ("window",)})
    batch_slices: int = 16  # overrides RunSettings' 4: small images, 16 fit in one batch
    overwrite: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_numbers(self, positive=("budgets", "test", "slices"))
        self._check_strategies(self.strategies)


def pick_slices(images: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` slices spread evenly over the held-out set (deterministic)."""
    if count >= images.shape[0]:
        return images
    return images[torch.linspace(0, images.shape[0] - 1, count).round().long()]


def add_study_arguments(ap: argparse.ArgumentParser) -> None:
    """The options the ADS study scripts (benchmarks/ads/ads_mask_*.py) share: prior, slices and settings."""
    ap.add_argument("--prior", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--train-data", required=True, help="training files, for the data-variance mask")
    ap.add_argument("--slices", type=int, default=8)
    # overrides ADS_DEFAULTS.num_particles (16): half the cost, as the phantom study tables (benchmarks/ads/README.md)
    add_renamed_argument(ap, "--num-particles", ("--particles",), type=int, default=8)
    add_renamed_argument(ap, "--num-inference-steps", ("--steps",), type=int,
                         default=ADS_DEFAULTS.num_inference_steps)
    ap.add_argument("--acceleration", type=float, default=4.0)
    # overrides ADS_DEFAULTS.acquisition_window (0, 0.5): chosen on validation slices of the 64x64 prior
    # (benchmarks/ads/README.md: ADS SSIM x100 60.3 with (0.1, 0.4), 57.1 with (0, 0.5))
    add_renamed_argument(ap, "--acquisition-window", ("--window",), default="0.1,0.4")
    ap.add_argument("--threads", type=int, default=0)


def load_study(args: argparse.Namespace) -> tuple[ActiveDiffusionSubsamplingPipeline, torch.Tensor, torch.Tensor, int,
                                                   tuple[float, float]]:
    """For the ADS study scripts: (pipeline, held-out targets [S, 2, H, W], training images, budget, window).

    Sets the torch threads, loads the prior, crops both sets in k-space to the prior's size, picks ``args.slices``
    held-out slices (:func:`pick_slices`) and turns the acceleration into a number of lines.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_prior(args.prior)
    size = int(pipe.unet.config.sample_size)
    targets = pick_slices(load_images(args.data, crop=size, crop_mode="kspace")[0], args.slices)
    train = load_images(args.train_data, crop=size, crop_mode="kspace")[0]
    window = tuple(float(v) for v in args.acquisition_window.split(","))
    return pipe, targets, train, ActiveDiffusionSubsamplingPipeline.budget_from(size, None, args.acceleration), window


def _outputs(out: Path, budgets: list[int]) -> list[Path]:
    """Every file a benchmark writes: results JSON, markdown, config and one figure per budget."""
    return [out, out.with_suffix(".md"), out.with_name(f"{out.stem}_config.yaml"),
            *(out.with_name(f"{out.stem}_budget{b}.png") for b in budgets)]


def _run_all(pipe, targets, budgets, strategies, settings, train_images, out: Path, header: str, kind: str,
             cfg, reconstructors: tuple[str, ...] = ("dps",), recon: ReconSettings | None = None) -> dict:
    num_candidates = make_operator(settings.measurement, tuple(targets.shape[1:]), 1).num_candidates
    check_plan(strategies, budgets, num_candidates)  # a typo fails now, not after an hour of reconstructions
    check_reconstructors(reconstructors, kind)
    refuse_existing(_outputs(out, budgets), cfg.overwrite)  # before the first reconstruction
    results, per_budgets = [], []
    for budget in budgets:
        per_budget = []
        for s in strategies:  # the DPS run gives ADS its masks, so it runs for ads even without "dps"
            base = run_strategy(pipe, targets, s, budget, settings, train_images, progress=cfg.progress,
                                dps=("dps" in reconstructors) or s in ACTIVE)
            per_budget += [base] if base.recon is not None else []
            per_budget += [run_reconstructor(targets, base, r, recon) for r in reconstructors if r != "dps"]
        results += per_budget
        per_budgets.append(per_budget)
    figures = []  # written with the results, when everything is done (an interrupted run changes nothing)
    for budget, per_budget in zip(budgets, per_budgets, strict=True):
        fig = out.with_name(f"{out.stem}_budget{budget}.png")
        if is_main_process():  # under accelerate launch every process holds the gathered results; one writes
            with atomic_path(fig) as tmp:
                benchmark_figure(tmp, magnitude_image(targets.cpu()), figure_rows(per_budget), kind)
        figures.append(str(fig))
    rows = summarise(results, settings.bootstrap)
    table = markdown_table(rows, header)
    machine = machine_info()
    table = table.replace("\n\n|", f"\n\nMachine: {machine['gpu'] or machine['cpu']}, torch {machine['torch']}, "
                          f"{machine['torch_threads']} thread(s).\n\n|", 1)
    payload = {"machine": machine, "config": to_dict(cfg), "rows": rows, "figures": figures,
               "ads_order": {str(r.budget): r.order.tolist() for r in results if r.order is not None and r.name == "ads"}}
    payload.update({f"{s}_order": {str(r.budget): r.order.tolist() for r in results if r.order is not None
                                   and r.name == s and r.reconstructor == "dps"} for s in ACTIVE if s != "ads"
                    and s in strategies})
    if is_main_process():
        write_results(out, payload, table)
        save_config(cfg, out.parent, name=f"{out.stem}_config.yaml")
        print(table)
    wait_for_everyone()
    return payload


def mri_benchmark(cfg: MRIBenchmarkConfig) -> dict:
    pipe = load_prior(cfg.prior, process_device(cfg.device))
    size = int(pipe.unet.config.sample_size)
    images, _ = load_images(cfg.data, crop=size, crop_mode=cfg.crop_mode, challenge=cfg.challenge)
    targets = pick_slices(images, cfg.slices)
    train = load_images(cfg.train_data, crop=size, crop_mode=cfg.crop_mode, challenge=cfg.challenge)[0] \
        if cfg.train_data else None
    for needs_train in ("data_variance", "ads_total_variance"):
        if needs_train in cfg.strategies and train is None:
            raise ValueError(f"the {needs_train} strategy needs --train-data DIR (the prior's training files)")
    budgets = [ActiveDiffusionSubsamplingPipeline.budget_from(size, None, a) for a in cfg.acceleration]
    header = (f"# ADS vs fixed masks, k-space lines, {size}x{size}, {targets.shape[0]} {cfg.challenge} slices of "
              f"{cfg.data}\n\n"
              f"Accelerations {cfg.acceleration} (budgets {budgets} of {size} lines); {cfg.num_particles} particles, "
              f"{cfg.num_inference_steps} DDIM steps, guidance {cfg.guidance} (scale {cfg.guidance_scale}), "
              f"window {cfg.acquisition_window}, sigma {cfg.sigma}, look-ahead {cfg.lookahead_steps}, seed {cfg.seed}, {cfg.precision}. Paired differences: the same slices and noise for every strategy.")
    recon = ReconSettings(cs_tv_weight=cfg.cs_tv_weight, cs_wavelet_weight=cfg.cs_wavelet_weight,
                          cs_iterations=cfg.cs_iterations)
    if set(cfg.reconstructors) & {"cs_tv", "cs_wavelet"}:
        header += (f" CS weights: TV {cfg.cs_tv_weight}, L1-wavelet {cfg.cs_wavelet_weight}; "
                   f"{cfg.cs_iterations} FISTA iterations.")
    return _run_all(pipe, targets, budgets, cfg.strategies, RunSettings.from_config(cfg, "kspace_line"), train, Path(cfg.out),
                    header, "kspace_line", cfg, tuple(cfg.reconstructors), recon)


def images_benchmark(cfg: ImagesBenchmarkConfig) -> dict:
    from gendiff.images import load_image_dataset, train_test_split

    pipe = load_prior(cfg.prior, process_device(cfg.device))
    size = int(pipe.unet.config.sample_size)
    train, test = train_test_split(load_image_dataset(cfg.data, size, seed=cfg.seed), cfg.test)
    targets = pick_slices(test, cfg.slices)
    header = (f"# ADS vs fixed masks, {cfg.measurement} subsampling of {cfg.data} at {size}x{size}, "
              f"{targets.shape[0]} held-out images\n\nBudgets {cfg.budgets}; {cfg.num_particles} particles, "
              f"{cfg.num_inference_steps} DDIM steps, guidance {cfg.guidance} (scale {cfg.guidance_scale}), "
              f"window {cfg.acquisition_window}, sigma "
              f"{cfg.sigma}, seed {cfg.seed}. MAE of the posterior mean on [-1, 1] images.")
    return _run_all(pipe, targets, cfg.budgets, cfg.strategies, RunSettings.from_config(cfg, cfg.measurement), train,
                    Path(cfg.out), header, cfg.measurement, cfg)
