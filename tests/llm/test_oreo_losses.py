"""OREO's value and policy losses equal literal float64 per-example references of their formulas; their gradients
move the value and the policy in the paper's direction on a two-completion toy; token_kl equals its definition;
bad input is named."""

from __future__ import annotations

import math

import pytest
import torch

from gendiff.entropy import token_kl, token_logprobs
from gendiff.llm.oreo import OREOConfig, oreo_policy_loss, oreo_value_loss


def batch(seed: int, B: int = 5, T: int = 6):
    g = torch.Generator().manual_seed(seed)
    logp = (-3.0 * torch.rand(B, T, generator=g, dtype=torch.float64)).requires_grad_()
    ref = logp.detach() + 0.5 * torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.rand(B, T, generator=g, dtype=torch.float64).requires_grad_()
    terminal = torch.rand(B, generator=g, dtype=torch.float64).requires_grad_()
    rewards = (torch.rand(B, generator=g, dtype=torch.float64) > 0.5).double()
    lengths = [T, 1, 3, T - 1, 2][:B]
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in lengths], dtype=torch.float64)
    logp.data[mask == 0] = float("nan")  # padding must reach neither the loss nor the gradient
    kl = (0.3 * torch.rand(B, T, generator=g, dtype=torch.float64)).requires_grad_()
    return logp, ref, values, terminal, rewards, mask, kl


def ref_value_loss(logp, ref, values, terminal, rewards, mask, beta, use_terminal) -> float:
    total = 0.0
    for b in range(len(rewards)):
        n = int(mask[b].sum())
        rho = [float(logp[b, t]) - float(ref[b, t]) for t in range(n)]
        per = []
        for t in range(n):
            target = float(rewards[b]) - beta * sum(rho[t:])
            per.append((float(values[b, t]) - target) ** 2)
        if use_terminal:
            per.append((float(terminal[b]) - float(rewards[b])) ** 2)
        total += sum(per) / len(per)
    return total / len(rewards)


def ref_policy_loss(logp, ref, values, rewards, mask, kl, beta, alpha) -> float:
    total = 0.0
    for b in range(len(rewards)):
        n = int(mask[b].sum())
        rho = [float(logp[b, t]) - float(ref[b, t]) for t in range(n)]
        bell = sum((float(values[b, t]) - float(rewards[b]) + beta * rho[t] + beta * sum(rho[t + 1 :])) ** 2
                   for t in range(n)) / n
        reg = sum(float(kl[b, t]) for t in range(n)) / n
        total += bell + alpha * reg
    return total / len(rewards)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.01, 0.5])
@pytest.mark.parametrize("use_terminal", [True, False])
def test_value_loss_equals_the_literal_reference(seed, beta, use_terminal):
    logp, ref, values, terminal, rewards, mask, _ = batch(seed)
    cfg = OREOConfig(beta=beta, terminal_value=use_terminal)
    loss, metrics = oreo_value_loss(values, logp, ref, rewards, mask, cfg, terminal if use_terminal else None)
    want = ref_value_loss(logp.detach(), ref, values.detach(), terminal.detach(), rewards, mask, beta, use_terminal)
    assert loss.dtype == torch.float64 and math.isclose(float(loss), want, rel_tol=1e-12)
    assert metrics["loss/value"] == pytest.approx(want, rel=1e-12)
    loss.backward()
    assert logp.grad is None  # the value loss never trains the policy (sg on the log-ratios)
    assert torch.isfinite(values.grad).all() and bool((values.grad[mask == 0] == 0).all())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("beta", "alpha"), [(0.01, 0.0), (0.5, 0.2)])
def test_policy_loss_equals_the_literal_reference(seed, beta, alpha):
    logp, ref, values, _, rewards, mask, kl = batch(seed)
    loss, metrics = oreo_policy_loss(logp, ref, values, rewards, mask, OREOConfig(beta=beta, alpha=alpha), kl)
    want = ref_policy_loss(logp.detach(), ref, values.detach(), rewards, mask, kl.detach(), beta, alpha)
    assert math.isclose(float(loss), want, rel_tol=1e-12) and metrics["loss/policy"] == pytest.approx(want, rel=1e-12)
    loss.backward()
    assert values.grad is None  # sg[V]
    assert torch.isfinite(logp.grad).all() and bool((logp.grad[mask == 0] == 0).all())
    # only the current step's log-ratio carries a gradient: d/d logp_t = 2 beta delta_t / T_b / B
    b, n = 0, int(mask[0].sum())
    rho = (logp.detach() - ref)[b, :n]
    for t in range(n):
        delta = float(values[b, t]) - float(rewards[b]) + beta * float(rho[t:].sum())
        assert float(logp.grad[b, t]) == pytest.approx(2 * beta * delta / n / len(rewards), rel=1e-10)


def test_one_step_moves_value_and_policy_in_the_papers_direction():
    """One state, two one-token completions: a = 0 is correct (R = 1), a = 1 is wrong (R = 0)."""
    logits = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)  # pi(. | s_0), shared by both rows
    tokens = torch.tensor([[0], [1]])
    rewards = torch.tensor([1.0, 0.0], dtype=torch.float64)
    mask = torch.ones(2, 1)
    ref_logp = torch.full((2, 1), math.log(0.5), dtype=torch.float64)
    v0 = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)  # V(s_0), below the mean reward 0.5
    cfg = OREOConfig(beta=0.5, terminal_value=False)
    logp = token_logprobs(logits.expand(2, 2)[:, None, :], tokens)  # [2, 1]
    values = v0.expand(2, 1)
    loss_v, _ = oreo_value_loss(values, logp, ref_logp, rewards, mask, cfg)
    loss_pi, _ = oreo_policy_loss(logp, ref_logp, values, rewards, mask, cfg)
    (loss_v + loss_pi).backward()
    # value: at pi = pi_ref the target is the mean reward, so gradient descent raises V(s_0) from 0.2 towards 0.5
    assert float(v0.grad) < 0
    # policy: descent raises the logit of the correct token and lowers the wrong one's
    assert float(logits.grad[0, 0]) < 0 < float(logits.grad[0, 1])
    with torch.no_grad():
        logits -= 0.5 * logits.grad
    assert float(torch.softmax(logits, -1)[0, 0]) > 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_token_kl_equals_its_definition(dtype):
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(3, 4, 7, generator=g, dtype=dtype), torch.randn(3, 4, 7, generator=g, dtype=dtype)
    p[0, 0, 2] = -torch.inf  # a token p never emits contributes 0
    kl = token_kl(p, q)
    pp, qq = torch.softmax(p.double(), -1), torch.softmax(q.double(), -1)
    for idx in [(0, 0), (1, 2), (2, 3)]:
        want = sum(float(pp[idx][v]) * (math.log(float(pp[idx][v])) - math.log(float(qq[idx][v])))
                   for v in range(7) if float(pp[idx][v]) > 0)
        assert float(kl[idx]) == pytest.approx(want, rel=1e-5 if dtype == torch.float32 else 1e-12)
    assert float(token_kl(q, q).abs().max()) < 1e-6


def test_bad_input_is_named():
    logp, ref, values, terminal, rewards, mask, kl = batch(0)
    cfg = OREOConfig()
    with pytest.raises(ValueError, match="beta must be positive"):
        OREOConfig(beta=0.0)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        OREOConfig(alpha=-1.0)
    with pytest.raises(ValueError, match="terminal_values .B. is required"):
        oreo_value_loss(values, logp, ref, rewards, mask, cfg)
    with pytest.raises(ValueError, match="rewards must be"):
        oreo_value_loss(values, logp, ref, rewards[:2], mask, cfg, terminal)
    with pytest.raises(ValueError, match="values must have shape"):
        oreo_policy_loss(logp, ref, values[:, :2], rewards, mask, cfg)
    empty = mask.clone()
    empty[1] = 0
    with pytest.raises(ValueError, match=r"rows \[1\] have none"):
        oreo_policy_loss(logp, ref, values, rewards, empty, cfg)
    bad = values.detach().clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="values holds NaN"):
        oreo_policy_loss(logp, ref, bad, rewards, mask, cfg)
    with pytest.raises(ValueError, match="needs the per-step kl"):
        oreo_policy_loss(logp, ref, values, rewards, mask, OREOConfig(alpha=0.1))
    with pytest.raises(ValueError, match="mask must hold only 0 and 1"):
        oreo_policy_loss(logp, ref, values, rewards, mask * 2, cfg)
    with pytest.raises(ValueError, match="must match"):
        token_kl(torch.zeros(2, 3), torch.zeros(2, 4))
