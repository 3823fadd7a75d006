"""Every policy loss equals a slow, literal (loop over tokens) reference of its formula."""

from __future__ import annotations

import math

import pytest
import torch

from gendiff.llm.losses import (
    AGG_MODES,
    POLICY_LOSSES,
    BAPOConfig,
    ClipCovConfig,
    D3SConfig,
    EntropyBonusConfig,
    EPOConfig,
    GRPOLossConfig,
    HAPOConfig,
    KLCovConfig,
    SteerConfig,
    TopEntropyConfig,
    agg_loss,
    clip_cov_select,
    kl_cov_select,
)

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

EXPECTED = {"grpo", "clip_cov", "kl_cov", "entropy_bonus", "top_entropy", "steer", "hapo", "bapo", "epo",
            "d3s_tokens", "ebpo"}


def batch(seed: int, B: int = 5, T: int = 8, token_adv: bool = False, empty_row: bool = True):
    g = torch.Generator().manual_seed(seed)
    logp = -3.0 * torch.rand(B, T, generator=g, dtype=torch.float64)
    old = logp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = 2.0 * torch.randn((B, T) if token_adv else (B,), generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) > 0.25
    mask[0, 0] = True
    if empty_row:
        mask[-1] = False
    ent = 2.0 * torch.rand(B, T, generator=g, dtype=torch.float64) + 0.01
    logp[~mask] = float("nan")  # padding garbage must not leak
    return logp.requires_grad_(), old, adv, mask, ent.requires_grad_()


# ----------------------------------------------------------------------------- literal references
def cells(mask):
    return [(i, t) for i in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[i, t]]


def A(adv, i, t):
    return float(adv[i, t]) if adv.dim() == 2 else float(adv[i])


def ref_cov(logp, adv, mask):
    c = cells(mask)
    ma = sum(A(adv, i, t) for i, t in c) / len(c)
    ml = sum(float(logp[i, t]) for i, t in c) / len(c)
    return {(i, t): (A(adv, i, t) - ma) * (float(logp[i, t]) - ml) for i, t in c}


def ref_ppo(r, a, lo, hi):
    return max(-a * r, -a * min(max(r, lo), hi))


def ref_agg(vals, mask, mode, norm_len=None):
    """vals: dict (i, t) -> loss over the aggregated cells; mask: which cells count."""
    c = cells(mask)
    if mode == "token-mean":
        return sum(vals[k] for k in c) / len(c)
    rows = sorted({i for i, _ in c})
    per = []
    for i in rows:
        s = sum(vals[(j, t)] for j, t in c if j == i)
        n = sum(1 for j, _ in c if j == i)
        per.append(s / n if mode == "seq-mean-token-mean" else s if mode == "seq-mean-token-sum"
                   else s / (norm_len or mask.shape[1]))
    return sum(per) / len(per)


def ratio(logp, old, i, t):
    return math.exp(float(logp[i, t]) - float(old[i, t]))


def ref_quantile(values, q):
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def close(x, y):
    assert float(x) == pytest.approx(y, rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------- registry and agg
def test_registry_has_every_loss():
    assert set(POLICY_LOSSES.names()) == EXPECTED
    with pytest.raises(KeyError, match="valid names"):
        POLICY_LOSSES.get("ppo_typo")


@pytest.mark.parametrize("mode", AGG_MODES)
def test_agg_loss_matches_reference(mode):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 6, generator=g) > 0.3
    mask[0, 0], mask[2] = True, False
    x[~mask] = float("nan")
    vals = {(i, t): float(x[i, t]) for i, t in cells(mask)}
    close(agg_loss(x, mask, mode), ref_agg(vals, mask, mode))
    if mode == "seq-mean-token-sum-norm":
        close(agg_loss(x, mask, mode, norm_len=32), ref_agg(vals, mask, mode, 32))


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("token_adv", [False, True])
def test_grpo_matches_reference(mode, token_adv):
    logp, old, adv, mask, _ = batch(2, token_adv=token_adv)
    cfg = GRPOLossConfig(eps_low=0.2, eps_high=0.28, loss_agg_mode=mode)
    loss, metrics = POLICY_LOSSES.get("grpo")(logp, old, adv, mask, cfg)
    vals = {(i, t): ref_ppo(ratio(logp, old, i, t), A(adv, i, t), 0.8, 1.28) for i, t in cells(mask)}
    close(loss, ref_agg(vals, mask, mode))
    loss.backward()
    assert torch.isfinite(logp.grad).all() and (logp.grad[~mask] == 0).all()
    assert {"loss/policy", "actor/clipfrac", "actor/ppo_kl", "actor/cov_mean"} <= set(metrics)


# ----------------------------------------------------------------------------- Clip-Cov / KL-Cov
def ref_clip_cov(logp, old, adv, mask, cfg, seed):
    cov = ref_cov(logp, adv, mask)
    cand = []
    for i, t in cells(mask):  # row-major, like torch.nonzero
        r, a = ratio(logp, old, i, t), A(adv, i, t)
        already = -a * min(max(r, 1 - cfg.eps_low), 1 + cfg.eps_high) > -a * r
        if cfg.cov_lb < cov[(i, t)] < cfg.cov_ub and not already:
            cand.append((i, t))
    n = max(1, int(cfg.clip_ratio * len(cells(mask))))
    perm = torch.randperm(len(cand), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen = {cand[p] for p in perm[:n]}
    vals = {(i, t): 0.0 if (i, t) in chosen else
            ref_ppo(ratio(logp, old, i, t), A(adv, i, t), 1 - cfg.eps_low, 1 + cfg.eps_high) for i, t in cells(mask)}
    return chosen, ref_agg(vals, mask, cfg.loss_agg_mode)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clip_cov_matches_reference_including_selected_set(seed):
    logp, old, adv, mask, _ = batch(10 + seed, B=6, T=10, token_adv=True)
    cfg = ClipCovConfig(clip_ratio=0.1, cov_lb=0.3, cov_ub=5.0)
    chosen, ref = ref_clip_cov(logp, old, adv, mask, cfg, seed)
    assert len(chosen) >= 2  # the test exercises a real selection
    sel = clip_cov_select(logp, old, adv, mask, cfg, torch.Generator().manual_seed(seed))
    assert {tuple(x) for x in torch.nonzero(sel).tolist()} == chosen
    loss, metrics = POLICY_LOSSES.get("clip_cov")(logp, old, adv, mask, cfg,
                                                  generator=torch.Generator().manual_seed(seed))
    close(loss, ref)
    assert metrics["actor/clip_cov_count"] == len(chosen)
    loss.backward()
    assert (logp.grad[sel] == 0).all() and torch.isfinite(logp.grad).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_kl_cov_matches_reference_including_topk(seed):
    logp, old, adv, mask, _ = batch(20 + seed, B=6, T=10)
    cfg = KLCovConfig(kl_ratio=0.1, kl_coef=0.7, loss_agg_mode="seq-mean-token-mean")
    cov = ref_cov(logp, adv, mask)
    k = max(1, int(0.1 * len(cov)))
    top = set(sorted(cov, key=lambda c: cov[c], reverse=True)[:k])
    assert {tuple(x) for x in torch.nonzero(kl_cov_select(logp, adv, mask, cfg)).tolist()} == top
    vals = {(i, t): -A(adv, i, t) * ratio(logp, old, i, t)
            + (0.7 * abs(float(logp[i, t]) - float(old[i, t])) if (i, t) in top else 0.0) for i, t in cells(mask)}
    loss, metrics = POLICY_LOSSES.get("kl_cov")(logp, old, adv, mask, cfg)
    close(loss, ref_agg(vals, mask, cfg.loss_agg_mode))
    assert metrics["actor/kl_cov_count"] == k


def test_kl_cov_kl_gradient_vanishes_on_policy():
    """With old_logp == logp, KL-Cov's gradient is that of the unclipped -A r objective."""
    logp, _, adv, mask, _ = batch(30, B=6, T=10)
    old = logp.detach().clone()

    def grad(coef, old_logp):
        x = logp.detach().clone().requires_grad_()
        loss, _ = POLICY_LOSSES.get("kl_cov")(x, old_logp, adv, mask, KLCovConfig(kl_ratio=0.2, kl_coef=coef))
        (g,) = torch.autograd.grad(loss, x)
        return g

    g_on = grad(1.0, old)
    torch.testing.assert_close(g_on, grad(0.0, old), rtol=0, atol=0)
    x = logp.detach().clone().requires_grad_()
    pg = -(adv[:, None] * torch.exp(x - old))[mask].sum() / mask.sum()
    (g_pg,) = torch.autograd.grad(pg, x)
    torch.testing.assert_close(g_on, torch.where(mask, g_pg, 0.0))
    off = old + 0.1  # off-policy: the KL part acts
    assert not torch.equal(grad(1.0, off), grad(0.0, off))


# ----------------------------------------------------------------------------- entropy-based losses
@pytest.mark.parametrize("target", [None, 0.5, 5.0])
def test_entropy_bonus_matches_reference(target):
    logp, old, adv, mask, ent = batch(40)
    cfg = EntropyBonusConfig(coef=0.01, target_entropy=target, coef_step=0.002)
    loss, metrics = POLICY_LOSSES.get("entropy_bonus")(logp, old, adv, mask, cfg, entropy=ent, entropy_coef=0.004)
    c = cells(mask)
    pg = ref_agg({k: ref_ppo(ratio(logp, old, *k), A(adv, *k), 0.8, 1.2) for k in c}, mask, "token-mean")
    h = sum(float(ent[k]) for k in c) / len(c)
    if target is None:
        coef, nxt = 0.004, 0.004
    else:
        coef = 0.004 if h < target else 0.0
        nxt = 0.006 if h < target else 0.002
    close(loss, pg - coef * h)
    assert metrics["actor/entropy_coef_next"] == pytest.approx(nxt)
    loss.backward()
    assert (ent.grad[mask] != 0).all() == (coef > 0)


def test_top_entropy_matches_reference():
    logp, old, adv, mask, ent = batch(50, B=6, T=10)
    loss, m = POLICY_LOSSES.get("top_entropy")(logp, old, adv, mask, TopEntropyConfig(rho=0.2), entropy=ent)
    c = cells(mask)
    tau = ref_quantile([float(ent[k]) for k in c], 0.8)
    vals = {k: ref_ppo(ratio(logp, old, *k), A(adv, *k), 0.8, 1.2) if float(ent[k]) >= tau else 0.0 for k in c}
    close(loss, ref_agg(vals, mask, "token-mean"))
    assert m["actor/top_entropy_frac"] == pytest.approx(sum(float(ent[k]) >= tau for k in c) / len(c))


def test_steer_matches_reference():
    logp, old, adv, mask, ent = batch(60, token_adv=True)
    loss, m = POLICY_LOSSES.get("steer")(logp, old, adv, mask, SteerConfig(), entropy=ent)
    c = cells(mask)
    omega = {}
    for k in c:
        pi, pi_old = math.exp(float(logp[k])), math.exp(float(old[k]))
        omega[k] = A(adv, *k) / pi_old * pi * (1 - pi) * (float(logp[k]) + float(ent[k]))
    kk = -math.log(0.8) / max(max(abs(v) for v in omega.values()), 0.02)
    w = {k: min(max(math.exp(-kk * abs(omega[k])), 0.8), 1.0) for k in c}
    vals = {k: w[k] * ref_ppo(ratio(logp, old, *k), A(adv, *k), 0.8, 1.2) for k in c}
    close(loss, ref_agg(vals, mask, "token-mean"))
    assert m["actor/steer_weight_min"] == pytest.approx(0.8)  # the largest |Omega| gets w_min


def ref_ada_clip(eps_low: float, eps_high: float, h: float) -> tuple[float, float]:
    """A literal per-token transcription of the HAPO authors' ``ada_clip`` (clip_alpha = 1): the
    eps ranges of one token with normalised entropy h."""
    low, high = eps_low, eps_high
    low_ent, high_ent = eps_low * (1 - h), eps_high * (1 + h)
    if h <= 0:  # low_entropy_mask
        low = low_ent
    if h > 0:  # high_entropy_mask
        high = high_ent
    return low, high


def ref_ada_advantage(a: float, h: float, r: float, eps_low: float, eps_high: float, beta: float) -> float:
    """Literal per-token ``ada_advantage`` of the HAPO authors (eps_* are this token's ranges)."""
    a_ent = a * (1 + beta * h)
    neutral = 1.0 - eps_low / 2 < r < 1.0 + eps_high / 2
    if h > 0:
        return a if neutral else a_ent
    return a_ent if neutral else a


def ref_hapo_h(ent, mask, q=0.8, eps=1e-8):
    """h of every valid cell: log H about the nearest-rank q quantile, over the RMS about it, each side
    scaled to [-1, 1]."""
    c = cells(mask)
    lh = {k: math.log(max(float(ent[k]), eps)) for k in c}
    v = sorted(lh.values())
    pivot = v[round(q * (len(v) - 1))]
    spread = math.sqrt(sum((x - pivot) ** 2 for x in v) / len(v))
    z = {k: (lh[k] - pivot) / spread for k in c}
    zmax, zmin = max(z.values()), min(z.values())
    return {k: z[k] / zmax if z[k] > 0 else z[k] / abs(zmin) for k in c}


@pytest.mark.parametrize("adv_scale", [0.0, 1.0])
def test_hapo_matches_reference(adv_scale):
    logp, old, adv, mask, ent = batch(70, B=6, T=10)
    cfg = HAPOConfig(adv_scale=adv_scale, eps_low=0.2, eps_high=0.28)
    loss, m = POLICY_LOSSES.get("hapo")(logp, old, adv, mask, cfg, entropy=ent)
    c = cells(mask)
    h = ref_hapo_h(ent, mask)
    vals = {}
    for k in c:
        lo, hi = ref_ada_clip(0.2, 0.28, h[k])
        r = ratio(logp, old, *k)
        a = ref_ada_advantage(A(adv, *k), h[k], r, lo, hi, adv_scale) if adv_scale else A(adv, *k)
        vals[k] = ref_ppo(r, a, 1 - lo, 1 + hi)
    close(loss, ref_agg(vals, mask, "token-mean"))
    assert m["actor/hapo_h_mean"] == pytest.approx(sum(h.values()) / len(c))


def test_hapo_clip_bounds_follow_the_reference_rule():
    """Per token, as the authors' ada_clip: h <= 0 widens only the lower bound to eps_low (1 - h), h > 0
    only the upper bound to eps_high (1 + h); the other bound keeps its eps."""
    from gendiff.llm.losses import hapo_clip_bounds

    hs = [-1.0, -0.7, -0.2, 0.0, 1e-9, 0.3, 0.8, 1.0]
    low, high = hapo_clip_bounds(torch.tensor([hs], dtype=torch.float64), 0.2, 0.28)
    for j, h in enumerate(hs):
        lo, hi = ref_ada_clip(0.2, 0.28, h)
        assert float(low[0, j]) == pytest.approx(1 - lo) and float(high[0, j]) == pytest.approx(1 + hi)
        if h <= 0:
            assert float(high[0, j]) == pytest.approx(1.28)  # the upper bound stays
        else:
            assert float(low[0, j]) == pytest.approx(0.8)  # the lower bound stays
    assert float(low[0, 0]) == pytest.approx(0.6) and float(high[0, -1]) == pytest.approx(1.56)  # widest
    assert bool((high - low > 0.47).all())  # never narrowed: both ranges keep at least their eps


def test_bapo_matches_reference():
    logp, old, adv, mask, _ = batch(80, B=6, T=10, token_adv=True)
    adv = adv - 1.5  # mostly negative advantages: the bounds must move
    cfg = BAPOConfig()
    loss, m = POLICY_LOSSES.get("bapo")(logp, old, adv, mask, cfg)
    c = cells(mask)

    def share(lo, hi):
        pos = tot = 0.0
        for k in c:
            r, a = ratio(logp, old, *k), A(adv, *k)
            if (a > 0 and r < hi) or (a < 0 and r > lo):
                tot += abs(a * r)
                pos += abs(a * r) if a > 0 else 0.0
        return 1.0 if tot == 0 else pos / tot

    i_lo = i_hi = 0
    while share(0.6 + 0.05 * i_lo, 1.2 + 0.05 * i_hi) < 0.5:
        if i_lo < 6:
            i_lo += 1
        elif i_hi < 36:
            i_hi += 1
        else:
            break
    lo, hi = 0.6 + 0.05 * i_lo, 1.2 + 0.05 * i_hi
    assert (i_lo, i_hi) != (0, 0)
    assert (m["actor/bapo_c_low"], m["actor/bapo_c_high"]) == pytest.approx((lo, hi))
    close(loss, ref_agg({k: ref_ppo(ratio(logp, old, *k), A(adv, *k), lo, hi) for k in c}, mask, "token-mean"))


@pytest.mark.parametrize("progress,hist", [(0.2, None), (0.75, 0.6)])
def test_epo_matches_reference(progress, hist):
    logp, old, adv, mask, ent = batch(90)
    cfg = EPOConfig(coef=0.01, smooth_coef=0.2)
    loss, _ = POLICY_LOSSES.get("epo")(logp, old, adv, mask, cfg, entropy=ent, entropy_history_mean=hist,
                                       progress=progress)
    c = cells(mask)
    pg = ref_agg({k: ref_ppo(ratio(logp, old, *k), A(adv, *k), 0.8, 1.2) for k in c}, mask, "token-mean")
    hbar = sum(float(ent[k]) for k in c) / len(c) if hist is None else hist
    beta = 0.01 if progress < 0.5 else 0.01 * (1 - progress) / 0.5
    smooth = {k: max(0.5 * hbar - float(ent[k]), 0) + max(float(ent[k]) - 1.5 * hbar, 0) for k in c}
    close(loss, pg - beta * sum(float(ent[k]) for k in c) / len(c) + 0.2 * ref_agg(smooth, mask, "token-mean"))


@pytest.mark.parametrize("progress", [0.0, 0.5])
def test_d3s_tokens_matches_reference(progress):
    logp, old, adv, mask, ent = batch(100, B=6, T=10, token_adv=True)
    loss, m = POLICY_LOSSES.get("d3s_tokens")(logp, old, adv, mask, D3SConfig(keep_start=0.3), entropy=ent,
                                              progress=progress)
    c = cells(mask)
    keep = 0.3 + 0.7 * progress
    k = max(1, math.ceil(keep * len(c)))
    kept = set(sorted(c, key=lambda x: abs(A(adv, *x)) * float(ent[x]), reverse=True)[:k])
    kept_mask = torch.zeros_like(mask)
    for x in kept:
        kept_mask[x] = True
    close(loss, ref_agg({x: ref_ppo(ratio(logp, old, *x), A(adv, *x), 0.8, 1.2) for x in kept}, kept_mask,
                        "token-mean"))
    assert m["actor/d3s_kept_tokens"] == k


def test_d3s_sample_selection_maximises_variance():
    from itertools import combinations

    from gendiff.llm.losses import d3s_select_samples

    g = torch.Generator().manual_seed(3)
    adv = torch.randn(12, generator=g, dtype=torch.float64)
    groups = torch.arange(12) // 6
    keep = d3s_select_samples(adv, groups, 3)
    for grp in range(2):
        idx = list(range(grp * 6, grp * 6 + 6))
        best = max(torch.tensor([adv[i] for i in s]).var(unbiased=False).item() for s in combinations(idx, 3))
        got = adv[[i for i in idx if keep[i]]].var(unbiased=False).item()
        assert got == pytest.approx(best)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_inputs_raise_clear_errors(name):
    fn = POLICY_LOSSES.get(name)
    logp, old, adv, mask, ent = batch(5)
    with pytest.raises(ValueError, match="old_logp must have the shape"):
        fn(logp, old[:, :-1], adv, mask, entropy=ent)
    with pytest.raises(ValueError, match="advantages must be"):
        fn(logp, old, adv[:-1], mask, entropy=ent)
    bad = adv.clone()
    bad[0] = float("nan")
    with pytest.raises(ValueError, match="advantages holds NaN"):
        fn(logp, old, bad, mask, entropy=ent)
    with pytest.raises(ValueError, match="mask is empty"):
        fn(logp, old, adv, torch.zeros_like(mask), entropy=ent)
    with pytest.raises(ValueError, match="only 0 and 1"):
        fn(logp, old, adv, mask.double() * 2, entropy=ent)
    with pytest.raises(TypeError, match="unknown extras"):
        fn(logp, old, adv, mask, entropy=ent, entropyy=ent)
    with pytest.raises(TypeError, match="needs a"):
        fn(logp, old, adv, mask, object(), entropy=ent)


@pytest.mark.parametrize("name", ["entropy_bonus", "top_entropy", "steer", "hapo", "epo", "d3s_tokens"])
def test_entropy_losses_require_entropy(name):
    logp, old, adv, mask, _ = batch(6)
    with pytest.raises(ValueError, match="needs entropy"):
        POLICY_LOSSES.get(name)(logp, old, adv, mask)


def test_k3_kl_is_the_literal_estimator():
    from gendiff.llm.losses import k3_kl

    g = torch.Generator().manual_seed(0)
    logp, ref = -torch.rand(3, 5, generator=g, dtype=torch.float64), -torch.rand(3, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    got = k3_kl(ref, logp, mask)
    for b in range(3):
        for t in range(5):
            d = float(ref[b, t] - logp[b, t])
            want = math.exp(d) - d - 1 if mask[b, t] else 0.0
            assert abs(float(got[b, t]) - want) < 1e-12
    assert bool((got >= 0).all())  # exp(d) - d - 1 >= 0: an unbiased, non-negative estimate
