"""ADS particle entropy: the Gaussian-mixture entropy score of candidate measurements, and its MC check."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gendiff.entropy._checks import _broadcast, _check_finite, _check_positive, _check_tensor, _compute_dtype
from gendiff.entropy.gaussian import _HALF_LOG_2PI


def particle_entropy_scores(
    yhat: Tensor, sigma: float, measured: Tensor | None = None, chunk: int | None = None
) -> Tensor:
    """Gaussian-mixture entropy score of every candidate measurement (ADS, "Choosing the next measurement").

    1. Per candidate k, centre the particles (d is shift-invariant; centring keeps the Gram form accurate).
    2. d_ij(k) = sum_e (yhat_i[k, e] - yhat_j[k, e])^2 = |a_i|^2 + |a_j|^2 - 2 a_i.a_j, clamped at 0,
       with d_ii = 0 exactly.
    3. S(k) = sum_i logsumexp_j d_ij(k) / (2 sigma^2); measured candidates get -inf.

    Args:
        yhat: [..., N, K, E] particles in measurement space (N particles, K candidates, E real entries per
            candidate, e.g. a k-space line's rows x {re, im}); leading dims are a batch.
        sigma: measurement noise scale (> 0).
        measured: optional bool [..., K] (broadcastable to the batch), True for taken candidates.
        chunk: optional number of candidates processed at once (bounds memory to ~chunk * N * (N + E)).

    Returns:
        [..., K] scores, float32 (float64 for float64 input).
    """
    _check_tensor("yhat", yhat, min_dim=3)
    _check_positive("sigma", sigma)
    _check_finite("yhat", yhat)
    *batch, _, k, _ = yhat.shape
    if chunk is None:
        chunk = max(k, 1)
    if not (isinstance(chunk, int) and chunk >= 1):
        raise ValueError(f"chunk must be a positive int or None, got {chunk!r}")
    y = yhat.to(_compute_dtype(yhat.dtype)).movedim(-3, -2)  # [..., K, N, E]
    y = y - y.mean(dim=-2, keepdim=True)
    parts = []
    for start in range(0, k, chunk):  # blocks of candidates, each block fully vectorised
        a = y[..., start : start + chunk, :, :]
        sq = (a * a).sum(-1)  # [..., c, N]
        d = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * (a @ a.transpose(-1, -2))).clamp_min_(0.0)
        d.diagonal(dim1=-2, dim2=-1).zero_()
        parts.append(torch.logsumexp(d / (2.0 * sigma**2), dim=-1).sum(-1))
    scores = torch.cat(parts, dim=-1) if parts else y.new_zeros((*batch, 0))
    if measured is not None:
        if not isinstance(measured, Tensor) or measured.dtype != torch.bool:
            raise TypeError(
                f"measured must be a bool tensor, got {getattr(measured, 'dtype', type(measured))}"
            )
        if _broadcast(("measured", "scores"), measured, scores) != scores.shape:
            raise ValueError(
                f"measured shape {tuple(measured.shape)} must broadcast to scores shape {tuple(scores.shape)}"
                f" (yhat [..., N, K, E] = {tuple(yhat.shape)})"
            )
        scores = scores.masked_fill(measured.to(scores.device), float("-inf"))
    return scores


def residual_line_variance(prior_variance: Tensor, alpha: Tensor | float, sigma: Tensor | float,
                           entries: int) -> Tensor:
    """Variance of each candidate that the particles' Tweedie means x0_hat(x_t) cannot show (issue 33).

    The particles' spread is the variance *between* posterior means E[x0 | x_t^i]; the uncertainty *within* each,
    Var[x0 | x_t^i], is dropped by ADS's score (eq. 11-12), and it is largest early in the reverse process and for
    the fine, high-frequency candidates. Under a Gaussian prior that is diagonal over candidates, with per-entry
    variance v = prior_variance / entries and x_t = alpha x0 + sigma eps, it is (summed over a candidate's entries)

        r = prior_variance * sigma^2 / (alpha^2 v + sigma^2)        (the Wiener / Kalman posterior variance)

    which tends to the prior variance at high noise and to 0 at t = 0.

    Args:
        prior_variance: [K] (or broadcastable) variance of each candidate over the training data, summed over entries.
        alpha, sigma: the noise coefficients of the current step; entries: E, real entries per candidate.
    Returns:
        [K] residual variances, same dtype as ``prior_variance``.
    """
    _check_tensor("prior_variance", prior_variance, min_dim=1)
    v = prior_variance.clamp_min(0.0) / float(entries)
    a2, s2 = float(alpha) ** 2, float(sigma) ** 2
    return prior_variance.clamp_min(0.0) * s2 / (a2 * v + s2 + 1e-30)


def particle_total_variance_scores(yhat: Tensor, residual: Tensor, measured: Tensor | None = None) -> Tensor:
    """Total predictive variance of every candidate: particle spread plus the residual variance (law of total variance).

    S(k) = mean_i ||yhat_i[k] - mean_j yhat_j[k]||^2 + residual[k]; with large sigma ADS's score (eq. 12) ranks
    candidates like the first term alone (benchmarks/ads/README.md: sigma 0.1-100 chose the same lines).

    Args:
        yhat: [..., N, K, E] particles in measurement space; residual: [K] from :func:`residual_line_variance`.
        measured: optional bool [..., K]; measured candidates get -inf.
    Returns:
        [..., K] scores.
    """
    _check_tensor("yhat", yhat, min_dim=3)
    _check_finite("yhat", yhat)
    y = yhat.to(_compute_dtype(yhat.dtype))
    scores = (y - y.mean(dim=-3, keepdim=True)).pow(2).sum(-1).mean(-2) + residual.to(y)
    if measured is not None:
        scores = scores.masked_fill(measured.to(scores.device), float("-inf"))
    return scores


def select_max_entropy(scores: Tensor) -> Tensor:
    """Index of the highest-scoring candidate.

    Args:
        scores: [..., K] from :func:`particle_entropy_scores` (-inf marks measured candidates).

    Returns:
        LongTensor [...] of argmax indices.

    Raises:
        ValueError: scores contain NaN, or some batch entry has every candidate already measured.
    """
    _check_tensor("scores", scores, min_dim=1)
    if scores.shape[-1] == 0:
        raise ValueError("scores has no candidates (K = 0)")
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN")
    exhausted = torch.isneginf(scores).all(dim=-1)
    if bool(exhausted.any()):
        where = exhausted.nonzero().tolist()
        raise ValueError(f"every candidate is already measured for batch entries {where[:10]}")
    return scores.argmax(dim=-1)


def gaussian_mixture_entropy_mc(
    means: Tensor, sigma: float, n_samples: int, generator: torch.Generator | None = None
) -> float:
    """Monte-Carlo entropy (nats) of the equal-weight mixture (1/N) sum_i N(mu_i, sigma^2 I).

    H = -E_x log p(x), x drawn from the mixture; log p via logsumexp, computed in float64.

    Args:
        means: [N, D] component means.
        sigma: component standard deviation (> 0).
        n_samples: number of Monte-Carlo samples (>= 1).
        generator: optional torch.Generator (on the device of ``means``).
    """
    _check_tensor("means", means)
    if means.dim() != 2 or means.shape[0] == 0:
        raise ValueError(f"means must be [N, D] with N >= 1, got shape {tuple(means.shape)}")
    _check_positive("sigma", sigma)
    _check_finite("means", means)
    if not (isinstance(n_samples, int) and n_samples >= 1):
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    mu = means.double()
    n, d = mu.shape
    comp = torch.randint(n, (n_samples,), generator=generator, device=mu.device)
    x = mu[comp] + sigma * torch.randn(n_samples, d, generator=generator, dtype=mu.dtype, device=mu.device)
    d2 = torch.cdist(x, mu, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    log_p = (
        torch.logsumexp(-d2 / (2 * sigma**2), dim=-1) - math.log(n) - d * (_HALF_LOG_2PI + math.log(sigma))
    )
    return float(-log_p.mean())
