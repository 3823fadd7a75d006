"""Natural and attacked returns of PPO, worst-case PPO and the non-dominated set with EXP3 (gendiff.rl.nondominated).

Per seed: (a) PPO trained without attack (also the set's pi_1), (b) PPO trained from scratch under the gradient (MAD)
attack at eps with the same budget, (c) the non-dominated set discovered from (a), played at test time by EXP3 for
``--bandit-episodes`` episodes per attack (its mean return over those episodes is the row). (a) and (b) are
evaluated on ``--eval-episodes`` episodes per attack. Writes OUT.json and OUT.md.

    OMP_NUM_THREADS=1 python benchmarks/control/robust.py          # benchmarks/control/robust.{json,md}
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

from gendiff.config import to_dict
from gendiff.io import atomic_write_text
from gendiff.rl.attacks import AttackSpec
from gendiff.rl.nondominated import (
    NonDominatedConfig,
    adaptive_defence,
    discover,
    evaluate_under_attack,
    train_ppo,
)
from gendiff.rl.ppo import PPOConfig

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="InvertedPendulum-v5")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eps", type=float, default=0.1, help="l-inf radius of the test attacks (raw observation)")
    p.add_argument("--steps", type=int, default=40_960, help="env steps of (a) and (b)")
    p.add_argument("--candidate-steps", type=int, default=20_480, help="env steps of each set candidate (warm start)")
    p.add_argument("--set-size", type=int, default=3)
    p.add_argument("--max-iterations", type=int, default=2)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--bandit-episodes", type=int, default=30)
    p.add_argument("--out", default=str(HERE / "robust"))
    a = p.parse_args()
    torch.set_num_threads(1)
    ppo = PPOConfig(eval_every=0)
    tests = [AttackSpec("none", 0.0), AttackSpec("random", a.eps), AttackSpec("mad", a.eps)]
    rows: dict[str, dict[str, list[float]]] = {m: {s.name: [] for s in tests} for m in ("ppo", "worst_case_ppo", "set_exp3")}
    extra: list[dict] = []
    t0 = time.perf_counter()
    for seed in a.seeds:
        base = train_ppo(a.env, a.steps, seed, ppo)
        worst = train_ppo(a.env, a.steps, seed, ppo, spec=tests[2])
        cfg = NonDominatedConfig(env=a.env, seed=seed, base_steps=a.steps, candidate_steps=a.candidate_steps,
                                 set_size=a.set_size, max_iterations=a.max_iterations, eps_grid=(a.eps / 2, a.eps),
                                 progress=False)
        found = discover(cfg, ppo, base=base)
        hi = float(found.returns.max())
        seed_info = {"seed": seed, "set_size": len(found.policies), "grid": [s.name for s in found.grid],
                     "set_returns": found.returns.tolist(), "history": found.history, "return_range": [0.0, hi],
                     "bandit": {}}
        for spec in tests:
            for name, agent in (("ppo", base), ("worst_case_ppo", worst)):
                rows[name][spec.name].append(float(np.mean(evaluate_under_attack(agent, a.env, spec, a.eval_episodes))))
            run, raw = adaptive_defence(found.policies, a.env, spec, a.bandit_episodes, (0.0, hi))
            rows["set_exp3"][spec.name].append(float(np.mean(raw)))
            seed_info["bandit"][spec.name] = {"episodes": len(raw), "mean_return": float(np.mean(raw)),
                                              "last_third_mean": float(np.mean(raw[-(len(raw) // 3):])),
                                              "pull_share": run.pull_share(len(found.policies)),
                                              "final_probabilities": run.final_probabilities}
        extra.append(seed_info)
        print(json.dumps({k: {s: v[-1] for s, v in r.items()} for k, r in rows.items()}), flush=True)
    wall = time.perf_counter() - t0
    results = {m: {s: {"mean": float(np.mean(v)), "std": float(np.std(v)), "per_seed": v} for s, v in r.items()}
               for m, r in rows.items()}
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), "
               f"torch {torch.__version__}, 1 thread")
    summary = {"env": a.env, "args": vars(a), "ppo_config": to_dict(ppo), "machine": machine, "wall_s": wall,
               "results": results, "per_seed": extra}
    out = Path(a.out)
    atomic_write_text(out.with_suffix(".json"), json.dumps(summary, indent=2))
    names = [s.name for s in tests]
    lines = [f"# Robust RL on {a.env}: natural and attacked returns, eps = {a.eps} (l-inf, raw observation)", "",
             f"Seeds {a.seeds}; (a) and (b) {a.steps} env steps each; set candidates {a.candidate_steps} steps "
             f"(warm-started), K <= {a.set_size}, <= {a.max_iterations} candidates, grid none + random / mad at "
             f"eps {a.eps / 2:g}, {a.eps:g}. (a), (b): mean over {a.eval_episodes} deterministic episodes; set + EXP3: "
             f"mean over the {a.bandit_episodes} bandit episodes per attack (the bandit restarts for each attack). "
             f"Mean +- std over seeds. Wall {wall:.0f} s on {machine}.", "",
             "| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for m, r in results.items():
        lines.append(f"| {m} | " + " | ".join(f"{r[s]['mean']:.1f} +- {r[s]['std']:.1f}" for s in names) + " |")
    lines += ["", "Per seed: set size, bandit pull shares per attack.", ""]
    for e in extra:
        shares = "; ".join(f"{s}: {[round(x, 2) for x in b['pull_share']]}" for s, b in e["bandit"].items())
        lines.append(f"- seed {e['seed']}: |Pi| = {e['set_size']}, kept/tried "
                     f"{[(h['attack'], h['kept']) for h in e['history']]}; {shares}")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
