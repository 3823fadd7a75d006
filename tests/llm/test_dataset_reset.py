"""DR-PO dataset reset (gendiff.llm.dataset_reset): the seeded mixing rate, a length-0 reset equal to a prompt
rollout, a literal float64 check that the prefix tokens carry no loss, the reward on prefix + continuation, the
`gendiff llm train --reset-rate` command, and clear errors for bad input."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from datasets import DatasetDict, load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer

from gendiff.llm.dataset_reset import (
    DatasetReset,
    ResetRow,
    check_reset_data,
    extend_prompts,
    keep_eos_after_prefix,
    load_reset_rows,
)
from gendiff.llm.prefs.run import PrefMakeConfig, run_make
from gendiff.llm.sampling import Completions
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_tiny_lm, solve
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer, check_config

TASK = ArithmeticTask()


def prompts(n, rng):
    return TASK.sample(n, rng)[0]


def is_task_prompt(p: str) -> bool:
    try:
        return bool(solve(p))
    except ValueError:
        return False


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny SFT model and `gendiff llm prefs make` data sampled from it (partial credit: many pairs)."""
    root = tmp_path_factory.mktemp("drpo")
    build_tiny_lm(seed=0, sft_steps=40, out_dir=root / "sft", layers=2, hidden=64, batch_size=32)
    run_make(PrefMakeConfig(out=str(root / "prefs"), model=str(root / "sft"), prompts=24, k=4, partial_credit=True,
                            max_new_tokens=6, progress=False))
    return root


def load(path):
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def small(**kw) -> LLMTrainConfig:
    base = {"steps": 3, "group_size": 4, "prompts_per_step": 2, "max_new_tokens": 5, "lr": 1e-3}
    return LLMTrainConfig(**{**base, **kw})


def test_the_pool_is_the_distinct_chosen_responses(made):
    _, tok = load(made / "sft")
    rows = load_reset_rows(made / "prefs", tok)
    pairs = load_from_disk(str(made / "prefs" / "data"))["pairs"]
    expected = {(p, tuple(i)) for p, i in zip(pairs["prompt"], pairs["chosen_ids"], strict=True) if len(i) >= 2}
    assert {(r.prompt, r.chosen_ids) for r in rows} == expected and len(rows) == len(expected)


def test_the_mixing_rate_is_a_seeded_count(made):
    _, tok = load(made / "sft")
    rows = load_reset_rows(made / "prefs", tok)
    step = [f"{10 + i}+{20 + i}=" for i in range(2000)]
    # rate 0: nothing replaced and the trainer's random stream untouched
    rng = random.Random(3)
    before = rng.getstate()
    out, pre = DatasetReset(rows, 0.0).choose(step, rng)
    assert out == step and pre == [[]] * len(step) and rng.getstate() == before
    # rate 1: every prompt is a dataset prompt with a proper prefix 1 <= h <= L - 1 of its chosen response
    out, pre = DatasetReset(rows, 1.0).choose(step, random.Random(3))
    by_prompt = {}
    for r in rows:
        by_prompt.setdefault(r.prompt, []).append(r.chosen_ids)
    for p, h in zip(out, pre, strict=True):
        assert any(1 <= len(h) <= len(c) - 1 and tuple(h) == c[: len(h)] for c in by_prompt[p])
    # rate 0.3, seed 5: the documented draw order gives a known count (literal re-draw)
    out, pre = DatasetReset(rows, 0.3).choose(step, random.Random(5))
    ref, count = random.Random(5), 0
    for _ in step:
        if ref.random() < 0.3:
            row = rows[ref.randrange(len(rows))]
            ref.randint(1, len(row.chosen_ids) - 1)
            count += 1
    assert sum(map(bool, pre)) == count
    assert abs(count - 600) < 4 * (2000 * 0.3 * 0.7) ** 0.5  # binomial(2000, 0.3): 4 sigma
    assert [p for p, h in zip(out, pre, strict=True) if not h] == [s for s, h in zip(step, pre, strict=True) if not h]
    # h is uniform over 1..L-1: every length appears for a 4-token response
    long = ResetRow("12+34=", (5, 6, 7, 2))
    lengths = [len(h) for h in DatasetReset([long], 1.0).choose(["x"] * 300, random.Random(0))[1]]
    assert set(lengths) == {1, 2, 3} and all(60 < lengths.count(v) < 140 for v in (1, 2, 3))


def test_a_length_zero_reset_is_a_prompt_rollout(made):
    model, tok = load(made / "sft")
    trainer = LLMTrainer(model, tok, arithmetic_reward, prompts, small(seed=2))
    step = trainer._next_prompts()
    trainer.generator.manual_seed(11)
    plain = trainer.rollout(step)
    trainer.generator.manual_seed(11)
    zero = trainer.rollout(step, [[] for _ in step])
    for key in ("completion_ids", "completion_mask", "logp", "prompt_ids"):
        assert torch.equal(getattr(plain["batch"], key), getattr(zero["batch"], key)), key
    assert plain["texts"] == zero["texts"] and torch.equal(plain["advantages"], zero["advantages"])
    # a length-0 row beside a reset row (more left padding) still samples the same tokens
    trainer.generator.manual_seed(11)
    mixed = trainer.rollout(step, [[], tok(solve(step[1]), add_special_tokens=False)["input_ids"][:1]])
    g = trainer.config.group_size
    width = mixed["batch"].completion_ids.shape[1]
    assert torch.equal(mixed["batch"].completion_ids[:g], plain["batch"].completion_ids[:g, :width])
    torch.testing.assert_close(mixed["batch"].logp[:g], plain["batch"].logp[:g, :width], atol=1e-5, rtol=0)
    assert mixed["texts"][:g] == plain["texts"][:g]


def _literal_grad(model64, batch, adv: torch.Tensor, eos: int, with_prefix: list[int] | None) -> list[torch.Tensor]:
    """float64 gradient of the token-mean -A_i exp(logp - sg(logp)) over each row's generated tokens (plus its last
    ``with_prefix[i]`` prompt tokens, the negative control), from one unpadded forward per row."""
    model64.zero_grad(set_to_none=True)
    terms = []
    for i in range(batch.completion_ids.shape[0]):
        prompt = batch.prompt_ids[i][batch.prompt_mask[i].bool()]
        row = batch.completion_ids[i].tolist()
        n = row.index(eos) + 1 if eos in row else len(row)  # generated tokens through EOS (EOS alone included)
        ids = torch.cat([prompt, batch.completion_ids[i, :n]])
        logp = torch.log_softmax(model64(input_ids=ids[None]).logits[0].double(), -1)
        first = len(prompt) - (with_prefix[i] if with_prefix else 0)  # first trained position
        for t in range(first, len(ids)):
            lp = logp[t - 1, ids[t]]
            terms.append(-adv[i] * torch.exp(lp - lp.detach()))
    (torch.stack(terms).sum() / len(terms)).backward()
    return [p.grad.clone() for p in model64.parameters()]


def test_the_prefix_tokens_carry_no_loss_literal_float64(made):
    model, tok = load(made / "sft")
    model64 = copy.deepcopy(model).double()
    seen = {}

    def reward(prompts, completions, completion_ids):
        seen.update(completions=completions, ids=completion_ids)
        return arithmetic_reward(prompts, completions, partial_credit=True)

    trainer = LLMTrainer(model, tok, reward, prompts, small(seed=4))
    rows = load_reset_rows(made / "prefs", tok)
    picks = [r for r in rows if len(r.chosen_ids) >= 3][:2]
    prefixes = [list(r.chosen_ids[:2]) for r in picks]
    roll = trainer.rollout([r.prompt for r in picks], prefixes)
    batch, g = roll["batch"], trainer.config.group_size
    # roll-in: the prefix ends each row's prompt; the completion holds only generated tokens
    for i in range(batch.prompt_ids.shape[0]):
        assert batch.prompt_ids[i, -2:].tolist() == prefixes[i // g]
    # the reward saw prefix + continuation
    for i, (text, ids) in enumerate(zip(seen["completions"], seen["ids"], strict=True)):
        n = int(batch.completion_mask[i].sum())
        assert ids == prefixes[i // g] + batch.completion_ids[i, :n].tolist()
        assert text == tok.decode(ids, skip_special_tokens=True) and text.startswith(tok.decode(prefixes[i // g]))
    # the trainer's loss gradient equals the float64 literal over the generated tokens only
    roll["advantages"] = torch.linspace(-1.0, 1.5, batch.completion_ids.shape[0])
    trainer.optimizer.zero_grad(set_to_none=True)
    loss, _, _ = trainer._micro_loss(roll, slice(0, None), None)
    loss.backward()
    got = [p.grad for p in trainer.model.parameters()]
    want = _literal_grad(model64, batch, roll["advantages"].double(), tok.eos_token_id, None)
    wrong = _literal_grad(model64, batch, roll["advantages"].double(), tok.eos_token_id, [2] * batch.completion_ids.shape[0])

    def rel(a, b):
        return float(torch.cat([(x.double() - y).flatten() for x, y in zip(a, b, strict=True)]).norm()
                     / torch.cat([y.flatten() for y in b]).norm())

    assert rel(got, want) < 1e-4
    assert rel(got, wrong) > 1e-2  # the check can fail: training the prefix tokens too gives another gradient


def test_training_with_resets_and_the_cli(made, tmp_path):
    model, tok = load(made / "sft")
    cfg = small(steps=2, reset_rate=0.5, reset_data=str(made / "prefs"), seed=1)
    logs = LLMTrainer(model, tok, arithmetic_reward, prompts, cfg).train(progress=False)
    assert all(m["drpo/reset_frac"] in (0.0, 0.5, 1.0) for m in logs) and "drpo/prefix_mean" in logs[0]
    import argparse

    from gendiff.llm.cli import add_llm_commands

    parser = argparse.ArgumentParser()
    add_llm_commands(parser.add_subparsers(dest="command"))
    argv = ["llm", "train", "--steps", "2", "--out", str(tmp_path / "run"), "--model", str(made / "sft"),
            "--group-size", "4", "--prompts-per-step", "2", "--max-new-tokens", "5", "--eval-prompts", "8",
            "--reset-rate", "1.0", "--reset-data", str(made / "prefs"), "--no-progress"]
    summary = parser.parse_args(argv)._run(parser.parse_args(argv))
    assert 0.0 <= summary["after"]["greedy"] <= 1.0
    assert '"drpo/reset_frac": 1.0' in (tmp_path / "run" / "log.jsonl").read_text()


def test_bad_input_gives_clear_errors(made, tmp_path):
    _, tok = load(made / "sft")
    for rate in (-0.1, 1.5):
        with pytest.raises(ValueError, match=f"reset_rate must be a fraction in \\[0, 1\\], got {rate}"):
            check_config(LLMTrainConfig(reset_rate=rate, reset_data=str(made / "prefs")))
    with pytest.raises(ValueError, match="reset_rate 0.5 needs reset_data"):
        check_config(LLMTrainConfig(reset_rate=0.5))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_reset_rows(tmp_path / "nowhere", tok)
    pairs = load_from_disk(str(made / "prefs" / "data"))["pairs"]
    DatasetDict({"lists": pairs}).save_to_disk(str(tmp_path / "nopairs"))
    with pytest.raises(ValueError, match="no 'pairs' split"):
        load_reset_rows(tmp_path / "nopairs", tok)
    foreign = pairs.map(lambda r: {"chosen_ids": [(i + 1) % len(tok) for i in r["chosen_ids"]]})
    DatasetDict({"pairs": foreign}).save_to_disk(str(tmp_path / "foreign"))
    with pytest.raises(ValueError, match="another tokenizer"):
        load_reset_rows(tmp_path / "foreign", tok)
    with pytest.raises(ValueError, match="at least one"):
        DatasetReset([], 0.5)
    with pytest.raises(ValueError, match=">= 2 tokens"):
        DatasetReset([ResetRow("1+1=", (5,))], 0.5)
    # a dataset of another task, of foreign prompts, or holding held-out problems
    (tmp_path / "other").mkdir()
    DatasetDict({"pairs": pairs}).save_to_disk(str(tmp_path / "other" / "data"))
    (tmp_path / "other" / "make.yaml").write_text("task: sorting\n")
    with pytest.raises(ValueError, match="made for the task 'sorting', this run is 'arithmetic'"):
        check_reset_data(tmp_path / "other", "arithmetic", [], is_task_prompt)
    DatasetDict({"pairs": pairs.map(lambda r: {"prompt": "sort 3 1 2"})}).save_to_disk(str(tmp_path / "words"))
    with pytest.raises(ValueError, match="'sort 3 1 2', which is not a prompt of the task 'arithmetic'"):
        check_reset_data(tmp_path / "words", "arithmetic", [], is_task_prompt)
    with pytest.raises(ValueError, match="held-out problems"):
        check_reset_data(made / "prefs", "arithmetic", [pairs["prompt"][0]], is_task_prompt)
    check_reset_data(made / "prefs", "arithmetic", TASK.heldout(200), is_task_prompt)  # make excluded them
    ids, mask = torch.tensor([[1, 5, 6]]), torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds the model's context of 6"):
        extend_prompts(ids, mask, [[7, 8]], 0, context=6, max_new_tokens=2)
    with pytest.raises(ValueError, match="1 prefixes for 2 prompts"):
        extend_prompts(ids.repeat(2, 1), mask.repeat(2, 1), [[7]], 0)
    # the command refuses bad reset data before any SFT minute
    from gendiff.llm.run import LLMRunConfig, run_train

    with pytest.raises(ValueError, match="made for the task 'sorting'"):
        run_train(LLMRunConfig(out=str(tmp_path / "r"), reset_rate=0.5, reset_data=str(tmp_path / "other")))
    assert not (tmp_path / "r").exists()



def test_eos_right_after_a_prefix_is_a_trained_token():
    c = Completions(prompt_ids=torch.zeros(3, 2, dtype=torch.long), prompt_mask=torch.ones(3, 2, dtype=torch.long),
                    completion_ids=torch.tensor([[2, 0], [2, 0], [7, 2]]),
                    completion_mask=torch.tensor([[0, 0], [0, 0], [1, 1]]), logp=torch.zeros(3, 2),
                    entropy=torch.zeros(3, 2), finished=torch.tensor([True, True, True]))
    keep_eos_after_prefix(c, [[5], [], [5]], eos_ids=[2])  # row 0: prefix + EOS; row 1: an empty prompt rollout
    assert c.completion_mask.tolist() == [[1, 0], [0, 0], [1, 1]]
