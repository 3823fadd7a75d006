"""Token entropy and token log-probs of language-model logits, chunked over rows (memory-bounded)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from gendiff.entropy._checks import _check_tensor, _compute_dtype


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


def token_kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """Categorical KL(p || q) per position, sum_v p_v (log p_v - log q_v), from [..., V] logits of p and q.

    Differentiable w.r.t. both (full softmax: meant for the per-step KL regulariser, not for 32k-vocab
    blocks; see ``token_entropy`` for the chunked pattern). -inf in ``logits_p`` (tokens p never emits)
    contributes 0.

    Returns:
        [...] KL in nats, float32 (float64 for float64 logits).
    """
    for name, t in (("logits_p", logits_p), ("logits_q", logits_q)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.dim() < 1:
            raise ValueError(f"{name} must be a float tensor [..., V], got {getattr(t, 'shape', type(t))}")
    if logits_p.shape != logits_q.shape:
        raise ValueError(f"logits_p {tuple(logits_p.shape)} and logits_q {tuple(logits_q.shape)} must match")
    dtype = torch.float64 if logits_p.dtype == torch.float64 else torch.float32
    logp = torch.log_softmax(logits_p.to(dtype), -1)
    logq = torch.log_softmax(logits_q.to(dtype), -1)
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), torch.zeros((), dtype=dtype, device=p.device)).sum(-1)
