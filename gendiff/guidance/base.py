"""The guidance-term protocol shared by every guided sampler in gendiff.

A term is a small callable ``term(x_t, x0_hat, t, state) -> Tensor`` (shapes [B, N, *shape]: B
conditions x N particles). Terms come in three kinds and add up (like optax ``chain``):

- ``"shift"``: returns a direction g that the sampler adds as ``x_t <- x_t + scale * g`` *before* the network
  call of a reverse step, once per step (at the first stage of multi-stage schedulers such as Heun), so the
  denoiser and the scheduler's step both see the shifted sample. The term is called with ``x0_hat = x_t``
  (there is no denoised estimate yet); its schedule and window count reverse steps, not stages.
  Policy-guided diffusion's action shift is of this kind (Jackson et al. 2024, reference sampler).
- ``"direction"``: returns an update direction d; the sampler adds ``scale * d`` to x_{t-1} after the
  scheduler's step. DPS returns -grad ||y - A x0_hat(x_t)||; log-prob guidance returns +grad log p.
- ``"x0"``: returns a corrected x0' at unit scale; the sampler blends x0 + scale * (x0' - x0) and
  turns the result back into a model output
  (:func:`gendiff.parameterization.from_x0`) and lets the scheduler step with it. Hard data
  consistency and x0-space DPS are of this kind, and need no backward pass through the network.

``scale`` is a number or a schedule(step, num_steps); ``start``/``stop`` are fractions of the reverse
steps outside which the term is off. A term that needs gradients through the network sets
``needs_network_grad = True``; the sampler then runs the forward pass with grad enabled on a detached
``x_t.requires_grad_()`` and hands the term an x0_hat that is attached to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from gendiff.guidance.schedules import Schedule, as_schedule


@dataclass
class GuidanceState:
    """Mutable state shared by the sampler, its guidance terms and its callback.

    Attributes:
        step: index of the current reverse step (0 = noisiest).
        num_steps: total number of reverse steps.
        operator: measurement operator with ``forward(x) -> y`` (and ``project`` for hard consistency).
        y: measurements [B, ...] (broadcast over particles), or None.
        extra: anything else a term or callback needs (e.g. PGD's policy).
    """

    step: int = 0
    num_steps: int = 1
    operator: Any = None
    y: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def safe_normalize(g: Tensor, eps: float = 1e-8, sample_dims: int = 2) -> Tensor:
    """g / (||g|| + eps), the norm taken per sample over all but the first ``sample_dims`` axes."""
    dims = tuple(range(sample_dims, g.ndim))
    norm = g.flatten(sample_dims).norm(dim=-1) if dims else g.abs()
    return g / (norm.view(*norm.shape, *([1] * len(dims))) + eps)


class GuidanceTerm:
    """Base class: holds the scale schedule and the active window; subclasses implement ``__call__``."""

    kind: Literal["shift", "direction", "x0"] = "direction"
    needs_network_grad: ClassVar[bool] = False

    def __init__(self, scale: float | Schedule = 1.0, start: float = 0.0, stop: float = 1.0) -> None:
        if not 0.0 <= start <= stop <= 1.0:
            raise ValueError(f"guidance window must satisfy 0 <= start <= stop <= 1, got start={start}, stop={stop}")
        self.scale = as_schedule(scale)
        self.start, self.stop = float(start), float(stop)

    def active(self, step: int, num_steps: int) -> bool:
        frac = step / num_steps
        return self.start <= frac < self.stop

    def scale_at(self, step: int, num_steps: int) -> float:
        return float(self.scale(step, num_steps))

    def __call__(self, x_t: Tensor, x0_hat: Tensor, t: Tensor, state: GuidanceState) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale}, start={self.start}, stop={self.stop})"


def measurement_residual(x0: Tensor, state: GuidanceState) -> Tensor:
    """y - A(x0) for every particle; x0 [B, N, *shape], state.y [B, ...] -> [B, N, ...]."""
    if state.operator is None or state.y is None:
        raise ValueError("this guidance term needs state.operator and state.y (the measurements); got None")
    pred = state.operator.forward(x0)
    y = state.y.unsqueeze(1) if state.y.ndim == pred.ndim - 1 else state.y
    if y.shape[0] != pred.shape[0] or y.shape[2:] != pred.shape[2:]:
        raise ValueError(f"measurements y have shape {tuple(state.y.shape)} but A(x0) has {tuple(pred.shape)}")
    return y - pred


def residual_loss(residual: Tensor, loss: Literal["norm", "squared"]) -> Tensor:
    """Per-particle data misfit [B, N]: ||r||_2 (DPS as in ADS) or ||r||_2^2."""
    sq = residual.flatten(2).pow(2).sum(-1)
    return sq.clamp_min(1e-24).sqrt() if loss == "norm" else sq


def grad_of(loss: Tensor, wrt: Tensor, retain_graph: bool = True) -> Tensor:
    """d(sum loss)/d(wrt); zero where the loss does not depend on ``wrt`` (e.g. a constant denoiser)."""
    if not wrt.requires_grad:
        raise RuntimeError("guidance gradient requested but the input does not require grad")
    if not loss.requires_grad:
        return torch.zeros_like(wrt)
    (g,) = torch.autograd.grad(loss.sum(), wrt, retain_graph=retain_graph, allow_unused=True)
    return torch.zeros_like(wrt) if g is None else g
