"""Acquisition strategies: which candidates (pixels, image columns, k-space lines) to measure.

Every strategy returns a fixed mask ``BoolTensor [B, K]`` except ``ads``, which returns None: the
ADS pipeline then chooses the candidates itself, during sampling, by maximum expected entropy.
All strategies are reconstructed the same way (the same prior, guidance, particles and steps), so
only the mask differs between them.

Strategies (registry ``ACQUISITION``):
- ``ads``: active, maximum entropy (Nolan et al. 2024); starts from the centre line for k-space.
- ``ads_total_variance``: ADS scoring a line by particle spread + the within-particle variance its Tweedie
  means drop (``line_prior_variance``; issue 33); needs the training images, like ``data_variance``.
- ``random``: uniformly random candidates (k-space: the centre line plus random lines, like ADS's start).
- ``equispaced``: evenly spaced candidates through the centre (pixels: an evenly spaced raster).
- ``fastmri_random`` / ``fastmri_equispaced``: fastmri.data.subsample's ``RandomMaskFunc`` /
  ``EquispacedMaskFractionFunc`` with the fastMRI centre fractions (0.08 at 4x, 0.04 at 8x).
- ``data_variance``: the candidates whose entries vary most over the training images.
- ``fixed_dps``: the reference's "fixed-mask DPS": a block of centre lines (10 of 32 at 128 x 128,
  kept in proportion, at least 2) plus random lines.
- ``centre``: the ``budget`` lines around the k-space centre, one contiguous block (what ADS's masks
  converge to on the 64 x 64 phantoms, benchmarks/ads/mask_tradeoff64v6k.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from fastmri.data.subsample import EquispacedMaskFractionFunc, RandomMaskFunc
from torch import Tensor

from gendiff.operators import SubsamplingOperator
from gendiff.pipelines.ads import ActiveDiffusionSubsamplingPipeline
from gendiff.registry import Registry


@dataclass
class StrategyContext:
    """What a strategy may know: never the target, only the problem's shape and the training set.

    Attributes:
        operator: the measurement operator (its kind and number of candidates K).
        kind: "pixel", "column" or "kspace_line".
        budget: number of candidates to measure per condition.
        batch_size: B.
        generator: torch.Generator for the random strategies.
        train_images: [S, C, H, W] training images (for data_variance), or None.
    """

    operator: SubsamplingOperator
    kind: str
    budget: int
    batch_size: int
    generator: torch.Generator | None = None
    train_images: Tensor | None = None

    @property
    def num_candidates(self) -> int:
        return self.operator.num_candidates


Strategy = Callable[[StrategyContext], "Tensor | None"]
ACQUISITION: Registry[Strategy] = Registry("acquisition strategy")


def centre_lines(k: int, n: int) -> Tensor:
    """Indices of the ``n`` lines around the k-space centre (index k // 2, fft2c convention)."""
    start = k // 2 - n // 2
    return torch.arange(start, start + n) % k


def _fill_random(mask: Tensor, budget: int, generator: torch.Generator | None) -> Tensor:
    """Add uniformly random unmeasured candidates to each row until it holds ``budget``."""
    for b in range(mask.shape[0]):  # B rows, each one vectorised
        free = (~mask[b]).nonzero().flatten()
        need = budget - int(mask[b].sum())
        if need > 0:
            mask[b, free[torch.randperm(free.numel(), generator=generator)[:need]]] = True
    return mask


def _empty(ctx: StrategyContext) -> Tensor:
    return torch.zeros(ctx.batch_size, ctx.num_candidates, dtype=torch.bool)


@ACQUISITION.register("ads")
def ads(ctx: StrategyContext) -> None:
    """Active: the pipeline chooses during sampling."""
    return None


@ACQUISITION.register("ads_total_variance")
def ads_total_variance(ctx: StrategyContext) -> None:
    """Active, like ``ads``; the benchmark passes the training set's line variance to the pipeline."""
    if ctx.train_images is None:
        raise ValueError("ads_total_variance needs the training images (--train-data), like data_variance")
    return None


ACTIVE = ("ads", "ads_total_variance")  # strategies that choose their lines while reconstructing


def line_variance(operator: SubsamplingOperator, train_images: Tensor) -> Tensor:
    """[K] variance of each candidate over the training images, summed over its entries (data_variance's score)."""
    return operator.full(train_images).var(dim=0).sum(-1)


@ACQUISITION.register("random")
def random(ctx: StrategyContext) -> Tensor:
    mask = _empty(ctx)
    if ctx.kind == "kspace_line":
        mask[:, ctx.num_candidates // 2] = True
    return _fill_random(mask, ctx.budget, ctx.generator)


@ACQUISITION.register("equispaced")
def equispaced(ctx: StrategyContext) -> Tensor:
    k, n = ctx.num_candidates, ctx.budget
    if ctx.kind == "pixel":  # an evenly spaced raster over the H x W grid
        _, h, w = ctx.operator.image_shape
        side = max(1, int(round((h * w / n) ** 0.5)))
        grid = torch.zeros(h, w, dtype=torch.bool)
        grid[side // 2 :: side, side // 2 :: side] = True
        idx = grid.flatten().nonzero().flatten()[:n]
    else:  # lines spaced k / n apart, one of them through the centre
        idx = ((torch.arange(n) * (k / n)).round().long() + k // 2) % k
    mask = _empty(ctx)
    mask[:, idx] = True
    return _fill_random(mask, n, ctx.generator)  # tops up when rounding merged two positions


def _centre_fraction(k: int, budget: int) -> float:
    return 0.08 if k / budget <= 4.5 else 0.04  # fastMRI's pairs: 4x -> 0.08, 8x -> 0.04


def _fastmri_mask(ctx: StrategyContext, cls: type) -> Tensor:
    if ctx.kind == "pixel":
        raise ValueError("fastMRI mask functions make line masks; use them with column or kspace_line")
    k = ctx.num_candidates
    accel = max(1, round(k / ctx.budget))
    seeds = torch.randint(0, 2**31 - 1, (ctx.batch_size,), generator=ctx.generator).tolist()
    rows = []
    for s in seeds:
        func = cls(center_fractions=[_centre_fraction(k, ctx.budget)], accelerations=[accel], seed=int(s))
        m, _ = func((1, k, 1), seed=int(s))
        rows.append(m.reshape(-1)[:k].bool())
    return torch.stack(rows)


@ACQUISITION.register("fastmri_random")
def fastmri_random(ctx: StrategyContext) -> Tensor:
    return _fastmri_mask(ctx, RandomMaskFunc)


@ACQUISITION.register("fastmri_equispaced")
def fastmri_equispaced(ctx: StrategyContext) -> Tensor:
    return _fastmri_mask(ctx, EquispacedMaskFractionFunc)


@ACQUISITION.register("data_variance")
def data_variance(ctx: StrategyContext) -> Tensor:
    if ctx.train_images is None:
        raise ValueError("data_variance needs the training images (train_images [S, C, H, W])")
    score = line_variance(ctx.operator, ctx.train_images)  # [K]
    mask = _empty(ctx)
    mask[:, score.topk(ctx.budget).indices] = True
    return mask


@ACQUISITION.register("fixed_dps")
def fixed_dps(ctx: StrategyContext) -> Tensor:
    if ctx.kind == "pixel":
        raise ValueError("fixed_dps is a line strategy (centre block + random lines)")
    mask = _empty(ctx)
    # At least 2 centre lines: with 1 (budget <= 4, e.g. 4 of 32 lines) the block is the single centre line that
    # ``random`` also starts from, and both then draw the same random lines from the same generator: the two
    # strategies were the same mask (issue 33; benchmarks/ads/mri32_results.md, budget 4).
    n_centre = min(ctx.budget, max(2, int(np.round(ctx.budget * 10 / 32))))
    mask[:, centre_lines(ctx.num_candidates, n_centre)] = True
    return _fill_random(mask, ctx.budget, ctx.generator)


@ACQUISITION.register("centre")
def centre(ctx: StrategyContext) -> Tensor:
    if ctx.kind == "pixel":
        raise ValueError("centre is a line strategy (a block of centre lines)")
    mask = _empty(ctx)
    mask[:, centre_lines(ctx.num_candidates, ctx.budget)] = True
    return mask


def check_plan(names: list[str], budgets: list[int], num_candidates: int) -> None:
    """Raise before any reconstruction runs if a strategy name is unknown or a budget impossible.

    Raises:
        KeyError: an unknown strategy (the message lists the valid names).
        ValueError: a budget outside 1..num_candidates (the pipeline's own check, ``budget_from``).
    """
    for name in names:
        ACQUISITION.get(name)
    for budget in budgets:
        ActiveDiffusionSubsamplingPipeline.budget_from(num_candidates, budget, None)


def make_mask(name: str, ctx: StrategyContext) -> Tensor | None:
    """Build the mask of strategy ``name`` (None for ``ads``), checking the name and budget first."""
    check_plan([name], [ctx.budget], ctx.num_candidates)
    return ACQUISITION.get(name)(ctx)
