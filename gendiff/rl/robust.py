"""``gendiff robust discover``: the non-dominated policy set of gendiff.rl.nondominated, its config and runner.

Writes OUT/set.json (the attack grid, R [|Pi|, J] of mean returns, the discovery history, the env steps it used,
the settings),
OUT/set.md (R as a table), OUT/config.yaml and each policy as OUT/policy_<i>/ (``PPO.load``; safetensors + JSON).
The benchmark (natural / random / gradient-attack returns of PPO, worst-case PPO and the set with EXP3) is
benchmarks/control/robust.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gendiff.config import from_dict, load_yaml, save_config, to_dict
from gendiff.io import atomic_write_text, refuse_existing
from gendiff.rl.nondominated import DiscoveredSet, NonDominatedConfig, discover
from gendiff.rl.ppo import PPOConfig

__all__ = ["RobustDiscoverConfig", "run_robust_discover", "set_markdown"]


@dataclass
class RobustDiscoverConfig(NonDominatedConfig):
    """One discovery run (configs/robust_discover.yaml mirrors these defaults)."""

    ppo_config: str | None = None  # YAML file of PPOConfig fields (None: PPOConfig defaults, no periodic evaluation)
    out: str = "runs/robust"  # folder for set.json, set.md, config.yaml, policy_<i>/
    overwrite: bool = False  # replace an earlier run's set.json


def set_markdown(found: DiscoveredSet, title: str) -> str:
    """R as a markdown table: one row per policy, one column per attack."""
    names = [s.name for s in found.grid]
    lines = [f"# {title}", "", "| policy | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, row in enumerate(found.returns):
        lines.append(f"| pi_{i + 1} | " + " | ".join(f"{x:.1f}" for x in row) + " |")
    return "\n".join(lines) + "\n"


def run_robust_discover(cfg: RobustDiscoverConfig) -> dict[str, Any]:
    """Run :func:`discover` and write its results (module docstring); returns the summary with the ``set``."""
    out = Path(cfg.out)
    refuse_existing([out / "set.json"], cfg.overwrite)
    ppo = from_dict(PPOConfig, load_yaml(cfg.ppo_config)) if cfg.ppo_config else PPOConfig(eval_every=0)
    found = discover(cfg, ppo)
    out.mkdir(parents=True, exist_ok=True)
    for i, policy in enumerate(found.policies):
        policy.save(out / f"policy_{i + 1}")
    save_config(cfg, out)
    summary = {"settings": to_dict(cfg), "grid": [s.name for s in found.grid], "returns": found.returns.tolist(),
               "history": found.history, "env_steps": found.env_steps,
               "policies": [f"policy_{i + 1}" for i in range(len(found.policies))]}
    atomic_write_text(out / "set.md", set_markdown(found, f"Non-dominated set on {cfg.env}, seed {cfg.seed}"))
    atomic_write_text(out / "set.json", json.dumps(summary, indent=2))
    print((out / "set.md").read_text())
    return {**summary, "set": found}
