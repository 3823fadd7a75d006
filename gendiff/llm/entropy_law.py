"""The entropy-performance law of Cui et al. 2025 (Sec. 2): R = -a exp(H) + b.

1. Read (entropy, reward) pairs from the trainers' log.jsonl files (``actor/entropy``, ``reward/mean``).
2. Closed-form fit: ordinary least squares of R on x = exp(H); a = -slope, b = intercept.
3. R^2 = 1 - SS_res / SS_tot; the fitted curve and the points go to a PNG (one colour per run).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gendiff.io import atomic_path, atomic_write_text, refuse_existing

ENTROPY_KEY, REWARD_KEY = "actor/entropy", "reward/mean"


@dataclass
class EntropyLawFit:
    """R = -a exp(H) + b fitted by least squares.

    Attributes:
        a, b: the law's coefficients.
        r2: coefficient of determination of the fit.
        n: number of (H, R) pairs.
    """

    a: float
    b: float
    r2: float
    n: int

    def predict(self, entropy: np.ndarray) -> np.ndarray:
        """R at entropies ``entropy`` (any shape)."""
        return -self.a * np.exp(entropy) + self.b


def fit_entropy_law(entropy, reward) -> EntropyLawFit:
    """Fit R = -a exp(H) + b (step 2).

    Args:
        entropy: [N] mean token entropies H (nats).
        reward: [N] mean rewards R.

    Raises:
        ValueError: fewer than 2 pairs, mismatched lengths, non-finite values, or constant entropy.
    """
    h, r = np.asarray(entropy, dtype=np.float64).ravel(), np.asarray(reward, dtype=np.float64).ravel()
    if h.shape != r.shape:
        raise ValueError(f"entropy and reward must have the same length, got {h.size} and {r.size}")
    if h.size < 2:
        raise ValueError(f"need at least 2 (entropy, reward) pairs, got {h.size}")
    if not (np.isfinite(h).all() and np.isfinite(r).all()):
        raise ValueError("entropy and reward must be finite")
    x = np.exp(h)
    if np.ptp(x) == 0:
        raise ValueError("entropy is constant: the law's slope is undetermined")
    xc, rc = x - x.mean(), r - r.mean()
    slope = float((xc * rc).sum() / (xc * xc).sum())
    intercept = float(r.mean() - slope * x.mean())
    ss_res = float(((r - (slope * x + intercept)) ** 2).sum())
    ss_tot = float((rc**2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    return EntropyLawFit(a=-slope, b=intercept, r2=r2, n=int(h.size))


def read_run(run: str | Path) -> tuple[list[float], list[float]]:
    """(entropies, rewards) of one run: a folder holding log.jsonl, or the JSONL file itself (step 1)."""
    path = Path(run)
    path = path / "log.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path} (expected a run folder with log.jsonl)")
    hs, rs = [], []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {i + 1} is not JSON ({err.msg})") from None
        if ENTROPY_KEY in rec and REWARD_KEY in rec and math.isfinite(rec[ENTROPY_KEY]):
            hs.append(float(rec[ENTROPY_KEY]))
            rs.append(float(rec[REWARD_KEY]))
    return hs, rs


def entropy_law_from_runs(runs: list[str | Path], png: str | Path | None = None) -> EntropyLawFit:
    """Fit the law to every logged step of ``runs`` together and optionally plot it (step 3)."""
    data = {str(r): read_run(r) for r in runs}
    h = [x for hs, _ in data.values() for x in hs]
    r = [y for _, rs in data.values() for y in rs]
    fit = fit_entropy_law(h, r)
    if png is not None:
        plot_entropy_law(data, fit, png)
    return fit


def plot_entropy_law(data: dict[str, tuple[list[float], list[float]]], fit: EntropyLawFit, png: str | Path) -> Path:
    """Scatter of (H, R) per run with the fitted curve; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (hs, rs) in data.items():
        ax.scatter(hs, rs, s=10, alpha=0.7, label=Path(name).name or name)
    all_h = np.array([x for hs, _ in data.values() for x in hs])
    grid = np.linspace(all_h.min(), all_h.max(), 100)
    ax.plot(grid, fit.predict(grid), "k-", label=f"R = -{fit.a:.3g} exp(H) + {fit.b:.3g}, R² = {fit.r2:.3f}")
    ax.set_xlabel("token entropy H (nats)")
    ax.set_ylabel("mean reward R")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


@dataclass
class EntropyLawConfig:
    """``gendiff llm entropy-law``: the run folders to fit and where the plot goes."""

    runs: tuple[str, ...] = field(default=(), metadata={"nargs": "+", "help": "run folders holding log.jsonl"})
    out: str | None = field(default=None, metadata={"help": "PNG path (a JSON with a, b, R^2 is written beside it)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing PNG / JSON"})


def run_entropy_law(cfg: EntropyLawConfig) -> dict:
    """``gendiff llm entropy-law``: fit the law to every logged step of ``cfg.runs``, write the PNG and a JSON of a, b,
    R^2 beside it (never over existing ones unless ``cfg.overwrite``), print the fit and return it."""
    if not cfg.runs or not cfg.out:
        raise ValueError("gendiff llm entropy-law needs --runs DIR [DIR ...] and --out PNG")
    png = Path(cfg.out)
    refuse_existing([png, png.with_suffix(".json")], cfg.overwrite)
    with atomic_path(png) as tmp:
        fit = entropy_law_from_runs(list(cfg.runs), tmp)
    res = {"a": fit.a, "b": fit.b, "r2": fit.r2, "n": fit.n, "runs": list(cfg.runs)}
    atomic_write_text(png.with_suffix(".json"), json.dumps(res, indent=2))
    print(f"R = -{fit.a:.4g} exp(H) + {fit.b:.4g}   R^2 = {fit.r2:.3f}   ({fit.n} points)   -> {png}")
    return res
