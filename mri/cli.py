"""``gendiff mri`` / ``gendiff images`` / ``gendiff demo``: wiring only.

Each command takes one typed config (defaults mirrored in configs/*.yaml), records the resolved config beside its
outputs, and writes JSON + a markdown table + a PNG figure. The configs and run functions live in gendiff.mri:
study.py (benchmarks), prior.py, importing.py, synthetic.py and demo.py.
"""

from __future__ import annotations

import argparse

from gendiff.commands import add_experiment, add_group


def add_mri_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``mri`` group (make-synthetic, import, train-prior, benchmark)."""
    from gendiff.mri.importing import ImportConfig, import_images
    from gendiff.mri.prior import MRIPriorConfig, train_mri_prior
    from gendiff.mri.study import MRIBenchmarkConfig, mri_benchmark
    from gendiff.mri.synthetic import SyntheticConfig, make_synthetic

    msub = add_group(sub, "mri", "fastMRI data, priors and active subsampling benchmarks")
    add_experiment(msub, "make-synthetic", SyntheticConfig, make_synthetic,
                   "write fastMRI-format single-coil files of knee-like phantoms")
    add_experiment(msub, "import", ImportConfig, import_images,
                   "import NIfTI / DICOM / .npy / .png magnitude images as fastMRI-format single-coil files")
    add_experiment(msub, "train-prior", MRIPriorConfig, train_mri_prior,
                   "train a complex-image prior on a folder of fastMRI-format files", multiprocess=True)
    add_experiment(msub, "benchmark", MRIBenchmarkConfig, mri_benchmark,
                   "reconstruct held-out slices with ADS and fixed masks; SSIM/PSNR/NMSE with 95%% intervals", multiprocess=True)


def add_images_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``images`` group (benchmark: pixel / column subsampling)."""
    from gendiff.mri.study import ImagesBenchmarkConfig, images_benchmark

    isub = add_group(sub, "images", "active subsampling of images (pixels, columns)")
    add_experiment(isub, "benchmark", ImagesBenchmarkConfig, images_benchmark,
                   "ADS vs random / data-variance pixel or column masks at several budgets (MAE)", multiprocess=True)


def add_demo_command(sub: argparse._SubParsersAction) -> None:
    """Add ``gendiff demo``."""
    from gendiff.mri.demo import DemoConfig, run_demo

    add_experiment(sub, "demo", DemoConfig, run_demo,
                   "ADS vs equispaced vs random at 4x on synthetic fastMRI slices (the main job)")
