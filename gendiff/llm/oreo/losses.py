"""OREO's two losses (Wang et al. 2024, "Offline Reinforcement Learning for LLM Multi-Step Reasoning",
arXiv 2412.16145), from the soft Bellman equation of KL-regularised RL on a token MDP.

Setting: state s_t = prompt + the first t completion tokens, action a_t = token t, deterministic transitions,
a sparse reward R(tau) in {0, 1} given with the last action (EOS). With the KL-regularised objective
E[R] - beta KL(pi || pi_ref), the optimal policy and its soft value satisfy, per step (the paper's soft
Bellman equation, Theorem 1):

    V*(s_t) - V*(s_{t+1}) = r(s_t, a_t) - beta log pi*(a_t | s_t) / pi_ref(a_t | s_t),

and summed from t to the end of a trajectory of T steps (V at the terminal state is 0, r is R at the last step):

    V*(s_t) = R(tau) - beta sum_{i >= t} log pi*(a_i | s_i) / pi_ref(a_i | s_i).            (*)

OREO fits a value V_phi and a policy pi_theta to (*) on offline trajectories:

1. Log-ratios: rho_t = log pi_theta(a_t | s_t) - log pi_ref(a_t | s_t) (pi_ref frozen), suffix sums
   S_t = sum_{i >= t} rho_i over the valid steps.
2. Value loss (the paper's value objective): L_V = mean_tau 1/T sum_t (V_phi(s_t) - R + beta sg[S_t])^2, only phi
   is trained by it (sg: stop-gradient). Option ``terminal_value`` (ours, not in the paper): the state after EOS,
   s_T, joins with target R (the empty sum of (*) read with the reward counted on arrival), so that the search
   can score finished and unfinished beams with one value function; the mean is then over T + 1 states.
3. Policy loss (the paper's step-level policy objective): L_pi = mean_tau 1/T sum_t
   (sg[V_phi(s_t)] - R + beta rho_t + beta sg[S_{t+1}])^2 + alpha L_reg. Only the current step's rho_t carries a
   gradient, so each token is pushed to close its own Bellman residual: d/d theta = 2 beta delta_t grad log pi(a_t):
   when the trajectory did better than the value expected (delta_t < 0), pi(a_t | s_t) rises.
4. Regulariser: L_reg = mean_tau 1/T sum_t KL(pi_theta(. | s_t) || pi_ref(. | s_t)), the full-vocabulary KL at
   each visited state (``gendiff.entropy.token_kl``).

What I could not verify: the paper's text was not readable offline (only its abstract and the public repository's
README). Steps 2-4 follow my reading of the paper's method section (value loss with the policy's log-ratios
detached; step-level policy loss with the future log-ratios and the value detached; an alpha-weighted KL term,
whose exact form in the paper (full KL vs a sampled estimate) I could not check). The paper's numbered equations are
therefore cited by name (soft Bellman equation, value objective, policy objective), not by number.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class OREOConfig:
    """OREO's coefficients.

    Attributes:
        beta: KL-regularisation strength of the soft Bellman equation (*) (0.01 in the paper's math runs; the
            tiny task needs larger values, see benchmarks/llm/README.md).
        alpha: weight of the KL regulariser L_reg in the policy loss (>= 0).
        terminal_value: fit V at the state after EOS with target R (step 2; needed by the value-guided search).
    """

    beta: float = 0.1
    alpha: float = 0.0
    terminal_value: bool = True

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"OREOConfig.beta must be positive, got {self.beta}")
        if not self.alpha >= 0:
            raise ValueError(f"OREOConfig.alpha must be >= 0, got {self.alpha}")


def _check(name: str, mask: Tensor, rewards: Tensor, **tensors: Tensor | None) -> Tensor:
    """Shapes, 0/1 mask with >= 1 valid step per row, finite values; returns the bool mask [B, T]."""
    if not isinstance(mask, Tensor) or mask.dim() != 2 or mask.shape[0] == 0:
        raise ValueError(f"{name}: mask must be [B, T], got {getattr(mask, 'shape', type(mask))}")
    if not isinstance(rewards, Tensor) or rewards.shape != mask.shape[:1]:
        raise ValueError(f"{name}: rewards must be [B] = {tuple(mask.shape[:1])}, got {getattr(rewards, 'shape', None)}")
    for key, t in tensors.items():
        if t is None:
            continue
        want = mask.shape[:1] if key == "terminal_values" else mask.shape
        if not isinstance(t, Tensor) or t.shape != want:
            raise ValueError(f"{name}: {key} must have shape {tuple(want)}, got {getattr(t, 'shape', type(t))}")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name}: mask must hold only 0 and 1")
    m = mask != 0
    empty = (~m.any(-1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{name}: every trajectory needs at least one step; rows {empty[:10]} have none")
    for key, t in {"rewards": rewards, **tensors}.items():
        if t is None:
            continue
        vals = t.detach() if key in ("rewards", "terminal_values") else t.detach()[m]
        if not bool(torch.isfinite(vals).all()):
            raise ValueError(f"{name}: {key} holds NaN or inf at valid steps")
    return m


def _valid(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` with 0 at invalid steps, so that padding (even NaN) reaches neither the loss nor the gradient."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def suffix_sums(x: Tensor, mask: Tensor) -> Tensor:
    """S_t = sum_{i >= t} x_i over valid steps; [B, T] -> [B, T] (0 at invalid steps contributes nothing)."""
    return _valid(x, mask).flip(-1).cumsum(-1).flip(-1)


def _per_trajectory_mean(sq: Tensor, mask: Tensor, extra: Tensor | None = None) -> Tensor:
    """mean over trajectories of (sum_t sq_t [+ extra]) / (T [+ 1])."""
    total = torch.where(mask, sq, torch.zeros((), dtype=sq.dtype, device=sq.device)).sum(-1)
    count = mask.sum(-1).to(sq.dtype)
    if extra is not None:
        total, count = total + extra, count + 1
    return (total / count).mean()


def oreo_value_loss(values: Tensor, logp: Tensor, ref_logp: Tensor, rewards: Tensor, mask: Tensor, config: OREOConfig,
                    terminal_values: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Step 2: the value loss L_V.

    Args:
        values: [B, T] V_phi(s_t) at the state before each completion token, with gradient.
        logp: [B, T] log pi_theta(a_t | s_t) (detached here).
        ref_logp: [B, T] log pi_ref(a_t | s_t).
        rewards: [B] the final reward R(tau).
        mask: [B, T] 1 at the trajectory's steps (EOS included).
        config: ``OREOConfig``.
        terminal_values: [B] V_phi(s_T) after the last step (required when ``config.terminal_value``).

    Returns:
        (scalar loss, metrics ``loss/value``, ``oreo/value_mean``, ``oreo/value_target_mean``).
    """
    m = _check("oreo_value_loss", mask, rewards, values=values, logp=logp, ref_logp=ref_logp,
               terminal_values=terminal_values)
    if config.terminal_value and terminal_values is None:
        raise ValueError("oreo_value_loss: config.terminal_value is set, so terminal_values [B] is required")
    rho = _valid(logp.detach() - ref_logp.detach(), m)  # 1.
    target = rewards[:, None].to(values.dtype) - config.beta * suffix_sums(rho, m).to(values.dtype)  # (*)
    delta = _valid(values, m) - target  # 2. V(s_t) - R + beta sg[S_t]
    extra = None
    if config.terminal_value:
        extra = (terminal_values - rewards.to(terminal_values.dtype)) ** 2
    loss = _per_trajectory_mean(delta**2, m, extra)
    with torch.no_grad():
        n = m.sum()
        metrics = {"loss/value": float(loss.detach()),
                   "oreo/value_mean": float(_valid(values.detach(), m).sum() / n),
                   "oreo/value_target_mean": float(_valid(target, m).sum() / n)}
    return loss, metrics


def oreo_policy_loss(logp: Tensor, ref_logp: Tensor, values: Tensor, rewards: Tensor, mask: Tensor, config: OREOConfig,
                     kl: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Steps 3-4: the policy loss L_pi (+ alpha L_reg).

    Args:
        logp: [B, T] log pi_theta(a_t | s_t), with gradient.
        ref_logp: [B, T] log pi_ref(a_t | s_t).
        values: [B, T] V_phi(s_t) (detached here).
        rewards: [B] R(tau).
        mask: [B, T] valid steps.
        config: ``OREOConfig``.
        kl: [B, T] KL(pi_theta(. | s_t) || pi_ref(. | s_t)) with gradient (required when ``config.alpha`` > 0).

    Returns:
        (scalar loss, metrics ``loss/policy``, ``loss/bellman``, ``oreo/kl``, ``oreo/logratio``).
    """
    m = _check("oreo_policy_loss", mask, rewards, logp=logp, ref_logp=ref_logp, values=values, kl=kl)
    if config.alpha > 0 and kl is None:
        raise ValueError(f"oreo_policy_loss: alpha = {config.alpha} > 0 needs the per-step kl [B, T]")
    rho = _valid(logp - ref_logp.detach(), m)  # 1.
    future = suffix_sums(rho.detach(), m) - rho.detach()  # sg[S_{t+1}]
    delta = _valid(values.detach(), m) - rewards[:, None].to(rho.dtype) + config.beta * (rho + future)  # 3.
    bellman = _per_trajectory_mean(delta**2, m)
    loss = bellman
    reg = torch.zeros((), dtype=rho.dtype, device=rho.device)
    if kl is not None:
        reg = _per_trajectory_mean(_valid(kl, m), m)  # 4.
        if config.alpha > 0:
            loss = loss + config.alpha * reg
    with torch.no_grad():
        n = m.sum()
        metrics = {"loss/policy": float(loss.detach()), "loss/bellman": float(bellman.detach()),
                   "oreo/kl": float(reg.detach()),
                   "oreo/logratio": float(rho.detach().sum() / n)}
    return loss, metrics
