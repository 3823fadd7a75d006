"""Input handling shared by gendiff's own denoisers: timestep broadcasting and embedding, cond checks.

The sinusoidal features are diffusers' own (``Timesteps``, Vaswani et al. 2017 / Ho et al. 2020),
imported rather than copied, so our networks embed time exactly as ``UNet2DModel`` does.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import Tensor, nn


def broadcast_timesteps(t: Tensor | float | int, batch: int, device: torch.device) -> Tensor:
    """Turn a scalar, 0-d, [1] or [batch] timestep into a [batch] tensor on ``device``.

    Int timesteps (DDPM 0..999) stay integer; float ones (Euler, EDM c_noise, flow sigma*1000) stay float,
    so a float is never truncated (``UNet2DModel`` casts a Python scalar to long).

    Raises:
        ValueError: when ``t`` has another shape.
    """
    if not isinstance(t, Tensor):
        t = torch.tensor(t, device=device)
    elif t.device != device:
        t = t.to(device)
    if t.dim() == 1 and t.shape[0] == batch:
        return t
    if t.numel() != 1:
        raise ValueError(
            f"timestep must be a scalar or have shape [{batch}] (one per sample), got shape {tuple(t.shape)}"
        )
    return t.reshape(1).expand(batch)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t followed by a 2-layer MLP: [M] -> [M, out_dim].

    Args:
        freq_dim: number of sinusoidal features.
        out_dim: embedding width.
        act: activation between the two linear layers ("silu" or "mish").
    """

    def __init__(self, freq_dim: int, out_dim: int, act: str = "silu") -> None:
        super().__init__()
        if freq_dim % 2 or freq_dim < 2:
            raise ValueError(f"time embedding width must be a positive even number, got {freq_dim}")
        self.proj = Timesteps(freq_dim, flip_sin_to_cos=True, downscale_freq_shift=0.0)
        self.mlp = TimestepEmbedding(freq_dim, out_dim, act_fn=act)

    def forward(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        """Embed timesteps ``t`` [M] (int or float) to [M, out_dim] in ``dtype``."""
        return self.mlp(self.proj(t).to(dtype))


def check_cond(cond: Tensor | None, cond_dim: int, batch: int, name: str) -> Tensor | None:
    """Validate a conditioning tensor: [batch, cond_dim] when ``cond_dim`` > 0, else None.

    Raises:
        ValueError: missing, unexpected or wrongly shaped ``cond``.
    """
    if cond_dim == 0:
        if cond is not None:
            raise ValueError(f"{name} was built with cond_dim=0 but got a cond tensor; pass cond=None")
        return None
    if cond is None:
        raise ValueError(f"{name} needs cond of shape [{batch}, {cond_dim}], got None")
    if cond.dim() != 2 or cond.shape[0] != batch or cond.shape[1] != cond_dim:
        raise ValueError(f"{name}: cond must have shape [{batch}, {cond_dim}], got {tuple(cond.shape)}")
    return cond
