"""Guidance terms for :class:`gendiff.sampler.GuidedSampler`, their schedules and registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gendiff.guidance.base import GuidanceState, GuidanceTerm, measurement_residual, safe_normalize
from gendiff.guidance.data_consistency import HardDataConsistency
from gendiff.guidance.dps import DPSGuidance
from gendiff.guidance.logprob import LogProbGuidance
from gendiff.guidance.schedules import (
    SCHEDULES,
    Constant,
    Cosine,
    Linear,
    PGDSchedule,
    StepCountScaled,
    as_schedule,
)
from gendiff.guidance.x0_space import X0SpaceGuidance
from gendiff.registry import Registry

GUIDANCE: Registry[type[GuidanceTerm]] = Registry("guidance term")
GUIDANCE.register("dps")(DPSGuidance)
GUIDANCE.register("x0_space")(X0SpaceGuidance)
GUIDANCE.register("hard_data_consistency")(HardDataConsistency)
GUIDANCE.register("log_prob")(LogProbGuidance)


def build_guidance(name: str, **kwargs: Any) -> GuidanceTerm:
    """Build a registered term by name, e.g. ``build_guidance("dps", scale=0.85)``.

    ``scale`` may be a number or a dict ``{"schedule": "pgd", "coeff": 0.1}`` (names in SCHEDULES).
    """
    scale = kwargs.get("scale")
    if isinstance(scale, dict):
        spec = dict(scale)
        kind = spec.pop("schedule", None)
        if kind not in SCHEDULES:
            raise KeyError(f"unknown schedule {kind!r}; valid names: {', '.join(sorted(SCHEDULES))}")
        kwargs["scale"] = SCHEDULES[kind](**spec)
    return GUIDANCE.get(name)(**kwargs)


def as_guidance_terms(terms: Sequence[GuidanceTerm]) -> list[GuidanceTerm]:
    """A pipeline's ``guidance=`` given as ready-made terms: the list, after checking each is a GuidanceTerm
    (a pipeline given a name builds its own terms from GUIDANCE)."""
    terms = list(terms)
    bad = [type(t).__name__ for t in terms if not isinstance(t, GuidanceTerm)]
    if bad:
        raise TypeError(f"guidance must be a name in GUIDANCE or a list of GuidanceTerm objects, got {bad}")
    return terms


__all__ = [
    "GUIDANCE", "SCHEDULES", "Constant", "Cosine", "DPSGuidance", "GuidanceState", "GuidanceTerm",
    "HardDataConsistency", "Linear", "LogProbGuidance", "PGDSchedule", "StepCountScaled", "X0SpaceGuidance", "as_schedule",
    "as_guidance_terms", "build_guidance", "measurement_residual", "safe_normalize",
]
