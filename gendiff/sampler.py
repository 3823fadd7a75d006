"""GuidedSampler: the one denoising loop of gendiff.

It uses only the diffusers scheduler contract (``set_timesteps``, ``timesteps``, ``init_noise_sigma``,
``scale_model_input``, ``step(...).prev_sample``; flow-matching schedulers define neither of the middle
two, which then default to 1 and identity, as diffusers' own flow pipelines do) and never branches on
the scheduler's class; x0_hat
comes from :func:`gendiff.parameterization.to_x0`. Samples are held as [B, N, *shape]: B conditions
(slices, states, prompts) x N particles; the network sees them flattened to [B*N, *shape].

One reverse step i at timestep t:
  0. "shift" terms: x_t <- x_t + sum_k scale_k * term_k(x_t, x_t, t, state), once per reverse step (at the
     first stage of a multi-stage scheduler, told by its ``state_in_first_order``), before the network call.
  1. model_output = D(scale_model_input(x_t), t, cond); with grad on x_t if a term needs it (DPS).
  2. x0_hat = to_x0(model_output, x_t, t)   (Tweedie / denoised estimate), clipped to
     [-clip_sample_range, clip_sample_range] when the scheduler is configured to clip (as its step does).
  3. callback(step, t, x_t, x0_hat, state): may acquire measurements (ADS) or stop early.
  4. "x0" terms: x0_hat <- x0_hat + scale * (term(...) - x0_hat); model_output <- from_x0(x0_hat).
  5. "direction" terms: d = sum_k scale_k * term_k(x_t, x0_hat, t, state)  (evaluated before the step).
  6. x_{t-1} = scheduler.step(model_output, t, x_t).prev_sample + d.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor, nn
from tqdm.auto import tqdm

from gendiff.guidance.base import GuidanceState, GuidanceTerm
from gendiff.models import call_denoiser
from gendiff.parameterization import check_prediction, from_x0, to_x0, x0_clip_range

Callback = Callable[[int, Tensor, Tensor, Tensor, GuidanceState], "bool | None"]


@dataclass
class SamplerOutput:
    """Result of :class:`GuidedSampler`.

    Attributes:
        sample: [B, N, *shape] final x (x_0 of the reverse chain, or x_t where a callback stopped).
        x0: [B, N, *shape] the last denoised estimate x0_hat.
        trajectory: x0_hat after every step, each [B, N, *shape] (only with ``return_trajectory``).
        nfe: network evaluations per sample (forward passes; backward passes counted in ``nbe``).
        nbe: backward passes through the network (DPS).
        stopped_at: the step at which a callback stopped the loop, or None.
    """

    sample: Tensor
    x0: Tensor
    trajectory: list[Tensor] = field(default_factory=list)
    nfe: int = 0
    nbe: int = 0
    stopped_at: int | None = None


class GuidedSampler:
    """Guided reverse diffusion with particles, guidance terms and a per-step callback.

    Args:
        denoiser: a diffusers model (called as ``model(x, t).sample``) or an ``nn.Module`` with
            ``forward(x [M, *shape], t [M], cond [M, ...] | None) -> [M, *shape]``.
        scheduler: any diffusers scheduler honouring the contract above (DDPM, DDIM, Euler, EDM,
            flow matching).
        guidance: guidance terms, applied in order; their contributions add up.
        prediction_type: what the denoiser predicts ("epsilon", "v_prediction", "sample", "flow");
            when given it must agree with the scheduler's configuration (else ValueError).
        step_kwargs: extra keyword arguments for ``scheduler.step`` (e.g. ``eta`` for DDIM).
    """

    def __init__(
        self,
        denoiser: nn.Module,
        scheduler: Any,
        guidance: Sequence[GuidanceTerm] = (),
        prediction_type: str | None = None,
        step_kwargs: dict[str, Any] | None = None,
    ) -> None:
        model_pred = getattr(getattr(denoiser, "config", None), "prediction_type", None)
        check_prediction(scheduler, prediction_type or model_pred)
        for term in guidance:
            if not isinstance(term, GuidanceTerm):
                raise TypeError(f"guidance terms must be GuidanceTerm instances, got {type(term).__name__}")
        self.denoiser, self.scheduler = denoiser, scheduler
        self.guidance = list(guidance)
        self.step_kwargs = dict(step_kwargs or {})
        self._step_takes_generator = "generator" in inspect.signature(scheduler.step).parameters
        self._scales_input = hasattr(scheduler, "scale_model_input")
        self._clip = x0_clip_range(scheduler)

    @property
    def _init_sigma(self) -> float:
        return float(getattr(self.scheduler, "init_noise_sigma", 1.0))

    def _initial_latents(
        self, shape: tuple[int, ...], latents: Tensor | None, generator: torch.Generator | None,
        device: torch.device, dtype: torch.dtype,
    ) -> Tensor:
        if latents is None:  # same draw as the plain diffusers loop: randn over [B*N, *shape]
            flat = randn_tensor((shape[0] * shape[1], *shape[2:]), generator=generator, device=device, dtype=dtype)
            return flat.view(shape) * self._init_sigma
        if tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape [B, N, *sample_shape] = {shape}, got {tuple(latents.shape)}")
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or inf")
        return latents.to(device=device, dtype=dtype) * self._init_sigma

    def _expand_cond(self, cond: Tensor | None, batch_size: int, num_particles: int) -> Tensor | None:
        if cond is None:
            return None
        if cond.shape[0] != batch_size:
            raise ValueError(f"cond must have batch size B = {batch_size} on dim 0, got shape {tuple(cond.shape)}")
        return cond.repeat_interleave(num_particles, dim=0) if num_particles > 1 else cond

    @torch.no_grad()
    def __call__(
        self,
        sample_shape: Sequence[int],
        batch_size: int = 1,
        num_particles: int = 1,
        num_inference_steps: int = 50,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
        latents: Tensor | None = None,
        state: GuidanceState | None = None,
        callback: Callback | None = None,
        return_trajectory: bool = False,
        progress: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> SamplerOutput:
        """Draw B x N samples of ``sample_shape``; see the module docstring for the step.

        Args:
            sample_shape: shape of one sample, e.g. (2, 64, 64) or (horizon, features).
            batch_size: B, the number of conditions / measurement sets.
            num_particles: N particles per condition.
            num_inference_steps: reverse steps (``scheduler.set_timesteps``).
            cond: [B, ...] conditioning, repeated over particles.
            generator: torch.Generator for the initial noise and stochastic schedulers.
            latents: [B, N, *sample_shape] initial noise (scaled by ``init_noise_sigma``).
            state: guidance state (measurements); a fresh one when None.
            callback: ``callback(step, t, x_t, x0_hat, state)``; returning True stops the loop.
        """
        if batch_size < 1 or num_particles < 1 or num_inference_steps < 1:
            raise ValueError(
                f"batch_size, num_particles and num_inference_steps must be >= 1, got "
                f"{batch_size}, {num_particles}, {num_inference_steps}"
            )
        device = torch.device(device) if device is not None else next(self.denoiser.parameters()).device
        shape = (batch_size, num_particles, *map(int, sample_shape))
        state = state if state is not None else GuidanceState()
        sched = self.scheduler
        sched.set_timesteps(num_inference_steps, device=device)
        timesteps = sched.timesteps
        n = len(timesteps)
        state.num_steps = n
        x = self._initial_latents(shape, latents, generator, device, dtype)
        c = self._expand_cond(cond, batch_size, num_particles)
        step_kwargs = dict(self.step_kwargs)
        if self._step_takes_generator:
            step_kwargs["generator"] = generator
        out = SamplerOutput(sample=x, x0=x)
        multi_stage = hasattr(sched, "state_in_first_order")  # Heun-type: 2 calls per step
        num_steps = int(sched.num_inference_steps) if multi_stage else n
        step = -1  # reverse step (not stage) index, for "shift" terms
        for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="sampling", leave=False)):
            state.step = i
            if not multi_stage or sched.state_in_first_order:
                step += 1
                x = self._shift(x, t, state, step, num_steps)
            active = [term for term in self.guidance if term.kind != "shift" and term.active(i, n)]
            x0, model_out, x_in = self._denoise(x, t, c, active, i)
            out.nfe += 1
            if callback is not None and callback(i, t, x, x0.detach(), state):
                out.sample, out.x0, out.stopped_at = x, x0.detach(), i
                return out
            x0, model_out, direction, nbe = self._apply_guidance(active, x_in, x0, model_out, t, state)
            out.nbe += nbe
            if return_trajectory:
                out.trajectory.append(x0.detach().clone())
            prev = sched.step(model_out.flatten(0, 1), t, x.flatten(0, 1), **step_kwargs).prev_sample
            x = prev.view(shape) if direction is None else prev.view(shape) + direction
            out.x0 = x0.detach()
        out.sample = x
        return out

    def _shift(self, x: Tensor, t: Tensor, state: GuidanceState, step: int, num_steps: int) -> Tensor:
        """Step 0: x [B, N, *shape] moved by the active "shift" terms of reverse step ``step`` of ``num_steps``."""
        shift: Tensor | None = None
        for term in self.guidance:
            if term.kind == "shift" and term.active(step, num_steps):
                d = term.scale_at(step, num_steps) * term(x, x, t, state)
                shift = d if shift is None else shift + d
        if shift is None:
            return x
        if not torch.isfinite(shift).all():
            raise FloatingPointError(f"a shift guidance term produced NaN/inf at step {step}")
        return x + shift

    def _denoise(
        self, x: Tensor, t: Tensor, cond: Tensor | None, active: list[GuidanceTerm], step: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Steps 1-2: one network evaluation; returns (x0_hat, model_output, x_t as used) in [B, N, ...]."""
        need_grad = any(term.needs_network_grad for term in active)
        x_in = x.detach().requires_grad_(True) if need_grad else x
        with torch.set_grad_enabled(need_grad):
            flat = x_in.flatten(0, 1)
            model_in = self.scheduler.scale_model_input(flat, t) if self._scales_input else flat
            try:
                model_out = call_denoiser(self.denoiser, model_in, t, cond)
            except RuntimeError as err:  # shape/dtype problems surface deep inside torch: name them here
                cfg = getattr(self.denoiser, "config", None)
                expected = getattr(cfg, "in_channels", None)
                hint = f" (the model's config expects {expected} input channels)" if expected is not None else ""
                raise ValueError(
                    f"denoiser failed on a batch of shape {tuple(model_in.shape)}{hint}: check sample_shape "
                    f"and cond; torch said: {str(err).splitlines()[0]}"
                ) from err
            if model_out.shape != flat.shape:
                raise ValueError(
                    f"denoiser returned shape {tuple(model_out.shape)} for input {tuple(flat.shape)}; "
                    "it must return a tensor shaped like its input"
                )
            if not torch.isfinite(model_out).all():
                raise FloatingPointError(f"denoiser returned NaN/inf at step {step} (timestep {float(t):g})")
            x0 = to_x0(self.scheduler, model_out, flat, t).view(x.shape)  # view inside: keeps the graph
            if self._clip is not None:  # the scheduler clips x0 in step(); everything else sees the same x0
                x0 = x0.clamp(-self._clip, self._clip)
        return x0, model_out.view(x.shape), x_in

    def _apply_guidance(
        self, active: list[GuidanceTerm], x_in: Tensor, x0: Tensor, model_out: Tensor, t: Tensor,
        state: GuidanceState,
    ) -> tuple[Tensor, Tensor, Tensor | None, int]:
        """Steps 4-5: x0 corrections, then the summed update direction (None when no term is active)."""
        if not active:
            return x0, model_out.detach(), None, 0
        n, i = state.num_steps, state.step
        direction: Tensor | None = None
        nbe = 0
        for term in active:  # directions are evaluated at the network's own x0_hat (DPS needs its graph)
            if term.kind != "direction":
                continue
            d = term.scale_at(i, n) * term(x_in, x0, t, state)
            nbe += int(term.needs_network_grad)
            direction = d if direction is None else direction + d
        x0 = x0.detach()
        corrected = False
        for term in active:
            if term.kind == "x0":
                x0 = x0 + term.scale_at(i, n) * (term(x_in.detach(), x0, t, state) - x0)
                corrected = True
        if corrected:
            flat = x_in.detach().flatten(0, 1)
            model_out = from_x0(self.scheduler, x0.flatten(0, 1), flat, t).view(x0.shape)
        if direction is not None and not torch.isfinite(direction).all():
            raise FloatingPointError(f"guidance produced NaN/inf at step {i}")
        return x0, model_out.detach(), direction, nbe
