"""Natural and attacked returns of PPO, worst-case PPO and the non-dominated set with EXP3 (gendiff.rl.nondominated),
at equal env-step budgets and a bandit horizon of ``--horizon`` episodes.

Per seed:
  (c) the non-dominated set is discovered first (pi_1: ``--base-steps`` of attack-free PPO; candidates:
      ``--candidate-steps`` each, warm-started, under the set's weakest grid attack); every env step it uses is
      counted, training (warm-started candidates included) and the evaluation episodes of its returns table R;
  (a) PPO without attack and (b) PPO trained from scratch under the gradient (MAD) attack at eps then get that same
      number of env steps (rounded up to whole rollouts);
  test: for each attack (none, random@eps, mad@eps) one batched run gives every member's return on each of the
      ``--horizon`` episodes (episode t: env seed 20000 + t); EXP3 plays that table for ``--bandit-seeds`` bandit
      seeds (the attacker is oblivious, so this is the bandit game itself); the row is the bandit's average return
      over the horizon (the paper's regret-style number). (a) and (b) are evaluated on the first ``--eval-episodes``
      of the same episodes.
Writes OUT.json and OUT.md (OUT relative to this folder unless absolute).

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
from gendiff.io import atomic_write_text, beside
from gendiff.rl.attacks import AttackSpec, evaluate_policies_under_attack, ppo_policy
from gendiff.rl.nondominated import NonDominatedConfig, defence_table, discover, train_ppo, trained_steps
from gendiff.rl.ppo import PPOConfig

HERE = Path(__file__).resolve().parent
TEST_SEED = 20_000  # episode t of the test horizon: env seed TEST_SEED + t (discovery's R uses 10_000 + e)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="InvertedPendulum-v5")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eps", type=float, default=0.1, help="l-inf radius of the attacks (raw observation)")
    p.add_argument("--base-steps", type=int, default=20_480, help="env steps of the set's attack-free pi_1")
    p.add_argument("--candidate-steps", type=int, default=8_192, help="env steps of each set candidate (warm start)")
    p.add_argument("--set-size", type=int, default=3)
    p.add_argument("--max-iterations", type=int, default=2)
    p.add_argument("--grid-episodes", type=int, default=2, help="episodes per entry of the set's returns table R")
    p.add_argument("--horizon", type=int, default=150, help="bandit rounds (episodes) per attack at test time")
    p.add_argument("--bandit-seeds", type=int, default=20, help="EXP3 runs on each table")
    p.add_argument("--eval-episodes", type=int, default=30, help="test episodes of (a) and (b) per attack")
    p.add_argument("--out", default="robust", help="output stem, relative to this folder unless absolute")
    a = p.parse_args()
    if a.eval_episodes > a.horizon:
        p.error(f"--eval-episodes ({a.eval_episodes}) must be <= --horizon ({a.horizon})")
    torch.set_num_threads(1)
    ppo = PPOConfig(eval_every=0)
    tests = [AttackSpec("none", 0.0), AttackSpec("random", a.eps), AttackSpec("mad", a.eps)]
    methods = ("ppo", "worst_case_ppo", "set_exp3", "set_best_member", "set_uniform")
    rows: dict[str, dict[str, list[float]]] = {m: {s.name: [] for s in tests} for m in methods}
    extra: list[dict] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for seed in a.seeds:
        ts = time.perf_counter()
        cfg = NonDominatedConfig(env=a.env, seed=seed, base_steps=a.base_steps, candidate_steps=a.candidate_steps,
                                 set_size=a.set_size, max_iterations=a.max_iterations, eps_grid=(a.eps,),
                                 eval_episodes=a.grid_episodes, progress=False)
        found = discover(cfg, ppo)
        per_iter = ppo.num_envs * ppo.num_steps
        budget = -(-found.total_env_steps // per_iter) * per_iter  # whole rollouts, >= the set's total
        t_set = time.perf_counter() - ts
        base = train_ppo(a.env, budget, seed, ppo)
        worst = train_ppo(a.env, budget, seed, ppo, spec=tests[2])
        t_train = time.perf_counter() - ts
        hi = float(found.returns.max())
        info = {"seed": seed, "set_size": len(found.policies), "grid": [s.name for s in found.grid],
                "set_returns": found.returns.tolist(), "history": found.history, "return_range": [0.0, hi],
                "env_steps": {"set": found.env_steps, "set_total": found.total_env_steps,
                              "ppo": trained_steps(budget, ppo), "worst_case_ppo": trained_steps(budget, ppo)},
                "test": {}}
        policies = [ppo_policy(x) for x in [*found.policies, base, worst]]
        K = len(found.policies)
        for spec in tests:
            ret, length = evaluate_policies_under_attack(policies, a.env, spec, a.horizon, TEST_SEED, attack_seed=seed)
            table = defence_table(ret[:K], (0.0, hi), list(range(a.bandit_seeds)))
            third = a.horizon // 3
            base_r, worst_r = ret[K, :a.eval_episodes], ret[K + 1, :a.eval_episodes]
            for m, v in (("ppo", base_r.mean()), ("worst_case_ppo", worst_r.mean()), ("set_exp3", table.mean_return),
                         ("set_best_member", table.best_member_return), ("set_uniform", ret[:K].mean())):
                rows[m][spec.name].append(float(v))
            info["test"][spec.name] = {
                "member_means": ret[:K].mean(1).tolist(), "exp3_mean_return": table.mean_return,
                "exp3_mean_return_per_bandit_seed": table.bandit_returns.mean(1).tolist(),
                "exp3_first_third": table.mean_return_window(0, third),
                "exp3_last_third": table.mean_return_window(a.horizon - third, a.horizon),
                "regret_per_round": table.best_member_return - table.mean_return,
                "pull_share": table.pull_share(), "ppo_std": float(base_r.std()),
                "worst_case_ppo_std": float(worst_r.std()), "env_steps": int(length.sum())}
        info["wall_s"] = {"set": t_set, "set_and_baselines": t_train, "total": time.perf_counter() - ts}
        info["cpu_s_cumulative"] = time.process_time() - c0
        extra.append(info)
        print(json.dumps({k: {s: round(v[-1], 1) for s, v in r.items()} for k, r in rows.items()}), flush=True)
        write(a, rows, extra, time.perf_counter() - t0, [s.name for s in tests], ppo)  # the seeds so far


def write(a: argparse.Namespace, rows: dict[str, dict[str, list[float]]], extra: list[dict], wall: float,
          names: list[str], ppo: PPOConfig) -> None:
    """OUT.json and OUT.md for the seeds done so far."""
    results = {m: {s: {"mean": float(np.mean(v)), "std": float(np.std(v)), "per_seed": v} for s, v in r.items()}
               for m, r in rows.items()}
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), "
               f"torch {torch.__version__}, 1 thread")
    out = Path(a.out) if Path(a.out).is_absolute() else HERE / a.out
    summary = {"env": a.env, "args": vars(a), "ppo_config": to_dict(ppo), "machine": machine, "wall_s": wall,
               "results": results, "per_seed": extra}
    atomic_write_text(beside(out, ".json"), json.dumps(summary, indent=2))
    atomic_write_text(beside(out, ".md"), markdown(a, results, extra, wall, machine, names))
    if len(extra) == len(a.seeds):
        print(beside(out, ".md").read_text())


def markdown(a: argparse.Namespace, results: dict, extra: list[dict], wall: float, machine: str,
             names: list[str]) -> str:
    """The result table, the budgets and the bandit's pull shares per seed."""
    budgets = ", ".join(f"{e['env_steps']['set_total']} ({e['env_steps']['set']['train']} train + "
                        f"{e['env_steps']['set']['eval']} eval) -> {e['env_steps']['ppo']}" for e in extra)
    lines = [f"# Robust RL on {a.env}: natural and attacked returns, eps = {a.eps} (l-inf, raw observation)", "",
             f"Seeds {[e['seed'] for e in extra]} of {a.seeds}. Equal env-step budgets: the set's pi_1 {a.base_steps} steps, <= {a.max_iterations} "
             f"warm-started candidates of {a.candidate_steps} steps (grid none, random@{a.eps:g}, mad@{a.eps:g}; "
             f"{a.grid_episodes} episodes per entry of R), K <= {a.set_size}; (a) and (b) then get the set's total "
             f"env steps rounded up to whole rollouts: per seed set total (train + eval) -> (a), (b): {budgets}. "
             f"set_exp3: EXP3 over the set for a horizon of {a.horizon} episodes per attack, average return over "
             f"the horizon, mean over {a.bandit_seeds} bandit seeds; set_best_member: the best fixed member in "
             f"hindsight on those episodes; set_uniform: the members' average. (a), (b): mean over the first "
             f"{a.eval_episodes} of the same episodes. Mean +- std over seeds. Wall {wall:.0f} s (CPU "
             f"{extra[-1]['cpu_s_cumulative']:.0f} s) on {machine}.", "",
             "| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for m, r in results.items():
        lines.append(f"| {m} | " + " | ".join(f"{r[s]['mean']:.1f} +- {r[s]['std']:.1f}" for s in names) + " |")
    lines += ["", "Per seed: the set, its members' mean return per test attack, EXP3's pull shares (mean over bandit "
              "seeds) and its average return in the first / last third of the horizon.", ""]
    for e in extra:
        lines.append(f"- seed {e['seed']}: |Pi| = {e['set_size']}, kept/tried "
                     f"{[(h['attack'], h['kept']) for h in e['history']]}")
        for s, t in e["test"].items():
            lines.append(f"  - {s}: members {[round(x, 1) for x in t['member_means']]}, pulls "
                         f"{[round(x, 2) for x in t['pull_share']]}, first / last third "
                         f"{t['exp3_first_third']:.1f} / {t['exp3_last_third']:.1f}, regret per round "
                         f"{t['regret_per_round']:.1f}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
