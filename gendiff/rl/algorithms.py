"""The online-RL algorithms ``gendiff gorl train --algo NAME`` can train: the ``RL_ALGORITHMS`` registry.

Each name maps to a builder ``(RunSpec) -> agent``: it reads the base-learner settings from the config's
``ppo_config`` / ``sac_config`` / ``gorl_config`` YAML files (configs/gorl_*.yaml; their defaults when unset) and sets
their ``eval_every`` / ``eval_episodes`` from the run. A new algorithm is one more registered builder; the CLI's
``--algo`` / ``--algos`` validation and help list come from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from gendiff.config import from_dict, load_yaml
from gendiff.registry import Registry
from gendiff.rl.gorl import GoRL, GoRLConfig
from gendiff.rl.pmoe import PMOESAC, PMOESACConfig
from gendiff.rl.ppo import PPO, PPOConfig
from gendiff.rl.sac import SAC, SACConfig

__all__ = ["RL_ALGORITHMS", "AgentBuilder", "RunSpec"]


class RunSpec(Protocol):
    """What a builder reads from a run's config (gendiff.rl.train.GorlTrainConfig has these fields)."""

    env: str
    seed: int
    eval_every: int
    eval_episodes: int
    ppo_config: str | None
    sac_config: str | None
    gorl_config: str | None


AgentBuilder = Callable[[RunSpec], Any]
RL_ALGORITHMS: Registry[AgentBuilder] = Registry("RL algorithm")


def _sub(cls: type, path: str | None, **overrides: Any) -> Any:
    """``cls`` read from the YAML file ``path`` (or its defaults when None), with ``overrides`` applied."""
    base = from_dict(cls, load_yaml(path)) if path else cls()
    return dataclasses.replace(base, **overrides)


def _eval(cfg: RunSpec) -> dict[str, int]:
    """The run's evaluation settings, given to every base learner's config."""
    return {"eval_every": cfg.eval_every, "eval_episodes": cfg.eval_episodes}


def _gorl(cfg: RunSpec, decoder: str) -> GoRL:
    """GoRL with the ``decoder`` kind ("flow" or "diffusion") over its PPO / SAC base learners."""
    gc = _sub(GoRLConfig, cfg.gorl_config, decoder=decoder)
    return GoRL(cfg.env, gc, _sub(PPOConfig, cfg.ppo_config, **_eval(cfg)), _sub(SACConfig, cfg.sac_config, **_eval(cfg)),
                seed=cfg.seed)


@RL_ALGORITHMS.register("gorl_fm")
def build_gorl_fm(cfg: RunSpec) -> GoRL:
    """GoRL with the flow-matching decoder."""
    return _gorl(cfg, "flow")


@RL_ALGORITHMS.register("gorl_diffusion")
def build_gorl_diffusion(cfg: RunSpec) -> GoRL:
    """GoRL with the diffusion decoder."""
    return _gorl(cfg, "diffusion")


@RL_ALGORITHMS.register("ppo")
def build_ppo(cfg: RunSpec) -> PPO:
    """Gaussian PPO from ``cfg.ppo_config``."""
    return PPO.from_env(cfg.env, _sub(PPOConfig, cfg.ppo_config, **_eval(cfg)), cfg.seed)


@RL_ALGORITHMS.register("sac")
def build_sac(cfg: RunSpec) -> SAC:
    """SAC from ``cfg.sac_config``."""
    return SAC.from_env(cfg.env, _sub(SACConfig, cfg.sac_config, **_eval(cfg)), cfg.seed)


@RL_ALGORITHMS.register("pmoe_sac")
def build_pmoe_sac(cfg: RunSpec) -> PMOESAC:
    """SAC with the probabilistic mixture-of-experts head; its SAC settings from ``cfg.sac_config``."""
    sac = _sub(SACConfig, cfg.sac_config, **_eval(cfg))
    return PMOESAC.from_env(cfg.env, PMOESACConfig(**dataclasses.asdict(sac)), cfg.seed)
