r"""TD3+BC and IQL on locally made medium datasets: none / unguided / pgd, >= 3 seeds (the issue's must-show).

For each env (Hopper-v5, HalfCheetah-v5): make the medium dataset if missing (SAC behaviour policy trained
toward the medium band within --sac-steps), train one trajectory-diffusion pipeline per env (shared by all
unguided / pgd runs), then ``train_agent`` for algo x synthetic x seed. Writes JSON + markdown (mean +- std of
the final normalised score over 10 evaluation episodes per run).

Tiny smoke (~2 min): python benchmarks/offline_agents.py --tiny

The session-5 CPU run (benchmarks/offline_agents.md; AMD EPYC, one process per env, 1 thread each, so ~80 min):
  gendiff offline make-dataset --env Hopper-v5 --level medium --steps 50000 --sac-steps 100000 --check-every 5000
  (the same for HalfCheetah-v5; ~30 min each), then benchmarks/offline_fidelity.py (trains the shared pipeline),
  then for E in Hopper-v5 HalfCheetah-v5:
    python benchmarks/offline_agents.py --envs $E --seeds 3 --agent-steps 10000 --regenerate-every 2500 \
        --num-synthetic 20000 --diffusion-root /work/results/offline --out /work/results/offline/agents_$E
  and python benchmarks/offline_agents.py --merge /work/results/offline/agents_*.json --out benchmarks/offline_agents
Measured per run on a shared core: 2-3.5 min with real data only (TD3+BC / IQL updates take 15-30 ms), 3-4.5 min
unguided, ~9 min PGD (four 20k-transition generations with 64 Heun steps).
Reference scale (1M agent steps, 1M synthetic, K = 10k) needs a GPU and days; see benchmarks/gpu_pgd.sh.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

from gendiff.offline.datasets import MakeDatasetConfig, default_dataset_id, load_or_make_dataset
from gendiff.offline.diffusion import TrajectoryDiffusionConfig, load_or_train_trajectory_diffusion
from gendiff.offline.pgd_loop import TrainAgentConfig, train_agent


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", default="Hopper-v5,HalfCheetah-v5")
    p.add_argument("--algos", default="td3bc,iql")
    p.add_argument("--synthetic", default="none,unguided,pgd")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--dataset-steps", type=int, default=50_000)
    p.add_argument("--sac-steps", type=int, default=50_000)
    p.add_argument("--diffusion-steps", type=int, default=5_000)
    p.add_argument("--agent-steps", type=int, default=5_000)
    p.add_argument("--regenerate-every", type=int, default=2_500)
    p.add_argument("--num-synthetic", type=int, default=20_000)
    p.add_argument("--out", default="benchmarks/offline_agents")
    p.add_argument("--diffusion-root", default="",
                   help="reuse ROOT/<env>/pipeline (train it there if missing); default <out>_runs/<env>/diffusion")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="only write the combined table of earlier runs' JSON files (e.g. one per env) to --out")
    p.add_argument("--dataset-id", default="",
                   help="one env only: use this Minari id (made if missing) instead of gendiff/<env>/medium-v0")
    p.add_argument("--tiny", action="store_true")
    a = p.parse_args()
    if a.dataset_id and "," in a.envs:
        p.error("--dataset-id names one dataset: give one env with --envs")
    if a.tiny:
        a.envs, a.seeds, a.dataset_steps, a.sac_steps, a.diffusion_steps = "Hopper-v5", 1, 2000, 1, 100
        a.agent_steps, a.regenerate_every, a.num_synthetic, a.out = 100, 50, 500, "benchmarks/offline_agents_tiny"
    return a


def _table(runs: list[dict], agent_steps: int, seeds: int, wall_s: float, processes: int = 1) -> list[str]:
    """Markdown: mean +- std per (env, algo, synthetic), then the per-seed paired difference to ``none``."""
    table: dict[tuple[str, str, str], dict[int, float]] = {}
    for r in runs:
        table.setdefault((r["env"], r["algo"], r["synthetic"]), {})[r["seed"]] = r["score"]
    md = [f"# Offline agents: normalised score (10 evaluation episodes per run), {agent_steps} agent steps, "
          f"seeds 0..{seeds - 1}", "",
          "| env | algo | synthetic | score mean +- std | minus none (same seed) | seeds |", "|---|---|---|---|---|---|"]
    for (e, al, s), v in table.items():
        base = table.get((e, al, "none"), {})
        diff = [v[k] - base[k] for k in v if k in base]
        d = f"{np.mean(diff):+.1f} +- {np.std(diff):.1f}" if diff and s != "none" else ""
        md.append(f"| {e} | {al} | {s} | {np.mean(list(v.values())):.1f} +- {np.std(list(v.values())):.1f} | {d} "
                  f"| {len(v)} |")
    when = f"{wall_s:.0f} s" if processes == 1 else f"{wall_s:.0f} s summed over {processes} processes run side by side"
    return md + ["", f"Wall time {when} on CPU (AMD EPYC, 1 thread per process)."]


def _write(out: Path, payload: dict, md: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(str(out) + ".json").write_text(json.dumps(payload, indent=2))
    Path(str(out) + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main() -> None:
    a = _args()
    out = Path(a.out)
    if a.merge:  # combine per-env runs made in parallel processes
        parts = [json.loads(Path(f).read_text()) for f in a.merge]
        runs = [r for p in parts for r in p["runs"]]
        first = parts[0]["args"]
        _write(out, {"args": [p["args"] for p in parts], "runs": runs},
               _table(runs, first["agent_steps"], first["seeds"], sum(p.get("wall_s", 0.0) for p in parts), len(parts)))
        return
    warnings.filterwarnings("ignore")
    t0, runs = time.perf_counter(), []
    for env in a.envs.split(","):
        level = "random" if a.tiny else "medium"
        ds_id = a.dataset_id or default_dataset_id(env, level + ("-tiny" if a.tiny else ""))
        ds = load_or_make_dataset(env, level, a.dataset_steps, ds_id,
                                  config=MakeDatasetConfig(sac_steps=a.sac_steps, progress=False))
        horizon = 8 if a.tiny else 32
        pipe_dir = Path(a.diffusion_root) / env if a.diffusion_root else Path(str(out) + "_runs") / env / "diffusion"
        load_or_train_trajectory_diffusion(ds, TrajectoryDiffusionConfig(
            dataset_id=ds_id, out_dir=str(pipe_dir), horizon=horizon, train_steps=a.diffusion_steps, overwrite=True,
            progress=False))
        for algo in a.algos.split(","):
            for syn in a.synthetic.split(","):
                for seed in range(a.seeds):
                    cfg = TrainAgentConfig(
                        dataset_id=ds_id, algo=algo, synthetic=syn, steps=a.agent_steps, seed=seed,
                        out=str(Path(str(out) + "_runs") / env / f"{algo}_{syn}_{seed}.json"),
                        regenerate_every=a.regenerate_every, num_synthetic=a.num_synthetic,
                        diffusion_dir=str(pipe_dir / "pipeline"), horizon=horizon,
                        sample_horizon=16 if a.tiny else 64, num_inference_steps=8 if a.tiny else 64,
                        eval_every=0, eval_episodes=10, progress=False, overwrite=True)
                    r = train_agent(cfg)
                    runs.append({"env": env, "algo": algo, "synthetic": syn, "seed": seed,
                                 "score": r["final"]["score_mean"], "wall_s": r["wall_s"]})
                    print(runs[-1], flush=True)
    wall = time.perf_counter() - t0
    _write(out, {"args": vars(a), "runs": runs, "wall_s": wall}, _table(runs, a.agent_steps, a.seeds, wall))


if __name__ == "__main__":
    main()
