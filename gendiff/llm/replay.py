"""The replay buffer of SPEAR (Qin et al. 2025, "Learn the Ropes, Then Trust the Wins", Sec. 3.2): the policy's own
successful trajectories, kept for self-imitation, and the history of group-mean rewards that recalibrates their
advantages (``gendiff.llm.spear``).

1. Admission: a completion enters when its task reward is >= ``success_reward`` (a success) *and* its on-policy
   advantage was > 0 (it beat its group: the reference code's ``advantages > 0`` filter; a group that solved
   everything teaches nothing and is not stored). Empty completions never enter.
2. Order: first in, first out. Beyond ``capacity`` the oldest entries go; an entry older than ``max_age`` steps
   (the reference's ``trajectory_tolerate_steps``) goes at the next ``evict``: stale behaviour log-probs make the
   off-policy ratio meaningless.
3. Sampling: ``sample(n, rng)`` draws min(n, len) distinct entries uniformly (no priorities: the recalibrated
   advantage already weights them).
4. Baseline history: the mean reward of every rollout group, the last ``baseline_size`` of them (FIFO), from which
   ``gendiff.llm.spear.p50_baseline`` takes the 50th percentile.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Trajectory:
    """One stored completion.

    Attributes:
        prompt: its prompt text.
        prompt_ids: the prompt's tokens as the policy saw them (no padding).
        completion_ids: its tokens ([T], EOS included when it finished).
        logp: [T] log pi_T of those tokens under the policy that sampled it (the behaviour policy).
        reward: its task reward (without any intrinsic reward).
        advantage: its on-policy advantage when it was sampled.
        step: the trainer step that sampled it.
    """

    prompt: str
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    logp: tuple[float, ...]
    reward: float
    advantage: float
    step: int


class ReplayBuffer:
    """FIFO buffer of successful trajectories plus the group-mean reward history (module docstring).

    Args:
        capacity: most trajectories kept (>= 1).
        max_age: an entry sampled more than ``max_age`` steps before the current step is evicted (>= 0).
        success_reward: the task reward that counts as a success.
        baseline_size: group-mean rewards kept for the recalibration baseline (>= 1).
    """

    def __init__(self, capacity: int = 256, max_age: int = 10, success_reward: float = 1.0,
                 baseline_size: int = 256) -> None:
        for name, value, low in (("capacity", capacity, 1), ("max_age", max_age, 0), ("baseline_size", baseline_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ReplayBuffer {name} must be an integer >= {low}, got {value!r}")
        self.capacity, self.max_age, self.success_reward = capacity, max_age, float(success_reward)
        self.items: deque[Trajectory] = deque(maxlen=capacity)
        self.group_means: deque[float] = deque(maxlen=baseline_size)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, prompts: list[str], prompt_ids: list[list[int]], completion_ids: list[list[int]],
            logps: list[list[float]], rewards: list[float], advantages: list[float], step: int) -> int:
        """Step 1: admit the successes with positive advantage among B rows; returns how many entered.

        Args:
            prompts, prompt_ids, completion_ids, logps, rewards, advantages: B rows each (``logps[i]`` as long as
                ``completion_ids[i]``; ``advantages`` per row, e.g. the mean over its tokens).
            step: the step that sampled them.
        """
        n = len(prompts)
        if not n == len(prompt_ids) == len(completion_ids) == len(logps) == len(rewards) == len(advantages):
            raise ValueError(f"ReplayBuffer.add needs as many rows of each: {n} prompts, {len(prompt_ids)} prompt "
                             f"token rows, {len(completion_ids)} completions, {len(logps)} log-prob rows, "
                             f"{len(rewards)} rewards, {len(advantages)} advantages")
        added = 0
        for p, pids, ids, lp, r, a in zip(prompts, prompt_ids, completion_ids, logps, rewards, advantages, strict=True):
            if len(ids) != len(lp):
                raise ValueError(f"a completion of {len(ids)} tokens came with {len(lp)} log-probs")
            if r >= self.success_reward and a > 0 and len(ids) > 0:
                self.items.append(Trajectory(p, tuple(int(i) for i in pids), tuple(int(i) for i in ids),
                                             tuple(float(x) for x in lp), float(r), float(a), int(step)))
                added += 1
        return added

    def evict(self, step: int) -> int:
        """Step 2: drop the entries older than ``max_age`` steps at ``step``; returns how many went."""
        keep = [t for t in self.items if step - t.step <= self.max_age]
        gone = len(self.items) - len(keep)
        self.items = deque(keep, maxlen=self.capacity)
        return gone

    def sample(self, n: int, rng: random.Random) -> list[Trajectory]:
        """Step 3: min(n, len) distinct entries drawn uniformly by ``rng`` (in buffer order)."""
        if n < 0:
            raise ValueError(f"cannot sample {n} trajectories")
        idx = sorted(rng.sample(range(len(self.items)), min(n, len(self.items))))
        return [self.items[i] for i in idx]

    def observe_groups(self, group_means: list[float]) -> None:
        """Step 4: append this rollout's group-mean rewards to the baseline history."""
        self.group_means.extend(float(m) for m in group_means)
