"""Conservative exploration experiments (``gendiff tabular conservative``): learners x seeds on one task of the suite.

Every episode k, the learner's plan (gendiff/rl/tabular/learner.py) is evaluated EXACTLY on the true MDP: its expected
return v_k = sum_i w_i V^{pi_i}, the regret V* - v_k and a violation when v_k < (1 - alpha) V^b (tolerance 1e-9). For
randomised plans (EpsMix) ``component_violations`` also counts the episodes whose drawn policy alone falls below the
threshold. Writes OUT/results.json (settings, per-seed curves and counts), OUT/summary.md and OUT/regret.png.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gendiff.config import check_numbers
from gendiff.io import atomic_path, atomic_write_text, refuse_existing
from gendiff.rl.tabular.learner import TABULAR_LEARNERS, LearnerSetup
from gendiff.rl.tabular.mdp import TABULAR_TASKS, ConservativeTask, expected_return, sample_episode

__all__ = ["ConservativeConfig", "plot_regret", "run_conservative", "run_conservative_command", "run_learner"]


@dataclass
class ConservativeConfig:
    """Learners x seeds on one tabular task under the episode-wise conservative constraint."""

    task: str = field(default="river_swim", metadata={"help": "one of " + ", ".join(TABULAR_TASKS.names())})
    algos: tuple[str, ...] = field(default=("ucbvi", "stepmix", "stepmix_switch", "epsmix", "baseline"),
                                   metadata={"help": "comma-separated, from " + ", ".join(TABULAR_LEARNERS.names())})
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    episodes: int = 3000  # K, episodes per run
    alpha: float = 0.1  # constraint: every episode's expected return >= (1 - alpha) V^b; in (0, 1)
    delta: float = 0.05  # confidence of the bonuses; in (0, 1)
    bonus_scale: float = 0.3  # multiplies the L1 confidence width (1 = the width with the guarantee)
    n_states: int = 6  # S of the task
    horizon: int = 20  # H of the task
    task_seed: int = 0  # seed of a random task (random_dirichlet); the same MDP for every run seed
    baseline_skill: float = 0.9  # the baseline plays an optimal action w.p. this, its fallback otherwise
    out: str = "runs/conservative"
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_numbers(self, positive=("episodes", "bonus_scale", "n_states", "horizon"),
                      nonnegative=("seeds", "task_seed"), fraction=("baseline_skill",))
        for name in ("alpha", "delta"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ValueError(f"ConservativeConfig.{name} (--{name}) must lie in (0, 1), got {v!r}")
        if self.task not in TABULAR_TASKS:
            raise ValueError(f"ConservativeConfig.task (--task): unknown {self.task!r}; valid names: "
                             f"{', '.join(TABULAR_TASKS.names())}")
        unknown = [a for a in self.algos if a not in TABULAR_LEARNERS]
        if not self.algos or not self.seeds or unknown:
            raise ValueError(f"ConservativeConfig: --algos and --seeds must be non-empty, algos from "
                             f"{TABULAR_LEARNERS.names()} (got algos {list(self.algos)}, seeds {list(self.seeds)})")

    def make_task(self) -> ConservativeTask:
        return TABULAR_TASKS.get(self.task)(n_states=self.n_states, horizon=self.horizon, seed=self.task_seed,
                                            baseline_skill=self.baseline_skill)


def run_learner(task: ConservativeTask, algo: str, seed: int, episodes: int, alpha: float, delta: float = 0.05,
                bonus_scale: float = 1.0) -> dict[str, Any]:
    """One learner for ``episodes`` episodes on ``task``; exact per-episode returns and violations.

    Returns:
        dict with ``returns`` [K] (exact expected return of each episode's plan), ``regret`` [K] (cumulative),
        ``violations`` (episodes below the threshold), ``component_violations``, ``first_full_optimism`` (the first
        episode whose plan is the optimistic policy alone, StepMix / EpsMix; None otherwise) and ``wall_s``.
    """
    setup = LearnerSetup.from_task(task, alpha=alpha, delta=delta, n_episodes=episodes, bonus_scale=bonus_scale)
    learner = TABULAR_LEARNERS.get(algo)(setup)
    rng = np.random.default_rng(seed)
    v_star, thr = task.optimal_value, setup.threshold
    returns = np.zeros(episodes)
    violations = component_violations = 0
    first_full = None
    t0 = time.perf_counter()
    for k in range(episodes):
        plan = learner.plan()
        values = np.array([float(expected_return(task.mdp, p)) for p in plan.components])
        w = np.asarray(plan.weights)
        returns[k] = float(w @ values)
        violations += int(returns[k] < thr - 1e-9)
        i = int(rng.choice(len(w), p=w))
        component_violations += int(values[i] < thr - 1e-9)
        if first_full is None and max(plan.info.get("t", 0.0), plan.info.get("rho", 0.0)) >= 1.0:
            first_full = k
        learner.observe(sample_episode(task.mdp, plan.components[i], rng))
    return {"algo": algo, "seed": seed, "returns": returns.tolist(),
            "regret": np.cumsum(v_star - returns).tolist(), "violations": violations,
            "component_violations": component_violations, "first_full_optimism": first_full,
            "wall_s": time.perf_counter() - t0}


def plot_regret(curves: dict[str, np.ndarray], path: Path, title: str) -> None:
    """Mean +- std cumulative regret per learner; ``curves[algo]`` is [seeds, K]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for algo, y in curves.items():
        x = np.arange(1, y.shape[1] + 1)
        ax.plot(x, y.mean(0), label=algo)
        ax.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), alpha=0.2)
    ax.set_xlabel("episode")
    ax.set_ylabel("cumulative regret (exact)")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _table(cfg: ConservativeConfig, task: ConservativeTask, summary: dict[str, Any]) -> str:
    lines = [f"# Conservative exploration on {cfg.task} (S={task.mdp.n_states}, A={task.mdp.n_actions}, "
             f"H={task.mdp.horizon})", "",
             f"V* = {task.optimal_value:.4f}, V^b = {task.baseline_value:.4f}, alpha = {cfg.alpha}, threshold "
             f"(1 - alpha) V^b = {(1 - cfg.alpha) * task.baseline_value:.4f}; K = {cfg.episodes} episodes, "
             f"delta = {cfg.delta}, bonus_scale = {cfg.bonus_scale}, seeds {list(cfg.seeds)}; "
             f"machine: {platform.machine()} {platform.processor() or ''} (1 thread)", "",
             "| algo | regret at K (mean +- std) | violating episodes (per seed) | drawn-policy violations | "
             "first fully optimistic episode | wall s / run |", "|---|---|---|---|---|---|"]
    for algo, s in summary.items():
        ff = s["first_full_optimism"]
        lines.append(f"| {algo} | {s['regret']['mean']:.1f} +- {s['regret']['std']:.1f} | "
                     f"{sum(s['violations'])} ({', '.join(map(str, s['violations']))}) | "
                     f"{sum(s['component_violations'])} | {', '.join('-' if f is None else str(f) for f in ff)} | "
                     f"{s['wall_s']:.1f} |")
    return "\n".join(lines) + "\n"


def run_conservative(cfg: ConservativeConfig) -> dict[str, Any]:
    """Every algo x seed via :func:`run_learner`; writes results.json, summary.md and regret.png under ``cfg.out``."""
    out = Path(cfg.out)
    refuse_existing([out / "results.json", out / "summary.md", out / "regret.png"], cfg.overwrite)
    task = cfg.make_task()
    runs = {a: [run_learner(task, a, s, cfg.episodes, cfg.alpha, cfg.delta, cfg.bonus_scale) for s in cfg.seeds]
            for a in cfg.algos}
    curves = {a: np.array([r["regret"] for r in rs]) for a, rs in runs.items()}
    summary = {a: {"regret": {"mean": float(curves[a][:, -1].mean()), "std": float(curves[a][:, -1].std()),
                              "per_seed": curves[a][:, -1].tolist()},
                   "violations": [r["violations"] for r in rs],
                   "component_violations": [r["component_violations"] for r in rs],
                   "first_full_optimism": [r["first_full_optimism"] for r in rs],
                   "wall_s": float(np.mean([r["wall_s"] for r in rs]))}
               for a, rs in runs.items()}
    every = max(1, cfg.episodes // 200)
    result = {"config": asdict(cfg), "optimal_value": task.optimal_value, "baseline_value": task.baseline_value,
              "threshold": (1 - cfg.alpha) * task.baseline_value, "summary": summary,
              "regret_curves": {"episodes": list(range(every, cfg.episodes + 1, every)),
                                **{a: c[:, every - 1::every].tolist() for a, c in curves.items()}}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(result, indent=1))
    atomic_write_text(out / "summary.md", _table(cfg, task, summary))
    with atomic_path(out / "regret.png") as tmp:
        plot_regret(curves, tmp, f"{cfg.task}, alpha={cfg.alpha} ({len(cfg.seeds)} seeds, mean +- std)")
    return result


def run_conservative_command(cfg: ConservativeConfig) -> dict[str, Any]:
    """``gendiff tabular conservative``: :func:`run_conservative`, then print the summary table."""
    res = run_conservative(cfg)
    print((Path(cfg.out) / "summary.md").read_text())
    return res
