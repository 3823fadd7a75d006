"""Trajectory windows, PGD guidance on a tiny trained model, save/load, dynamics MSE, SynthER."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import line_dataset

from gendiff.entropy import gaussian_log_prob
from gendiff.models import TemporalUNet1D
from gendiff.offline.datasets import Episode, OfflineDataset
from gendiff.offline.diffusion import (
    TrajectoryDiffusionConfig,
    edm_scheduler,
    load_or_train_trajectory_diffusion,
    load_trajectory_pipeline,
)
from gendiff.offline.dynamics import dynamics_mse
from gendiff.offline.synther import SynthER, SynthERConfig
from gendiff.offline.trajectories import make_windows, split_episodes
from gendiff.pipelines import PolicyGuidedTrajectoryPipeline
from gendiff.training import TrainConfig, train_denoiser
from gendiff.trajectory_layout import TrajectoryNormalizer, windows_to_transitions


def _episode(t: int, terminated: bool) -> Episode:
    obs = np.arange((t + 1) * 2, dtype=np.float32).reshape(t + 1, 2)
    term, trunc = np.zeros(t, np.float32), np.zeros(t, np.float32)
    (term if terminated else trunc)[-1] = 1
    return Episode(obs, np.full((t, 1), 0.5, np.float32), np.ones(t, np.float32), term, trunc)


def test_windows_layout_stride_and_timeouts():
    eps = [_episode(40, terminated=True), _episode(40, terminated=False), _episode(5, terminated=True)]
    w = make_windows(eps, [-1.0], [1.0], horizon=32, stride=8)
    # starts 0 and 8 per long episode; the time-out episode loses its window ending at step 40
    assert w.shape == (3, 32, 2 + 1 + 2)
    assert torch.allclose(w[0, :, 2], torch.atanh(torch.tensor(0.5)))  # arctanh actions
    assert w[1, -1, -1] == 1.0  # the terminated episode's last window ends in done
    with pytest.raises(ValueError, match="longer than every episode .the longest has 40"):
        make_windows(eps, [-1.0], [1.0], horizon=41)


def test_every_terminated_episode_has_a_window_ending_in_its_termination():
    eps = [_episode(43, terminated=True), _episode(43, terminated=False)]
    w = make_windows(eps, [-1.0], [1.0], horizon=32, stride=8)
    # terminated: starts 0, 8 and the end-anchored 11; time-out: starts 0, 8 only (no window ends at step 43)
    assert w.shape[0] == 5
    assert w[2, -1, -1] == 1.0 and w[2, 0, 0] == 2 * 11  # obs of step 11, and the window ends in done
    assert w[:2, :, -1].sum() == 0 and w[3:, :, -1].sum() == 0


def test_transitions_round_trip_and_zscore():
    ds = line_dataset(episodes=6)
    w = make_windows(ds.episodes, ds.action_low, ds.action_high, horizon=5, stride=5)
    assert w.shape[0] == 6  # the second window of each episode ends in its time-out: dropped
    norm = TrajectoryNormalizer.fit(w, 1, 1, ds.action_low, ds.action_high)
    z = norm.normalize(w)
    assert torch.allclose(z.reshape(-1, 4)[:, :3].mean(0), torch.zeros(3), atol=1e-5)
    tr = windows_to_transitions(norm.unnormalize(z), norm)
    real = ds.transitions()
    keep = torch.zeros(60, dtype=torch.bool)
    for e in range(6):  # steps 0-3 of each episode (step 4 ends the window: no next state in it)
        keep[10 * e:10 * e + 4] = True
    assert torch.allclose(tr["obs"], real["obs"][keep], atol=1e-5)
    assert torch.allclose(tr["next_obs"], real["next_obs"][keep], atol=1e-5)
    assert torch.allclose(tr["act"], real["act"][keep].clamp(-0.999, 0.999), atol=1e-4)


def test_residual_layout_makes_every_step_a_transition():
    """With residual=True each step carries s' - s: all 5 steps of every window round-trip (not only 4)."""
    ds = line_dataset(episodes=6)
    w = make_windows(ds.episodes, ds.action_low, ds.action_high, horizon=5, stride=5, residual=True)
    assert w.shape == (6, 5, 4 + 1)  # [obs, act, rew, done, delta]
    norm = TrajectoryNormalizer.fit(w, 1, 1, ds.action_low, ds.action_high, residual=True)
    assert norm.dim == 5 and norm.delta_slice == slice(4, 5)
    tr = windows_to_transitions(norm.unnormalize(norm.normalize(w)), norm)
    real = ds.transitions()
    keep = torch.zeros(60, dtype=torch.bool)
    for e in range(6):
        keep[10 * e:10 * e + 5] = True
    assert torch.allclose(tr["obs"], real["obs"][keep], atol=1e-5)
    assert torch.allclose(tr["next_obs"], real["next_obs"][keep], atol=1e-5)
    assert torch.equal(tr["pos"], torch.arange(5).repeat(6))
    loaded = TrajectoryNormalizer.from_config(norm.to_config())
    assert loaded.residual and loaded.dim == 5
    assert not TrajectoryNormalizer.from_config({**norm.to_config(), "residual": False} | {
        "mean": norm.mean[:4].tolist(), "std": norm.std[:4].tolist()}).residual
    with pytest.raises(ValueError, match="residual"):
        TrajectoryNormalizer.fit(w, 1, 1, ds.action_low, ds.action_high)  # 5 features is not obs+act+2


def test_linear_action_layout_keeps_actions_and_clips_generated_ones():
    """action_layout="linear": the step holds a~ in [-1, 1] as it is (no arctanh, no 0.999 clip), round-trips to the
    exact actions, clips generated values outside [-1, 1], and is saved with the normaliser."""
    eps = [_episode(40, terminated=True)]
    w = make_windows(eps, [-2.0], [2.0], horizon=8, stride=8, action_layout="linear")
    assert torch.allclose(w[..., 2], torch.tensor(0.25))  # 0.5 in [-2, 2] is 0.25 in [-1, 1]
    norm = TrajectoryNormalizer.fit(w, 2, 1, [-2.0], [2.0], action_layout="linear")
    tr = windows_to_transitions(norm.unnormalize(norm.normalize(w)), norm)
    assert torch.allclose(tr["act"], torch.tensor(0.5), atol=1e-6)
    assert torch.equal(norm.to_env_action(torch.tensor([[-3.0], [0.0], [1.5]])), torch.tensor([[-2.0], [0.0], [2.0]]))
    assert torch.equal(norm.from_env_action(torch.tensor([[2.0]])), torch.tensor([[1.0]]))  # arctanh would clip
    loaded = TrajectoryNormalizer.from_config(norm.to_config())
    assert loaded.action_layout == "linear"
    old = {k: v for k, v in norm.to_config().items() if k != "action_layout"}  # saved before the option existed
    assert TrajectoryNormalizer.from_config(old).action_layout == "arctanh"
    with pytest.raises(ValueError, match="action_layout must be one of arctanh, linear, got 'tanh'"):
        make_windows(eps, [-2.0], [2.0], horizon=8, action_layout="tanh")
    with pytest.raises(ValueError, match="action_layout must be one of"):
        TrajectoryDiffusionConfig(action_layout="tanh")


def test_terminal_step_survives_the_round_trip():
    # one termination in 9 windows x 8 steps: z-scored like every feature, it sits at z ~ +8
    eps = [_episode(40, terminated=True), _episode(40, terminated=False)]
    w = make_windows(eps, [-1.0], [1.0], horizon=8, stride=8)
    norm = TrajectoryNormalizer.fit(w, 2, 1, [-1.0], [1.0])
    z = norm.normalize(w)
    assert torch.allclose(z.reshape(-1, 5).mean(0), torch.zeros(5), atol=1e-5)
    assert float(z[..., -1].max()) == pytest.approx(71 ** 0.5, rel=1e-4)  # (1 - 1/72) / sqrt(1/72 * 71/72)
    tr = windows_to_transitions(norm.unnormalize(z), norm)
    assert tr["done"].sum() == 1  # the terminal step (39), kept although it ends its window
    assert torch.allclose(tr["obs"][tr["done"] == 1], torch.tensor([[78.0, 79.0]]))
    # a saved normaliser loads with its own statistics (what a saved pipeline's windows were scaled with)
    loaded = TrajectoryNormalizer.from_config(norm.to_config())
    assert torch.equal(loaded.mean, norm.mean) and torch.equal(loaded.std, norm.std)


def test_terminal_windows_repeat_without_changing_the_normaliser():
    from gendiff.offline.diffusion import repeat_terminal_windows

    eps = [_episode(40, terminated=True), _episode(40, terminated=False)]
    w = make_windows(eps, [-1.0], [1.0], horizon=8, stride=8)
    norm = TrajectoryNormalizer.fit(w, 2, 1, [-1.0], [1.0])
    assert repeat_terminal_windows(w, norm, 1) is w
    more = repeat_terminal_windows(w, norm, 4)
    has_done = (w[..., norm.done_index] > 0.5).any(1)
    assert int(has_done.sum()) == 1 and more.shape[0] == w.shape[0] + 3
    assert torch.equal(more[w.shape[0]:], w[has_done].repeat(3, 1, 1))
    with pytest.raises(ValueError, match="terminal_repeat must be >= 1"):
        repeat_terminal_windows(w, norm, 0)


class _Target:
    """pi(a|c) = N(-0.5 c, 0.2^2): the opposite of the data's a = 0.5 c."""

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(act, -0.5 * obs, torch.full_like(act, np.log(0.2)))


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    torch.manual_seed(0)
    ds = line_dataset(episodes=60)
    w = make_windows(ds.episodes, ds.action_low, ds.action_high, horizon=8, stride=1)
    norm = TrajectoryNormalizer.fit(w, 1, 1, ds.action_low, ds.action_high)
    unet = TemporalUNet1D(transition_dim=4, dim=16, dim_mults=(1, 2))
    out = tmp_path_factory.mktemp("pgd")
    res = train_denoiser(unet, norm.normalize(w), edm_scheduler(), TrainConfig(steps=200, batch_size=64, lr=1e-3,
                         checkpoint_every=200), out / "train", progress=False)
    return PolicyGuidedTrajectoryPipeline(unet=res.model, scheduler=edm_scheduler(), normalizer=norm.to_config())


def test_guidance_raises_target_log_likelihood(tiny_pipe):
    kw = {"batch_size": 16, "horizon": 8, "num_inference_steps": 16, "policy": _Target()}
    lps = [tiny_pipe(**kw, guidance_scale=c, generator=torch.Generator().manual_seed(1)).policy_log_prob
           for c in (0.0, 0.05, 0.2)]
    assert lps[0] < lps[1] < lps[2], lps
    det = tiny_pipe(**{**kw, "policy": lambda o: -0.5 * o}, guidance_scale=0.2, policy_type="deterministic",
                    generator=torch.Generator().manual_seed(1))
    unguided = tiny_pipe(**{**kw, "policy": lambda o: -0.5 * o}, policy_type="deterministic",
                         generator=torch.Generator().manual_seed(1))
    assert det.policy_log_prob > unguided.policy_log_prob  # deterministic actor as N(pi(s), 1)


def test_pipeline_save_load_round_trip(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "p")
    again = PolicyGuidedTrajectoryPipeline.from_pretrained(tmp_path / "p")
    a = tiny_pipe(batch_size=2, horizon=8, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    b = again(batch_size=2, horizon=8, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.windows, b.windows)
    assert set(a.transitions) == {"obs", "act", "rew", "next_obs", "done", "pos"}
    with pytest.raises(ValueError, match="multiple of 2"):
        tiny_pipe(horizon=7)
    with pytest.raises(FileNotFoundError):
        PolicyGuidedTrajectoryPipeline.from_pretrained(tmp_path / "nothing")


def test_dynamics_mse_zero_on_real_transitions(minari_dir):
    from gendiff.offline.datasets import make_dataset

    tr = make_dataset("HalfCheetah-v5", "random", 60, "t/cheetah/random-v0").transitions()
    real = dynamics_mse("HalfCheetah-v5", tr["obs"], tr["act"], tr["next_obs"])
    assert real.mse < 1e-9
    shifted = dynamics_mse("HalfCheetah-v5", tr["obs"], tr["act"], tr["next_obs"] + 0.1)
    assert shifted.mse == pytest.approx(0.01, rel=1e-3)
    with pytest.raises(ValueError, match="same non-zero number"):
        dynamics_mse("HalfCheetah-v5", tr["obs"], tr["act"][:3], tr["next_obs"])


def test_synther_samples_transitions(tmp_path):
    ds = line_dataset(episodes=20)
    gen = SynthER.fit(ds.transitions(), ds.action_low, ds.action_high, SynthERConfig(width=32, depth=1,
                      train_steps=20, batch_size=64), tmp_path / "s")
    out = SynthER.load(tmp_path / "s").sample(50, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    assert out["obs"].shape == (50, 1) and out["act"].abs().max() <= 1.0
    assert set(out["done"].unique().tolist()) <= {0.0, 1.0}
    assert gen.obs_dim == 1


def test_synther_dir_reuses_a_saved_model_and_rejects_a_mismatch(tmp_path):
    from gendiff.offline.pgd_loop import SyntheticSource, TrainAgentConfig

    ds = line_dataset(episodes=20)
    gen = SynthER.fit(ds.transitions(), ds.action_low, ds.action_high, SynthERConfig(width=32, depth=1,
                      train_steps=5, batch_size=64), tmp_path / "s")
    cfg = TrainAgentConfig(dataset_id=ds.dataset_id, synthetic="synther", synther_dir=str(tmp_path / "s"),
                           num_synthetic=30, num_inference_steps=4, progress=False)
    source = SyntheticSource(cfg, ds, tmp_path / "run")
    assert not (tmp_path / "run" / "synther").exists()  # loaded, not retrained
    for p, q in zip(gen.model.parameters(), source.synther.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert source.generate(None)["obs"].shape[1] == 1
    wide = OfflineDataset("wide/v0", None, [Episode(np.zeros((11, 2), np.float32), np.zeros((10, 1), np.float32),
                                                     np.zeros(10, np.float32), np.zeros(10, np.float32),
                                                     np.eye(10, dtype=np.float32)[-1])],
                          np.array([-1.0], np.float32), np.array([1.0], np.float32))
    with pytest.raises(ValueError, match="obs/act dims 1/1, the dataset has 2/1"):
        SyntheticSource(cfg, wide, tmp_path / "run2")


def test_load_or_train_reuses_a_saved_pipeline_and_rejects_a_mismatch(tmp_path):
    ds = line_dataset(episodes=8)
    cfg = TrajectoryDiffusionConfig(dataset_id=ds.dataset_id, out_dir=str(tmp_path / "d"), horizon=8, stride=2,
                                    dim=8, dim_mults=(1, 2), train_steps=3, batch_size=8, progress=False)
    first = load_or_train_trajectory_diffusion(ds, cfg)
    again = load_or_train_trajectory_diffusion(ds, cfg)  # loaded, not retrained
    for p, q in zip(first.unet.parameters(), again.unet.parameters(), strict=True):
        assert torch.equal(p, q)
    other = OfflineDataset("wide/v0", None, [Episode(np.zeros((11, 2), np.float32), np.zeros((10, 1), np.float32),
                                                      np.zeros(10, np.float32), np.zeros(10, np.float32),
                                                      np.eye(10, dtype=np.float32)[-1])],
                           np.array([-1.0], np.float32), np.array([1.0], np.float32))
    with pytest.raises(ValueError, match="trained on dataset 'line/expert-v0', not 'wide/v0'"):
        load_or_train_trajectory_diffusion(other, cfg)
    (tmp_path / "d" / "pipeline" / "gendiff_dataset.json").unlink()  # a pipeline saved before the record existed
    with pytest.raises(ValueError, match="obs_dim=1, act_dim=1, but dataset 'wide/v0' has obs_dim=2"), \
            pytest.warns(UserWarning, match="records no training dataset"):
        load_or_train_trajectory_diffusion(other, cfg)


def test_load_or_train_refuses_a_pipeline_of_another_dataset(tmp_path):
    ds = line_dataset(episodes=8)
    cfg = TrajectoryDiffusionConfig(dataset_id=ds.dataset_id, out_dir=str(tmp_path / "d"), horizon=8, stride=2,
                                    dim=8, dim_mults=(1, 2), train_steps=3, batch_size=8, progress=False)
    load_or_train_trajectory_diffusion(ds, cfg)
    record = json.loads((tmp_path / "d" / "pipeline" / "gendiff_dataset.json").read_text())
    assert record == {"dataset_id": ds.dataset_id, "transitions": ds.num_transitions}
    same_sizes = dataclasses.replace(ds, dataset_id="line/other-v0")
    with pytest.raises(ValueError, match=f"trained on dataset '{ds.dataset_id}', not 'line/other-v0'"):
        load_or_train_trajectory_diffusion(same_sizes, cfg)
    with pytest.warns(UserWarning, match="not 'line/other-v0'"):  # train-agent --diffusion-dir: the user's choice
        load_trajectory_pipeline(tmp_path / "d" / "pipeline", same_sizes, strict=False)


def test_split_episodes_is_seeded_disjoint_and_holds_out_at_least_one() -> None:
    eps = [_episode(10 + i, terminated=False) for i in range(40)]
    train, held = split_episodes(eps, seed=3)
    assert len(held) == 2 and len(train) == 38  # round(0.05 * 40)
    assert {id(e) for e in train}.isdisjoint(id(e) for e in held)
    assert [len(e) for e in train] == sorted(len(e) for e in train)  # order kept
    again = split_episodes(eps, seed=3)[1]
    assert [id(e) for e in again] == [id(e) for e in held]
    assert len(split_episodes(eps[:3], seed=0)[1]) == 1  # 5 % of 3 rounds to 0: still one held out
