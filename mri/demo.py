"""``make demo`` / ``gendiff demo``: ADS against the masks and the reconstruction an MRI user would pick, at 4x.

Step 1. Write held-out synthetic fastMRI-format volumes (a seed the shipped prior never saw), and a few
        volumes of the prior's own training seed for the data-variance mask.
Step 2. Load the prior: the small one shipped in gendiff/assets (trained by the command in the
        README), or ``--prior DIR``.
Step 3. Reconstruct a few slices with every strategy through the same ADS pipeline (DPS): ADS, the
        strongest fixed masks (data variance, the centre block, the reference's fixed-mask DPS) and random
        lines; and every strategy's mask again with compressed sensing (CS-TV, FISTA), what MRI uses today.
Step 4. Print the table; write results.json / results.md / a PNG figure under ``--out``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gendiff.config import check_numbers
from gendiff.mri.reconstruction import RECONSTRUCTORS
from gendiff.mri.strategies import ACQUISITION
from gendiff.mri.study import MRIBenchmarkConfig, mri_benchmark
from gendiff.mri.synthetic import write_synthetic_dataset
from gendiff.pipelines.ads import ADS_DEFAULTS

SHIPPED_PRIOR = Path(__file__).resolve().parent.parent / "gendiff" / "assets" / "mri_prior_32"


def shipped_prior() -> Path:
    """The small prior the repository ships (also found inside an installed wheel)."""
    import gendiff

    for cand in (Path(gendiff.__file__).parent / "assets" / "mri_prior_32", SHIPPED_PRIOR):
        if (cand / "model").is_dir():
            return cand
    raise FileNotFoundError("the shipped prior gendiff/assets/mri_prior_32 is missing; pass --prior DIR")


@dataclass
class DemoConfig:
    """``gendiff demo`` (configs/demo.yaml)."""

    out: str = "demo_out"  # output folder (data, results)
    prior: str | None = None  # a trained prior folder (None: the shipped one)
    volumes: int = 2  # synthetic test volumes
    slices: int = 4  # slices per test volume
    acceleration: float = 4.0  # undersampling factor (4: a quarter of the k-space lines)
    # acquisition strategies compared (gendiff.mri.strategies)
    strategies: list[str] = field(default_factory=lambda: ["ads", "data_variance", "centre", "fixed_dps", "random"],
                                  metadata={"choices": ACQUISITION.names})
    reconstructors: list[str] = field(default_factory=lambda: ["dps", "cs_tv"],  # dps: the prior; cs_*: baselines
                                      metadata={"choices": RECONSTRUCTORS})
    cs_tv_weight: float = 1e-3  # chosen on validation phantoms (benchmarks/ads/real/README.md), not the demo's
    train_volumes: int = 8  # volumes of the prior's training seed, for the data-variance mask
    # posterior samples per slice; overrides ADS_DEFAULTS.num_particles (16) with 8 so the demo runs in minutes on a CPU
    num_particles: int = field(default=8, metadata={"aliases": ("particles",)})
    num_inference_steps: int = field(default=ADS_DEFAULTS.num_inference_steps,  # DDIM sampling steps
                                     metadata={"aliases": ("steps",)})
    guidance: Literal["dps", "x0_space"] = ADS_DEFAULTS.guidance  # how the measurements guide sampling
    guidance_scale: float = ADS_DEFAULTS.guidance_scale  # guidance strength
    sigma: float = ADS_DEFAULTS.sigma  # width of ADS's Gaussian-mixture entropy score, in measurement units
    seed: int = 0  # random seed
    overwrite: bool = False  # replace the results of an earlier demo in --out

    def __post_init__(self) -> None:
        check_numbers(self, positive=("volumes", "slices", "acceleration", "num_particles", "num_inference_steps",
                                           "sigma"),
                      nonnegative=("guidance_scale",))


def run_demo(cfg: DemoConfig) -> dict:
    out = Path(cfg.out)
    data = out / "data"
    train = out / "train"
    if not any(data.glob("*.h5")):  # Step 1 (kept between runs: nothing is overwritten)
        write_synthetic_dataset(data, volumes=cfg.volumes, slices=cfg.slices, size=128, seed=10_000 + cfg.seed)
    if "data_variance" in cfg.strategies and not any(train.glob("*.h5")):
        write_synthetic_dataset(train, volumes=cfg.train_volumes, slices=8, size=128, seed=0)
    prior = Path(cfg.prior) if cfg.prior else shipped_prior()  # Step 2
    bench = MRIBenchmarkConfig(  # Steps 3-4
        prior=str(prior), data=str(data), out=str(out / "results.json"), acceleration=[cfg.acceleration],
        strategies=list(cfg.strategies), slices=cfg.volumes * cfg.slices, num_particles=cfg.num_particles,
        num_inference_steps=cfg.num_inference_steps,
        guidance=cfg.guidance, guidance_scale=cfg.guidance_scale, sigma=cfg.sigma, seed=cfg.seed,
        batch_slices=cfg.volumes * cfg.slices, reconstructors=list(cfg.reconstructors), cs_tv_weight=cfg.cs_tv_weight,
        train_data=str(train) if "data_variance" in cfg.strategies else None, overwrite=cfg.overwrite,
    )
    result = mri_benchmark(bench)
    print(f"figure: {result['figures'][0]}\nresults: {out / 'results.json'} and {out / 'results.md'}")
    return result
