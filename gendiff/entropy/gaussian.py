"""Gaussian and tanh-Gaussian policies: log-probs, entropy, reparameterised samples, clipped atanh."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gendiff.entropy._checks import _broadcast, _check_finite, _check_tensor

_LOG2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor, check_finite: bool = True) -> Tensor:
    """log N(x; mean, diag(exp(log_std)^2)), summed over the last dim; inputs broadcast: [..., D] -> [...].

    ``check_finite=False`` skips the NaN/inf check of log_std (a host sync), for training loops that must not wait.
    """
    for name, t in (("x", x), ("mean", mean), ("log_std", log_std)):
        _check_tensor(name, t, min_dim=1)
    _broadcast(("x", "mean", "log_std"), x, mean, log_std)
    if check_finite:
        _check_finite("log_std", log_std)
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(-1)


def gaussian_entropy(log_std: Tensor) -> Tensor:
    """Entropy of a diagonal Gaussian, sum over the last dim of 0.5 + 0.5 log(2 pi) + log_std: [..., D] -> [...]."""
    _check_tensor("log_std", log_std, min_dim=1)
    _check_finite("log_std", log_std)
    return (0.5 + _HALF_LOG_2PI + log_std).sum(-1)


def gaussian_kl(mean_q: Tensor, log_std_q: Tensor, mean_p: Tensor, log_std_p: Tensor) -> Tensor:
    """KL(N(mean_q, std_q^2) || N(mean_p, std_p^2)) of diagonal Gaussians, summed over the last dim: [..., D] -> [...].

    Per dimension: log(std_p / std_q) + (std_q^2 + (mean_q - mean_p)^2) / (2 std_p^2) - 1/2.
    """
    for name, t in (("mean_q", mean_q), ("log_std_q", log_std_q), ("mean_p", mean_p), ("log_std_p", log_std_p)):
        _check_tensor(name, t, min_dim=1)
    _broadcast(("mean_q", "log_std_q", "mean_p", "log_std_p"), mean_q, log_std_q, mean_p, log_std_p)
    var_ratio = torch.exp(2 * (log_std_q - log_std_p))
    diff = (mean_q - mean_p) * torch.exp(-log_std_p)
    return (log_std_p - log_std_q + 0.5 * (var_ratio + diff.square()) - 0.5).sum(-1)


def tanh_gaussian_log_prob(pre_tanh: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """log-density of a = tanh(u), u ~ N(mean, std^2), given u: [..., D] -> [...].

    log pi(a) = log N(u) - sum_d log(1 - tanh(u_d)^2), with the stable form
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) (SAC, Haarnoja et al. 2018, Appendix C).
    """
    _check_finite("pre_tanh", pre_tanh)
    log_det = 2.0 * (_LOG2 - pre_tanh - F.softplus(-2.0 * pre_tanh))
    return gaussian_log_prob(pre_tanh, mean, log_std) - log_det.sum(-1)


def tanh_gaussian_sample(
    mean: Tensor, log_std: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Reparameterised sample a = tanh(mean + std * eps) (gradients flow to mean and log_std).

    Args:
        mean: [..., D]; log_std: broadcastable to mean.
        generator: optional torch.Generator for eps.

    Returns:
        (action [..., D] in (-1, 1), log_prob [...], pre_tanh [..., D]).
    """
    _check_tensor("mean", mean, min_dim=1)
    _check_tensor("log_std", log_std, min_dim=1)
    if _broadcast(("mean", "log_std"), mean, log_std) != mean.shape:
        raise ValueError(
            f"log_std shape {tuple(log_std.shape)} must broadcast to mean shape {tuple(mean.shape)}"
        )
    _check_finite("mean", mean)
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    pre_tanh = mean + torch.exp(log_std) * eps
    return torch.tanh(pre_tanh), tanh_gaussian_log_prob(pre_tanh, mean, log_std), pre_tanh


def atanh_clipped(a: Tensor, eps: float = 1e-3) -> Tensor:
    """arctanh(clip(a, -(1 - eps), 1 - eps)): maps actions in [-1, 1] to pre-tanh space (PGD, SAC)."""
    _check_tensor("a", a)
    if not (0.0 < eps < 1.0):
        raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
    if bool(torch.isnan(a).any()):
        raise ValueError("a contains NaN")
    return torch.atanh(a.clamp(-(1.0 - eps), 1.0 - eps))
