"""State-adversarial attacks on observations (the SA-MDP threat model of Zhang et al. 2020, used by "Beyond
Worst-case Attacks: Robust RL with Adaptive Defense via Non-dominated Policies", Liu et al. 2024).

The adversary sees the true state s and hands the policy s + delta with ||delta||_inf <= eps, on the *raw*
observation (before any normalisation the agent applies); the environment itself is not changed. Two attacks:

- ``random``: delta ~ U([-eps, eps]^d), independently per observation.
- ``mad`` (maximal action difference, Zhang et al. 2020): a few projected-gradient (PGD) steps on

      L(delta) = || pi(s + delta) - pi(s) ||_2^2,   pi the policy's deterministic (mean) action in env units,

  1. start from a random point delta_0 ~ U([-eps, eps]^d) (L has a zero gradient at delta = 0, its minimum);
  2. delta_{k+1} = clip(delta_k + alpha sign(grad_delta L(delta_k)), -eps, eps), alpha = 2 eps / steps by default
     (so that ``steps`` sign steps can cross the whole box); with ``steps=1`` this is FGSM from a random start.

  For a linear policy pi(s) = w.s + b one step already reaches delta = +-eps sign(w), the maximiser of L over the
  box, moving the action by eps ||w||_1 (the known answer the tests check).

Use them at evaluation as a wrapped action function (:func:`attacked_act`, for :func:`gendiff.rl.common.evaluate`),
or in an environment as a gymnasium ObservationWrapper (:class:`AttackedObservation`, e.g. PPO training under
attack via ``PPO.learn(..., wrapper=...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from gendiff.config import check_literal_fields, check_numbers

__all__ = ["AttackSpec", "AttackedObservation", "DiffPolicy", "StateAttack", "attacked_act", "ppo_policy"]

DiffPolicy = Callable[[Tensor], Tensor]  # differentiable: raw obs [n, obs_dim] -> env actions [n, act_dim]
AttackKind = Literal["none", "random", "mad"]


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a grid: its kind and l-inf radius on the raw observation."""

    kind: AttackKind = "mad"  # none: clean observations; random: uniform in the ball; mad: PGD on the action change
    eps: float = 0.1  # l-inf radius of delta on the raw observation

    def __post_init__(self) -> None:
        check_literal_fields(self)
        check_numbers(self, nonnegative=("eps",))

    @property
    def name(self) -> str:
        """``none``, ``random@0.1`` or ``mad@0.1`` (keys of the result files)."""
        return "none" if self.kind == "none" or self.eps == 0 else f"{self.kind}@{self.eps:g}"


def ppo_policy(agent: object) -> DiffPolicy:
    """The deterministic action of a :class:`gendiff.rl.ppo.PPO` agent as a differentiable function of the raw
    observation: scale(tanh(T(s, mean(norm(s))))) [n, act_dim] for obs [n, obs_dim]."""
    def policy(obs: Tensor) -> Tensor:
        u, _ = agent.actor.sample(agent._norm(obs), deterministic=True)
        return agent.env_action(obs, u)

    return policy


class StateAttack:
    """An l-inf bounded perturbation of observations (module docstring).

    Args:
        spec: kind and eps.
        steps: PGD steps of the ``mad`` attack (>= 1).
        step_size: PGD step alpha; None: 2 eps / steps.
        seed: seed of the random start / random attack.
    """

    def __init__(self, spec: AttackSpec, steps: int = 3, step_size: float | None = None, seed: int = 0) -> None:
        if steps < 1:
            raise ValueError(f"StateAttack: steps (PGD steps) must be >= 1, got {steps}")
        if step_size is not None and not step_size > 0:
            raise ValueError(f"StateAttack: step_size must be positive, got {step_size}")
        self.spec, self.steps = spec, steps
        self.step_size = 2.0 * spec.eps / steps if step_size is None else float(step_size)
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self, shape: torch.Size) -> Tensor:
        return (2 * torch.rand(shape, generator=self.generator) - 1) * self.spec.eps

    def delta(self, obs: Tensor, policy: DiffPolicy | None = None) -> Tensor:
        """The perturbation [n, obs_dim] for raw observations ``obs`` [n, obs_dim]; ``policy`` is needed by ``mad``."""
        kind, eps = self.spec.kind, self.spec.eps
        if kind == "none" or eps == 0:
            return torch.zeros_like(obs)
        if kind == "random":
            return self._uniform(obs.shape)
        if policy is None:
            raise ValueError("StateAttack: the 'mad' attack needs the policy (a differentiable obs -> action)")
        with torch.enable_grad():  # callers (evaluate, rollouts) may run under no_grad
            clean = policy(obs).detach()
            delta = self._uniform(obs.shape)  # 1. random start
            for _ in range(self.steps):  # 2. sign-gradient ascent on ||pi(s + delta) - pi(s)||^2, projected
                delta.requires_grad_(True)
                loss = (policy(obs + delta) - clean).square().sum()
                (grad,) = torch.autograd.grad(loss, delta)
                delta = (delta.detach() + self.step_size * grad.sign()).clamp(-eps, eps)
        return delta.detach()

    def perturb(self, obs: np.ndarray | Tensor, policy: DiffPolicy | None = None) -> np.ndarray:
        """s + delta, float32 [n, obs_dim] (a single observation [obs_dim] gives [obs_dim])."""
        o = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        single = o.dim() == 1
        o = o[None] if single else o
        out = (o + self.delta(o, policy)).numpy()
        return out[0] if single else out


def attacked_act(act: Callable[[np.ndarray], np.ndarray], attack: StateAttack,
                 policy: DiffPolicy | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``obs -> act(obs + delta(obs))``: an action function [n, obs_dim] -> [n, act_dim] under ``attack``
    (``policy``: the attacked policy's differentiable action, for ``mad``)."""
    return lambda obs: act(attack.perturb(obs, policy))


class AttackedObservation(gym.ObservationWrapper):
    """Every observation the wrapped env returns (reset and step) is replaced by s + delta(s)."""

    def __init__(self, env: gym.Env, attack: StateAttack, policy: DiffPolicy | None = None) -> None:
        super().__init__(env)
        self.attack, self.policy = attack, policy

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return self.attack.perturb(observation, self.policy).astype(self.observation_space.dtype)
