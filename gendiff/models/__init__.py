"""Denoisers: named ``UNet2DModel`` sizes, a 1D temporal U-Net, residual MLPs and action decoders.

Every model here saves and loads with diffusers' ``save_pretrained`` / ``from_pretrained`` (safetensors).
:func:`call_denoiser` is the one way the rest of gendiff calls a denoiser, whatever its kind.
"""

from __future__ import annotations

from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from gendiff.models._common import broadcast_timesteps
from gendiff.models.mlp import ConditionalMLPDecoder, ResidualMLPDenoiser
from gendiff.models.temporal_unet import TemporalUNet1D
from gendiff.models.unet2d import make_unet2d

__all__ = [
    "ConditionalMLPDecoder",
    "ResidualMLPDenoiser",
    "TemporalUNet1D",
    "broadcast_timesteps",
    "call_denoiser",
    "make_unet2d",
]


def _inner(model: nn.Module) -> nn.Module:
    """The user's model behind DistributedDataParallel (``.module``) or ``torch.compile`` (``._orig_mod``)."""
    for _ in range(4):  # DDP(compile(model)) and similar nestings
        wrapped = model._modules.get("module") or model._modules.get("_orig_mod")
        if wrapped is None:
            break
        model = wrapped
    return model

def call_denoiser(model: nn.Module, x: Tensor, t: Tensor | float | int, cond: Tensor | None = None) -> Tensor:
    """Run any denoiser on a batch and return its prediction as a tensor.

    diffusers models such as ``UNet2DModel`` are called as ``model(x, t).sample`` (``cond`` goes in as
    ``class_labels``); gendiff's own models and any other ``nn.Module`` as ``model(x, t, cond)``.

    Args:
        model: a gendiff denoiser or a diffusers model (possibly wrapped by DDP / torch.compile).
        x: [M, *shape] noisy samples (already scaled by the scheduler's ``scale_model_input``).
        t: scalar or [M] timesteps exactly as the scheduler gives them (int or float).
        cond: [M, D] conditioning or None.
    Returns:
        [M, *shape] prediction.
    """
    t = broadcast_timesteps(t, x.shape[0], x.device)
    inner = _inner(model)
    if not isinstance(inner, ModelMixin) or getattr(inner, "_gendiff_denoiser", False):
        return model(x, t, cond)  # the gendiff contract: forward(x, t, cond)
    out = model(x, t) if cond is None else model(x, t, class_labels=cond)
    if isinstance(out, Tensor):
        return out
    sample = getattr(out, "sample", None)
    if isinstance(sample, Tensor):
        return sample
    if isinstance(out, tuple) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"{type(model).__name__} returned {type(out).__name__}, not a tensor or an output with .sample")
