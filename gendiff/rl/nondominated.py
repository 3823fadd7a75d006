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

Test time (:func:`adaptive_defence`): per episode t, EXP3 picks a member, the episode runs under the (unknown to the
defender) attack, and its return, normalised to [0, 1] with a fixed range, is the bandit's reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from gendiff.config import check_numbers
from gendiff.rl.attacks import AttackedObservation, AttackSpec, StateAttack, attacked_act, ppo_policy
from gendiff.rl.common import evaluate
from gendiff.rl.exp3 import BanditRun, run_exp3
from gendiff.rl.ppo import PPO, PPOConfig

__all__ = ["DiscoveredSet", "NonDominatedConfig", "adaptive_defence", "attack_grid", "discover", "dominated",
           "evaluate_under_attack", "returns_matrix", "train_ppo"]


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
                   seed: int = 10_000) -> np.ndarray:
    """Step 2: R [len(agents), len(grid)], mean return of each agent under each attack."""
    return np.asarray([[np.mean(evaluate_under_attack(a, env_id, s, episodes, seed, pgd_steps)) for s in grid]
                       for a in agents])


def dominated(candidate: np.ndarray, members: np.ndarray) -> bool:
    """Step 5: True if some row of ``members`` [m, J] is >= ``candidate`` [J] in every column."""
    return bool(len(members) and (members >= candidate[None]).all(1).any())


def train_ppo(env_id: str, steps: int, seed: int, config: PPOConfig | None = None, spec: AttackSpec | None = None,
              init: PPO | None = None, pgd_steps: int = 3, progress: bool = False) -> PPO:
    """PPO for ``steps`` env steps, under attack ``spec`` (on the agent's own policy) when given, starting from
    ``init``'s actor, critic and observation statistics when given."""
    agent = PPO.from_env(env_id, config or PPOConfig(eval_every=0), seed=seed)
    if init is not None:
        for name, module in agent._checkpoint_modules().items():
            module.load_state_dict(init._checkpoint_modules()[name].state_dict())
    wrapper = None
    if spec is not None and spec.name != "none":
        attack = StateAttack(spec, steps=pgd_steps, seed=seed)
        wrapper = lambda env: AttackedObservation(env, attack, ppo_policy(agent))  # noqa: E731
    agent.learn(env_id, steps, seed=seed, progress=progress, wrapper=wrapper)
    return agent


@dataclass
class DiscoveredSet:
    """The non-dominated set: its policies, the grid, R [|Pi|, J] and one history row per candidate."""

    policies: list[PPO]
    grid: list[AttackSpec]
    returns: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)


def discover(cfg: NonDominatedConfig, ppo_config: PPOConfig | None = None,
             base: PPO | None = None) -> DiscoveredSet:
    """Steps 1-6 of the module docstring. ``base``: an already trained attack-free pi_1 (step 1 is then skipped)."""
    ppo_config = ppo_config or PPOConfig(eval_every=0)
    grid = attack_grid(cfg.kinds, cfg.eps_grid)
    # 1. the attack-free baseline policy
    policies = [base or train_ppo(cfg.env, cfg.base_steps, cfg.seed, ppo_config, progress=cfg.progress)]
    # 2. its returns over the grid
    R = returns_matrix(policies, cfg.env, grid, cfg.eval_episodes, cfg.pgd_steps)
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
        r = returns_matrix([cand], cfg.env, grid, cfg.eval_episodes, cfg.pgd_steps)[0]
        # 5. keep it unless a member dominates it
        keep = not dominated(r, R)
        history.append({"iteration": it, "attack": grid[j].name, "set_value_before": value.tolist(),
                        "candidate_returns": r.tolist(), "kept": keep})
        if keep:
            policies.append(cand)
            R = np.vstack([R, r])
    return DiscoveredSet(policies, grid, R, history)


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

