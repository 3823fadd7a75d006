"""Saved agents (PPO, GoRL on both bases) reload to the same policy; bad folders get clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gendiff.rl.gorl import GoRL, GoRLConfig
from gendiff.rl.ppo import PPO, PPOConfig
from gendiff.rl.sac import SACConfig

SMALL_PPO = {"num_envs": 2, "num_steps": 64, "num_minibatches": 2, "update_epochs": 1, "eval_every": 0,
             "hidden": [32, 32]}
SMALL_GORL = {"stage_steps": 128, "recent_steps": 256, "decoder_fit_steps": 5, "decoder_width": 32,
              "decoder_depth": 1, "decoder_batch_size": 32}


def test_ppo_reloads_with_its_observation_statistics(tmp_path):
    agent = PPO.from_env("Pendulum-v1", PPOConfig(**SMALL_PPO), seed=0)
    agent.learn("Pendulum-v1", 256, seed=0, progress=False)
    assert float(agent.obs_rms.count) > 1  # the statistics moved, so losing them would change the policy
    back = PPO.load(agent.save(tmp_path / "ppo"))
    obs = np.random.default_rng(0).normal(size=(16, agent.obs_dim)).astype(np.float32)
    np.testing.assert_array_equal(back.act(obs, deterministic=True), agent.act(obs, deterministic=True))
    assert torch.equal(back.obs_rms.mean, agent.obs_rms.mean) and back.config == agent.config


@pytest.mark.parametrize("base", ["ppo", "sac"])
def test_gorl_reloads_after_a_refit_with_its_decoder(tmp_path, base):
    sac = SACConfig(hidden=(32, 32), batch_size=32, learning_starts=64, eval_every=0)
    agent = GoRL("Pendulum-v1", GoRLConfig(base=base, **SMALL_GORL), PPOConfig(**SMALL_PPO), sac, seed=0)
    agent.learn(300, progress=False)
    assert agent.stages and agent.decoder is agent.generative  # acting through the refit decoder
    back = GoRL.load(agent.save(tmp_path / "gorl"))
    assert back.decoder is back.generative and back.config == agent.config
    obs = np.random.default_rng(1).normal(size=(16, agent.obs_dim)).astype(np.float32)
    np.testing.assert_allclose(back.act(obs, deterministic=True), agent.act(obs, deterministic=True), atol=1e-6)


def test_gorl_before_any_refit_reloads_with_the_identity_decoder(tmp_path):
    agent = GoRL("Pendulum-v1", GoRLConfig(**SMALL_GORL), PPOConfig(**SMALL_PPO), seed=0)
    back = GoRL.load(agent.save(tmp_path / "gorl"))
    obs = np.zeros((4, agent.obs_dim), dtype=np.float32)
    np.testing.assert_array_equal(back.act(obs, deterministic=True), agent.act(obs, deterministic=True))


def test_bad_checkpoint_folders_get_errors_that_name_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved PPO agent"):
        PPO.load(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="not a saved GoRL agent"):
        GoRL.load(tmp_path / "missing")
    folder = PPO.from_env("Pendulum-v1", PPOConfig(**SMALL_PPO), seed=0).save(tmp_path / "ppo")
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["hidden"] = [16, 16]  # a config that does not match the saved weights
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"ppo: the saved 'actor' weights do not fit"):
        PPO.load(folder)
