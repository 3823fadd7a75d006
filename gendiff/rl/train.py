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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gendiff.config import check_literal_fields, check_numbers, from_dict, load_yaml, save_config
from gendiff.io import discard_staging, recover_swap, refuse_existing, seed_everything, staging_dir, swap_dir

__all__ = ["ALGOS", "FINAL_EVAL_SEED", "GorlTrainConfig", "build_agent", "final_returns", "plot_curves",
           "run_train_command", "train_run"]

ALGOS = ("gorl_fm", "gorl_diffusion", "ppo", "sac", "pmoe_sac")
Algo = Literal["gorl_fm", "gorl_diffusion", "ppo", "sac", "pmoe_sac"]


@dataclass
class GorlTrainConfig:
    """One training run (configs/gorl_train.yaml mirrors these defaults)."""

    env: str = "gendiff/TwoModes-v0"
    algo: Algo = "gorl_fm"
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
        check_literal_fields(self)
        check_numbers(self, positive=("steps", "eval_episodes", "final_eval_episodes"), nonnegative=("eval_every",))


def _sub(cls: type, path: str | None, **overrides: Any) -> Any:
    """``cls`` read from the YAML file ``path`` (or its defaults when None), with ``overrides`` applied."""
    base = from_dict(cls, load_yaml(path)) if path else cls()
    return dataclasses.replace(base, **overrides)


def build_agent(cfg: GorlTrainConfig) -> Any:
    """The agent for ``cfg.algo`` (GoRL / PPO / SAC / PMOESAC), configured from the YAML files."""
    from gendiff.rl.gorl import GoRL, GoRLConfig
    from gendiff.rl.pmoe import PMOESAC, PMOESACConfig
    from gendiff.rl.ppo import PPO, PPOConfig
    from gendiff.rl.sac import SAC, SACConfig

    if cfg.algo not in ALGOS:
        raise ValueError(f"unknown algo {cfg.algo!r}; valid: {list(ALGOS)}")
    ev = {"eval_every": cfg.eval_every, "eval_episodes": cfg.eval_episodes}
    if cfg.algo.startswith("gorl"):
        gc = _sub(GoRLConfig, cfg.gorl_config, decoder="flow" if cfg.algo == "gorl_fm" else "diffusion")
        return GoRL(cfg.env, gc, _sub(PPOConfig, cfg.ppo_config, **ev), _sub(SACConfig, cfg.sac_config, **ev),
                    seed=cfg.seed)
    if cfg.algo == "ppo":
        return PPO.from_env(cfg.env, _sub(PPOConfig, cfg.ppo_config, **ev), cfg.seed)
    if cfg.algo == "sac":
        return SAC.from_env(cfg.env, _sub(SACConfig, cfg.sac_config, **ev), cfg.seed)
    sac = _sub(SACConfig, cfg.sac_config, **ev)
    return PMOESAC.from_env(cfg.env, PMOESACConfig(**dataclasses.asdict(sac)), cfg.seed)


def _act_fn(agent: Any, deterministic: bool) -> Callable[[np.ndarray], np.ndarray]:
    """The agent's action function (observation -> action), stochastic or deterministic."""
    if hasattr(agent, "policy") and not hasattr(agent, "decoder"):  # SAC / PMOESAC
        return lambda o: agent.policy.act(o, deterministic)
    return lambda o: agent.act(o, deterministic)


def _owned(p: Path) -> bool:
    """What a run writes into its --out folder (replaced by a new run; other files there are kept)."""
    return p.name in ("metrics.json", "curve.png", "config.yaml", "model")


FINAL_EVAL_SEED = 50_000  # episode seeds FINAL_EVAL_SEED, +1, ... of every run's final evaluation


def final_returns(agent: Any, env_id: str, episodes: int) -> dict[str, list[float]]:
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
    is replaced (``--overwrite true``) only after success, and a kill leaves it as it was.
    """
    out = Path(cfg.out)
    recover_swap(out, _owned)
    refuse_existing([out / "metrics.json"], cfg.overwrite)
    seed_everything(cfg.seed)
    agent = build_agent(cfg)
    log = agent.learn(cfg.steps, progress=cfg.progress) if hasattr(agent, "decoder") else agent.learn(
        cfg.env, cfg.steps, cfg.seed, cfg.progress)
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
