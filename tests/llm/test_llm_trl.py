"""gendiff.llm.trl: TRL's GRPOTrainer with a gendiff loss, offline on a tiny saved model."""

from __future__ import annotations

import random

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig

from gendiff.llm.losses import ClipCovConfig
from gendiff.llm.tasks import ArithmeticTask, build_tiny_lm
from gendiff.llm.trl import GendiffGRPOTrainer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_trl")
    build_tiny_lm(seed=0, sft_steps=30, out_dir=path, layers=2, hidden=64, batch_size=32)
    return path


def make(saved, tmp_path, loss, loss_config=None, beta=0.0, num_iterations=1, steps=2):
    prompts, _ = ArithmeticTask().sample(32, random.Random(0))
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=5, bf16=False, gradient_checkpointing=False, beta=beta,
                      learning_rate=1e-2, max_steps=steps, logging_steps=1, save_strategy="no", report_to=[],
                      use_cpu=True, disable_tqdm=True, num_iterations=num_iterations, seed=0)

    def reward(prompts, completions, **_):
        return [float(c.strip().startswith("1")) + 0.1 * i for i, c in enumerate(completions)]

    return GendiffGRPOTrainer(model=str(saved), reward_funcs=reward, args=args,
                              train_dataset=Dataset.from_dict({"prompt": prompts}),
                              processing_class=AutoTokenizer.from_pretrained(saved),
                              gendiff_loss=loss, gendiff_loss_config=loss_config)


def test_clip_cov_runs_offline_and_updates(saved, tmp_path):
    trainer = make(saved, tmp_path, "clip_cov", ClipCovConfig(clip_ratio=0.05))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    logs = [h for h in trainer.state.log_history if "gendiff/actor/clip_cov_count" in h]
    assert len(logs) == 2 and all(h["gendiff/actor/clip_cov_count"] >= 1 for h in logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


def test_adaptive_entropy_bonus_with_reference_and_iterations(saved, tmp_path):
    trainer = make(saved, tmp_path, "entropy_bonus", {"target_entropy": 50.0, "coef_step": 1e-3},
                   beta=0.05, num_iterations=2, steps=3)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "gendiff/actor/entropy_coef" in h]
    coefs = [h["gendiff/actor/entropy_coef"] for h in logs]
    assert coefs == pytest.approx([1e-3, 2e-3, 3e-3])  # carried from step to step
    assert "gendiff/kl/k3" in logs[-1] and logs[-1]["gendiff/kl/k3"] > 0
    assert logs[1]["gendiff/actor/ppo_kl"] != 0.0  # second iteration on the same generation


def test_gendiff_logp_matches_trl_per_token_logps(saved, tmp_path):
    """Our forward (gendiff.entropy on the logits) agrees with TRL's fused log-prob kernel."""
    trainer = make(saved, tmp_path, "grpo")
    tok = AutoTokenizer.from_pretrained(saved)
    model = AutoModelForCausalLM.from_pretrained(saved).eval()
    enc = tok(["12+34=", "1+2="], return_tensors="pt", padding=True)
    comp = torch.tensor([[6, 7, 2], [5, 2, 0]])
    inputs = {"prompt_ids": enc["input_ids"], "prompt_mask": enc["attention_mask"], "completion_ids": comp,
              "completion_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    ours, _ = trainer._gendiff_logp_entropy(trainer.model, inputs)
    ids = torch.cat([enc["input_ids"], comp], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.cat([enc["attention_mask"], torch.ones_like(comp)], 1),
                       ).logits[:, -4:-1] / trainer.temperature
    ref = torch.log_softmax(logits, -1).gather(-1, comp[..., None])[..., 0]
    m = inputs["completion_mask"].bool()
    assert torch.allclose(ours.detach()[m], ref[m], atol=1e-5)


def test_bad_loss_name_and_config(saved, tmp_path):
    with pytest.raises(KeyError, match="valid names"):
        make(saved, tmp_path, "not_a_loss")
    with pytest.raises(TypeError, match="ClipCovConfig or a dict"):
        make(saved, tmp_path, "clip_cov", loss_config=3)
