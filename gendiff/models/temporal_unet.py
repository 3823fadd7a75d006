"""Janner-style 1D temporal U-Net over trajectory windows (Janner et al. 2022, "Planning with Diffusion").

The network convolves over the horizon axis: a window [M, T, transition_dim] is transposed to
[M, transition_dim, T], passed through residual temporal blocks (Conv1d(k=5) -> GroupNorm -> Mish, twice,
with the time embedding added after the first), downsampled by stride-2 convolutions and upsampled by
transposed convolutions with skip connections, and transposed back. It has no fully connected layer over
time, so a model trained on windows of length 32 samples windows of any length T divisible by
2 ** (len(dim_mults) - 1) (PGD trains on 32 and generates longer windows).

Two up paths (``skips``):
- ``"janner"`` (Janner et al.'s code, and gendiff's earlier default): the up path consumes the skips of every
  level but the first, so the full-resolution output is a transposed convolution of half-resolution features;
  nothing computed at full resolution reaches the output except through that bottleneck.
- ``"all"`` (a standard U-Net, Ronneberger et al. 2015; the PGD reference's U-Net keeps every level's skip):
  upsample (nearest neighbour + conv, no checkerboard), concatenate the same level's skip, two residual
  blocks, at every level down to full resolution. Per-step detail (s_{t+1} against s_t and a_t) reaches the
  output directly; benchmarks/offline/README.md measures the difference.
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from gendiff.models._common import TimeEmbedding, broadcast_timesteps, check_cond


class _ConvBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish, [M, c_in, T] -> [M, c_out, T]."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 5, groups: int = 8) -> None:
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(groups, c_out),
            nn.Mish(),
        )


class _ResidualTemporalBlock(nn.Module):
    """Two conv blocks with the time embedding added in between, plus a (1x1 conv) residual path."""

    def __init__(self, c_in: int, c_out: int, embed_dim: int, groups: int) -> None:
        super().__init__()
        self.block1 = _ConvBlock(c_in, c_out, groups=groups)
        self.block2 = _ConvBlock(c_out, c_out, groups=groups)
        self.time_proj = nn.Sequential(nn.Mish(), nn.Linear(embed_dim, c_out))
        self.residual = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x [M, c_in, T], emb [M, embed_dim] -> [M, c_out, T]."""
        h = self.block1(x) + self.time_proj(emb)[:, :, None]
        return self.block2(h) + self.residual(x)


class _Upsample(nn.Module):
    """Nearest-neighbour doubling of T, then a 3-tap conv: [M, c, T] -> [M, c, 2T]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(torch.repeat_interleave(x, 2, dim=-1))


class TemporalUNet1D(ModelMixin, ConfigMixin):
    """1D temporal U-Net denoiser for windows [M, T, transition_dim].

    Args:
        transition_dim: features per time step (e.g. obs + action + reward + done).
        dim: base channel width; level i has dim * dim_mults[i] channels.
        dim_mults: channel multipliers per resolution level (len - 1 downsamplings).
        cond_dim: size of a conditioning vector added to the time embedding (0: unconditional).
        groups: GroupNorm groups; every level's channel count must be divisible by it.
        skips: "janner" (the first level's skip unused) or "all" (every level's skip; module docstring).
    """

    _gendiff_denoiser = True

    @register_to_config
    def __init__(
        self,
        transition_dim: int,
        dim: int = 32,
        dim_mults: tuple[int, ...] = (1, 2, 4),
        cond_dim: int = 0,
        groups: int = 8,
        skips: Literal["janner", "all"] = "janner",
    ) -> None:
        super().__init__()
        if skips not in ("janner", "all"):
            raise ValueError(f"TemporalUNet1D: skips must be 'janner' or 'all', got {skips!r}")
        channels = [dim * m for m in dim_mults]
        if transition_dim < 1 or not channels or min(channels) < 1 or cond_dim < 0:
            raise ValueError(
                f"TemporalUNet1D: need transition_dim >= 1, dim >= 1, non-empty positive dim_mults and "
                f"cond_dim >= 0; got {transition_dim}, {dim}, {tuple(dim_mults)}, {cond_dim}"
            )
        if any(c % groups for c in channels):
            raise ValueError(f"TemporalUNet1D: channel counts {channels} must be divisible by groups={groups}")
        emb = dim
        self.time_embed = TimeEmbedding(dim, emb, act="mish")
        self.cond_proj = nn.Linear(cond_dim, emb) if cond_dim > 0 else None
        in_out = list(zip([transition_dim, *channels[:-1]], channels))
        # 1. down path: two residual blocks per level, stride-2 conv between levels
        self.downs = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.downs.append(nn.ModuleList([
                _ResidualTemporalBlock(c_in, c_out, emb, groups),
                _ResidualTemporalBlock(c_out, c_out, emb, groups),
                nn.Identity() if last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1),
            ]))
        # 2. middle
        self.mid1 = _ResidualTemporalBlock(channels[-1], channels[-1], emb, groups)
        self.mid2 = _ResidualTemporalBlock(channels[-1], channels[-1], emb, groups)
        # 3. up path: concatenate the skip, two residual blocks, and double T
        self.ups = nn.ModuleList()
        if skips == "janner":  # transposed conv after the blocks; the first level's skip is unused
            for c_in, c_out in reversed(in_out[1:]):
                self.ups.append(nn.ModuleList([
                    _ResidualTemporalBlock(c_out * 2, c_in, emb, groups),
                    _ResidualTemporalBlock(c_in, c_in, emb, groups),
                    nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1),
                ]))
        else:  # every level: (upsample from the level below), concatenate its skip, two blocks
            for i in reversed(range(len(channels))):
                below = channels[min(i + 1, len(channels) - 1)]
                self.ups.append(nn.ModuleList([
                    nn.Identity() if i == len(channels) - 1 else _Upsample(below),
                    _ResidualTemporalBlock(below + channels[i], channels[i], emb, groups),
                    _ResidualTemporalBlock(channels[i], channels[i], emb, groups),
                ]))
        self.final = nn.Sequential(_ConvBlock(channels[0], channels[0], groups=groups),
                                   nn.Conv1d(channels[0], transition_dim, 1))

    @property
    def horizon_multiple(self) -> int:
        """Window lengths T must be multiples of this (2 ** number of downsamplings)."""
        return 2 ** (len(self.config.dim_mults) - 1)

    def forward(self, x: Tensor, t: Tensor | float | int, cond: Tensor | None = None) -> Tensor:
        """Predict the denoising target for trajectory windows.

        Args:
            x: [M, T, transition_dim] noisy windows; T divisible by ``horizon_multiple``.
            t: [M] or scalar timesteps, as the scheduler gives them.
            cond: [M, cond_dim] conditioning, or None when cond_dim == 0.
        Returns:
            [M, T, transition_dim] prediction.
        """
        if x.dim() != 3 or x.shape[2] != self.config.transition_dim:
            raise ValueError(
                f"TemporalUNet1D expects x of shape [M, T, {self.config.transition_dim}], got {tuple(x.shape)}"
            )
        if x.shape[1] % self.horizon_multiple:
            raise ValueError(
                f"TemporalUNet1D: horizon T={x.shape[1]} must be divisible by {self.horizon_multiple} "
                f"(2 ** (len(dim_mults) - 1) for dim_mults={tuple(self.config.dim_mults)})"
            )
        m = x.shape[0]
        cond = check_cond(cond, self.config.cond_dim, m, "TemporalUNet1D")
        emb = self.time_embed(broadcast_timesteps(t, m, x.device), x.dtype)
        if self.cond_proj is not None:
            emb = emb + self.cond_proj(cond.to(x.dtype))
        h = x.transpose(1, 2)  # [M, C, T]: convolve over the horizon
        skips = []
        for block1, block2, down in self.downs:
            h = block2(block1(h, emb), emb)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid1(h, emb), emb)
        if self.config.skips == "janner":
            for block1, block2, up in self.ups:  # the first level's skip is unused, as in Janner et al.
                h = block2(block1(torch.cat([h, skips.pop()], dim=1), emb), emb)
                h = up(h)
        else:
            for up, block1, block2 in self.ups:
                h = block2(block1(torch.cat([up(h), skips.pop()], dim=1), emb), emb)
        return self.final(h).transpose(1, 2)

