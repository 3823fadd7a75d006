"""gendiff.llm.layer_policies (internal layer policies), the BuPO option of LLMTrainer, ``gendiff llm layer-entropy``,
and gendiff.rl.policy_cliff. Real tiny Hugging Face models built locally; nothing is downloaded."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BertConfig, BertModel

from gendiff.llm.layer_policies import find_layer_parts, layer_entropy_profile, layer_logits
from gendiff.llm.sampling import position_ids_from_mask, sample_completions
from gendiff.llm.tasks import ArithmeticTask, build_model, build_tiny_lm, train_tokenizer
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer, policy_logp_entropy
from gendiff.rl.policy_cliff import regularized_optimum, train_softmax_policy

TASK = ArithmeticTask()


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TASK.corpus(n=300))


def _batch(tok):
    enc = tok(["12+34=46", "1+2=", "123+4=127"], return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert tok.padding_side == "left" and bool((mask == 0).any())  # padding is exercised
    return ids, mask, position_ids_from_mask(mask)


def _reference_layer_logits(model, ids, mask, pos) -> list[torch.Tensor]:
    """Literal float64 logit lens from ``output_hidden_states`` (not from the hooks under test): entries 1..L-1 are
    the residual streams before the final norm, entry L is already normed by the model."""
    model = model.double()
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    parts = find_layer_parts(model)
    hs = out.hidden_states
    n = len(hs) - 1
    return [parts.lm_head(parts.final_norm(hs[i]) if i < n else hs[i]) for i in range(1, n + 1)]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_last_layer_policy_is_the_models_policy_and_entropies_match_float64(tokenizer, arch):
    model = build_model(tokenizer, layers=3, hidden=32, arch=arch, seed=1).eval()
    ids, mask, pos = _batch(tokenizer)
    with torch.no_grad():
        z = layer_logits(model, ids, mask, position_ids=pos)
        own = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        assert sorted(z) == [1, 2, 3]
        torch.testing.assert_close(torch.softmax(z[3], -1), torch.softmax(own, -1), atol=1e-6, rtol=1e-5)
        assert not torch.allclose(torch.softmax(z[1], -1), torch.softmax(own, -1), atol=1e-3)  # lower layers differ
        prof = layer_entropy_profile(model, ids, mask, temperature=0.7, position_ids=pos)
        ref = _reference_layer_logits(model, ids, mask, pos)
    assert prof.entropy.shape == (3, *ids.shape)
    m = mask.bool()
    for i, zr in enumerate(ref):
        logp = torch.log_softmax(zr / 0.7, -1)
        h = -(logp.exp() * logp).sum(-1)  # H = -sum_v p_v log p_v, float64
        torch.testing.assert_close(prof.entropy[i][m].double(), h[m], atol=1e-5, rtol=1e-5)
        assert prof.mean[i].item() == pytest.approx(h[m].mean().item(), abs=1e-5)


def test_unknown_architecture_names_the_model_class():
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                vocab_size=50))
    with pytest.raises(ValueError, match="BertModel"):
        find_layer_parts(bert)


def test_bupo_logp_equals_a_float64_layer_reference(tokenizer):
    """The log-prob BuPO's loss uses: log softmax(lm_head(norm(h_l)) / T) at the sampled completion tokens."""
    model = build_model(tokenizer, layers=3, hidden=32, arch="llama", seed=2).eval()
    enc = tokenizer(["12+34=", "1+2="], return_tensors="pt", padding=True)
    batch = sample_completions(model, enc["input_ids"], enc["attention_mask"], 4, [tokenizer.eos_token_id],
                               tokenizer.pad_token_id, temperature=1.0, group_size=2,
                               generator=torch.Generator().manual_seed(0))
    logp, ent = policy_logp_entropy(model, batch, 0.8, layer=2)
    assert logp.requires_grad
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
    mask = torch.cat([batch.prompt_mask, torch.ones_like(batch.completion_ids)], 1)
    with torch.no_grad():
        z2 = _reference_layer_logits(model, ids, mask, position_ids_from_mask(mask))[1]
    t = batch.completion_ids.shape[1]
    ref_lp = torch.log_softmax(z2[:, -t - 1 : -1] / 0.8, -1)
    ref_logp = ref_lp.gather(-1, batch.completion_ids[..., None]).squeeze(-1)
    ref_ent = -(ref_lp.exp() * ref_lp).sum(-1)
    m = batch.completion_mask.bool()
    torch.testing.assert_close(logp.detach()[m].double(), ref_logp[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent.detach()[m].double(), ref_ent[m], atol=1e-5, rtol=1e-5)
    top, _ = policy_logp_entropy(model.float(), batch, 0.8)
    assert not torch.allclose(top[m], logp.detach()[m].float(), atol=1e-3)  # a different policy than the model's


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_bupo")
    build_tiny_lm(seed=0, sft_steps=30, out_dir=path, layers=2, hidden=64, batch_size=32)
    return path


def test_bupo_phase_trains_only_up_to_its_layer_then_the_top(saved):
    model, tok = AutoModelForCausalLM.from_pretrained(saved), AutoTokenizer.from_pretrained(saved)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    cfg = LLMTrainConfig(steps=2, group_size=4, prompts_per_step=2, max_new_tokens=4, lr=1e-2, bupo_layer=1,
                         bupo_steps=2)
    reward = lambda p, c: [float(x.startswith("1")) for x in c]  # noqa: E731
    trainer = LLMTrainer(model, tok, reward, TASK.prompt_source(), cfg)
    logs = trainer.train(progress=False)
    assert all(m["bupo/layer"] == 1.0 and "bupo/layer_entropy" in m and "actor/entropy" not in m for m in logs)
    assert logs[0]["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-6)  # old log-probs are the layer policy's too
    moved = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert any(k.startswith("model.layers.0.") for k in moved) and "lm_head.weight" in moved
    assert not any(k.startswith("model.layers.1.") for k in moved)  # above layer 1: no gradient in the phase
    trainer.config.steps = 3  # past bupo_steps: the normal top-layer objective
    last = trainer.train(steps=1, progress=False)[0]
    assert "bupo/layer" not in last and last["rollout/logp_mismatch"] < 1e-4 and "actor/entropy" in last
    assert any(not torch.equal(v, before[k]) for k, v in model.named_parameters() if k.startswith("model.layers.1."))


def test_bupo_config_errors(saved):
    model, tok = AutoModelForCausalLM.from_pretrained(saved), AutoTokenizer.from_pretrained(saved)
    with pytest.raises(ValueError, match="both bupo_layer and bupo_steps"):
        LLMTrainer(model, tok, lambda p, c: [0.0] * len(c), ["1+2="], LLMTrainConfig(bupo_layer=1))
    with pytest.raises(ValueError, match="exceeds the 2 decoder layers of LlamaForCausalLM"):
        LLMTrainer(model, tok, lambda p, c: [0.0] * len(c), ["1+2="], LLMTrainConfig(bupo_layer=3, bupo_steps=1))


def test_cli_layer_entropy(saved, tmp_path, capsys):
    from gendiff.cli import build_parser

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    texts = tmp_path / "t.txt"
    texts.write_text("12+34=\t46\n1+2=\t3\nno completion here\n")
    argv = ["llm", "layer-entropy", "--model", str(saved), "--texts", str(texts), "--out", str(tmp_path / "prof")]
    args = build_parser().parse_args(argv)
    res = args._run(args)
    data = json.loads((tmp_path / "prof.json").read_text())
    assert data == json.loads(json.dumps(res)) and [r["layer"] for r in data["layers"]] == [1, 2]
    assert data["completion_tokens"] == 3 and data["tokens"] > 3  # '46', '3' (char-level): positions that predict them
    assert all(math.isfinite(r["entropy"]) and r["completion_entropy"] >= 0 for r in data["layers"])
    assert "layer | entropy" in (tmp_path / "prof.md").read_text() and "layer | entropy" in capsys.readouterr().out
    with pytest.raises(FileExistsError):
        args._run(args)


def test_entropy_regularised_optimum_is_softmax_and_training_reaches_it():
    r = torch.tensor([[1.0, 1.2, 0.3], [0.5, 0.5, -1.0]], dtype=torch.float64)
    for alpha in (0.3, 1.0, 2.0):  # (small alpha with a far-off arm: softmax PG converges slowly, p_min ~ e^-9)
        opt = regularized_optimum(r, alpha)
        torch.testing.assert_close(opt, torch.exp(r / alpha) / torch.exp(r / alpha).sum(-1, keepdim=True))
        trained = train_softmax_policy(r, alpha, steps=3000, lr=2.0)
        torch.testing.assert_close(trained, opt, atol=1e-6, rtol=0)
    # two near-optimal arms: sigmoid(delta / alpha) with entropy, a jump at delta = 0 without
    deltas = torch.tensor([-1e-3, 0.0, 1e-3], dtype=torch.float64)
    two = torch.stack([torch.ones_like(deltas), 1 + deltas], -1)
    torch.testing.assert_close(regularized_optimum(two, 0.1)[:, 1], torch.sigmoid(deltas / 0.1))
    assert regularized_optimum(two, 0.0)[:, 1].tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError):
        regularized_optimum(two, -1.0)
