"""Shared pieces of the token-level policy losses: the registry, input checks, ``agg_loss``, the
PPO-clip surrogate and the metrics every loss reports.

Every loss is a pure function (DESIGN.md #6)::

    loss_fn(logp [B, T], old_logp [B, T], advantages [B, T] | [B], mask [B, T], config, **extras)
        -> (loss scalar, metrics dict[str, float])

Extras are keyword-only tensors or numbers such as ``entropy`` [B, T] or ``generator``; an unknown
extra raises ``TypeError`` (a misspelt name would otherwise be ignored silently).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from gendiff.entropy import logp_advantage_covariance, masked_mean
from gendiff.registry import Registry

AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
AGG_MODES: tuple[str, ...] = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)
KNOWN_EXTRAS = frozenset({"entropy", "generator", "entropy_coef", "entropy_history_mean", "progress"})

POLICY_LOSSES: Registry[Callable[..., tuple[Tensor, dict[str, float]]]] = Registry("policy loss")


@dataclass
class PPOClipConfig:
    """Fields shared by every PPO-style loss.

    Attributes:
        eps_low: lower clip range, ratio >= 1 - eps_low.
        eps_high: upper clip range, ratio <= 1 + eps_high (DAPO's clip-higher uses 0.28).
        loss_agg_mode: how token losses become one number (see ``agg_loss``).
        norm_len: the constant length of ``seq-mean-token-sum-norm`` (None: the padded length T).
    """

    eps_low: float = 0.2
    eps_high: float = 0.2
    loss_agg_mode: AggMode = "token-mean"
    norm_len: int | None = None


def register_loss(name: str, config_cls: type) -> Callable:
    """Register ``fn`` under ``name`` with its config dataclass; wrap it with config and extras checks."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(logp, old_logp, advantages, mask, config=None, **extras):
            unknown = set(extras) - KNOWN_EXTRAS
            if unknown:
                raise TypeError(f"policy loss {name!r}: unknown extras {sorted(unknown)}; "
                                f"known: {sorted(KNOWN_EXTRAS)}")
            if config is None:
                config = config_cls()
            if not isinstance(config, config_cls):
                raise TypeError(f"policy loss {name!r} needs a {config_cls.__name__}, "
                                f"got {type(config).__name__}")
            return fn(logp, old_logp, advantages, mask, config, **extras)

        wrapper.config_class = config_cls  # type: ignore[attr-defined]
        POLICY_LOSSES.register(name)(wrapper)
        return wrapper

    return deco


def default_config(name: str) -> Any:
    """A fresh default config for the registered loss ``name``."""
    return POLICY_LOSSES.get(name).config_class()  # type: ignore[attr-defined]


def config_defaults(name: str) -> dict[str, Any]:
    """The defaults of the registered loss ``name`` as a plain dict (used by docs and tests)."""
    return dataclasses.asdict(default_config(name))


def check_policy_inputs(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, entropy: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Validate the loss inputs and zero them at invalid tokens.

    Returns:
        (logp, old_logp, advantages [B, T], bool mask [B, T], entropy), each set to 0 at mask = 0 with
        ``torch.where`` so that NaN / inf padding can reach neither the loss nor the gradient.

    Raises:
        TypeError: a non-tensor input.
        ValueError: wrong shapes, a non-0/1 mask, an empty mask, or NaN / inf at valid tokens.
    """
    named = {"logp": logp, "old_logp": old_logp, "advantages": advantages, "mask": mask}
    if entropy is not None:
        named["entropy"] = entropy
    for key, t in named.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{key} must be a torch.Tensor, got {type(t).__name__}")
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
    shape = logp.shape
    for key in ("old_logp", "mask", "entropy"):
        if key in named and named[key].shape != shape:
            raise ValueError(f"{key} must have the shape of logp {tuple(shape)}, got {tuple(named[key].shape)}")
    if advantages.shape == shape[:1]:
        advantages = advantages[:, None].expand(shape)
    elif advantages.shape != shape:
        raise ValueError(f"advantages must be [B] = ({shape[0]},) or [B, T] = {tuple(shape)}, "
                         f"got {tuple(advantages.shape)}")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold only 0 and 1 (or be bool)")
    m = mask.to(device=logp.device) != 0
    if not bool(m.any()):
        raise ValueError("mask is empty: no valid token to compute a loss on")
    for key, t in (("logp", logp), ("old_logp", old_logp), ("advantages", advantages), ("entropy", entropy)):
        if t is not None and not bool(torch.isfinite(t.detach()[m]).all()):
            raise ValueError(f"{key} holds NaN or inf at valid (mask = 1) tokens")
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    clean = [None if t is None else torch.where(m, t.to(logp.dtype), zero)
             for t in (logp, old_logp, advantages, entropy)]
    return clean[0], clean[1], clean[2], m, clean[3]


def require_entropy(name: str, entropy: Tensor | None) -> Tensor:
    """Raise a clear error when an entropy-based loss gets no ``entropy`` extra."""
    if entropy is None:
        raise ValueError(f"policy loss {name!r} needs entropy=[B, T] token entropy "
                         "(gendiff.entropy.token_entropy of the policy logits, with gradient)")
    return entropy


def agg_loss(token_loss: Tensor, mask: Tensor, mode: AggMode = "token-mean", norm_len: int | None = None) -> Tensor:
    """Aggregate a [B, T] token loss into a scalar.

    Modes (L_i = valid tokens of row i, only rows with L_i > 0 count as sequences):
        token-mean: sum_{i,t} l_it / sum_i L_i (DAPO).
        seq-mean-token-mean: mean_i (sum_t l_it / L_i) (original GRPO).
        seq-mean-token-sum: mean_i sum_t l_it.
        seq-mean-token-sum-norm: mean_i (sum_t l_it / norm_len), norm_len default T (Dr. GRPO, eq. 3).
            verl divides the summed sequence losses by T only, not by the number of sequences, so its
            loss scales with the batch size; we take the mean over sequences as Dr. GRPO writes it.

    Values at invalid tokens are ignored, even NaN.

    Args:
        token_loss: [B, T] per-token loss.
        mask: [B, T] valid-token mask (bool or 0/1).
        mode: one of ``AGG_MODES``.
        norm_len: constant length for ``seq-mean-token-sum-norm``.

    Returns:
        A scalar tensor.
    """
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {mode!r}; valid: {list(AGG_MODES)}")
    if token_loss.dim() != 2 or mask.shape != token_loss.shape:
        raise ValueError(f"token_loss and mask must both be [B, T], got {tuple(token_loss.shape)} "
                         f"and {tuple(mask.shape)}")
    m = mask != 0
    if not bool(m.any()):
        raise ValueError("mask is empty: no valid token to aggregate")
    if mode == "token-mean":
        return masked_mean(token_loss, m)
    zero = torch.zeros((), dtype=token_loss.dtype, device=token_loss.device)
    seq_sum = torch.where(m, token_loss, zero).sum(-1)
    lengths = m.sum(-1)
    if mode == "seq-mean-token-mean":
        per_seq = seq_sum / lengths.clamp_min(1)
    elif mode == "seq-mean-token-sum":
        per_seq = seq_sum
    else:
        n = token_loss.shape[-1] if norm_len is None else norm_len
        if n <= 0:
            raise ValueError(f"norm_len must be positive, got {n}")
        per_seq = seq_sum / n
    return masked_mean(per_seq, lengths > 0)


def k3_kl(ref_logp: Tensor, logp: Tensor, mask: Tensor) -> Tensor:
    """The per-token k3 estimator of KL(pi || pi_ref) (Schulman's "approximating KL"; GRPO's KL term):
    exp(d) - d - 1 with d = log pi_ref - log pi, 0 where ``mask`` is 0. All [B, T]; returns [B, T]."""
    delta = ref_logp - logp
    return torch.where(mask.bool(), torch.exp(delta) - delta - 1, torch.zeros_like(delta))


def ppo_clip_token_loss(ratio: Tensor, adv: Tensor, low: Tensor | float, high: Tensor | float) -> tuple[Tensor, Tensor]:
    """PPO surrogate per token: l = max(-A r, -A clip(r, low, high)) = -min(r A, clip(r) A).

    ``low`` / ``high`` are ratio bounds (1 - eps_low, 1 + eps_high), numbers or [B, T] tensors.

    Returns:
        (token loss [B, T], clipped [B, T] bool: where the clipped branch is the larger one).
    """
    unclipped = -adv * ratio
    lo = torch.as_tensor(low, dtype=ratio.dtype, device=ratio.device)
    hi = torch.as_tensor(high, dtype=ratio.dtype, device=ratio.device)
    clipped = -adv * torch.clamp(ratio, lo, hi)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def base_metrics(
    logp: Tensor, old_logp: Tensor, adv: Tensor, m: Tensor, loss: Tensor, entropy: Tensor | None
) -> dict[str, float]:
    """Metrics every loss reports: loss/policy, actor/ppo_kl, actor/ratio_mean, actor/cov_mean,
    actor/entropy (when ``entropy`` is given)."""
    with torch.no_grad():
        log_ratio = (logp - old_logp).detach()
        out = {
            "loss/policy": float(loss.detach()),
            "actor/ppo_kl": float(masked_mean(-log_ratio, m)),
            "actor/ratio_mean": float(masked_mean(torch.exp(log_ratio), m)),
            "actor/cov_mean": float(masked_mean(logp_advantage_covariance(logp.detach(), adv.detach(), m), m)),
        }
        if entropy is not None:
            out["actor/entropy"] = float(masked_mean(entropy.detach(), m))
    return out
