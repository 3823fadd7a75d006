"""Diffusion Posterior Sampling (Chung et al. 2023, Alg. 1), as ADS uses it.

Step 1. x0_hat(x_t) is the network's Tweedie estimate, attached to x_t's graph by the sampler.
Step 2. L(x_t) = ||y - A(x0_hat(x_t))||_2 (ADS: the norm, not squared) or its square.
Step 3. direction d = -grad_{x_t} L, optionally normalised per particle as d / (||d|| + eps).
The sampler adds scale * d to x_{t-1} = step(x_t) (Alg. 1, line 7, with zeta_i = scale).
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


class DPSGuidance(GuidanceTerm):
    """DPS through the network: needs one backward pass per step.

    Args:
        scale: step size zeta (number or schedule); ADS uses 0.85 for fastMRI, 1 for MNIST.
        loss: "norm" (||r||_2, as ADS) or "squared" (||r||_2^2).
        normalize: divide the gradient by its per-particle norm.
        start, stop: active fraction of the reverse steps.
    """

    kind = "direction"
    needs_network_grad = True

    def __init__(
        self,
        scale: float | Schedule = 1.0,
        loss: Literal["norm", "squared"] = "norm",
        normalize: bool = False,
        start: float = 0.0,
        stop: float = 1.0,
    ) -> None:
        super().__init__(scale, start, stop)
        if loss not in ("norm", "squared"):
            raise ValueError(f"DPS loss must be 'norm' or 'squared', got {loss!r}")
        self.loss, self.normalize = loss, normalize

    def __call__(self, x_t: Tensor, x0_hat: Tensor, t: Tensor, state: GuidanceState) -> Tensor:
        with torch.enable_grad():  # the sampler runs under no_grad; x0_hat carries x_t's graph
            loss = residual_loss(measurement_residual(x0_hat, state), self.loss)  # Step 2
            g = grad_of(loss, x_t)  # Step 3
        return -(safe_normalize(g) if self.normalize else g)
