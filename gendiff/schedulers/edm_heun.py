"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2) as a diffusers-contract scheduler.

Heun's 2nd-order method on the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma, with "churn":
before each step the sample is lifted from t_i to t_hat_i = t_i (1 + gamma_i) by fresh noise.

  2.   x_0 ~ N(0, t_0^2 I)
  4-6. gamma_i = min(S_churn / N, sqrt(2) - 1) if S_tmin <= t_i <= S_tmax else 0;  t_hat_i = t_i (1 + gamma_i);
       x_hat_i = x_i + sqrt(t_hat_i^2 - t_i^2) * S_noise * eps_i,  eps_i ~ N(0, I)
  7-8. d_i = (x_hat_i - D(x_hat_i; t_hat_i)) / t_hat_i;  x_{i+1} = x_hat_i + (t_{i+1} - t_hat_i) d_i  (Euler)
  9-11. if t_{i+1} != 0:  d'_i = (x_{i+1} - D(x_{i+1}; t_{i+1})) / t_{i+1};
       x_{i+1} = x_hat_i + (t_{i+1} - t_hat_i) (d_i + d'_i) / 2                               (Heun)

How it fits the diffusers contract (one model call per ``step``, as diffusers' HeunDiscreteScheduler):
gamma_i depends only on t_i and N, so every level the model sees is known at ``set_timesteps``:

  sigmas    = [t_hat_0, t_1, t_hat_1, t_2, t_hat_2, ..., t_{N-1}, t_hat_{N-1}, 0]   (2N; the model sees sigmas[k])
  timesteps = c_noise(sigmas[:-1]) = 0.25 ln sigma                                      (2N - 1 calls)

Even stages k = 2i are predictors (lines 7-8), odd stages correctors (lines 10-11). The corrector that
finishes x_{i+1} also applies lines 4-6 of step i+1 (noise drawn from ``step``'s generator), so the sample
the caller holds is always the one the next model call must see. The churn of step 0 acts on pure noise
x_0 ~ N(0, t_0^2 I) and is folded into ``init_noise_sigma`` = sqrt(t_0^2 + (t_hat_0^2 - t_0^2) S_noise^2)
(the same distribution; with the reference S_tmax 50 < sigma_max 80 it is t_0). The last step is Euler.
D is EDM's preconditioned denoiser (eq. 7): D(x; sigma) = c_skip x + c_out F(c_in x; c_noise), whose
``precondition_outputs`` lets :mod:`gendiff.parameterization` recognise the EDM family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

Prediction = Literal["epsilon", "v_prediction", "sample"]


@dataclass
class EDMHeunSchedulerOutput(BaseOutput):
    """Output of :meth:`EDMHeunScheduler.step`.

    Attributes:
        prev_sample: [M, *shape] the sample the next model call sees (x_{i+1} after a predictor, x_hat_{i+1}
            after a corrector, x_N after the last step).
        pred_original_sample: [M, *shape] D(x; sigma) at this stage's level.
    """

    prev_sample: Tensor
    pred_original_sample: Tensor | None = None


class EDMHeunScheduler(SchedulerMixin, ConfigMixin):
    """Karras et al. (2022) Algorithm 2: stochastic Heun sampling in the EDM formulation.

    Args:
        sigma_min, sigma_max: ends of the noise schedule (EDM: 0.002, 80).
        sigma_data: data standard deviation of the preconditioning (EDM 0.5; PGD 1.0).
        sigma_schedule: "karras" (eq. 5, exponent ``rho``) or "exponential" (log-linear).
        num_train_timesteps: kept for diffusers compatibility (EDM is continuous in sigma).
        prediction_type: what F predicts: "epsilon" (EDM), "v_prediction" (c_out negated) or "sample" (x0).
        rho: Karras schedule exponent (7).
        final_sigmas_type: only "zero" (Algorithm 2 ends at t_N = 0); kept so EDMEuler configs load.
        s_churn, s_tmin, s_tmax, s_noise: Algorithm 2's stochasticity (EDM defaults 0, 0, inf, 1: the
            deterministic Heun sampler, Algorithm 1; PGD: 80, 0.05, 50, 1.003).
    """

    _compatibles: list[str] = ["EDMEulerScheduler"]
    order = 2

    @register_to_config
    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        sigma_schedule: Literal["karras", "exponential"] = "karras",
        num_train_timesteps: int = 1000,
        prediction_type: Prediction = "epsilon",
        rho: float = 7.0,
        final_sigmas_type: Literal["zero"] = "zero",
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
    ) -> None:
        checks = [
            (0 < sigma_min < sigma_max, f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"),
            (sigma_data > 0 and rho > 0, f"sigma_data and rho must be > 0, got {sigma_data}, {rho}"),
            (sigma_schedule in ("karras", "exponential"), f"sigma_schedule must be 'karras' or 'exponential', "
                                                          f"got {sigma_schedule!r}"),
            (prediction_type in ("epsilon", "v_prediction", "sample"),
             f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}"),
            (final_sigmas_type == "zero", f"final_sigmas_type must be 'zero' (Algorithm 2 ends at sigma 0), "
                                          f"got {final_sigmas_type!r}"),
            (s_churn >= 0, f"s_churn must be >= 0, got {s_churn}"),
            (0 <= s_tmin <= s_tmax, f"need 0 <= s_tmin <= s_tmax, got s_tmin={s_tmin}, s_tmax={s_tmax}"),
            (s_noise > 0, f"s_noise must be > 0, got {s_noise}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"EDMHeunScheduler: {message}")
        self.num_inference_steps: int | None = None
        self.timesteps: Tensor | None = None
        self.sigmas: Tensor | None = None  # [2N] levels the model sees, then 0 (module docstring)
        self._t: Tensor | None = None  # [N + 1] Algorithm 2's t_i
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self._reset_heun_state()

    # --- EDM preconditioning (Karras et al. 2022, eq. 7 and Table 1) -------------------------------
    def precondition_inputs(self, sample: Tensor, sigma: float | Tensor) -> Tensor:
        """c_in x = x / sqrt(sigma^2 + sigma_data^2); ``sample`` [M, *shape], ``sigma`` scalar or broadcastable."""
        return sample / (sigma**2 + self.config.sigma_data**2) ** 0.5

    def precondition_noise(self, sigma: float | Tensor) -> Tensor:
        """c_noise = ln(sigma) / 4 (same shape as ``sigma``)."""
        return 0.25 * torch.log(torch.as_tensor(sigma))

    def precondition_outputs(self, sample: Tensor, model_output: Tensor, sigma: float | Tensor) -> Tensor:
        """D(x; sigma) = c_skip x + c_out F for F = ``model_output`` (affine in both; [M, *shape])."""
        sd = self.config.sigma_data
        if self.config.prediction_type == "sample":
            return model_output
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2) ** 0.5
        if self.config.prediction_type == "v_prediction":
            c_out = -c_out
        return c_skip * sample + c_out * model_output

    # --- the diffusers contract ------------------------------------------------------------------
    @property
    def init_noise_sigma(self) -> float:
        """Std of x_0 (line 2), with step 0's churn (lines 4-6) folded in; sigma_max before set_timesteps."""
        if self.sigmas is None:
            return float(self.config.sigma_max)
        t0, t_hat0 = float(self._t[0]), float(self.sigmas[0])
        return math.sqrt(t0**2 + (t_hat0**2 - t0**2) * self.config.s_noise**2)

    @property
    def step_index(self) -> int | None:
        """Index of the current stage in ``timesteps`` (None before the first call)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    @property
    def state_in_first_order(self) -> bool:
        """True when the next ``step`` is a predictor (lines 7-8), False for a corrector (lines 10-11)."""
        return self.dt is None

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Build the 2N - 1 stages of an N-step run (module docstring); resets the step state."""
        n = int(num_inference_steps)
        if n < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        cfg = self.config
        dtype = torch.float32 if torch.backends.mps.is_available() else torch.float64
        ramp = torch.linspace(0, 1, n, dtype=dtype)
        if cfg.sigma_schedule == "karras":  # eq. 5: t_i = (max^(1/rho) + i/(N-1) (min^(1/rho) - max^(1/rho)))^rho
            lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
            t = (hi + ramp * (lo - hi)) ** cfg.rho
        else:
            t = torch.exp(math.log(cfg.sigma_max) + ramp * (math.log(cfg.sigma_min) - math.log(cfg.sigma_max)))
        in_range = (t >= cfg.s_tmin) & (t <= cfg.s_tmax)  # line 5
        t_hat = torch.where(in_range, t * (1 + min(cfg.s_churn / n, math.sqrt(2) - 1)), t)
        stages = torch.stack([t[1:], t_hat[1:]], dim=1).flatten()  # (corrector at t_i, predictor at t_hat_i)
        self._t = torch.cat([t, t.new_zeros(1)])  # [N + 1] Algorithm 2's t_i, t_N = 0
        self.sigmas = torch.cat([t_hat[:1], stages, t.new_zeros(1)])  # on CPU, as diffusers keeps them
        self.timesteps = self.precondition_noise(self.sigmas[:-1]).to(device=device, dtype=torch.float32)
        self.num_inference_steps = n
        self._step_index, self._begin_index = None, None
        self._reset_heun_state()

    def scale_model_input(self, sample: Tensor, timestep: float | Tensor) -> Tensor:
        """c_in x at this stage's level sigmas[step_index]; ``sample`` [M, *shape]."""
        if self.step_index is None:
            self._init_step_index(timestep)
        return self.precondition_inputs(sample, self.sigmas[self.step_index])

    def step(
        self,
        model_output: Tensor,
        timestep: float | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> EDMHeunSchedulerOutput | tuple[Tensor, Tensor]:
        """One stage: a predictor (lines 7-8) or a corrector (lines 10-11, then 4-6 of the next step).

        Args:
            model_output: [M, *shape] F(c_in x; c_noise) at this stage.
            timestep: the stage's entry of ``timesteps``.
            sample: [M, *shape] the sample the model saw (x_hat_i, or x_{i+1} for a corrector).
            generator: draws the churn noise eps_{i+1} (only when gamma_{i+1} > 0).
        Returns:
            ``EDMHeunSchedulerOutput`` (or ``(prev_sample, pred_original_sample)``), [M, *shape] each.
        """
        if self.sigmas is None:
            raise ValueError("EDMHeunScheduler.step: call set_timesteps(num_inference_steps) first")
        if self.step_index is None:
            self._init_step_index(timestep)
        k = self.step_index
        if k >= len(self.timesteps):
            raise ValueError(f"EDMHeunScheduler.step: all {len(self.timesteps)} stages are done; call set_timesteps")
        work = torch.float64 if sample.dtype == torch.float64 else torch.float32
        x, sigma = sample.to(work), self.sigmas[k].to(sample.device, work)
        denoised = self.precondition_outputs(x, model_output.to(work), sigma)  # D(x; sigma), eq. 7
        d = (x - denoised) / sigma  # line 7 / line 10
        if self.state_in_first_order:
            dt = self.sigmas[k + 1].to(sample.device, work) - sigma
            prev = x + dt * d  # line 8: Euler from t_hat_i to t_{i+1}
            if self.sigmas[k + 1] > 0:  # line 9: keep what the corrector needs
                self.prev_derivative, self.dt, self.sample = d, dt, x
        else:
            prev = self.sample + self.dt * (self.prev_derivative + d) / 2  # line 11
            self._reset_heun_state()
            prev = self._churn(prev, float(self.sigmas[k]), float(self.sigmas[k + 1]), generator)
        self._step_index = k + 1
        prev, denoised = prev.to(sample.dtype), denoised.to(sample.dtype)
        if not return_dict:
            return prev, denoised
        return EDMHeunSchedulerOutput(prev_sample=prev, pred_original_sample=denoised)

    # --- helpers ---------------------------------------------------------------------------------
    def _churn(self, x: Tensor, t: float, t_hat: float, generator: torch.Generator | None) -> Tensor:
        """Lines 4-6: x_hat = x + sqrt(t_hat^2 - t^2) S_noise eps; no draw when gamma = 0."""
        if t_hat <= t:
            return x
        eps = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + math.sqrt(t_hat**2 - t**2) * self.config.s_noise * eps

    def _reset_heun_state(self) -> None:
        self.prev_derivative: Tensor | None = None
        self.dt: Tensor | None = None
        self.sample: Tensor | None = None

    def index_for_timestep(self, timestep: float | Tensor, schedule_timesteps: Tensor | None = None) -> int:
        """Stage index of ``timestep``; for a repeated value the second (the predictor), as diffusers' Heun."""
        schedule_timesteps = self.timesteps if schedule_timesteps is None else schedule_timesteps
        indices = (schedule_timesteps == torch.as_tensor(timestep, device=schedule_timesteps.device)).nonzero()
        if len(indices) == 0:
            raise ValueError(f"timestep {float(timestep):g} is not in this scheduler's timesteps")
        return int(indices[1 if len(indices) > 1 else 0])

    def _init_step_index(self, timestep: float | Tensor) -> None:
        if self.timesteps is None:
            raise ValueError("EDMHeunScheduler: call set_timesteps(num_inference_steps) first")
        self._step_index = self.index_for_timestep(timestep) if self.begin_index is None else self.begin_index

    def __len__(self) -> int:
        return self.config.num_train_timesteps
