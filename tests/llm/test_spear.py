"""gendiff.llm.spear and gendiff.llm.replay: the self-imitation loss and the advantage recalibration against literal
float64 references, the buffer, the curriculum's known values, the trainer hooks, bad input."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gendiff.llm.losses import ClipCovConfig
from gendiff.llm.replay import ReplayBuffer
from gendiff.llm.spear import (
    SPEARConfig,
    decay_advantages,
    format_reward,
    intrinsic_weight,
    p50_baseline,
    recalibrate_advantages,
    sil_loss,
    sil_weight,
)
from gendiff.llm.tasks import ArithmeticTask, build_tiny_lm
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer, check_config


def _reference_sil(logp, blogp, adv, mask, eps_low, eps_high, lb, ub, detach_all_candidates):
    """Literal per-token float64 reference of Clip-Cov's PPO-clip surrogate on replayed rows (token-mean).

    With ``detach_all_candidates`` every valid, unclipped token whose covariance lies in (lb, ub) is detached
    (clip_ratio 1: the pick takes all candidates); otherwise none is."""
    n, t = len(logp), len(logp[0])
    valid = [(i, j) for i in range(n) for j in range(t) if mask[i][j]]
    mean_a = sum(adv[i] for i, _ in valid) / len(valid)
    mean_lp = sum(logp[i][j] for i, j in valid) / len(valid)
    total = 0.0
    for i, j in valid:
        r = math.exp(logp[i][j] - blogp[i][j])
        unclipped, clipped = -r * adv[i], -min(max(r, 1 - eps_low), 1 + eps_high) * adv[i]
        loss = max(unclipped, clipped)
        ppo_clipped = clipped > unclipped
        cov = (adv[i] - mean_a) * (logp[i][j] - mean_lp)
        if detach_all_candidates and not ppo_clipped and lb < cov < ub:
            loss = 0.0
        total += loss
    return total / len(valid)


def _replay_inputs():
    g = torch.Generator().manual_seed(3)
    logp = -torch.rand(3, 4, generator=g, dtype=torch.float64) * 3
    blogp = logp + 0.4 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    adv = torch.tensor([0.5, 0.25, 1.5], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    return logp, blogp, adv, mask


@pytest.mark.parametrize("detach", [False, True])
def test_sil_loss_matches_a_literal_float64_reference(detach):
    logp, blogp, adv, mask = _replay_inputs()
    band = (-1e9, 1e9) if detach else (1e8, 2e8)  # every covariance inside, or none
    cfg = ClipCovConfig(eps_low=0.2, eps_high=0.28, clip_ratio=1.0, cov_lb=band[0], cov_ub=band[1])
    loss, metrics = sil_loss(logp.clone().requires_grad_(), blogp, adv, mask, cfg, torch.Generator().manual_seed(0))
    ref = _reference_sil(logp.tolist(), blogp.tolist(), adv.tolist(), mask.tolist(), 0.2, 0.28, *band, detach)
    assert float(loss.detach()) == pytest.approx(ref, rel=1e-12, abs=1e-14)
    assert all(k.startswith("sil/") for k in metrics)
    assert metrics["sil/clip_cov_count"] > 0 if detach else metrics["sil/clip_cov_count"] == 0


def test_detached_replay_tokens_get_no_gradient():
    logp, blogp, adv, mask = _replay_inputs()
    lp = logp.clone().requires_grad_()
    cfg = ClipCovConfig(clip_ratio=1.0, cov_lb=-1e9, cov_ub=1e9, eps_high=0.28)
    sil_loss(lp, blogp, adv, mask, cfg)[0].backward()
    ratio = torch.exp(logp - blogp)
    unclipped_region = (ratio <= 1.28) & mask.bool()  # A > 0: PPO clips only above 1 + eps_high
    assert bool((lp.grad[unclipped_region] == 0).all())  # all were candidates: detached


def test_p50_baseline_and_recalibration_match_numpy_and_a_literal_loop():
    hist = [0.25, 0.5, 0.75, 1.0, 0.0, 0.125]
    assert p50_baseline(hist) == pytest.approx(float(np.percentile(hist, 50)), abs=1e-15)
    assert p50_baseline([0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.25, abs=1e-15)
    rewards = [1.0, 1.0, 0.25, 0.375, 0.5]
    base = p50_baseline(hist)  # 0.375
    out = recalibrate_advantages(torch.tensor(rewards, dtype=torch.float64), base)
    assert out.dtype == torch.float64
    assert out.tolist() == [max(r - base, 0.0) for r in rewards] == [0.625, 0.625, 0.0, 0.0, 0.125]
    dec = decay_advantages(torch.tensor([2.0, 1.0, 0.5]), torch.tensor([0.0, 3.0, 1.0]), 0.5)
    assert dec.tolist() == [2.0 * 0.5**0, 1.0 * 0.5**3, 0.5 * 0.5**1]


def test_curriculum_schedule_known_values():
    cfg = SPEARConfig(sil_coef=2.0, sil_ramp_steps=8, intrinsic_coef=0.5, intrinsic_decay_steps=4)
    assert [intrinsic_weight(t, cfg) for t in (0, 2, 4, 9)] == pytest.approx([0.5, 0.25, 0.0, 0.0], abs=1e-15)
    assert intrinsic_weight(1, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)) / 2, abs=1e-15)
    assert [sil_weight(t, cfg) for t in (0, 4, 8, 50)] == pytest.approx([0.0, 1.0, 2.0, 2.0], abs=1e-15)
    assert sil_weight(2, cfg) == pytest.approx(2.0 * (1 - math.cos(math.pi / 4)) / 2, abs=1e-15)
    instant = SPEARConfig(sil_ramp_steps=0, intrinsic_decay_steps=0)
    assert sil_weight(0, instant) == 1.0 and intrinsic_weight(0, instant) == 0.0
    with pytest.raises(ValueError, match="step"):
        sil_weight(-1, cfg)


def test_buffer_keeps_only_successes_fifo_capacity_and_age():
    buf = ReplayBuffer(capacity=3, max_age=2, success_reward=1.0, baseline_size=4)
    added = buf.add(["a", "b", "c", "d"], [[9]] * 4, [[1], [2, 3], [4], []], [[-0.1], [-0.2, -0.3], [-0.4], []],
                    [1.0, 0.0, 1.0, 1.0], [0.5, 0.9, -0.1, 0.7], step=0)
    assert added == 1 and [t.prompt for t in buf.items] == ["a"]  # b failed, c had A < 0, d was empty
    buf.add(["e", "f", "g"], [[9]] * 3, [[5], [6], [7]], [[-1.0], [-1.0], [-1.0]], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], step=1)
    assert [t.prompt for t in buf.items] == ["e", "f", "g"]  # capacity 3: the oldest left first
    buf.add(["h"], [[9, 10]], [[8]], [[-1.0]], [1.0], [1.0], step=3)
    assert [t.prompt for t in buf.items] == ["f", "g", "h"]
    drawn = buf.sample(2, random.Random(0))
    assert len({t.prompt for t in drawn}) == 2 and len(buf.sample(5, random.Random(0))) == 3
    assert buf.evict(step=4) == 2 and [t.prompt for t in buf.items] == ["h"]  # f, g: age 3 > max_age 2
    assert buf.items[-1].logp == (-1.0,) and buf.items[-1].completion_ids == (8,)
    assert buf.items[-1].prompt_ids == (9, 10)
    buf.observe_groups([0.1, 0.2, 0.3])
    buf.observe_groups([0.4, 0.5])
    assert list(buf.group_means) == [0.2, 0.3, 0.4, 0.5]  # the last baseline_size group means


def test_spear_refuses_what_it_would_ignore_or_misread():
    for extra in ({"rollout": "ares"}, {"reset_rate": 0.5, "reset_data": "runs/prefs"}, {"critic": "ppo_max"}):
        with pytest.raises(ValueError, match="spear replays plain rollouts"):
            check_config(LLMTrainConfig(spear=True, **extra))


def test_buffer_and_config_bad_input():
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(capacity=0)
    buf = ReplayBuffer()
    with pytest.raises(ValueError, match="as many rows"):
        buf.add(["a"], [[9]], [[1]], [[-1.0]], [1.0, 1.0], [1.0], step=0)
    with pytest.raises(ValueError, match="2 tokens came with 1"):
        buf.add(["a"], [[9]], [[1, 2]], [[-1.0]], [1.0], [1.0], step=0)
    with pytest.raises(ValueError, match="recalibration"):
        SPEARConfig(recalibration="mean")
    with pytest.raises(ValueError, match="sil_coef"):
        SPEARConfig(sil_coef=-1.0)
    with pytest.raises(ValueError, match="cov_lb < cov_ub"):
        SPEARConfig(cov_lb=5.0, cov_ub=1.0)
    with pytest.raises(ValueError, match="at least one"):
        p50_baseline([])
    with pytest.raises(ValueError, match="finite"):
        recalibrate_advantages(torch.tensor([1.0, float("nan")]), 0.5)
    with pytest.raises(ValueError, match="spear is off"):
        check_config(LLMTrainConfig(spear_config={"sil_coef": 0.5}))
    with pytest.raises(KeyError, match="sil_coeff"):
        check_config(LLMTrainConfig(spear=True, spear_config={"sil_coeff": 0.5}))
    with pytest.raises(ValueError, match="replay_batch"):
        check_config(LLMTrainConfig(spear=True, spear_config="{replay_batch: 0}"))


def test_observe_stores_only_on_policy_successes_and_records_group_means():
    from gendiff.llm.sampling import Completions
    from gendiff.llm.spear import SPEAR

    spear = SPEAR(SPEARConfig(), pad_id=0)
    ids = torch.tensor([[0, 5, 6], [7, 8, 9], [0, 0, 4]])  # left-padded prompts
    pmask = (ids != 0).long()
    comp = torch.tensor([[1, 2, 3], [1, 3, 0], [2, 0, 0]])
    cmask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    logp = -torch.arange(9, dtype=torch.float32).reshape(3, 3) / 10
    batch = Completions(ids, pmask, comp, cmask, logp, torch.zeros(3, 3), torch.tensor([True, True, True]))
    out = spear.observe(batch, torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0.5, 0.5, -1.0]), torch.tensor([0, 0, 1]),
                        ["p0", "p1", "p2"], step=3, on_policy=torch.tensor([True, False, True]))
    assert out["spear/added"] == 1.0  # row 1 is a regulariser row, row 2 failed
    (t,) = spear.buffer.items
    assert (t.prompt, t.prompt_ids, t.completion_ids, t.step) == ("p0", (5, 6), (1, 2, 3), 3)
    assert t.logp == pytest.approx((0.0, -0.1, -0.2))
    assert list(spear.buffer.group_means) == [1.0, 0.0]  # groups 0 (row 0 only) and 1


def test_format_reward_reads_each_template():
    prompts = ["12+39=", "rev 12+39=", "sum 12+39=", "ans 12+39:", "ans 12+39:"]
    good = ["50", "15", "1c1 5c0 51", "[7]", "[51]"]  # well-formed (the answer need not be right)
    assert format_reward(prompts, good, [True] * 5) == [1.0] * 5
    assert format_reward(prompts, good, [False] * 5) == [0.0] * 5  # no EOS: not well-formed
    assert format_reward(prompts, ["5 0", "x", "51", "51", "[51"], [True] * 5) == [0.0] * 5
    with pytest.raises(ValueError, match="finished"):
        format_reward(prompts, good, [True])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_spear")
    build_tiny_lm(seed=0, sft_steps=30, out_dir=path, layers=2, hidden=64, batch_size=32)
    return path


def _trainer(path, spear: dict | None, steps: int = 4):
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    task = ArithmeticTask()
    extra = {"spear": True, "spear_config": spear} if spear is not None else {}
    cfg = LLMTrainConfig(steps=steps, group_size=4, prompts_per_step=2, max_new_tokens=5, lr=1e-3, **extra)

    def odd_length(prompts, completions, **_):  # learnable and often successful: half the rows on average
        return [float(len(c.strip()) % 2) for c in completions]

    return LLMTrainer(model, tok, odd_length, lambda n, rng: task.sample(n, rng)[0], cfg,
                      intrinsic_fn=format_reward if spear is not None else None)


def test_replayed_tokens_give_back_the_behaviour_log_probs(saved):
    """A stored rollout, rebuilt by ``replay_completions``, has under the unchanged policy the log-probs the sampler
    recorded: the self-imitation ratio starts at 1."""
    from gendiff.llm.spear import SPEAR, replay_completions
    from gendiff.llm.trainer import policy_logp_entropy

    trainer = _trainer(saved, {"success_reward": 0.0})
    roll = trainer.rollout(["12+34=", "5+678="])
    spear: SPEAR = trainer.spear
    items = list(spear.buffer.items)
    assert items and all(len(t.prompt_ids) > 0 for t in items)
    batch = replay_completions([t.prompt_ids for t in items], [t.completion_ids for t in items], trainer.pad_id)
    assert batch.prompt_mask.sum().item() == sum(len(t.prompt_ids) for t in items)
    with torch.no_grad():
        logp, _ = policy_logp_entropy(trainer.model, batch, 1.0)
    for i, t in enumerate(items):
        assert logp[i, : len(t.logp)].tolist() == pytest.approx(list(t.logp), abs=1e-4)
    assert roll["replay"] is None  # w_sil(0) = 0: no replay batch at step 0


def test_spear_with_zero_weights_is_exactly_grpo(saved):
    plain = _trainer(saved, None)
    zero = _trainer(saved, {"sil_coef": 0.0, "intrinsic_coef": 0.0})
    a, b = plain.train(progress=False), zero.train(progress=False)
    assert [m["reward/mean"] for m in a] == [m["reward/mean"] for m in b]
    for p, q in zip(plain.model.parameters(), zero.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert len(zero.spear.buffer) > 0 and "sil/policy" not in b[-1]


def test_spear_replays_successes_and_adds_the_self_imitation_loss(saved):
    trainer = _trainer(saved, {"sil_ramp_steps": 1, "intrinsic_decay_steps": 2, "replay_batch": 4,
                               "success_reward": 1.0})
    logs = trainer.train(progress=False)
    assert logs[0]["spear/intrinsic_weight"] == 0.5 and logs[0]["spear/sil_weight"] == 0.0
    assert "sil/policy" not in logs[0]  # weight 0 at step 0: no replay forward
    replayed = [m for m in logs[1:] if "sil/policy" in m]
    assert replayed and all(math.isfinite(m["sil/policy"]) for m in replayed)
    assert all(0 < m["spear/replay_rows"] <= 4 for m in replayed)
    assert all(m["spear/baseline_p50"] < 1.0 for m in replayed)
    # reward/mean is the task reward; the shaped reward (+ w_in x format) is logged beside it
    assert logs[0]["spear/shaped_reward_mean"] >= logs[0]["reward/mean"]
    assert logs[-1]["spear/intrinsic_weight"] == 0.0


def test_an_intrinsic_reward_without_spear_is_refused(saved):
    model, tok = AutoModelForCausalLM.from_pretrained(saved), AutoTokenizer.from_pretrained(saved)
    with pytest.raises(ValueError, match="intrinsic_fn is SPEAR's intrinsic reward: it needs spear on"):
        LLMTrainer(model, tok, lambda p, c, **_: [0.0] * len(c), ["1+1="], LLMTrainConfig(), intrinsic_fn=format_reward)
