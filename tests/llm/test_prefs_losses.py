"""Every preference loss equals a literal float64 per-example reference of its formula; bad input is named."""

from __future__ import annotations

import math

import pytest
import torch

from gendiff.llm.prefs import (
    PREFERENCE_LOSSES,
    ADPOConfig,
    ADPOListwiseConfig,
    DPOConfig,
    adpo_listwise_loss,
    adpo_loss,
    dpo_loss,
)

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def pairs(seed: int, P: int = 6):
    g = torch.Generator().manual_seed(seed)
    logp = (-8.0 * torch.rand(P, 2, generator=g, dtype=torch.float64)).requires_grad_()
    ref = logp.detach() + 0.7 * torch.randn(P, 2, generator=g, dtype=torch.float64)
    return logp, ref


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def ref_kl(q: list[float], s: list[float]) -> float:
    """KL(q || softmax(s)) written out, 0 log 0 = 0."""
    z = math.log(sum(math.exp(v) for v in s))
    return sum(qk * (math.log(qk) - (sk - z)) for qk, sk in zip(q, s, strict=True) if qk > 0)


def test_registry_holds_the_preference_losses_apart_from_the_rl_losses():
    from gendiff.llm.losses import POLICY_LOSSES

    assert set(PREFERENCE_LOSSES.names()) == {"dpo", "adpo", "adpo_listwise", "cpl"}
    assert not set(PREFERENCE_LOSSES.names()) & set(POLICY_LOSSES.names())
    assert PREFERENCE_LOSSES.get("adpo_listwise").kind == "listwise" and PREFERENCE_LOSSES.get("dpo").kind == "pairwise"
    with pytest.raises(KeyError, match="valid names: adpo, adpo_listwise, cpl, dpo"):
        PREFERENCE_LOSSES.get("ipo")


@pytest.mark.parametrize("beta", [0.1, 1.0, 3.0])
def test_dpo_matches_reference(beta):
    logp, ref = pairs(0)
    loss, metrics = dpo_loss(logp, ref, DPOConfig(beta=beta))
    per = []
    for p in range(logp.shape[0]):
        h = (float(logp[p, 0]) - float(ref[p, 0])) - (float(logp[p, 1]) - float(ref[p, 1]))
        per.append(-log_sigmoid(beta * h))
    assert loss.item() == pytest.approx(sum(per) / len(per), abs=1e-12)
    assert metrics["prefs/accuracy"] == pytest.approx(sum(x < math.log(2) for x in per) / len(per))


@pytest.mark.parametrize("tau,eps", [(1.0, 0.1), (0.5, 0.0), (4.0, 0.3)])
def test_adpo_pairwise_matches_reference(tau, eps):
    logp, ref = pairs(1)
    loss, _ = adpo_loss(logp, ref, ADPOConfig(tau_anc=tau, label_smoothing=eps))
    per = []
    for p in range(logp.shape[0]):
        s = [(float(logp[p, k]) - float(ref[p, k])) / tau for k in range(2)]
        per.append(ref_kl([1 - eps, eps], s))
    assert loss.item() == pytest.approx(sum(per) / len(per), abs=1e-12)


def test_adpo_with_hard_labels_is_dpo_with_beta_one_over_tau():
    logp, ref = pairs(2)
    a, _ = adpo_loss(logp, ref, ADPOConfig(tau_anc=0.25, label_smoothing=0.0))
    d, _ = dpo_loss(logp, ref, DPOConfig(beta=4.0))
    ga, = torch.autograd.grad(a, logp)
    gd, = torch.autograd.grad(d, logp)
    assert a.item() == pytest.approx(d.item(), abs=1e-12) and torch.allclose(ga, gd, atol=1e-12)


@pytest.mark.parametrize("tau,tau_q", [(1.0, 0.25), (2.0, 1.0)])
def test_adpo_listwise_matches_reference_with_ragged_lists(tau, tau_q):
    g = torch.Generator().manual_seed(3)
    P, K = 5, 4
    logp = (-6.0 * torch.rand(P, K, generator=g, dtype=torch.float64)).requires_grad_()
    ref = logp.detach() + 0.5 * torch.randn(P, K, generator=g, dtype=torch.float64)
    rewards = torch.randint(0, 3, (P, K), generator=g).double() / 2
    mask = torch.ones(P, K, dtype=torch.bool)
    mask[1, 3] = mask[3, 2:] = False
    bad = logp.detach().clone()
    bad[~mask] = float("nan")  # padding garbage must not leak
    logp_in = logp + torch.where(mask, torch.zeros_like(bad), bad)
    loss, metrics = adpo_listwise_loss(logp_in, ref, ADPOListwiseConfig(tau_anc=tau, reward_temperature=tau_q),
                                       rewards=rewards, mask=mask)
    per = []
    for p in range(P):
        ks = [k for k in range(K) if mask[p, k]]
        z = sum(math.exp(float(rewards[p, k]) / tau_q) for k in ks)
        q = [math.exp(float(rewards[p, k]) / tau_q) / z for k in ks]
        s = [(float(logp[p, k]) - float(ref[p, k])) / tau for k in ks]
        per.append(ref_kl(q, s))
    assert loss.item() == pytest.approx(sum(per) / P, abs=1e-12)
    grad, = torch.autograd.grad(loss, logp)
    assert torch.isfinite(grad).all() and (grad[~mask] == 0).all()
    assert 0.0 <= metrics["prefs/top1"] <= 1.0


def test_the_update_raises_the_chosen_over_the_rejected():
    """d loss / d logp is negative on the chosen and positive on the rejected, for every loss."""
    logp, ref = pairs(4)
    for name in ("dpo", "adpo"):
        loss, _ = PREFERENCE_LOSSES.get(name)(logp, ref)
        grad, = torch.autograd.grad(loss, logp)
        assert (grad[:, 0] < 0).all() and (grad[:, 1] > 0).all(), name
    rewards = torch.tensor([[1.0, 0.0]] * logp.shape[0], dtype=torch.float64)
    loss, _ = adpo_listwise_loss(logp, ref, rewards=rewards)
    grad, = torch.autograd.grad(loss, logp)
    assert (grad[:, 0] < 0).all() and (grad[:, 1] > 0).all()


@pytest.mark.parametrize("name", ["dpo", "adpo", "adpo_listwise"])
def test_bad_inputs_raise_clear_errors(name):
    fn = PREFERENCE_LOSSES.get(name)
    logp, ref = pairs(5)
    kw = {"rewards": torch.tensor([[1.0, 0.0]] * 6, dtype=torch.float64)} if name == "adpo_listwise" else {}
    with pytest.raises(ValueError, match="must have the shape of logp"):
        fn(logp, ref[:3], **kw)
    with pytest.raises(ValueError, match=r"\[P, 2\]|\[P, K\]"):
        fn(logp[:, 0], ref[:, 0], **kw)
    nan = logp.detach().clone()
    nan[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        fn(nan, ref, **kw)
    with pytest.raises(TypeError, match="needs a"):
        fn(logp, ref, object(), **kw)
    if name == "adpo_listwise":
        with pytest.raises(ValueError, match="needs rewards"):
            fn(logp, ref)
        with pytest.raises(ValueError, match="at least two valid candidates"):
            fn(logp, ref, rewards=kw["rewards"], mask=torch.tensor([[1, 0]] + [[1, 1]] * 5))
    else:
        with pytest.raises(ValueError, match=r"\[P, 2\]"):
            fn(torch.zeros(4, 3), torch.zeros(4, 3))


def test_configs_reject_bad_values():
    with pytest.raises(ValueError, match="beta must be positive"):
        DPOConfig(beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        ADPOConfig(label_smoothing=0.5)
    with pytest.raises(ValueError, match="positive"):
        ADPOListwiseConfig(tau_anc=-1.0)
