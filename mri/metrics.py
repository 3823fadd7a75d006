"""Reconstruction metrics (fastmri.evaluate definitions; their bootstrap intervals: gendiff.stats).

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
