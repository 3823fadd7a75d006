"""Active Diffusion Subsampling (Nolan, Van Nierop, Wijkstra, Van Sloun 2024) as a diffusers pipeline.

N particles (independent reverse-diffusion trajectories) share one growing mask and the measurements y.
At K acquisition steps spread over a window of the reverse process, the particles' denoised estimates
are mapped to measurement space and the candidate of maximum expected entropy is measured:

  1. yhat_i = A_full(x0_hat_i) for every particle i, before this step's guidance   (ADS Sec. 3.2)
     (optional, not in the paper: ``lookahead_steps`` = J >= 2 replaces the one-step Tweedie estimate
     by an unguided J-evaluation DDIM path from x_t to 0, see :func:`lookahead_x0`)
  2. d_ij(l) = ||yhat_i[l] - yhat_j[l]||^2 over the candidate's entries             (eq. 11)
  3. S(l) = sum_i logsumexp_j d_ij(l) / (2 sigma^2); measured candidates excluded    (eq. 12)
  4. l* = argmax_l S(l); read y[l*] from the measurement oracle; add l* to the mask.
  5. The guidance (DPS on ||y - A x0_hat||_2, or the x0-space variant) pulls every particle toward
     all measurements so far, at every step.
  (optional, not in the paper: ``line_prior_variance`` replaces Steps 2-3 by the total predictive variance of a
     line, particle spread + the within-particle variance the Tweedie means drop, see
     :func:`gendiff.entropy.particles.residual_line_variance`; benchmarks/ads/real/README.md)
  6. Output: the posterior mean of the particles' final x0_hat; for MRI optional hard data consistency
     x <- IFFT((1 - M) FFT(x) + y) and the reported image is the mean of the particle magnitudes.

The target is never looked at: it is wrapped in a :class:`gendiff.operators.MeasurementOracle` that
records every read, and fixed-mask strategies are reconstructed by the very same loop (mask given up
front), so that only the mask differs between strategies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from diffusers import DiffusionPipeline
from torch import Tensor

from gendiff.entropy import particle_entropy_scores, select_max_entropy
from gendiff.entropy.particles import particle_total_variance_scores, residual_line_variance
from gendiff.guidance import (
    GUIDANCE,
    GuidanceState,
    GuidanceTerm,
    HardDataConsistency,
    StepCountScaled,
    as_guidance_terms,
)
from gendiff.models import call_denoiser
from gendiff.operators import KSpaceLineOperator, MeasurementOracle, SubsamplingOperator, make_operator
from gendiff.parameterization import noise_coefficients, noise_family, to_x0, x0_clip_range
from gendiff.sampler import GuidedSampler

Measurement = Literal["pixel", "column", "kspace_line"]
DPS_REFERENCE_STEPS = 50  # above this many steps the DPS step shrinks as 50 / N (StepCountScaled)


@dataclass(frozen=True)
class ADSDefaults:
    """The one home of ADS's reconstruction defaults, named as the pipeline's keywords.

    :meth:`ActiveDiffusionSubsamplingPipeline.__call__`'s signature, the benchmark's ``RunSettings``
    (gendiff.mri.benchmark), the benchmark configs (``ReconstructionConfig``, gendiff.mri.study) and ``DemoConfig``
    read their defaults here; a context that deliberately differs states its value as an override with its reason.
    tests/test_ads_pipeline.py checks that they agree.
    """

    num_particles: int = 16
    num_inference_steps: int = 50  # benchmarks/ads/ads_steps.md, ads_steps64v.md: within 0.5 SSIM of 1,000 steps
    acquisition_window: tuple[float, float] = (0.0, 0.5)
    sigma: float = 1.0
    guidance: str = "dps"
    guidance_scale: float = 1.0
    lookahead_steps: int = 1  # 1: the paper's one-step Tweedie estimates


ADS_DEFAULTS = ADSDefaults()


@dataclass
class ADSOutput:
    """Result of one ADS (or fixed-mask) reconstruction.

    Attributes:
        reconstruction: [B, C, H, W] posterior mean of the particles' final x0_hat.
        magnitude: [B, H, W] mean of the particles' magnitudes (complex MRI images, C = 2), else None.
        particles: [B, N, C, H, W] final x0_hat of every particle.
        variance: [B, H, W] pixel-wise posterior variance of the particles (summed over channels).
        mask: [B, K] final measurement mask.
        order: [B, A] candidate indices in the order they were acquired (A acquisitions; fixed masks: empty).
        scores: A tensors [B, K], the candidates' entropy scores at each acquisition.
        acquisition_steps: the reverse steps at which acquisitions happened.
        nfe: network forward passes per particle; nbe: backward passes per particle.
        estimates: with ``record_estimates=True``, A tensors [B, N, C, H, W] (CPU): the particles' x0_hat
            that each acquisition was scored on (Step 1), for diagnostics and figures; else empty.
    """

    reconstruction: Tensor
    magnitude: Tensor | None
    particles: Tensor
    variance: Tensor
    mask: Tensor
    order: Tensor
    scores: list[Tensor] = field(default_factory=list)
    acquisition_steps: list[int] = field(default_factory=list)
    nfe: int = 0
    nbe: int = 0
    estimates: list[Tensor] = field(default_factory=list)


def acquisition_schedule(num_steps: int, window: tuple[float, float], count: int) -> list[int]:
    """Reverse steps at which to acquire: ``count`` acquisitions spread over a window of the steps.

    The window [start, stop) is given as fractions of ``num_steps``; acquisitions come every
    floor((stop - start) / count) steps from ``start`` (ADS reference). When the window holds fewer
    steps than acquisitions, several share a step (repeated entries), spread as evenly as possible.
    """
    lo, hi = window
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"acquisition window must satisfy 0 <= start < stop <= 1, got {window}")
    if count <= 0:
        return []
    start = int(lo * num_steps)
    span = max(int(hi * num_steps) - start, 1)
    if span >= count:
        return [start + k * (span // count) for k in range(count)]
    return [start + (k * span) // count for k in range(count)]


def lookahead_x0(unet, scheduler, x_t: Tensor, x0_hat: Tensor, t: Tensor | int, jumps: int) -> Tensor:
    """Deterministic DDIM (eta = 0) from x_t at timestep t down to 0 in ``jumps`` evaluations, no guidance.

    The one-step Tweedie estimate x0_hat = E[x0 | x_t] is a posterior *mean*: early in the reverse process
    it is blurred, so the particles' disagreement on fine detail (outer k-space lines) is smaller than the
    true posterior spread. Following each particle's probability-flow path to t = 0 gives estimates with
    the prior's own detail. The first evaluation is the sampler's (x0_hat, passed in), so the path costs
    ``jumps - 1`` extra network evaluations per particle; ``jumps = 1`` returns x0_hat unchanged.

    Args:
        unet: the denoiser; scheduler: a VP (DDPM-family) diffusers scheduler.
        x_t, x0_hat: [B, N, C, H, W] the current samples and their Tweedie estimates.
        t: the current timestep; jumps: number of evaluations along the path (>= 1).
    Returns:
        [B, N, C, H, W] the estimates at t = 0.
    """
    if jumps < 1:
        raise ValueError(f"lookahead needs at least 1 evaluation, got {jumps}")
    if jumps > 1 and noise_family(scheduler) != "vp":
        raise ValueError(f"lookahead_steps > 1 needs a VP (DDPM/DDIM-family) scheduler, got {type(scheduler).__name__}")
    clip = x0_clip_range(scheduler)
    times = torch.linspace(float(t), 0.0, jumps + 1).round().long().tolist()  # t = t_0 > t_1 > ... > t_J = 0
    x, x0 = x_t.flatten(0, 1), x0_hat.flatten(0, 1)
    for k in range(1, jumps):
        alpha, sigma = (c.to(x.device, x.dtype) for c in noise_coefficients(scheduler, times[k - 1]))
        eps = (x - alpha * x0) / sigma
        alpha, sigma = (c.to(x.device, x.dtype) for c in noise_coefficients(scheduler, times[k]))
        x = alpha * x0 + sigma * eps  # DDIM step to t_k
        x0 = to_x0(scheduler, call_denoiser(unet, x, times[k]), x, times[k])
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
    return x0.view(x_t.shape)


class ActiveDiffusionSubsamplingPipeline(DiffusionPipeline):
    """ADS: reconstruct while choosing measurements of maximum expected entropy.

    Args:
        unet: the image prior (a diffusers ``UNet2DModel`` or any gendiff denoiser).
        scheduler: a diffusers scheduler; the reference uses deterministic DDIM.
    """

    def __init__(self, unet, scheduler) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @property
    def _device(self) -> torch.device:
        """Device of the prior (works for any nn.Module, not only diffusers ModelMixin)."""
        return next(self.unet.parameters()).device

    @staticmethod
    def _guidance(kind: str | Sequence[GuidanceTerm], scale: float) -> list[GuidanceTerm]:
        """The guidance terms of a run: ready-made terms as given, or the GUIDANCE registry's term ``kind``.

        A named term gets ``scale``; DPS gets it through :class:`StepCountScaled` (``DPS_REFERENCE_STEPS``), so its
        total push does not grow with the step count. Each term keeps its own loss default (DPS: ||y - A x0||,
        x0-space: the squared residual).
        """
        if not isinstance(kind, str):
            return as_guidance_terms(kind)
        cls = GUIDANCE.get(kind)  # an unknown name raises KeyError listing the registered ones
        sched = StepCountScaled(scale, DPS_REFERENCE_STEPS) if kind == "dps" else scale
        try:
            return [cls(scale=sched)]
        except TypeError as err:
            raise ValueError(f"guidance {kind!r} needs arguments beyond a scale ({err}); build the term yourself and "
                             f"pass guidance=[term]") from None

    @staticmethod
    def budget_from(num_candidates: int, budget: int | None, acceleration: float | None) -> int:
        """Number of measurements from an explicit budget or an acceleration factor."""
        if (budget is None) == (acceleration is None):
            raise ValueError("give exactly one of budget (a number of measurements) or acceleration")
        if acceleration is not None:
            if not acceleration >= 1.0:
                raise ValueError(f"acceleration must be >= 1, got {acceleration}")
            budget = int(round(num_candidates / acceleration))
        if not 1 <= budget <= num_candidates:
            raise ValueError(
                f"impossible budget {budget}: there are {num_candidates} candidates "
                f"(acceleration {num_candidates / max(budget, 1):.3g}x)"
            )
        return budget

    @torch.no_grad()
    def __call__(
        self,
        target: Tensor | None = None,
        *,
        oracle: MeasurementOracle | None = None,
        measurement: Measurement = "kspace_line",
        budget: int | None = None,
        acceleration: float | None = None,
        mask: Tensor | None = None,
        num_particles: int = ADS_DEFAULTS.num_particles,
        num_inference_steps: int = ADS_DEFAULTS.num_inference_steps,
        acquisition_window: tuple[float, float] = ADS_DEFAULTS.acquisition_window,
        sigma: float = ADS_DEFAULTS.sigma,
        guidance: str | Sequence[GuidanceTerm] = ADS_DEFAULTS.guidance,
        guidance_scale: float = ADS_DEFAULTS.guidance_scale,
        data_consistency: bool = True,
        generator: torch.Generator | None = None,
        latents: Tensor | None = None,
        progress: bool = False,
        record_estimates: bool = False,
        lookahead_steps: int = ADS_DEFAULTS.lookahead_steps,
        line_prior_variance: Tensor | None = None,
    ) -> ADSOutput:
        """Reconstruct ``target`` (read only through the measurement operator).

        Args:
            target: [B, C, H, W] ground truth (images, or complex MRI images as 2 channels); it is wrapped
                in a MeasurementOracle. Alternatively pass ``oracle`` directly.
            measurement: "pixel", "column" or "kspace_line" (centred orthonormal FFT, lines = columns).
            budget / acceleration: total measurements per target (including the initial centre line
                for k-space), or the acceleration factor K / budget.
            mask: [B, K] a fixed mask (fixed-mask strategies); None = active acquisition (ADS).
            num_particles: N particles per target.
            num_inference_steps: reverse steps.
            acquisition_window: (start, stop) fractions of the reverse steps holding the acquisitions.
            sigma: the Gaussian-mixture width of the entropy score (eq. 12), in measurement units.
            guidance: a name in the GUIDANCE registry, "dps" (through the network, as ADS) or "x0_space" (no
                network backward), or a list of GuidanceTerm objects (each with its own scale; ``guidance_scale``
                is then unused).
            guidance_scale: DPS step size omega; with N > 50 steps each step uses omega * 50 / N (StepCountScaled), so the
                total guidance does not grow with N (measured: with a constant per-step omega = 1, SSIM fell
                from 86.3 at 100 steps to 70.5 at 200); it is never enlarged for N < 50 (that diverges at
                a handful of steps). For x0-space: the fraction of a projection step.
            data_consistency: final hard data consistency (k-space only).
            generator, latents: reproducibility; latents [B, N, C, H, W].
            record_estimates: keep the particles' x0_hat at every acquisition (``ADSOutput.estimates``).
            lookahead_steps: 1 (the paper) scores candidates on the one-step Tweedie estimates; J >= 2 on
                the end points of unguided J-evaluation DDIM paths to t = 0 (:func:`lookahead_x0`; J - 1
                extra network evaluations per particle and acquisition, counted in ``nfe``).
            line_prior_variance: optional [K] variance of each candidate over the training data (summed over its
                entries, what the data-variance mask ranks by). Given, a candidate's score is its total predictive
                variance: particle spread + the residual variance at the current noise level (not in the paper).
        """
        if lookahead_steps < 1:
            raise ValueError(f"lookahead_steps must be >= 1 (1 = the paper's Tweedie estimate), got {lookahead_steps}")
        if oracle is None:
            if target is None:
                raise ValueError("pass the target image(s) [B, C, H, W] or a MeasurementOracle")
            if target.ndim != 4:
                raise ValueError(f"target must be [B, C, H, W], got shape {tuple(target.shape)}")
            op = make_operator(measurement, tuple(target.shape[1:]), target.shape[0])
            oracle = MeasurementOracle(target.to(self._device), op)
        op: SubsamplingOperator = oracle.operator
        op.reset(oracle.batch_size)
        op.to(self._device)
        shape, b, k = op.image_shape, oracle.batch_size, op.num_candidates
        is_kspace = isinstance(op, KSpaceLineOperator)
        state = GuidanceState(operator=op, y=torch.zeros(b, k, op.entries_per_candidate, device=self._device))
        order: list[Tensor] = []
        scores: list[Tensor] = []
        steps: list[int] = []
        estimates: list[Tensor] = []
        if mask is not None:  # fixed strategy: everything measured from the first step
            if tuple(mask.shape) != (b, k):
                raise ValueError(f"mask must be [B, K] = {(b, k)}, got {tuple(mask.shape)}")
            op.mask = mask.to(self._device).bool().clone()
            state.y = oracle.measure_mask(op.mask)
            schedule: list[int] = []
        else:
            if is_kspace:  # MRI starts from the centre line, as the reference
                self._acquire(oracle, state, torch.full((b,), k // 2, device=self._device), order)
            n_total = self.budget_from(k, budget, acceleration)
            schedule = acquisition_schedule(num_inference_steps, acquisition_window, n_total - len(order))

        def callback(step: int, t: Tensor, x_t: Tensor, x0_hat: Tensor, st: GuidanceState) -> bool:
            count = schedule.count(step)
            if count and lookahead_steps > 1:  # once per step: several acquisitions may share a step
                x0_hat = lookahead_x0(self.unet, self.scheduler, x_t, x0_hat, t, lookahead_steps)
            for _ in range(count):  # Steps 1-4
                yhat = op.full(x0_hat)  # [B, N, K, E]
                if line_prior_variance is None:
                    s = particle_entropy_scores(yhat, sigma, measured=op.mask)
                else:
                    alpha_t, sigma_t = noise_coefficients(self.scheduler, t)
                    residual = residual_line_variance(line_prior_variance.to(yhat.device), alpha_t, sigma_t,
                                                      op.entries_per_candidate)
                    s = particle_total_variance_scores(yhat, residual, measured=op.mask)
                scores.append(s.detach().cpu())
                steps.append(step)
                if record_estimates:
                    estimates.append(x0_hat.detach().float().cpu())
                self._acquire(oracle, st, select_max_entropy(s), order)
            return False

        sampler = GuidedSampler(self.unet, self.scheduler, self._guidance(guidance, guidance_scale))
        out = sampler(shape, batch_size=b, num_particles=num_particles, num_inference_steps=num_inference_steps,
                      generator=generator, latents=latents, state=state, callback=callback, progress=progress,
                      device=self._device)
        out.nfe += (lookahead_steps - 1) * len(set(schedule))  # one look-ahead path per acquisition step
        return self._finish(out, op, state, data_consistency and is_kspace, order, scores, steps, estimates)

    @staticmethod
    def _acquire(oracle: MeasurementOracle, state: GuidanceState, idx: Tensor, order: list[Tensor]) -> None:
        """Step 4: read candidate idx[b] of every target and add it to the mask and to y."""
        rows = torch.arange(idx.shape[0], device=idx.device)
        entries = oracle.measure(idx)
        state.operator.acquire(idx)
        state.y[rows, idx] = entries.to(state.y.dtype)
        order.append(idx.detach().cpu())

    @staticmethod
    def _finish(out, op, state, hard_dc: bool, order, scores, steps, estimates) -> ADSOutput:
        """Step 6: posterior mean, optional hard data consistency, magnitudes, variance."""
        x0 = out.x0  # [B, N, C, H, W]
        if hard_dc:
            x0 = HardDataConsistency()(x0, x0, None, state)
        mag = x0.pow(2).sum(2).sqrt().mean(1) if x0.shape[2] == 2 else None
        return ADSOutput(
            reconstruction=x0.mean(1), magnitude=mag, particles=x0, variance=x0.var(1, unbiased=False).sum(1),
            mask=op.mask.detach().cpu().clone(),
            order=torch.stack(order, 1) if order else torch.zeros(x0.shape[0], 0, dtype=torch.long),
            scores=scores, acquisition_steps=steps, nfe=out.nfe, nbe=out.nbe, estimates=estimates,
        )
