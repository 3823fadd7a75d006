"""Convert a denoiser's output between x0, epsilon and velocity for any diffusers scheduler.

One formula for every scheduler: x_t = alpha_t * x0 + sigma_t * eps, with (alpha_t, sigma_t) read from
the scheduler's own tables. Four families, told apart by what the scheduler exposes (never its class):

- ``vp``   (DDPM, DDIM, ...): ``alphas_cumprod``; alpha = sqrt(abar_t), sigma = sqrt(1 - abar_t).
- ``ve``   (Euler, k-diffusion style): ``sigmas`` on an unscaled x; alpha = 1, sigma = sigma_t.
- ``edm``  (EDM schedulers): ``precondition_outputs``; x0 = c_skip x + c_out F (Karras et al. 2022, eq. 7).
- ``flow`` (flow matching): ``sigmas`` and no ``alphas_cumprod``; x_t = (1 - s) x0 + s eps, u = eps - x0.

Prediction types: ``epsilon``, ``v_prediction`` (v = alpha' eps - sigma' x0 on the variance-normalised
x / sqrt(alpha^2 + sigma^2), Salimans & Ho 2022), ``sample`` (x0 directly) and ``flow`` (u = eps - x0).
Flow-matching schedulers return no ``pred_original_sample``, hence this module.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

Family = Literal["vp", "ve", "edm", "flow"]
Prediction = Literal["epsilon", "v_prediction", "sample", "flow"]
PREDICTIONS: tuple[str, ...] = ("epsilon", "v_prediction", "sample", "flow")


def noise_family(scheduler: Any) -> Family:
    """Which noising convention ``scheduler`` uses (see the module docstring)."""
    if hasattr(scheduler, "precondition_outputs"):
        return "edm"
    has_sigmas = getattr(scheduler, "sigmas", None) is not None
    has_abar = getattr(scheduler, "alphas_cumprod", None) is not None
    if has_sigmas and not has_abar:
        return "flow"
    if has_sigmas:
        return "ve"
    if has_abar:
        return "vp"
    raise TypeError(
        f"{type(scheduler).__name__} exposes neither alphas_cumprod nor sigmas; gendiff cannot tell "
        "how it noises samples"
    )


def prediction_type(scheduler: Any) -> Prediction:
    """The prediction type a scheduler expects its model to make ("flow" for flow matching)."""
    if noise_family(scheduler) == "flow":
        return "flow"
    pred = getattr(scheduler.config, "prediction_type", "epsilon")
    if pred == "original_sample":
        pred = "sample"
    if pred not in PREDICTIONS:
        raise ValueError(f"unsupported prediction_type {pred!r}; expected one of {PREDICTIONS}")
    return pred


def check_prediction(scheduler: Any, expected: str | None) -> Prediction:
    """Return the scheduler's prediction type, raising when it disagrees with ``expected``."""
    actual = prediction_type(scheduler)
    if expected is not None and expected != actual:
        raise ValueError(
            f"prediction mismatch: the model predicts {expected!r} but {type(scheduler).__name__} is "
            f"configured for {actual!r}; build the scheduler with prediction_type={expected!r}"
            + (" (a flow-matching scheduler)" if expected == "flow" else "")
        )
    return actual


def _sigma_index(scheduler: Any, t: Tensor | float) -> int:
    idx = getattr(scheduler, "step_index", None)
    if idx is None:
        idx = scheduler.index_for_timestep(torch.as_tensor(t, device=scheduler.timesteps.device))
    return int(idx)


def noise_coefficients(scheduler: Any, t: Tensor | float | int) -> tuple[Tensor, Tensor]:
    """(alpha_t, sigma_t) with x_t = alpha_t x0 + sigma_t eps at timestep ``t`` (0-d tensors, float32)."""
    fam = noise_family(scheduler)
    if fam == "vp":
        abar = scheduler.alphas_cumprod[int(t)].to(torch.float32)
        return abar.sqrt(), (1 - abar).sqrt()
    sigma = scheduler.sigmas[_sigma_index(scheduler, t)].to(torch.float32)
    if fam == "flow":
        return 1 - sigma, sigma
    return torch.ones_like(sigma), sigma


def _edm_coefficients(scheduler: Any, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """EDM's (c_skip, c_out), read off the scheduler's own ``precondition_outputs`` (it is affine)."""
    one, zero = torch.ones(()), torch.zeros(())
    c_skip = scheduler.precondition_outputs(one, zero, sigma)
    c_out = scheduler.precondition_outputs(zero, one, sigma)
    return c_skip, c_out


def x0_clip_range(scheduler: Any) -> float | None:
    """The bound the scheduler's ``step`` clips x0_hat to (``clip_sample_range``), or None when it does not clip."""
    cfg = scheduler.config
    return float(cfg.get("clip_sample_range", 1.0)) if cfg.get("clip_sample", False) else None


def to_x0(scheduler: Any, model_output: Tensor, x_t: Tensor, t: Tensor | float | int) -> Tensor:
    """Tweedie / denoised estimate x0_hat from the model output at ``x_t`` (differentiable in x_t).

    Args:
        scheduler: a diffusers scheduler (after ``set_timesteps``).
        model_output: [M, *shape] raw network output (after the scheduler's input scaling).
        x_t: [M, *shape] current sample (unscaled, as the scheduler holds it).
        t: the current timestep, as in ``scheduler.timesteps``.
    Returns:
        [M, *shape] x0_hat.
    """
    fam, pred = noise_family(scheduler), prediction_type(scheduler)
    alpha, sigma = (c.to(x_t.device, x_t.dtype) for c in noise_coefficients(scheduler, t))
    if fam == "edm":
        c_skip, c_out = (c.to(x_t.device, x_t.dtype) for c in _edm_coefficients(scheduler, sigma))
        return c_skip * x_t + c_out * model_output
    if pred == "sample":
        return model_output
    if pred in ("epsilon", "flow"):  # eps: (x - sigma eps) / alpha;  flow: x - s u = x0 exactly
        x0 = x_t - sigma * model_output
        return x0 if pred == "flow" else x0 / alpha
    norm = (alpha**2 + sigma**2).sqrt()  # v_prediction on the variance-normalised sample
    return (alpha / norm) * (x_t / norm) - (sigma / norm) * model_output


def from_x0(scheduler: Any, x0: Tensor, x_t: Tensor, t: Tensor | float | int) -> Tensor:
    """The model output (in the scheduler's prediction type) whose x0_hat is ``x0`` at ``x_t``.

    Exact inverse of :func:`to_x0`; the sampler uses it to step with a corrected x0 (x0-space guidance).
    """
    fam, pred = noise_family(scheduler), prediction_type(scheduler)
    alpha, sigma = (c.to(x_t.device, x_t.dtype) for c in noise_coefficients(scheduler, t))
    if fam == "edm":
        c_skip, c_out = (c.to(x_t.device, x_t.dtype) for c in _edm_coefficients(scheduler, sigma))
        return (x0 - c_skip * x_t) / c_out
    if pred == "sample":
        return x0
    if pred == "flow":
        return (x_t - x0) / sigma
    if pred == "epsilon":
        return (x_t - alpha * x0) / sigma
    norm = (alpha**2 + sigma**2).sqrt()
    return ((alpha / norm) * (x_t / norm) - x0) * (norm / sigma)


def to_eps(scheduler: Any, model_output: Tensor, x_t: Tensor, t: Tensor | float | int) -> Tensor:
    """Predicted noise eps_hat = (x_t - alpha x0_hat) / sigma."""
    alpha, sigma = (c.to(x_t.device, x_t.dtype) for c in noise_coefficients(scheduler, t))
    return (x_t - alpha * to_x0(scheduler, model_output, x_t, t)) / sigma


def to_velocity(scheduler: Any, model_output: Tensor, x_t: Tensor, t: Tensor | float | int) -> Tensor:
    """Velocity in the family's own sense: u = eps - x0 for flow, v = alpha' eps - sigma' x0 otherwise."""
    alpha, sigma = (c.to(x_t.device, x_t.dtype) for c in noise_coefficients(scheduler, t))
    x0 = to_x0(scheduler, model_output, x_t, t)
    eps = (x_t - alpha * x0) / sigma
    if noise_family(scheduler) == "flow":
        return eps - x0
    norm = (alpha**2 + sigma**2).sqrt()
    return (alpha * eps - sigma * x0) / norm
