"""The policy cliff, measured: a two-armed bandit with rewards (1, 1 + delta), delta swept across 0.

1. Closed form (``gendiff.rl.policy_cliff.regularized_optimum``): the unregularised optimum p(arm 1) jumps from 0 to 1
   at delta = 0; with entropy weight alpha it is sigmoid(delta / alpha).
2. Training (``train_softmax_policy``): exact gradient ascent on the softmax logits from the uniform policy, with and
   without the entropy bonus, for several step budgets. With alpha > 0 the trained map equals sigmoid(delta / alpha)
   at every budget past convergence; without, the map steepens without bound as the budget grows (its slope at 0 is
   ~ lr * steps / 2: the jump is the limit).
3. Stability, as the paper defines it: the largest |p(delta) - p(delta')| over neighbouring grid points and the slope
   dp / d delta at 0 (finite difference over +-``eps``), per setting.

    python benchmarks/llm/policy_cliff.py --out benchmarks/llm/policy_cliff.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gendiff.io import beside
from gendiff.rl.policy_cliff import regularized_optimum, train_softmax_policy


def p_arm1(deltas: torch.Tensor, alpha: float, steps: int | None, lr: float) -> torch.Tensor:
    """p(arm 1) per delta: the closed-form optimum (steps None) or the trained policy."""
    r = torch.stack([torch.ones_like(deltas), 1 + deltas], -1)
    pi = regularized_optimum(r, alpha) if steps is None else train_softmax_policy(r, alpha, steps, lr)
    return pi[:, 1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.02, 0.1])
    p.add_argument("--budgets", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--eps", type=float, default=1e-3, help="half-width of the slope's finite difference at 0")
    p.add_argument("--out", type=Path, default=Path("benchmarks/llm/policy_cliff.json"))
    args = p.parse_args()
    t0 = time.perf_counter()
    table = [-0.2, -0.05, -0.01, -args.eps, 0.0, args.eps, 0.01, 0.05, 0.2]
    grid = torch.linspace(-0.2, 0.2, 401, dtype=torch.float64)
    deltas = torch.cat([torch.tensor(table, dtype=torch.float64), grid])
    rows = []
    for alpha in args.alphas:
        for steps in [None, *args.budgets]:
            p1 = p_arm1(deltas, alpha, steps, args.lr)
            pt, pg = p1[: len(table)], p1[len(table):]
            slope = float((pt[table.index(args.eps)] - pt[table.index(-args.eps)]) / (2 * args.eps))
            row = {"alpha": alpha, "steps": steps, "p_arm1": [float(x) for x in pt],
                   "max_jump_between_grid_points": float((pg[1:] - pg[:-1]).abs().max()),
                   "grid_spacing": float(grid[1] - grid[0]), "slope_at_0": slope}
            if alpha > 0:
                row["max_err_vs_sigmoid"] = float((pg - torch.sigmoid(grid / alpha)).abs().max())
                row["lipschitz_bound"] = 1 / (4 * alpha)
            rows.append(row)
    res = {"deltas": table, "lr": args.lr, "rows": rows, "seconds": time.perf_counter() - t0}
    args.out.write_text(json.dumps(res, indent=2))
    md = ["# The policy cliff: p(arm 1) of a two-armed bandit with rewards (1, 1 + delta)", "",
          f"Exact gradient ascent on softmax logits from the uniform policy, lr {args.lr}; 'optimum' is the closed "
          "form (alpha = 0: the jump, 1/2 at the tie; alpha > 0: sigmoid(delta / alpha)). Max jump: the largest "
          f"change of p between neighbouring deltas {rows[0]['grid_spacing']:.0e} apart on [-0.2, 0.2]; slope: "
          f"(p(+{args.eps}) - p(-{args.eps})) / {2 * args.eps}; error: max |p - sigmoid(delta / alpha)| on the grid.",
          "", "alpha | steps | " + " | ".join(f"d={d:g}" for d in table) + " | max jump | slope at 0 | error",
          "---|---|" + "---|" * len(table) + "---|---|---"]
    for r in rows:
        err = f"{r['max_err_vs_sigmoid']:.1e}" if "max_err_vs_sigmoid" in r else "-"
        md.append(f"{r['alpha']:g} | {r['steps'] or 'optimum'} | " + " | ".join(f"{x:.3f}" for x in r["p_arm1"])
                  + f" | {r['max_jump_between_grid_points']:.3f} | {r['slope_at_0']:.3g} | {err}")
    beside(args.out, ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
