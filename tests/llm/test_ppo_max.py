"""PPO-max (gendiff.llm.ppo_max, GAE and whitening in gendiff.llm.advantages): literal float64 references for GAE,
whitening, value clipping, the reward reparameterisation and the token-level KL reward; the value head's shape and
alignment; bad input; one PPO-max step on the tiny model, from Python and from ``gendiff llm train``."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gendiff.llm.advantages import gae_advantages, whiten
from gendiff.llm.cli import add_llm_commands
from gendiff.llm.ppo_max import (
    PPOMaxTrainer,
    ValueModel,
    check_ppo_max_config,
    clipped_value_loss,
    kl_token_rewards,
    reparameterize_scores,
)
from gendiff.llm.sampling import Completions
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_tiny_lm
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer
from gendiff.rl.common import RunningMeanStd

TASK = ArithmeticTask()
LENGTHS = [5, 3, 0, 1, 5]  # right-padded rows of T = 5, one empty


def right_padded(lengths, t=5):
    return torch.tensor([[1] * n + [0] * (t - n) for n in lengths], dtype=torch.bool)


def ref_gae(r, v, lengths, gamma, lam):
    """Literal per-row GAE loop over the valid tokens (python floats)."""
    adv = [[0.0] * len(r[0]) for _ in r]
    for i, n in enumerate(lengths):
        last = 0.0
        for t in reversed(range(n)):
            next_v = v[i][t + 1] if t + 1 < n else 0.0
            delta = r[i][t] + gamma * next_v - v[i][t]
            last = delta + gamma * lam * last
            adv[i][t] = last
    ret = [[adv[i][t] + v[i][t] if t < n else 0.0 for t in range(len(r[0]))] for i, n in enumerate(lengths)]
    return torch.tensor(adv, dtype=torch.float64), torch.tensor(ret, dtype=torch.float64)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.7), (0.5, 0.0)])
def test_gae_matches_a_float64_loop(gamma, lam):
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(5, 5, generator=g, dtype=torch.float64), torch.randn(5, 5, generator=g, dtype=torch.float64)
    v_padded = torch.where(right_padded(LENGTHS), v, torch.nan)  # NaN at padding must not leak
    adv, ret = gae_advantages(r, v_padded, right_padded(LENGTHS), gamma, lam)
    ref_adv, ref_ret = ref_gae(r.tolist(), v.tolist(), LENGTHS, gamma, lam)
    torch.testing.assert_close(adv, ref_adv, rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, ref_ret, rtol=0, atol=1e-12)


def test_gae_known_answer_and_gamma_lambda_one_is_returns_minus_values():
    r = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    v = torch.tensor([[0.5, 0.2, 0.1]], dtype=torch.float64)
    m = torch.ones(1, 3, dtype=torch.bool)
    adv, ret = gae_advantages(r, v, m, 1.0, 1.0)
    torch.testing.assert_close(adv, torch.tensor([[0.5, 0.8, 0.9]], dtype=torch.float64))
    torch.testing.assert_close(ret, torch.ones(1, 3, dtype=torch.float64))
    # gamma = lam = 0.5 by hand: delta = (-0.4, -0.15, 0.9); A2 = 0.9, A1 = -0.15 + 0.25 * 0.9, A0 = -0.4 + 0.25 A1
    adv, _ = gae_advantages(r, v, m, 0.5, 0.5)
    torch.testing.assert_close(adv, torch.tensor([[-0.38125, 0.075, 0.9]], dtype=torch.float64))
    # random rows: A_t = sum_{t' >= t} r_t' - V_t within each row
    g = torch.Generator().manual_seed(1)
    r, v = torch.randn(5, 5, generator=g, dtype=torch.float64), torch.randn(5, 5, generator=g, dtype=torch.float64)
    mask = right_padded(LENGTHS)
    adv, ret = gae_advantages(r, v, mask, 1.0, 1.0)
    togo = torch.where(mask, r, 0.0).flip(-1).cumsum(-1).flip(-1)
    torch.testing.assert_close(adv, torch.where(mask, togo - v, 0.0), rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, torch.where(mask, togo, 0.0), rtol=0, atol=1e-12)


def test_whiten_matches_reference():
    g = torch.Generator().manual_seed(2)
    x, mask = torch.randn(5, 5, generator=g, dtype=torch.float64) * 3 + 1, right_padded(LENGTHS)
    vals = [x[i, t].item() for i in range(5) for t in range(5) if mask[i, t]]
    mean = sum(vals) / len(vals)
    var = sum((a - mean) ** 2 for a in vals) / len(vals)
    ref = torch.where(mask, (x - mean) / math.sqrt(var + 1e-8), 0.0)
    torch.testing.assert_close(whiten(x, mask), ref, rtol=0, atol=1e-12)


def test_clipped_value_loss_matches_reference():
    g = torch.Generator().manual_seed(3)
    v, old, ret = (torch.randn(5, 5, generator=g, dtype=torch.float64) for _ in range(3))
    mask, clip = right_padded(LENGTHS), 0.2
    terms, clipped = [], []
    for i in range(5):
        for t in range(5):
            if mask[i, t]:
                a, o, r = v[i, t].item(), old[i, t].item(), ret[i, t].item()
                vc = min(max(a, o - clip), o + clip)
                terms.append(max((a - r) ** 2, (vc - r) ** 2))
                clipped.append(float((vc - r) ** 2 > (a - r) ** 2))
    loss, frac = clipped_value_loss(v, old, ret, mask, clip)
    assert loss.item() == pytest.approx(0.5 * sum(terms) / len(terms), abs=1e-12)
    assert frac.item() == pytest.approx(sum(clipped) / len(clipped), abs=1e-12)
    # a zero clip range: the clipped branch is V_old, so the loss is >= the unclipped one everywhere
    loss0, _ = clipped_value_loss(v, old, ret, mask, 0.0)
    assert loss0.item() >= 0.5 * torch.where(mask, (v - ret) ** 2, 0.0).sum().item() / mask.sum().item() - 1e-12


@pytest.mark.parametrize("mode", ["norm", "scale", "none"])
def test_reward_reparameterisation_uses_the_running_history(mode):
    """Running moments over every score so far (Chan's merge with RunningMeanStd's prior: count 1e-4, mean 0, var 1),
    then (r - mean) / std, r / std or r, clipped to +-delta."""
    batches = [torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 0.0, 9.0])]
    moments, history, delta = RunningMeanStd(1, clip=1.5), [], 1.5
    for b in batches:
        out = reparameterize_scores(b, moments, mode, delta)
        history += b.tolist()
        c = 1e-4
        mean = sum(history) / (len(history) + c)
        var = (c * (1.0 + mean**2) + sum((x - mean) ** 2 for x in history)) / (len(history) + c)
        std = math.sqrt(var + 1e-8)
        want = [(x - mean) / std if mode == "norm" else x / std if mode == "scale" else x for x in b.tolist()]
        want = [min(max(w, -delta), delta) for w in want]
        assert out.tolist() == pytest.approx(want, abs=1e-6)
    assert max(out.abs().tolist()) == pytest.approx(delta)  # the outlier 9 is clipped


def test_token_level_kl_reward_matches_reference():
    g = torch.Generator().manual_seed(4)
    logp, ref = -torch.rand(5, 5, generator=g, dtype=torch.float64), -torch.rand(5, 5, generator=g, dtype=torch.float64)
    scores, eta = torch.tensor([1.0, -0.5, 2.0, 0.25, 0.0], dtype=torch.float64), 0.1
    out = kl_token_rewards(scores, logp, ref, right_padded(LENGTHS), eta)
    want = torch.zeros(5, 5, dtype=torch.float64)
    for i, n in enumerate(LENGTHS):
        for t in range(n):
            want[i, t] = -eta * (logp[i, t] - ref[i, t]) + (scores[i] if t == n - 1 else 0.0)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)  # the empty row (length 0) gets nothing
    no_kl = kl_token_rewards(scores, logp, None, right_padded(LENGTHS), eta)
    assert no_kl.sum().item() == pytest.approx(scores.sum().item() - scores[2].item())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_lm(seed=0, sft_steps=40, out_dir=path, layers=2, hidden=64, batch_size=32)
    return path


def load(path):
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_value_head_shape_start_and_alignment(saved):
    model, tok = load(saved)
    critic = ValueModel.from_causal_lm(model)
    assert critic.backbone is not model.base_model  # a copy: the critic trains apart from the policy
    enc = tok(["12+34=", "5+6="], return_tensors="pt", padding=True)
    comp = torch.tensor([[3, 4, 5], [6, 7, 8]])
    batch = Completions(enc["input_ids"], enc["attention_mask"], comp, torch.ones_like(comp), torch.zeros(2, 3),
                        torch.zeros(2, 3), torch.ones(2, dtype=torch.bool))
    with torch.no_grad():
        assert torch.equal(critic(batch), torch.zeros(2, 3))  # zero head: V = 0 at the start
        torch.nn.init.normal_(critic.head.weight)
        values = critic(batch)
        assert values.shape == (2, 3) and values.dtype == torch.float32
        # V(s_t) = head(h) at the position that predicts completion token t, from the plain HF forward (row 0 has
        # no left padding: ordinary positions)
        ids = torch.cat([enc["input_ids"], comp], 1)[:1]
        keep = int(enc["attention_mask"][0].sum())
        ids = ids[:, enc["input_ids"].shape[1] - keep :]
        h = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        want = critic.head(h[:, -4:-1]).squeeze(-1)
    torch.testing.assert_close(values[:1], want, rtol=1e-4, atol=1e-5)


def small(**kw) -> LLMTrainConfig:
    base = {"steps": 2, "group_size": 4, "prompts_per_step": 2, "max_new_tokens": 5, "lr": 1e-3, "critic": "ppo_max",
            "critic_config": {"critic_lr": 1e-3}}
    return LLMTrainConfig(**{**base, **kw})


def test_bad_input_raises_clear_errors(saved):
    v = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="right-padded"):
        gae_advantages(v, v, torch.tensor([[1, 0, 1], [1, 1, 0]]))
    with pytest.raises(ValueError, match="values holds NaN"):
        gae_advantages(v, torch.full((2, 3), torch.nan), torch.ones(2, 3))
    with pytest.raises(ValueError, match="gamma and lam"):
        gae_advantages(v, v, torch.ones(2, 3), gamma=1.5)
    with pytest.raises(ValueError, match="values must be"):
        gae_advantages(v, torch.zeros(2, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="kl_coef must be 0, got 0.1"):
        check_ppo_max_config(small(kl_coef=0.1))
    with pytest.raises(ValueError, match="'rloo'"):
        check_ppo_max_config(small(advantage="rloo"))
    with pytest.raises(ValueError, match="critic_lr.*got -1"):
        check_ppo_max_config(small(critic_config={"critic_lr": -1}))
    with pytest.raises(ValueError, match="lam.*got 2"):
        check_ppo_max_config(small(critic_config={"lam": 2}))
    with pytest.raises(ValueError, match="critic_warmup_steps.*got 2"):
        check_ppo_max_config(small(critic_config={"critic_warmup_steps": 2}))
    with pytest.raises(ValueError, match="critic is 'none'"):
        check_ppo_max_config(small(critic="none", critic_config={"lam": 0.9}))
    with pytest.raises(ValueError, match="plain rollouts.*got rollout 'ares'"):
        check_ppo_max_config(small(rollout="ares"))
    with pytest.raises(ValueError, match="plain rollouts.*reset_rate 0.5"):
        check_ppo_max_config(small(reset_rate=0.5, reset_data="runs/prefs"))
    model, tok = load(saved)
    with pytest.raises(ValueError, match="PPOMaxTrainer"):
        LLMTrainer(model, tok, arithmetic_reward, ["1+1="], small())


def test_ppo_max_trains_one_step_after_a_critic_warmup(saved):
    model, tok = load(saved)
    start = {k: p.clone() for k, p in model.named_parameters()}
    cfg = small(critic_config={"critic_lr": 1e-3, "critic_warmup_steps": 1, "kl_coef": 0.05})
    trainer = PPOMaxTrainer(model, tok, arithmetic_reward, lambda n, rng: TASK.sample(n, rng)[0], cfg)
    head = trainer.critic.head.weight.detach().clone()
    logs = [trainer.step()]
    policy = trainer.accelerator.unwrap_model(trainer.model)
    assert all(torch.equal(p, start[k]) for k, p in policy.named_parameters())  # warm-up: the critic alone
    assert not torch.equal(trainer.critic.head.weight, head) and logs[0]["ppo_max/critic_only"] == 1.0
    logs.append(trainer.step())
    assert any(not torch.equal(p, start[k]) for k, p in policy.named_parameters())
    m = logs[1]
    for key in ("loss/policy", "actor/entropy", "critic/value_loss", "critic/vf_clipfrac", "ppo_max/ref_kl",
                "ppo_max/value_mean", "adv/mean"):
        assert math.isfinite(m[key]), key
    raw = m["ppo_max/adv_raw_std"]  # whitened: mean 0, std raw / sqrt(raw^2 + 1e-8)
    assert m["adv/mean"] == pytest.approx(0.0, abs=1e-5)
    assert m["adv/std"] == pytest.approx(raw / math.sqrt(raw**2 + 1e-8), rel=1e-4)
    assert m["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-6)  # the first update is on-policy


def test_gendiff_llm_train_critic_ppo_max_checkpoints_and_resumes_its_critic(saved, tmp_path):
    parser = argparse.ArgumentParser()
    add_llm_commands(parser.add_subparsers(dest="command"))
    argv = ["llm", "train", "--out", str(tmp_path / "run"), "--model", str(saved), "--steps", "2", "--group-size",
            "4", "--prompts-per-step", "2", "--max-new-tokens", "5", "--lr", "1e-3", "--eval-prompts", "4",
            "--checkpoint-every", "2", "--no-progress", "--critic", "ppo_max", "--critic-config", "{lam: 0.9}"]
    args = parser.parse_args(argv)
    args._run(args)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["critic"] == "ppo_max" and "greedy" in summary["after"]
    logs = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(logs) == 2 and all("critic/value_loss" in m for m in logs)
    ckpt = tmp_path / "run" / "checkpoint-2"
    saved_critic = torch.load(ckpt / "critic.pt", weights_only=True)
    model, tok = load(ckpt)
    trainer = PPOMaxTrainer(model, tok, arithmetic_reward, ["1+1="], small(steps=3, critic_config={"lam": 0.9}))
    assert trainer.load_checkpoint(ckpt) == 2
    for k, v in trainer.critic.state_dict().items():
        assert torch.equal(v, saved_critic["critic"][k]), k
    assert torch.equal(trainer.moments.mean, saved_critic["moments"]["mean"])
    # the CLI resumes the run (policy, critic, score moments) to step 3
    argv[argv.index("--steps") + 1] = "3"
    args = parser.parse_args([*argv, "--resume"])
    args._run(args)
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 3
