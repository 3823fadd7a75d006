"""Differential information on a tiny categorical example with known answers: the closed-form rejected
distribution against brute-force enumeration (every pair's preference, and a numerical fit), its sampler, the DID
entropy against enumeration, and the trainer's logged DID entropy (log 2 before the first update)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from datasets import Dataset, DatasetDict

from gendiff.llm.prefs import did_entropy, did_log_probs, optimal_rejected_log_weights, sample_rejected
from gendiff.llm.prefs.trainer import PrefTrainConfig, PrefTrainer
from gendiff.llm.tasks import build_tiny_lm

N = 5  # responses y in {0, ..., 4}


def f64(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def categorical(seed: int) -> tuple[list[float], list[float]]:
    g = torch.Generator().manual_seed(seed)
    ref = torch.softmax(torch.randn(N, generator=g, dtype=torch.float64), 0).tolist()
    target = torch.softmax(torch.randn(N, generator=g, dtype=torch.float64) * 1.5, 0).tolist()
    return ref, target


def closed_form(ref: list[float], target: list[float], beta: float) -> list[float]:
    """pi_l proportional to pi_ref^(1 + beta) pi*^(-beta), by enumeration."""
    u = [r ** (1 + beta) * t ** (-beta) for r, t in zip(ref, target, strict=True)]
    return [x / sum(u) for x in u]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_closed_form_rejected_distribution_makes_preferences_encode_the_did(beta):
    """Brute force over all (y_w, y_l): BT with log pi_ref/pi_l equals BT with beta log q*, q* = q_{pi*/pi_ref}."""
    ref, target = categorical(0)
    pl = closed_form(ref, target, beta)
    z = sum(t / r for t, r in zip(target, ref, strict=True))
    q = [t / r / z for t, r in zip(target, ref, strict=True)]
    for w in range(N):
        for lo in range(N):
            data = sigmoid(math.log(ref[w] / pl[w]) - math.log(ref[lo] / pl[lo]))
            did = sigmoid(beta * math.log(q[w]) - beta * math.log(q[lo]))
            assert data == pytest.approx(did, abs=1e-12)
    logw = optimal_rejected_log_weights(f64([ref]).log(), f64([target]).log(), beta)
    assert torch.softmax(logw, -1)[0].tolist() == pytest.approx(pl, abs=1e-12)


def test_a_numerical_fit_of_the_rejected_distribution_finds_the_closed_form():
    """Fit pi_l's logits so that every pairwise preference matches the DID's; the optimum is the closed form."""
    beta = 1.0
    ref, target = categorical(1)
    log_ref, log_t = f64(ref).log(), f64(target).log()
    log_q = log_t - log_ref - torch.logsumexp(log_t - log_ref, 0)
    want = torch.sigmoid(beta * (log_q[:, None] - log_q[None, :]))
    theta = torch.zeros(N, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=200, tolerance_grad=1e-14, tolerance_change=1e-16)

    def closure():
        opt.zero_grad()
        log_pl = torch.log_softmax(theta, 0)
        s = log_ref - log_pl
        loss = ((torch.sigmoid(s[:, None] - s[None, :]) - want) ** 2).sum()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    fitted = torch.softmax(theta.detach(), 0).tolist()
    assert fitted == pytest.approx(closed_form(ref, target, beta), abs=1e-6)


def test_the_resampler_draws_from_the_closed_form():
    beta = 1.0
    ref, target = categorical(2)
    g = torch.Generator().manual_seed(0)
    P, K = 4000, 200
    ys = torch.multinomial(f64(ref).expand(P, N), K, replacement=True, generator=g)  # proposal: pi_ref
    log_ref, log_t = f64(ref).log()[ys], f64(target).log()[ys]
    pick = sample_rejected(log_ref, log_t, beta, proposal_logp=log_ref, generator=g)
    drawn = ys.gather(1, pick[:, None]).squeeze(1)
    freq = torch.bincount(drawn, minlength=N).double() / P
    assert freq.tolist() == pytest.approx(closed_form(ref, target, beta), abs=0.03)
    # exact when the candidates enumerate the support (uniform proposal)
    full = torch.arange(N).expand(P, N)
    pick = sample_rejected(f64(ref).log()[full], f64(target).log()[full], beta, generator=g)
    assert (torch.bincount(pick, minlength=N).double() / P).tolist() == pytest.approx(
        closed_form(ref, target, beta), abs=0.03)
    excl = sample_rejected(f64(ref).log()[full], f64(target).log()[full], beta, generator=g,
                           exclude=torch.zeros(P, dtype=torch.long))
    assert (excl != 0).all()


def test_did_entropy_against_enumeration_and_importance_sampling():
    ref, policy = categorical(3)
    z = sum(p / r for p, r in zip(policy, ref, strict=True))
    q = [p / r / z for p, r in zip(policy, ref, strict=True)]
    exact = -sum(x * math.log(x) for x in q)
    lp, lr = f64([policy]).log(), f64([ref]).log()
    assert did_entropy(lp, lr).item() == pytest.approx(exact, abs=1e-12)
    assert did_log_probs(lp, lr).exp()[0].tolist() == pytest.approx(q, abs=1e-12)
    assert did_entropy(lr, lr).item() == pytest.approx(math.log(N), abs=1e-12)  # pi = pi_ref: uniform DID
    g = torch.Generator().manual_seed(1)
    ys = torch.multinomial(f64(ref), 200_000, replacement=True, generator=g)[None]  # samples of pi_ref
    est = did_entropy(f64(policy).log()[ys], f64(ref).log()[ys], proposal_logp=f64(ref).log()[ys])
    assert est.item() == pytest.approx(exact, abs=0.02)
    masked = did_entropy(torch.tensor([[0.0, -1.0, float("nan")]]), torch.zeros(1, 3), mask=torch.tensor([[1, 1, 0]]))
    assert masked.item() == pytest.approx(-sum(x * math.log(x) for x in [1 / (1 + math.exp(-1)),
                                                                            math.exp(-1) / (1 + math.exp(-1))]))
    with pytest.raises(ValueError, match="NaN or inf"):
        did_entropy(torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="beta must be positive"):
        optimal_rejected_log_weights(lr, lp, 0.0)


def test_the_trainer_logs_the_did_entropy(tmp_path):
    tiny = build_tiny_lm(seed=0, sft_steps=20, out_dir=tmp_path, layers=2, hidden=64, batch_size=32)
    tok = tiny.tokenizer
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in ("46", "47")]
    data = DatasetDict({"pairs": Dataset.from_dict({"prompt": ["12+34="] * 2, "chosen_ids": [ids[0]] * 2,
                                                    "rejected_ids": [ids[1]] * 2})})
    trainer = PrefTrainer(copy.deepcopy(tiny.model), tok, data, PrefTrainConfig(steps=2, batch_size=2, lr=1e-2))
    first, second = trainer.step(), trainer.step()
    assert first["prefs/did_entropy"] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference
    assert 0.0 <= second["prefs/did_entropy"] < math.log(2) - 1e-6  # it has learnt a preference
