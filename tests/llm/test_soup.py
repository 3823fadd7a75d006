"""SALSA's soup reference: the soup's weights are the weighted average of its ingredients; mismatched models and
bad weights give clear errors; LLMTrainer with ``reference="soup:A,B"`` scores its rollouts with the soup."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gendiff.llm.soup import parse_reference, weight_soup
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_model, build_tiny_lm, sft
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer, check_config, policy_logp_entropy

TASK = ArithmeticTask()


@pytest.fixture(scope="module")
def ingredients(tmp_path_factory):
    """Two SFT models fine-tuned independently (data seeds 1, 2) from one base, saved with the tokenizer."""
    root = tmp_path_factory.mktemp("soup")
    base = build_tiny_lm(seed=0, sft_steps=10, layers=2, hidden=64, batch_size=32)
    paths = []
    for seed in (1, 2):
        model = copy.deepcopy(base.model)
        sft(model, base.tokenizer, TASK, 5, batch_size=32, seed=seed)
        model.save_pretrained(root / f"sft{seed}")
        base.tokenizer.save_pretrained(root / f"sft{seed}")
        paths.append(root / f"sft{seed}")
    return paths, base.tokenizer


def test_the_soup_is_the_weighted_average(ingredients):
    (a, b), _ = ingredients
    ma, mb = (AutoModelForCausalLM.from_pretrained(p) for p in (a, b))
    sa, sb = ma.state_dict(), mb.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)  # the ingredients differ
    for weights, soup in (((0.5, 0.5), weight_soup([a, b])), ((0.25, 0.75), weight_soup([ma, mb], [0.25, 0.75]))):
        for key, t in soup.state_dict().items():
            want = (weights[0] * sa[key].double() + weights[1] * sb[key].double()).to(t.dtype)
            assert torch.equal(t, want), key
        assert not soup.training and not any(p.requires_grad for p in soup.parameters())
    assert ma.state_dict()["lm_head.weight"].data_ptr() == sa["lm_head.weight"].data_ptr()  # inputs untouched


def test_mismatched_models_and_bad_weights_raise_clear_errors(ingredients, tmp_path):
    (a, b), tok = ingredients
    ma = AutoModelForCausalLM.from_pretrained(a)
    with pytest.raises(ValueError, match="does not match .* at .*: \\(.*\\)"):
        weight_soup([ma, build_model(tok, layers=2, hidden=32, seed=0)])
    with pytest.raises(ValueError, match="another architecture"):
        weight_soup([ma, build_model(tok, layers=3, hidden=64, seed=0)])
    with pytest.raises(ValueError, match="sum to 1"):
        weight_soup([a, b], [0.5, 0.6])
    with pytest.raises(ValueError, match="2 weights for 3 models"):
        weight_soup([a, b, a], [0.5, 0.5])
    with pytest.raises(ValueError, match="at least two models"):
        weight_soup([a])
    with pytest.raises(FileNotFoundError, match="not a save_pretrained folder"):
        weight_soup([a, tmp_path / "nothing"])
    assert parse_reference("initial") is None and parse_reference(f"soup:{a},{b}") == [str(a), str(b)]
    with pytest.raises(ValueError, match="at least two"):
        parse_reference(f"soup:{a}")
    with pytest.raises(ValueError, match="'initial' or 'soup:"):
        parse_reference("sft")
    with pytest.raises(ValueError, match="needs kl_coef > 0"):
        check_config(LLMTrainConfig(reference=f"soup:{a},{b}"))


def test_the_trainer_uses_the_soup_as_its_kl_reference(ingredients):
    (a, b), _ = ingredients
    model, tok = AutoModelForCausalLM.from_pretrained(a), AutoTokenizer.from_pretrained(a)
    cfg = LLMTrainConfig(steps=1, group_size=4, prompts_per_step=2, max_new_tokens=5, lr=1e-3, kl_coef=0.1,
                         reference=f"soup:{a},{b}")

    def reward(prompts, completions):
        return arithmetic_reward(prompts, completions, partial_credit=True)

    trainer = LLMTrainer(model, tok, reward, lambda n, rng: TASK.sample(n, rng)[0], cfg)
    soup = weight_soup([a, b])
    for key, t in soup.state_dict().items():
        assert torch.equal(trainer.ref_model.state_dict()[key], t), key
    roll = trainer.rollout(TASK.sample(2, random.Random(0))[0])
    with torch.no_grad():
        want, _ = policy_logp_entropy(soup, roll["batch"], cfg.temperature)
        start, _ = policy_logp_entropy(model, roll["batch"], cfg.temperature)
    mask = roll["batch"].completion_mask.bool()
    assert torch.allclose(roll["ref_logp"][mask], want[mask], atol=1e-6)
    assert not torch.allclose(roll["ref_logp"][mask], start[mask], atol=1e-4)  # not the initial policy
    metrics = trainer.update(roll)
    assert metrics["kl/k3"] > 0
