"""A Gaussian prior with its exact denoiser and closed-form linear-Gaussian posterior (test helpers)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gendiff.parameterization import from_x0, noise_coefficients


class GaussianDenoiser(nn.Module):
    """Exact MMSE denoiser of N(mu, Sigma): E[x0 | x_t] = mu + a Sigma (a^2 Sigma + s^2 I)^-1 (x_t - a mu).

    Returns the output in the scheduler's own prediction type (for schedulers whose model input is x_t
    itself: DDPM, DDIM, flow matching). Samples are [M, d].
    """

    def __init__(self, mu: Tensor, cov: Tensor, scheduler) -> None:
        super().__init__()
        self.register_buffer("mu", mu)
        self.register_buffer("cov", cov)
        self.scheduler = scheduler
        self.dummy = nn.Parameter(torch.zeros(()))  # so the sampler can find a device

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        alpha, sigma = noise_coefficients(self.scheduler, t[0])
        a, s = alpha.double(), sigma.double()
        eye = torch.eye(self.mu.shape[0], dtype=torch.float64)
        gain = a * self.cov.double() @ torch.linalg.inv(a**2 * self.cov.double() + s**2 * eye)
        x0 = self.mu.double() + (x.double() - a * self.mu.double()) @ gain.T
        return from_x0(self.scheduler, x0.to(x.dtype), x, t[0])


def random_gaussian(d: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    eig = torch.linspace(0.05, 1.5, d)
    return mu, (q * eig) @ q.T


def posterior(mu: Tensor, cov: Tensor, A: Tensor, y: Tensor, noise_std: float) -> tuple[Tensor, Tensor]:
    """Closed-form posterior of x ~ N(mu, cov) given y = A x + N(0, noise_std^2 I)."""
    prec = torch.linalg.inv(cov.double()) + A.double().T @ A.double() / noise_std**2
    post_cov = torch.linalg.inv(prec)
    post_mu = post_cov @ (torch.linalg.solve(cov.double(), mu.double()) + A.double().T @ y.double() / noise_std**2)
    return post_mu.float(), post_cov.float()


class MatrixOperator:
    """y = A x for samples [B, N, d]; ``project`` is the least-norm correction onto {x : A x = y}."""

    def __init__(self, A: Tensor) -> None:
        self.A = A
        self.pinv = torch.linalg.pinv(A)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.A.T

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        y = y.unsqueeze(1) if y.ndim == x.ndim - 1 else y
        return x + (y - self.forward(x)) @ self.pinv.T
