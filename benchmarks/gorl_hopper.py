"""Hopper-v5 budget runs: GoRL (flow) vs Gaussian PPO at the same step budget, and a SAC learning curve.

NOT run on the project's 2-core CPUs (see the cost estimate below); run it on a free machine:

    OMP_NUM_THREADS=1 python benchmarks/gorl_hopper.py --ppo-steps 1000000 --sac-steps 300000 --seeds 0,1,2

Estimated cost on these CPUs (1 thread, rates measured here with other jobs sharing the 2 cores):
SAC 55 env steps/s (one 256x2 update per step; SB3 ~110/s on an idle machine), PPO (4 x 512 rollouts,
10 epochs, 64x64) ~1,100 env steps/s, GoRL-fm rollouts ~500 env steps/s (10-step flow decoder on 4 envs)
plus ~20 s per decoder refit (500 steps, batch 256 x 8 noise draws).
  - SAC 300k steps: 45-90 min per seed -> 2.5-4.5 h for 3 seeds (published SAC: ~2,500-3,000 by 300k).
  - PPO 1M steps: ~15 min per seed; GoRL-fm 1M steps (50 refits): ~50 min per seed -> ~3.3 h for 3 seeds
    of both. Total ~6-8 h of one core: not launched here.
Writes benchmarks/gorl_hopper.{json,md} and gorl_hopper_curves.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml

from gendiff.rl.cli import GorlBenchmarkConfig, run_benchmark

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ppo-steps", type=int, default=1_000_000, help="budget for GoRL and Gaussian PPO")
    p.add_argument("--sac-steps", type=int, default=300_000)
    p.add_argument("--seeds", type=str, default="0,1,2")
    p.add_argument("--runs-dir", type=str, default="runs/gorl_hopper")
    args = p.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    runs = Path(args.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "gorl.yaml").write_text(yaml.safe_dump({"stage_steps": 20_000, "recent_steps": 20_000}))
    (runs / "sac.yaml").write_text(yaml.safe_dump({"eval_every": 10_000}))
    common = {"env": "Hopper-v5", "seeds": seeds, "eval_every": 20_000, "eval_episodes": 5, "progress": True}
    onpolicy = run_benchmark(GorlBenchmarkConfig(**common, algos=("gorl_fm", "ppo"), steps=args.ppo_steps,
                                                 out=str(runs / "onpolicy"), gorl_config=str(runs / "gorl.yaml")))
    sac = run_benchmark(GorlBenchmarkConfig(**common, algos=("sac",), steps=args.sac_steps, out=str(runs / "sac"),
                                            sac_config=str(runs / "sac.yaml")))
    report = {"onpolicy_steps": args.ppo_steps, "sac_steps": args.sac_steps, "seeds": list(seeds),
              "results": {**onpolicy["summary"], **sac["summary"]},
              "sac_curves": [r["curve"] for r in sac["rows"]["sac"]]}
    (HERE / "gorl_hopper.json").write_text(json.dumps(report, indent=2))
    md = [(runs / "onpolicy" / "summary.md").read_text(), (runs / "sac" / "summary.md").read_text()]
    (HERE / "gorl_hopper.md").write_text("# Hopper-v5\n\n" + "\n".join(md))
    shutil.copy(runs / "sac" / "curves.png", HERE / "gorl_hopper_sac_curve.png")
    shutil.copy(runs / "onpolicy" / "curves.png", HERE / "gorl_hopper_curves.png")


if __name__ == "__main__":
    main()
