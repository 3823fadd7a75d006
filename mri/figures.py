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


def order_figure(path: Path, orders: dict[str, Tensor], num_candidates: int, titles: dict[str, str] | None = None) -> Path:
    """Per-slice acquisition orders of ADS: one panel per setting, slices x lines, colour = acquisition rank.

    Args:
        orders: name -> ``[S, A]`` line indices in the order ADS acquired them (first = the centre line).
    """
    fig, axes = plt.subplots(1, len(orders), figsize=(4.2 * len(orders), 3.6), squeeze=False)
    for ax, (name, order) in zip(axes[0], orders.items()):
        o = order.numpy()
        grid = np.full((o.shape[0], num_candidates), np.nan)
        grid[np.arange(o.shape[0])[:, None], o] = np.arange(o.shape[1])[None, :]
        im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        lo, hi = np.nonzero(~np.isnan(grid))[1].min(), np.nonzero(~np.isnan(grid))[1].max()
        ax.set_xlim(lo - 2.5, hi + 2.5)
        ax.set_xlabel("k-space line (index)")
        ax.set_ylabel("slice")
        ax.set_title((titles or {}).get(name, name), fontsize=9)
        fig.colorbar(im, ax=ax, label="acquisition rank")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
