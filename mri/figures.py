"""Benchmark figure: target, each strategy's mask, reconstruction and error map, and ADS's order."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402


def _mask_picture(mask: Tensor, shape: tuple[int, int], kind: str) -> np.ndarray:
    h, w = shape
    m = mask.float().numpy()
    if kind == "pixel":
        return m.reshape(h, w)
    return np.broadcast_to(m[None, :], (h, w))


def benchmark_figure(path: Path, target: Tensor, results: list, kind: str, slice_index: int = 0) -> Path:
    """Save a PNG: one column per strategy (mask, reconstruction, |error|), plus ADS's acquisition order.

    Args:
        target: [S, H, W] target magnitudes; results: StrategyResult list at one budget.
    """
    n = len(results)
    fig, axes = plt.subplots(3, n + 1, figsize=(2.2 * (n + 1), 6.6), squeeze=False)
    gt = target[slice_index].numpy()
    vmax = float(gt.max())
    axes[0, 0].imshow(gt, cmap="gray", vmin=0, vmax=vmax)
    axes[0, 0].set_title("target")
    ads = next((r for r in results if r.order is not None), None)
    if ads is not None:
        order = ads.order[slice_index].numpy()
        axes[1, 0].bar(np.arange(order.size), order, color="tab:orange")
        axes[1, 0].set_title("ADS order (index)")
        axes[1, 0].set_xlabel("acquisition")
    axes[2, 0].axis("off")
    for j, r in enumerate(results, start=1):
        rec = r.recon[slice_index].numpy()
        axes[0, j].imshow(_mask_picture(r.masks[slice_index], gt.shape, kind), cmap="gray", vmin=0, vmax=1)
        recon = getattr(r, "reconstructor", "dps")
        axes[0, j].set_title(f"{r.name} mask" if recon == "dps" else f"{r.name} + {recon}", fontsize=8)
        axes[1, j].imshow(rec, cmap="gray", vmin=0, vmax=vmax)
        axes[1, j].set_title(f"SSIM {100 * r.metrics['ssim'][slice_index]:.1f}")
        axes[2, j].imshow(np.abs(rec - gt), cmap="magma", vmin=0, vmax=0.3 * vmax)
        axes[2, j].set_title("|error|")
    for ax in axes.flat:
        if ax is not axes[1, 0]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
