"""Log-probability guidance on a slice of the sample (policy-guided diffusion, Jackson et al. 2024).

PGD shifts only the action part of each generated transition toward the target policy:
a <- a + lambda_i * grad_a log pi(a | s) (the states are inputs only). Here the caller gives
``log_prob(x) -> [B, N]`` evaluated on the whole sample (it slices out states and actions itself,
e.g. un-normalising and applying tanh), and a ``slice`` of the last axis that receives the gradient.

Where it acts (``kind``): ``"shift"`` (default, the reference sampler) moves x_t before the denoiser call of
each reverse step, once per step; ``"direction"`` (gendiff before 2026-12) added scale * g after
``scheduler.step``, at every stage (twice per step with Heun). Mapping the coefficients: one to one. Measured
with the EDM Heun sampler (64 steps, churn 80) on Hopper and HalfCheetah at coefficients 0.1, 0.3 and 1, the two
placements give the same target log-likelihood of the actions within 0.08 nats and the same dynamics error within
3 % (benchmarks/offline/README.md, "Guidance"), so an old coefficient c is the new coefficient c.

Step 1. x = x_t (default, as the reference) or x0_hat (``"direction"`` only), detached, requires_grad.
Step 2. g = grad_x sum log_prob(x), zeroed outside ``slice``.
Step 3. optional normalisation g / (||g|| + eps) per particle (the reference adds eps outside the
        division, which can blow up for tiny gradients; we divide by (||g|| + eps)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from gendiff.guidance.base import GuidanceState, GuidanceTerm, grad_of, safe_normalize
from gendiff.guidance.schedules import Schedule


class LogProbGuidance(GuidanceTerm):
    """Ascend ``log_prob`` on the features ``feature_slice`` of the last axis (kind "shift" or "direction")."""

    needs_network_grad = False

    def __init__(
        self,
        log_prob: Callable[[Tensor, GuidanceState], Tensor],
        feature_slice: slice = slice(None),
        scale: float | Schedule = 1.0,
        evaluate_at: Literal["x_t", "x0"] = "x_t",
        normalize: bool = False,
        start: float = 0.0,
        stop: float = 1.0,
        kind: Literal["shift", "direction"] = "shift",
    ) -> None:
        super().__init__(scale, start, stop)
        if evaluate_at not in ("x_t", "x0"):
            raise ValueError(f"evaluate_at must be 'x_t' or 'x0', got {evaluate_at!r}")
        if kind not in ("shift", "direction"):
            raise ValueError(f"kind must be 'shift' or 'direction', got {kind!r}")
        if kind == "shift" and evaluate_at == "x0":
            raise ValueError("a 'shift' term acts before the denoiser call, so there is no x0_hat to evaluate at; "
                             "use evaluate_at='x_t' or kind='direction'")
        self.kind = kind
        self.log_prob, self.feature_slice = log_prob, feature_slice
        self.evaluate_at, self.normalize = evaluate_at, normalize

    def __call__(self, x_t: Tensor, x0_hat: Tensor, t: Tensor, state: GuidanceState) -> Tensor:
        with torch.enable_grad():
            x = (x_t if self.evaluate_at == "x_t" else x0_hat).detach().requires_grad_(True)  # Step 1
            lp = self.log_prob(x, state)
            if lp.shape != x.shape[:2]:
                raise ValueError(f"log_prob must return [B, N] = {tuple(x.shape[:2])}, got {tuple(lp.shape)}")
            if not torch.isfinite(lp).all():
                raise FloatingPointError("log_prob returned NaN/inf during guidance")
            g = grad_of(lp, x, retain_graph=False)  # Step 2
        mask = torch.zeros_like(g)
        mask[..., self.feature_slice] = 1.0
        g = g * mask
        return safe_normalize(g) if self.normalize else g  # Step 3
