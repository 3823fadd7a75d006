"""gendiff.llm.tasks: tokenizer, reward, SFT, save/load, and the sampler it uses."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gendiff.llm.fast_decode import supports_fast_decode
from gendiff.llm.sampling import sample_completions, top_p_filter
from gendiff.llm.tasks import (
    ArithmeticTask,
    arithmetic_reward,
    build_model,
    build_tiny_lm,
    digit_credit,
    solve,
    train_tokenizer,
)


def test_solve_and_reward():
    assert solve("12+345=") == "357"
    assert solve("50-75=") == "-25"
    assert solve("12*12=") == "144"
    with pytest.raises(ValueError, match="arithmetic prompt"):
        solve("hello")
    r = arithmetic_reward(["12+345=", "1+1=", "1+1="], [" 357", "3", ""])
    assert r == [1.0, 0.0, 0.0]
    partial = arithmetic_reward(["12+345="], ["367"], partial_credit=True)[0]
    assert partial == pytest.approx(0.5 * 2 / 3)
    assert digit_credit("357", "357") == 1.0
    with pytest.raises(ValueError, match="completions"):
        arithmetic_reward(["1+1="], [])


def test_task_sampling_is_seeded_and_correct():
    task = ArithmeticTask(digits_a=3, digits_b=1, ops=("+", "-"))
    p1, a1 = task.sample(20, random.Random(3))
    p2, _ = task.sample(20, random.Random(3))
    assert p1 == p2
    for p, a in zip(p1, a1, strict=True):
        lhs = p[:-1]
        assert str(eval(lhs)) == a  # noqa: S307 - digits and one operator only
        assert 100 <= int(lhs.split("+")[0].split("-")[0]) <= 999
    with pytest.raises(ValueError, match="ops"):
        ArithmeticTask(ops=("/",))


def test_tokenizer_char_and_bpe():
    corpus = ArithmeticTask().corpus(500)
    tok = train_tokenizer(corpus)
    assert len(tok) == 3 + 12  # specials + digits, '+', '='
    enc = tok(["12+34=", "1+2="], padding=True)
    assert enc["input_ids"][1][:2] == [tok.pad_token_id] * 2  # left padding
    assert enc["input_ids"][0][0] == tok.bos_token_id
    assert tok.batch_decode(enc["input_ids"], skip_special_tokens=True) == ["12+34=", "1+2="]
    bpe = train_tokenizer(corpus, vocab_size=60)
    assert len(bpe) == 60
    assert len(bpe("12+34=46")["input_ids"]) < 9  # merges shorten the text
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(corpus, vocab_size=5)


def test_sft_learns_and_roundtrips(tmp_path):
    """A short SFT must lower the loss clearly; the saved model and tokenizer reload offline."""
    tiny = build_tiny_lm(seed=0, sft_steps=60, out_dir=tmp_path, layers=2, hidden=64, batch_size=32)
    assert tiny.sft_losses[-1] < 0.6 * tiny.sft_losses[0]
    assert 0.0 <= tiny.accuracy <= 1.0
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.padding_side == "left" and tok.eos_token_id == tiny.tokenizer.eos_token_id
    enc = tok(["12+34="], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**enc).logits, tiny.model(**enc).logits, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_model():
    tok = train_tokenizer(ArithmeticTask().corpus(300))
    return build_model(tok, layers=2, hidden=64, seed=1).eval(), tok


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_fast_decoder_matches_hf_forward(tiny_model, temperature, top_p):
    """Same generator state -> same tokens, log-probs and entropies from the fast and the HF path,
    with left padding and groups."""
    model, tok = tiny_model
    assert supports_fast_decode(model)
    enc = tok(["12+34=", "1+2=", "123+4="], return_tensors="pt", padding=True)
    outs = []
    for fast in (True, False):
        g = torch.Generator().manual_seed(0)
        outs.append(sample_completions(model, enc["input_ids"], enc["attention_mask"], 10, [tok.eos_token_id],
                                       tok.pad_token_id, temperature, top_p, group_size=4, generator=g, fast=fast))
    a, b = outs
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.completion_mask, b.completion_mask)
    assert torch.allclose(a.logp, b.logp, atol=1e-5) and torch.allclose(a.entropy, b.entropy, atol=1e-5)
    assert a.completion_ids.shape[0] == 12


def test_sampler_eos_padding_and_distribution(tiny_model):
    model, tok = tiny_model
    enc = tok(["12+34="], return_tensors="pt")
    c = sample_completions(model, enc["input_ids"], enc["attention_mask"], 6, [tok.eos_token_id], tok.pad_token_id,
                           group_size=64, generator=torch.Generator().manual_seed(0))
    for ids, m, fin in zip(c.completion_ids, c.completion_mask, c.finished, strict=True):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any()  # mask is a prefix
        if fin:
            assert ids[n - 1] == tok.eos_token_id and (ids[n:] == tok.pad_token_id).all()
    # the first token's empirical frequencies follow softmax(logits) (exact inverse-CDF draws)
    with torch.no_grad():
        p = model(**enc).logits[0, -1].softmax(-1)
    c = sample_completions(model, enc["input_ids"], enc["attention_mask"], 1, [], tok.pad_token_id,
                           group_size=4000, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(c.completion_ids[:, 0], minlength=p.numel()).float() / 4000
    assert (freq - p).abs().max() < 0.03


def test_top_p_filter_keeps_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.75))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.1)).sum() == 1  # never empty
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_fast_training_forward_matches_hf_values_and_gradients(tiny_model):
    """FastDecoder.logits (used by the trainer) equals the HF forward, and so do the parameter gradients."""
    from gendiff.llm.trainer import policy_logp_entropy

    model, tok = tiny_model
    enc = tok(["12+34=", "1+2="], return_tensors="pt", padding=True)
    c = sample_completions(model, enc["input_ids"], enc["attention_mask"], 6, [tok.eos_token_id], tok.pad_token_id,
                           group_size=3, generator=torch.Generator().manual_seed(0))
    grads, outs = [], []
    for fast in (True, False):
        model.zero_grad()
        logp, ent = policy_logp_entropy(model, c, 0.8, fast=fast)
        m = c.completion_mask.bool()
        (logp[m].sum() + 0.5 * ent[m].sum()).backward()
        outs.append((logp.detach()[m], ent.detach()[m]))
        grads.append([p.grad.clone() for p in model.parameters()])
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5) and torch.allclose(outs[0][1], outs[1][1], atol=1e-5)
    for ga, gb in zip(*grads, strict=True):
        assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-4)
    model.zero_grad()
