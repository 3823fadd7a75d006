"""Tests for gendiff.entropy: slow literal references, analytic truths and property tests."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from gendiff.entropy import (
    atanh_clipped,
    gaussian_entropy,
    gaussian_log_prob,
    gaussian_mixture_entropy_mc,
    logp_advantage_covariance,
    masked_mean,
    masked_var,
    particle_entropy_scores,
    select_max_entropy,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample,
    token_entropy,
    token_logprobs,
    windowed_entropy,
)

F64 = torch.float64
HYP = settings(max_examples=25, deadline=None)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- particle entropy
def _slow_scores(yhat: torch.Tensor, sigma: float, measured: torch.Tensor | None) -> torch.Tensor:
    """Literal double loop over particles, one candidate at a time, for yhat [B, N, K, E]."""
    b, n, k, _ = yhat.shape
    out = torch.empty(b, k, dtype=F64)
    for bi in range(b):
        for c in range(k):
            total = 0.0
            for i in range(n):
                terms = []
                for j in range(n):
                    d = sum(float(yhat[bi, i, c, e] - yhat[bi, j, c, e]) ** 2 for e in range(yhat.shape[-1]))
                    terms.append(d / (2 * sigma**2))
                m = max(terms)
                total += m + math.log(sum(math.exp(t - m) for t in terms))
            out[bi, c] = -math.inf if measured is not None and measured[bi, c] else total
    return out


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_particle_scores_match_slow_double_loop(chunk: int | None) -> None:
    g = _gen(1)
    yhat = 3.0 * torch.randn(2, 5, 7, 4, generator=g, dtype=F64) + 10.0
    measured = torch.rand(2, 7, generator=g) < 0.3
    fast = particle_entropy_scores(yhat, 2.0, measured=measured, chunk=chunk)
    torch.testing.assert_close(fast, _slow_scores(yhat, 2.0, measured), rtol=1e-10, atol=1e-10)
    # extra leading batch dims and a measured mask broadcast over the batch
    fast4 = particle_entropy_scores(yhat.reshape(1, 2, 5, 7, 4), 2.0, measured=measured[0])
    ref = _slow_scores(yhat, 2.0, measured[0].expand(2, 7))
    torch.testing.assert_close(fast4[0], ref, rtol=1e-10, atol=1e-10)


@st.composite
def _particles(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    b, n, k, e = (draw(st.integers(1, s)) for s in (3, 6, 6, 5))
    seed = draw(st.integers(0, 2**16))
    g = _gen(seed)
    scale = draw(st.sampled_from([0.1, 1.0, 30.0]))
    yhat = scale * torch.randn(b, n, k, e, generator=g, dtype=F64)
    return yhat, torch.rand(b, k, generator=g) < 0.3


@HYP
@given(_particles(), st.floats(0.5, 5.0), st.integers(0, 2**16))
def test_particle_scores_properties(data: tuple[torch.Tensor, torch.Tensor], sigma: float, seed: int) -> None:
    yhat, measured = data
    b, n, k, _ = yhat.shape
    g = _gen(seed)
    s = particle_entropy_scores(yhat, sigma)
    assert s.shape == (b, k) and bool(torch.isfinite(s).all())
    assert bool((s >= n * math.log(n) - 1e-9).all())  # n terms, each exponent >= 0: logsumexp >= log n
    perm_n, perm_k = torch.randperm(n, generator=g), torch.randperm(k, generator=g)
    torch.testing.assert_close(particle_entropy_scores(yhat[:, perm_n], sigma), s, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(particle_entropy_scores(yhat[:, :, perm_k], sigma), s[:, perm_k])
    shift = 50.0 * torch.randn(b, 1, k, yhat.shape[-1], generator=g, dtype=F64)
    torch.testing.assert_close(particle_entropy_scores(yhat + shift, sigma), s, rtol=1e-8, atol=1e-7)
    sm = particle_entropy_scores(yhat, sigma, measured=measured)
    assert bool(torch.isneginf(sm[measured]).all())
    torch.testing.assert_close(sm[~measured], s[~measured])


@HYP
@given(st.integers(2, 6), st.integers(1, 5), st.sampled_from([torch.float32, F64]), st.integers(0, 999))
def test_particle_scores_huge_distances_stay_finite(n: int, k: int, dtype: torch.dtype, seed: int) -> None:
    yhat = 1e5 * torch.randn(1, n, k, 8, generator=_gen(seed), dtype=dtype)
    s = particle_entropy_scores(yhat, 0.1)  # exponents ~ 1e12: naive exp overflows
    assert bool(torch.isfinite(s).all())
    # with huge exponents each logsumexp is its max term: S ~ sum_i max_j d_ij / (2 sigma^2)
    d = (yhat[0, :, None] - yhat[0, None, :]).double().square().sum(-1)  # [N, N, K]
    torch.testing.assert_close(s[0].double(), (d.amax(1) / 0.02).sum(0), rtol=1e-4, atol=0.0)


def test_select_max_entropy() -> None:
    scores = torch.tensor([[1.0, 5.0, 2.0], [3.0, 9.0, 4.0]])
    measured = torch.tensor([[False, True, False], [False, False, False]])
    yhat_scores = scores.masked_fill(measured, float("-inf"))
    assert select_max_entropy(yhat_scores).tolist() == [2, 1]
    with pytest.raises(ValueError, match="already measured"):
        select_max_entropy(torch.full((2, 3), float("-inf")))
    with pytest.raises(ValueError, match="NaN"):
        select_max_entropy(torch.tensor([1.0, float("nan")]))


def test_particle_scores_validation() -> None:
    with pytest.raises(ValueError, match="yhat"):
        particle_entropy_scores(torch.zeros(4, 3), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        particle_entropy_scores(torch.full((2, 3, 4), float("nan")), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        particle_entropy_scores(torch.zeros(2, 3, 4), 0.0)
    with pytest.raises(ValueError, match="measured"):
        particle_entropy_scores(torch.zeros(2, 3, 4), 1.0, measured=torch.zeros(4, dtype=torch.bool))
    with pytest.raises(TypeError, match="measured"):
        particle_entropy_scores(torch.zeros(2, 3, 4), 1.0, measured=torch.zeros(3))


# --------------------------------------------------------------------------- mixture entropy
def test_mixture_entropy_mc_analytic_limits() -> None:
    d, sigma = 3, 0.7
    single = 0.5 * d * math.log(2 * math.pi * math.e * sigma**2)
    h1 = gaussian_mixture_entropy_mc(torch.randn(1, d, dtype=F64), sigma, 20000, _gen(0))
    assert abs(h1 - single) < 0.03
    far = 1e3 * torch.eye(4, d + 1, dtype=F64)[:, :d]  # 4 components, pairwise distance >= 1000 sigma
    h4 = gaussian_mixture_entropy_mc(far, sigma, 20000, _gen(1))
    assert abs(h4 - (single + math.log(4))) < 0.03


def test_ranking_matches_mixture_entropy_well_separated() -> None:
    scales = torch.tensor([0.2, 0.45, 0.8, 1.4, 3.0])  # in units of sigma: entropies far apart
    for seed in range(3):
        g = _gen(seed)
        perm = torch.randperm(len(scales), generator=g)
        yhat = torch.randn(8, len(scales), 4, generator=g, dtype=F64) * scales[perm][None, :, None]
        s = particle_entropy_scores(yhat, 1.0)
        h = torch.tensor([gaussian_mixture_entropy_mc(yhat[:, k], 1.0, 20000, g) for k in range(len(scales))])
        assert float(h.sort().values.diff().min()) > 0.1  # the case really is well separated
        assert torch.equal(s.argsort(), h.argsort())  # Spearman = 1
        assert int(select_max_entropy(s)) == int(h.argmax())


def test_ranking_spearman_on_random_mixtures() -> None:
    g = _gen(7)
    k = 12
    scales = torch.exp(torch.empty(k).uniform_(-3.0, 1.0, generator=g))
    yhat = torch.randn(8, k, 4, generator=g, dtype=F64) * scales[None, :, None]
    s = particle_entropy_scores(yhat, 1.0)
    h = torch.tensor([gaussian_mixture_entropy_mc(yhat[:, c], 1.0, 20000, g) for c in range(k)])
    rs, rh = s.argsort().argsort().double(), h.argsort().argsort().double()
    assert float(torch.corrcoef(torch.stack([rs, rh]))[0, 1]) > 0.95


# --------------------------------------------------------------------------- token entropy / log-probs
def _full_entropy(logits: torch.Tensor) -> torch.Tensor:
    return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)


@pytest.mark.parametrize("shape", [(7,), (3, 11), (2, 5, 13), (2, 3, 4, 50)])
@pytest.mark.parametrize("chunk_rows", [1, 4, 512])
def test_token_entropy_matches_full_softmax(shape: tuple[int, ...], chunk_rows: int) -> None:
    logits = 4.0 * torch.randn(*shape, generator=_gen(2), dtype=F64)
    ref = _full_entropy(logits)
    torch.testing.assert_close(token_entropy(logits, chunk_rows), ref, rtol=0, atol=1e-10)
    h32 = token_entropy(logits.float(), chunk_rows)  # float32 arithmetic vs float64 on the same inputs
    assert h32.dtype == torch.float32 and h32.shape == shape[:-1]
    torch.testing.assert_close(h32.double(), _full_entropy(logits.float().double()), rtol=0, atol=1e-6)


@pytest.mark.parametrize("chunk_rows", [1, 3, 512])
def test_token_entropy_gradient_matches_full(chunk_rows: int) -> None:
    logits = (3.0 * torch.randn(2, 5, 17, generator=_gen(3), dtype=F64)).requires_grad_()
    w = torch.randn(2, 5, generator=_gen(4), dtype=F64)
    (g_fast,) = torch.autograd.grad((token_entropy(logits, chunk_rows) * w).sum(), logits)
    (g_ref,) = torch.autograd.grad((_full_entropy(logits) * w).sum(), logits)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-10, atol=1e-12)
    lf = logits.detach().float().requires_grad_()
    token_entropy(lf, chunk_rows).sum().backward()
    assert lf.grad is not None and lf.grad.dtype == torch.float32


def test_token_entropy_bf16_masked_and_invalid() -> None:
    logits = torch.randn(4, 6, 33, generator=_gen(5))
    h = token_entropy(logits.bfloat16())
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, _full_entropy(logits.bfloat16().float()), rtol=1e-5, atol=1e-5)
    masked = logits.clone()
    masked[..., 20:] = float("-inf")  # masked vocabulary: entropy over the first 20 tokens
    torch.testing.assert_close(
        token_entropy(masked, 5), _full_entropy(logits[..., :20]), rtol=1e-5, atol=1e-5
    )
    mg = masked.double().requires_grad_()
    token_entropy(mg, 5).sum().backward()
    assert bool(torch.isfinite(mg.grad).all()) and bool((mg.grad[..., 20:] == 0).all())
    for bad in (float("nan"), float("inf")):
        x = logits.clone()
        x[2, 3, 1] = bad
        with pytest.raises(ValueError, match="row 15"):
            token_entropy(x, 4)
    with pytest.raises(ValueError, match="chunk_rows"):
        token_entropy(logits, 0)


@pytest.mark.parametrize("chunk_rows", [1, 4, 512])
def test_token_logprobs_match_log_softmax(chunk_rows: int) -> None:
    g = _gen(6)
    logits = (2.0 * torch.randn(3, 7, 19, generator=g, dtype=F64)).requires_grad_()
    tokens = torch.randint(19, (3, 7), generator=g)
    w = torch.randn(3, 7, generator=g, dtype=F64)
    lp = token_logprobs(logits, tokens, chunk_rows)
    ref = logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(lp, ref, rtol=0, atol=1e-12)
    (g_fast,) = torch.autograd.grad((lp * w).sum(), logits)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), logits)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(token_logprobs(logits.float(), tokens).double(), ref, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="tokens must lie"):
        token_logprobs(logits, tokens + 19)
    with pytest.raises(ValueError, match="tokens shape"):
        token_logprobs(logits, tokens[:, :3])


# --------------------------------------------------------------------------- masked statistics
def test_masked_mean_var_covariance_vs_literal() -> None:
    g = _gen(8)
    x = torch.randn(4, 9, generator=g, dtype=F64)
    mask = torch.rand(4, 9, generator=g) < 0.6
    mask[0, 0] = True
    x_nan = x.masked_fill(~mask, float("nan"))  # values at invalid tokens must not leak
    torch.testing.assert_close(masked_mean(x_nan, mask), x[mask].mean())
    torch.testing.assert_close(masked_var(x_nan, mask), x[mask].var(unbiased=False))
    torch.testing.assert_close(masked_var(x_nan, mask, unbiased=True), x[mask].var(unbiased=True))
    rows = torch.stack(
        [x[i][mask[i]].mean() if mask[i].any() else torch.tensor(0.0, dtype=F64) for i in range(4)]
    )
    torch.testing.assert_close(masked_mean(x_nan, mask.long(), dim=1), rows)
    rvar = torch.stack([x[i][mask[i]].var(unbiased=False) for i in range(4)])
    torch.testing.assert_close(masked_var(x, mask, dim=-1), rvar)
    assert float(masked_mean(x, torch.zeros_like(mask))) == 0.0

    logp = torch.randn(4, 9, generator=g, dtype=F64)
    adv = torch.randn(4, generator=g, dtype=F64)
    cov = logp_advantage_covariance(logp, adv, mask)
    a_bar = sum(float(adv[i]) for i in range(4) for t in range(9) if mask[i, t]) / int(mask.sum())
    l_bar = sum(float(logp[i, t]) for i in range(4) for t in range(9) if mask[i, t]) / int(mask.sum())
    for i in range(4):
        for t in range(9):
            want = (float(adv[i]) - a_bar) * (float(logp[i, t]) - l_bar) if mask[i, t] else 0.0
            assert abs(float(cov[i, t]) - want) < 1e-12
    torch.testing.assert_close(logp_advantage_covariance(logp, adv[:, None].expand(4, 9), mask), cov)
    with pytest.raises(ValueError, match="advantages"):
        logp_advantage_covariance(logp, adv[:3], mask)
    with pytest.raises(ValueError, match="mask"):
        masked_mean(x, mask[:, :3])


@pytest.mark.parametrize("window", [1, 3, 50])
def test_windowed_entropy_matches_loop(window: int) -> None:
    g = _gen(9)
    ent = torch.rand(3, 20, generator=g)
    mask = torch.rand(3, 20, generator=g) < 0.7
    mask[2] = False
    out = windowed_entropy(ent, mask, window)
    ref = torch.zeros(3, 20)
    for b in range(3):
        seen: list[float] = []
        for t in range(20):
            if mask[b, t]:
                seen.append(float(ent[b, t]))
                ref[b, t] = sum(seen[-window:]) / len(seen[-window:])
    torch.testing.assert_close(out, ref)
    with pytest.raises(ValueError, match="window"):
        windowed_entropy(ent, mask, 0)


# --------------------------------------------------------------------------- Gaussian / tanh-Gaussian
def test_gaussian_log_prob_and_entropy_vs_torch_distributions() -> None:
    g = _gen(10)
    mean = torch.randn(5, 3, generator=g, dtype=F64)
    log_std = 0.5 * torch.randn(5, 3, generator=g, dtype=F64)
    x = torch.randn(5, 3, generator=g, dtype=F64)
    normal = Normal(mean, log_std.exp())
    torch.testing.assert_close(gaussian_log_prob(x, mean, log_std), normal.log_prob(x).sum(-1))
    torch.testing.assert_close(gaussian_entropy(log_std), normal.entropy().sum(-1))
    u = 1.5 * torch.randn(5, 3, generator=g, dtype=F64)
    tanh_dist = TransformedDistribution(normal, [TanhTransform()])
    torch.testing.assert_close(tanh_gaussian_log_prob(u, mean, log_std), tanh_dist.log_prob(u.tanh()).sum(-1))
    big = torch.full((1, 3), 30.0, dtype=F64)  # tanh(u) == 1 in float: the stable form stays finite
    assert bool(torch.isfinite(tanh_gaussian_log_prob(big, mean[:1], log_std[:1])).all())
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        gaussian_log_prob(x, mean[:, :2], log_std)


def test_tanh_gaussian_sample_reparameterised_and_reproducible() -> None:
    mean = torch.zeros(4, 2, dtype=F64, requires_grad=True)
    log_std = torch.full((4, 2), -0.5, dtype=F64, requires_grad=True)
    a, lp, u = tanh_gaussian_sample(mean, log_std, generator=_gen(11))
    a2, _, _ = tanh_gaussian_sample(mean, log_std, generator=_gen(11))
    assert torch.equal(a, a2) and a.shape == (4, 2) and lp.shape == (4,)
    assert bool((a.abs() < 1).all())
    torch.testing.assert_close(a, u.tanh())
    torch.testing.assert_close(lp, tanh_gaussian_log_prob(u, mean, log_std))
    (a.sum() + lp.sum()).backward()
    assert mean.grad is not None and log_std.grad is not None and bool((mean.grad != 0).all())
    with pytest.raises(ValueError, match="mean"):
        tanh_gaussian_sample(torch.tensor([[float("nan")]]), torch.zeros(1, 1))


def test_atanh_clipped() -> None:
    a = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=F64)
    out = atanh_clipped(a)
    torch.testing.assert_close(out[1:4], torch.atanh(a[1:4]))
    assert math.isclose(float(out[-1]), math.atanh(0.999)) and float(out[0]) == -float(out[-1])
    torch.testing.assert_close(atanh_clipped(a, eps=0.1).tanh().abs().max(), torch.tensor(0.9, dtype=F64))
    with pytest.raises(ValueError, match="eps"):
        atanh_clipped(a, eps=0.0)
