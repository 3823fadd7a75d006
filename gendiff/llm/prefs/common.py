"""Shared pieces of the preference losses: the registry, the input checks and the metrics.

Preference losses are kept apart from the token-level RL losses (``gendiff.llm.losses``): they score whole
completions, not tokens. Every loss is a pure function (DESIGN.md #6)::

    loss_fn(logp [P, K], ref_logp [P, K], config, *, rewards [P, K] | None, mask [P, K] | None)
        -> (loss scalar, metrics dict[str, float])

``logp`` holds sequence log-probs log pi(y_k | x_p) (the sum of the completion's token log-probs, with
gradient) of K candidates per prompt; ``ref_logp`` the same under the reference or anchor policy (no
gradient). Pairwise losses (``kind == "pairwise"``) take K = 2 with the preferred completion in column 0;
listwise losses take ``rewards`` and an optional candidate ``mask`` (lists of different lengths).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from gendiff.registry import Registry

PreferenceKind = Literal["pairwise", "listwise"]
PREFERENCE_LOSSES: Registry[Callable[..., tuple[Tensor, dict[str, float]]]] = Registry("preference loss")


def register_preference_loss(name: str, config_cls: type, kind: PreferenceKind) -> Callable:
    """Register ``fn`` under ``name`` with its config dataclass and its data ``kind``; the wrapper fills a
    default config and rejects a config of another class."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(logp, ref_logp, config=None, **extras):
            config = config_cls() if config is None else config
            if not isinstance(config, config_cls):
                raise TypeError(f"preference loss {name!r} needs a {config_cls.__name__}, got {type(config).__name__}")
            return fn(logp, ref_logp, config, **extras)

        wrapper.config_class = config_cls  # type: ignore[attr-defined]
        wrapper.kind = kind  # type: ignore[attr-defined]
        PREFERENCE_LOSSES.register(name)(wrapper)
        return wrapper

    return deco


def preference_config_defaults(name: str) -> dict[str, Any]:
    """The defaults of the registered preference loss ``name`` as a plain dict."""
    return dataclasses.asdict(PREFERENCE_LOSSES.get(name).config_class())  # type: ignore[attr-defined]


def check_preference_inputs(name: str, logp: Tensor, ref_logp: Tensor, pairwise: bool,
                            mask: Tensor | None = None, rewards: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Validate the inputs of preference loss ``name``.

    Returns:
        (logp, ref_logp detached, bool mask [P, K]); the values at mask = 0 are replaced by 0 so that padding
        (even NaN) reaches neither the loss nor the gradient.

    Raises:
        TypeError: a non-tensor input.
        ValueError: wrong shapes (pairwise: [P, 2]), a non-0/1 mask, a row with fewer than two candidates,
            NaN / inf at valid candidates, or (listwise) missing rewards.
    """
    named = {"logp": logp, "ref_logp": ref_logp, "mask": mask, "rewards": rewards}
    for key, t in named.items():
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{name}: {key} must be a torch.Tensor, got {type(t).__name__}")
    if logp.dim() != 2 or logp.shape[0] == 0:
        raise ValueError(f"{name}: logp must be [P, K] sequence log-probs, got shape {tuple(logp.shape)}")
    if pairwise and logp.shape[1] != 2:
        raise ValueError(f"{name} is pairwise: logp must be [P, 2] (chosen, rejected), got {tuple(logp.shape)}")
    for key in ("ref_logp", "mask", "rewards"):
        if named[key] is not None and named[key].shape != logp.shape:
            raise ValueError(f"{name}: {key} must have the shape of logp {tuple(logp.shape)}, "
                             f"got {tuple(named[key].shape)}")
    if mask is None:
        m = torch.ones(logp.shape, dtype=torch.bool, device=logp.device)
    else:
        if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{name}: mask must hold only 0 and 1 (or be bool)")
        m = mask.to(logp.device) != 0
    short = (m.sum(-1) < 2).nonzero().flatten().tolist()
    if short:
        raise ValueError(f"{name}: every prompt needs at least two valid candidates; rows {short[:10]} have fewer")
    for key in ("logp", "ref_logp", "rewards"):
        t = named[key]
        if t is not None and not bool(torch.isfinite(t.detach()[m]).all()):
            raise ValueError(f"{name}: {key} holds NaN or inf at valid candidates")
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return torch.where(m, logp, zero), torch.where(m, ref_logp.detach().to(logp.dtype), zero), m


def pair_metrics(margin: Tensor, loss: Tensor) -> dict[str, float]:
    """``loss/preference``, ``prefs/accuracy`` (share of pairs whose implicit reward margin is > 0) and
    ``prefs/margin`` (its mean), from the [P] margins of the chosen over the rejected completion."""
    with torch.no_grad():
        return {"loss/preference": float(loss.detach()), "prefs/accuracy": float((margin > 0).float().mean()),
                "prefs/margin": float(margin.mean())}
