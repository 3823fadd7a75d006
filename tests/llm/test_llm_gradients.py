"""Gradients that forward tests cannot see.

Every quantity that must be a constant of the update (STEER weights, HAPO's normalised entropy, the
Clip-Cov / KL-Cov covariance selections, the D3S and top-entropy masks, EMPG's terms) carries no
gradient: the loss's gradient equals the gradient of the same formula with that quantity frozen, and
what enters only through it (the entropy) gets no gradient at all. EPO's smoothing term does have a
gradient. RiskPO's weights are the score-function form of the exact gradient of its risk objective.
"""

from __future__ import annotations

import pytest
import torch

from gendiff.llm.advantages import ADVANTAGES, RiskPOConfig
from gendiff.llm.losses import (
    POLICY_LOSSES,
    ClipCovConfig,
    D3SConfig,
    EPOConfig,
    HAPOConfig,
    KLCovConfig,
    SteerConfig,
    TopEntropyConfig,
    agg_loss,
    clip_cov_select,
    d3s_keep_ratio,
    d3s_token_select,
    hapo_clip_bounds,
    hapo_normalized_entropy,
    kl_cov_select,
    ppo_clip_token_loss,
    steer_weights,
    top_entropy_select,
)

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def inputs(seed: int, B: int = 6, T: int = 9):
    g = torch.Generator().manual_seed(seed)
    logp = (-3.0 * torch.rand(B, T, generator=g, dtype=torch.float64)).requires_grad_()
    old = logp.detach() + 0.2 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = 1.5 * torch.randn(B, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) > 0.2
    mask[:, 0] = True
    ent = (2.0 * torch.rand(B, T, generator=g, dtype=torch.float64) + 0.05).requires_grad_()
    return logp, old, adv, mask, ent


def grads(loss, *xs):
    """d loss / d x for each x (zeros where x does not enter the graph)."""
    out = torch.autograd.grad(loss, xs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(out, xs, strict=True)]


def ppo(logp, old, adv, lo=0.8, hi=1.2):
    return ppo_clip_token_loss(torch.exp(logp - old), adv[:, None].expand_as(logp), lo, hi)[0]


def test_steer_weights_are_constants():
    logp, old, adv, mask, ent = inputs(0)
    cfg = SteerConfig()
    w = steer_weights(logp, old, adv[:, None].expand_as(logp), ent, mask, cfg)
    assert not w.requires_grad and float(w.min()) < 1.0  # a real reweighting, not all ones
    loss, _ = POLICY_LOSSES.get("steer")(logp, old, adv, mask, cfg, entropy=ent)
    g_logp, g_ent = grads(loss, logp, ent)
    want = grads(agg_loss(w * ppo(logp, old, adv), mask), logp)[0]
    torch.testing.assert_close(g_logp, want)
    assert torch.equal(g_ent, torch.zeros_like(ent))  # H enters only through w


def test_hapo_normalised_entropy_is_a_constant():
    logp, old, adv, mask, ent = inputs(1)
    h = hapo_normalized_entropy(ent, mask)
    assert not h.requires_grad and float(h.max()) == pytest.approx(1.0) and float(h[mask].min()) == pytest.approx(-1.0)
    cfg = HAPOConfig(adv_scale=1.0)
    loss, _ = POLICY_LOSSES.get("hapo")(logp, old, adv, mask, cfg, entropy=ent)
    g_logp, g_ent = grads(loss, logp, ent)
    assert torch.equal(g_ent, torch.zeros_like(ent))
    lo, hi = hapo_clip_bounds(h, cfg.eps_low, cfg.eps_high)
    from gendiff.llm.losses import hapo_redistribute

    a = hapo_redistribute(adv[:, None].expand_as(logp), h, torch.exp(logp - old), lo, hi, 1.0)
    want = grads(agg_loss(ppo_clip_token_loss(torch.exp(logp - old), a, lo, hi)[0], mask), logp)[0]
    torch.testing.assert_close(g_logp, want)


def test_clip_cov_selection_is_a_constant():
    logp, old, adv, mask, _ = inputs(2)
    cfg = ClipCovConfig(clip_ratio=0.2, cov_lb=-10.0, cov_ub=10.0)
    sel = clip_cov_select(logp, old, adv, mask, cfg, torch.Generator().manual_seed(5))
    assert not sel.requires_grad and int(sel.sum()) > 0
    loss, _ = POLICY_LOSSES.get("clip_cov")(logp, old, adv, mask, cfg, generator=torch.Generator().manual_seed(5))
    want = grads(agg_loss(ppo(logp, old, adv) * (~sel), mask), logp)[0]
    g = grads(loss, logp)[0]
    torch.testing.assert_close(g, want)
    assert torch.equal(g[sel], torch.zeros(int(sel.sum()), dtype=g.dtype))  # the selected tokens: no gradient


def test_kl_cov_selection_is_a_constant():
    logp, old, adv, mask, _ = inputs(3)
    cfg = KLCovConfig(kl_ratio=0.2)
    sel = kl_cov_select(logp, adv, mask, cfg)
    assert not sel.requires_grad and int(sel.sum()) > 1
    loss, _ = POLICY_LOSSES.get("kl_cov")(logp, old, adv, mask, cfg)
    d = logp - old
    want = grads(agg_loss(-adv[:, None] * torch.exp(d) + d.abs() * sel, mask), logp)[0]
    torch.testing.assert_close(grads(loss, logp)[0], want)


@pytest.mark.parametrize("name", ["top_entropy", "d3s_tokens"])
def test_entropy_masks_are_constants(name):
    logp, old, adv, mask, ent = inputs(4)
    if name == "top_entropy":
        keep = top_entropy_select(ent, mask, 0.3)
        loss, _ = POLICY_LOSSES.get(name)(logp, old, adv, mask, TopEntropyConfig(rho=0.3), entropy=ent)
        want = grads(agg_loss(ppo(logp, old, adv) * keep, mask), logp)[0]
    else:
        keep = d3s_token_select(adv[:, None].expand_as(logp), ent, mask, d3s_keep_ratio(0.0, D3SConfig()))
        loss, _ = POLICY_LOSSES.get(name)(logp, old, adv, mask, D3SConfig(), entropy=ent, progress=0.0)
        want = grads(agg_loss(ppo(logp, old, adv), keep), logp)[0]
    assert not keep.requires_grad and 0 < int(keep.sum()) < int(mask.sum())
    g_logp, g_ent = grads(loss, logp, ent)
    torch.testing.assert_close(g_logp, want)
    assert torch.equal(g_ent, torch.zeros_like(ent))


def test_empg_terms_are_constants():
    _, _, _, mask, ent = inputs(5)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    adv, _ = ADVANTAGES.get("empg")(rewards, torch.arange(6) // 3, mask=mask, entropy=ent)
    assert not adv.requires_grad  # g(H) and the future-clarity bonus are detached from the entropy
    assert float(adv[mask].std()) > 0


def test_epo_smoothing_term_has_its_gradient():
    """With the bonus off, d loss / d H_t = smooth_coef * (-1 below the band, +1 above, 0 inside) / N."""
    logp, old, adv, mask, ent = inputs(6)
    cfg = EPOConfig(coef=0.0, smooth_coef=0.3)
    h_bar = 1.0
    loss, m = POLICY_LOSSES.get("epo")(logp, old, adv, mask, cfg, entropy=ent, entropy_history_mean=h_bar)
    g = grads(loss, ent)[0]
    n = int(mask.sum())
    e = ent.detach()
    one = torch.ones_like(e)
    want = torch.where(e < 0.5 * h_bar, -one, torch.where(e > 1.5 * h_bar, one, 0 * one)) * 0.3 / n
    want = torch.where(mask, want, torch.zeros_like(want))
    torch.testing.assert_close(g, want)
    assert int((g != 0).sum()) > 0 and int((g == 0)[mask].sum()) > 0  # both sides of the band occur
    assert m["actor/epo_out_of_band_frac"] == pytest.approx(float((want != 0).sum()) / n)


def _discrete_mvar(p: torch.Tensor, s: torch.Tensor, cfg: RiskPOConfig) -> tuple[torch.Tensor, float, float]:
    """J = CVaR_alpha + omega RVaR_[alpha, beta] of the categorical distribution p over sorted scores s,
    and its quantiles q_alpha, q_beta."""
    cdf = torch.cumsum(p, 0)

    def cvar(u: float) -> torch.Tensor:
        below = torch.cat([torch.zeros(1, dtype=p.dtype), cdf[:-1]])
        mass = torch.clamp(torch.minimum(p, u - below), min=0.0)
        return (mass * s).sum() / u

    def var(u: float) -> float:
        return float(s[int(torch.searchsorted(cdf, torch.tensor(u, dtype=p.dtype)))])

    a, b = cfg.alpha, cfg.beta
    rvar = (b * cvar(b) - a * cvar(a)) / (b - a)
    return cvar(a) + cfg.omega * rvar, var(a), var(b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_riskpo_weights_are_the_gradient_of_its_risk_objective(seed):
    """On a categorical policy softmax(theta) over 6 scored answers: sum_k p_k w_k grad log p_k, with
    RiskPO's weights w at the exact quantiles, equals the central finite difference of J(theta)."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(6, generator=g, dtype=torch.float64)
    s = torch.tensor([0.0, 0.1, 0.3, 0.6, 0.8, 1.0], dtype=torch.float64)
    cfg = RiskPOConfig(alpha=0.25, beta=0.7, omega=1.5)
    p = theta.softmax(0)
    _, q_a, q_b = _discrete_mvar(p, s, cfg)
    w, _ = ADVANTAGES.get("riskpo")(s, torch.arange(6), cfg, quantiles=(q_a, q_b))
    score_fn = (p * w)[:, None] * (torch.eye(6, dtype=torch.float64) - p[None, :])  # p_k w_k d log p_k / d theta
    analytic = score_fn.sum(0)
    fd = torch.zeros(6, dtype=torch.float64)
    for j in range(6):
        e = torch.zeros(6, dtype=torch.float64)
        e[j] = 1e-6
        fd[j] = (_discrete_mvar((theta + e).softmax(0), s, cfg)[0] - _discrete_mvar((theta - e).softmax(0), s, cfg)[0]) / 2e-6
    torch.testing.assert_close(analytic, fd, atol=1e-7, rtol=1e-5)
    assert float(fd.abs().max()) > 1e-3  # a real gradient
