"""Every entropy and log-prob formula of gendiff, written once.

Users: ADS measurement selection (particle entropy), GoRL / SAC (Gaussian and tanh-Gaussian policies),
PGD (``atanh_clipped``), LLM RL (token entropy, token log-probs, windowed entropy, masked statistics,
the Clip-Cov / KL-Cov log-prob x advantage covariance).

Conventions: every function checks its shapes and raises ``ValueError`` naming the argument; non-finite
inputs that would silently turn into NaN raise ``ValueError`` too. Reductions run in float32 (float64 for
float64 input), also for bf16 / fp16 input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

_LOG2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- validation helpers
def _check_tensor(name: str, t: object, min_dim: int = 0, floating: bool = True) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dims, got shape {tuple(t.shape)}")
    if floating and not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def _check_finite(name: str, t: Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf values (shape {tuple(t.shape)})")


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _broadcast(names: tuple[str, ...], *ts: Tensor) -> torch.Size:
    try:
        return torch.broadcast_shapes(*(t.shape for t in ts))
    except RuntimeError:
        shapes = ", ".join(f"{n}={tuple(t.shape)}" for n, t in zip(names, ts))
        raise ValueError(f"shapes do not broadcast: {shapes}") from None


# --------------------------------------------------------------------------- ADS particle entropy
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


# --------------------------------------------------------------------------- token entropy / log-probs
def _flatten_logits(logits: Tensor, chunk_rows: int) -> Tensor:
    _check_tensor("logits", logits, min_dim=1)
    if logits.shape[-1] == 0:
        raise ValueError("logits has an empty vocabulary dimension (V = 0)")
    if not (isinstance(chunk_rows, int) and chunk_rows >= 1):
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    return logits.reshape(-1, logits.shape[-1])  # a view for contiguous input


def _block_lse(block: Tensor, start: int) -> Tensor:
    """Row log-normalisers [r, 1] of one block; rejects NaN / +inf logits and all -inf rows."""
    lse = torch.logsumexp(block, dim=-1, keepdim=True)
    bad = ~torch.isfinite(lse)
    if bool(bad.any()):
        row = start + int(bad.nonzero()[0, 0])
        raise ValueError(f"logits row {row} (flattened [rows, V]) contains NaN or +inf, or is entirely -inf")
    return lse


def _block_entropy(block: Tensor, start: int) -> Tensor:
    """-sum_v p_v log p_v of one block [r, V] -> [r]; two block-sized temporaries, freed on return."""
    log_p = block - _block_lse(block, start)
    p = log_p.exp()
    return -p.mul_(log_p).nan_to_num_(nan=0.0).sum(-1)  # 0 * (-inf) -> 0: masked tokens contribute nothing


class _TokenEntropy(torch.autograd.Function):
    """H = lse(l) - sum_v p_v l_v, evaluated as -sum_v p_v log p_v (no cancellation between two large
    terms); dH/dl_v = -p_v (log p_v + H), recomputed block by block in backward."""

    @staticmethod
    def forward(ctx, logits2d: Tensor, chunk_rows: int) -> Tensor:
        cdt = _compute_dtype(logits2d.dtype)
        out = torch.empty(logits2d.shape[0], dtype=cdt, device=logits2d.device)
        for s in range(0, logits2d.shape[0], chunk_rows):
            out[s : s + chunk_rows] = _block_entropy(logits2d[s : s + chunk_rows].to(cdt), s)
        ctx.save_for_backward(logits2d, out)
        ctx.chunk_rows = chunk_rows
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None]:
        logits2d, entropy = ctx.saved_tensors
        cdt = entropy.dtype
        grad = torch.empty_like(logits2d)
        for s in range(0, logits2d.shape[0], ctx.chunk_rows):
            rows = slice(s, s + ctx.chunk_rows)
            block = logits2d[rows].to(cdt)
            log_p = block - _block_lse(block, s)
            p = grad[rows] if grad.dtype == cdt else torch.empty_like(log_p)  # write p in place when possible
            torch.exp(log_p, out=p)
            p.mul_(log_p.add_(entropy[rows, None])).nan_to_num_(nan=0.0).mul_(-grad_out[rows, None])
            if grad.dtype != cdt:
                grad[rows] = p
            del block, log_p, p  # free this block's temporaries before the next block allocates
        return grad, None


class _TokenLogprobs(torch.autograd.Function):
    """log p(token) = l_token - lse(l); d/dl_v = onehot_v - p_v, recomputed per block."""

    @staticmethod
    def forward(ctx, logits2d: Tensor, tokens1d: Tensor, chunk_rows: int) -> Tensor:
        cdt = _compute_dtype(logits2d.dtype)
        out = torch.empty(logits2d.shape[0], dtype=cdt, device=logits2d.device)
        for s in range(0, logits2d.shape[0], chunk_rows):
            block = logits2d[s : s + chunk_rows].to(cdt)
            picked = block.gather(-1, tokens1d[s : s + chunk_rows, None])
            out[s : s + chunk_rows] = (picked - _block_lse(block, s)).squeeze(-1)
            del block
        ctx.save_for_backward(logits2d, tokens1d)
        ctx.chunk_rows = chunk_rows
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:
        logits2d, tokens1d = ctx.saved_tensors
        grad = torch.empty_like(logits2d)
        for s in range(0, logits2d.shape[0], ctx.chunk_rows):
            rows = slice(s, s + ctx.chunk_rows)
            g_rows = grad_out[rows, None]
            block = logits2d[rows].to(grad_out.dtype)
            p = (block - _block_lse(block, s)).exp_()
            grad[rows] = p.mul_(-g_rows).scatter_add_(-1, tokens1d[rows, None], g_rows)
            del block, p
        return grad, None, None


def token_entropy(logits: Tensor, chunk_rows: int = 512) -> Tensor:
    """Categorical entropy per position, H = logsumexp(l) - sum_v softmax(l)_v l_v.

    Leading dims are flattened to rows (a view for contiguous logits) and processed ``chunk_rows`` rows at
    a time, forward and backward, so a large vocabulary never needs a full softmax copy. -inf logits
    (masked tokens) are allowed; NaN, +inf or an all -inf row raise ValueError. Differentiable (first
    order): the gradient is recomputed block by block.

    Args:
        logits: [..., V] float logits (any float dtype).
        chunk_rows: rows per block.

    Returns:
        [...] entropies in nats, float32 (float64 for float64 logits).
    """
    flat = _flatten_logits(logits, chunk_rows)
    return _TokenEntropy.apply(flat, chunk_rows).reshape(logits.shape[:-1])


def token_logprobs(logits: Tensor, tokens: Tensor, chunk_rows: int = 512) -> Tensor:
    """log softmax(logits) gathered at ``tokens``, block by block; differentiable w.r.t. logits.

    Args:
        logits: [..., V] float logits.
        tokens: [...] integer token ids in [0, V).
        chunk_rows: rows per block.

    Returns:
        [...] log-probabilities, float32 (float64 for float64 logits).
    """
    flat = _flatten_logits(logits, chunk_rows)
    if not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must be an integer tensor, got {getattr(tokens, 'dtype', type(tokens))}")
    if tokens.shape != logits.shape[:-1]:
        raise ValueError(
            f"tokens shape {tuple(tokens.shape)} must equal logits shape[:-1] {tuple(logits.shape[:-1])}"
        )
    tok = tokens.reshape(-1).to(device=logits.device, dtype=torch.long)
    if tok.numel() and (int(tok.min()) < 0 or int(tok.max()) >= logits.shape[-1]):
        raise ValueError(
            f"tokens must lie in [0, {logits.shape[-1]}), got range [{int(tok.min())}, {int(tok.max())}]"
        )
    return _TokenLogprobs.apply(flat, tok, chunk_rows).reshape(tokens.shape)


# --------------------------------------------------------------------------- masked statistics
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


# --------------------------------------------------------------------------- Gaussian / tanh-Gaussian
def gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """log N(x; mean, diag(exp(log_std)^2)), summed over the last dim; inputs broadcast: [..., D] -> [...]."""
    for name, t in (("x", x), ("mean", mean), ("log_std", log_std)):
        _check_tensor(name, t, min_dim=1)
    _broadcast(("x", "mean", "log_std"), x, mean, log_std)
    _check_finite("log_std", log_std)
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(-1)


def gaussian_entropy(log_std: Tensor) -> Tensor:
    """Entropy of a diagonal Gaussian, sum over the last dim of 0.5 + 0.5 log(2 pi) + log_std: [..., D] -> [...]."""
    _check_tensor("log_std", log_std, min_dim=1)
    _check_finite("log_std", log_std)
    return (0.5 + _HALF_LOG_2PI + log_std).sum(-1)


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
