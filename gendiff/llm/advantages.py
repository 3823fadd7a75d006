"""Advantage estimators for GRPO-family training, in the ``ADVANTAGES`` registry.

Every estimator is a pure function::

    fn(rewards [B], group_ids [B] int, config=None, **extras) -> (advantages [B] or [B, T], metrics)

``group_ids[i]`` names the prompt that rollout i answers (rollouts of one prompt form a group).
Keys: grpo, dr_grpo, rloo, riskpo, empg, aepo, dcpo, hapo, empo_reward. Groups of one rollout carry
no relative signal and get advantage 0 (verl treats them as mean 0, std 1, i.e. A = r).

Critic-based token-level pieces (PPO-max, ``gendiff.llm.ppo_max``) live here too, outside the registry because they
need a critic's values: ``gae_advantages`` (GAE over the completion tokens) and ``whiten`` (global normalisation).
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
        q = torch.quantile(scores.flatten().double(), torch.tensor([config.alpha, config.beta], dtype=torch.float64, device=scores.device))
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


@dataclass
class EMPGConfig:
    """Attributes: k (1.0), zeta (0.1), eps (1e-6, GRPO std; also min-max guard)."""

    k: float = 1.0
    zeta: float = 0.1
    eps: float = 1e-6


def next_valid(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """For each [B, T] position, x at the next valid position of the same row and whether one exists."""
    out, has = torch.zeros_like(x), torch.zeros_like(mask)
    carry = torch.zeros_like(x[:, 0])
    carry_has = torch.zeros_like(mask[:, 0])
    for t in range(x.shape[1] - 1, -1, -1):  # reverse scan over time
        out[:, t], has[:, t] = carry, carry_has
        carry = torch.where(mask[:, t], x[:, t], carry)
        carry_has = carry_has | mask[:, t]
    return out, has


@_register("empg", EMPGConfig)
def empg_advantage(rewards: Tensor, group_ids: Tensor, config: EMPGConfig, mask=None, entropy=None, **_: object):
    """EMPG (Wang et al. 2025), with each token as a step. Returns [B, T] advantages (0 at padding).

    1. A = GRPO advantage of the rewards.
    2. Hn = min-max normalised entropy over the batch's valid tokens.
    3. g_t = exp(-k Hn_t) / mean_valid exp(-k Hn).
    4. A'_t = g_t A + zeta exp(-k Hn_next) (future-clarity bonus; 0 on a row's last valid token).
    """
    m = _token_inputs("empg", rewards, mask=mask, entropy=entropy)
    adv, _ = grpo_advantage(rewards, group_ids, GRPOAdvConfig(config.eps))
    h = entropy.detach().to(adv.dtype)
    lo, hi = h[m].min(), h[m].max()
    hn = (h - lo) / (hi - lo).clamp_min(config.eps)
    e = torch.exp(-config.k * hn)
    g = e / masked_mean(e, m)
    e_next, has_next = next_valid(e, m)
    out = g * adv[:, None] + config.zeta * e_next * has_next
    out = torch.where(m, out, torch.zeros_like(out))
    metrics = _summary(out[m], rewards)
    metrics["empg/g_mean"] = float(masked_mean(g, m))
    return out, metrics


@dataclass
class AEPOConfig:
    """Attributes: coef (1.0, REINFORCE weight), temp_low (0.8), temp_high (1.2), eps (1e-6);
    for the trainer: target_entropy (None: the first rollout's entropy) and regularizer_size (rollouts
    per prompt drawn at the target temperature, besides the group, 2)."""

    coef: float = 1.0
    temp_low: float = 0.8
    temp_high: float = 1.2
    eps: float = 1e-6
    target_entropy: float | None = None
    regularizer_size: int = 2


def target_temperature(entropy: float, target_entropy: float, temp_low: float = 0.8, temp_high: float = 1.2) -> float:
    """AEPO / DCPO temperature rule: sample the regulariser at temp_high below the target entropy,
    at temp_low at or above it."""
    return temp_high if entropy < target_entropy else temp_low


@_register("aepo", AEPOConfig)
def aepo_advantage(rewards: Tensor, group_ids: Tensor, config: AEPOConfig, is_regularizer=None, **_: object):
    """AEPO (Wang et al. 2025): GRPO advantages for the ordinary rollouts; REINFORCE weights
    coef * r_i (no baseline) for the rollouts drawn at the ``target_temperature`` (``is_regularizer``
    [B] bool). The group statistics of the ordinary rollouts exclude the regulariser rollouts."""
    rewards, _ = check_rewards(rewards, group_ids)
    if not isinstance(is_regularizer, Tensor) or is_regularizer.shape != rewards.shape:
        raise ValueError("aepo needs is_regularizer=[B] bool marking the temperature-adjusted rollouts")
    reg = is_regularizer.bool()
    adv = config.coef * rewards.clone()
    if bool((~reg).any()):
        base, _ = grpo_advantage(rewards[~reg], group_ids[~reg], GRPOAdvConfig(config.eps))
        adv[~reg] = base
    metrics = _summary(adv, rewards)
    metrics["aepo/regularizer_frac"] = float(reg.float().mean())
    return adv, metrics


@dataclass
class DCPOConfig:
    """Attributes: lam (weight of the temperature-ratio term, 0.1), eps (1e-6, GRPO std); for the
    trainer: target_entropy (None: the first rollout's entropy), temp_low / temp_high (0.8 / 1.2) of
    ``target_temperature``, which picks the target T of pi_T each step."""

    lam: float = 0.1
    eps: float = 1e-6
    target_entropy: float | None = None
    temp_low: float = 0.8
    temp_high: float = 1.2


@_register("dcpo", DCPOConfig)
def dcpo_advantage(rewards: Tensor, group_ids: Tensor, config: DCPOConfig, mask=None, logp=None,
                   logp_target=None, **_: object):
    """DCPO (our reading of Wang et al. 2025, distribution-centric): on-policy samples, with a
    temperature-ratio term pulling pi toward the target pi_T ~ pi^(1/T):
    A'_t = A_GRPO + lam (pi_T(y_t) / pi(y_t) - 1), the ratio from ``logp_target`` = log pi_T(y_t) and
    ``logp`` = log pi(y_t) ([B, T], detached). E_pi[pi_T / pi] = 1, so the -1 is a baseline and the
    term is a REINFORCE estimate of -grad KL(pi_T || pi). Returns [B, T] (0 at padding)."""
    m = _token_inputs("dcpo", rewards, mask=mask, logp=logp, logp_target=logp_target)
    adv, _ = grpo_advantage(rewards, group_ids, GRPOAdvConfig(config.eps))
    term = torch.exp((logp_target - logp).detach().to(adv.dtype)) - 1.0
    out = torch.where(m, adv[:, None] + config.lam * term, torch.zeros_like(term))
    metrics = _summary(out[m], rewards)
    metrics["dcpo/ratio_term_mean"] = float(masked_mean(term, m))
    return out, metrics


@dataclass
class HAPOAdvConfig:
    """Attributes: eps (1e-6) added to the std; fallback (5.0): a group with any |A| >= fallback takes
    its GRPO advantages instead (the authors' "smooth score"; inf: never)."""

    eps: float = 1e-6
    fallback: float = 5.0


@_register("hapo", HAPOAdvConfig)
def hapo_advantage(rewards: Tensor, group_ids: Tensor, config: HAPOAdvConfig, mask=None, **_: object):
    """HAPO token-level group average (the authors' ``compute_hapo_outcome_advantage``):

    1. Each rollout's reward counts once per valid token: mu_g = sum_i L_i r_i / sum_i L_i,
       sigma_g^2 = sum_i L_i (r_i - mu_g)^2 / sum_i L_i, A_i = (r_i - mu_g) / (sigma_g + eps).
    2. A group holding any |A_i| >= ``fallback`` uses its GRPO advantages instead. Returns [B]."""
    m = _token_inputs("hapo", rewards, mask=mask)
    rewards, index = check_rewards(rewards, group_ids)
    lengths = m.sum(-1).to(rewards.dtype)
    n = int(index.max()) + 1
    tot = torch.zeros(n, dtype=rewards.dtype, device=rewards.device).index_add_(0, index, lengths).clamp_min(1)
    mu = (torch.zeros_like(tot).index_add_(0, index, lengths * rewards) / tot)[index]
    var = (torch.zeros_like(tot).index_add_(0, index, lengths * (rewards - mu) ** 2) / tot)[index]
    adv = (rewards - mu) / (var.sqrt() + config.eps)  # 1.
    big = torch.zeros(n, dtype=torch.bool, device=adv.device).index_put_((index,), adv.abs() >= config.fallback,
                                                                          accumulate=True)
    grpo, _ = grpo_advantage(rewards, group_ids, GRPOAdvConfig(config.eps))
    adv = torch.where(big[index], grpo, adv)  # 2.
    metrics = _summary(adv, rewards)
    metrics["hapo/fallback_groups"] = float(big.sum())
    return adv, metrics


def empo_rewards(cluster_ids: Tensor, group_ids: Tensor) -> Tensor:
    """EMPO (Zhang et al. 2025) semantic reward: r_i = |{j in group(i): c_j = c_i}| / |group(i)|. [B]."""
    if not isinstance(cluster_ids, Tensor) or cluster_ids.shape != group_ids.shape or cluster_ids.dim() != 1:
        raise ValueError("cluster_ids must be a [B] tensor like group_ids")
    same_group = group_ids[:, None] == group_ids[None, :]
    same_cluster = cluster_ids[:, None] == cluster_ids[None, :]
    return (same_group & same_cluster).sum(-1).double() / same_group.sum(-1).double()


@_register("empo_reward", GRPOAdvConfig)
def empo_advantage(rewards: Tensor | None, group_ids: Tensor, config: GRPOAdvConfig, cluster_ids=None,
                   **_: object):
    """EMPO: GRPO advantages of ``empo_rewards(cluster_ids, group_ids)``; ``rewards`` is ignored (pass
    None): the method is unsupervised. metrics["reward/mean"] is the mean semantic reward."""
    if cluster_ids is None:
        raise ValueError("empo_reward needs cluster_ids=[B] (semantic cluster of each answer)")
    return grpo_advantage(empo_rewards(cluster_ids, group_ids), group_ids, config)


# --------------------------------------------------------------------------- critic-based (token-level) estimators
def check_right_padded(mask: Tensor, like: Tensor | None = None, name: str = "mask") -> Tensor:
    """[B, T] bool of a right-padded completion mask (each row: valid tokens, then padding), or ValueError."""
    if mask.dim() != 2 or (like is not None and like.shape != mask.shape):
        want = "" if like is None else f" = {tuple(like.shape)}"
        raise ValueError(f"{name} must be [B, T]{want}, got {tuple(mask.shape)}")
    m = mask != 0
    holes = (m[:, 1:] & ~m[:, :-1]).any(-1).nonzero().flatten().tolist()
    if holes:
        raise ValueError(f"{name} must be right-padded (valid tokens first, then padding); rows {holes[:10]} "
                         "have a valid token after padding")
    return m


def gae_advantages(token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0,
                   lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the tokens of each completion (Schulman et al. 2016, eq. 11-16; the
    token-level MDP of Zheng et al. 2023, Secrets of RLHF I, Sec. 3.2: state = prompt + tokens so far).

    1. delta_t = r_t + gamma V(s_{t+1}) - V(s_t), with V = 0 after a row's last valid token (terminal).
    2. A_t = sum_l (gamma lam)^l delta_{t+l} over the row's valid tokens (reverse scan).
    3. Returns R_t = A_t + V(s_t), the critic's regression target.

    Args:
        token_rewards: [B, T] per-token rewards r_t.
        values: [B, T] V(s_t) of the state before token t.
        mask: [B, T] right-padded valid-token mask (``check_right_padded``).
        gamma, lam: discount and GAE lambda, each in [0, 1].

    Returns:
        (advantages [B, T], returns [B, T]), 0 at padding. gamma = lam = 1 gives A_t = sum_{t' >= t} r_t' - V(s_t).
    """
    m = check_right_padded(mask, token_rewards)
    if values.shape != token_rewards.shape:
        raise ValueError(f"values must be [B, T] = {tuple(token_rewards.shape)}, got {tuple(values.shape)}")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1], got gamma {gamma}, lam {lam}")
    for key, t in (("token_rewards", token_rewards), ("values", values)):
        if not bool(torch.isfinite(t[m]).all()):
            raise ValueError(f"{key} holds NaN or inf at valid tokens")
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    r, v = torch.where(m, token_rewards.to(values.dtype), zero), torch.where(m, values, zero)
    adv = torch.zeros_like(v)
    last = torch.zeros_like(v[:, 0])
    for t in range(v.shape[1] - 1, -1, -1):
        next_v = v[:, t + 1] if t + 1 < v.shape[1] else torch.zeros_like(last)  # 0 at padding: terminal
        delta = r[:, t] + gamma * next_v - v[:, t]  # 1.
        last = torch.where(m[:, t], delta + gamma * lam * last, zero)  # 2. (padding resets the scan)
        adv[:, t] = last
    return adv, torch.where(m, adv + v, zero)  # 3.


def whiten(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Global normalisation over the valid entries of a batch: (x - mean) / sqrt(var + eps), population var;
    0 at mask = 0 (Secrets of RLHF I, Sec. 5.3.1, advantage normalisation). ``x``, ``mask``: [B, T]."""
    m = mask != 0
    if x.shape != m.shape or not bool(m.any()):
        raise ValueError(f"whiten needs x and a non-empty mask of one shape, got {tuple(x.shape)}, {tuple(m.shape)}")
    mean = masked_mean(x, m)
    var = masked_mean((x - mean) ** 2, m)
    return torch.where(m, (x - mean) * torch.rsqrt(var + eps), torch.zeros_like(x))
