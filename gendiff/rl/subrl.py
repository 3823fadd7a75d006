"""``gendiff subrl train`` and ``gendiff subrl benchmark``: submodular RL runs (gendiff.rl.subpo), configs and runners.

- :func:`run_subrl_train`: one SubPO (``--reward marginal``) or additive policy-gradient (``--reward additive``) run;
  writes OUT/metrics.json (learning curve of F, final F of the stochastic and greedy-argmax policies, wall time),
  OUT/curve.png and OUT/config.yaml.
- :func:`run_subrl_benchmark`: methods x seeds on one task with the same episode budget; writes OUT.json,
  OUT.md (machine, settings, seeds; F mean +- std over seeds and per seed) and OUT_curves.png (``out`` is a path
  stem). Methods: ``subpo``, ``additive_pg``, ``random`` (uniform actions) and ``greedy`` (the one-step greedy
  policy that knows F and the dynamics; a reference, not a learner). For the uniform map the table also gives the
  upper bound F <= (2r+1)^2 + H (2r+1) (at most one new row of the footprint per step), capped at N^2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from gendiff.config import check_numbers, save_config, to_dict
from gendiff.io import atomic_path, atomic_write_text, refuse_existing
from gendiff.rl.subpo import SubPO, SubPOConfig, SubPOSettings, run_baseline_policy

__all__ = ["SubRLBenchmarkConfig", "SubRLTrainConfig", "coverage_upper_bound", "run_subrl_benchmark",
           "run_subrl_train"]

Method = Literal["subpo", "additive_pg", "random", "greedy"]
FINAL_EVAL_EPISODES = 256  # episodes of every method's final F


@dataclass
class SubRLTrainConfig(SubPOConfig):
    """One run (configs/subrl_train.yaml mirrors these defaults)."""

    out: str = "runs/subrl"  # folder for metrics.json, curve.png, config.yaml
    overwrite: bool = False  # replace an earlier run's metrics.json


@dataclass
class SubRLBenchmarkConfig(SubPOSettings):
    """Methods x seeds on one task (configs/subrl_benchmark.yaml mirrors these defaults)."""

    methods: tuple[Method, ...] = ("subpo", "additive_pg", "random", "greedy")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    out: str = "runs/subrl_benchmark"  # path stem: writes OUT.json, OUT.md, OUT_curves.png
    overwrite: bool = False  # replace earlier result files

    def __post_init__(self) -> None:
        super().__post_init__()
        check_numbers(self, nonnegative=("seeds",))
        unknown = [m for m in self.methods if m not in typing.get_args(Method)]
        if not self.methods or not self.seeds or unknown:
            raise ValueError(f"SubRLBenchmarkConfig.methods and .seeds must be non-empty, methods from "
                             f"{list(typing.get_args(Method))}; got {list(self.methods)}, {list(self.seeds)}")


def coverage_upper_bound(grid_size: int, horizon: int, radius: int) -> int:
    """Largest F on the uniform map: (2r+1)^2 at s_0, at most 2r+1 new cells per step, at most N^2 in all."""
    side = 2 * radius + 1
    return min(grid_size**2, side * side + horizon * side)


def _final(agent: SubPO) -> dict[str, Any]:
    stoch = agent.evaluate(FINAL_EVAL_EPISODES)
    return {"objective": float(stoch.mean()), "objective_episode_std": float(stoch.std()),
            "objective_deterministic": float(agent.evaluate(1, deterministic=True)[0])}


def _plot(curves: dict[str, list[tuple[list[int], list[float]]]], lines: dict[str, float], path: Path,
          title: str, batch: int) -> None:
    """Mean +- std of F over seeds against training episodes; ``lines`` are flat references (random, greedy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, runs in curves.items():
        x = np.asarray(runs[0][0]) * batch
        y = np.asarray([r for _, r in runs])
        ax.plot(x, y.mean(0), label=label)
        ax.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), alpha=0.2)
    for label, value in lines.items():
        ax.axhline(value, ls="--", lw=1, color="grey" if label == "random" else "black", label=label)
    ax.set_xlabel("training episodes")
    ax.set_ylabel("F(visited set), evaluation mean")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_subrl_train(cfg: SubRLTrainConfig) -> dict[str, Any]:
    """Train one SubPO / additive-PG policy; write OUT/metrics.json, OUT/curve.png, OUT/config.yaml; print a
    summary. Returns the metrics (with the trained ``agent``)."""
    out = Path(cfg.out)
    refuse_existing([out / "metrics.json"], cfg.overwrite)
    base = SubPOConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(SubPOConfig)})
    agent = SubPO(base)
    log = agent.learn()
    metrics = {"config": to_dict(base), **_final(agent), "wall_s": log.wall_s,
               "curve": {"iterations": log.iterations, "mean": log.objective_mean, "std": log.objective_std}}
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    with atomic_path(out / "curve.png") as tmp:
        _plot({cfg.reward: [(log.iterations, log.objective_mean)]}, {}, tmp,
              f"{cfg.reward} policy gradient, {cfg.weights} map", cfg.batch_episodes)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    print(json.dumps({k: metrics[k] for k in ("objective", "objective_deterministic", "wall_s")}, indent=2))
    return {**metrics, "agent": agent}


def _machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s), python {platform.python_version()}")


def run_subrl_benchmark(cfg: SubRLBenchmarkConfig) -> dict[str, Any]:
    """Every method x seed (learners with the same budget: ``iterations`` x ``batch_episodes`` episodes); F of the
    final policy over 256 episodes per seed; writes OUT.json, OUT.md, OUT_curves.png."""
    out = Path(cfg.out)
    paths = [out.with_name(out.name + s) for s in (".json", ".md", "_curves.png")]
    refuse_existing(paths, cfg.overwrite)
    settings = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(SubPOSettings)}
    task = SubPOConfig(**settings).task()
    results: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[tuple[list[int], list[float]]]] = {}
    for method in cfg.methods:
        rows = []
        for seed in cfg.seeds:
            if method in ("subpo", "additive_pg"):
                reward = "marginal" if method == "subpo" else "additive"
                agent = SubPO(SubPOConfig(**settings, reward=reward, seed=seed))
                log = agent.learn()
                rows.append({"seed": seed, **_final(agent), "wall_s": log.wall_s})
                curves.setdefault(method, []).append((log.iterations, log.objective_mean))
            else:
                f = run_baseline_policy(task, method, FINAL_EVAL_EPISODES, seed)
                rows.append({"seed": seed, "objective": float(f.mean()), "objective_episode_std": float(f.std())})
        per_seed = [r["objective"] for r in rows]
        results[method] = {"objective_mean": float(np.mean(per_seed)), "objective_std": float(np.std(per_seed)),
                           "per_seed": rows}
    bound = coverage_upper_bound(cfg.grid_size, cfg.horizon, cfg.radius) if cfg.weights == "uniform" else None
    summary = {"settings": to_dict(cfg), "machine": _machine(), "episodes_per_learner": cfg.iterations
               * cfg.batch_episodes, "final_eval_episodes": FINAL_EVAL_EPISODES, "upper_bound": bound,
               "results": results}
    atomic_write_text(paths[0], json.dumps(summary, indent=2))
    atomic_write_text(paths[1], _markdown(cfg, summary))
    with atomic_path(paths[2]) as tmp:
        _plot(curves, {m: results[m]["objective_mean"] for m in ("random", "greedy") if m in results}, tmp,
              f"{cfg.weights} map {cfg.grid_size}x{cfg.grid_size}, H={cfg.horizon} ({len(cfg.seeds)} seeds)",
              cfg.batch_episodes)
    print(paths[1].read_text())
    return summary


def _markdown(cfg: SubRLBenchmarkConfig, s: dict[str, Any]) -> str:
    lines = [f"# Submodular RL: SubPO vs additive policy gradient, {cfg.weights} map", "",
             f"Machine: {s['machine']}.", "",
             f"Task: {cfg.grid_size} x {cfg.grid_size} grid, horizon H = {cfg.horizon}, sensing radius {cfg.radius}, "
             f"weights {cfg.weights}" + (f" (map seed {cfg.map_seed})" if cfg.weights == "biodiversity" else "")
             + f", start at the centre, policy input `{cfg.observe}`.",
             f"Learners: MLP {list(cfg.hidden)}, Adam lr {cfg.lr}, {cfg.iterations} updates x {cfg.batch_episodes} "
             f"episodes = {s['episodes_per_learner']} episodes each, entropy {cfg.entropy_coef}. "
             f"Seeds {list(cfg.seeds)}. F = mean over {s['final_eval_episodes']} episodes of the final stochastic "
             "policy, per seed; the table gives mean +- std over seeds.", ""]
    if s["upper_bound"] is not None:
        lines += [f"Upper bound on F for this uniform map: {s['upper_bound']} cells.", ""]
    lines += ["| method | F mean +- std over seeds | per seed | F of argmax policy (per seed) |", "|---|---|---|---|"]
    for m, r in s["results"].items():
        per = ", ".join(f"{x['objective']:.2f}" for x in r["per_seed"])
        det = ", ".join(f"{x['objective_deterministic']:.2f}" for x in r["per_seed"] if "objective_deterministic" in x)
        lines.append(f"| {m} | {r['objective_mean']:.2f} +- {r['objective_std']:.2f} | {per} | {det or '-'} |")
    return "\n".join(lines) + "\n"
