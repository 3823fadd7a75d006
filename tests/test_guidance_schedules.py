"""Guidance schedules, windows and safe normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from gendiff.guidance import (
    SCHEDULES,
    Constant,
    Cosine,
    DPSGuidance,
    Linear,
    PGDSchedule,
    StepCountScaled,
    as_schedule,
    build_guidance,
    safe_normalize,
)


def test_pgd_schedule_matches_the_reference_formula():
    sched, n = PGDSchedule(coeff=0.5, cosine_coeff=0.3), 10
    for i in range(n - 1):
        assert sched(i, n) == pytest.approx(0.5 * ((1 - i / n) + 0.3 * math.sin(math.pi * (i + 1) / n)))
    assert sched(n - 1, n) == 0.0


def test_linear_cosine_constant_endpoints():
    assert Linear(1.0, 0.0)(0, 5) == 1.0 and Linear(1.0, 0.0)(4, 5) == 0.0
    assert Cosine(0.0, 2.0)(0, 5) == pytest.approx(0.0) and Cosine(0.0, 2.0)(4, 5) == pytest.approx(2.0)
    assert Cosine(0.0, 2.0)(2, 5) == pytest.approx(1.0)
    assert Constant(3.0)(7, 9) == 3.0 and as_schedule(2)(0, 1) == 2.0
    with pytest.raises(ValueError, match="finite"):
        as_schedule(float("nan"))
    with pytest.raises(TypeError, match="number or a schedule"):
        as_schedule("big")


def test_step_count_scaled_keeps_the_total_push_beyond_its_reference():
    sched = StepCountScaled(0.8, reference_steps=50)
    assert [sched(0, n) for n in (10, 50)] == [0.8, 0.8]  # never enlarged below the reference
    assert sched(3, 200) == pytest.approx(0.2) and sched(199, 200) == pytest.approx(0.2)
    assert sum(sched(i, 400) for i in range(400)) == pytest.approx(0.8 * 50)  # total = value x reference steps
    term = build_guidance("dps", scale={"schedule": "step_count_scaled", "value": 1.0})
    assert SCHEDULES["step_count_scaled"] is StepCountScaled and term.scale_at(0, 100) == pytest.approx(0.5)


def test_start_stop_window():
    term = DPSGuidance(scale=1.0, start=0.2, stop=0.5)
    assert [i for i in range(10) if term.active(i, 10)] == [2, 3, 4]
    with pytest.raises(ValueError, match="0 <= start <= stop <= 1"):
        DPSGuidance(start=0.6, stop=0.5)


def test_safe_normalize_per_particle_and_zero_safe():
    g = torch.zeros(2, 3, 4, 5)
    g[0, 1] = 7.0
    out = safe_normalize(g)
    norms = out.flatten(2).norm(dim=-1)
    assert norms[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert torch.all(norms[1] == 0) and torch.isfinite(out).all()
