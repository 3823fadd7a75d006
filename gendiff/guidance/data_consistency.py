"""Hard data consistency: project x0_hat onto the set of images that agree with the measurements.

x0' = x0_hat + scale * (P_y(x0_hat) - x0_hat), with P_y the operator's projection (MRI:
P_y(x) = IFFT((1 - M) FFT(x) + y), inpainting: (1 - M) x + y). scale = 1 is the exact projection.
Kind "x0": the scheduler steps with the projected estimate. No network backward.
"""

from __future__ import annotations

from torch import Tensor

from gendiff.guidance.base import GuidanceState, GuidanceTerm
from gendiff.guidance.schedules import Schedule


class HardDataConsistency(GuidanceTerm):
    """Replace the measured entries of x0_hat by the measurements (needs ``operator.project``)."""

    kind = "x0"
    needs_network_grad = False

    def __init__(self, scale: float | Schedule = 1.0, start: float = 0.0, stop: float = 1.0) -> None:
        super().__init__(scale, start, stop)

    def __call__(self, x_t: Tensor, x0_hat: Tensor, t: Tensor, state: GuidanceState) -> Tensor:
        if state.operator is None or state.y is None or not hasattr(state.operator, "project"):
            raise ValueError("hard data consistency needs state.operator with project(x, y) and state.y")
        return state.operator.project(x0_hat, state.y)  # the sampler blends x0 + scale * (P(x0) - x0)
