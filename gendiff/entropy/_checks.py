"""Argument checks and dtype rules shared by the gendiff.entropy modules."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_tensor(name: str, t: object, min_dim: int = 0, floating: bool = True) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dims, got shape {tuple(t.shape)}")
    if floating and not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def _check_finite(name: str, t: Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf values (shape {tuple(t.shape)})")


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _broadcast(names: tuple[str, ...], *ts: Tensor) -> torch.Size:
    try:
        return torch.broadcast_shapes(*(t.shape for t in ts))
    except RuntimeError:
        shapes = ", ".join(f"{n}={tuple(t.shape)}" for n, t in zip(names, ts))
        raise ValueError(f"shapes do not broadcast: {shapes}") from None
