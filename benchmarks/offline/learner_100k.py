"""How long 100k updates take: ``train_agent`` (real data only, no synthetic set) on one CPU thread.

For planning the agent study (issue 26: >= 100k updates x seeds x rows). Each run is the user's path,
``gendiff.offline.pgd_loop.train_agent`` with ``synthetic="none"``, no intermediate evaluations and the final
10-episode evaluation; the timer covers the whole call (dataset load, learner, loop, evaluation, result files).

    .venv/bin/python benchmarks/offline/learner_100k.py   # -> benchmarks/offline/learner_100k.{json,md}

The default dataset ``gendiff/hopper/random-v0`` is built on first use as in ``learner_speed.py``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from gendiff.io import beside, refuse_existing_table  # noqa: E402
from gendiff.offline.datasets import load_or_make_dataset  # noqa: E402
from gendiff.offline.pgd_loop import TrainAgentConfig, train_agent  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset-id", default="gendiff/hopper/random-v0")
    p.add_argument("--algos", default="td3bc,iql")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "learner_100k"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out .json / .md")
    args = p.parse_args()
    refuse_existing_table(args.out, args.overwrite)
    torch.set_num_threads(1)
    if args.dataset_id == "gendiff/hopper/random-v0":
        load_or_make_dataset("Hopper-v5", "random", 1_000_000, args.dataset_id)
    rows = []
    for algo in args.algos.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainAgentConfig(dataset_id=args.dataset_id, algo=algo, synthetic="none", steps=args.steps,
                                   seed=args.seed, eval_every=0, eval_episodes=10, progress=False,
                                   out=str(Path(tmp) / f"{algo}.json"))
            load0, c0, w0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
            res = train_agent(cfg)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        rows.append({"algo": algo, "steps": args.steps, "cpu_s": cpu, "wall_s": wall, "load_average_start": load0,
                     "load_average_end": os.getloadavg()[0], "updates_per_cpu_s": args.steps / cpu,
                     "final_return": res["final"]["return_mean"], "final_score": res["final"].get("score_mean")})
        print(rows[-1], flush=True)
    out = Path(args.out)
    beside(out, ".json").write_text(json.dumps({"dataset_id": args.dataset_id, "seed": args.seed, "threads": 1,
                                                    "runs": rows}, indent=2))
    lines = [f"# {args.steps:,} updates on one CPU thread ({args.dataset_id}, seed {args.seed})", "",
             "train_agent, synthetic none, batch 256, final 10-episode evaluation included; the 2-core machine was "
             "shared with other jobs (load average at start / end).", "",
             "| algorithm | CPU time | wall time | updates per CPU-second | load average |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['algo']} | {r['cpu_s'] / 60:.1f} min | {r['wall_s'] / 60:.1f} min | "
                     f"{r['updates_per_cpu_s']:.0f} | {r['load_average_start']:.1f} / {r['load_average_end']:.1f} |")
    beside(out, ".md").write_text("\n".join(lines) + "\n")
    print(beside(out, ".md").read_text())


if __name__ == "__main__":
    main()
