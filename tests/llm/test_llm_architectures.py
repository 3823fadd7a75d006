"""Two more architectures end to end: a tiny Qwen2 on the fast decoder (q/k/v biases, grouped-query
attention) and a tiny GPT-2 on the generic Hugging Face path (learned positions, LayerNorm, GELU, its own
KV cache). Each is SFT-trained, saved, reloaded and RL-trained for a few steps on a learnable reward."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gendiff.llm.fast_decode import supports_fast_decode
from gendiff.llm.sampling import sample_completions
from gendiff.llm.tasks import ArithmeticTask, build_tiny_lm
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer, policy_logp_entropy

TASK = ArithmeticTask()


@pytest.fixture(scope="module", params=["qwen2", "gpt2"])
def saved(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    tiny = build_tiny_lm(seed=0, sft_steps=60, out_dir=path, layers=2, hidden=64, batch_size=32, arch=request.param)
    assert tiny.sft_losses[-1] < 0.6 * tiny.sft_losses[0]  # SFT learns on this architecture too
    return request.param, path


def test_decoder_path_and_training_forward_agree(saved):
    """Qwen2 takes the fast decoder, GPT-2 the HF forward with its cache; either way the sampler's
    log-probs equal the training forward's, with left padding and groups."""
    arch, path = saved
    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == {"qwen2": "Qwen2ForCausalLM", "gpt2": "GPT2LMHeadModel"}[arch]
    assert supports_fast_decode(model) == (arch == "qwen2")
    enc = tok(["12+34=", "1+2=", "123+4="], return_tensors="pt", padding=True)
    c = sample_completions(model, enc["input_ids"], enc["attention_mask"], 6, [tok.eos_token_id], tok.pad_token_id,
                           temperature=0.9, group_size=3, generator=torch.Generator().manual_seed(0))
    m = c.completion_mask.bool()
    logp, ent = policy_logp_entropy(model, c, 0.9, fast=False)  # the plain HF forward as reference
    torch.testing.assert_close(logp[m], c.logp[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent[m], c.entropy[m], atol=1e-5, rtol=1e-5)
    if arch == "qwen2":  # the fast sampler draws the same tokens as the HF one from the same generator
        h = sample_completions(model, enc["input_ids"], enc["attention_mask"], 6, [tok.eos_token_id], tok.pad_token_id,
                               temperature=0.9, group_size=3, generator=torch.Generator().manual_seed(0), fast=False)
        assert torch.equal(h.completion_ids, c.completion_ids)


def test_rl_trains_each_architecture(saved):
    """Reward: the completion starts with '1'. A few GRPO steps at a high lr raise it clearly."""
    _, path = saved
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = LLMTrainConfig(steps=14, group_size=8, prompts_per_step=2, max_new_tokens=3, lr=1e-2, seed=1)
    logs = LLMTrainer(model, tok, lambda p, c: [float(x.startswith("1")) for x in c], TASK.prompt_source(),
                      cfg).train(progress=False)
    assert all(m["rollout/logp_mismatch"] < 1e-4 for m in logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    first = sum(m["reward/mean"] for m in logs[:3]) / 3
    last = sum(m["reward/mean"] for m in logs[-3:]) / 3
    assert last > first + 0.25, (first, last)
