"""The online-RL algorithms ``gendiff gorl train --algo NAME`` can train: the ``RL_ALGORITHMS`` registry.

Each name maps to a builder ``(RunSpec) -> Built``, the agent and its :class:`Learner` (``learn(steps, progress)``
for the run's env and seed: GoRL itself, PPO / SAC through :class:`OnEnv`). It reads the base-learner settings from the config's
``ppo_config`` / ``sac_config`` / ``gorl_config`` YAML files (configs/gorl_*.yaml; their defaults when unset) and sets
their ``eval_every`` / ``eval_episodes`` from the run. A new algorithm is one more registered builder; the CLI's
``--algo`` / ``--algos`` validation and help list come from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gendiff.config import from_dict, load_yaml
from gendiff.registry import Registry
from gendiff.rl.common import TrainLog
from gendiff.rl.gorl import GoRL, GoRLConfig
from gendiff.rl.pmoe import PMOESAC, PMOESACConfig
from gendiff.rl.ppo import PPO, PPOConfig
from gendiff.rl.sac import SAC, SACConfig

__all__ = ["RL_ALGORITHMS", "Agent", "AgentBuilder", "Built", "Learner", "OnEnv", "RunSpec"]


class RunSpec(Protocol):
    """What a builder reads from a run's config (gendiff.rl.train.GorlTrainConfig has these fields)."""

    env: str
    seed: int
    eval_every: int
    eval_episodes: int
    ppo_config: str | None
    sac_config: str | None
    gorl_config: str | None


class Agent(Protocol):
    """What a run does with a trained agent: act (its final evaluation) and save (PPO, SAC, PMOESAC, GoRL)."""

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Environment actions [n, act_dim] for observations [n, obs_dim]."""
        ...

    def save(self, path: str | Path) -> Path:
        ...


class Learner(Protocol):
    """Training for a run: ``steps`` env steps on the run's env and seed; returns the learning curve."""

    def learn(self, steps: int, progress: bool = True) -> TrainLog:
        ...


@dataclass(frozen=True)
class OnEnv:
    """A PPO / SAC agent, whose ``learn`` takes the env and seed, bound to a run's env and seed as a :class:`Learner`
    (GoRL holds its env and seed and is its own learner)."""

    agent: PPO | SAC
    env_id: str
    seed: int

    def learn(self, steps: int, progress: bool = True) -> TrainLog:
        return self.agent.learn(self.env_id, steps, self.seed, progress)


@dataclass(frozen=True)
class Built:
    """A registered algorithm built for a run: the agent (evaluated, saved, returned) and how to train it."""

    agent: Agent
    learner: Learner


AgentBuilder = Callable[[RunSpec], Built]
RL_ALGORITHMS: Registry[AgentBuilder] = Registry("RL algorithm")


def _sub(cls: type, path: str | None, **overrides: Any) -> Any:
    """``cls`` read from the YAML file ``path`` (or its defaults when None), with ``overrides`` applied."""
    base = from_dict(cls, load_yaml(path)) if path else cls()
    return dataclasses.replace(base, **overrides)


def _eval(cfg: RunSpec) -> dict[str, int]:
    """The run's evaluation settings, given to every base learner's config."""
    return {"eval_every": cfg.eval_every, "eval_episodes": cfg.eval_episodes}


def _gorl(cfg: RunSpec, decoder: str) -> Built:
    """GoRL with the ``decoder`` kind ("flow" or "diffusion") over its PPO / SAC base learners."""
    gc = _sub(GoRLConfig, cfg.gorl_config, decoder=decoder)
    agent = GoRL(cfg.env, gc, _sub(PPOConfig, cfg.ppo_config, **_eval(cfg)),
                 _sub(SACConfig, cfg.sac_config, **_eval(cfg)), seed=cfg.seed)
    return Built(agent, agent)


def _on_env(agent: PPO | SAC, cfg: RunSpec) -> Built:
    """A PPO / SAC agent, trained on the run's env and seed."""
    return Built(agent, OnEnv(agent, cfg.env, cfg.seed))


@RL_ALGORITHMS.register("gorl_fm")
def build_gorl_fm(cfg: RunSpec) -> Built:
    """GoRL with the flow-matching decoder."""
    return _gorl(cfg, "flow")


@RL_ALGORITHMS.register("gorl_diffusion")
def build_gorl_diffusion(cfg: RunSpec) -> Built:
    """GoRL with the diffusion decoder."""
    return _gorl(cfg, "diffusion")


@RL_ALGORITHMS.register("ppo")
def build_ppo(cfg: RunSpec) -> Built:
    """Gaussian PPO from ``cfg.ppo_config``."""
    return _on_env(PPO.from_env(cfg.env, _sub(PPOConfig, cfg.ppo_config, **_eval(cfg)), cfg.seed), cfg)


@RL_ALGORITHMS.register("sac")
def build_sac(cfg: RunSpec) -> Built:
    """SAC from ``cfg.sac_config``."""
    return _on_env(SAC.from_env(cfg.env, _sub(SACConfig, cfg.sac_config, **_eval(cfg)), cfg.seed), cfg)


@RL_ALGORITHMS.register("pmoe_sac")
def build_pmoe_sac(cfg: RunSpec) -> Built:
    """SAC with the probabilistic mixture-of-experts head; its SAC settings from ``cfg.sac_config``."""
    sac = _sub(SACConfig, cfg.sac_config, **_eval(cfg))
    return _on_env(PMOESAC.from_env(cfg.env, PMOESACConfig(**dataclasses.asdict(sac)), cfg.seed), cfg)
