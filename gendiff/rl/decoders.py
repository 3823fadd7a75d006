"""GoRL action decoders g_phi(s, z) -> u: identity, flow matching and diffusion.

All decoders map a latent z [B, d] (latent dim = action dim) and a state s [B, obs_dim] to a *pre-squash*
action u [B, d]; the environment receives scale(tanh(u)) (see :mod:`gendiff.rl.common`). So:

- :class:`IdentityDecoder` (GoRL stage 0) returns z itself: u = z exactly, and stage-0 GoRL is a
  tanh-squashed Gaussian policy, the same family as the PPO baseline.
- :class:`FlowDecoder`: a :class:`~gendiff.models.ConditionalMLPDecoder` predicting the flow velocity,
  sampled by :class:`~gendiff.sampler.GuidedSampler` with diffusers' ``FlowMatchEulerDiscreteScheduler``
  for 10 Euler steps from ``latents=z`` (sigma = 1 at the start: the first x is z), then tanh.
- :class:`DiffusionDecoder`: the same network predicting epsilon on a *short* discrete diffusion of
  ``num_inference_steps`` (10) noise levels, sampled by deterministic DDIM (eta 0) through every level from
  ``latents=z``, then tanh. As in GoRL's reference decoder, the levels follow the cosine schedule
  (Nichol & Dhariwal 2021, eq. 17) evaluated at t / 10, t = 0..9 (:func:`short_cosine_betas`): the noisiest
  level keeps alpha_bar = 0.024 (SNR 0.025), so the first x0 estimate (x - sigma eps) / alpha scales the
  network's error by 6.4. (A 1,000-level schedule started at t = 999 has alpha_bar ~ 1e-9: the first x0
  estimate is then all but a sign of the error, clipped to +-``data_clip``, and the decoded action is a
  near-discontinuous function of z, which the latent policy cannot steer.)

Training (GoRL, ALGORITHMS.md): conditional flow matching on (s, u) pairs from recent rollouts,
x_t = t eps + (1 - t) u, target eps - u, ``noise_draws`` = 8 noise draws per action
(:func:`decoder_loss`, which calls the shared :func:`gendiff.training.denoising_loss`; for the diffusion
decoder the same call gives the epsilon-prediction loss). States are standardised with the statistics
of the data of the latest refit; pre-squash actions are clipped to +-``data_clip`` (tanh(4) = 0.9993).
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler
from torch import Tensor, nn

from gendiff.models import ConditionalMLPDecoder
from gendiff.sampler import GuidedSampler
from gendiff.training import TrainConfig, denoising_loss

__all__ = ["DiffusionDecoder", "FlowDecoder", "IdentityDecoder", "decoder_loss", "make_decoder", "short_cosine_betas"]


class IdentityDecoder(nn.Module):
    """g(s, z) = z (GoRL stage 0). No network evaluations."""

    nfe_per_action = 0

    def decode(self, obs: Tensor, z: Tensor) -> Tensor:
        """Return ``z`` [B, d] unchanged (the very same tensor)."""
        return z

    forward = decode


def decoder_loss(model: nn.Module, scheduler, obs: Tensor, actions: Tensor, noise_draws: int = 8,
                 generator: torch.Generator | None = None) -> Tensor:
    """Denoising loss of ``model`` on (s, u) pairs with ``noise_draws`` independent (t, eps) per action.

    Flow scheduler: x_t = t eps + (1 - t) u, target eps - u (conditional flow matching); DDIM: epsilon loss.

    Args:
        model: a denoiser ``forward(x [M, d], t [M], cond [M, obs_dim])``.
        obs: [B, obs_dim] conditioning states; actions: [B, d] pre-squash actions.
    Returns:
        scalar loss averaged over B x noise_draws samples.
    """
    if obs.dim() != 2 or actions.dim() != 2 or obs.shape[0] != actions.shape[0]:
        raise ValueError(f"obs [B, obs_dim] and actions [B, d] must share B; got {tuple(obs.shape)}, "
                         f"{tuple(actions.shape)}")
    if noise_draws < 1:
        raise ValueError(f"noise_draws must be >= 1, got {noise_draws}")
    x0, cond = actions.repeat_interleave(noise_draws, 0), obs.repeat_interleave(noise_draws, 0)
    return denoising_loss(model, x0, scheduler, TrainConfig(), cond=cond, generator=generator)


class _GenerativeDecoder(nn.Module):
    """Shared part of the flow and diffusion decoders: network, state standardisation, sampling, fitting."""

    prediction: str = "flow"

    def __init__(self, obs_dim: int, act_dim: int, width: int = 256, depth: int = 3,
                 num_inference_steps: int = 10, data_clip: float = 4.0) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.num_inference_steps, self.data_clip = num_inference_steps, data_clip
        self.net = ConditionalMLPDecoder(act_dim, obs_dim, width=width, depth=depth)
        self.scheduler = self.make_scheduler()
        self.sampler = GuidedSampler(self.net, self.scheduler, prediction_type=self.prediction)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)

    def make_scheduler(self):
        raise NotImplementedError

    @property
    def nfe_per_action(self) -> int:
        return self.num_inference_steps

    def _cond(self, obs: Tensor) -> Tensor:
        return (obs - self.obs_mean) / self.obs_std

    @torch.no_grad()
    def decode(self, obs: Tensor, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """u [B, d] from latents z [B, d] and states obs [B, obs_dim] (GuidedSampler with ``latents=z``)."""
        if z.dim() != 2 or z.shape[1] != self.act_dim or obs.shape != (z.shape[0], self.obs_dim):
            raise ValueError(f"decode needs obs [B, {self.obs_dim}] and z [B, {self.act_dim}], got "
                             f"{tuple(obs.shape)} and {tuple(z.shape)}")
        out = self.sampler((self.act_dim,), batch_size=z.shape[0], num_inference_steps=self.num_inference_steps,
                           cond=self._cond(obs.float()), latents=z[:, None].float(), generator=generator)
        return out.sample[:, 0]

    forward = decode

    def fit(self, obs: Tensor, actions: Tensor, steps: int, batch_size: int = 256, lr: float = 1e-3,
            noise_draws: int = 8, generator: torch.Generator | None = None) -> list[float]:
        """Refit on (s, u) pairs: obs [N, obs_dim], actions [N, d]; returns the loss per step."""
        if obs.shape[0] == 0:
            raise ValueError("no (state, action) pairs to fit the decoder on")
        if not (torch.isfinite(obs).all() and torch.isfinite(actions).all()):
            raise ValueError("decoder training data contain NaN or inf")
        self.obs_mean.copy_(obs.mean(0))
        self.obs_std.copy_(obs.std(0).clamp_min(1e-3) if obs.shape[0] > 1 else torch.ones(self.obs_dim))
        cond, u = self._cond(obs), actions.clamp(-self.data_clip, self.data_clip)
        for group in self.opt.param_groups:
            group["lr"] = lr
        losses = []
        self.net.train()
        for _ in range(steps):
            idx = torch.randint(0, obs.shape[0], (min(batch_size, obs.shape[0]),), generator=generator)
            loss = decoder_loss(self.net, self.scheduler, cond[idx], u[idx], noise_draws, generator)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.opt.step()
            losses.append(loss.item())
        self.net.eval()
        return losses


class FlowDecoder(_GenerativeDecoder):
    """Flow-matching decoder (velocity prediction, from z for ``num_inference_steps`` solver steps).

    ``solver="euler"`` (GoRL's reference: 10 Euler steps, 10 network calls) or ``"heun"`` (diffusers'
    ``FlowMatchHeunDiscreteScheduler``, second order, 2 n - 1 calls for n steps). With independent noise-data
    pairs the marginal flow is curved, and few Euler steps shrink the decoded spread (benchmarks/
    gorl_decoder_spread.md, trained decoders: 10 Euler steps keep 0.83-0.86 of it, 5 Heun steps 0.97-1.00 for
    9 calls; with the exact velocity of Gaussian data 0.87 and 0.99); training is the same for both.
    """

    prediction = "flow"

    def __init__(self, obs_dim: int, act_dim: int, width: int = 256, depth: int = 3, num_inference_steps: int = 10,
                 data_clip: float = 4.0, solver: Literal["euler", "heun"] = "euler") -> None:
        super().__init__(obs_dim, act_dim, width, depth, num_inference_steps, data_clip)
        self.set_solver(solver, num_inference_steps)

    def set_solver(self, solver: Literal["euler", "heun"], num_inference_steps: int) -> None:
        """Sample with ``solver`` for ``num_inference_steps`` steps from now on (the fitted network is kept)."""
        if solver not in ("euler", "heun"):
            raise ValueError(f"flow decoder solver must be 'euler' or 'heun', got {solver!r}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        self.solver, self.num_inference_steps = solver, num_inference_steps
        # sampling only: the training loss always reads the Euler scheduler's config (self.scheduler)
        sched = (FlowMatchHeunDiscreteScheduler(num_train_timesteps=1000, shift=1.0) if solver == "heun"
                 else self.scheduler)
        self.sampler = GuidedSampler(self.net, sched, prediction_type=self.prediction)

    @property
    def nfe_per_action(self) -> int:
        return 2 * self.num_inference_steps - 1 if self.solver == "heun" else self.num_inference_steps

    def make_scheduler(self) -> FlowMatchEulerDiscreteScheduler:
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


def short_cosine_betas(levels: int, s: float = 0.008) -> Tensor:
    """Betas [levels] with alpha_bar_t = f(t / levels) / f(0), t = 0..levels-1, f(u) = cos((u + s) / (1 + s) pi / 2)^2.

    The cosine schedule of Nichol & Dhariwal (2021, eq. 17) on ``levels`` discrete levels, indexed as GoRL's
    reference diffusion decoder does: level 0 is (almost) clean and the noisiest level is t = levels - 1,
    not t = levels (where alpha_bar = 0). Betas are clipped to [1e-4, 0.999] as usual, so alpha_bar_0 = 0.9999.
    """
    if levels < 2:
        raise ValueError(f"a diffusion decoder needs >= 2 noise levels, got {levels}")
    u = torch.arange(levels + 1, dtype=torch.float64) / levels
    abar = torch.cos((u + s) / (1 + s) * torch.pi / 2) ** 2
    abar = abar / abar[0]
    betas = 1 - abar[:levels] / torch.cat([torch.ones(1, dtype=torch.float64), abar[: levels - 1]])
    return betas.clamp(1e-4, 0.999).float()


class DiffusionDecoder(_GenerativeDecoder):
    """DDIM decoder: epsilon prediction on ``num_inference_steps`` noise levels (:func:`short_cosine_betas`),
    deterministic DDIM from z through every level (levels - 1, ..., 0)."""

    prediction = "epsilon"

    def make_scheduler(self) -> DDIMScheduler:
        levels = self.num_inference_steps
        return DDIMScheduler(num_train_timesteps=levels, trained_betas=short_cosine_betas(levels).tolist(),
                             clip_sample=True, clip_sample_range=self.data_clip, timestep_spacing="leading",
                             steps_offset=0, set_alpha_to_one=True, prediction_type="epsilon")


def make_decoder(kind: Literal["identity", "flow", "diffusion"], obs_dim: int, act_dim: int, **kwargs) -> nn.Module:
    """Build a decoder by name; unknown names raise ``KeyError`` listing the valid ones."""
    table = {"identity": IdentityDecoder, "flow": FlowDecoder, "diffusion": DiffusionDecoder}
    if kind not in table:
        raise KeyError(f"unknown decoder {kind!r}; valid names: {sorted(table)}")
    return IdentityDecoder() if kind == "identity" else table[kind](obs_dim, act_dim, **kwargs)
