"""MLP denoisers for vectors: SynthER's residual MLP and GoRL's conditional action decoder.

- :class:`ResidualMLPDenoiser` follows SynthER (Lu et al. 2023, "Synthetic Experience Replay"): the
  input (with its conditioning) is projected to the network width, a time embedding is added, and
  ``depth`` pre-norm residual blocks h <- h + W(SiLU(LayerNorm(h))) follow; a final LayerNorm + SiLU +
  linear layer reads out the prediction. SynthER uses width 2048 and 6 blocks for transitions.
- :class:`ConditionalMLPDecoder` is GoRL's decoder g_phi(s, eps): a plain MLP on the concatenation
  [a_t, s, emb(t)] that predicts the flow velocity (or epsilon) of a noisy action a_t given state s.

Both follow the gendiff denoiser contract ``forward(x [M, *shape], t [M] or scalar, cond [M, D] | None)``
and save/load with diffusers' ``save_pretrained`` / ``from_pretrained`` (safetensors).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from gendiff.models._common import TimeEmbedding, broadcast_timesteps, check_cond


class _ResidualBlock(nn.Module):
    """Pre-norm residual block: h + Linear(SiLU(LayerNorm(h))), [M, width] -> [M, width]."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear = nn.Linear(width, width)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.linear(nn.functional.silu(self.norm(h)))


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


class ResidualMLPDenoiser(ModelMixin, ConfigMixin):
    """SynthER-style residual MLP denoiser for flat vectors.

    Args:
        dim: size of one sample (x is [M, dim], or [M, *shape] with prod(shape) == dim).
        cond_dim: size of the conditioning vector (0: unconditional).
        width: hidden width.
        depth: number of residual blocks.
        time_embed_dim: number of sinusoidal time features.
    """

    _gendiff_denoiser = True

    @register_to_config
    def __init__(
        self, dim: int, cond_dim: int = 0, width: int = 256, depth: int = 3, time_embed_dim: int = 64
    ) -> None:
        super().__init__()
        _check_sizes(dim=dim, width=width, depth=depth, time_embed_dim=time_embed_dim)
        if cond_dim < 0:
            raise ValueError(f"cond_dim must be >= 0, got {cond_dim}")
        self.in_proj = nn.Linear(dim + cond_dim, width)
        self.time_embed = TimeEmbedding(time_embed_dim, width)
        self.blocks = nn.ModuleList(_ResidualBlock(width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)

    def forward(self, x: Tensor, t: Tensor | float | int, cond: Tensor | None = None) -> Tensor:
        """Predict the denoising target.

        Args:
            x: [M, dim] or [M, *shape] noisy samples (prod(shape) == dim).
            t: [M] or scalar timesteps, as the scheduler gives them.
            cond: [M, cond_dim] conditioning, or None when cond_dim == 0.
        Returns:
            [M, *shape] prediction (same shape as x).
        """
        m, shape = x.shape[0], x.shape
        flat = x.reshape(m, -1)
        if flat.shape[1] != self.config.dim:
            raise ValueError(
                f"ResidualMLPDenoiser(dim={self.config.dim}) got x of shape {tuple(shape)} "
                f"({flat.shape[1]} values per sample)"
            )
        cond = check_cond(cond, self.config.cond_dim, m, "ResidualMLPDenoiser")
        h_in = flat if cond is None else torch.cat([flat, cond.to(flat.dtype)], dim=1)
        t = broadcast_timesteps(t, m, x.device)
        # 1. project input and add the time embedding (SynthER: proj(x) + time_mlp(t))
        h = self.in_proj(h_in) + self.time_embed(t, h_in.dtype)
        # 2. residual blocks, 3. LayerNorm -> SiLU -> linear read-out
        for block in self.blocks:
            h = block(h)
        return self.out(nn.functional.silu(self.out_norm(h))).reshape(shape)


class ConditionalMLPDecoder(ModelMixin, ConfigMixin):
    """GoRL action decoder: predicts the velocity / epsilon of a noisy action given the state.

    Args:
        action_dim: action size (x is [M, action_dim]).
        cond_dim: state size (cond is [M, cond_dim]); must be positive.
        width: hidden width.
        depth: number of hidden layers.
        time_embed_dim: number of sinusoidal time features.
    """

    _gendiff_denoiser = True

    @register_to_config
    def __init__(
        self, action_dim: int, cond_dim: int, width: int = 256, depth: int = 3, time_embed_dim: int = 32
    ) -> None:
        super().__init__()
        _check_sizes(action_dim=action_dim, cond_dim=cond_dim, width=width, depth=depth)
        self.time_embed = TimeEmbedding(time_embed_dim, time_embed_dim)
        layers: list[nn.Module] = []
        in_dim = action_dim + cond_dim + time_embed_dim
        for _ in range(depth):
            layers += [nn.Linear(in_dim, width), nn.SiLU()]
            in_dim = width
        layers.append(nn.Linear(width, action_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor | float | int, cond: Tensor | None = None) -> Tensor:
        """Predict the velocity (flow matching) or noise of noisy actions.

        Args:
            x: [M, action_dim] noisy actions.
            t: [M] or scalar timesteps (flow: sigma * num_train_timesteps).
            cond: [M, cond_dim] states (required).
        Returns:
            [M, action_dim] prediction.
        """
        if x.dim() != 2 or x.shape[1] != self.config.action_dim:
            raise ValueError(
                f"ConditionalMLPDecoder(action_dim={self.config.action_dim}) expects x of shape "
                f"[M, {self.config.action_dim}], got {tuple(x.shape)}"
            )
        m = x.shape[0]
        cond = check_cond(cond, self.config.cond_dim, m, "ConditionalMLPDecoder")
        temb = self.time_embed(broadcast_timesteps(t, m, x.device), x.dtype)
        return self.net(torch.cat([x, cond.to(x.dtype), temb], dim=1))

