"""PGD's reference sampler (EDM Algorithm 2 via EDMHeunScheduler) on a tiny trajectory pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import line_dataset
from diffusers import EDMEulerScheduler

from gendiff.entropy import gaussian_log_prob
from gendiff.models import TemporalUNet1D
from gendiff.offline.diffusion import edm_heun_scheduler, edm_scheduler
from gendiff.offline.trajectories import make_windows
from gendiff.pipelines import PolicyGuidedTrajectoryPipeline
from gendiff.schedulers import EDMHeunScheduler
from gendiff.training import TrainConfig, train_denoiser
from gendiff.trajectory_layout import TrajectoryNormalizer


class _Target:
    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(act, -0.5 * obs, torch.full_like(act, np.log(0.2)))


def test_pgd_pipeline_samples_with_edm_heun(tmp_path):
    torch.manual_seed(0)
    ds = line_dataset(episodes=20)
    w = make_windows(ds.episodes, ds.action_low, ds.action_high, horizon=8, stride=1)
    norm = TrajectoryNormalizer.fit(w, 1, 1, ds.action_low, ds.action_high)
    unet = TemporalUNet1D(transition_dim=4, dim=16, dim_mults=(1, 2))
    res = train_denoiser(unet, norm.normalize(w), edm_scheduler(), TrainConfig(steps=30, batch_size=32, lr=1e-3,
                         checkpoint_every=30), tmp_path / "train", progress=False)
    pipe = PolicyGuidedTrajectoryPipeline(unet=res.model, scheduler=edm_scheduler(), normalizer=norm.to_config())
    heun = pipe.with_scheduler(edm_heun_scheduler(pipe.scheduler))
    assert isinstance(pipe.scheduler, EDMEulerScheduler)  # the trained pipeline keeps its scheduler
    assert heun.scheduler.config.s_churn == 80.0 and heun.scheduler.config.sigma_data == 1.0

    kw = {"batch_size": 4, "horizon": 8, "num_inference_steps": 8, "policy": _Target()}
    for scale in (0.0, 0.1):
        out = heun(**kw, guidance_scale=scale, generator=torch.Generator().manual_seed(1))
        assert out.windows.shape == (4, 8, 4) and torch.isfinite(out.windows).all()
        assert out.nfe == 2 * 8 - 1 and np.isfinite(out.policy_log_prob)
    with pytest.raises(ValueError, match="scheduler's config"):
        heun(**kw, s_churn=80.0)

    heun.save_pretrained(tmp_path / "heun")  # the Heun scheduler and its churn survive a round trip
    again = PolicyGuidedTrajectoryPipeline.from_pretrained(tmp_path / "heun")
    assert isinstance(again.scheduler, EDMHeunScheduler) and again.scheduler.config.s_tmax == 50.0
    a = heun(**kw, guidance_scale=0.1, generator=torch.Generator().manual_seed(2))
    b = again(**kw, guidance_scale=0.1, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.windows, b.windows)


def test_pgd_guidance_is_a_registry_name_or_a_list_of_terms(tmp_path):
    """"log_prob" is the GUIDANCE registry's term around the policy with PGD's schedule: passing that term yourself
    gives the same windows; a name that is not a log-probability term, or an unknown one, is refused clearly."""
    from gendiff.guidance import LogProbGuidance, PGDSchedule

    torch.manual_seed(0)
    ds = line_dataset(episodes=8)
    w = make_windows(ds.episodes, ds.action_low, ds.action_high, horizon=8, stride=2)
    norm = TrajectoryNormalizer.fit(w, 1, 1, ds.action_low, ds.action_high)
    pipe = PolicyGuidedTrajectoryPipeline(unet=TemporalUNet1D(transition_dim=4, dim=8, dim_mults=(1, 2)),
                                          scheduler=edm_scheduler(), normalizer=norm.to_config())
    kw = {"batch_size": 3, "horizon": 8, "num_inference_steps": 6, "policy": _Target()}
    by_name = pipe(**kw, guidance_scale=0.5, guidance="log_prob", generator=torch.Generator().manual_seed(3))

    def log_prob(x, state):  # the pipeline's own closure, written out: z-scored windows -> summed log pi(a|s)
        u = norm.unnormalize(x)
        obs, act = u[..., norm.obs_slice].reshape(-1, 1), norm.to_env_action(u[..., norm.act_slice]).reshape(-1, 1)
        return _Target().log_prob(obs, act).view(*x.shape[:3]).sum(-1)

    term = LogProbGuidance(log_prob, norm.act_slice, PGDSchedule(0.5, 0.3), "x_t", False, kind="shift")
    by_term = pipe(**kw, guidance=[term], generator=torch.Generator().manual_seed(3))
    unguided = pipe(**kw, guidance_scale=0.0, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(by_name.windows, by_term.windows) and not torch.equal(by_name.windows, unguided.windows)
    with pytest.raises(ValueError, match="not a log-probability term"):
        pipe(**kw, guidance_scale=0.5, guidance="dps")
    with pytest.raises(KeyError, match="unknown guidance term 'logprob'"):
        pipe(**kw, guidance_scale=0.5, guidance="logprob")
