"""gendiff.llm.trainer: offline training from a saved model with a user reward; bad input; states."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gendiff.llm.tasks import ArithmeticTask, build_tiny_lm
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer, check_config, check_rewards

TASK = ArithmeticTask()


def prompts(n, rng):
    return TASK.sample(n, rng)[0]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_lm(seed=0, sft_steps=40, out_dir=path, layers=2, hidden=64, batch_size=32)
    return path


def load(path):
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def small(**kw) -> LLMTrainConfig:
    base = {"steps": 3, "group_size": 4, "prompts_per_step": 2, "max_new_tokens": 5, "lr": 1e-3}
    return LLMTrainConfig(**{**base, **kw})


def test_offline_user_reward_logs_and_checkpoints(saved, tmp_path):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    model, tok = load(saved)
    calls = []

    def my_reward(prompts, completions, group_ids, **_):  # a user's function, with meta
        calls.append(group_ids)
        return [float(c.strip().startswith("1")) for c in completions]

    trainer = LLMTrainer(model, tok, my_reward, prompts, small(checkpoint_every=2), out_dir=tmp_path)
    logs = trainer.train(progress=False)
    assert calls[0] == [0, 0, 0, 0, 1, 1, 1, 1]
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and lines[-1]["step"] == 3
    for key in ("reward/mean", "actor/entropy", "actor/cov_mean", "actor/clipfrac", "response_length/mean",
                "rollout/empty_count", "perf/tokens_per_s"):
        assert key in lines[0], key
    # first update on a rollout is exactly on-policy; the sampler agrees with the training forward
    assert logs[0]["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert all(m["rollout/logp_mismatch"] < 1e-4 for m in logs)
    assert (tmp_path / "checkpoint-2" / "config.json").is_file()
    state = json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["step"] == 2
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    after = trainer.accelerator.unwrap_model(trainer.model)
    for p, q in zip(reloaded.parameters(), after.parameters(), strict=True):
        assert torch.equal(p, q)


def test_rl_raises_a_learnable_reward(saved):
    """Reward: the completion starts with '1'. A few GRPO steps at a high lr must raise it clearly."""
    model, tok = load(saved)

    def reward(prompts, completions):
        return [float(c.startswith("1")) for c in completions]

    cfg = small(steps=14, group_size=8, lr=1e-2, max_new_tokens=3, temperature=1.0, seed=1)
    logs = LLMTrainer(model, tok, reward, prompts, cfg).train(progress=False)
    first = sum(m["reward/mean"] for m in logs[:3]) / 3
    last = sum(m["reward/mean"] for m in logs[-3:]) / 3
    assert last > first + 0.25, (first, last)


def test_reward_nan_and_wrong_count_raise(saved):
    model, tok = load(saved)
    with pytest.raises(ValueError, match="NaN or inf at completions \\[0"):
        LLMTrainer(model, tok, lambda p, c: [float("nan")] * len(c), prompts, small()).step()
    with pytest.raises(ValueError, match="returned 3 rewards for 8 completions"):
        LLMTrainer(model, tok, lambda p, c: [0.0, 1.0, 0.0], prompts, small()).step()
    with pytest.raises(ValueError, match="list of 8 numbers"):
        check_rewards(["a"] * 8, 8)


def test_prompt_longer_than_context_raises(saved):
    model, tok = load(saved)
    long_prompt = "1" * (model.config.max_position_embeddings - 2) + "+1="
    trainer = LLMTrainer(model, tok, lambda p, c: [0.0] * len(c), [long_prompt], small())
    with pytest.raises(ValueError, match="exceeds the model's context of 64 tokens"):
        trainer.step()


def test_empty_completions_are_masked_counted_and_never_update(saved):
    """Every token ends a completion -> all completions are empty: warned, counted, no parameter change."""
    model, tok = load(saved)
    model.generation_config.eos_token_id = list(range(len(tok)))
    trainer = LLMTrainer(model, tok, lambda p, c: [float(i % 2) for i in range(len(c))], prompts, small())
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.warns(UserWarning, match="empty completion"):
        m = trainer.step()
    assert m["rollout/empty_count"] == 8
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_several_updates_kl_and_grad_accum(saved):
    model, tok = load(saved)
    cfg = small(steps=2, updates_per_rollout=3, grad_accum=2, kl_coef=0.1, lr=5e-3)
    logs = LLMTrainer(model, tok, lambda p, c: [float(len(x) % 2) for x in c], prompts, cfg).train(progress=False)
    assert "kl/k3" in logs[0] and logs[1]["kl/k3"] > 0  # the policy left the frozen reference
    assert logs[0]["actor/ppo_kl"] != 0.0  # later updates are off-policy against the cached old log-probs


def test_adaptive_entropy_coef_and_riskpo_quantiles_are_carried(saved):
    model, tok = load(saved)
    cfg = small(steps=3, loss="entropy_bonus", advantage="riskpo",
                loss_config={"coef": 1e-3, "target_entropy": 50.0, "coef_step": 1e-3})
    trainer = LLMTrainer(model, tok, lambda p, c: [float(i % 3) for i in range(len(c))], prompts, cfg)
    logs = trainer.train(progress=False)
    assert [m["actor/entropy_coef"] for m in logs] == pytest.approx([1e-3, 2e-3, 3e-3])
    assert trainer.state.entropy_coef == pytest.approx(4e-3)
    assert trainer.state.riskpo_quantiles is not None


def test_config_errors_are_clear():
    with pytest.raises(KeyError, match="valid names"):
        check_config(LLMTrainConfig(loss="nope"))
    with pytest.raises(KeyError, match="valid names"):
        check_config(LLMTrainConfig(advantage="nope"))
    with pytest.raises(ValueError, match="temperature_tau must be in"):
        check_config(LLMTrainConfig(loss="hapo", loss_config={"temperature_tau": 1.0}))
    with pytest.raises(ValueError, match="regularizer_size must be >= 1"):
        check_config(LLMTrainConfig(advantage="aepo", advantage_config={"regularizer_size": 0}))
    with pytest.raises(ValueError, match="sample_keep must be in"):
        check_config(LLMTrainConfig(loss="d3s_tokens", loss_config={"sample_keep": 0.0}))
    with pytest.raises(KeyError, match="unknown ClipCovConfig field"):
        check_config(LLMTrainConfig(loss="clip_cov", loss_config={"clip_ration": 1.0}))
    loss_cfg, _ = check_config(LLMTrainConfig(loss="clip_cov", loss_config="{clip_ratio: 0.01}"))
    assert loss_cfg.clip_ratio == 0.01
    with pytest.raises(ValueError, match="group_size"):
        check_config(LLMTrainConfig(group_size=0))


def test_entropy_law_recovers_known_coefficients():
    import numpy as np

    from gendiff.llm.entropy_law import fit_entropy_law

    h = np.linspace(0.1, 1.5, 30)
    fit = fit_entropy_law(h, -0.3 * np.exp(h) + 1.2)
    assert fit.a == pytest.approx(0.3) and fit.b == pytest.approx(1.2) and fit.r2 == pytest.approx(1.0)
    noisy = fit_entropy_law(h, -0.3 * np.exp(h) + 1.2 + np.random.default_rng(0).normal(0, 0.05, 30))
    assert 0.2 < noisy.a < 0.4 and 0.5 < noisy.r2 < 1.0
    with pytest.raises(ValueError, match="constant"):
        fit_entropy_law([1.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="at least 2"):
        fit_entropy_law([1.0], [0.0])


def test_cli_train_and_entropy_law(saved, tmp_path):
    import argparse

    from gendiff.llm.cli import add_llm_commands

    parser = argparse.ArgumentParser()
    add_llm_commands(parser.add_subparsers(dest="command"))
    out = tmp_path / "run"
    argv = ["llm", "train", "--task", "arithmetic", "--loss", "clip_cov", "--steps", "3", "--out", str(out),
            "--seed", "1", "--model", str(saved), "--group-size", "4", "--prompts-per-step", "2",
            "--max-new-tokens", "5", "--no-progress"]
    summary = parser.parse_args(argv)._run(parser.parse_args(argv))
    assert 0.0 <= summary["accuracy_after"] <= 1.0
    assert (out / "config.yaml").is_file() and (out / "final" / "config.json").is_file()
    assert len((out / "log.jsonl").read_text().splitlines()) == 3
    with pytest.raises(FileExistsError, match="--overwrite"):
        parser.parse_args(argv)._run(parser.parse_args(argv))
    law = ["llm", "entropy-law", "--runs", str(out), "--out", str(tmp_path / "law.png")]
    res = parser.parse_args(law)._run(parser.parse_args(law))
    assert (tmp_path / "law.png").stat().st_size > 1000 and res["n"] == 3
    with pytest.raises(FileNotFoundError, match="log.jsonl"):
        bad = ["llm", "entropy-law", "--runs", str(tmp_path / "none"), "--out", str(tmp_path / "x.png")]
        parser.parse_args(bad)._run(parser.parse_args(bad))


def test_yaml_mirrors_the_dataclass_defaults():
    from pathlib import Path

    from gendiff.config import from_dict, load_yaml

    path = Path(__file__).resolve().parents[2] / "configs" / "llm_train.yaml"
    assert from_dict(LLMTrainConfig, load_yaml(path)) == LLMTrainConfig()
    assert set(load_yaml(path)) == set(LLMTrainConfig.__dataclass_fields__)
