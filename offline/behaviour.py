"""Behaviour policies for D4RL-style datasets: SAC trained until a level's return band, and rollouts.

1. :func:`train_to_band` trains :class:`gendiff.rl.sac.SAC` and every ``check_every`` environment steps rolls
   the current behaviour policy out (the SAC policy's own samples, as D4RL, or its mean action plus Gaussian
   noise of a chosen width, see :func:`policy_act`); it stops as soon as the mean normalised return reaches ``target``
   (D4RL: medium ~ 1/3 of expert) or the step budget runs out, keeping a snapshot of the policy at each
   check (medium-replay data comes from these snapshots).
2. :func:`rollout` collects ``steps`` transitions as ``EpisodeBuffer`` objects; the last episode is cut at
   the step budget and marked truncated, as time-limit ends are.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from gendiff.rl.common import evaluate, make_env
from gendiff.rl.sac import SAC, SACConfig, TanhGaussianPolicy, check_action_noise

Act = Callable[[np.ndarray], np.ndarray]


class _BandReached(Exception):
    """Raised inside SAC's per-step callback to stop training at the band."""


@dataclass
class BandResult:
    """Outcome of :func:`train_to_band`.

    Attributes:
        agent: the trained SAC agent (its policy is the behaviour policy).
        reached: whether the mean normalised return reached the target.
        score: the last measured normalised score; ret: the matching mean return.
        env_steps: environment steps trained.
        snapshots: policy copies taken at every check (oldest first).
    """

    agent: SAC
    reached: bool
    score: float
    ret: float
    env_steps: int
    snapshots: list[TanhGaussianPolicy] = field(default_factory=list)


def policy_act(policy: TanhGaussianPolicy, deterministic: bool = False, seed: int = 0,
               noise: float | None = None) -> Act:
    """An ``obs [B, obs_dim] -> env action [B, act_dim]`` function of a SAC policy.

    Args:
        deterministic: tanh(mean) (ignored when ``noise`` is given).
        seed: seed of the action noise.
        noise: None -> the policy's own tanh-Gaussian samples (D4RL's rollouts). A width s >= 0 ->
            tanh(mean) + N(0, s^2) in the squashed (-1, 1) units, clipped to the box (TD3-style exploration
            noise): on tasks where SAC's sampled actions are nearly bang-bang (HalfCheetah) this gives
            smoother, more typical data.
    """
    check_action_noise(noise)  # here too, so a bad width fails at once, not at the first rollout step
    gen = torch.Generator().manual_seed(seed)
    return lambda obs: policy.act(torch.as_tensor(obs, dtype=torch.float32), deterministic, gen, noise).numpy()


def train_to_band(env_id: str, target: float, ref: tuple[float, float], max_steps: int, check_every: int,
                  eval_episodes: int = 5, config: SACConfig | None = None, seed: int = 0,
                  progress: bool = True, noise: float | None = None) -> BandResult:
    """Train SAC until 100 (R - ref[0]) / (ref[1] - ref[0]) >= target or ``max_steps`` env steps.

    Args:
        env_id: gymnasium id; target: normalised-score target; ref: (random, expert) returns.
        max_steps: SAC environment-step budget; check_every: steps between band checks.
        noise: the behaviour actions whose return is checked, as :func:`policy_act`'s ``noise``.
    """
    agent = SAC.from_env(env_id, config or SACConfig(eval_every=0), seed)
    state = {"score": -np.inf, "ret": -np.inf, "steps": 0}
    snapshots: list[TanhGaussianPolicy] = []

    def check(step: int, ag: SAC) -> None:
        state["steps"] = step
        if step % check_every or step < ag.config.learning_starts:
            return
        rets = evaluate(policy_act(ag.policy, seed=seed + step, noise=noise), env_id, eval_episodes, seed=seed + 7919)
        state["ret"] = float(np.mean(rets))
        state["score"] = float(100 * (state["ret"] - ref[0]) / (ref[1] - ref[0]))
        snapshots.append(copy.deepcopy(ag.policy))
        if state["score"] >= target:
            raise _BandReached

    reached = False
    try:
        agent.learn(env_id, max_steps, seed=seed, progress=progress, on_step=check)
    except _BandReached:
        reached = True
    if not snapshots:  # budget below one check: measure the final policy once
        rets = evaluate(policy_act(agent.policy, seed=seed, noise=noise), env_id, eval_episodes, seed=seed + 7919)
        state["ret"] = float(np.mean(rets))
        state["score"] = float(100 * (state["ret"] - ref[0]) / (ref[1] - ref[0]))
        snapshots.append(copy.deepcopy(agent.policy))
        reached = state["score"] >= target
    return BandResult(agent, reached, state["score"], state["ret"], int(state["steps"]), snapshots)


def rollout(env_id: str, act: Act | None, steps: int, seed: int = 0, first_id: int = 0,
            progress: bool = False) -> list:
    """Collect ``steps`` transitions into ``EpisodeBuffer`` objects (``act`` None: uniform random actions).

    Returns:
        list of ``minari.data_collector.episode_buffer.EpisodeBuffer``.
    """
    from minari.data_collector.episode_buffer import EpisodeBuffer

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    env = make_env(env_id)
    env.action_space.seed(seed)
    buffers, done_steps, ep = [], 0, 0
    bar = tqdm(total=steps, disable=not progress, desc=f"rollout {env_id}", leave=False)
    while done_steps < steps:
        ep_seed = seed + ep
        obs, _ = env.reset(seed=ep_seed)
        o_list, a_list, r_list, te_list, tr_list = [obs], [], [], [], []
        while True:
            a = env.action_space.sample() if act is None else np.asarray(act(obs[None].astype(np.float32)))[0]
            obs, r, term, trunc, _ = env.step(a)
            done_steps += 1
            trunc = bool(trunc) or (done_steps >= steps and not term)
            o_list.append(obs), a_list.append(np.asarray(a, dtype=np.float32)), r_list.append(float(r))
            te_list.append(bool(term)), tr_list.append(trunc)
            bar.update(1)
            if term or trunc:
                break
        buffers.append(EpisodeBuffer(id=first_id + ep, seed=ep_seed, observations=o_list, actions=a_list,
                                     rewards=r_list, terminations=te_list, truncations=tr_list, infos={}))
        ep += 1
    bar.close()
    env.close()
    return buffers


def random_return(env_id: str, episodes: int = 10, seed: int = 0) -> float:
    """Mean return of the uniform random policy (the measured reference when D4RL has none)."""
    env = make_env(env_id)
    space = env.action_space
    env.close()
    space.seed(seed)
    return float(np.mean(evaluate(lambda o: np.stack([space.sample() for _ in o]), env_id, episodes, seed=seed)))
