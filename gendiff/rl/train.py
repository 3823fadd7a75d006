"""One online-RL training run (``gendiff gorl train``): its config, the agent it builds, its final evaluation.

:func:`train_run` writes OUT/metrics.json (learning curve, final stochastic and deterministic returns, wall time),
OUT/curve.png, OUT/config.yaml and the trained agent (OUT/model/: reload with ``GoRL.load``, ``PPO.load`` or
``SAC.load``; safetensors and JSON). Base-learner settings come from the ``ppo_config`` / ``sac_config`` /
``gorl_config`` YAML files (configs/gorl_*.yaml). An existing OUT/metrics.json is never overwritten unless
``overwrite`` is true.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gendiff.config import check_numbers, save_config
from gendiff.io import discard_staging, recover_swap, refuse_existing, seed_everything, staging_dir, swap_dir
from gendiff.rl.algorithms import RL_ALGORITHMS, Agent, Built

__all__ = ["FINAL_EVAL_SEED", "GorlTrainConfig", "build", "build_agent", "check_algorithm", "final_returns", "plot_curves",
           "run_train_command", "train_run"]


def check_algorithm(name: str, where: str) -> None:
    """Raise ValueError naming ``where`` (the config field) and every registered algorithm when ``name`` is unknown."""
    try:
        RL_ALGORITHMS.get(name)
    except KeyError as err:
        raise ValueError(f"{where}: {err.args[0]}") from None


@dataclass
class GorlTrainConfig:
    """One training run (configs/gorl_train.yaml mirrors these defaults)."""

    env: str = "gendiff/TwoModes-v0"
    algo: str = field(default="gorl_fm", metadata={"help": "one of " + ", ".join(RL_ALGORITHMS.names())})
    steps: int = 50_000
    seed: int = 0
    out: str = "runs/gorl"
    eval_every: int = 10_000
    eval_episodes: int = 5
    final_eval_episodes: int = 20
    ppo_config: str | None = None
    sac_config: str | None = None
    gorl_config: str | None = None
    progress: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_algorithm(self.algo, "GorlTrainConfig.algo (--algo)")
        check_numbers(self, positive=("steps", "eval_episodes", "final_eval_episodes"), nonnegative=("eval_every",))


def build(cfg: GorlTrainConfig) -> Built:
    """The agent for ``cfg.algo`` and its learner (``learn(steps, progress)`` on ``cfg.env`` with ``cfg.seed``): its
    builder in :data:`RL_ALGORITHMS` (GoRL / PPO / SAC / PMOESAC), configured from the YAML files; an unknown name
    raises listing the registered ones."""
    check_algorithm(cfg.algo, "GorlTrainConfig.algo (--algo)")
    return RL_ALGORITHMS.get(cfg.algo)(cfg)


def build_agent(cfg: GorlTrainConfig) -> Agent:
    """The agent for ``cfg.algo`` (see :func:`build`)."""
    return build(cfg).agent


def _act_fn(agent: Agent, deterministic: bool) -> Callable[[np.ndarray], np.ndarray]:
    """The agent's action function (observation -> action), stochastic or deterministic."""
    return lambda o: agent.act(o, deterministic)


def _owned(p: Path) -> bool:
    """What a run writes into its --out folder (replaced by a new run; other files there are kept)."""
    return p.name in ("metrics.json", "curve.png", "config.yaml", "model")


FINAL_EVAL_SEED = 50_000  # episode seeds FINAL_EVAL_SEED, +1, ... of every run's final evaluation


def final_returns(agent: Agent, env_id: str, episodes: int) -> dict[str, list[float]]:
    """Per-episode returns of ``agent`` on ``episodes`` episodes (evaluation seeds FINAL_EVAL_SEED+), stochastic and
    deterministic: the final evaluation of every run."""
    from gendiff.rl.common import evaluate  # lazily, as the rest of the RL stack

    return {mode: evaluate(_act_fn(agent, mode == "deterministic"), env_id, episodes, seed=FINAL_EVAL_SEED)
            for mode in ("stochastic", "deterministic")}


def plot_curves(curves: dict[str, list[tuple[list[int], list[float]]]], path: Path, title: str) -> None:
    """Mean +- std learning curves per label; ``curves[label]`` holds (steps, returns) per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, runs in curves.items():
        n = min(len(s) for s, _ in runs)
        if n == 0:
            continue
        x = np.asarray(runs[0][0][:n])
        y = np.asarray([r[:n] for _, r in runs])
        ax.plot(x, y.mean(0), label=label)
        ax.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_run(cfg: GorlTrainConfig) -> dict[str, Any]:
    """Train, evaluate (stochastic and deterministic), write metrics.json + curve.png + weights.

    Everything is written to a staging folder beside ``cfg.out`` and swapped in when complete: an earlier run there
    is replaced (``--overwrite``) only after success, and a kill leaves it as it was.
    """
    out = Path(cfg.out)
    recover_swap(out, _owned)
    refuse_existing([out / "metrics.json"], cfg.overwrite)
    seed_everything(cfg.seed)
    built = build(cfg)
    agent = built.agent
    log = built.learner.learn(cfg.steps, progress=cfg.progress)
    final = final_returns(agent, cfg.env, cfg.final_eval_episodes)
    metrics = {
        "env": cfg.env, "algo": cfg.algo, "seed": cfg.seed, "steps": cfg.steps, "wall_s": log.wall_s,
        "curve": {"steps": log.steps, "mean": log.eval_mean, "std": log.eval_std},
        "train_returns": log.train_returns,
        "final_return_stochastic": float(np.mean(final["stochastic"])),
        "final_return_deterministic": float(np.mean(final["deterministic"])),
        "last_metrics": log.metrics,
        "stages": [dataclasses.asdict(s) for s in getattr(agent, "stages", [])],
    }
    discard_staging(out)
    stage = staging_dir(out)
    stage.mkdir(parents=True)
    save_config(cfg, stage)
    agent.save(stage / "model")  # load with <Algo>.load(out / "model")
    (stage / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_curves({cfg.algo: [(log.steps, log.eval_mean)]}, stage / "curve.png", f"{cfg.algo} on {cfg.env}")
    swap_dir(stage, out, _owned)
    metrics["agent"] = agent
    return metrics


def run_train_command(cfg: GorlTrainConfig) -> dict[str, Any]:
    """``gendiff gorl train``: :func:`train_run`, printing env, algo, seed, steps, final returns and wall time as
    JSON; returns the metrics (with the trained ``agent``)."""
    metrics = train_run(cfg)
    keys = ("env", "algo", "seed", "steps", "final_return_stochastic", "final_return_deterministic", "wall_s")
    print(json.dumps({k: metrics[k] for k in keys}, indent=2))
    return metrics
