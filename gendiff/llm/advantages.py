"""Advantage estimators for GRPO-family training, in the ``ADVANTAGES`` registry.

Every estimator is a pure function::

    fn(rewards [B], group_ids [B] int, config=None, **extras) -> (advantages [B] or [B, T], metrics)

``group_ids[i]`` names the prompt that rollout i answers (rollouts of one prompt form a group).
Keys: grpo, dr_grpo, rloo, riskpo, empg, aepo, dcpo, hapo, empo_reward. Groups of one rollout carry
no relative signal and get advantage 0 (verl treats them as mean 0, std 1, i.e. A = r).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gendiff.entropy import masked_mean
from gendiff.registry import Registry

ADVANTAGES: Registry[Callable[..., tuple[Tensor, dict[str, float]]]] = Registry("advantage estimator")
KNOWN_EXTRAS = frozenset({"mask", "entropy", "quantiles", "is_regularizer", "logp", "logp_target", "cluster_ids"})


def _register(name: str, config_cls: type) -> Callable:
    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(rewards, group_ids, config=None, **extras):
            unknown = set(extras) - KNOWN_EXTRAS
            if unknown:
                raise TypeError(f"advantage estimator {name!r}: unknown extras {sorted(unknown)}")
            config = config_cls() if config is None else config
            if not isinstance(config, config_cls):
                raise TypeError(f"advantage estimator {name!r} needs a {config_cls.__name__}, "
                                f"got {type(config).__name__}")
            return fn(rewards, group_ids, config, **extras)

        wrapper.config_class = config_cls  # type: ignore[attr-defined]
        ADVANTAGES.register(name)(wrapper)
        return wrapper

    return deco


def check_rewards(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Validate [B] finite float rewards and [B] integer group ids; return (rewards, group index 0..G-1)."""
    if not isinstance(rewards, Tensor) or not isinstance(group_ids, Tensor):
        raise TypeError("rewards and group_ids must be torch.Tensor")
    if rewards.dim() != 1 or rewards.numel() == 0:
        raise ValueError(f"rewards must be a non-empty [B] tensor, got shape {tuple(rewards.shape)}")
    if group_ids.shape != rewards.shape:
        raise ValueError(f"group_ids must be [B] = {tuple(rewards.shape)}, got {tuple(group_ids.shape)}")
    if group_ids.is_floating_point() or group_ids.dtype == torch.bool:
        raise TypeError(f"group_ids must be an integer tensor, got {group_ids.dtype}")
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError(f"rewards hold NaN or inf at rows {torch.nonzero(~torch.isfinite(rewards)).flatten().tolist()}")
    _, index = torch.unique(group_ids, return_inverse=True)
    return rewards.to(torch.get_default_dtype()) if not rewards.is_floating_point() else rewards, index


def group_stats(rewards: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-rollout (group mean, group unbiased std, group size), each [B]; std is 0 for size-1 groups."""
    n_groups = int(index.max()) + 1
    size = torch.zeros(n_groups, dtype=rewards.dtype, device=rewards.device).index_add_(0, index, torch.ones_like(rewards))
    mean = torch.zeros_like(size).index_add_(0, index, rewards) / size
    sq = torch.zeros_like(size).index_add_(0, index, (rewards - mean[index]) ** 2)
    std = torch.sqrt(sq / (size - 1).clamp_min(1))
    return mean[index], std[index], size[index]


def _summary(adv: Tensor, rewards: Tensor) -> dict[str, float]:
    return {"adv/mean": float(adv.mean()), "adv/std": float(adv.std(unbiased=False)),
            "reward/mean": float(rewards.mean())}


@dataclass
class GRPOAdvConfig:
    """Attributes: eps (1e-6) added to the group std."""

    eps: float = 1e-6


@_register("grpo", GRPOAdvConfig)
def grpo_advantage(rewards: Tensor, group_ids: Tensor, config: GRPOAdvConfig, **_: object):
    """A_i = (r_i - mean_g r) / (std_g r + eps), unbiased std (Shao et al. 2024, eq. in Sec. 4.1.2)."""
    rewards, index = check_rewards(rewards, group_ids)
    mean, std, size = group_stats(rewards, index)
    adv = torch.where(size > 1, (rewards - mean) / (std + config.eps), torch.zeros_like(rewards))
    return adv, _summary(adv, rewards)


@dataclass
class PlainAdvConfig:
    """No fields."""


@_register("dr_grpo", PlainAdvConfig)
def dr_grpo_advantage(rewards: Tensor, group_ids: Tensor, config: PlainAdvConfig, **_: object):
    """A_i = r_i - mean_g r: GRPO without the std division (Liu et al. 2025, Dr. GRPO)."""
    rewards, index = check_rewards(rewards, group_ids)
    mean, _, size = group_stats(rewards, index)
    adv = torch.where(size > 1, rewards - mean, torch.zeros_like(rewards))
    return adv, _summary(adv, rewards)


@_register("rloo", PlainAdvConfig)
def rloo_advantage(rewards: Tensor, group_ids: Tensor, config: PlainAdvConfig, **_: object):
    """A_i = r_i - mean_{j != i in g} r_j (Ahmadian et al. 2024, RLOO)."""
    rewards, index = check_rewards(rewards, group_ids)
    mean, _, size = group_stats(rewards, index)
    loo = (mean * size - rewards) / (size - 1).clamp_min(1)
    adv = torch.where(size > 1, rewards - loo, torch.zeros_like(rewards))
    return adv, _summary(adv, rewards)


@dataclass
class RiskPOConfig:
    """Attributes: alpha (0.2), beta (0.8), omega (1.5), bundle_size (questions per bundle, 1)."""

    alpha: float = 0.2
    beta: float = 0.8
    omega: float = 1.5
    bundle_size: int = 1


def mvar_weight(s: Tensor, q_a: float, q_b: float, config: RiskPOConfig) -> Tensor:
    """Score-function weight of J = CVaR_[0, alpha] + omega RVaR_[alpha, beta] at scores ``s``:
    (s - q_a) 1[s <= q_a] / alpha + omega [(s - q_b) 1[s <= q_b] - (s - q_a) 1[s <= q_a]] / (beta - alpha),
    using d CVaR_u = E[(s - q_u) 1[s <= q_u] grad log p] / u and RVaR = (beta CVaR_beta - alpha CVaR_alpha)
    / (beta - alpha)."""
    low = (s - q_a) * (s <= q_a)
    mid = (s - q_b) * (s <= q_b) - low
    return low / config.alpha + config.omega * mid / (config.beta - config.alpha)


@_register("riskpo", RiskPOConfig)
def riskpo_advantage(rewards: Tensor, group_ids: Tensor, config: RiskPOConfig, quantiles=None, **_: object):
    """RiskPO (Ren et al. 2025): bundled mixed value-at-risk advantage.

    1. Bundles: the G groups (sorted by id, equal sizes n) are cut into runs of ``bundle_size``; the
       k-th rollout of each question in a bundle forms bundle sample (b, k), scored by the mean reward.
    2. Quantiles q_alpha, q_beta of the bundle scores: from ``quantiles=(q_a, q_b)`` (tracked online
       by the trainer) or else from this batch (``torch.quantile``, linear).
    3. Every rollout in bundle sample (b, k) gets ``mvar_weight`` of its score.
    """
    if not 0.0 < config.alpha < config.beta <= 1.0:
        raise ValueError(f"need 0 < alpha < beta <= 1, got {config.alpha}, {config.beta}")
    rewards, index = check_rewards(rewards, group_ids)
    n_groups = int(index.max()) + 1
    sizes = torch.bincount(index, minlength=n_groups)
    if not bool((sizes == sizes[0]).all()):
        raise ValueError(f"riskpo needs equal group sizes, got {sizes.tolist()}")
    if n_groups % config.bundle_size:
        raise ValueError(f"{n_groups} groups do not split into bundles of {config.bundle_size}")
    order = torch.argsort(index, stable=True)  # rows grouped by group, appearance order inside
    grid = rewards[order].view(n_groups // config.bundle_size, config.bundle_size, int(sizes[0]))
    scores = grid.mean(1)  # [n_bundles, n]
    if quantiles is None:
        q = torch.quantile(scores.flatten().double(), torch.tensor([config.alpha, config.beta], dtype=torch.float64))
        q_a, q_b = float(q[0]), float(q[1])
    else:
        q_a, q_b = (float(v) for v in quantiles)
    w = mvar_weight(scores, q_a, q_b, config)  # [n_bundles, n]
    adv = torch.empty_like(rewards)
    adv[order] = w[:, None, :].expand_as(grid).reshape(-1).to(rewards.dtype)
    metrics = _summary(adv, rewards)
    metrics.update({"riskpo/q_alpha": q_a, "riskpo/q_beta": q_b})
    return adv, metrics


def _token_inputs(name: str, rewards: Tensor, **tensors: Tensor | None) -> Tensor:
    mask = tensors.get("mask")
    if mask is None:
        raise ValueError(f"advantage estimator {name!r} needs mask=[B, T]")
    if mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"mask must be [B, T] with B = {rewards.shape[0]}, got {tuple(mask.shape)}")
    for key, t in tensors.items():
        if t is None:
            raise ValueError(f"advantage estimator {name!r} needs {key}=[B, T]")
        if t.shape != mask.shape:
            raise ValueError(f"{key} must be [B, T] = {tuple(mask.shape)}, got {tuple(t.shape)}")
        if key != "mask" and not bool(torch.isfinite(t[mask != 0]).all()):
            raise ValueError(f"{key} holds NaN or inf at valid tokens")
    if not bool((mask != 0).any()):
        raise ValueError("mask is empty: no valid token")
    return mask != 0
