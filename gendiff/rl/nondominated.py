"""Iterative discovery of non-dominated policies and the test-time adaptive defence (Liu et al., "Beyond Worst-case
Attacks: Robust RL with Adaptive Defense via Non-dominated Policies", ICLR 2024), on gendiff's PPO.

The abstract's plan, in a form two CPU cores can run. Test time is a regret-minimisation problem against an unknown
(state-adversarial) attacker; over a continuous policy class no algorithm has sublinear regret, so training time
"refines the baseline policy class" to a small finite set Pi of non-dominated policies, and test time runs an
"adversarial bandit subroutine" (EXP3, gendiff.rl.exp3) over Pi. The paper's own discovery step optimises a new policy
against the attacks where the current set is weakest; here the set's weak spot is read off a finite grid of attacks
(kind x eps, gendiff.rl.attacks) and the new policy is PPO trained under that one attack.

Training time (:func:`discover`):
  1. pi_1 = PPO trained without attack ("the baseline policy"); Pi = {pi_1}.
  2. Evaluate every member on every attack of the grid: R [|Pi|, J] (mean deterministic return, white-box attacks
     computed on the member's own policy).
  3. The set's weakest attack: j* = argmin_j max_i R[i, j] among the attacks not yet trained against.
  4. Train a candidate with PPO under attack j* (the attacker of its own current policy during training, as in
     adversarial training), warm-started from the member best at j* (``warm_start``) or from scratch.
  5. Keep it unless some member dominates it (R[i, j] >= R_new[j] for every j); mark j* as tried either way.
  6. Stop at ``set_size`` policies, after ``max_iterations`` candidates, or when every attack has been tried.

Every env step of the discovery (the policies' training, warm-started candidates included, and the evaluation
episodes of R) is counted in ``DiscoveredSet.env_steps``, so that baselines can be given the same budget.

Test time (:func:`adaptive_defence`): per episode t, EXP3 picks a member, the episode runs under the (unknown to the
defender) attack, and its return, normalised to [0, 1] with a fixed range, is the bandit's reward.
:func:`defence_table` plays the same protocol from a table of every member's return on each of the T episodes
(computed in one batched run, :func:`gendiff.rl.attacks.evaluate_policies_under_attack`): the attacker is oblivious
(episode t's return under member i does not depend on the bandit's earlier choices), so revealing only the pulled
entry of column t is the bandit game itself, and the same table serves several bandit seeds and gives the best
fixed member in hindsight (the regret's comparator).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from gendiff.config import check_numbers
from gendiff.rl.attacks import (
    AttackedVectorObservation,
    AttackSpec,
    StateAttack,
    attacked_act,
    evaluate_policies_under_attack,
    ppo_policy,
)
from gendiff.rl.common import evaluate
from gendiff.rl.exp3 import BanditRun, run_exp3
from gendiff.rl.ppo import PPO, PPOConfig

__all__ = ["DefenceTable", "DiscoveredSet", "NonDominatedConfig", "adaptive_defence", "attack_grid", "defence_table",
           "discover", "dominated", "evaluate_under_attack", "returns_matrix", "train_ppo", "trained_steps"]


@dataclass
class NonDominatedConfig:
    """Settings of the discovery loop (:func:`discover`)."""

    env: str = "InvertedPendulum-v5"  # gymnasium id (Box observations and actions)
    seed: int = 0  # seed of the PPO runs (candidate k uses seed + k) and of the attacks
    base_steps: int = 40_960  # env steps of the attack-free pi_1
    candidate_steps: int = 20_480  # env steps of each candidate trained under an attack
    warm_start: bool = True  # start a candidate from the member best at its attack (False: from scratch)
    set_size: int = 3  # K: stop when the set holds this many policies
    max_iterations: int = 4  # at most this many candidates are trained
    kinds: tuple[str, ...] = ("random", "mad")  # attack kinds of the grid (random, mad); "none" is always in it
    eps_grid: tuple[float, ...] = (0.05, 0.1)  # l-inf radii of the grid (raw observation units)
    pgd_steps: int = 3  # PGD steps of the mad attack
    eval_episodes: int = 5  # episodes per (policy, attack) entry of R
    progress: bool = True  # progress bars

    def __post_init__(self) -> None:
        check_numbers(self, positive=("base_steps", "candidate_steps", "set_size", "max_iterations", "eps_grid",
                                      "pgd_steps", "eval_episodes"), nonnegative=("seed",))
        self.kinds, self.eps_grid = tuple(self.kinds), tuple(float(e) for e in self.eps_grid)
        bad = [k for k in self.kinds if k not in ("random", "mad")]
        if not self.kinds or bad:
            raise ValueError(f"NonDominatedConfig.kinds must be a non-empty list of 'random' / 'mad', got {bad}")


def attack_grid(kinds: tuple[str, ...], eps_grid: tuple[float, ...]) -> list[AttackSpec]:
    """``none`` followed by every kind x eps: [J] attack specs."""
    return [AttackSpec("none", 0.0)] + [AttackSpec(k, e) for k in kinds for e in eps_grid]  # type: ignore[arg-type]


def evaluate_under_attack(agent: PPO, env_id: str, spec: AttackSpec, episodes: int, seed: int = 10_000,
                          pgd_steps: int = 3, attack_seed: int = 0) -> list[float]:
    """Returns [episodes] of ``agent``'s deterministic policy with its observations attacked by ``spec`` (white-box:
    the mad attack differentiates this agent's policy)."""
    act = lambda o: agent.act(o, True)  # noqa: E731
    attack = StateAttack(spec, steps=pgd_steps, seed=attack_seed)
    return evaluate(attacked_act(act, attack, ppo_policy(agent)), env_id, episodes, seed=seed)


def returns_matrix(agents: list[PPO], env_id: str, grid: list[AttackSpec], episodes: int, pgd_steps: int = 3,
                   seed: int = 10_000) -> tuple[np.ndarray, int]:
    """Step 2: R [len(agents), len(grid)], mean return of each agent under each attack (``episodes`` episodes per
    entry, all agents batched), and the env steps those episodes took."""
    policies = [ppo_policy(a) for a in agents]
    R, steps = np.zeros((len(agents), len(grid))), 0
    for j, spec in enumerate(grid):
        ret, length = evaluate_policies_under_attack(policies, env_id, spec, episodes, seed, pgd_steps)
        R[:, j], steps = ret.mean(1), steps + int(length.sum())
    return R, steps


def dominated(candidate: np.ndarray, members: np.ndarray) -> bool:
    """Step 5: True if some row of ``members`` [m, J] is >= ``candidate`` [J] in every column."""
    return bool(len(members) and (members >= candidate[None]).all(1).any())


def train_ppo(env_id: str, steps: int, seed: int, config: PPOConfig | None = None, spec: AttackSpec | None = None,
              init: PPO | None = None, pgd_steps: int = 3, progress: bool = False) -> PPO:
    """PPO for ``steps`` env steps, under attack ``spec`` (on the agent's own policy) when given, starting from
    ``init``'s actor, critic and observation statistics when given."""
    agent = PPO.from_env(env_id, config or PPOConfig(eval_every=0), seed=seed)
    if init is not None:
        agent.load_weights_from(init)
    wrapper = None
    if spec is not None and spec.name != "none":  # one batched attack of all the copies per step
        attack = StateAttack(spec, steps=pgd_steps, seed=seed)
        wrapper = lambda envs: AttackedVectorObservation(envs, attack, ppo_policy(agent))  # noqa: E731
    agent.learn(env_id, steps, seed=seed, progress=progress, vector_wrapper=wrapper)
    return agent


def trained_steps(steps: int, config: PPOConfig) -> int:
    """The env steps :meth:`PPO.learn` really takes for ``steps``: whole rollouts of num_envs x num_steps, >= 1."""
    per_iter = config.num_envs * config.num_steps
    return max(1, steps // per_iter) * per_iter


@dataclass
class DiscoveredSet:
    """The non-dominated set: its policies, the grid, R [|Pi|, J], one history row per candidate, and the env steps
    the discovery used: ``{"train": ..., "eval": ...}`` (training of pi_1 and of every candidate, kept or not;
    the evaluation episodes of R)."""

    policies: list[PPO]
    grid: list[AttackSpec]
    returns: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)
    env_steps: dict[str, int] = field(default_factory=dict)

    @property
    def total_env_steps(self) -> int:
        """Every env step of the discovery (training + evaluation)."""
        return sum(self.env_steps.values())


def discover(cfg: NonDominatedConfig, ppo_config: PPOConfig | None = None,
             base: PPO | None = None) -> DiscoveredSet:
    """Steps 1-6 of the module docstring. ``base``: an already trained attack-free pi_1 (step 1 is then skipped,
    and its training is not counted in ``env_steps``)."""
    ppo_config = ppo_config or PPOConfig(eval_every=0)
    grid = attack_grid(cfg.kinds, cfg.eps_grid)
    # 1. the attack-free baseline policy
    policies = [base or train_ppo(cfg.env, cfg.base_steps, cfg.seed, ppo_config, progress=cfg.progress)]
    train_steps = 0 if base is not None else trained_steps(cfg.base_steps, ppo_config)
    # 2. its returns over the grid
    R, eval_steps = returns_matrix(policies, cfg.env, grid, cfg.eval_episodes, cfg.pgd_steps)
    tried, history = {0}, []  # "none" counts as tried: pi_1 was trained without attack
    bar = tqdm(range(cfg.max_iterations), disable=not cfg.progress, desc="non-dominated set")
    for it in bar:
        if len(policies) >= cfg.set_size or len(tried) == len(grid):  # 6. stop
            break
        # 3. the weakest untried attack of the set
        value = R.max(0)
        j = min((j for j in range(len(grid)) if j not in tried), key=lambda j: value[j])
        tried.add(j)
        # 4. a candidate trained under that attack
        init = policies[int(R[:, j].argmax())] if cfg.warm_start else None
        cand = train_ppo(cfg.env, cfg.candidate_steps, cfg.seed + 1 + it, ppo_config, grid[j], init, cfg.pgd_steps)
        train_steps += trained_steps(cfg.candidate_steps, ppo_config)
        rc, steps = returns_matrix([cand], cfg.env, grid, cfg.eval_episodes, cfg.pgd_steps)
        r, eval_steps = rc[0], eval_steps + steps
        # 5. keep it unless a member dominates it
        keep = not dominated(r, R)
        history.append({"iteration": it, "attack": grid[j].name, "set_value_before": value.tolist(),
                        "candidate_returns": r.tolist(), "kept": keep})
        if keep:
            policies.append(cand)
            R = np.vstack([R, r])
    return DiscoveredSet(policies, grid, R, history, {"train": train_steps, "eval": eval_steps})


def adaptive_defence(policies: list[PPO], env_id: str, spec: AttackSpec, episodes: int,
                     return_range: tuple[float, float], seed: int = 20_000, pgd_steps: int = 3,
                     gamma: float | None = None) -> tuple[BanditRun, list[float]]:
    """EXP3 over ``policies`` for ``episodes`` episodes under attack ``spec``: each episode's return R is the reward
    clip((R - lo) / (hi - lo), 0, 1) with (lo, hi) = ``return_range``. Returns the bandit run and the raw returns."""
    lo, hi = return_range
    if not hi > lo:
        raise ValueError(f"adaptive_defence: return_range needs high > low, got {return_range}")
    if not policies:
        raise ValueError("adaptive_defence: the policy set is empty")
    raw: list[float] = []

    def pull(t: int, arm: int) -> float:
        ret = evaluate_under_attack(policies[arm], env_id, spec, 1, seed + t, pgd_steps, attack_seed=seed + t)[0]
        raw.append(ret)
        return float(np.clip((ret - lo) / (hi - lo), 0.0, 1.0))

    run = run_exp3(pull, len(policies), episodes, gamma, seed)
    return run, raw



@dataclass
class DefenceTable:
    """EXP3 over a set, played from a table of returns (module docstring).

    returns: [K, T] member i's return on episode t; runs: one bandit run per bandit seed (arms [T], rewards [T]);
    bandit_returns: [S, T] the return the bandit got in each round, per bandit seed.
    """

    returns: np.ndarray
    runs: list[BanditRun]
    bandit_returns: np.ndarray

    @property
    def mean_return(self) -> float:
        """The paper's regret-style number: the bandit's average return over the horizon (mean over seeds)."""
        return float(self.bandit_returns.mean())

    @property
    def best_member_return(self) -> float:
        """The best fixed member in hindsight: max_i mean_t returns[i, t]."""
        return float(self.returns.mean(1).max())

    def pull_share(self) -> list[float]:
        """Fraction of rounds each member was pulled, averaged over bandit seeds: [K]."""
        return np.mean([r.pull_share(len(self.returns)) for r in self.runs], 0).tolist()

    def mean_return_window(self, start: int, stop: int) -> float:
        """The bandit's average return over rounds [start, stop) (mean over seeds)."""
        return float(self.bandit_returns[:, start:stop].mean())


def defence_table(returns: np.ndarray, return_range: tuple[float, float], bandit_seeds: list[int],
                  gamma: float | None = None) -> DefenceTable:
    """EXP3 over the K rows of ``returns`` [K, T] for T rounds, once per bandit seed: round t pulls a member I_t
    and sees reward clip((returns[I_t, t] - lo) / (hi - lo), 0, 1), (lo, hi) = ``return_range``."""
    returns = np.asarray(returns, dtype=np.float64)
    lo, hi = return_range
    if returns.ndim != 2 or not returns.size:
        raise ValueError(f"defence_table: returns must be a non-empty [K, T] table, got shape {returns.shape}")
    if not hi > lo:
        raise ValueError(f"defence_table: return_range needs high > low, got {return_range}")
    if not bandit_seeds:
        raise ValueError("defence_table: give at least one bandit seed")
    K, T = returns.shape
    reward = np.clip((returns - lo) / (hi - lo), 0.0, 1.0)
    runs = [run_exp3(lambda t, arm: float(reward[arm, t]), K, T, gamma, s) for s in bandit_seeds]
    got = np.asarray([returns[np.asarray(r.arms), np.arange(T)] for r in runs])
    return DefenceTable(returns, runs, got)
