"""Minari datasets: make, load, refuse to overwrite, clear errors; TQ / SACo."""

from __future__ import annotations

import argparse

import minari
import numpy as np
import pytest
import torch
from minari.data_collector.episode_buffer import EpisodeBuffer

from gendiff.offline.cli import add_offline_commands
from gendiff.offline.dataset_stats import dataset_stats, trajectory_quality, unique_state_actions
from gendiff.offline.datasets import MakeDatasetConfig, load_dataset, load_or_make_dataset, make_dataset

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_make_load_and_never_overwrite(minari_dir):
    ds = make_dataset("Hopper-v5", "random", 300, "t/hopper/random-v0")
    assert ds.num_transitions == 300 and ds.obs_dim == 11 and ds.act_dim == 3
    assert (ds.ref_min_score, ds.ref_max_score) == pytest.approx((-20.272305, 3234.3))  # D4RL references
    assert ds.episodes[-1].truncations[-1] == 1 or ds.episodes[-1].terminations[-1] == 1
    again = load_dataset("t/hopper/random-v0")
    assert np.array_equal(again.episodes[0].observations, ds.episodes[0].observations)
    with pytest.raises(FileExistsError, match="--force"):
        make_dataset("Hopper-v5", "random", 100, "t/hopper/random-v0")
    assert load_dataset("t/hopper/random-v0").num_transitions == 300  # untouched
    assert make_dataset("Hopper-v5", "random", 100, "t/hopper/random-v0", force=True).num_transitions == 100
    # load_or_make loads what exists (never rebuilds or replaces), and builds what does not
    assert load_or_make_dataset("Hopper-v5", "random", 999, "t/hopper/random-v0").num_transitions == 100
    assert load_or_make_dataset("Hopper-v5", "random", 80, "t/hopper/random2-v0").num_transitions == 80


def test_cli_make_dataset_refuses_without_force(minari_dir, capsys):
    parser = argparse.ArgumentParser()
    add_offline_commands(parser.add_subparsers(dest="cmd"))
    argv = ["offline", "make-dataset", "--env", "Hopper-v5", "--level", "random", "--steps", "50",
            "--dataset-id", "t/cli/random-v0", "--no-progress"]
    args = parser.parse_args(argv)
    args._run(args)
    assert '"transitions": 50' in capsys.readouterr().out
    args = parser.parse_args(argv)
    with pytest.raises(FileExistsError, match="already exists"):
        args._run(args)
    args = parser.parse_args([*argv, "--force"])
    args._run(args)


def test_medium_replay_uses_sac_snapshots(minari_dir):
    cfg = MakeDatasetConfig(sac_steps=400, learning_starts=200, check_every=200, eval_episodes=2, progress=False)
    ds = make_dataset("Hopper-v5", "medium-replay", 200, "t/hopper/mr-v0", config=cfg)
    assert ds.num_transitions == 200
    meta = ds.metadata
    assert meta["gendiff_behaviour"] == "sac" and meta["gendiff_band_reached"] is False  # tiny budget
    assert (minari_dir / ".gendiff_behaviour" / "t/hopper/mr-v0" / "medium-replay" / "model.safetensors").exists()


def test_rollout_noise_is_mean_plus_gaussian_and_recorded(minari_dir):
    from gendiff.offline.behaviour import policy_act
    from gendiff.rl.sac import TanhGaussianPolicy

    torch.manual_seed(0)
    pol = TanhGaussianPolicy(4, 2, [-2.0, -1.0], [2.0, 1.0], (16,))
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    mean_env = pol.act(obs, deterministic=True)
    assert np.allclose(policy_act(pol, noise=0.0)(obs), mean_env, atol=1e-6)
    reps = np.stack([policy_act(pol, seed=k, noise=0.1)(obs) for k in range(400)])  # [400, 5, 2] env units
    squashed = reps / np.array([2.0, 1.0])
    assert np.all(np.abs(squashed) <= 1.0)
    assert np.allclose(squashed.mean(0), mean_env / np.array([2.0, 1.0]), atol=0.03)
    assert np.allclose(squashed.std(0), 0.1, atol=0.02)  # the means sit well inside the box here
    with pytest.raises(ValueError, match="noise must be >= 0"):
        policy_act(pol, noise=-0.1)
    with pytest.raises(ValueError, match="rollout_noise must be >= 0"):
        MakeDatasetConfig(rollout_noise=-1.0)
    cfg = MakeDatasetConfig(sac_steps=300, learning_starts=200, check_every=300, eval_episodes=1, progress=False,
                            rollout_noise=0.1)
    ds = make_dataset("Hopper-v5", "medium", 100, "t/hopper/noise-v0", config=cfg)
    assert ds.metadata["gendiff_behaviour_actions"] == "tanh(mean) + N(0, 0.1^2)"
    assert ds.num_transitions == 100
    import importlib.metadata

    packages = ds.metadata["gendiff_packages"]  # what a rebuild that differs is traced with
    assert f"torch {torch.__version__}" in packages and f"mujoco {importlib.metadata.version('mujoco')}" in packages


def test_unknown_id_lists_local_ids(minari_dir):
    make_dataset("Hopper-v5", "random", 50, "t/hopper/small-v0")
    with pytest.raises(KeyError, match="t/hopper/small-v0"):
        load_dataset("mujoco/hopper/medium-v0")


def test_spaces_must_match_env(minari_dir):
    make_dataset("Hopper-v5", "random", 50, "t/hopper/small-v0")
    with pytest.raises(ValueError, match="does not match environment 'HalfCheetah-v5'"):
        load_dataset("t/hopper/small-v0", env_id="HalfCheetah-v5")


def test_nan_observations_are_named(minari_dir):
    obs = [np.zeros(11) for _ in range(4)]
    obs[2][5] = np.nan
    buf = EpisodeBuffer(id=0, observations=obs, actions=[np.zeros(3, np.float32)] * 3, rewards=[0.0] * 3,
                        terminations=[False] * 3, truncations=[False, False, True], infos={})
    minari.create_dataset_from_buffers("t/hopper/nan-v0", [buf], env="Hopper-v5")
    with pytest.raises(ValueError, match="NaN/inf observations .first at step 2"):
        load_dataset("t/hopper/nan-v0")


def test_tq_and_saco():
    assert trajectory_quality(55.0, 10.0, 100.0) == pytest.approx(0.5)
    obs = torch.tensor([[0.0], [0.0], [1.0], [2.0]])
    act = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    assert unique_state_actions(obs, act, bin_width=0.1) == 3  # one duplicate pair
    tr = {"obs": obs, "act": act, "rew": torch.ones(4)}
    st = dataset_stats(tr, 0.0, 10.0, episode_returns=np.array([5.0, 7.0]))
    assert st.tq == pytest.approx(0.6) and st.saco == pytest.approx(0.75)
    st = dataset_stats(tr, 0.0, 2000.0, episode_length=1000)  # synthetic: per-step reward x length
    assert st.tq == pytest.approx(0.5)


def test_a_rebuilt_dataset_has_the_same_fingerprint_and_other_data_another(minari_dir):
    from gendiff.io import tree_fingerprint

    first = make_dataset("Hopper-v5", "random", 120, "t/hopper/fp-v0")
    again = make_dataset("Hopper-v5", "random", 120, "t/hopper/fp-v1")  # the same seed and settings, another id
    assert first.fingerprint() == again.fingerprint() == load_dataset("t/hopper/fp-v0").fingerprint()
    other = make_dataset("Hopper-v5", "random", 121, "t/hopper/fp-v2")
    assert other.fingerprint() != first.fingerprint()
    # the files themselves differ (ids, HDF5 metadata), which is why the content is hashed instead
    assert tree_fingerprint(minari_dir / "t/hopper/fp-v0") != tree_fingerprint(minari_dir / "t/hopper/fp-v1")
