"""The pieces of a training run's state: minibatches, the EMA of the weights, the random generators.

Used by :mod:`gendiff.training`; each piece saves and restores itself for exact resumption.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate


class Batches:
    """Draws minibatches with replacement from a tensor or a Dataset (items x or (x, cond))."""

    def __init__(self, data: Tensor | Dataset, cond: Tensor | None, device: torch.device) -> None:
        self.device, self.cond = device, None
        if isinstance(data, Tensor):
            if data.dim() < 2 or data.shape[0] < 1 or not data.is_floating_point():
                raise ValueError(f"data must be a float tensor [N, *shape] with N >= 1, got {data.dtype} "
                                 f"{tuple(data.shape)}")
            if not torch.isfinite(data).all():
                raise ValueError("data contains NaN or infinite values")
            if cond is not None and (cond.shape[0] != data.shape[0] or not torch.isfinite(cond).all()):
                raise ValueError(f"cond must be finite with one row per sample ({data.shape[0]}), "
                                 f"got shape {tuple(cond.shape)}")
            self.data, self.cond = data.to(device), None if cond is None else cond.to(device)
        elif isinstance(data, Dataset):
            if cond is not None:
                raise ValueError("with a Dataset, return (x, cond) pairs from __getitem__ instead of passing cond")
            self.data = data
        else:
            raise TypeError(f"data must be a torch Tensor or a torch Dataset, got {type(data).__name__}")
        self.n = len(self.data)
        if self.n < 1:
            raise ValueError("data is empty")

    def sample(self, batch_size: int, generator: torch.Generator, start: int = 0,
               stop: int | None = None) -> tuple[Tensor, Tensor | None]:
        """Rows ``start:stop`` of a batch of ``batch_size`` indices drawn with replacement (all of it by default);
        the generator advances by the whole batch whatever the rows, so processes sharing it stay in step.

        Returns:
            x [stop - start, *shape] and cond [stop - start, D] or None.
        """
        idx = torch.randint(0, self.n, (batch_size,), generator=generator)[start:stop]
        if isinstance(self.data, Tensor):
            idx = idx.to(self.device)
            return self.data[idx], None if self.cond is None else self.cond[idx]
        batch = default_collate([self.data[i] for i in idx.tolist()])
        x, c = (batch[0], batch[1]) if isinstance(batch, list | tuple) else (batch, None)
        return x.to(self.device), None if c is None else c.to(self.device)


class EMA:
    """Exponential moving average of the parameters, with diffusers' warm-up decay (1+n)/(10+n)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.names = [n for n, _ in model.named_parameters()]
        self.params = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.params, [p.detach() for p in model.parameters()], 1.0 - decay)

    def state_dict(self) -> dict[str, Tensor]:
        return {n: p.contiguous() for n, p in zip(self.names, self.params)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if sorted(state) != sorted(self.names):
            raise KeyError(f"EMA weights do not match the model's parameters ({len(state)} vs {len(self.names)})")
        for p, n in zip(self.params, self.names):
            p.copy_(state[n])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for p, e in zip(model.parameters(), self.params):
            p.copy_(e)


class RngState:
    """The run's random state: batch indices (CPU), noise (on device), torch's global generators."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.index = torch.Generator().manual_seed(seed)
        self.noise = torch.Generator(device=device).manual_seed(seed + 1)

    def state_dict(self) -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"index": self.index.get_state(), "noise": self.noise.get_state(),
                "torch": torch.get_rng_state(), "cuda": cuda}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.index.set_state(state["index"])
        self.noise.set_state(state["noise"])
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
