"""Masked statistics over completion tokens: means, variances, the log-prob x advantage covariance, windowed entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gendiff.entropy._checks import _broadcast, _check_finite, _check_tensor


def _check_mask(x: Tensor, mask: Tensor, x_name: str = "x") -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if _broadcast((x_name, "mask"), x, mask) != x.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must broadcast to {x_name} shape {tuple(x.shape)}")
    return mask.to(device=x.device) != 0


def _masked_sum_count(
    x: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None, keepdim: bool
) -> tuple[Tensor, Tensor]:
    _check_tensor("x", x)
    m = _check_mask(x, mask).expand(x.shape)
    dims = tuple(range(x.dim())) if dim is None else dim
    total = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=dims, keepdim=keepdim)
    return total, m.sum(dim=dims, keepdim=keepdim).to(x.dtype)


def masked_mean(x: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Mean of ``x`` over entries where ``mask`` is nonzero. Values at masked-out entries are ignored
    (even NaN); where no entry is valid the result is 0.

    Args:
        x: [...] float tensor.
        mask: broadcastable to x; bool or 0/1 numbers.
        dim: reduce over these dims (None: all).

    Returns:
        x reduced over ``dim`` (a scalar tensor for dim=None).
    """
    total, count = _masked_sum_count(x, mask, dim, keepdim=False)
    return total / count.clamp_min(1)


def masked_var(
    x: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None, unbiased: bool = False
) -> Tensor:
    """Variance of ``x`` over valid entries (same conventions as :func:`masked_mean`).

    ``unbiased=True`` divides by (n - 1) instead of n; the result is 0 where n (or n - 1) is 0.
    """
    total, count = _masked_sum_count(x, mask, dim, keepdim=True)
    centred = x - total / count.clamp_min(1)
    sq, n = _masked_sum_count(centred.square(), mask, dim, keepdim=False)
    return sq / (n - 1 if unbiased else n).clamp_min(1)


def logp_advantage_covariance(logp: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """Per-token centred product cov_i = (A_i - mean A)(logp_i - mean logp) (Clip-Cov / KL-Cov).

    Both means run over all valid tokens of the batch. The result is detached (it only selects tokens).

    Args:
        logp: [B, T] token log-probs.
        advantages: [B, T] per-token or [B] per-sequence advantages.
        mask: [B, T] valid-token mask.

    Returns:
        [B, T] covariance terms, 0 at invalid tokens.
    """
    _check_tensor("logp", logp)
    _check_tensor("advantages", advantages)
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
    if advantages.shape == logp.shape[:1]:
        advantages = advantages[:, None].expand_as(logp)
    elif advantages.shape != logp.shape:
        raise ValueError(
            f"advantages must be [B] or [B, T] = {tuple(logp.shape)}, got {tuple(advantages.shape)}"
        )
    if not isinstance(mask, Tensor) or mask.shape != logp.shape:
        raise ValueError(
            f"mask must be [B, T] = {tuple(logp.shape)}, got {tuple(getattr(mask, 'shape', ()))}"
        )
    m = mask != 0
    logp, advantages = logp.detach(), advantages.detach()
    _check_finite("logp (valid tokens)", logp[m])
    _check_finite("advantages (valid tokens)", advantages[m])
    cov = (advantages - masked_mean(advantages, m)) * (logp - masked_mean(logp, m))
    return torch.where(m, cov, torch.zeros((), dtype=cov.dtype, device=cov.device))


def windowed_entropy(entropy: Tensor, mask: Tensor, window: int) -> Tensor:
    """Mean entropy over the trailing window of valid tokens.

    Definition: for a valid position t of row b, let c = number of valid positions s <= t. The output is
    the mean of entropy[b, s] over the last min(c, window) valid positions s <= t (t included). Invalid
    positions get 0. Vectorised: valid entries are packed to the front (stable sort), prefix sums over
    ranks give each window's sum as P[c] - P[max(c - window, 0)] (computed in float64).

    Args:
        entropy: [B, T] per-token entropy.
        mask: [B, T] valid-token mask (bool or 0/1).
        window: window length in valid tokens (>= 1).

    Returns:
        [B, T] windowed mean entropy, dtype of ``entropy``.
    """
    _check_tensor("entropy", entropy)
    if entropy.dim() != 2:
        raise ValueError(f"entropy must be [B, T], got shape {tuple(entropy.shape)}")
    if not isinstance(mask, Tensor) or mask.shape != entropy.shape:
        raise ValueError(
            f"mask must be [B, T] = {tuple(entropy.shape)}, got {tuple(getattr(mask, 'shape', ()))}"
        )
    if not (isinstance(window, int) and window >= 1):
        raise ValueError(f"window must be a positive int, got {window!r}")
    m = mask.to(entropy.device) != 0
    _check_finite("entropy (valid tokens)", entropy[m])
    values = torch.where(m, entropy.double(), 0.0)
    order = torch.argsort((~m).to(torch.int8), dim=-1, stable=True)  # valid positions first, in order
    prefix = F.pad(values.gather(-1, order).cumsum(-1), (1, 0))  # [B, T + 1]: P[r] = sum of first r valid
    count = m.long().cumsum(-1)  # c at each position
    lo = (count - window).clamp_min(0)
    mean = (prefix.gather(-1, count) - prefix.gather(-1, lo)) / (count - lo).clamp_min(1)
    return torch.where(m, mean, 0.0).to(entropy.dtype)
