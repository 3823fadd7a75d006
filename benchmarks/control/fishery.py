"""Fishery control: DRL (PPO, SAC) vs the best constant-mortality and constant-escapement policies on
``gendiff/Fishery3-v0`` (the paper's three-variable model, gendiff/rl/fishery.py), one CPU core.

1. Constant policies: for each seed s the family's optimum is searched (grid of 51 values + golden-section refine) on
   200 episodes of noise seed 1000 + s (:func:`gendiff.rl.fishery.best_constant_policy`).
2. DRL: PPO, SAC (and GoRL with ``--gorl-steps``: flow decoder over PPO, configs/gorl.yaml defaults) trained
   through the ``gendiff gorl train`` path (``gendiff.rl.train.build``; configs/fishery_ppo.yaml,
   configs/fishery_sac.yaml) with training seed s.
3. Evaluation: every policy (DRL deterministic, i.e. its mean action) on the same 500 episodes of noise seed 2000
   (:func:`gendiff.rl.fishery.simulate`): mean profit per episode, mean final X, fraction of collapsed episodes.

Writes benchmarks/control/fishery.{json,md} and fishery.png (mortality chosen vs X on the evaluation episodes, and
the mean X trajectory). Seeds 0, 1, 2 are in the table. The budgets (PPO 100k, SAC 8k, GoRL 100k env steps) were
set by timing (about 2-5 minutes per run on one loaded core), not tuned; seed 100 was run once with the same
settings as a check outside the table. ``--gorl-steps N --ppo-steps 0 --sac-steps 0 --out .../fishery_gorl`` writes
the GoRL rows to their own files.

    OMP_NUM_THREADS=1 python benchmarks/control/fishery.py [--ppo-steps N] [--sac-steps N] [--gorl-steps N]
        [--seeds 0 1 2] [--out STEM]
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

from gendiff.io import beside
from gendiff.rl.fishery import (
    FisheryEnv,
    best_constant_policy,
    constant_escapement,
    constant_mortality,
    simulate,
)
from gendiff.rl.train import GorlTrainConfig, build

HERE = Path(__file__).resolve().parent
ENV_ID = "gendiff/Fishery3-v0"
EVAL_SEED, EVAL_EPISODES, SEARCH_EPISODES = 2000, 500, 200
CONFIGS = {"ppo": "configs/fishery_ppo.yaml", "sac": "configs/fishery_sac.yaml"}


def agent_policy(agent, env: FisheryEnv):
    """The agent's deterministic mortality for populations [B, n] -> [B] (observations = populations / obs_scale)."""
    return lambda pop: agent.act((pop / env.obs_scale).astype(np.float32), True)[:, 0]


def run_seed(seed: int, steps: dict[str, int], env: FisheryEnv, root: Path) -> tuple[dict[str, dict], dict]:
    """Steps 1-3 for one seed: ({policy name: {profit, final_x, collapsed, x_mean [T + 1], value or wall_s}},
    {policy name: policy})."""
    out, policies = {}, {}
    for family, make in (("mortality", constant_mortality), ("escapement", constant_escapement)):  # 1.
        res = best_constant_policy(family, env, episodes=SEARCH_EPISODES, seed=1000 + seed)
        policies[f"constant_{family}"] = make(res.value)
        out[f"constant_{family}"] = {"value": res.value, "search_profit": res.profit}
    for algo, n in steps.items():  # 2.
        if n <= 0:
            continue
        cfg = GorlTrainConfig(env=ENV_ID, algo=algo, steps=n, seed=seed, eval_every=0, progress=False,
                              ppo_config=str(root / CONFIGS["ppo"]), sac_config=str(root / CONFIGS["sac"]))
        t0 = time.perf_counter()
        built = build(cfg)
        built.learner.learn(n, progress=False)
        policies[algo] = agent_policy(built.agent, env)
        out[algo] = {"wall_s": time.perf_counter() - t0}
    for name, row in out.items():  # 3.
        ro = simulate(policies[name], env, EVAL_EPISODES, EVAL_SEED)
        row.update(profit=float(ro.profit.mean()), final_x=float(ro.final_x.mean()),
                   collapsed=float((ro.length < env.horizon).mean()), x_mean=np.nanmean(ro.pop[..., 0], 1).tolist())
    return out, policies


def summary(rows: dict[int, dict[str, dict]]) -> dict[str, dict]:
    """Mean +- std over seeds of profit, final X and collapse fraction per policy (and the per-seed values)."""
    names = list(next(iter(rows.values())))
    res = {}
    for name in names:
        res[name] = {}
        for key in ("profit", "final_x", "collapsed", "value", "wall_s"):
            vals = [rows[s][name][key] for s in rows if key in rows[s][name]]
            if vals:
                res[name][key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "per_seed": vals}
    return res


def plot(rows: dict[str, dict], policies: dict, env: FisheryEnv, path: Path, seed: int) -> None:
    """Left: mortality vs X on the states of 20 evaluation episodes; right: mean X per year (one seed's policies)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, policy in policies.items():
        states = simulate(policy, env, 20, EVAL_SEED).pop[:-1].reshape(-1, env.n)
        states = states[~np.isnan(states).any(1)]
        a.scatter(states[:, 0], policy(states), s=3, alpha=0.4, label=name)
        b.plot(rows[name]["x_mean"], label=name)
    a.set_xlabel("X (fished population)")
    a.set_ylabel("fishing mortality F")
    a.legend(markerscale=4)
    b.set_xlabel("year")
    b.set_ylabel(f"mean X over {EVAL_EPISODES} evaluation episodes")
    b.legend()
    fig.suptitle(f"{ENV_ID}: the policies of seed {seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ppo-steps", type=int, default=100_000)
    parser.add_argument("--sac-steps", type=int, default=8_000)
    parser.add_argument("--gorl-steps", type=int, default=0, help="GoRL (flow decoder, PPO base); 0: skipped")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(HERE / "fishery"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    env, root = FisheryEnv(), HERE.parent.parent
    steps = {"ppo": args.ppo_steps, "sac": args.sac_steps, "gorl_fm": args.gorl_steps}
    rows = {}
    for seed in args.seeds:
        rows[seed], policies = run_seed(seed, steps, env, root)
        if seed == args.seeds[0]:
            plot(rows[seed], policies, env, beside(Path(args.out), ".png"), seed)
        print(seed, {k: (round(v["profit"], 3), round(v["final_x"], 3)) for k, v in rows[seed].items()}, flush=True)
    res = summary(rows)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               "1 thread")
    out = Path(args.out)
    beside(out, ".json").write_text(json.dumps({
        "env": ENV_ID, "machine": machine, "seeds": args.seeds, "steps": steps, "eval_seed": EVAL_SEED,
        "eval_episodes": EVAL_EPISODES, "search_episodes": SEARCH_EPISODES, "results": res,
        "per_seed": {s: {k: {kk: vv for kk, vv in v.items() if kk != "x_mean"} for k, v in r.items()}
                     for s, r in rows.items()}}, indent=2))
    lines = [f"# Fishery control on {ENV_ID}", "", f"Machine: {machine}. Seeds {args.seeds}; env steps: PPO "
             f"{steps['ppo']}, SAC {steps['sac']}, GoRL {steps['gorl_fm']} (0: not run); constant policies searched "
             f"on {SEARCH_EPISODES} episodes of noise seed 1000 + seed; every policy evaluated on the same "
             f"{EVAL_EPISODES} episodes (noise seed {EVAL_SEED}, "
             f"horizon {env.horizon} years). Mean +- std over seeds.", "",
             "| policy | parameter | profit / episode | final X | collapsed episodes |", "|---|---|---|---|---|"]
    for name, r in res.items():
        par = f"{r['value']['mean']:.3f} +- {r['value']['std']:.3f}" if "value" in r else "-"
        lines.append(f"| {name} | {par} | {r['profit']['mean']:.3f} +- {r['profit']['std']:.3f} | "
                     f"{r['final_x']['mean']:.3f} +- {r['final_x']['std']:.3f} | "
                     f"{100 * r['collapsed']['mean']:.1f}% |")
    beside(out, ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
