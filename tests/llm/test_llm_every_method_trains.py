"""Every name in POLICY_LOSSES and ADVANTAGES trains through ``gendiff llm train`` (a name the trainer
cannot use must not be in a registry), and each method's rollout-side piece really runs: AEPO's
regulariser rollouts at the target temperature, DCPO's target-temperature ratio, EMPO's answer clusters,
HAPO's adaptive temperature at rollout, D3S's sample selection."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from gendiff.llm import ADVANTAGES, POLICY_LOSSES
from gendiff.llm.cli import add_llm_commands
from gendiff.llm.tasks import ArithmeticTask, arithmetic_answer_key, build_tiny_lm

pytestmark = pytest.mark.filterwarnings("ignore:.*empty completion")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_lm(seed=0, sft_steps=60, out_dir=path, layers=2, hidden=64, batch_size=32)
    return path


def train(saved, out, *flags: str) -> list[dict]:
    parser = argparse.ArgumentParser()
    add_llm_commands(parser.add_subparsers(dest="command"))
    argv = ["llm", "train", "--out", str(out), "--model", str(saved), "--steps", "3", "--group-size", "4",
            "--prompts-per-step", "2", "--max-new-tokens", "5", "--lr", "1e-3", "--updates-per-rollout", "2",
            "--partial-credit", "--eval-prompts", "8", "--no-progress", *flags]
    args = parser.parse_args(argv)
    args._run(args)
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def moved(saved, out) -> bool:
    a, b = load_file(saved / "model.safetensors"), load_file(out / "final" / "model.safetensors")
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind,name", [("loss", n) for n in POLICY_LOSSES.names()]
                         + [("advantage", n) for n in ADVANTAGES.names()])
def test_every_registered_name_trains_from_the_cli(saved, tmp_path, kind, name):
    logs = train(saved, tmp_path / "run", f"--{kind}", name)
    assert len(logs) == 3 and moved(saved, tmp_path / "run")
    for m in logs:
        assert all(math.isfinite(v) for v in m.values() if isinstance(v, float)), m
        assert m["rollout/logp_mismatch"] < 1e-4


def test_aepo_samples_its_regularisers_at_the_target_temperature(saved, tmp_path):
    logs = train(saved, tmp_path / "low", "--advantage", "aepo", "--advantage-config",
                 "{target_entropy: 50.0, regularizer_size: 2}")
    assert all(m["aepo/temperature"] == 1.2 for m in logs)  # below the target: hotter samples
    assert all(m["aepo/regularizer_frac"] == pytest.approx(2 / 6) for m in logs)  # 2 extra per group of 4
    logs = train(saved, tmp_path / "high", "--advantage", "aepo", "--advantage-config", "{target_entropy: 0.0}")
    assert all(m["aepo/temperature"] == 0.8 for m in logs)


def test_dcpo_targets_the_temperature_toward_its_entropy(saved, tmp_path):
    logs = train(saved, tmp_path / "r", "--advantage", "dcpo", "--advantage-config", "{target_entropy: 50.0}")
    assert all(m["dcpo/temperature"] == 1.2 and m["dcpo/ratio_term_mean"] != 0.0 for m in logs)
    logs = train(saved, tmp_path / "s", "--advantage", "dcpo", "--advantage-config", "{target_entropy: 0.0}")
    assert all(m["dcpo/temperature"] == 0.8 for m in logs)


def test_hapo_uses_its_adaptive_temperature_at_rollout(saved, tmp_path):
    logs = train(saved, tmp_path / "t", "--loss", "hapo", "--loss-config", "{temperature_tau: 0.5}")
    assert "hapo/temperature_factor_mean" not in logs[0]  # no entropy statistics before the first update
    for m in logs[1:]:
        assert 0.5 <= m["hapo/temperature_factor_mean"] <= 1.5 and m["hapo/temperature_factor_mean"] != 1.0
    off = train(saved, tmp_path / "off", "--loss", "hapo", "--loss-config", "{temperature_tau: 0.0}")
    assert all("hapo/temperature_factor_mean" not in m for m in off)


def test_d3s_keeps_the_max_variance_half_of_each_group(saved, tmp_path):
    logs = train(saved, tmp_path / "d", "--loss", "d3s_tokens", "--loss-config", "{sample_keep: 0.5}")
    assert all(m["d3s/kept_rollouts"] == 4 for m in logs)  # 2 of 4 per group, 2 groups


def test_empo_clusters_are_answer_equivalence_classes(saved, tmp_path):
    assert arithmetic_answer_key(["1+1="] * 4, ["046", " 46", "46 ", "4x"]) == ["46", "46", "46", "4x"]
    logs = train(saved, tmp_path / "e", "--advantage", "empo_reward")
    assert all(0 < m["empo/semantic_reward_mean"] <= 1 for m in logs)
    assert ArithmeticTask().n_problems() == 8100
