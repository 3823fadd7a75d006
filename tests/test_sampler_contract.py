"""Contract tests: GuidedSampler over five diffusers schedulers x prediction types x guidance terms."""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    UNet2DModel,
)
from diffusers.utils.torch_utils import randn_tensor

from gendiff.guidance import (
    DPSGuidance,
    GuidanceState,
    HardDataConsistency,
    LogProbGuidance,
    X0SpaceGuidance,
    build_guidance,
)
from gendiff.parameterization import from_x0, to_x0
from gendiff.sampler import GuidedSampler

CASES = [
    ("ddpm", "epsilon"), ("ddpm", "v_prediction"), ("ddpm", "sample"),
    ("ddim", "epsilon"), ("ddim", "v_prediction"),
    ("euler", "epsilon"), ("euler", "v_prediction"),
    ("edm", "epsilon"), ("edm", "v_prediction"),
    ("flow", "flow"),
]
SHAPE = (2, 8, 8)


def make_scheduler(kind: str, pred: str):
    if kind == "ddpm":
        return DDPMScheduler(num_train_timesteps=100, prediction_type=pred, clip_sample=False)
    if kind == "ddim":
        return DDIMScheduler(num_train_timesteps=100, prediction_type=pred, clip_sample=False)
    if kind == "euler":
        return EulerDiscreteScheduler(num_train_timesteps=100, prediction_type=pred)
    if kind == "edm":
        return EDMEulerScheduler(prediction_type=pred)
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=100)


@pytest.fixture(scope="module")
def unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


def plain_loop(model, scheduler, steps: int, batch: int, seed: int) -> torch.Tensor:
    """The diffusers loop as its docs write it."""
    g = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    # flow-matching schedulers have no init_noise_sigma / scale_model_input (diffusers' flow pipelines skip them)
    x = randn_tensor((batch, *SHAPE), generator=g) * getattr(scheduler, "init_noise_sigma", 1.0)
    scale = getattr(scheduler, "scale_model_input", lambda x, t: x)
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = model(scale(x, t), t).sample
            x = scheduler.step(out, t, x, generator=g).prev_sample
    return x


class PixelOp:
    """A minimal inpainting operator (identity on measured pixels) for the contract tests."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask  # [B, *shape]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask[:, None]

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x * (1 - self.mask[:, None]) + y[:, None]


def make_state(batch: int) -> GuidanceState:
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand((batch, *SHAPE), generator=g) < 0.3).float()
    y = torch.randn((batch, *SHAPE), generator=g) * mask
    return GuidanceState(operator=PixelOp(mask), y=y)


def terms(scale: float):
    lp = lambda x, s: -(x**2).flatten(2).sum(-1)  # noqa: E731
    return {
        "dps": [DPSGuidance(scale=scale)],
        "x0_space": [X0SpaceGuidance(scale=scale)],
        "hard_dc": [HardDataConsistency(scale=scale)],
        "log_prob": [LogProbGuidance(lp, feature_slice=slice(0, 4), scale=scale)],
        "all": [DPSGuidance(scale=scale), X0SpaceGuidance(scale=scale), HardDataConsistency(scale=scale)],
    }


@pytest.mark.parametrize("kind,pred", CASES)
def test_unguided_equals_plain_diffusers_loop(unet, kind, pred):
    ref = plain_loop(unet, make_scheduler(kind, pred), steps=6, batch=4, seed=3)
    sampler = GuidedSampler(unet, make_scheduler(kind, pred))
    out = sampler(SHAPE, batch_size=2, num_particles=2, num_inference_steps=6,
                  generator=torch.Generator().manual_seed(3))
    assert out.sample.shape == (2, 2, *SHAPE)
    torch.testing.assert_close(out.sample.flatten(0, 1), ref, atol=1e-5, rtol=1e-5)
    assert out.nfe == 6 and out.nbe == 0


@pytest.mark.parametrize("kind,pred", CASES)
@pytest.mark.parametrize("term", ["dps", "x0_space", "hard_dc", "log_prob", "all"])
def test_zero_scale_guidance_is_the_plain_loop(unet, kind, pred, term):
    ref = plain_loop(unet, make_scheduler(kind, pred), steps=4, batch=4, seed=5)
    sampler = GuidedSampler(unet, make_scheduler(kind, pred), guidance=terms(0.0)[term])
    out = sampler(SHAPE, batch_size=2, num_particles=2, num_inference_steps=4,
                  generator=torch.Generator().manual_seed(5), state=make_state(2))
    torch.testing.assert_close(out.sample.flatten(0, 1), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind,pred", CASES)
@pytest.mark.parametrize("term", ["dps", "x0_space", "hard_dc", "log_prob"])
def test_guidance_changes_the_sample_and_stays_finite(unet, kind, pred, term):
    sampler = GuidedSampler(unet, make_scheduler(kind, pred), guidance=terms(0.5)[term])
    kw = dict(batch_size=2, num_particles=2, num_inference_steps=4, state=make_state(2))
    out = sampler(SHAPE, generator=torch.Generator().manual_seed(5), **kw)
    base = GuidedSampler(unet, make_scheduler(kind, pred))(SHAPE, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.isfinite(out.sample).all()
    assert not torch.allclose(out.sample, base.sample)
    assert out.nbe == (4 if term == "dps" else 0)


@pytest.mark.parametrize("kind,pred", CASES)
def test_to_x0_matches_scheduler_and_from_x0_inverts(unet, kind, pred):
    sched = make_scheduler(kind, pred)
    sched.set_timesteps(5)
    x = randn_tensor((3, *SHAPE), generator=torch.Generator().manual_seed(0)) * getattr(sched, "init_noise_sigma", 1.0)
    t = sched.timesteps[1]
    if hasattr(sched, "_step_index"):
        sched._step_index = 1  # as after one step of the loop
    x_in = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
    out = unet(x_in, t).sample.detach()
    x0 = to_x0(sched, out, x, t)
    torch.testing.assert_close(from_x0(sched, x0, x, t), out, atol=2e-4, rtol=1e-4)
    ref = sched.step(out, t, x).__dict__.get("pred_original_sample")
    if ref is not None:
        torch.testing.assert_close(x0, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind,pred", [("ddim", "epsilon"), ("edm", "epsilon"), ("flow", "flow")])
def test_save_load_round_trip(unet, kind, pred, tmp_path):
    sched = make_scheduler(kind, pred)
    unet.save_pretrained(tmp_path / "unet")
    sched.save_pretrained(tmp_path / "scheduler")
    unet2 = UNet2DModel.from_pretrained(tmp_path / "unet").eval()
    sched2 = type(sched).from_pretrained(tmp_path / "scheduler")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    kw = dict(batch_size=1, num_particles=3, num_inference_steps=4, state=make_state(1))
    a = GuidedSampler(unet, sched, [DPSGuidance(0.3)])(SHAPE, generator=torch.Generator().manual_seed(9), **kw)
    b = GuidedSampler(unet2, sched2, [DPSGuidance(0.3)])(SHAPE, generator=torch.Generator().manual_seed(9), **kw)
    torch.testing.assert_close(a.sample, b.sample)


def test_latents_callback_trajectory_and_early_stop(unet):
    sampler = GuidedSampler(unet, make_scheduler("ddim", "epsilon"))
    z = torch.randn(1, 2, *SHAPE)
    seen = []

    def cb(step, t, x_t, x0_hat, state):
        seen.append((step, x_t.shape, x0_hat.shape))
        return step == 2

    out = sampler(SHAPE, batch_size=1, num_particles=2, num_inference_steps=5, latents=z, callback=cb,
                  return_trajectory=True)
    assert [s[0] for s in seen] == [0, 1, 2] and out.stopped_at == 2
    assert len(out.trajectory) == 2 and seen[0][1] == (1, 2, *SHAPE)
    full = sampler(SHAPE, batch_size=1, num_particles=2, num_inference_steps=5, latents=z)
    full2 = sampler(SHAPE, batch_size=1, num_particles=2, num_inference_steps=5, latents=z)
    torch.testing.assert_close(full.sample, full2.sample)


def test_bad_input_errors(unet):
    with pytest.raises(ValueError, match="prediction mismatch"):
        GuidedSampler(unet, make_scheduler("ddim", "epsilon"), prediction_type="flow")
    with pytest.raises(ValueError, match="prediction mismatch"):
        GuidedSampler(unet, make_scheduler("flow", "flow"), prediction_type="epsilon")
    sampler = GuidedSampler(unet, make_scheduler("ddim", "epsilon"))
    with pytest.raises(ValueError, match="latents must have shape"):
        sampler(SHAPE, batch_size=2, num_particles=2, latents=torch.randn(2, *SHAPE))
    with pytest.raises(ValueError, match=r"denoiser failed on a batch of shape \(1, 3, 8, 8\).*expects 2 input"):
        sampler((3, 8, 8), batch_size=1, num_inference_steps=2)
    with pytest.raises(ValueError, match="cond must have batch size"):
        GuidedSampler(NaNNet(), make_scheduler("ddim", "epsilon"))(SHAPE, batch_size=2, cond=torch.zeros(3, 1))
    with pytest.raises(KeyError, match="unknown guidance term 'dpss'; valid names: dps"):
        build_guidance("dpss", scale=1.0)
    with pytest.raises(KeyError, match="unknown schedule"):
        build_guidance("dps", scale={"schedule": "nope"})
    with pytest.raises(ValueError, match="needs state.operator"):
        GuidedSampler(unet, make_scheduler("ddim", "epsilon"), [DPSGuidance(1.0)])(SHAPE, num_inference_steps=2)
    with pytest.raises(TypeError, match="GuidanceTerm"):
        GuidedSampler(unet, make_scheduler("ddim", "epsilon"), [lambda *a: 0])


class NaNNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x, t, cond=None):
        return x * self.w * float("nan")


def test_nan_from_denoiser_is_named():
    sampler = GuidedSampler(NaNNet(), make_scheduler("ddim", "epsilon"))
    with pytest.raises(FloatingPointError, match="denoiser returned NaN/inf at step 0"):
        sampler(SHAPE, num_inference_steps=3)
