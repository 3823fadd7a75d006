"""The RL_ALGORITHMS registry: every registered name builds its agent; an unknown name fails naming the valid ones."""

from __future__ import annotations

import pytest

from gendiff.cli import main
from gendiff.rl.algorithms import RL_ALGORITHMS, OnEnv
from gendiff.rl.benchmark import GorlBenchmarkConfig
from gendiff.rl.gorl import GoRL
from gendiff.rl.pmoe import PMOESAC
from gendiff.rl.ppo import PPO
from gendiff.rl.sac import SAC
from gendiff.rl.train import GorlTrainConfig, build, build_agent

EXPECTED = {"gorl_fm": GoRL, "gorl_diffusion": GoRL, "ppo": PPO, "sac": SAC, "pmoe_sac": PMOESAC}


def test_the_registry_holds_the_five_algorithms():
    assert RL_ALGORITHMS.names() == sorted(EXPECTED)


@pytest.mark.parametrize("name", RL_ALGORITHMS.names())
def test_every_registered_name_builds(name):
    agent = build_agent(GorlTrainConfig(algo=name, env="gendiff/TwoModes-v0", seed=0))
    assert type(agent) is EXPECTED[name]
    if isinstance(agent, GoRL):
        assert agent.config.decoder == ("flow" if name == "gorl_fm" else "diffusion")


def test_an_unknown_name_lists_the_registered_ones(capsys):
    valid = ", ".join(RL_ALGORITHMS.names())
    with pytest.raises(KeyError, match=f"unknown RL algorithm 'nope'; valid names: {valid}"):
        RL_ALGORITHMS.get("nope")
    with pytest.raises(ValueError, match=f"GorlTrainConfig.algo \\(--algo\\): unknown RL algorithm 'nope'; valid names: "
                                         f"{valid}"):
        GorlTrainConfig(algo="nope")
    with pytest.raises(ValueError, match="algos from \\['gorl_diffusion', 'gorl_fm', 'pmoe_sac', 'ppo', 'sac'\\]"):
        GorlBenchmarkConfig(algos=("ppo", "nope"))
    assert main(["gorl", "train", "--algo", "nope"]) == 2
    err = capsys.readouterr().err
    assert f"valid names: {valid}" in err and "Traceback" not in err



@pytest.mark.parametrize("name", RL_ALGORITHMS.names())
def test_every_registered_name_trains_through_one_learn_signature(name):
    import inspect

    import gendiff.rl.train as train

    built = build(GorlTrainConfig(algo=name, env="gendiff/TwoModes-v0", seed=3))
    assert type(built.agent) is EXPECTED[name]
    assert list(inspect.signature(built.learner.learn).parameters) == ["steps", "progress"]
    if built.learner is not built.agent:  # PPO / SAC: bound to the run's env and seed
        assert built.learner == OnEnv(built.agent, "gendiff/TwoModes-v0", 3)
    assert "hasattr(" not in inspect.getsource(train)
