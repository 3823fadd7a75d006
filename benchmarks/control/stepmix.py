"""StepMix / EpsMix vs unconstrained UCBVI and the baseline under the episode-wise conservative constraint.

Runs ``gendiff tabular conservative`` (gendiff.rl.tabular.run) with the settings below, seeds 0-4 (the settings --
bonus_scale 0.3, K, alpha 0.1 -- were chosen on seed 100, not in the table), and writes
benchmarks/control/stepmix_<task>/{results.json, summary.md, regret.png}.

    OMP_NUM_THREADS=1 python benchmarks/control/stepmix.py --task river_swim
    OMP_NUM_THREADS=1 python benchmarks/control/stepmix.py --task random_dirichlet
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gendiff.rl.tabular.run import ConservativeConfig, run_conservative_command

HERE = Path(__file__).resolve().parent
SETTINGS = {
    "river_swim": {"n_states": 6, "horizon": 20, "baseline_skill": 0.9, "episodes": 3000},
    "random_dirichlet": {"n_states": 10, "horizon": 10, "baseline_skill": 0.5, "episodes": 2000, "task_seed": 0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(SETTINGS), default="river_swim")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    cfg = ConservativeConfig(task=args.task, seeds=(0, 1, 2, 3, 4), alpha=0.1, delta=0.05, bonus_scale=0.3,
                             out=str(HERE / f"stepmix_{args.task}"), overwrite=args.overwrite,
                             **SETTINGS[args.task])
    run_conservative_command(cfg)


if __name__ == "__main__":
    main()
