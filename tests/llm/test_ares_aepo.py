"""ARES (HWE detector, hierarchical entropy reward, difficulty, dynamic KL) and agentic AEPO (budget split, branch
penalty, entropy-balanced rollout, the ebpo loss): known answers and literal float64 references."""

from __future__ import annotations

import math

import pytest
import torch

from gendiff.llm.ares import ARESConfig, ARESState, DynamicKL, difficulty, hierarchical_entropy_reward
from gendiff.llm.entropy_balanced import (
    EBRolloutConfig,
    branch_probability,
    entropy_balanced_rollout,
    global_budget,
    plan_branches,
)
from gendiff.llm.hwe import (
    HWEThreshold,
    forward_window_entropy,
    hwe_count,
    hwe_mask,
    hwe_threshold,
    trailing_hwe,
)
from gendiff.llm.losses import POLICY_LOSSES, EBPOConfig, GRPOLossConfig
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer, check_config, policy_logp_entropy

pytestmark = pytest.mark.filterwarnings("ignore:.*empty completion")


# ----------------------------------------------------------------------------- HWE
def test_hwe_detector_finds_the_constructed_trigger_positions():
    h = torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    m = torch.ones_like(h, dtype=torch.bool)
    # forward window (w = 2): mean of H[t + 1], H[t + 2]; full only for t <= 7
    assert hwe_mask(h, m, 2, 3.0)[0].nonzero().flatten().tolist() == [2, 3, 4]
    assert int(hwe_count(h, m, 2, 3.0)[0]) == 3
    assert hwe_mask(h, m, 2, 1.5)[0].nonzero().flatten().tolist() == [1, 2, 3, 4, 5]
    # causal (trailing) window: the last two tokens up to t, first token alone
    assert trailing_hwe(h, m, 2, 3.0)[0].nonzero().flatten().tolist() == [4, 5, 6]
    # a masked-out token in the middle is skipped: the window runs over valid tokens only
    h2 = torch.tensor([[0.0, 9.0, 3.0, 3.0, 0.0]], dtype=torch.float64)
    m2 = torch.tensor([[True, False, True, True, True]])
    win, full = forward_window_entropy(h2, m2, 2)
    assert full[0].tolist() == [True, False, True, False, False]
    assert win[0, 0] == 3.0 and win[0, 2] == 1.5


def ref_forward(h, m, w):
    out, full = [], []
    for b in range(h.shape[0]):
        pos = [t for t in range(h.shape[1]) if m[b, t]]
        row, frow = [0.0] * h.shape[1], [False] * h.shape[1]
        for r, t in enumerate(pos):
            if r + w < len(pos):
                row[t] = sum(float(h[b, s]) for s in pos[r + 1 : r + 1 + w]) / w
                frow[t] = True
        out.append(row)
        full.append(frow)
    return out, full


@pytest.mark.parametrize("w", [1, 3])
def test_forward_window_and_threshold_equal_literal_references(w):
    g = torch.Generator().manual_seed(3)
    h = 2.0 * torch.rand(4, 9, generator=g, dtype=torch.float64)
    m = torch.rand(4, 9, generator=g) > 0.3
    m[3] = False
    m[3, :2] = True  # a row too short for any full window
    win, full = forward_window_entropy(h, m, w)
    ref, rfull = ref_forward(h, m, w)
    assert full.tolist() == rfull
    assert torch.allclose(win, torch.tensor(ref, dtype=torch.float64), rtol=0, atol=1e-12)
    per_row = []
    for b in range(4):
        vals = sorted(ref[b][t] for t in range(9) if rfull[b][t])
        if vals:
            pos = 0.95 * (len(vals) - 1)
            lo, hi = math.floor(pos), math.ceil(pos)
            per_row.append(vals[lo] + (vals[hi] - vals[lo]) * (pos - lo))
    per_row.sort()
    median = per_row[(len(per_row) - 1) // 2]  # torch.median: the lower middle value
    assert hwe_threshold(h, m, w, 95.0) == pytest.approx(median, abs=1e-12)


def test_hwe_threshold_is_an_ema_over_batches():
    th = HWEThreshold(window=1, percentile=50.0, decay=0.9)
    m = torch.ones(1, 3, dtype=torch.bool)
    assert th.update(torch.tensor([[0.0, 2.0, 4.0]]), m) == pytest.approx(3.0)  # windows of t = 0, 1: 2, 4
    assert th.update(torch.tensor([[0.0, 0.0, 0.0]]), m) == pytest.approx(0.9 * 3.0)


# ----------------------------------------------------------------------------- ARES reward, difficulty, KL
@pytest.mark.parametrize("count,target,correct,bucket,alpha,expected", [
    (10, 4, True, "easy", 0.5, -0.5),  # margin 1, over 5, Huber_2(5) = 4, 4 / 3 * 0.5 capped at 0.5
    (5, 4, True, "easy", 0.5, 0.0),  # within the margin
    (2, 8, True, "medium", 0.5, -0.25),  # margin 2, dev 4, Huber_3(4) = 2.5, 2.5 / 5 * 0.5
    (8, 8, True, "hard", 0.5, 0.6 / (1 + math.exp(-2.8 / 3.0))),  # margin 2.8, sigmoid(2.8 / 3) * 0.6
    (0, 10, True, "hard", 0.5, -0.18),  # margin 3.5, Huber_4(6.5) = 4.5, 0.5 * 4.5 / 7.5 * 0.6
    (3, 3, False, "easy", 0.5, 0.15),  # sigmoid(0) * 0.5 * 0.6
    (9, 3, False, "medium", 1.0, 0.8 / (1 + math.exp(-5.0 / 2.5))),  # margin 1, over 5
])
def test_hierarchical_entropy_reward_known_values(count, target, correct, bucket, alpha, expected):
    assert hierarchical_entropy_reward(count, target, correct, bucket, alpha) == pytest.approx(expected, abs=1e-12)


def test_difficulty_from_the_group_pass_rate():
    passed = torch.tensor([1, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    assert difficulty(passed, groups) == ["easy"] * 3 + ["medium"] * 3 + ["medium"] * 3 + ["hard"] * 3
    assert difficulty(torch.tensor([1, 1, 0]), torch.tensor([5, 5, 5])) == ["easy"] * 3  # 2/3 is easy


def test_dynamic_kl_moves_beta_toward_the_target_in_log_space():
    kl = DynamicKL(target=0.01, lr=0.05, interval=1, deadzone=0.0)
    kl.update(["hard", "hard", "easy"], [0.02, 0.02, 0.01])
    # hard: KL 0.02 = 2 x target, e = 1, EMA(e) = 0.03, log beta += 0.05 * 0.03; easy: e = 0
    assert kl.beta["hard"] == pytest.approx(math.exp(0.0015), abs=1e-12)
    assert kl.beta["easy"] == pytest.approx(1.0, abs=1e-12)
    assert kl.weights(["hard", "medium"]).tolist() == pytest.approx([math.exp(0.0015), 1.0])
    slow = DynamicKL(interval=100)
    slow.update(["hard"], [1.0])
    assert slow.beta == {}  # only every interval-th update moves beta


def test_ares_state_shapes_rewards_with_the_batch_targets():
    st = ARESState(ARESConfig(window=1, percentile=50.0, alpha_lr=0.0))
    ent = torch.tensor([[0.0, 2.0, 2.0], [0.0, 0.0, 0.0], [0.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    mask = torch.ones_like(ent, dtype=torch.bool)
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0])
    shaped, buckets, m = st.shape(rewards, torch.tensor([0, 0, 1, 1]), ent, mask)
    # tau = median of per-row medians of the full windows {2, 2} and {0, 0} -> 0 (lower middle): every full window
    # is HWE: counts 2, 2, 2, 2; group 0 passes 2/2 (easy), group 1 0/2 (hard); targets 2 and 2
    assert buckets == ["easy", "easy", "hard", "hard"]
    assert m["ares/hwe_count_mean"] == 2.0 and st.target == {"easy": 2, "hard": 2}
    expected = [1.0, 1.0, 0.6 / (1 + math.exp(-0.0)), 0.6 / (1 + math.exp(-0.0))]  # wrong & hard: sigmoid(0) cap 0.6
    assert shaped.tolist() == pytest.approx(expected)


# ----------------------------------------------------------------------------- agentic AEPO rollout pieces
def test_global_budget_known_split():
    assert global_budget(1.0, 1.0, 8, 0.5) == 5  # floor(8 * 0.5) + 1
    assert global_budget(3.0, 1.0, 8, 0.5) == 6  # floor(8 * sigmoid(1) = 5.85) + 1
    assert global_budget(0.0, 100.0, 8, 0.5) == 1  # steps far more uncertain: 1 whole rollout, 7 branches
    assert global_budget(100.0, 0.0, 8, 0.5) == 8  # the question far more uncertain: no branches
    assert global_budget(1.0, 1.0, 1, 0.5) == 1


def test_branch_probability_and_the_consecutive_branch_penalty():
    assert branch_probability(0.5, 1.0, 0, 0.2, 0.05) == pytest.approx(0.7)
    assert branch_probability(0.5, 1.0, 2, 0.2, 0.05) == pytest.approx(0.63)
    assert branch_probability(0.5, 1.0, 30, 0.2, 0.05) == 0.0
    assert branch_probability(0.9, 5.0, 0, 0.2, 0.05) == 1.0


def test_plan_branches_penalises_consecutive_branching():
    ent = torch.zeros(1, 6, dtype=torch.float64)
    mask = torch.ones(1, 6, dtype=torch.bool)
    u = torch.full((1, 6), 0.52, dtype=torch.float64)
    cfg = EBRolloutConfig(threshold=0.5, entropy_weight=0.2, penalty=0.05, root_tokens=1)
    # P = 0.52 (1 - 0.05 l): l = 0 -> 0.52 branch; l = 1 -> 0.494 none, which resets l
    assert plan_branches(ent, mask, 0.0, 10, u, cfg) == [(0, 1), (0, 3), (0, 5)]
    free = EBRolloutConfig(threshold=0.5, penalty=0.0)
    assert plan_branches(ent, mask, 0.0, 10, u, free) == [(0, t) for t in range(1, 6)]
    assert plan_branches(ent, mask, 0.0, 2, u, free) == [(0, 1), (0, 2)]  # slots run out
    # entropy above the root pushes P over the threshold: u 0.45 + 0.2 * 0.5 = 0.55 only where H = 0.5
    ent2 = torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.0, 0.5]], dtype=torch.float64)
    u2 = torch.full((2, 3), 0.45, dtype=torch.float64)
    m2 = torch.tensor([[True, True, True], [True, True, False]])  # row 1 ended before step 2
    assert plan_branches(ent2, m2, 0.0, 5, u2, free) == [(0, 1)]


@pytest.fixture(scope="module")
def tiny():
    from gendiff.llm.tasks import build_tiny_lm

    return build_tiny_lm(seed=0, sft_steps=60, layers=2, hidden=64, batch_size=32)


def test_entropy_balanced_rollout_rows_are_policy_samples_with_shared_prefixes(tiny):
    model, tok = tiny.model.eval(), tiny.tokenizer
    enc = tok(["12+34=", "56+7=", "81+19="], return_tensors="pt", padding=True)
    cfg = EBRolloutConfig(threshold=0.3, beta=0.0)  # beta 0: m = floor(k / 2) + 1, branches are likely
    gen = torch.Generator().manual_seed(0)
    batch, generated, metrics = entropy_balanced_rollout(model, enc["input_ids"], enc["attention_mask"], 6, 6,
                                                         [tok.eos_token_id], tok.pad_token_id, 1.0, 1.0, gen, cfg)
    assert batch.completion_ids.shape[0] == 18 and metrics["eb/global_mean"] == 4.0
    assert metrics["eb/branches"] + metrics["eb/fresh"] == 6  # 2 slots per prompt
    assert metrics["eb/branches"] > 0
    lengths = batch.completion_mask.sum(-1)
    assert generated < int(lengths.sum())  # branches share their parents' prefixes
    assert int(lengths.max()) <= 6
    # every row's recorded log-probs / entropies are the policy's own (teacher-forced forward)
    logp, ent = policy_logp_entropy(model, batch, 1.0)
    m = batch.completion_mask.bool()
    assert (logp - batch.logp)[m].abs().max() < 1e-4 and (ent - batch.entropy)[m].abs().max() < 1e-4
    # a branch row shares a strict prefix with an earlier row of its prompt
    ids = batch.completion_ids
    shared = 0
    for p in range(3):
        rows = [ids[p * 6 + i][: int(lengths[p * 6 + i])].tolist() for i in range(6)]
        shared += sum(any(len(a) > 1 and b[:1] == a[:1] for a in rows[:j]) for j, b in enumerate(rows) if j >= 4)
    assert shared > 0


# ----------------------------------------------------------------------------- ebpo loss
def ref_ebpo(logp, old, adv, mask, ent, cfg):
    """Literal float64: value and d loss / d logp per token (token-mean)."""
    cells = [(i, t) for i in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[i, t]]
    hs = [float(ent[i, t]) for i, t in cells]
    mu = sum(hs) / len(hs)
    sd = math.sqrt(sum((h - mu) ** 2 for h in hs) / (len(hs) - 1)) or 1.0
    val, grad = 0.0, torch.zeros(mask.shape, dtype=torch.float64)
    for i, t in cells:
        a = (float(adv[i]) if adv.dim() == 1 else float(adv[i, t])) * (1 + cfg.adv_alpha * (float(ent[i, t]) - mu) / sd)
        r = math.exp(float(logp[i, t]) - float(old[i, t]))
        lo, hi = 1 - cfg.eps_low, 1 + cfg.eps_high
        if r > hi:
            clipped_val, clipped_grad = -a * hi, (-a * hi if cfg.preserve_high else 0.0)
        elif r < lo:
            clipped_val, clipped_grad = -a * lo, 0.0
        else:
            clipped_val, clipped_grad = -a * r, -a * r
        unclipped_val, unclipped_grad = -a * r, -a * r
        if clipped_val > unclipped_val:
            val, grad[i, t] = val + clipped_val, clipped_grad
        else:
            val, grad[i, t] = val + unclipped_val, unclipped_grad
    return val / len(cells), grad / len(cells)


@pytest.mark.parametrize("alpha,preserve", [(0.2, True), (0.0, True), (0.5, False)])
@pytest.mark.parametrize("seed", [0, 1])
def test_ebpo_equals_its_literal_reference_value_and_gradient(seed, alpha, preserve):
    g = torch.Generator().manual_seed(seed)
    B, T = 4, 7
    old = -2.0 * torch.rand(B, T, generator=g, dtype=torch.float64)
    logp = (old + 0.5 * torch.randn(B, T, generator=g, dtype=torch.float64)).requires_grad_()
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) > 0.2
    mask[0, 0] = True
    ent = 2.0 * torch.rand(B, T, generator=g, dtype=torch.float64)
    cfg = EBPOConfig(adv_alpha=alpha, preserve_high=preserve)
    loss, metrics = POLICY_LOSSES.get("ebpo")(logp, old, adv, mask, cfg, entropy=ent)
    loss.backward()
    val, grad = ref_ebpo(logp.detach(), old, adv, mask, ent, cfg)
    assert float(loss.detach()) == pytest.approx(val, rel=1e-10, abs=1e-12)
    assert torch.allclose(logp.grad, grad, rtol=1e-10, atol=1e-12)
    assert metrics["actor/clipfrac_high"] > 0  # the batch holds tokens past the upper bound


def test_ebpo_without_its_two_changes_is_grpo():
    g = torch.Generator().manual_seed(5)
    old = -torch.rand(3, 5, generator=g, dtype=torch.float64)
    logp = old + 0.4 * torch.randn(3, 5, generator=g, dtype=torch.float64)
    adv, mask = torch.randn(3, generator=g, dtype=torch.float64), torch.ones(3, 5, dtype=torch.bool)
    a, _ = POLICY_LOSSES.get("ebpo")(logp, old, adv, mask, EBPOConfig(adv_alpha=0.0, preserve_high=False))
    b, _ = POLICY_LOSSES.get("grpo")(logp, old, adv, mask, GRPOLossConfig())
    assert float(a) == float(b)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    h, m = torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="window must be a positive int"):
        hwe_mask(h, m, 0, 1.0)
    with pytest.raises(ValueError, match=r"mask must be \[B, T\]"):
        hwe_count(h, torch.ones(2, 4), 2, 1.0)
    with pytest.raises(ValueError, match="percentile"):
        hwe_threshold(h, m, 1, 101.0)
    with pytest.raises(ValueError, match="ARESConfig.window"):
        ARESConfig(window=0)
    with pytest.raises(ValueError, match="threshold"):
        EBRolloutConfig(threshold=1.5)
    with pytest.raises(ValueError, match="unknown difficulty 'trivial'"):
        hierarchical_entropy_reward(1, 1, True, "trivial", 0.5)
    with pytest.raises(ValueError, match="budget k must be >= 1, got 0"):
        global_budget(1.0, 1.0, 0, 0.5)
    with pytest.raises(ValueError, match="finite"):
        global_budget(float("nan"), 1.0, 4, 0.5)
    with pytest.raises(ValueError, match="needs entropy"):
        POLICY_LOSSES.get("ebpo")(h, h, torch.zeros(2), m, EBPOConfig())
    with pytest.raises(ValueError, match="needs rollout ares or entropy_balanced"):
        check_config(LLMTrainConfig(rollout_config={"window": 3}))
    with pytest.raises(ValueError, match="unknown rollout 'tree'"):
        check_config(LLMTrainConfig(rollout="tree"))
    with pytest.raises(ValueError, match="does not combine"):
        check_config(LLMTrainConfig(rollout="ares", loss="hapo"))
    with pytest.raises(KeyError, match="unknown ARESConfig field"):
        check_config(LLMTrainConfig(rollout="ares", rollout_config={"windw": 3}))


# ----------------------------------------------------------------------------- trainer
@pytest.mark.parametrize("rollout,extra", [("ares", {"kl_coef": 0.05, "rollout_config": {"kl_update_interval": 1}}),
                                           ("entropy_balanced", {"loss": "ebpo"})])
def test_trainer_runs_each_rollout(tiny, rollout, extra):
    import copy

    from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward

    cfg = LLMTrainConfig(steps=2, group_size=4, prompts_per_step=2, max_new_tokens=5, lr=1e-3, rollout=rollout,
                         **extra)
    tr = LLMTrainer(copy.deepcopy(tiny.model), tiny.tokenizer, arithmetic_reward, ArithmeticTask().prompt_source(), cfg)
    logs = tr.train(progress=False)
    assert len(logs) == 2
    for m in logs:
        assert m["rollout/logp_mismatch"] < 1e-4 and m["rollout/generated_tokens"] > 0
        assert all(math.isfinite(v) for v in m.values() if isinstance(v, float))
    if rollout == "ares":
        assert "ares/threshold" in logs[0] and "kl/k3" in logs[0]
        assert logs[1]["ares/kl_beta_hard"] != 1.0 or logs[1]["ares/kl_beta_easy"] != 1.0 \
            or logs[1]["ares/kl_beta_medium"] != 1.0
    else:
        assert all(m["eb/global_mean"] >= 1 for m in logs)


def test_cli_trains_with_each_rollout(tiny, tmp_path):
    import argparse
    import json

    from gendiff.llm.cli import add_llm_commands

    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    for rollout, conf in (("ares", "{window: 2, hwe_boost: 1.0}"), ("entropy_balanced", "{threshold: 0.3}")):
        parser = argparse.ArgumentParser()
        add_llm_commands(parser.add_subparsers(dest="command"))
        out = tmp_path / rollout
        args = parser.parse_args(["llm", "train", "--out", str(out), "--model", str(tmp_path / "m"), "--steps", "2",
                                  "--group-size", "4", "--prompts-per-step", "2", "--max-new-tokens", "5",
                                  "--eval-prompts", "8", "--no-progress", "--rollout", rollout, "--rollout-config", conf])
        args._run(args)
        logs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
        assert len(logs) == 2 and all(m["rollout/generated_tokens"] > 0 for m in logs)


def test_ares_state_round_trips_through_a_checkpoint(tiny, tmp_path):
    import copy

    from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward

    cfg = LLMTrainConfig(steps=2, group_size=4, prompts_per_step=2, max_new_tokens=5, lr=1e-3, rollout="ares",
                         kl_coef=0.05, rollout_config={"kl_update_interval": 1, "window": 2})
    tr = LLMTrainer(copy.deepcopy(tiny.model), tiny.tokenizer, arithmetic_reward, ArithmeticTask().prompt_source(), cfg)
    tr.train(steps=1, progress=False)
    tr.save_checkpoint(tmp_path / "ck")
    again = LLMTrainer(copy.deepcopy(tiny.model), tiny.tokenizer, arithmetic_reward, ArithmeticTask().prompt_source(),
                       cfg)
    again.load_checkpoint(tmp_path / "ck")
    assert again.ares.state_dict() == tr.ares.state_dict() and again.ares.threshold.value is not None
