"""Where a "shift" guidance term acts: on x_t before the denoiser call, once per reverse step (PGD's reference).

Toy: a denoiser whose denoised output is a constant mu (EDM "sample" prediction), so every reverse step of the
deterministic Heun sampler is exact: x_{i+1} - mu = (x_i - mu) sigma_{i+1} / sigma_i. A shift of c on x_i before
step i must therefore reach the network's input at the predictor stage of step i as + lambda_i c, be carried to
later steps scaled by sigma_j / sigma_i, and never be added again at the corrector stage.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gendiff.guidance import GuidanceState, LogProbGuidance, PGDSchedule
from gendiff.sampler import GuidedSampler
from gendiff.schedulers import EDMHeunScheduler

SHAPE = (3, 4)  # [horizon, features]; the shift acts on features 1:3
SLICE = slice(1, 3)


class ConstantDenoised(nn.Module):
    """F(x) = mu for every input: with prediction_type "sample", D(x; sigma) = mu."""

    def __init__(self, mu: Tensor) -> None:
        super().__init__()
        self.mu = nn.Parameter(mu, requires_grad=False)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.mu.expand_as(x)


def _shift_term(c: Tensor, scale) -> LogProbGuidance:
    """log p(x) = <x, c> on SLICE, so grad = c there (and 0 elsewhere)."""
    return LogProbGuidance(lambda x, s: (x * c).flatten(2).sum(-1), SLICE, scale=scale)


def _run(steps: int, guidance, latents: Tensor, mu: Tensor):
    sched = EDMHeunScheduler(sigma_data=1.0, prediction_type="sample")  # churn 0: deterministic Heun
    seen: list[Tensor] = []
    sampler = GuidedSampler(ConstantDenoised(mu), sched, guidance)
    sampler(SHAPE, 1, 1, steps, latents=latents, callback=lambda i, t, x, x0, st: seen.append(x.clone()))
    return seen, sched


def test_shift_acts_before_the_denoiser_once_per_step():
    torch.manual_seed(0)
    steps, lam = 5, 0.3
    mu, latents = torch.randn(SHAPE), torch.randn(1, 1, *SHAPE)
    c = torch.zeros(SHAPE)
    c[:, SLICE] = torch.randn(SHAPE[0], 2)
    seen, sched = _run(steps, [_shift_term(c, lam)], latents, mu)
    assert len(seen) == 2 * steps - 1  # Heun: predictor at every step, corrector at all but the last
    sig = sched._t.double()  # Algorithm 2's t_0..t_N (t_N = 0)
    x = latents[0, 0].double() * sched.init_noise_sigma
    stage = 0
    for i in range(steps):
        x = x + lam * c  # 0. the shift, before the network call of step i
        torch.testing.assert_close(seen[stage][0, 0].double(), x, atol=1e-5, rtol=1e-5)  # predictor sees it
        stage += 1
        x = mu + (x - mu) * sig[i + 1] / sig[i]  # the exact step
        if i < steps - 1:  # the corrector sees the Euler result, with no second shift
            torch.testing.assert_close(seen[stage][0, 0].double(), x, atol=1e-5, rtol=1e-5)
            stage += 1
    assert stage == len(seen)


def test_shift_schedule_counts_steps_not_stages():
    """PGD's lambda_i is evaluated at reverse steps i of N (zero on the last), also with Heun's 2N - 1 stages."""
    steps, coeff = 6, 0.5
    calls: list[tuple[int, int]] = []

    class Recording(PGDSchedule):
        def __call__(self, step: int, num_steps: int) -> float:
            calls.append((step, num_steps))
            return super().__call__(step, num_steps)

    c = torch.zeros(SHAPE)
    c[:, SLICE] = 1.0
    _run(steps, [_shift_term(c, Recording(coeff))], torch.randn(1, 1, *SHAPE), torch.zeros(SHAPE))
    assert calls == [(i, steps) for i in range(steps)]


def test_shift_touches_only_its_slice_and_zero_scale_is_unguided():
    torch.manual_seed(1)
    mu, latents = torch.randn(SHAPE), torch.randn(1, 1, *SHAPE)
    c = torch.ones(SHAPE)
    base, _ = _run(4, [], latents, mu)
    off, _ = _run(4, [_shift_term(c, 0.0)], latents, mu)
    on, _ = _run(4, [_shift_term(c, 0.2)], latents, mu)
    for a, b in zip(base, off):
        torch.testing.assert_close(a, b)
    outside = [j for j in range(SHAPE[1]) if j not in range(SLICE.start, SLICE.stop)]
    for a, b in zip(base, on):
        torch.testing.assert_close(a[..., outside], b[..., outside])
    assert not torch.allclose(base[-1][..., SLICE], on[-1][..., SLICE])


def test_shift_term_refuses_x0_evaluation():
    import pytest

    with pytest.raises(ValueError, match="no x0_hat"):
        LogProbGuidance(lambda x, s: x.sum((-1, -2)), SLICE, evaluate_at="x0")
    LogProbGuidance(lambda x, s: x.sum((-1, -2)), SLICE, evaluate_at="x0", kind="direction")  # the old placement


def test_state_is_shared_with_shift_terms():
    seen_state: list[GuidanceState] = []

    def lp(x: Tensor, state: GuidanceState) -> Tensor:
        seen_state.append(state)
        return x.flatten(2).sum(-1)

    state = GuidanceState(extra={"policy": "p"})
    sched = EDMHeunScheduler(sigma_data=1.0, prediction_type="sample")
    GuidedSampler(ConstantDenoised(torch.zeros(SHAPE)), sched, [LogProbGuidance(lp, SLICE, scale=0.1)])(
        SHAPE, 1, 1, 3, state=state, generator=torch.Generator().manual_seed(0))
    assert len(seen_state) == 3 and all(s is state for s in seen_state)
