"""The reward -> optimal-policy map of a one-step softmax policy ("The Policy Cliff: A Theoretical
Analysis of Reward-Policy Maps in Large Language Models", 2025).

A bandit with K actions and rewards r [K]; the policy pi = softmax(theta). The paper's point, in its simplest case:

1. Unregularised, J(pi) = <pi, r>. The optimal policies are the distributions on argmax r; with two near-optimal
   actions r = (1, 1 + delta) the optimum jumps from action 0 to action 1 as delta crosses 0 (the map
   r -> pi* is discontinuous exactly where optimal actions are not unique: the "cliff").
2. Entropy-regularised, J_alpha(pi) = <pi, r> + alpha H(pi). Its unique optimum is the Gibbs policy
   pi*_alpha = softmax(r / alpha) (the Gibbs variational principle; the paper: entropy regularisation restores
   stability at the cost of stochasticity):
   the map is smooth, with Lipschitz constant <= 1 / (4 alpha) in each difference r_i - r_j; for two actions
   pi*_alpha(1) = sigmoid(delta / alpha).
3. Training reaches them: exact (expected) gradient ascent on theta, grad J_alpha, converges to softmax(r / alpha)
   for alpha > 0; for alpha = 0 it converges only at rate ~1 / (lr steps delta), so after a finite budget the
   trained map is a steep but continuous ramp whose width shrinks as the budget grows (the cliff is the limit).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gendiff.entropy import token_entropy


def regularized_optimum(rewards: Tensor, alpha: float) -> Tensor:
    """The maximiser of <pi, r> + alpha H(pi) over the simplex (steps 1-2).

    Args:
        rewards: [..., K] rewards of K actions.
        alpha: entropy weight >= 0; alpha = 0 returns the unregularised optimum that spreads its mass uniformly
            over the tied best actions (the one optimum symmetric in them; any mixture of them is optimal too).

    Returns:
        [..., K] probabilities, softmax(r / alpha) for alpha > 0.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if alpha > 0:
        return torch.softmax(rewards / alpha, dim=-1)
    best = rewards == rewards.max(dim=-1, keepdim=True).values
    return best.to(rewards.dtype) / best.sum(-1, keepdim=True)


def objective(logits: Tensor, rewards: Tensor, alpha: float) -> Tensor:
    """J_alpha(softmax(theta)) = <pi, r> + alpha H(pi) for ``logits`` theta [..., K] -> [...] (differentiable)."""
    pi = torch.softmax(logits, dim=-1)
    value = (pi * rewards).sum(-1)
    return value + alpha * token_entropy(logits) if alpha > 0 else value


def train_softmax_policy(rewards: Tensor, alpha: float, steps: int, lr: float = 1.0,
                         logits: Tensor | None = None) -> Tensor:
    """Step 3: ``steps`` of plain gradient ascent on theta with the exact gradient of J_alpha.

    Args:
        rewards: [..., K] rewards (each leading index is an independent bandit).
        alpha: entropy weight >= 0.
        steps: gradient steps.
        lr: step size.
        logits: [..., K] starting logits (default zeros: the uniform policy).

    Returns:
        [..., K] the trained policy softmax(theta).
    """
    if steps < 0 or lr <= 0:
        raise ValueError(f"steps must be >= 0 and lr > 0, got {steps}, {lr}")
    theta = torch.zeros_like(rewards) if logits is None else logits.detach().clone()
    theta.requires_grad_(True)
    for _ in range(steps):
        (grad,) = torch.autograd.grad(objective(theta, rewards, alpha).sum(), theta)
        with torch.no_grad():
            theta += lr * grad
    return torch.softmax(theta.detach(), dim=-1)
