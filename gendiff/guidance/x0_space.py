"""x0-space measurement guidance: a gradient step on the denoised estimate, no network backward.

Manifold-preserving guided diffusion (He et al. 2024, MPGD eq. 7) without the autoencoder:
Step 1. x0' = x0_hat - scale * grad_{x0} L(x0_hat)  (the term returns the unit step, the sampler scales), L = ||y - A x0||_2 or its square
        (the gradient is taken w.r.t. x0 only, so the network's Jacobian never enters).
Step 2. the sampler converts x0' back to a model output and lets the scheduler step with it.
Compared with DPS it costs one forward pass per step instead of forward + backward.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from gendiff.guidance.base import (
    GuidanceState,
    GuidanceTerm,
    grad_of,
    measurement_residual,
    residual_loss,
    safe_normalize,
)
from gendiff.guidance.schedules import Schedule


class X0SpaceGuidance(GuidanceTerm):
    """Gradient step on x0_hat toward the measurements (kind "x0")."""

    kind = "x0"
    needs_network_grad = False

    def __init__(
        self,
        scale: float | Schedule = 1.0,
        loss: Literal["norm", "squared"] = "squared",
        normalize: bool = False,
        start: float = 0.0,
        stop: float = 1.0,
    ) -> None:
        super().__init__(scale, start, stop)
        if loss not in ("norm", "squared"):
            raise ValueError(f"x0-space loss must be 'norm' or 'squared', got {loss!r}")
        self.loss, self.normalize = loss, normalize

    def __call__(self, x_t: Tensor, x0_hat: Tensor, t: Tensor, state: GuidanceState) -> Tensor:
        with torch.enable_grad():
            x0 = x0_hat.detach().requires_grad_(True)
            g = grad_of(residual_loss(measurement_residual(x0, state), self.loss), x0, retain_graph=False)
        if self.normalize:
            g = safe_normalize(g)
        return x0_hat.detach() - g  # Step 1 at unit scale; the sampler applies x0 + scale * (x0' - x0)
