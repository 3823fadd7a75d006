"""Tests for gendiff.models: shapes, save/load round-trips, horizons, batch independence, call_denoiser."""

from __future__ import annotations

import json
import time

import pytest
import torch
from diffusers import UNet2DModel

from gendiff.models import (
    ConditionalMLPDecoder,
    ResidualMLPDenoiser,
    TemporalUNet1D,
    broadcast_timesteps,
    call_denoiser,
    make_unet2d,
)


def _cases():
    """(model, x, cond) triples covering every denoiser kind."""
    return {
        "mlp": (ResidualMLPDenoiser(6, cond_dim=3, width=32, depth=2), torch.randn(4, 6), torch.randn(4, 3)),
        "decoder": (ConditionalMLPDecoder(2, 5, width=32, depth=2), torch.randn(4, 2), torch.randn(4, 5)),
        "temporal": (TemporalUNet1D(5, dim=8, dim_mults=(1, 2), cond_dim=2), torch.randn(3, 8, 5),
                     torch.randn(3, 2)),
        "unet": (make_unet2d("tiny", 8, 2), torch.randn(2, 2, 8, 8), None),
    }


@pytest.mark.parametrize("kind", ["mlp", "decoder", "temporal", "unet"])
def test_save_load_round_trip(kind, tmp_path):
    torch.manual_seed(0)
    model, x, cond = _cases()[kind]
    with torch.no_grad():  # make the output depend on every weight (diffusers zero-inits some layers)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval().save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = type(model).from_pretrained(tmp_path).eval()
    public = lambda c: {k: list(v) if isinstance(v, tuple) else v for k, v in c.items() if k[0] != "_"}  # noqa: E731
    assert public(loaded.config) == public(model.config)
    t = torch.tensor([3.5] * x.shape[0])
    with torch.no_grad():
        assert torch.equal(call_denoiser(model, x, t, cond), call_denoiser(loaded, x, t, cond))
        assert call_denoiser(model, x, t, cond).shape == x.shape


@pytest.mark.parametrize("kind", ["mlp", "decoder", "temporal"])
def test_output_depends_on_t_and_not_on_other_batch_rows(kind):
    torch.manual_seed(0)
    model, x, cond = _cases()[kind]
    model.eval()
    with torch.no_grad():
        full = model(x, torch.arange(x.shape[0]) * 100, cond)
        one = model(x[1:2], 100, cond[1:2])  # scalar t broadcasts
        torch.testing.assert_close(full[1:2], one, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(model(x, 0, cond), model(x, 900, cond))
        assert not torch.allclose(model(x, 0, cond), model(x, 0, cond + 1))


def test_temporal_unet_two_horizons_and_bad_horizon():
    torch.manual_seed(0)
    net = TemporalUNet1D(7, dim=8, dim_mults=(1, 2, 4)).eval()
    assert net.horizon_multiple == 4
    with torch.no_grad():
        for horizon in (16, 32):
            x = torch.randn(2, horizon, 7)
            y = net(x, torch.tensor([5.0, 600.0]))
            assert y.shape == (2, horizon, 7) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(2, 18, 7), 1)
    with pytest.raises(ValueError, match=r"\[M, T, 7\]"):
        net(torch.randn(2, 16, 6), 1)
    with pytest.raises(ValueError, match="groups"):
        TemporalUNet1D(3, dim=6)


def test_temporal_unet_with_every_skip(tmp_path):
    """skips="all": every level's skip reaches the output (the first level's too), any valid horizon works, the
    choice survives save/load, and a config saved before the option existed loads as Janner's up path."""
    torch.manual_seed(0)
    net = TemporalUNet1D(7, dim=8, dim_mults=(1, 2, 4), skips="all").eval()
    x = torch.randn(2, 16, 7, requires_grad=True)
    y = net(x, torch.tensor([5.0, 600.0]))
    assert y.shape == (2, 16, 7) and torch.isfinite(y).all()
    assert net(torch.randn(1, 32, 7), 1.0).shape == (1, 32, 7)
    (g,) = torch.autograd.grad(y[0, 5].sum(), x)  # output step 5 depends on input step 5 and its neighbours
    assert g[0, 5].abs().sum() > 0 and g[1].abs().sum() == 0
    net.save_pretrained(tmp_path / "all")
    assert TemporalUNet1D.from_pretrained(tmp_path / "all").config.skips == "all"
    old = TemporalUNet1D(7, dim=8, dim_mults=(1, 2))
    old.save_pretrained(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    cfg.pop("skips")
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    assert TemporalUNet1D.from_pretrained(tmp_path / "old").config.skips == "janner"
    with pytest.raises(ValueError, match="skips must be"):
        TemporalUNet1D(7, dim=8, skips="some")


def test_mlp_flattens_trailing_dims_and_checks_cond():
    net = ResidualMLPDenoiser(6, width=16, depth=1)
    assert net(torch.randn(3, 2, 3), 4).shape == (3, 2, 3)
    with pytest.raises(ValueError, match="dim=6"):
        net(torch.randn(3, 5), 4)
    with pytest.raises(ValueError, match="cond_dim=0"):
        net(torch.randn(3, 6), 4, torch.randn(3, 1))
    dec = ConditionalMLPDecoder(2, 4, width=16)
    with pytest.raises(ValueError, match=r"cond of shape \[3, 4\], got None"):
        dec(torch.randn(3, 2), 1)
    with pytest.raises(ValueError, match=r"shape \[3, 4\]"):
        dec(torch.randn(3, 2), 1, torch.randn(2, 4))
    with pytest.raises(ValueError, match="timestep"):
        dec(torch.randn(3, 2), torch.ones(2), torch.randn(3, 4))


def test_make_unet2d_sizes():
    tiny, small = make_unet2d("tiny", 16, 1), make_unet2d("small", 32, 1)
    assert 0.2e6 < tiny.num_parameters() < 0.4e6
    assert 1.0e6 < small.num_parameters() < 1.2e6 and small.config.block_out_channels == (32, 64, 64)
    base = make_unet2d("base", 64, 2)
    assert len(base.config.down_block_types) == len(base.config.up_block_types) == 4
    assert base.config.in_channels == base.config.out_channels == 2
    assert base.config.layers_per_block == 2
    with pytest.raises(ValueError, match="multiple of 8"):
        make_unet2d("base", 36, 1)
    with pytest.raises(ValueError, match="valid sizes"):
        make_unet2d("huge", 32, 1)


def test_call_denoiser_unet_keeps_float_timesteps():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       norm_num_groups=4, layers_per_block=1).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
        x = torch.randn(3, 1, 8, 8)
        out = call_denoiser(unet, x, 0.7)
        torch.testing.assert_close(out, unet(x, torch.full((3,), 0.7)).sample)
        assert not torch.allclose(out, unet(x, 0.7).sample)  # diffusers casts a Python float to long
        torch.testing.assert_close(call_denoiser(unet, x, torch.tensor([1, 2, 3])),
                                   unet(x, torch.tensor([1, 2, 3])).sample)


def test_call_denoiser_mlp_and_overhead():
    torch.manual_seed(0)
    net = ResidualMLPDenoiser(4, width=16, depth=1).eval()
    x, t = torch.randn(8, 4), torch.full((8,), 10)
    with torch.no_grad():
        assert torch.equal(call_denoiser(net, x, t), net(x, t))
        assert torch.equal(call_denoiser(net, x, 10), net(x, t))

        def best(fn, n=300):
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return min(times)

        direct, wrapped = best(lambda: net(x, t)), best(lambda: call_denoiser(net, x, t))
    assert wrapped - direct < 100e-6, (direct, wrapped)


def test_broadcast_timesteps():
    dev = torch.device("cpu")
    assert broadcast_timesteps(5, 3, dev).tolist() == [5, 5, 5]
    assert broadcast_timesteps(0.25, 2, dev).dtype == torch.float32
    assert broadcast_timesteps(torch.tensor([7]), 2, dev).tolist() == [7, 7]
    with pytest.raises(ValueError, match="shape \\[4\\]"):
        broadcast_timesteps(torch.ones(3), 4, dev)


def test_call_denoiser_plain_module_gets_cond():
    class Plain(torch.nn.Module):  # any nn.Module following forward(x, t, cond) is called that way
        def forward(self, x, t, cond=None):
            return x * t[:, None] + (0 if cond is None else cond)

    x, c = torch.ones(2, 3), torch.full((2, 3), 5.0)
    assert call_denoiser(Plain(), x, 2.0, c).tolist() == [[7.0] * 3] * 2
    assert call_denoiser(Plain(), x, torch.tensor([1.0, 3.0])).tolist() == [[1.0] * 3, [3.0] * 3]
