"""Tasks and bad input: the bimodal task's reward, discrete / unbounded action spaces, dm_control, CLI."""

from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np
import pytest

from gendiff.cli import main
from gendiff.rl.cli import add_gorl_commands
from gendiff.rl.common import ActionScaler, check_action_space, make_env
from gendiff.rl.envs import TwoModesEnv
from gendiff.rl.gorl import GoRLConfig
from gendiff.rl.ppo import PPO, PPOConfig
from gendiff.rl.sac import SAC


def test_two_modes_reward_is_bimodal_and_symmetric():
    env = make_env("gendiff/TwoModes-v0", seed=0)
    obs, _ = env.reset(seed=1)
    c = float(obs[0])
    plus, minus = env.unwrapped.modes(c)
    assert env.unwrapped.reward(c, plus) == pytest.approx(1.0)
    assert env.unwrapped.reward(c, minus) == pytest.approx(1.0)
    assert env.unwrapped.reward(c, np.zeros(2)) < 1e-3  # the valley between the modes pays ~nothing
    steps, done = 0, False
    while not done:
        _, r, term, trunc, _ = env.step(env.action_space.sample())
        assert 0.0 <= r <= 1.0
        steps, done = steps + 1, term or trunc
    assert steps == 10


def test_discrete_action_space_is_rejected_clearly():
    with pytest.raises(TypeError, match="continuous Box"):
        check_action_space(gym.spaces.Discrete(3))
    with pytest.raises(TypeError, match="Discrete"):
        PPO.from_env("CartPole-v1")
    with pytest.raises(TypeError, match="continuous Box"):
        SAC.from_env("CartPole-v1")


@pytest.mark.parametrize("env_id, message", [
    ("CartPole-v1", "continuous Box action space; got Discrete"),  # a discrete action space
    ("NoSuchEnv-v9", "unknown or unavailable environment"),
])
def test_cli_reports_an_unusable_environment_in_one_line(tmp_path, capsys, env_id, message):
    out = tmp_path / "run"
    code = main(["gorl", "train", "--env", env_id, "--algo", "ppo", "--steps", "64", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("gendiff: error: ") and message in err
    assert "Traceback" not in err and not out.exists()


def test_unbounded_action_space_error_or_documented_squash():
    space = gym.spaces.Box(low=np.array([-np.inf, -2.0], np.float32), high=np.array([np.inf, 2.0], np.float32))
    with pytest.raises(ValueError, match="unbounded_action_bound"):
        check_action_space(space)
    with pytest.warns(UserWarning, match="infinite bounds"):
        low, high = check_action_space(space, unbounded_action_bound=3.0)
    np.testing.assert_array_equal(low, [-3.0, -2.0])
    np.testing.assert_array_equal(high, [3.0, 2.0])
    scaler = ActionScaler(low, high)
    import torch

    assert torch.allclose(scaler.to_env(torch.tensor([[1.0, -1.0]])), torch.tensor([[3.0, -2.0]]))


def test_dm_control_wrapper_says_how_to_install(tmp_path, capsys):
    pytest.importorskip("gymnasium")
    try:
        import dm_control  # noqa: F401
    except ImportError:
        with pytest.raises(ModuleNotFoundError, match="pip install dm_control"):
            gym.make("gendiff/dmc-hopper-stand-v0")
        assert main(["gorl", "train", "--env", "gendiff/dmc-hopper-stand-v0", "--algo", "ppo", "--steps", "64",
                     "--out", str(tmp_path / "run")]) == 2  # the command line says the same in one line
        assert "pip install dm_control" in capsys.readouterr().err
    else:  # pragma: no cover - dm_control present
        env = gym.make("gendiff/dmc-hopper-stand-v0")
        assert env.reset(seed=0)[0].ndim == 1


def test_unknown_env_names_the_problem():
    with pytest.raises(ValueError, match="unknown or unavailable environment"):
        make_env("gendiff/NoSuchTask-v0")


def test_cli_train_writes_metrics_and_refuses_overwrite(tmp_path):
    cfg = tmp_path / "ppo.yaml"
    cfg.write_text("num_envs: 2\nnum_steps: 64\nnum_minibatches: 2\nupdate_epochs: 1\n")
    parser = argparse.ArgumentParser(prog="gendiff")
    add_gorl_commands(parser.add_subparsers(dest="cmd", required=True))
    argv = ["gorl", "train", "--env", "gendiff/TwoModes-v0", "--algo", "ppo", "--steps", "256", "--seed", "1",
            "--out", str(tmp_path / "run"), "--ppo-config", str(cfg), "--eval-every", "128",
            "--eval-episodes", "2", "--final-eval-episodes", "2", "--no-progress"]
    args = parser.parse_args(argv)
    args._run(args)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["algo"] == "ppo" and len(metrics["curve"]["steps"]) == 2
    assert 0.0 <= metrics["final_return_stochastic"] <= 10.0
    assert (tmp_path / "run" / "curve.png").stat().st_size > 0
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    with pytest.raises(FileExistsError, match="overwrite"):
        args._run(parser.parse_args(argv))


def test_two_modes_validates_arguments():
    with pytest.raises(ValueError, match="action_dim"):
        TwoModesEnv(action_dim=0)


@pytest.mark.parametrize("name,path", [
    ("gendiff.rl.gorl:GoRLConfig", "gorl"), ("gendiff.rl.ppo:PPOConfig", "gorl_ppo"),
    ("gendiff.rl.sac:SACConfig", "gorl_sac"), ("gendiff.rl.pmoe:PMOESACConfig", "gorl_pmoe_sac"),
    ("gendiff.rl.train:GorlTrainConfig", "gorl_train"), ("gendiff.rl.benchmark:GorlBenchmarkConfig", "gorl_benchmark"),
])
def test_yaml_configs_mirror_the_dataclass_defaults(name, path):
    import importlib
    from pathlib import Path

    from gendiff.config import from_dict, load_yaml

    module, cls_name = name.split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    yaml_path = Path(__file__).resolve().parents[2] / "configs" / f"{path}.yaml"
    assert from_dict(cls, load_yaml(yaml_path)) == cls()
    assert set(load_yaml(yaml_path)) == {f for f in cls.__dataclass_fields__}


def test_cli_benchmark_writes_summary(tmp_path):
    cfg = tmp_path / "ppo.yaml"
    cfg.write_text("num_envs: 2\nnum_steps: 32\nnum_minibatches: 2\nupdate_epochs: 1\n")
    parser = argparse.ArgumentParser(prog="gendiff")
    add_gorl_commands(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(["gorl", "benchmark", "--algos", "ppo", "--seeds", "0,1", "--steps", "64",
                              "--out", str(tmp_path / "b"), "--ppo-config", str(cfg), "--eval-every", "64",
                              "--eval-episodes", "1"])
    args._run(args)
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["results"]["ppo"]["final_return_stochastic"]["per_seed"].__len__() == 2
    assert "| ppo |" in (tmp_path / "b" / "summary.md").read_text()
    assert (tmp_path / "b" / "curves.png").exists()


def _scripted_return(env: gym.Env, p_plus: float, episodes: int, rng: np.random.Generator) -> float:
    """Mean return of the memoryless policy 'mode +m(c) with probability p_plus, else -m(c)'."""
    total = 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        done = False
        while not done:
            plus, minus = env.unwrapped.modes(float(obs[0]))
            obs, r, term, trunc, _ = env.step(plus if rng.random() < p_plus else minus)
            total, done = total + r, term or trunc
    return total / episodes


def test_no_repeat_task_rewards_the_5050_mixture_over_either_mode():
    env = make_env("gendiff/TwoModesNoRepeat-v0", seed=0)
    assert env.observation_space.shape == (1,)  # the context only: no time, no previous mode
    rng = np.random.default_rng(0)
    one_mode = _scripted_return(env, 1.0, 20, rng)
    assert one_mode == pytest.approx(1 + 9 * 0.2)  # first step full, every repeat pays 0.2
    mixture = _scripted_return(env, 0.5, 400, rng)
    assert mixture == pytest.approx(1 + 9 * 0.6, abs=0.15)  # 6.4 expected
    assert _scripted_return(env, 0.8, 400, rng) < mixture - 0.5  # P(switch) = 2p(1-p) peaks at p = 1/2
    obs, _ = env.reset(seed=5)
    seen = {float(env.step(env.action_space.sample())[0][0]) for _ in range(9)}
    assert seen == {float(obs[0])}  # one context per episode: the observation is no coin to flip
    with pytest.raises(ValueError, match="repeat_reward"):
        TwoModesEnv(repeat_reward=1.5)


def test_shipped_recipes_load_as_their_configs():
    from pathlib import Path

    from gendiff.config import from_dict, load_yaml

    recipes = Path(__file__).resolve().parents[2] / "configs" / "recipes"
    gorl = from_dict(GoRLConfig, load_yaml(recipes / "gorl_mujoco.yaml"))
    assert gorl.decoder_data == "final_policy" and gorl.final_policy_draws == 8
    # 4 refits at 50k-200k, then the 100k last stage of benchmarks/gorl/gorl_hopper_last_stage_10seeds.md
    assert [gorl.stage_length(k) for k in range(6)] == [50_000] * 4 + [100_000] * 2
    assert from_dict(PPOConfig, load_yaml(recipes / "ppo_const_lr.yaml")).anneal_lr is False
    latent_ppo = from_dict(PPOConfig, load_yaml(recipes / "gorl_mujoco_ppo.yaml"))
    assert latent_ppo.anneal_lr is False and latent_ppo.actor_lr_scale == 4.0
