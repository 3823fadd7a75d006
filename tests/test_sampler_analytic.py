"""Analytic checks: a Gaussian prior has an exact denoiser and a closed-form linear-Gaussian posterior."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler
from gaussian_toy import GaussianDenoiser, MatrixOperator, posterior, random_gaussian

from gendiff.guidance import DPSGuidance, GuidanceState, HardDataConsistency, X0SpaceGuidance
from gendiff.sampler import GuidedSampler

D, M, NOISE = 16, 6, 0.05


def _problem():
    mu, cov = random_gaussian(D)
    g = torch.Generator().manual_seed(1)
    A = torch.linalg.qr(torch.randn(D, M, generator=g))[0].T  # orthonormal rows, like a subsampling mask
    x_true = mu + torch.linalg.cholesky(cov) @ torch.randn(D, generator=g)
    y = A @ x_true + NOISE * torch.randn(M, generator=g)
    return mu, cov, A, y


def test_unguided_sampling_reproduces_the_prior():
    mu, cov, _, _ = _problem()
    for sched in (DDIMScheduler(prediction_type="epsilon", clip_sample=False), FlowMatchEulerDiscreteScheduler()):
        out = GuidedSampler(GaussianDenoiser(mu, cov, sched), sched)(
            (D,), batch_size=1, num_particles=4000, num_inference_steps=50, generator=torch.Generator().manual_seed(0)
        )
        xs = out.sample[0]
        stderr = (torch.diagonal(cov).sum() / xs.shape[0]).sqrt()  # ||mean error|| scale under exact sampling
        assert (xs.mean(0) - mu).norm() < 3 * stderr, type(sched).__name__
        assert (torch.cov(xs.T) - cov).norm() / cov.norm() < 0.12, type(sched).__name__


def _relative_error(term) -> tuple[float, float]:
    """||mean of guided samples - posterior mean|| / ||prior mean - posterior mean||, and mean residual."""
    mu, cov, A, y = _problem()
    post_mu, _ = posterior(mu, cov, A, y, NOISE)
    sched = DDPMScheduler(prediction_type="epsilon", clip_sample=False)
    state = GuidanceState(operator=MatrixOperator(A), y=y[None])
    out = GuidedSampler(GaussianDenoiser(mu, cov, sched), sched, [term])(
        (D,), batch_size=1, num_particles=500, num_inference_steps=250,
        generator=torch.Generator().manual_seed(0), state=state,
    )
    xs = out.sample[0]
    rel = ((xs.mean(0) - post_mu).norm() / (mu - post_mu).norm()).item()
    return rel, (xs @ A.T - y).norm(dim=-1).mean().item()


def test_dps_lands_near_the_posterior_mean():
    # measured: relative error 0.086, residual 0.05 (the prior mean has relative error 1 by definition)
    rel, resid = _relative_error(DPSGuidance(scale=0.1, loss="norm"))
    assert rel < 0.2 and resid < 0.2


def test_x0_space_guidance_lands_near_the_posterior_mean():
    # scale 0.5 on ||y - A x0||^2 with orthonormal A is the exact projection; measured relative error 0.17
    rel, resid = _relative_error(X0SpaceGuidance(scale=0.5, loss="squared"))
    assert rel < 0.3 and resid < 1e-3


def test_hard_data_consistency_fits_the_measurements():
    rel, resid = _relative_error(HardDataConsistency(scale=1.0))
    assert rel < 0.3 and resid < 1e-3
