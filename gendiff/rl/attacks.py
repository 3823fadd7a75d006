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
or batched over many policies and episodes at once (:func:`evaluate_policies_under_attack`: per-episode returns and
lengths of K policies x n episodes, only live episodes stepped), or in an environment as a gymnasium
ObservationWrapper (:class:`AttackedObservation`, e.g. PPO training under attack via ``PPO.learn(..., wrapper=...)``)
or on a whole vector env (:class:`AttackedVectorObservation`, via ``PPO.learn(..., vector_wrapper=...)``: one
batched attack per step for all copies instead of one per copy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv, VectorWrapper
from torch import Tensor

from gendiff.config import check_literal_fields, check_numbers
from gendiff.rl.common import make_env

__all__ = ["AttackSpec", "AttackedObservation", "AttackedVectorObservation", "DiffPolicy", "StateAttack",
           "attacked_act", "evaluate_policies_under_attack", "ppo_policy"]

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
        u, _ = agent.actor.sample(agent.normalize_obs(obs), deterministic=True)
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


class AttackedVectorObservation(VectorWrapper):
    """Every observation a vector env returns, [n, obs_dim] (reset and step), is replaced by s + delta(s), computed
    in one batched attack for all n copies; with same-step autoreset the episodes' last observations in
    ``info["final_obs"]`` (the ones PPO bootstraps truncated episodes from) are attacked too, as the per-copy
    :class:`AttackedObservation` would see them."""

    def __init__(self, env: VectorEnv, attack: StateAttack, policy: DiffPolicy | None = None) -> None:
        super().__init__(env)
        self.attack, self.policy = attack, policy

    def _perturb(self, obs: np.ndarray) -> np.ndarray:
        return self.attack.perturb(obs, self.policy).astype(obs.dtype)

    def reset(self, **kwargs: object) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        return self._perturb(obs), info

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, rew, term, trunc, info = self.env.step(actions)
        if "_final_obs" in info:
            final = info["final_obs"].copy()
            for i in np.flatnonzero(info["_final_obs"]):
                final[i] = self._perturb(np.asarray(final[i])[None])[0]
            info = {**info, "final_obs": final}
        return self._perturb(obs), rew, term, trunc, info


@torch.no_grad()
def evaluate_policies_under_attack(policies: list[DiffPolicy], env_id: str, spec: AttackSpec, episodes: int,
                                   seed: int = 10_000, pgd_steps: int = 3, attack_seed: int = 0,
                                   max_steps: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic returns and lengths [K, episodes] of K policies, each under ``spec`` computed on its own
    policy (white-box), all K x episodes episodes run in lock-step.

    Episode e of every policy starts from the env seeded ``seed + e`` (common random numbers across policies);
    policy k's attack draws from its own generator seeded ``attack_seed`` (the same stream for every policy).
    Only live episodes are stepped and attacked (one batched attack per policy and step), so episodes that end
    early cost nothing afterwards.

    Args:
        policies: K differentiable deterministic policies, raw obs [n, obs_dim] -> env actions [n, act_dim]
            (e.g. :func:`ppo_policy`).
        episodes: episodes per policy (>= 1).
    """
    if not policies:
        raise ValueError("evaluate_policies_under_attack: the policy list is empty")
    if episodes < 1:
        raise ValueError(f"evaluate_policies_under_attack: episodes must be >= 1, got {episodes}")
    K = len(policies)
    envs = [[make_env(env_id) for _ in range(episodes)] for _ in range(K)]
    obs = np.stack([np.stack([env.reset(seed=seed + e)[0] for e, env in enumerate(row)]) for row in envs])
    attacks = [StateAttack(spec, steps=pgd_steps, seed=attack_seed) for _ in range(K)]
    total, length = np.zeros((K, episodes)), np.zeros((K, episodes), dtype=np.int64)
    alive = np.ones((K, episodes), dtype=bool)
    for _ in range(max_steps):
        for k, policy in enumerate(policies):
            idx = np.flatnonzero(alive[k])
            if not len(idx):
                continue
            o = torch.as_tensor(obs[k, idx], dtype=torch.float32)
            actions = policy(o + attacks[k].delta(o, policy)).numpy()
            for a, i in zip(actions, idx, strict=True):
                obs[k, i], rew, term, trunc, _ = envs[k][i].step(a)
                total[k, i] += float(rew)
                length[k, i] += 1
                alive[k, i] = not (term or trunc)
        if not alive.any():
            break
    for row in envs:
        for env in row:
            env.close()
    if not np.isfinite(total).all():
        raise FloatingPointError("evaluation returns contain NaN/inf")
    return total, length
