"""ARES's RL stage (Chen et al. 2025, "ARES: Multimodal Adaptive Reasoning via Difficulty-Aware Token-Level Entropy
Shaping", arXiv 2510.08457, Sec. 4.2; the paper calls this stage AEPO, *Adaptive* Entropy Policy Optimization;
gendiff's advantage key ``aepo`` is a different paper, Arbitrary Entropy PO, and the agentic entropy-balanced
AEPO lives in ``gendiff.llm.entropy_balanced``). Forms follow the authors' code (github.com/shawn0728/ARES:
``examples/reward_function/aepo.py``, ``verl/trainer/ray_trainer.py``, ``verl/workers/actor/dp_actor.py``).

1. When to explore (HWE trigger): while sampling, a position whose trailing window entropy (last ``window``
   tokens, ``gendiff.llm.hwe.trailing_hwe``) reaches the HWE threshold tau_H is drawn at ``temperature x
   (1 + hwe_boost)`` (the brief allows branching or a raised temperature; we raise the temperature, which costs no
   extra tokens). Log-probs and entropies stay of pi_T, as for HAPO's adaptive temperature.
2. HWE count per rollout: ``gendiff.llm.hwe.hwe_count`` with tau_H = EMA (0.99) of the batch median of each row's
   95th percentile of window entropies (``HWEThreshold``).
3. Difficulty from the group's pass rate p (share of the group's rollouts with reward >= ``pass_reward``):
   easy p >= 2/3, medium p >= 1/3, hard otherwise.
4. Hierarchical entropy reward (``hierarchical_entropy_reward``), per bucket d with the target HWE count n*_d,
   delta = n - n*_d, margin m = max(1, f_d max(n*_d, 1)), Huber h_k(x) (x = max(x, 0); x^2 / 2k for x <= k, else
   x - k / 2), s_T(x) = sigmoid(x / T), cap c = alpha_d c_d:
   easy & correct: -min(c, h(max(delta - m, 0)) / (m + k) c)  (too many HWE tokens on an easy problem costs);
   medium & correct: -min(c, h(max(|delta| - m, 0)) / (m + k) c)  (stay near the target);
   hard & correct: s_T(delta + m) c if delta >= -m, else -min(c, h(-delta - m) / (m + k) c / 2)  (explore more);
   incorrect: s_T(max(delta - m, 0)) c g_d, g = (0.6, 0.8, 1.0) for (easy, medium, hard).
   f = (0.15, 0.25, 0.35), k = (2, 3, 4), T = (2, 2.5, 3), c_d = (1, 1, 1.2). The shaped reward is r_acc + r_H.
5. Targets and weights per bucket (``ARESState.update``): n*_d = round(coef_d mean of the bucket's HWE counts in
   this batch) (coef 1, the training loop's form); alpha_d += lr (mean - n*_d) for easy / medium, lr (n*_d - mean)
   for hard, clipped to [alpha_min, alpha_max] (dual ascent).
6. Dynamic KL control (``DynamicKL``): per bucket a weight beta_d on the token KL to the reference; the bucket's
   sequence-mean KL is smoothed (EMA, decay 0.97), e = KL / target - 1, ignored inside a dead zone (0.02), and
   every ``kl_update_interval`` updates log beta_d += lr clip(EMA(e), +-0.2), beta in [1e-4, 100]. The trainer's
   KL term becomes kl_coef * agg(beta_d(row) k3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gendiff.config import check_numbers
from gendiff.entropy import token_entropy

from .hwe import HWEThreshold, hwe_count, trailing_hwe

BUCKETS = ("easy", "medium", "hard")
MARGIN_FRAC = {"easy": 0.15, "medium": 0.25, "hard": 0.35}
KAPPA = {"easy": 2.0, "medium": 3.0, "hard": 4.0}
TEMP = {"easy": 2.0, "medium": 2.5, "hard": 3.0}
CAP_SCALE = {"easy": 1.0, "medium": 1.0, "hard": 1.2}
WRONG_GAIN = {"easy": 0.6, "medium": 0.8, "hard": 1.0}


@dataclass
class ARESConfig:
    """Settings of the ARES rollout / reward (``LLMTrainConfig.rollout = "ares"``, ``rollout_config``).

    Attributes:
        window: HWE window w in tokens (4, the authors' default).
        percentile: per-row percentile of window entropies for tau_H (95).
        threshold_decay: EMA decay of tau_H (0.99).
        hwe_boost: step 1, the temperature factor 1 + hwe_boost at HWE positions (0.5; 0: no trigger).
        pass_reward: a rollout passes when its reward >= this (1.0: exact answers).
        alpha_init: initial cap alpha_d of every bucket (0.5); alpha_lr (0.05), alpha_min (0), alpha_max (2).
        target_coef: n*_d = round(coef mean count) per bucket (1.0, the authors' training loop).
        kl_target: per-bucket target KL of step 6 (0.01); kl_beta_init (1.0); kl_lr (0.05, in log space);
        kl_update_interval (100, as the authors; 1: every step); kl_ema_decay (0.97); kl_deadzone (0.02).
    """

    window: int = 4
    percentile: float = 95.0
    threshold_decay: float = 0.99
    hwe_boost: float = 0.5
    pass_reward: float = 1.0
    alpha_init: float = 0.5
    alpha_lr: float = 0.05
    alpha_min: float = 0.0
    alpha_max: float = 2.0
    target_coef: float = 1.0
    kl_target: float = 0.01
    kl_beta_init: float = 1.0
    kl_lr: float = 0.05
    kl_update_interval: int = 100
    kl_ema_decay: float = 0.97
    kl_deadzone: float = 0.02

    def __post_init__(self) -> None:
        if not (isinstance(self.window, int) and self.window >= 1):
            raise ValueError(f"ARESConfig.window must be a positive int, got {self.window!r}")
        if not (isinstance(self.kl_update_interval, int) and self.kl_update_interval >= 1):
            raise ValueError(f"ARESConfig.kl_update_interval must be a positive int, got {self.kl_update_interval!r}")
        if not 0.0 <= self.percentile <= 100.0:
            raise ValueError(f"ARESConfig.percentile must be in [0, 100], got {self.percentile}")
        if self.alpha_min > self.alpha_max:
            raise ValueError(f"ARESConfig needs alpha_min <= alpha_max, got {self.alpha_min}, {self.alpha_max}")
        check_numbers(self, positive=("kl_target", "kl_beta_init", "target_coef"),
                      nonnegative=("hwe_boost", "alpha_init", "alpha_lr", "kl_lr", "kl_deadzone"),
                      fraction=("threshold_decay", "kl_ema_decay"))


def difficulty(passed: Tensor, group_ids: Tensor) -> list[str]:
    """Step 3: the bucket of each row's group from its pass rate ([B] bool / 0-1 ``passed``, [B] int groups)."""
    if passed.shape != group_ids.shape or passed.dim() != 1:
        raise ValueError(f"passed and group_ids must both be [B], got {tuple(passed.shape)}, {tuple(group_ids.shape)}")
    _, index = torch.unique(group_ids, return_inverse=True)
    n = int(index.max()) + 1
    ones = torch.ones_like(index, dtype=torch.float64)
    rate = torch.zeros(n, dtype=torch.float64).index_add_(0, index.cpu(), passed.double().cpu()) / \
        torch.zeros(n, dtype=torch.float64).index_add_(0, index.cpu(), ones.cpu())
    return ["easy" if r >= 2 / 3 else "medium" if r >= 1 / 3 else "hard" for r in rate[index.cpu()].tolist()]


def _huber(x: float, kappa: float) -> float:
    x = max(float(x), 0.0)
    return 0.5 * x * x / kappa if x <= kappa else x - 0.5 * kappa


def _sat(x: float, temp: float) -> float:
    return 1.0 / (1.0 + math.exp(-x / max(temp, 1e-6)))


def hierarchical_entropy_reward(count: float, target: float, correct: bool, bucket: str, alpha: float) -> float:
    """Step 4: the entropy reward r_H of one rollout with ``count`` HWE tokens (see the module docstring)."""
    if bucket not in BUCKETS:
        raise ValueError(f"unknown difficulty {bucket!r}; valid: {list(BUCKETS)}")
    delta = count - target
    margin = max(1.0, MARGIN_FRAC[bucket] * max(target, 1.0))
    kappa, temp, cap = KAPPA[bucket], TEMP[bucket], alpha * CAP_SCALE[bucket]
    if not correct:
        return _sat(max(delta - margin, 0.0), temp) * cap * WRONG_GAIN[bucket]
    if bucket == "easy":
        return -min(cap, _huber(max(delta - margin, 0.0), kappa) / (margin + kappa) * cap)
    if bucket == "medium":
        return -min(cap, _huber(max(abs(delta) - margin, 0.0), kappa) / (margin + kappa) * cap)
    if delta >= -margin:
        return _sat(delta + margin, temp) * cap
    return -min(cap, 0.5 * _huber(-delta - margin, kappa) / (margin + kappa) * cap)


@dataclass
class DynamicKL:
    """Step 6: per-bucket KL weights beta_d, adapted toward ``target`` (see the module docstring)."""

    target: float = 0.01
    beta_init: float = 1.0
    lr: float = 0.05
    interval: int = 100
    ema_decay: float = 0.97
    deadzone: float = 0.02
    clip: float = 0.2
    beta_min: float = 1e-4
    beta_max: float = 100.0
    beta: dict[str, float] = field(default_factory=dict)
    last_kl: dict[str, float] = field(default_factory=dict)
    err_ema: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def weights(self, buckets: Sequence[str]) -> Tensor:
        """[B] float32 beta of each row's bucket."""
        return torch.tensor([self.beta.get(b, self.beta_init) for b in buckets], dtype=torch.float32)

    def update(self, buckets: Sequence[str], seq_kl: Sequence[float]) -> None:
        """One update from the rows' buckets and sequence-mean KL (unweighted k3)."""
        self.count += 1
        for b in BUCKETS:
            vals = [k for d, k in zip(buckets, seq_kl, strict=True) if d == b]
            if not vals:
                continue
            cur = sum(vals) / len(vals)
            last = self.last_kl.get(b, cur)
            kl = (1.0 - self.ema_decay) * cur + self.ema_decay * last
            self.last_kl[b] = kl
            e = kl / max(self.target, 1e-8) - 1.0
            if abs(e) < self.deadzone or self.count % self.interval:
                continue
            self.err_ema[b] = (1.0 - self.ema_decay) * e + self.ema_decay * self.err_ema.get(b, 0.0)
            step = self.lr * max(-self.clip, min(self.clip, self.err_ema[b]))
            log_b = math.log(min(max(self.beta.get(b, self.beta_init), self.beta_min), self.beta_max)) + step
            self.beta[b] = math.exp(min(max(log_b, math.log(self.beta_min)), math.log(self.beta_max)))


class ARESState:
    """What ARES carries between steps: tau_H, the per-bucket targets and caps, the dynamic KL."""

    def __init__(self, config: ARESConfig) -> None:
        self.config = c = config
        self.threshold = HWEThreshold(c.window, c.percentile, c.threshold_decay)
        self.alpha = {b: c.alpha_init for b in BUCKETS}
        self.target: dict[str, int] = {}
        self.kl = DynamicKL(c.kl_target, c.kl_beta_init, c.kl_lr, c.kl_update_interval, c.kl_ema_decay, c.kl_deadzone)

    def state_dict(self) -> dict:
        """What a checkpoint needs to resume (plain JSON types)."""
        k = self.kl
        return {"threshold": self.threshold.value, "alpha": dict(self.alpha), "target": dict(self.target),
                "kl": {"beta": dict(k.beta), "last_kl": dict(k.last_kl), "err_ema": dict(k.err_ema), "count": k.count}}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.threshold.value = state["threshold"]
        self.alpha, self.target = dict(state["alpha"]), dict(state["target"])
        kl = state["kl"]
        self.kl.beta, self.kl.last_kl, self.kl.err_ema = dict(kl["beta"]), dict(kl["last_kl"]), dict(kl["err_ema"])
        self.kl.count = int(kl["count"])

    def token_temperature(self):
        """Step 1 for the sampler: a stateful ``fn(scaled [B, V]) -> [B]`` factor, 1 + hwe_boost where the trailing
        window of the entropies drawn so far reaches tau_H (None before the first threshold or with hwe_boost 0)."""
        c, tau = self.config, self.threshold.value
        if tau is None or c.hwe_boost == 0:
            return None
        seen: list[Tensor] = []

        def factor(scaled: Tensor) -> Tensor:
            seen.append(token_entropy(scaled.float()))
            ent = torch.stack(seen, 1)
            hot = trailing_hwe(ent, torch.ones_like(ent, dtype=torch.bool), c.window, tau)[:, -1]
            return 1.0 + c.hwe_boost * hot.to(scaled.dtype)

        return factor

    def shape(self, rewards: Tensor, group_ids: Tensor, entropy: Tensor, mask: Tensor) -> tuple[Tensor, list[str], dict]:
        """Steps 2-5 on one rollout: ([B] shaped rewards, [B] buckets, metrics)."""
        c = self.config
        tau = self.threshold.update(entropy, mask)  # 2.
        counts = hwe_count(entropy, mask, c.window, tau).tolist()
        passed = rewards >= c.pass_reward
        buckets = difficulty(passed, group_ids)  # 3.
        for b in BUCKETS:  # 5. targets of this batch, then the caps' dual ascent
            vals = [n for d, n in zip(buckets, counts, strict=True) if d == b]
            if not vals:
                continue
            mean = sum(vals) / len(vals)
            self.target[b] = round(c.target_coef * mean)
            err = mean - self.target[b] if b != "hard" else self.target[b] - mean
            self.alpha[b] = min(c.alpha_max, max(c.alpha_min, self.alpha[b] + c.alpha_lr * err))
        bonus = [hierarchical_entropy_reward(n, self.target[d], bool(ok), d, self.alpha[d])  # 4.
                 for n, ok, d in zip(counts, passed.tolist(), buckets, strict=True)]
        shaped = rewards + torch.tensor(bonus, dtype=rewards.dtype, device=rewards.device)
        metrics = {"ares/threshold": tau, "ares/hwe_count_mean": sum(counts) / len(counts),
                   "ares/entropy_reward_mean": sum(bonus) / len(bonus),
                   **{f"ares/{b}_frac": buckets.count(b) / len(buckets) for b in BUCKETS},
                   **{f"ares/kl_beta_{b}": self.kl.beta.get(b, self.kl.beta_init) for b in BUCKETS}}
        return shaped, buckets, metrics
