"""SPEAR (Qin et al. 2025, "Learn the Ropes, Then Trust the Wins: Self-imitation with Progressive Exploration for
Agentic Reinforcement Learning"): curriculum-based self-imitation on top of a GRPO step.

Per trainer step t (``LLMTrainer`` calls the hooks; ``LLMTrainConfig.spear`` / ``spear_config``):

1. Intrinsic reward, curriculum (Sec. 3.3): the task reward r plus w_in(t) r_in, r_in an intrinsic reward (the paper's
   tool-call reward; on the arithmetic task the format reward ``format_reward``: the completion is well-formed in its
   template and ended with EOS), w_in(t) = c_in (1 + cos(pi min(t / T_in, 1))) / 2 (the reference's cosine decay,
   1 -> 0 over T_in steps). Advantages are computed from the shaped reward.
2. Replay buffer (Sec. 3.2, ``gendiff.llm.replay``): the group-mean task rewards join the baseline history; the
   successes (task reward >= ``success_reward``) with positive advantage enter the FIFO buffer with their behaviour
   log-probs; entries older than ``max_age`` steps leave.
3. Advantage recalibration (Sec. 3.2, "to address the policy drift"): a stored advantage was relative to its group
   at sampling time; the replayed one is relative to the current baseline,
   A~_j = (R_j - P50(M))_+, M the recent group-mean rewards (``recalibration="p50"``, the paper's default), or the
   stored advantage decayed by age, A~_j = A_j gamma^(t - t_j) (``"decay"``). Rows with A~_j = 0 carry no gradient
   and are dropped.
4. Self-imitation loss (Sec. 3.2): the PPO-clip surrogate on ``replay_batch`` replayed completions, ratio
   pi_theta / pi_behaviour (the stored log-probs), advantage A~, with the covariance-based token clipping of
   Clip-Cov (``gendiff.llm.losses.clip_cov``, its own band for replayed tokens, Sec. 3.4) against over-confidence.
   Weight w_sil(t) = c_sil (1 - cos(pi min(t / T_sil, 1))) / 2 (the reference's cosine ramp, 0 -> c_sil over
   T_sil steps): total loss = on-policy loss + w_sil(t) L_SIL. The replay batch is drawn once per step and reused
   by every update of that step; it adds forward/backward work but no rollout tokens.

One process only (the buffer is not sharded); the buffer is not saved in checkpoints (a resumed run refills it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import Tensor

from gendiff.config import check_numbers

from .losses import ClipCovConfig, clip_cov_loss
from .replay import ReplayBuffer, Trajectory
from .sampling import Completions
from .templates import match_template

IntrinsicFn = Callable[[list[str], list[str], list[bool]], Sequence[float]]


@dataclass
class SPEARConfig:
    """Settings of SPEAR (``LLMTrainConfig.spear_config``); defaults sized for the tiny arithmetic model."""

    sil_coef: float = 1.0  # c_sil: self-imitation weight after the ramp (reference: replay_loss_coef 1)
    sil_ramp_steps: int = 20  # T_sil: cosine ramp 0 -> c_sil (reference: max_replay_loss_steps 200)
    intrinsic_coef: float = 0.5  # c_in: weight of the intrinsic (format) reward at step 0
    intrinsic_decay_steps: int = 20  # T_in: cosine decay c_in -> 0 (reference: max_toolcall_steps 200)
    replay_batch: int = 32  # replayed completions per step
    buffer_size: int = 256  # buffer capacity (FIFO)
    max_age: int = 10  # steps an entry may stay (reference: trajectory_tolerate_steps 10)
    success_reward: float = 1.0  # task reward that counts as a success
    baseline_size: int = 256  # group-mean rewards behind the P50 baseline (reference: baseline_buffer_size)
    recalibration: Literal["p50", "decay"] = field(default="p50", metadata={"choices": ("p50", "decay")})
    decay: float = 0.9  # "decay": A~ = A gamma^age
    clip_ratio: float = 0.02  # Clip-Cov on replayed tokens: share detached (reference: clip_cov_ratio_replay)
    cov_lb: float = 1.0  # Clip-Cov band on replayed tokens (reference: clip_cov_lb_replay / ub_replay)
    cov_ub: float = 40.0
    eps_low: float = 0.2  # PPO clip range of the replayed ratio
    eps_high: float = 0.28  # (reference Dr.BoT: clip-higher 0.28)

    def __post_init__(self) -> None:
        check_numbers(self, positive=("replay_batch", "buffer_size", "baseline_size"),
                      nonnegative=("sil_coef", "intrinsic_coef", "sil_ramp_steps", "intrinsic_decay_steps", "max_age",
                                   "eps_low", "eps_high"),
                      fraction=("decay", "clip_ratio"))
        if self.recalibration not in ("p50", "decay"):
            raise ValueError(f"SPEARConfig.recalibration must be 'p50' or 'decay', got {self.recalibration!r}")
        if not self.cov_lb < self.cov_ub:
            raise ValueError(f"SPEARConfig needs cov_lb < cov_ub, got {self.cov_lb}, {self.cov_ub}")


def _cosine(step: int, horizon: int) -> float:
    """(1 + cos(pi min(step / horizon, 1))) / 2: 1 at step 0, 0 from ``horizon`` on (horizon 0: 0 at once)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    frac = 1.0 if horizon <= 0 else min(step / horizon, 1.0)
    return (1.0 + math.cos(math.pi * frac)) / 2.0


def intrinsic_weight(step: int, cfg: SPEARConfig) -> float:
    """Step 1: w_in(t) = c_in (1 + cos(pi min(t / T_in, 1))) / 2."""
    return cfg.intrinsic_coef * _cosine(step, cfg.intrinsic_decay_steps)


def sil_weight(step: int, cfg: SPEARConfig) -> float:
    """Step 4: w_sil(t) = c_sil (1 - cos(pi min(t / T_sil, 1))) / 2."""
    return cfg.sil_coef * (1.0 - _cosine(step, cfg.sil_ramp_steps))


def p50_baseline(group_means: Sequence[float]) -> float:
    """Step 3: the 50th percentile (linear interpolation, as numpy.percentile) of the group-mean rewards."""
    if len(group_means) == 0:
        raise ValueError("the P50 baseline needs at least one group-mean reward")
    return float(torch.quantile(torch.tensor(list(group_means), dtype=torch.float64), 0.5))


def recalibrate_advantages(rewards: Tensor, baseline: float) -> Tensor:
    """Step 3, "p50": A~_j = max(R_j - b, 0) for [N] task rewards and the current baseline b (float64)."""
    if rewards.dim() != 1 or not bool(torch.isfinite(rewards).all()) or not math.isfinite(baseline):
        raise ValueError(f"recalibration needs [N] finite rewards and a finite baseline, got {tuple(rewards.shape)}, "
                         f"{baseline}")
    return (rewards.double() - baseline).clamp_min(0.0)


def decay_advantages(advantages: Tensor, ages: Tensor, decay: float) -> Tensor:
    """Step 3, "decay": A~_j = A_j gamma^(age_j), [N] stored advantages and ages in steps (float64)."""
    if advantages.shape != ages.shape or bool((ages < 0).any()):
        raise ValueError(f"decay needs [N] advantages and [N] ages >= 0, got {tuple(advantages.shape)}, "
                         f"{tuple(ages.shape)}")
    return advantages.double() * torch.as_tensor(decay, dtype=torch.float64) ** ages.double()


def sil_loss(logp: Tensor, behaviour_logp: Tensor, advantages: Tensor, mask: Tensor, config: ClipCovConfig,
             generator: torch.Generator | None = None, entropy: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Step 4: the self-imitation loss, Clip-Cov's PPO-clip surrogate on replayed completions.

    Args:
        logp: [N, T] log pi_theta of the replayed tokens (with gradient).
        behaviour_logp: [N, T] their stored log-probs under the policy that sampled them.
        advantages: [N] recalibrated advantages (>= 0).
        mask: [N, T] valid tokens.
        config: Clip-Cov settings for the replayed tokens.
        generator: Clip-Cov's random pick.
        entropy: optional [N, T], logged.

    Returns:
        (loss, metrics under ``sil/``: policy (the loss), ratio_mean, clipfrac, clip_cov_count, ...).
    """
    loss, metrics = clip_cov_loss(logp, behaviour_logp, advantages, mask, config, entropy=entropy, generator=generator)
    return loss, {"sil/" + k.split("/", 1)[-1]: v for k, v in metrics.items()}


def format_reward(prompts: list[str], completions: list[str], finished: list[bool]) -> list[float]:
    """The arithmetic task's intrinsic reward: 1.0 when a completion ended with EOS and is well-formed in its prompt's
    template (``gendiff.llm.templates``: digits for "a+b=", "[digits]" for "ans a+b:", ...), else 0.0."""
    if not len(prompts) == len(completions) == len(finished):
        raise ValueError(f"{len(prompts)} prompts, {len(completions)} completions, {len(finished)} finished flags")
    return [float(bool(f) and match_template(p)[0].extract(c) is not None)
            for p, c, f in zip(prompts, completions, finished, strict=True)]


@dataclass
class ReplayBatch:
    """A teacher-forced batch of replayed completions: ``batch`` [N, T], their behaviour log-probs [N, T] and
    recalibrated advantages [N]."""

    batch: Completions
    behaviour_logp: Tensor
    advantages: Tensor


def replay_completions(prompt_ids: list[Sequence[int]], completion_ids: list[Sequence[int]], pad_id: int,
                       device: torch.device | str | None = None) -> Completions:
    """The stored tokens as a ``Completions`` batch for a teacher-forced forward: prompts left-padded, completions
    right-padded (``pad_id``, mask 0); logp / entropy zeros, finished True."""
    pw, cw = max(map(len, prompt_ids)), max(map(len, completion_ids))
    ids = torch.tensor([[pad_id] * (pw - len(r)) + list(r) for r in prompt_ids], device=device)
    mask = torch.tensor([[0] * (pw - len(r)) + [1] * len(r) for r in prompt_ids], device=device)
    comp = torch.tensor([list(r) + [pad_id] * (cw - len(r)) for r in completion_ids], device=device)
    keep = torch.tensor([[1] * len(r) + [0] * (cw - len(r)) for r in completion_ids], device=device)
    zeros = torch.zeros(len(prompt_ids), cw, device=device)
    return Completions(ids, mask, comp, keep, zeros, zeros, torch.ones(len(prompt_ids), dtype=torch.bool, device=device))


class SPEAR:
    """The trainer's SPEAR hooks (module docstring, steps 1-4); the trainer runs the replay forward.

    Args:
        config: ``SPEARConfig``.
        pad_id: the padding token of replay batches.
        intrinsic_fn: ``fn(prompts, completions, finished) -> [B]`` intrinsic rewards (None: no intrinsic reward).
        seed: seeds the replay sampling.
    """

    def __init__(self, config: SPEARConfig, pad_id: int, intrinsic_fn: IntrinsicFn | None = None, seed: int = 0) -> None:
        self.config, self.pad_id, self.intrinsic_fn = config, pad_id, intrinsic_fn
        self.buffer = ReplayBuffer(config.buffer_size, config.max_age, config.success_reward, config.baseline_size)
        self.rng = random.Random(seed)
        self.clip = replace(ClipCovConfig(), clip_ratio=config.clip_ratio, cov_lb=config.cov_lb, cov_ub=config.cov_ub,
                            eps_low=config.eps_low, eps_high=config.eps_high)

    def shape_rewards(self, rewards: Tensor, prompts: list[str], texts: list[str], finished: Tensor,
                      step: int) -> tuple[Tensor, dict[str, float]]:
        """Step 1: [B] task rewards -> [B] r + w_in(t) r_in, and metrics."""
        w = intrinsic_weight(step, self.config)
        metrics = {"spear/intrinsic_weight": w}
        if self.intrinsic_fn is None:
            return rewards, metrics
        r_in = torch.as_tensor([float(x) for x in self.intrinsic_fn(prompts, texts, finished.tolist())],
                               dtype=rewards.dtype, device=rewards.device)
        if r_in.shape != rewards.shape or not bool(torch.isfinite(r_in).all()):
            raise ValueError(f"the intrinsic reward must give {rewards.numel()} finite numbers, got {r_in.tolist()[:10]}")
        metrics["spear/intrinsic_reward_mean"] = float(r_in.mean())
        return rewards + w * r_in, metrics

    def observe(self, batch: Completions, task_rewards: Tensor, advantages: Tensor, group_ids: Tensor,
                prompts: list[str], step: int, on_policy: Tensor | None = None) -> dict[str, float]:
        """Step 2: baseline history and admission of this rollout's successes ([B] rows, advantages [B] or [B, T]);
        ``on_policy`` [B] bool keeps only the rows drawn from pi_T itself (not AEPO's regulariser rows, whose
        recorded log-probs are not of the policy that drew them)."""
        if on_policy is not None and not bool(on_policy.all()):
            keep = on_policy.nonzero().flatten()
            batch, task_rewards, advantages = batch.select(on_policy), task_rewards[keep], advantages[keep]
            group_ids, prompts = group_ids[keep], [prompts[i] for i in keep.tolist()]
        mask = batch.completion_mask.bool()
        row_adv = advantages if advantages.dim() == 1 else \
            (advantages * mask).sum(-1) / mask.sum(-1).clamp_min(1)
        groups = torch.unique(group_ids)
        self.buffer.observe_groups([float(task_rewards[group_ids == g].mean()) for g in groups])
        lengths = (mask.sum(-1) + (batch.finished & (mask.sum(-1) == 0))).tolist()
        pids = [row[m.bool()].tolist() for row, m in zip(batch.prompt_ids.cpu(), batch.prompt_mask.cpu(), strict=True)]
        ids = [row[: int(n)].tolist() for row, n in zip(batch.completion_ids.cpu(), lengths, strict=True)]
        lps = [row[: int(n)].tolist() for row, n in zip(batch.logp.detach().cpu(), lengths, strict=True)]
        empty = ~mask.any(-1).cpu()  # EOS first: no real token, never stored
        added = self.buffer.add(prompts, pids, [[] if e else i for i, e in zip(ids, empty, strict=True)],
                                [[] if e else lp for lp, e in zip(lps, empty, strict=True)],
                                task_rewards.tolist(), row_adv.tolist(), step)
        return {"spear/added": float(added)}

    def replay_batch(self, step: int, device: torch.device | str | None = None) -> tuple[ReplayBatch | None, dict]:
        """Step 3: evict stale entries, draw ``replay_batch`` of them, recalibrate, keep A~ > 0."""
        cfg = self.config
        self.buffer.evict(step)
        metrics = {"spear/buffer_size": float(len(self.buffer)), "spear/sil_weight": sil_weight(step, cfg)}
        if len(self.buffer) == 0 or metrics["spear/sil_weight"] == 0.0:
            return None, metrics
        drawn: list[Trajectory] = self.buffer.sample(cfg.replay_batch, self.rng)
        if cfg.recalibration == "p50":
            base = p50_baseline(self.buffer.group_means)
            adv = recalibrate_advantages(torch.tensor([t.reward for t in drawn], dtype=torch.float64), base)
            metrics["spear/baseline_p50"] = base
        else:
            adv = decay_advantages(torch.tensor([t.advantage for t in drawn], dtype=torch.float64),
                                   torch.tensor([step - t.step for t in drawn], dtype=torch.float64), cfg.decay)
        keep = [i for i in range(len(drawn)) if adv[i] > 0]
        metrics["spear/replay_rows"] = float(len(keep))
        if not keep:
            return None, metrics
        rows = [drawn[i] for i in keep]
        batch = replay_completions([t.prompt_ids for t in rows], [t.completion_ids for t in rows], self.pad_id, device)
        width = batch.completion_ids.shape[1]
        behaviour = torch.tensor([list(t.logp) + [0.0] * (width - len(t.logp)) for t in rows], device=device)
        metrics["spear/replay_adv_mean"] = float(adv[keep].mean())
        return ReplayBatch(batch, behaviour, adv[keep].to(device=device, dtype=torch.float32)), metrics

    def loss(self, logp: Tensor, entropy: Tensor, replay: ReplayBatch, step: int,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Any]]:
        """Step 4: w_sil(t) L_SIL on the replay batch, from the policy's [N, T] log-probs and entropies of it."""
        loss, metrics = sil_loss(logp, replay.behaviour_logp, replay.advantages, replay.batch.completion_mask,
                                 self.clip, generator, entropy)
        return sil_weight(step, self.config) * loss, metrics
