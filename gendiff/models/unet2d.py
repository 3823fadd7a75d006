"""Named sizes of diffusers' ``UNet2DModel`` for image priors (MNIST-like, fastMRI slices).

| size  | block_out_channels  | layers/block | attention         | params (1 channel) |
|-------|---------------------|--------------|-------------------|--------------------|
| tiny  | (16, 32, 32)        | 1            | none              | ~0.27 M (tests)    |
| small | (32, 64, 64)        | 1            | none              | ~1.06 M (CPU)      |
| base  | (64, 128, 128, 256) | 2            | third level (1/4) | ~17 M (GPU)        |

``UNet2DModel`` needs one down and one up block type per ``block_out_channels`` entry (its default has
four), and ``sample_size`` must survive ``len(block_out_channels) - 1`` halvings.
"""

from __future__ import annotations

from typing import Literal

from diffusers import UNet2DModel

UNetSize = Literal["tiny", "small", "base"]

_SIZES: dict[str, dict] = {
    "tiny": {"block_out_channels": (16, 32, 32), "layers_per_block": 1, "norm_num_groups": 8, "attn": ()},
    "small": {"block_out_channels": (32, 64, 64), "layers_per_block": 1, "norm_num_groups": 32, "attn": ()},
    "base": {
        "block_out_channels": (64, 128, 128, 256),
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "attn": (2,),
    },
}


def make_unet2d(size: UNetSize, sample_size: int, in_channels: int) -> UNet2DModel:
    """Build a ``UNet2DModel`` of a named size whose output has as many channels as its input.

    Args:
        size: "tiny", "small" or "base" (see the module table).
        sample_size: image height = width; divisible by 2 ** (levels - 1).
        in_channels: image channels (1 for magnitude images, 2 for real/imaginary).
    Returns:
        A freshly initialised ``UNet2DModel``, called as ``model(x [M, C, H, W], t [M]).sample``.
    Raises:
        ValueError: unknown size, non-positive channels, or a sample size the U-Net cannot halve.
    """
    if size not in _SIZES:
        raise ValueError(f"unknown U-Net size {size!r}; valid sizes: {sorted(_SIZES)}")
    spec = _SIZES[size]
    channels: tuple[int, ...] = spec["block_out_channels"]
    factor = 2 ** (len(channels) - 1)
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if sample_size < factor or sample_size % factor:
        raise ValueError(f"sample_size {sample_size} must be a positive multiple of {factor} for size {size!r}")
    down = tuple("AttnDownBlock2D" if i in spec["attn"] else "DownBlock2D" for i in range(len(channels)))
    up = tuple(
        "AttnUpBlock2D" if len(channels) - 1 - i in spec["attn"] else "UpBlock2D" for i in range(len(channels))
    )
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=channels,
        layers_per_block=spec["layers_per_block"],
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=spec["norm_num_groups"],
    )
