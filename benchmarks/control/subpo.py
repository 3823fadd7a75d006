"""SubPO vs the additive-reward policy gradient on grid coverage and a biodiversity map (5 seeds, one CPU core).

Writes benchmarks/control/subpo_coverage.{json,md}, subpo_coverage_curves.png, subpo_biodiversity.{json,md} and
subpo_biodiversity_curves.png, and the same three for ``subpo_coverage_position`` (policies that see only the
cell and t / H) through ``gendiff.rl.subrl.run_subrl_benchmark`` (the same as ``gendiff subrl benchmark``).
The learner settings are SubRLBenchmarkConfig's defaults (configs/subrl_benchmark.yaml: 200 updates x 32 episodes,
Adam 3e-3, MLP 64-64, entropy 0.01), chosen on seeds 100 and 101, which are not in the tables (seeds 0-4).

    OMP_NUM_THREADS=1 python benchmarks/control/subpo.py [--part coverage|biodiversity|coverage_position|all] [--overwrite]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gendiff.rl.subrl import SubRLBenchmarkConfig, run_subrl_benchmark

HERE = Path(__file__).resolve().parent
PARTS = {
    "coverage": {"weights": "uniform"},  # 10 x 10, H = 20, radius 1: F = covered cells, upper bound 69
    "biodiversity": {"weights": "biodiversity", "map_seed": 0},  # the map of gendiff/BiodiversityMap-v0
    # the paper's Markov policy: input (cell, t / H) only, no covered map (random / greedy do not depend on it)
    "coverage_position": {"weights": "uniform", "observe": "position", "methods": ("subpo", "additive_pg")},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for part, kwargs in PARTS.items():
        if args.part in (part, "all"):
            run_subrl_benchmark(SubRLBenchmarkConfig(**kwargs, seeds=(0, 1, 2, 3, 4), out=str(HERE / f"subpo_{part}"),
                                                     overwrite=args.overwrite))


if __name__ == "__main__":
    main()
