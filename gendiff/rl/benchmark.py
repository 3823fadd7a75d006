"""Algorithms x seeds on one environment (``gendiff gorl benchmark``): its config and runner.

Every (algorithm, seed) is one :func:`gendiff.rl.train.train_run` into OUT/<algo>_s<seed>/; the benchmark writes
OUT/summary.json, OUT/summary.md (final stochastic / deterministic returns, mean +- std over seeds, wall time) and
OUT/curves.png (mean +- std learning curves).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gendiff.config import check_numbers
from gendiff.io import atomic_path, atomic_write_text, refuse_existing
from gendiff.rl.algorithms import RL_ALGORITHMS
from gendiff.rl.train import GorlTrainConfig, plot_curves, train_run

__all__ = ["GorlBenchmarkConfig", "run_benchmark", "run_benchmark_command"]


@dataclass
class GorlBenchmarkConfig:
    """Algorithms x seeds on one env (configs/gorl_benchmark.yaml)."""

    env: str = "gendiff/TwoModes-v0"
    algos: tuple[str, ...] = field(default=("gorl_fm", "gorl_diffusion", "ppo", "sac"),
                                   metadata={"help": "comma-separated, from " + ", ".join(RL_ALGORITHMS.names())})
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 50_000
    out: str = "runs/gorl_benchmark"
    eval_every: int = 10_000
    eval_episodes: int = 5
    ppo_config: str | None = None
    sac_config: str | None = None
    gorl_config: str | None = None
    progress: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_numbers(self, positive=("steps", "eval_episodes"), nonnegative=("eval_every", "seeds"))
        unknown = [a for a in self.algos if a not in RL_ALGORITHMS]
        if not self.algos or not self.seeds or unknown:
            raise ValueError(f"GorlBenchmarkConfig: --algos and --seeds must be non-empty lists, algos from "
                             f"{RL_ALGORITHMS.names()}"
                             f" (got algos {list(self.algos)}, seeds {list(self.seeds)})")


def run_benchmark(cfg: GorlBenchmarkConfig) -> dict[str, Any]:
    """Every algo x seed via :func:`train_run`; writes summary.json, summary.md and curves.png."""
    out, rows, curves, agents = Path(cfg.out), {}, {}, {}
    refuse_existing([out / "summary.json", out / "summary.md", out / "curves.png"], cfg.overwrite)
    for algo in cfg.algos:
        for seed in cfg.seeds:
            run = GorlTrainConfig(env=cfg.env, algo=algo, steps=cfg.steps, seed=seed, out=str(out / f"{algo}_s{seed}"),
                                  eval_every=cfg.eval_every, eval_episodes=cfg.eval_episodes,
                                  ppo_config=cfg.ppo_config, sac_config=cfg.sac_config, gorl_config=cfg.gorl_config,
                                  progress=cfg.progress, overwrite=cfg.overwrite)
            m = train_run(run)
            agents[(algo, seed)] = m.pop("agent")
            rows.setdefault(algo, []).append(m)
            curves.setdefault(algo, []).append((m["curve"]["steps"], m["curve"]["mean"]))
    summary = {algo: {k: {"mean": float(np.mean([r[k] for r in rs])), "std": float(np.std([r[k] for r in rs])),
                          "per_seed": [r[k] for r in rs]}
                      for k in ("final_return_stochastic", "final_return_deterministic", "wall_s")}
               for algo, rs in rows.items()}
    atomic_write_text(out / "summary.json", json.dumps({"env": cfg.env, "steps": cfg.steps, "seeds": list(cfg.seeds),
                                                        "results": summary}, indent=2))
    lines = [f"# {cfg.env}, {cfg.steps} env steps, seeds {list(cfg.seeds)}", "",
             "| algo | return (stochastic) | return (deterministic) | wall s / run |", "|---|---|---|---|"]
    for algo, s in summary.items():
        st, de, w = s["final_return_stochastic"], s["final_return_deterministic"], s["wall_s"]
        lines.append(f"| {algo} | {st['mean']:.2f} +- {st['std']:.2f} | {de['mean']:.2f} +- {de['std']:.2f} "
                     f"| {w['mean']:.0f} |")
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    with atomic_path(out / "curves.png") as tmp:
        plot_curves(curves, tmp, f"{cfg.env} ({len(cfg.seeds)} seeds, mean +- std)")
    return {"summary": summary, "agents": agents, "rows": rows}


def run_benchmark_command(cfg: GorlBenchmarkConfig) -> dict[str, Any]:
    """``gendiff gorl benchmark``: :func:`run_benchmark`, then print the summary table; returns its result."""
    res = run_benchmark(cfg)
    print((Path(cfg.out) / "summary.md").read_text())
    return res
