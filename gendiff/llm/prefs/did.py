"""Differential information (Won et al. 2025, "Differential Information: An Information-Theoretic Perspective on
Preference Optimization", arXiv 2505.23761): the DID, its entropy, and the optimal distribution of rejected
responses as a sampler.

(/work/shared/reference holds only the abstract; the numbering below is arXiv v1's, where Theorem 3.2 gives the
DID and Theorem 3.3 the condition under which preferences encode it.)

1. DID (Thm. 3.2): the differential information distribution from pi_ref to pi is the normalised likelihood ratio
   q_{pi/pi_ref}(y) = (pi(y) / pi_ref(y)) / sum_y' pi(y') / pi_ref(y').
2. Preferences that encode it (Thm. 3.3): with chosen y_w ~ pi_ref and rejected y_l ~ pi_l, the Bradley-Terry
   preference sigma(log pi_ref/pi_l (y_w) - log pi_ref/pi_l (y_l)) equals sigma(beta log q*(y_w) - beta log q*(y_l)),
   q* = q_{pi*/pi_ref}, whenever q_{pi_ref/pi_l} is proportional to q*^beta. Solving for pi_l gives the closed form
   of the optimal rejected distribution,
       pi_l(y) proportional to pi_ref(y)^(1 + beta) pi*(y)^(-beta),
   i.e. rejected responses are drawn away from where the target pi* gains on pi_ref.
3. Sampler (``sample_rejected``): pi_l is known only up to its normaliser, so rejected completions are picked
   from K candidates drawn from a proposal s (e.g. pi_ref) by sampling-importance-resampling: index k with
   probability w_k / sum w, log w_k = (1 + beta) log pi_ref(y_k) - beta log pi*(y_k) - log s(y_k). Exact as
   K -> infinity (bias O(1 / K)); when the candidates enumerate the whole support (s uniform) it is exact.
4. DID entropy (``did_entropy``, logged by the preference trainer as ``prefs/did_entropy``): H(q_{pi/pi_ref}),
   low when the learnt information concentrates on few responses, high when it is spread (the paper links high
   entropy to the smoothing / log-likelihood displacement of DPO). Over a finite candidate set with proposal s,
   the self-normalised importance estimate H = log Z - E_q[log r], r = pi / pi_ref, Z = E_s[r / s],
   E_q[f] = sum_k w_k f_k / sum_k w_k, w_k = r_k / s_k. With no proposal the candidates are taken as the whole
   support (s uniform): the result is then the exact entropy of the DID restricted to the candidates.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _valid(x: Tensor, mask: Tensor | None) -> Tensor:
    if x.dim() != 2 or x.shape[-1] < 1:
        raise ValueError(f"log-probs must be [P, K], got shape {tuple(x.shape)}")
    m = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.to(x.device) != 0
    if m.shape != x.shape:
        raise ValueError(f"mask must have the shape of the log-probs {tuple(x.shape)}, got {tuple(m.shape)}")
    if not bool(m.any(-1).all()):
        raise ValueError("every row needs at least one valid candidate")
    return m


def _check(name: str, x: Tensor, like: Tensor, m: Tensor) -> Tensor:
    if x.shape != like.shape:
        raise ValueError(f"{name} must have the shape {tuple(like.shape)}, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x[m]).all()):
        raise ValueError(f"{name} holds NaN or inf at valid candidates")
    return x


def did_log_probs(logp: Tensor, ref_logp: Tensor, mask: Tensor | None = None) -> Tensor:
    """Step 1 on a finite support: log q_{pi/pi_ref} over K candidates per row.

    Args:
        logp: [P, K] log pi(y_k | x_p).
        ref_logp: [P, K] log pi_ref(y_k | x_p).
        mask: [P, K] valid candidates (default: all).

    Returns:
        [P, K] log q (-inf at invalid candidates); exp sums to 1 over each row.
    """
    m = _valid(logp, mask)
    log_r = _check("logp", logp, logp, m) - _check("ref_logp", ref_logp, logp, m)
    return torch.log_softmax(torch.where(m, log_r, torch.full_like(log_r, -math.inf)), dim=-1)


def optimal_rejected_log_weights(ref_logp: Tensor, target_logp: Tensor, beta: float,
                                 proposal_logp: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
    """Step 2-3: unnormalised log pi_l(y) - log s(y) with pi_l proportional to pi_ref^(1 + beta) pi*^(-beta).

    Args:
        ref_logp: [P, K] log pi_ref of the candidates.
        target_logp: [P, K] log pi* (the target policy) of the candidates.
        beta: the power of Thm. 3.3 (> 0), DPO's beta when the preferences encode q*^beta.
        proposal_logp: [P, K] log s of the proposal that drew the candidates (None: uniform, i.e. the
            candidates are the whole support).
        mask: [P, K] valid candidates.

    Returns:
        [P, K] log weights (-inf at invalid candidates).
    """
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    m = _valid(ref_logp, mask)
    _check("ref_logp", ref_logp, ref_logp, m)
    logw = (1.0 + beta) * ref_logp - beta * _check("target_logp", target_logp, ref_logp, m)
    if proposal_logp is not None:
        logw = logw - _check("proposal_logp", proposal_logp, ref_logp, m)
    return torch.where(m, logw, torch.full_like(logw, -math.inf))


def sample_rejected(ref_logp: Tensor, target_logp: Tensor, beta: float, proposal_logp: Tensor | None = None,
                    mask: Tensor | None = None, generator: torch.Generator | None = None,
                    exclude: Tensor | None = None) -> Tensor:
    """Step 3: one rejected candidate per row, drawn from pi_l by sampling-importance-resampling.

    Args:
        ref_logp, target_logp, beta, proposal_logp, mask: as ``optimal_rejected_log_weights``.
        generator: seeds the draw.
        exclude: [P] candidate index per row that may not be drawn (e.g. the chosen one), or None.

    Returns:
        [P] int64 indices into K.
    """
    logw = optimal_rejected_log_weights(ref_logp, target_logp, beta, proposal_logp, mask)
    if exclude is not None:
        logw = logw.scatter(1, exclude.view(-1, 1).to(logw.device), -math.inf)
        if not bool(torch.isfinite(logw).any(-1).all()):
            raise ValueError("a row has no candidate left to reject once the excluded one is removed")
    probs = torch.softmax(logw.double(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def did_entropy(logp: Tensor, ref_logp: Tensor, mask: Tensor | None = None,
                proposal_logp: Tensor | None = None) -> Tensor:
    """Step 4: the entropy (nats) of the DID q_{pi/pi_ref}, per row.

    Args:
        logp: [P, K] log pi of the candidates.
        ref_logp: [P, K] log pi_ref of the candidates.
        mask: [P, K] valid candidates.
        proposal_logp: [P, K] log s of the proposal that drew the candidates (None: the candidates are the
            support, and the result is exact for the DID restricted to them, in [0, log K]).

    Returns:
        [P] entropy estimates.
    """
    m = _valid(logp, mask)
    log_r = _check("logp", logp, logp, m) - _check("ref_logp", ref_logp, logp, m)
    log_s = (torch.zeros_like(log_r) if proposal_logp is None else _check("proposal_logp", proposal_logp, logp, m))
    if proposal_logp is None:  # uniform over the valid candidates: the weights are then the restricted DID
        log_s = log_s - torch.log(m.sum(-1, keepdim=True).to(log_r.dtype))
    log_w = torch.where(m, log_r - log_s, torch.full_like(log_r, -math.inf))
    n = m.sum(-1).to(log_r.dtype)
    log_z = torch.logsumexp(log_w, dim=-1) - torch.log(n)  # Z = E_s[r / s]
    w = torch.softmax(log_w, dim=-1)  # self-normalised weights of E_q
    mean_log_r = (w * torch.where(m, log_r, torch.zeros_like(log_r))).sum(-1)
    return log_z - mean_log_r
