"""EDMHeunScheduler (Karras et al. 2022, Algorithm 2) against a written-out Algorithm 2 and a Gaussian truth.

Data x0 ~ N(mu, diag(s^2)): E[x0 | x0 + sigma n] = mu + s^2 / (s^2 + sigma^2) (x - mu), and the probability-flow
ODE dx/dsigma = (x - D) / sigma has the closed-form solution x(sigma) - mu = (x(sigma') - mu) sqrt((s^2 + sigma^2)
/ (s^2 + sigma'^2)).
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import EDMEulerScheduler
from torch import Tensor, nn

from gendiff.parameterization import noise_family, to_x0
from gendiff.sampler import GuidedSampler
from gendiff.schedulers import EDMHeunScheduler

MU = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
S = torch.tensor([0.3, 1.0, 0.7, 1.5], dtype=torch.float64)
SD = 1.0  # sigma_data
REF = {"s_churn": 80.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}  # PGD / EDM ImageNet settings


def exact_denoiser(x: Tensor, sigma: Tensor | float) -> Tensor:
    """E[x0 | x] for x = x0 + sigma n; x [M, 4]."""
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


class ExactNet(nn.Module):
    """F(c_in x; c_noise) whose EDM-preconditioned D (eq. 7, epsilon parameterisation) is the exact E[x0 | x]."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.calls = 0

    def forward(self, x_in: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        self.calls += 1
        sigma = torch.exp(4 * t.double()).view(-1, 1)  # c_noise = ln(sigma) / 4
        x = x_in.double() * (sigma**2 + SD**2).sqrt()  # undo c_in
        c_skip, c_out = SD**2 / (sigma**2 + SD**2), sigma * SD / (sigma**2 + SD**2).sqrt()
        return ((exact_denoiser(x, sigma) - c_skip * x) / c_out).to(x_in.dtype)


def algorithm2(net: nn.Module, z: Tensor, n: int, churn: dict[str, float], generator: torch.Generator) -> Tensor:
    """Karras et al. (2022) Algorithm 2, written out; D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)."""

    def denoise(x: Tensor, sigma: float) -> Tensor:
        c_noise = (0.25 * torch.log(torch.tensor(sigma, dtype=torch.float64))).float()
        f = net(x / math.sqrt(sigma**2 + SD**2), c_noise.expand(x.shape[0]))
        return SD**2 / (sigma**2 + SD**2) * x + sigma * SD / math.sqrt(sigma**2 + SD**2) * f

    s_churn, s_tmin, s_tmax, s_noise = (churn.get(k, d) for k, d in
                                        (("s_churn", 0.0), ("s_tmin", 0.0), ("s_tmax", math.inf), ("s_noise", 1.0)))
    ramp = torch.arange(n, dtype=torch.float64) / (n - 1)
    t = (80.0 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7  # eq. 5
    t = [float(v) for v in t] + [0.0]
    x = z * t[0]  # line 2
    for i in range(n):
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= t[i] <= s_tmax else 0.0  # line 5
        t_hat = t[i] * (1 + gamma)
        if gamma > 0 and i == 0:  # x_0 is pure noise: the scheduler folds this churn into init_noise_sigma
            x = z * math.sqrt(t[0] ** 2 + (t_hat**2 - t[0] ** 2) * s_noise**2)
        elif gamma > 0:  # lines 4, 6
            x = x + math.sqrt(t_hat**2 - t[i] ** 2) * s_noise * torch.randn(x.shape, generator=generator,
                                                                             dtype=x.dtype)
        d = (x - denoise(x, t_hat)) / t_hat  # line 7
        x_next = x + (t[i + 1] - t_hat) * d  # line 8
        if t[i + 1] != 0:  # lines 9-11
            d2 = (x_next - denoise(x_next, t[i + 1])) / t[i + 1]
            x_next = x + (t[i + 1] - t_hat) * (0.5 * d + 0.5 * d2)
        x = x_next
    return x


def _sample(sched, n: int, z: Tensor, seed: int = 0, **kw) -> tuple[Tensor, GuidedSampler, ExactNet]:
    net = ExactNet()
    sampler = GuidedSampler(net, sched)
    out = sampler((4,), z.shape[0], 1, n, latents=z[:, None], generator=torch.Generator().manual_seed(seed),
                  dtype=torch.float64, **kw)
    return out, sampler, net


def _z(m: int, seed: int = 0) -> Tensor:
    return torch.randn(m, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("churn", [{}, REF, {**REF, "s_tmax": math.inf}], ids=["ode", "pgd", "churn_at_step0"])
def test_matches_written_out_algorithm2(churn):
    z, n = _z(32), 16
    sched = EDMHeunScheduler(sigma_data=SD, **churn)
    seen = []  # (stage, x the model saw, x0_hat from to_x0) through the sampler's callback
    out, _, _ = _sample(sched, n, z, seed=3, callback=lambda k, t, x, x0, st: seen.append((k, x.clone(), x0)))
    ref = algorithm2(ExactNet(), z, n, churn, torch.Generator().manual_seed(3))
    assert torch.allclose(out.sample[:, 0], ref, rtol=0, atol=1e-9), (out.sample[:, 0] - ref).abs().max()
    if churn:  # the churn really acted: the deterministic run ends elsewhere
        assert (out.sample[:, 0] - algorithm2(ExactNet(), z, n, {}, torch.Generator())).abs().max() > 1e-2
    # to_x0 (gendiff.parameterization) reads the level of every stage, churned or not
    assert noise_family(sched) == "edm" and len(seen) == 2 * n - 1
    for k, x, x0 in seen:
        truth = exact_denoiser(x[:, 0], sched.sigmas[k])
        assert torch.allclose(x0[:, 0], truth, rtol=1e-5, atol=1e-5), (k, (x0[:, 0] - truth).abs().max())


def test_heun_beats_euler_on_the_ode():
    """Churn 0: distance to the closed-form ODE solution from each scheduler's own start."""
    z = _z(64, seed=1)

    def error(sched, n: int) -> float:
        out, sampler, _ = _sample(sched, n, z)
        x_start = z * sched.init_noise_sigma  # both treat it as the sample at sigma_max
        exact = MU + (x_start - MU) * S / (S**2 + 80.0**2).sqrt()
        return float((out.sample[:, 0] - exact).abs().max())

    heun, heun32 = error(EDMHeunScheduler(sigma_data=SD), 16), error(EDMHeunScheduler(sigma_data=SD), 32)
    euler, euler32 = error(EDMEulerScheduler(sigma_data=SD), 16), error(EDMEulerScheduler(sigma_data=SD), 32)
    euler_equal_nfe = error(EDMEulerScheduler(sigma_data=SD), 31)  # Heun's 16 steps cost 31 evaluations
    assert heun < euler / 2.5 and heun < euler_equal_nfe / 1.3, (heun, euler, euler_equal_nfe)
    assert 3.5 < heun / heun32 < 5.5 and 1.6 < euler / euler32 < 2.4  # orders 2 and 1: h^2 vs h
    assert error(EDMHeunScheduler(sigma_data=SD), 128) < heun / 50  # converges to the closed form


def test_stochastic_sampler_draws_the_data_distribution():
    m, se = 4000, 4.0
    out, _, _ = _sample(EDMHeunScheduler(sigma_data=SD, **REF), 64, _z(m, seed=2), seed=5)
    x = out.sample[:, 0]
    assert torch.isfinite(x).all()
    assert ((x.mean(0) - MU).abs() < se * S / math.sqrt(m)).all(), (x.mean(0), MU)
    assert ((x.std(0) - S).abs() < se * S / math.sqrt(2 * m)).all(), (x.std(0), S)


def test_config_round_trip_and_bad_config(tmp_path):
    sched = EDMHeunScheduler(sigma_data=SD, **REF)
    sched.save_pretrained(tmp_path)
    again = EDMHeunScheduler.from_pretrained(tmp_path)
    assert {k: again.config[k] for k in REF} == REF and again.config.sigma_data == SD
    z = _z(8)
    assert torch.equal(_sample(sched, 8, z, seed=1)[0].sample, _sample(again, 8, z, seed=1)[0].sample)
    from_euler = EDMHeunScheduler.from_config(EDMEulerScheduler(sigma_data=SD).config, **REF)
    assert {k: from_euler.config[k] for k in (*REF, "sigma_data")} == {**REF, "sigma_data": SD}
    default = EDMHeunScheduler()
    default.save_pretrained(tmp_path / "default")  # s_tmax = inf survives JSON
    assert EDMHeunScheduler.from_pretrained(tmp_path / "default").config.s_tmax == math.inf
    for bad, match in [({"s_churn": -1.0}, "s_churn"), ({"s_tmin": 2.0, "s_tmax": 1.0}, "s_tmin <= s_tmax"),
                       ({"s_noise": 0.0}, "s_noise"), ({"sigma_min": 90.0}, "sigma_min < sigma_max"),
                       ({"prediction_type": "flow"}, "prediction_type"),
                       ({"final_sigmas_type": "sigma_min"}, "final_sigmas_type")]:
        with pytest.raises(ValueError, match=match):
            EDMHeunScheduler(**bad)
    with pytest.raises(ValueError, match="set_timesteps"):
        EDMHeunScheduler().step(torch.zeros(2, 4), 0.0, torch.zeros(2, 4))


def test_stages_and_nfe():
    n = 6
    sched = EDMHeunScheduler(sigma_data=SD)
    sched.set_timesteps(n)
    ts = sched.timesteps
    assert len(ts) == 2 * n - 1 and torch.equal(ts[1::2], ts[2::2])  # corrector at t_i, then predictor at t_i
    assert sched.sigmas[-1] == 0 and sched.init_noise_sigma == 80.0
    z = _z(4)
    out, _, net = _sample(sched, n, z)
    assert out.nfe == net.calls == 2 * n - 1  # both stages counted, the last step is Euler only
    sched.set_timesteps(1)  # one step: Euler from sigma_max straight to 0, i.e. x = D(x_0; sigma_max)
    out, _, net = _sample(sched, 1, z)
    assert net.calls == 1
    assert torch.allclose(out.sample[:, 0], exact_denoiser(80 * z, 80.0), atol=1e-9)
    # the x0 that step returns is the one to_x0 gives (epsilon / v / sample parameterisations)
    for pred in ("epsilon", "v_prediction", "sample"):
        sched = EDMHeunScheduler(sigma_data=SD, prediction_type=pred)
        sched.set_timesteps(3)
        x, f = 3 * z, torch.randn(4, 4, dtype=torch.float64)
        t = sched.timesteps[0]
        sched.scale_model_input(x, t)
        assert sched.state_in_first_order
        x0 = to_x0(sched, f, x, t).double()  # before step: it reads the current stage's level
        res = sched.step(f, t, x)
        assert torch.allclose(res.pred_original_sample, x0, rtol=1e-5, atol=1e-5)
        assert not sched.state_in_first_order
