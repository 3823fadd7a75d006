"""Dichotomy of Control vs return-conditioned BC on the stochastic safe-or-gamble task, one CPU core.

1. Data: ``gendiff offline make-gamble`` defaults (gendiff/Gamble-v0: 2 steps, safe pays 1, the gamble pays 3 w.p.
   0.25; 3000 episodes from behaviour policies gambling w.p. 0.1 / 0.5 / 0.9, data seed 0), made once in
   $MINARI_DATASETS_PATH if missing. The optimal expected return is 2 (always safe); returns up to 6 are in the data.
2. Per seed: RCBC and DoC (RCBCConfig / DoCConfig defaults) trained ``--steps`` updates with that seed.
3. Evaluation (``--episodes`` episodes, env seed 10000): RCBC conditioned on each target; DoC with the paper's
   inference (argmax V over 32 prior latents; its prediction is V(s_0, z*)) and conditioned on targets (the latent
   whose V is nearest the remaining target). Achieved vs conditioned / predicted return.

Writes benchmarks/control/doc.{json,md}.

    OMP_NUM_THREADS=1 MINARI_DATASETS_PATH=... python benchmarks/control/doc.py [--seeds 0 1 2] [--steps 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from gendiff.offline.datasets import dataset_exists, load_dataset
from gendiff.offline.doc import DoC
from gendiff.offline.gamble_data import MakeGambleConfig, make_gamble_dataset
from gendiff.offline.rcbc import RCBC
from gendiff.offline.rcsl_train import evaluate_targets

HERE = Path(__file__).resolve().parent
DATASET = "gendiff/gamble/mixed-v0"
RCBC_TARGETS = [0.0, 1.0, 2.0, 3.0, 4.0, 6.0]
DOC_TARGETS = [None, 2.0, 4.0, 6.0]


def run_seed(seed: int, steps: int, episodes: int) -> dict[str, list[dict]]:
    ds = load_dataset(DATASET)
    out = {}
    for name, cls, targets in (("rcbc", RCBC, RCBC_TARGETS), ("doc", DoC, DOC_TARGETS)):
        t0 = time.perf_counter()
        learner = cls(ds, seed=seed)
        learner.train(steps)
        rows = evaluate_targets(learner, ds.env_id, targets, episodes)
        for r in rows:
            r["train_s"] = time.perf_counter() - t0
        out[name] = rows
    return out


def table(results: dict[int, dict[str, list[dict]]]) -> list[str]:
    seeds = sorted(results)
    lines = ["| learner | conditioned on | predicted / target (mean over seeds) | achieved (mean +- std over seeds) "
             "| achieved per seed |", "|---|---|---|---|---|"]
    for name in ("rcbc", "doc"):
        for i, row in enumerate(results[seeds[0]][name]):
            ach = np.array([results[s][name][i]["return_mean"] for s in seeds])
            pred = np.array([results[s][name][i]["predicted_mean"] for s in seeds])
            cond = "argmax V (paper)" if row["target"] is None else f"target {row['target']:g}"
            lines.append(f"| {name} | {cond} | {pred.mean():.3f} | {ach.mean():.3f} +- {ach.std():.3f} | "
                         f"{', '.join(f'{a:.3f}' for a in ach)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--out", default=str(HERE / "doc"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not dataset_exists(DATASET):
        make_gamble_dataset(MakeGambleConfig())
    t0 = time.perf_counter()
    results = {s: run_seed(s, args.steps, args.episodes) for s in args.seeds}
    wall = time.perf_counter() - t0
    settings = {"dataset": DATASET, "data": "make-gamble defaults (3000 episodes, P(gamble) 0.1/0.5/0.9, seed 0)",
                "steps": args.steps, "eval_episodes": args.episodes, "eval_env_seed": 10_000, "seeds": args.seeds,
                "learner_configs": "RCBCConfig() / DoCConfig() defaults", "wall_s": wall,
                "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, torch "
                           f"{torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"}
    Path(args.out + ".json").write_text(json.dumps({"settings": settings, "results": results}, indent=2))
    md = ["# DoC vs RCBC on gendiff/Gamble-v0", "",
          "Optimal expected return 2 (always safe; the gamble is worth 0.75 per step). Returns up to 6 appear in the "
          "data, only from lucky gambles. 'predicted / target' is the target for RCBC and DoC-with-target, and "
          "V(s_0, z*) for DoC's own choice.", "",
          *[f"- {k}: {v}" for k, v in settings.items()], "", *table(results), ""]
    Path(args.out + ".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
