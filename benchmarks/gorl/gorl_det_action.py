r"""Is GoRL's deterministic return limited by which action it calls deterministic?

Gaussian PPO's deterministic action is tanh(mu(s)) = tanh(E[u | s]), the squashed mean of its pre-squash action
distribution. GoRL's (``GoRL.act(obs, deterministic=True)``) is tanh(g(s, mu_z(s))), the decoder at the latent mean,
which differs from tanh(E[u | s]) when the decoder g is not affine in z. For every saved GoRL run of a folder this
evaluates both on the runs' final-evaluation episodes (``--episodes``, seeds 50,000+):

  1. the library's deterministic action, decoder at the latent mean (the same episodes as the run's final
     evaluation, so it should equal the recorded ``final_return_deterministic``, shown beside it);
  2. the mean action: tanh of E[u | s] over ``--draws`` latent draws per state, u = g(s, z), z ~ pi_theta(z | s),
     i.e. PPO's definition applied to GoRL's action distribution.

    OMP_NUM_THREADS=1 python benchmarks/gorl/gorl_det_action.py --runs runs/gorl_hopper/k8_lr4 --out benchmarks/gorl/gorl_det_action

Writes <out>.json and <out>.md (machine, folder, draws, episodes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gendiff.bench import machine_info
from gendiff.io import beside
from gendiff.rl.common import evaluate
from gendiff.rl.gorl import GoRL
from gendiff.rl.train import FINAL_EVAL_SEED as EVAL_SEED  # the runs' final-evaluation episode seeds


def mean_action_policy(agent: GoRL, draws: int, seed: int):
    """Step 2: obs [n, obs_dim] -> env actions scale(tanh(E[u | s])) [n, act_dim] from ``draws`` draws per state."""
    gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        mean_u, _ = agent._mean_action(torch.as_tensor(obs, dtype=torch.float32), gen, draws)
        return agent.scaler.to_env(torch.tanh(mean_u)).numpy()

    return act


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=str, required=True, help="folder of <algo>_s<seed>/ runs (metrics.json, model/)")
    p.add_argument("--draws", type=int, default=64, help="latent draws per state for the mean action")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--out", type=str, default="benchmarks/gorl/gorl_det_action")
    args = p.parse_args()
    if args.draws < 1 or args.episodes < 1:
        p.error("--draws and --episodes must be >= 1")
    torch.set_num_threads(1)
    runs = sorted(d for d in Path(args.runs).glob("*_s*") if (d / "model" / "config.json").is_file())
    if not runs:
        p.error(f"no <algo>_s<seed>/model/ GoRL runs under {args.runs}")
    rows = []
    for d in runs:
        metrics, t0 = json.loads((d / "metrics.json").read_text()), time.perf_counter()
        agent = GoRL.load(d / "model")
        latent_mean = evaluate(lambda o, a=agent: a.act(o, True), agent.env_id, args.episodes, seed=EVAL_SEED)  # 1.
        mean_action = evaluate(mean_action_policy(agent, args.draws, metrics["seed"]), agent.env_id, args.episodes,
                               seed=EVAL_SEED)  # 2.
        rows.append({"run": d.name, "seed": metrics["seed"], "stochastic": metrics["final_return_stochastic"],
                     "recorded_deterministic": metrics["final_return_deterministic"],
                     "latent_mean": float(np.mean(latent_mean)), "mean_action": float(np.mean(mean_action)),
                     "seconds": time.perf_counter() - t0})
        print(rows[-1], flush=True)
    diff = np.array([r["mean_action"] - r["latent_mean"] for r in rows])
    out = {"machine": machine_info(), "runs": args.runs, "draws": args.draws, "episodes": args.episodes,
           "eval_seed": EVAL_SEED, "rows": rows, "mean_action_minus_latent_mean": float(diff.mean())}
    stem = Path(args.out)
    beside(stem, ".json").write_text(json.dumps(out, indent=2))
    lines = [f"# GoRL's deterministic action: decoder at the latent mean vs the mean action ({Path(args.runs).name}, "
             f"{len(rows)} runs)", "",
             f"Machine: {out['machine']['cpu']}, 1 thread. Runs: `{args.runs}`. {args.episodes} episodes per run "
             f"(seeds {EVAL_SEED:,}+, the runs' final evaluation); mean action from {args.draws} latent draws per "
             "state.", "",
             "| run | stochastic (recorded) | deterministic (recorded) | decoder at latent mean | mean action "
             "tanh(E[u\\|s]) | difference |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['run']} | {r['stochastic']:.0f} | {r['recorded_deterministic']:.0f} | {r['latent_mean']:.0f} | "
              f"{r['mean_action']:.0f} | {r['mean_action'] - r['latent_mean']:+.0f} |" for r in rows]
    lines += ["", f"Mean difference (mean action - latent mean): {diff.mean():+.0f} over {len(rows)} runs."]
    beside(stem, ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
