"""gendiff.stats: intervals used by every benchmark table."""

from __future__ import annotations

import numpy as np
import pytest

from gendiff.stats import bootstrap_ci, mean_ci, t_interval


def test_t_interval_matches_the_textbook_value():
    lo, hi = t_interval(np.array([1.0, 2.0, 3.0]))  # mean 2, s 1, t_{0.975, 2} = 4.3027
    assert (lo, hi) == pytest.approx((2 - 4.3027 / 3**0.5, 2 + 4.3027 / 3**0.5), abs=1e-3)
    assert np.isnan(t_interval(np.array([1.0]))[0])


def test_t_interval_is_wider_than_the_bootstrap_for_few_seeds():
    d = np.array([3.0, -1.0, 4.0, 1.0, 5.0])
    t_lo, t_hi = t_interval(d)
    b_lo, b_hi = bootstrap_ci(d)
    assert t_lo < b_lo < d.mean() < b_hi < t_hi


def test_mean_ci_reports_the_mean_its_bootstrap_interval_and_the_count() -> None:
    v = np.array([1.0, 2.0, 3.0, 6.0], dtype=np.float32)
    got = mean_ci(v)
    assert got["mean"] == 3.0 and got["n"] == 4 and got["ci95"] == bootstrap_ci(v.astype(np.float64))
    assert got["ci95"][0] < 3.0 < got["ci95"][1]
    empty = mean_ci(np.array([]))
    assert np.isnan(empty["mean"]) and empty["n"] == 0
