"""ADS pipeline: the toy whose particles differ in one line, oracle bookkeeping, fixed masks, save/load."""

from __future__ import annotations

import fastmri
import pytest
import torch
from diffusers import DDIMScheduler
from gaussian_toy import GaussianDenoiser, random_gaussian

from gendiff.models.unet2d import make_unet2d
from gendiff.mri.strategies import ACQUISITION, StrategyContext, make_mask
from gendiff.operators import ColumnOperator, KSpaceLineOperator, MeasurementOracle
from gendiff.parameterization import noise_coefficients, to_x0
from gendiff.pipelines import ActiveDiffusionSubsamplingPipeline
from gendiff.pipelines.ads import acquisition_schedule, lookahead_x0

H = 16


class FixedParticles(torch.nn.Module):
    """A 'sample'-prediction denoiser whose x0_hat for particle i is always ``images[i]`` (any input)."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("images", images)  # [N, C, H, W]
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, cond=None):
        n = self.images.shape[0]
        return self.images.repeat(x.shape[0] // n, 1, 1, 1)


def _pipe(images):
    sched = DDIMScheduler(num_train_timesteps=100, prediction_type="sample", clip_sample=False)
    return ActiveDiffusionSubsamplingPipeline(FixedParticles(images), sched)


def _two_particles_differing_in_kspace_line(line: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, H, H, generator=g)  # complex image as (re, im)
    k = fastmri.fft2c(a.permute(1, 2, 0).contiguous())  # [H, W, 2]
    k2 = k.clone()
    k2[:, line] += 3.0  # the two particles' k-spaces differ only on this line (a column)
    b = fastmri.ifft2c(k2).permute(2, 0, 1)
    return torch.stack([a, b])


@pytest.mark.parametrize("line", [2, 11])
def test_ads_picks_the_only_line_where_particles_differ(line):
    images = _two_particles_differing_in_kspace_line(line)
    pipe = _pipe(images)
    target = images[:1]
    out = pipe(target, measurement="kspace_line", budget=2, num_particles=2, num_inference_steps=4,
               guidance_scale=0.0, acquisition_window=(0.0, 0.5))
    assert out.order.tolist() == [[H // 2, line]]  # centre line first, then the informative line
    assert torch.isfinite(out.scores[0]).sum() == H - 1 and out.scores[0].argmax() == line
    assert out.estimates == []  # recorded only on request
    rec = pipe(target, measurement="kspace_line", budget=2, num_particles=2, num_inference_steps=4,
               guidance_scale=0.0, acquisition_window=(0.0, 0.5), record_estimates=True)
    assert len(rec.estimates) == len(rec.scores) == 1  # one per active acquisition, [B, N, C, H, W]
    torch.testing.assert_close(rec.estimates[0], images[None])  # the particles the line was chosen on


def test_residual_line_variance_is_the_gaussian_posterior_variance():
    """Var[x0 | x_t] of x0 ~ N(0, v), x_t = a x0 + s e (Monte Carlo regression), and the limits t -> 0, t -> T."""
    from gendiff.entropy.particles import residual_line_variance

    g = torch.Generator().manual_seed(0)
    v, a, s = 2.0, 0.6, 0.8
    x0 = v**0.5 * torch.randn(400_000, generator=g, dtype=torch.float64)
    xt = a * x0 + s * torch.randn(400_000, generator=g, dtype=torch.float64)
    beta = (x0 * xt).mean() / (xt * xt).mean()  # E[x0 | x_t] = beta x_t
    mc = float((x0 - beta * xt).var())
    r = residual_line_variance(torch.tensor([3 * v], dtype=torch.float64), a, s, entries=3)  # 3 entries of variance v
    assert float(r) / 3 == pytest.approx(mc, rel=0.02)
    lines = torch.tensor([1.0, 5.0])
    torch.testing.assert_close(residual_line_variance(lines, 1.0, 0.0, 4), torch.zeros(2))
    torch.testing.assert_close(residual_line_variance(lines, 0.0, 1.0, 4), lines)


@pytest.mark.parametrize("line", [2, 11])
def test_total_variance_score_adds_the_lines_prior_variance(line):
    """Particles that agree everywhere: the spread says nothing, so the line of largest prior variance is next;
    with a zero prior variance the total-variance score picks where the particles differ, as ADS does."""
    images = _two_particles_differing_in_kspace_line(line)
    kw = {"measurement": "kspace_line", "budget": 2, "num_particles": 2, "num_inference_steps": 4,
          "guidance_scale": 0.0, "acquisition_window": (0.0, 0.5)}
    out = _pipe(images)(images[:1], line_prior_variance=torch.zeros(H), **kw)
    assert out.order.tolist() == [[H // 2, line]]
    prior = torch.ones(H)
    prior[5] = 10.0
    same = images[:1].repeat(2, 1, 1, 1)  # the particles agree on every line
    assert _pipe(same)(images[:1], line_prior_variance=prior, **kw).order.tolist() == [[H // 2, 5]]


def test_ads_column_toy_and_no_line_twice():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(1, 1, H, H, generator=g)
    images = base.repeat(4, 1, 1, 1)
    for i, col in enumerate([3, 7, 12]):  # particles disagree on three columns
        images[i + 1, :, :, col] += 5.0
    pipe = _pipe(images)
    out = pipe(base, measurement="column", budget=6, num_particles=4, num_inference_steps=8, guidance_scale=0.0)
    order = out.order[0].tolist()
    assert set(order[:3]) == {3, 7, 12}
    assert len(set(order)) == len(order) == 6 and out.mask.sum() == 6


def test_guidance_is_a_registry_name_or_a_list_of_terms():
    """"dps" is the GUIDANCE registry's DPS term with the step-count-scaled step size: passing that term gives the
    same reconstruction; an unknown name lists the registered ones; a term that needs more than a scale says so."""
    from gendiff.guidance import DPSGuidance, StepCountScaled
    from gendiff.pipelines.ads import DPS_REFERENCE_STEPS

    torch.manual_seed(0)
    unet = make_unet2d("tiny", 8, 2)
    pipe = ActiveDiffusionSubsamplingPipeline(unet, DDIMScheduler(num_train_timesteps=100, clip_sample=False))
    target = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    kw = {"measurement": "kspace_line", "budget": 3, "num_particles": 2, "num_inference_steps": 60}
    by_name = pipe(target, guidance="dps", guidance_scale=0.7, generator=torch.Generator().manual_seed(2), **kw)
    term = DPSGuidance(scale=StepCountScaled(0.7, DPS_REFERENCE_STEPS), loss="norm")
    by_term = pipe(target, guidance=[term], generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(by_name.reconstruction, by_term.reconstruction) and torch.equal(by_name.order, by_term.order)
    with pytest.raises(KeyError, match="unknown guidance term 'dpss'; valid names: dps"):
        pipe(target, guidance="dpss", **kw)
    with pytest.raises(ValueError, match="needs arguments beyond a scale"):
        pipe(target, guidance="log_prob", **kw)
    with pytest.raises(TypeError, match="list of GuidanceTerm"):
        pipe(target, guidance=["dps"], **kw)


def test_target_is_read_only_through_the_oracle():
    torch.manual_seed(0)
    unet = make_unet2d("tiny", 16, 2)
    pipe = ActiveDiffusionSubsamplingPipeline(unet, DDIMScheduler(num_train_timesteps=100, clip_sample=False))
    target = torch.randn(2, 2, H, H)
    oracle = MeasurementOracle(target, KSpaceLineOperator((2, H, H), batch_size=2))
    del target  # the pipeline gets the oracle only
    out = pipe(oracle=oracle, acceleration=4, num_particles=3, num_inference_steps=10,
               generator=torch.Generator().manual_seed(0))
    assert torch.equal(oracle.read_mask(), out.mask)
    assert out.mask.sum(-1).tolist() == [4, 4]
    assert len(oracle.requests) == 4 and out.nfe == 10 and out.nbe == 10
    assert out.magnitude.shape == (2, H, H) and out.particles.shape == (2, 3, 2, H, H)
    # hard data consistency: the measured lines of every particle equal the measurements
    k = oracle.operator.full(out.particles)
    truth = oracle._full[:, None]
    m = out.mask[:, None, :, None]
    torch.testing.assert_close(k * m, (truth * m).expand_as(k), atol=1e-5, rtol=1e-5)


def test_fixed_mask_strategies_read_exactly_their_mask():
    torch.manual_seed(0)
    unet = make_unet2d("tiny", 16, 2)
    pipe = ActiveDiffusionSubsamplingPipeline(unet, DDIMScheduler(num_train_timesteps=100, clip_sample=False))
    target = torch.randn(2, 2, H, H)
    op = KSpaceLineOperator((2, H, H), batch_size=2)
    ctx = StrategyContext(op, "kspace_line", budget=4, batch_size=2, generator=torch.Generator().manual_seed(0),
                          train_images=torch.randn(8, 2, H, H))
    for name in ACQUISITION:
        mask = make_mask(name, ctx)
        if mask is None:
            continue
        oracle = MeasurementOracle(target, KSpaceLineOperator((2, H, H), batch_size=2))
        out = pipe(oracle=oracle, mask=mask, num_particles=2, num_inference_steps=3, guidance="x0_space")
        assert torch.equal(oracle.read_mask(), mask) and torch.equal(out.mask, mask), name
        assert out.order.numel() == 0 and out.nbe == 0


def test_strategies_budget_and_errors():
    op = ColumnOperator((1, H, H), batch_size=3)
    ctx = StrategyContext(op, "column", budget=4, batch_size=3, generator=torch.Generator().manual_seed(0),
                          train_images=torch.randn(5, 1, H, H))
    for name in ("random", "equispaced", "data_variance", "fixed_dps"):
        assert make_mask(name, ctx).sum(-1).tolist() == [4, 4, 4], name
    with pytest.raises(ValueError, match="impossible"):
        make_mask("random", StrategyContext(op, "column", budget=H + 1, batch_size=3))
    with pytest.raises(KeyError, match="valid names"):
        make_mask("best", ctx)
    with pytest.raises(ValueError, match="acceleration must be >= 1"):
        ActiveDiffusionSubsamplingPipeline.budget_from(H, None, 0.5)
    with pytest.raises(ValueError, match="impossible budget 0"):
        ActiveDiffusionSubsamplingPipeline.budget_from(H, None, 100.0)
    with pytest.raises(ValueError, match="exactly one"):
        ActiveDiffusionSubsamplingPipeline.budget_from(H, 4, 4.0)


def test_acquisition_schedule():
    assert acquisition_schedule(100, (0.0, 0.5), 5) == [0, 10, 20, 30, 40]
    assert acquisition_schedule(10, (0.0, 0.5), 10) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    with pytest.raises(ValueError, match="window"):
        acquisition_schedule(10, (0.5, 0.2), 3)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    pipe = ActiveDiffusionSubsamplingPipeline(make_unet2d("tiny", 16, 2),
                                              DDIMScheduler(num_train_timesteps=100, clip_sample=False))
    pipe.save_pretrained(tmp_path / "ads")
    pipe2 = ActiveDiffusionSubsamplingPipeline.from_pretrained(tmp_path / "ads")
    target = torch.randn(1, 2, H, H)
    kw = dict(acceleration=4, num_particles=2, num_inference_steps=6)
    a = pipe(target, generator=torch.Generator().manual_seed(1), **kw)
    b = pipe2(target, generator=torch.Generator().manual_seed(1), **kw)
    torch.testing.assert_close(a.reconstruction, b.reconstruction)
    assert a.order.tolist() == b.order.tolist()


def test_run_strategy_with_masks_given_up_front_matches_the_strategy():
    from gendiff.mri.benchmark import RunSettings, run_strategy

    torch.manual_seed(0)
    pipe = ActiveDiffusionSubsamplingPipeline(make_unet2d("tiny", H, 2),
                                              DDIMScheduler(num_train_timesteps=100, clip_sample=False))
    targets = torch.randn(3, 2, H, H)
    cfg = RunSettings(num_particles=2, num_inference_steps=3, batch_slices=2)
    ref = run_strategy(pipe, targets, "equispaced", 4, cfg, progress=False)  # draws no random numbers for its mask
    again = run_strategy(pipe, targets, "given", 4, cfg, progress=False, fixed_masks=ref.masks)
    assert torch.equal(again.masks, ref.masks) and again.name == "given"
    for key in ("ssim", "psnr"):
        assert (again.metrics[key] == ref.metrics[key]).all()


def test_lookahead_paths_recover_the_prior_spread_that_tweedie_means_shrink():
    """Exact Gaussian denoiser: Tweedie means at t = 800 have covariance a^2 S (a^2 S + s^2)^-1 S << S, while the
    deterministic DDIM paths to t = 0 (probability-flow ODE) end near the prior covariance S (measured: summed
    variance 0.52 / 1.64 / 2.98 of 3.10 with J = 2 / 5 / 200); J = 1 is x0_hat itself."""
    sched = DDIMScheduler(num_train_timesteps=1000, prediction_type="epsilon", clip_sample=False)
    mu, cov = random_gaussian(4, seed=3)
    den = GaussianDenoiser(mu, cov, sched)
    g = torch.Generator().manual_seed(0)
    m, t = 4000, 800
    x0 = mu + torch.randn(m, 4, generator=g) @ torch.linalg.cholesky(cov).T
    alpha, sigma = noise_coefficients(sched, t)
    x_t = (alpha * x0 + sigma * torch.randn(m, 4, generator=g)).view(1, m, 4)
    x0_hat = to_x0(sched, den(x_t[0], torch.full((m,), t)), x_t[0], t).view(1, m, 4)
    assert torch.equal(lookahead_x0(den, sched, x_t, x0_hat, t, 1), x0_hat)
    spread = [float(lookahead_x0(den, sched, x_t, x0_hat, t, j)[0].var(0).sum()) for j in (2, 5, 200)]
    assert float(x0_hat[0].var(0).sum()) < 0.01 * float(cov.trace())  # the means have almost no spread here
    assert spread[0] < spread[1] < spread[2]  # more evaluations, closer to the ODE's end point
    assert spread[2] == pytest.approx(float(cov.trace()), rel=0.08)
    with pytest.raises(ValueError, match="at least 1"):
        lookahead_x0(den, sched, x_t, x0_hat, t, 0)


def test_ads_lookahead_counts_its_network_evaluations():
    images = _two_particles_differing_in_kspace_line(5)
    pipe = _pipe(images)
    target = images[:1]
    base = pipe(target, measurement="kspace_line", budget=4, num_particles=2, num_inference_steps=10,
                acquisition_window=(0.0, 0.5), generator=torch.Generator().manual_seed(0))
    ahead = pipe(target, measurement="kspace_line", budget=4, num_particles=2, num_inference_steps=10,
                 acquisition_window=(0.0, 0.5), generator=torch.Generator().manual_seed(0), lookahead_steps=3)
    assert ahead.nfe == base.nfe + 2 * len(set(base.acquisition_steps))  # J - 1 = 2 per acquisition step
    assert torch.equal(ahead.mask, base.mask)  # these particles' x0 does not depend on x_t: same choices
    with pytest.raises(ValueError, match="lookahead_steps"):
        pipe(target, measurement="kspace_line", budget=4, num_particles=2, num_inference_steps=10, lookahead_steps=0)


def test_every_home_of_the_ads_defaults_reads_the_one_source():
    """The pipeline's keywords, RunSettings, the benchmark configs, the demo and the study scripts agree with
    ADS_DEFAULTS, so that changing a default in one home only fails here; deliberate overrides are listed."""
    import argparse
    import dataclasses
    import inspect

    from gendiff.mri.benchmark import RunSettings
    from gendiff.mri.demo import DemoConfig
    from gendiff.mri.study import ImagesBenchmarkConfig, MRIBenchmarkConfig, add_study_arguments
    from gendiff.pipelines.ads import ADS_DEFAULTS

    shared = dataclasses.asdict(ADS_DEFAULTS)
    assert shared == {"num_particles": 16, "num_inference_steps": 50, "acquisition_window": (0.0, 0.5),
                      "sigma": 1.0, "guidance": "dps", "guidance_scale": 1.0, "lookahead_steps": 1}
    keywords = inspect.signature(ActiveDiffusionSubsamplingPipeline.__call__).parameters
    assert {k: keywords[k].default for k in shared} == shared
    run = RunSettings()
    assert {k: getattr(run, k) for k in shared} == shared
    bench = MRIBenchmarkConfig()
    assert {k: getattr(bench, k) for k in shared} == {**shared, "acquisition_window": [0.0, 0.5]}
    assert RunSettings.from_config(bench, "kspace_line") == run  # RunSettings adds no default of its own
    images = ImagesBenchmarkConfig()  # overrides: acquisitions over more of the run, bigger batches of small images
    assert (images.acquisition_window, images.batch_slices) == ([0.0, 0.8], 16)
    assert {k: getattr(images, k) for k in shared if k != "acquisition_window"} == {
        k: v for k, v in shared.items() if k != "acquisition_window"}
    demo = DemoConfig()  # override: 8 particles, for speed
    assert demo.num_particles == 8
    assert {k: getattr(demo, k) for k in ("num_inference_steps", "sigma", "guidance", "guidance_scale")} == {
        k: shared[k] for k in ("num_inference_steps", "sigma", "guidance", "guidance_scale")}
    ap = argparse.ArgumentParser()
    add_study_arguments(ap)  # overrides: 8 particles, the window (0.1, 0.4) chosen on validation slices
    study = ap.parse_args(["--prior", "p", "--data", "d", "--train-data", "t"])
    assert (study.num_particles, study.num_inference_steps, study.acquisition_window) == (
        8, shared["num_inference_steps"], "0.1,0.4")
