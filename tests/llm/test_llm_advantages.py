"""Every advantage estimator equals a slow, literal reference of its formula."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from gendiff.llm.advantages import ADVANTAGES, RiskPOConfig, empo_rewards, target_temperature

EXPECTED = {"grpo", "dr_grpo", "rloo", "riskpo", "empg", "aepo", "dcpo", "hapo", "empo_reward"}


def data(seed: int, groups: int = 4, n: int = 5, T: int = 7):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 3, (groups * n,), generator=g).double() + 0.1 * torch.rand(groups * n, generator=g)
    perm = torch.randperm(groups * n, generator=g)
    group_ids = (torch.arange(groups * n) // n)[perm] * 7 + 3  # shuffled, non-contiguous ids
    mask = torch.rand(groups * n, T, generator=g) > 0.3
    mask[:, 0] = True
    entropy = 2 * torch.rand(groups * n, T, generator=g, dtype=torch.float64)
    return rewards, group_ids, mask, entropy


def members(group_ids, i):
    return [j for j in range(len(group_ids)) if group_ids[j] == group_ids[i]]


def ref_grpo(r, gid, eps=1e-6):
    out = []
    for i in range(len(r)):
        vals = [float(r[j]) for j in members(gid, i)]
        out.append((float(r[i]) - statistics.mean(vals)) / (statistics.stdev(vals) + eps) if len(vals) > 1 else 0.0)
    return out


def test_registry_has_every_estimator():
    assert set(ADVANTAGES.names()) == EXPECTED


def test_grpo_dr_grpo_rloo_match_reference():
    r, gid, _, _ = data(0)
    gid = torch.cat([gid, torch.tensor([999])])  # a size-1 group gets 0
    r = torch.cat([r, torch.tensor([1.0], dtype=torch.float64)])
    torch.testing.assert_close(ADVANTAGES.get("grpo")(r, gid)[0], torch.tensor(ref_grpo(r, gid), dtype=r.dtype))
    dr, rloo = [], []
    for i in range(len(r)):
        vals = [float(r[j]) for j in members(gid, i)]
        others = [float(r[j]) for j in members(gid, i) if j != i]
        dr.append(float(r[i]) - statistics.mean(vals) if len(vals) > 1 else 0.0)
        rloo.append(float(r[i]) - statistics.mean(others) if others else 0.0)
    torch.testing.assert_close(ADVANTAGES.get("dr_grpo")(r, gid)[0], torch.tensor(dr, dtype=r.dtype))
    torch.testing.assert_close(ADVANTAGES.get("rloo")(r, gid)[0], torch.tensor(rloo, dtype=r.dtype))


@pytest.mark.parametrize("bundle,quantiles", [(1, None), (2, None), (2, (0.5, 1.5))])
def test_riskpo_matches_reference(bundle, quantiles):
    r, gid, _, _ = data(1)
    cfg = RiskPOConfig(bundle_size=bundle)
    adv, m = ADVANTAGES.get("riskpo")(r, gid, cfg, quantiles=quantiles)
    ids = sorted(set(gid.tolist()))
    rows = {g: [j for j in range(len(r)) if gid[j] == g] for g in ids}  # appearance order
    scores = {}
    for b in range(len(ids) // bundle):
        qs = ids[b * bundle:(b + 1) * bundle]
        for k in range(len(rows[qs[0]])):
            scores[(b, k)] = sum(float(r[rows[q][k]]) for q in qs) / bundle
    if quantiles is None:
        v = sorted(scores.values())

        def quant(q):
            pos = (len(v) - 1) * q
            lo, hi = math.floor(pos), math.ceil(pos)
            return v[lo] + (v[hi] - v[lo]) * (pos - lo)

        qa, qb = quant(0.2), quant(0.8)
    else:
        qa, qb = quantiles
    assert (m["riskpo/q_alpha"], m["riskpo/q_beta"]) == pytest.approx((qa, qb))
    for (b, k), s in scores.items():
        low = (s - qa) if s <= qa else 0.0
        mid = ((s - qb) if s <= qb else 0.0) - low
        w = low / 0.2 + 1.5 * mid / 0.6
        for q in ids[b * bundle:(b + 1) * bundle]:
            assert float(adv[rows[q][k]]) == pytest.approx(w)


def test_empg_matches_reference():
    r, gid, mask, ent = data(2)
    cfg_k, zeta = 1.0, 0.1
    adv, _ = ADVANTAGES.get("empg")(r, gid, mask=mask, entropy=ent)
    base = ref_grpo(r, gid)
    cells = [(i, t) for i in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[i, t]]
    lo, hi = min(float(ent[c]) for c in cells), max(float(ent[c]) for c in cells)
    hn = {c: (float(ent[c]) - lo) / (hi - lo) for c in cells}
    mean_e = sum(math.exp(-cfg_k * hn[c]) for c in cells) / len(cells)
    for i, t in cells:
        nxt = [s for s in range(t + 1, mask.shape[1]) if mask[i, s]]
        bonus = zeta * math.exp(-cfg_k * hn[(i, nxt[0])]) if nxt else 0.0
        want = math.exp(-cfg_k * hn[(i, t)]) / mean_e * base[i] + bonus
        assert float(adv[i, t]) == pytest.approx(want, rel=1e-6, abs=1e-9)
    assert (adv[~mask] == 0).all()


def test_aepo_matches_reference():
    r, gid, _, _ = data(3)
    reg = torch.zeros_like(r, dtype=torch.bool)
    reg[::4] = True
    adv, _ = ADVANTAGES.get("aepo")(r, gid, is_regularizer=reg)
    keep = [i for i in range(len(r)) if not reg[i]]
    base = ref_grpo(r[keep], gid[keep])
    for n, i in enumerate(keep):
        assert float(adv[i]) == pytest.approx(base[n])
    for i in range(len(r)):
        if reg[i]:
            assert float(adv[i]) == pytest.approx(float(r[i]))
    assert target_temperature(0.3, 0.5) == 1.2 and target_temperature(0.7, 0.5) == 0.8


def test_dcpo_matches_reference():
    r, gid, mask, _ = data(4)
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(mask.shape, generator=g, dtype=torch.float64)
    logp_t = logp + 0.2 * torch.randn(mask.shape, generator=g, dtype=torch.float64)
    adv, _ = ADVANTAGES.get("dcpo")(r, gid, mask=mask, logp=logp, logp_target=logp_t)
    base = ref_grpo(r, gid)
    for i in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            want = base[i] + 0.1 * (math.exp(float(logp_t[i, t]) - float(logp[i, t])) - 1) if mask[i, t] else 0.0
            assert float(adv[i, t]) == pytest.approx(want, abs=1e-9)


def test_hapo_token_level_group_average_matches_reference():
    r, gid, mask, _ = data(5)
    adv, _ = ADVANTAGES.get("hapo")(r, gid, mask=mask)
    for i in range(len(r)):
        toks = [float(r[j]) for j in members(gid, i) for _ in range(int(mask[j].sum()))]
        mu = sum(toks) / len(toks)
        sd = math.sqrt(sum((x - mu) ** 2 for x in toks) / len(toks))
        assert float(adv[i]) == pytest.approx((float(r[i]) - mu) / (sd + 1e-6))


def test_hapo_falls_back_to_grpo_on_extreme_groups():
    """The authors' smooth score: one correct answer in 32 gives |A| = 5.6 >= 5 -> GRPO advantages."""
    r = torch.tensor([1.0] + [0.0] * 31 + [1.0, 0.0] * 16)
    gid, mask = torch.arange(64) // 32, torch.ones(64, 3, dtype=torch.bool)
    adv, m = ADVANTAGES.get("hapo")(r, gid, mask=mask)
    grpo = ref_grpo(r, gid)
    assert m["hapo/fallback_groups"] == 1.0
    assert [float(x) for x in adv[:32]] == pytest.approx(grpo[:32])
    assert [float(x) for x in adv[32:]] == pytest.approx([1.0, -1.0] * 16, abs=1e-5)  # biased std, no fallback


def test_empo_reward_matches_reference():
    gid = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    clusters = torch.tensor([5, 5, 6, 5, 5, 7, 7])
    want = [3 / 4, 3 / 4, 1 / 4, 3 / 4, 1 / 3, 2 / 3, 2 / 3]
    torch.testing.assert_close(empo_rewards(clusters, gid), torch.tensor(want, dtype=torch.float64))
    adv, m = ADVANTAGES.get("empo_reward")(None, gid, cluster_ids=clusters)
    torch.testing.assert_close(adv, torch.tensor(ref_grpo(torch.tensor(want), gid), dtype=torch.float64))


def test_bad_inputs_raise_clear_errors():
    r, gid, mask, ent = data(6)
    bad = r.clone()
    bad[3] = float("nan")
    for name in ["grpo", "dr_grpo", "rloo", "riskpo", "aepo"]:
        with pytest.raises(ValueError, match="NaN"):
            ADVANTAGES.get(name)(bad, gid, is_regularizer=torch.zeros_like(r, dtype=torch.bool))
        with pytest.raises(ValueError, match="group_ids must be"):
            ADVANTAGES.get(name)(r, gid[:-1], is_regularizer=torch.zeros_like(r, dtype=torch.bool))
    with pytest.raises(TypeError, match="integer"):
        ADVANTAGES.get("grpo")(r, gid.double())
    with pytest.raises(ValueError, match="equal group sizes"):
        ADVANTAGES.get("riskpo")(r[:-1], gid[:-1])
    with pytest.raises(ValueError, match="needs entropy"):
        ADVANTAGES.get("empg")(r, gid, mask=mask)
    with pytest.raises(ValueError, match="mask is empty"):
        ADVANTAGES.get("empg")(r, gid, mask=torch.zeros_like(mask), entropy=ent)
    with pytest.raises(ValueError, match="entropy must be"):
        ADVANTAGES.get("empg")(r, gid, mask=mask, entropy=ent[:, :-1])
    with pytest.raises(TypeError, match="unknown extras"):
        ADVANTAGES.get("grpo")(r, gid, maks=mask)
    with pytest.raises(ValueError, match="is_regularizer"):
        ADVANTAGES.get("aepo")(r, gid)
