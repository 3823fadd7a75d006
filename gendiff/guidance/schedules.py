"""Scale schedules for guidance terms: callables ``schedule(step, num_steps) -> float``.

``step`` counts reverse-diffusion steps from 0 (first, noisiest) to ``num_steps - 1`` (last).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

Schedule = Callable[[int, int], float]


@dataclass(frozen=True)
class Constant:
    value: float

    def __call__(self, step: int, num_steps: int) -> float:
        return self.value


@dataclass(frozen=True)
class Linear:
    """Linear ramp from ``start`` (first step) to ``end`` (last step)."""

    start: float
    end: float

    def __call__(self, step: int, num_steps: int) -> float:
        frac = step / max(num_steps - 1, 1)
        return self.start + (self.end - self.start) * frac


@dataclass(frozen=True)
class Cosine:
    """Half-cosine from ``start`` to ``end``: start + (end - start) (1 - cos(pi f)) / 2."""

    start: float
    end: float

    def __call__(self, step: int, num_steps: int) -> float:
        frac = step / max(num_steps - 1, 1)
        return self.start + (self.end - self.start) * (1 - math.cos(math.pi * frac)) / 2


@dataclass(frozen=True)
class PGDSchedule:
    """Policy-guided diffusion's schedule (Jackson et al. 2024, reference code):

    lambda_i = coeff * [(1 - i / N) + cosine_coeff * sin(pi (i + 1) / N)], and 0 on the last step.
    """

    coeff: float
    cosine_coeff: float = 0.3

    def __call__(self, step: int, num_steps: int) -> float:
        if step >= num_steps - 1:
            return 0.0
        n = num_steps
        return self.coeff * ((1 - step / n) + self.cosine_coeff * math.sin(math.pi * (step + 1) / n))


@dataclass(frozen=True)
class StepCountScaled:
    """A per-step scale that keeps the total push of a run constant beyond ``reference_steps`` steps:

    lambda_i = value * min(1, reference_steps / N) for every step i of an N-step run.

    ADS uses it for DPS (``reference_steps`` = 50): with a constant per-step step size the total guidance grows
    with N and over-pushes (benchmarks/ads: SSIM fell from 86.3 at 100 steps to 70.5 at 200 with a constant 1); the
    scale is never enlarged below ``reference_steps`` (that diverges at a handful of steps).
    """

    value: float
    reference_steps: int = 50

    def __call__(self, step: int, num_steps: int) -> float:
        return self.value * min(1.0, self.reference_steps / num_steps)


def as_schedule(scale: float | Schedule) -> Schedule:
    """A number becomes a :class:`Constant`; a schedule is returned as it is."""
    if callable(scale):
        return scale
    if isinstance(scale, int | float):
        if not math.isfinite(scale):
            raise ValueError(f"guidance scale must be finite, got {scale}")
        return Constant(float(scale))
    raise TypeError(f"guidance scale must be a number or a schedule(step, num_steps), got {type(scale).__name__}")


SCHEDULES: dict[str, type] = {"constant": Constant, "linear": Linear, "cosine": Cosine, "pgd": PGDSchedule,
                              "step_count_scaled": StepCountScaled}
