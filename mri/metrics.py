"""Reconstruction metrics (fastmri.evaluate definitions) and paired bootstrap intervals.

Each slice is scored as a volume of one slice with data_range = the target slice's maximum, as the
ADS reference does for its 128 x 128 magnitude images (SSIM with a 7 x 7 window).
"""

from __future__ import annotations

import numpy as np
from fastmri import evaluate


def slice_metrics(target: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-slice SSIM, PSNR, NMSE and MAE of magnitude images [S, H, W] (fastmri.evaluate formulas)."""
    if target.shape != pred.shape or target.ndim != 3:
        raise ValueError(f"target and prediction must both be [S, H, W], got {target.shape} and {pred.shape}")
    ssim, psnr, nmse, mae = [], [], [], []
    for gt, pr in zip(target.astype(np.float64), pred.astype(np.float64)):
        maxval = float(gt.max())
        ssim.append(float(evaluate.ssim(gt[None], pr[None], maxval=maxval)[0]))
        psnr.append(float(evaluate.psnr(gt, pr, maxval=maxval)))
        nmse.append(float(evaluate.nmse(gt, pr)))
        mae.append(float(np.abs(gt - pr).mean()))
    return {k: np.asarray(v) for k, v in (("ssim", ssim), ("psnr", psnr), ("nmse", nmse), ("mae", mae))}


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (paired differences for comparisons)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
