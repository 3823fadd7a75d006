"""SubPO: policy gradient on greedy marginal gains for submodular RL (Prajapat, Mutny, Zeilinger, Krause, "Submodular
Reinforcement Learning", ICLR 2024), and the additive-reward policy gradient it is compared with.

The SubRL objective of a policy pi is J(pi) = E_{tau ~ pi}[F(tau)], F a monotone submodular function of the set of
states the trajectory visits (gendiff.rl.envs_submodular: weighted coverage of a grid). F is not a sum of per-state
rewards, but it telescopes into marginal gains along the trajectory:

    F(tau) = F({s_0}) + sum_{j=0}^{H-1} F(s_{j+1} | tau_{0:j}),   F(s | tau_{0:j}) = F(tau_{0:j} u {s}) - F(tau_{0:j}),

so the score-function estimator of grad J has, as in REINFORCE, a reward-to-go made of the marginal gains that
follow an action (the paper's SubPO gradient; actions cannot change the gains already collected):

    grad J(theta) = E[ sum_{i=0}^{H-1} grad log pi_theta(a_i | o_i) (sum_{j=i}^{H-1} F(s_{j+1} | tau_{0:j}) - b_i) ].

Each action is pushed towards the states of largest marginal gain given the history, the policy-gradient form of
the greedy algorithm for submodular maximisation. The observation o_i is the current cell, the covered map and t / H
(``observe="coverage"``): the marginal gain is then a function of o_i, i.e. the task is an MDP in o_i, so a Markov
policy over o_i loses nothing (``observe="position"`` gives the paper's Markov policy on (s_i, t) only).

The **additive baseline** (``reward="additive"``) is the same learner, policy, optimiser and episode budget with
the per-step reward F({s_{j+1}}), each cell's sensed value every time it is visited: the standard MDP reward that
ignores diminishing returns. Both are evaluated on the same quantity, F(tau).

Not here: the paper's natural-policy-gradient variant. The formulas above are derived in this docstring, not copied
with the paper's equation numbers (only its abstract was at hand when this was written).

Steps of one iteration (:meth:`SubPO.update`):
  1. Roll out ``batch_episodes`` episodes of the stochastic policy (batched, :class:`SubmodularGrid`).
  2. Per-step rewards r_j: the marginal gains F(s_{j+1} | tau_{0:j}) (SubPO) or the additive rewards (baseline).
  3. Rewards-to-go G_i = sum_{j >= i} r_j (the gradient above; past rewards dropped, Williams' causality).
  4. Baseline b_i = the batch mean of G_i at step i (time-dependent; it includes the episode's own G_i, a bias of
     order 1/B that the usual REINFORCE implementations accept); advantages A = G - b, divided by their batch std
     when ``normalize_advantages``.
  5. Loss = -mean_{i, episodes} log pi(a_i | o_i) A_i - entropy_coef * mean entropy; one Adam step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from gendiff.config import check_literal_fields, check_numbers
from gendiff.rl.common import mlp
from gendiff.rl.envs_submodular import ACTIONS, GridState, SubmodularGrid

__all__ = ["SubPO", "SubPOConfig", "SubPOLog", "SubPOSettings", "rollout", "run_baseline_policy"]


@dataclass
class SubPOSettings:
    """The task and learner settings shared by a run (:class:`SubPOConfig`) and a benchmark of several."""

    grid_size: int = 10  # N, cells per side
    horizon: int = 20  # H, steps per episode
    radius: int = 1  # sensing radius (Chebyshev, cells)
    weights: Literal["uniform", "biodiversity"] = "uniform"  # uniform: coverage; biodiversity: smooth random density
    map_seed: int = 0  # seed of the biodiversity map
    observe: Literal["coverage", "position"] = "coverage"  # policy input: cell + covered map + t/H, or cell + t/H
    iterations: int = 200  # policy-gradient updates
    batch_episodes: int = 32  # episodes per update
    lr: float = 3e-3  # Adam learning rate
    hidden: tuple[int, ...] = (64, 64)  # MLP hidden widths
    entropy_coef: float = 0.01  # entropy bonus weight
    normalize_advantages: bool = True  # divide advantages by their batch std
    eval_every: int = 20  # iterations between evaluations of F (0: only at the end)
    eval_episodes: int = 64  # episodes per evaluation
    device: Literal["cpu", "cuda"] = "cpu"
    progress: bool = False

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        check_literal_fields(self)
        check_numbers(self, positive=("grid_size", "horizon", "iterations", "batch_episodes", "lr", "hidden",
                                      "eval_episodes"),
                      nonnegative=("radius", "entropy_coef", "eval_every"))

    def task(self) -> SubmodularGrid:
        """The grid task these settings describe."""
        return SubmodularGrid(self.grid_size, self.horizon, self.radius, self.weights, self.map_seed,
                              observe=self.observe)


@dataclass
class SubPOConfig(SubPOSettings):
    """One SubPO (or additive policy-gradient) run on a submodular grid task."""

    reward: Literal["marginal", "additive"] = "marginal"  # marginal: SubPO; additive: the additive-reward baseline
    seed: int = 0


@dataclass
class SubPOLog:
    """A run's learning curve: at ``iterations[k]`` (updates done), F of evaluation episodes (stochastic policy)."""

    iterations: list[int] = field(default_factory=list)
    objective_mean: list[float] = field(default_factory=list)
    objective_std: list[float] = field(default_factory=list)
    train_objective: list[float] = field(default_factory=list)  # mean F of each update's training batch
    wall_s: float = 0.0


def rollout(task: SubmodularGrid, act: Callable[[np.ndarray, GridState], np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """Run ``batch`` episodes of ``act(obs [B, D], state) -> actions int [B]`` on ``task``.

    Returns:
        ``obs`` float32 [H, B, D], ``actions`` int [H, B], ``marginal`` [H, B], ``additive`` [H, B] (per-step rewards),
        ``objective`` [B] (F of each episode's visited set), ``distinct`` [B] (distinct cells visited).
    """
    state = task.reset(batch)
    obs, actions, marginal, additive = [], [], [], []
    visited = np.zeros((batch, task.n_cells), bool)
    visited[:, task.start] = True
    for _ in range(task.horizon):
        o = task.observation(state)
        a = np.asarray(act(o, state))
        state, gain, add = task.step(state, a)
        visited[np.arange(batch), state.pos] = True
        obs.append(o), actions.append(a), marginal.append(gain), additive.append(add)
    return {"obs": np.stack(obs), "actions": np.stack(actions), "marginal": np.stack(marginal),
            "additive": np.stack(additive), "objective": task.value(state.covered), "distinct": visited.sum(1)}


class SubPO:
    """A softmax MLP policy pi_theta(a | o) over the 5 grid actions, trained by :meth:`update` (module docstring).

    Args:
        config: the run's settings (``config.reward`` selects SubPO or the additive baseline).
        task: a task to use instead of ``config.task()`` (e.g. a hand-made weight map); its grid size, horizon and
            observation must match the config's.
    """

    def __init__(self, config: SubPOConfig, task: SubmodularGrid | None = None) -> None:
        self.config, self.task = config, config.task() if task is None else task
        if task is not None and (task.grid_size, task.horizon, task.observe) != (config.grid_size, config.horizon,
                                                                                 config.observe):
            raise ValueError(f"SubPO: task (grid_size, horizon, observe) = {(task.grid_size, task.horizon, task.observe)}"
                             f" differs from the config's {(config.grid_size, config.horizon, config.observe)}")
        self.device = torch.device(config.device)
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        torch.manual_seed(config.seed)
        self.policy: nn.Module = mlp(self.task.obs_dim, len(ACTIONS), config.hidden, nn.Tanh).to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.lr)

    def logits(self, obs: np.ndarray | Tensor) -> Tensor:
        """Action logits [..., 5] for observations [..., D]."""
        return self.policy(torch.as_tensor(obs, dtype=torch.float32, device=self.device))

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions int [B] for observations [B, D]: sampled, or the most likely one when ``deterministic``."""
        logits = self.logits(obs)
        if deterministic:
            return logits.argmax(-1).cpu().numpy()
        return torch.multinomial(logits.softmax(-1), 1, generator=self.generator)[:, 0].cpu().numpy()

    def update(self) -> dict[str, float]:
        """One policy-gradient iteration (steps 1-5 of the module docstring); returns its metrics."""
        cfg = self.config
        # 1. roll out a batch of episodes with the current stochastic policy
        batch = rollout(self.task, lambda o, _s: self.act(o), cfg.batch_episodes)
        # 2. per-step rewards: marginal gains F(s_{j+1} | tau_{0:j}) (SubPO) or additive F({s_{j+1}}); [H, B]
        rewards = torch.as_tensor(batch[cfg.reward], dtype=torch.float32, device=self.device)
        # 3. rewards-to-go G_i = sum_{j >= i} r_j; [H, B]
        to_go = rewards.flip(0).cumsum(0).flip(0)
        # 4. time-dependent batch-mean baseline, optional std normalisation; [H, B]
        adv = to_go - to_go.mean(1, keepdim=True)
        if cfg.normalize_advantages:
            adv = adv / (adv.std() + 1e-8)
        # 5. score-function loss with an entropy bonus; one Adam step
        logp_all = torch.log_softmax(self.logits(batch["obs"]), -1)  # [H, B, 5]
        actions = torch.as_tensor(batch["actions"], device=self.device)
        logp = logp_all.gather(-1, actions[..., None])[..., 0]  # [H, B]
        entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
        loss = -(logp * adv).mean() - cfg.entropy_coef * entropy
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss/policy": float(loss.detach()), "actor/entropy": float(entropy.detach()),
                "objective/train": float(batch["objective"].mean())}

    def evaluate(self, episodes: int, deterministic: bool = False) -> np.ndarray:
        """F(tau) of ``episodes`` episodes of the current policy; [episodes]."""
        return rollout(self.task, lambda o, _s: self.act(o, deterministic), episodes)["objective"]

    def learn(self) -> SubPOLog:
        """``config.iterations`` updates, evaluating F every ``eval_every`` iterations and at the end."""
        from tqdm.auto import trange

        cfg, log, t0 = self.config, SubPOLog(), time.perf_counter()
        for it in trange(cfg.iterations + 1, disable=not cfg.progress, desc=f"subpo ({cfg.reward})"):
            if it == cfg.iterations or (cfg.eval_every and it % cfg.eval_every == 0):
                f = self.evaluate(cfg.eval_episodes)
                log.iterations.append(it)
                log.objective_mean.append(float(f.mean()))
                log.objective_std.append(float(f.std()))
            if it < cfg.iterations:
                log.train_objective.append(self.update()["objective/train"])
        log.wall_s = time.perf_counter() - t0
        return log


def run_baseline_policy(task: SubmodularGrid, kind: Literal["random", "greedy"], episodes: int,
                        seed: int) -> np.ndarray:
    """F(tau) [episodes] of a policy that does not learn: uniform random actions, or the one-step greedy policy
    (argmax of the marginal gain, ties at random), which knows F and the dynamics."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rollout(task, lambda o, _s: rng.integers(0, len(ACTIONS), o.shape[0]), episodes)["objective"]
    if kind == "greedy":
        return rollout(task, lambda _o, s: task.greedy_actions(s, rng), episodes)["objective"]
    raise ValueError(f"run_baseline_policy: kind must be 'random' or 'greedy', got {kind!r}")
