"""Summary statistics shared by the benchmarks of every area (MRI tables, RL seed comparisons)."""

from __future__ import annotations

import numpy as np

__all__ = ["bootstrap_ci", "mean_ci", "t_interval"]


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` [n] (paired differences for comparisons)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def mean_ci(values: np.ndarray) -> dict[str, float | tuple[float, float] | int]:
    """{"mean", "ci95" (:func:`bootstrap_ci`), "n"} of ``values`` [n] for a results table; nan for no values."""
    x = np.asarray(values, dtype=np.float64)
    return {"mean": float(x.mean()) if x.size else float("nan"), "ci95": bootstrap_ci(x), "n": int(x.size)}


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` [n] (n >= 2; with few seeds it is wider, and more honest,
    than the percentile bootstrap)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return (float("nan"), float("nan"))
    half = stats.t.ppf((1 + level) / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return float(values.mean() - half), float(values.mean() + half)
