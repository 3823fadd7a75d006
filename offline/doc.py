"""Dichotomy of Control (DoC; Yang, Schuurmans, Abbeel, Nachum, ICLR 2023), small-MLP version.

A future-conditioned policy pi(a | s_t, z) whose latent z ~ q(z | tau_{t:H}) summarises the future of the
episode, with a mutual-information constraint that keeps in z only what the policy controls (its actions), not the
environment's randomness (rewards, transitions). Equation numbers follow the arXiv version (2210.13435); the paper
text was not at hand when this was written, so the numbers are from memory and the objective below is written out
in full so that it can be checked against the paper.

Training, one update on a batch of steps (gendiff.offline.rcsl step 1: s_t, a_t, R_t and the future window):
  1. Encode the future: q(z | tau_{t:t+F}) = N(mu, sigma^2) from an MLP of the flattened window [s, a, r, s'];
     z = mu + sigma eps (reparameterised).
  2. Future-conditioned supervised learning (eq. 3): L_FCSL = E[-log pi(a_t | s_t, z)].
  3. The DoC constraint (eq. 4): MI(r_k, s_{k+1}; z | tau_{0:k-1}, s_k, a_k) = 0 for the steps k the latent sees,
     made a penalty beta * MI (eq. 5). The MI is estimated contrastively (eq. 6): a critic f(y, s, a, z) on
     y = (r_k, s_{k+1}) defines P_f(y | s, a, z) proportional to rho(y) exp f(y, s, a, z), rho the data's marginal
     of y (the other pairs of the batch; f separable, g(s, a, z) . h(y), as the reference's energies), and
        MI ~ E[ f(y_k, s_k, a_k, z) - log E_{y' ~ rho} exp f(y', s_k, a_k, z) ].
     The critic maximises this bound; the encoder and the policy minimise beta times it (a min-max, as the
     constraint asks: z should not tell the next reward / state better than (s, a) do). The public reference code
     (google-research dichotomy_of_control) minimises the same contrastive loss jointly for all networks, which
     would push z to *predict* y; we follow the constraint's direction instead. The tasks here are Markov, so the
     history tau_{0:k-1} adds nothing to P(y | s, a) and the critic sees (s_k, a_k) only. Every step k of the window
     is constrained, not only k = t, so that z cannot carry the luck of a later step either.
  4. The prior p(z | s_t) (Sec. 4.3): KL(q(z | tau) || p(z | s_t)), weight ``prior_weight``, trained into both
     (a VAE's prior term; the reference stops the prior's gradient when the MI term is on, which leaves the prior
     untrained, so we do not).
  5. The value V(s_t, z) (Sec. 4.3): E[(V(s_t, z) - R_t)^2] (returns-to-go / return_scale).
Acting (Sec. 4.3, the paper's inference):
  6. At every step sample K latents from p(z | s_t), take z* = argmax_k V(s_t, z_k), act with pi(a | s_t, z*);
     V(s_0, z*) is the return DoC predicts for the episode. With a target return (our addition, to compare with
     RCBC target by target) the latent whose V is nearest the remaining target R_t is taken instead.
By the paper's consistency result, with the constraint satisfied E[return | z] = V(s, z): what DoC predicts is
what it achieves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gendiff.config import check_numbers
from gendiff.entropy import gaussian_kl
from gendiff.offline.learners import make_adam
from gendiff.offline.rcsl import RCSL_LEARNERS, Conditioned, RCSLConfig, RCSLLearner, StepData, sample_actions
from gendiff.rl.common import mlp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass
class DoCConfig(RCSLConfig):
    """DoC hyper-parameters (plus the shared ones of :class:`RCSLConfig`)."""

    latent_dim: int = 4  # size of the future latent z
    beta: float = 1.0  # weight of the mutual-information penalty (0: plain future-conditioned learning)
    prior_weight: float = 0.1  # weight of KL(q(z | future) || p(z | s))
    critic_lr: float = 1e-3  # Adam learning rate of the contrastive critic f
    critic_dim: int = 32  # embedding size of the separable critic f(y; s, a, z) = g(s, a, z) . h(y)
    contrast_pairs: int = 256  # (step, future step) pairs per update in the contrastive estimate (positives)
    num_latents: int = 32  # K: latents drawn from the prior at each acting step
    greedy: bool = False  # act with the most likely action (False: sample pi(a | s, z))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_numbers(self, positive=("latent_dim", "critic_lr", "critic_dim", "contrast_pairs", "num_latents"),
                      nonnegative=("beta", "prior_weight"))


def _gaussian(net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    mean, log_std = net(x).chunk(2, -1)
    return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


def contrastive_mi(scores: Tensor) -> Tensor:
    """Step 3's estimate from scores [M, M], scores[i, j] = f(y_j, s_i, a_i, z_i): mean_i (scores[i, i] -
    log mean_j exp scores[i, j]), a scalar in (-inf, log M]."""
    return (scores.diagonal() - torch.logsumexp(scores, 1) + math.log(scores.shape[0])).mean()


class _LatentConditioned:
    """Step 6 for n episodes."""

    def __init__(self, learner: DoC, n: int, target: float | None, generator: torch.Generator) -> None:
        self.learner, self.generator, self.n = learner, generator, n
        self.rtg = None if target is None else np.full(n, float(target))
        self.predicted = np.full(n, np.nan)
        self.t = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        lr, k = self.learner, self.learner.config.num_latents
        with torch.no_grad():
            s = lr.norm_obs(obs)
            mean, log_std = _gaussian(lr.prior, s)  # [n, L]
            eps = torch.randn((k, *mean.shape), generator=self.generator)
            z = mean + log_std.exp() * eps  # [K, n, L]
            s_k = s.expand(k, *s.shape)
            v = lr.value(torch.cat([s_k, z], -1))[..., 0] * lr.return_scale  # [K, n]
            if self.rtg is None:
                best = v.argmax(0)
            else:
                best = (v - torch.as_tensor(self.rtg, dtype=torch.float32)).abs().argmin(0)
            cols = torch.arange(self.n)
            z_best, v_best = z[best, cols], v[best, cols]
            logits = lr.policy(torch.cat([s, z_best], -1))
        if self.t == 0:
            self.predicted = v_best.numpy().astype(np.float64)
        self.t += 1
        return sample_actions(logits, self.generator, lr.config.greedy)

    def observe(self, reward: np.ndarray) -> None:
        if self.rtg is not None:
            self.rtg = self.rtg - reward


@RCSL_LEARNERS.register("doc")
class DoC(RCSLLearner):
    """Dichotomy of Control (see the module docstring)."""

    name = "doc"
    config_class = DoCConfig
    config: DoCConfig

    def build(self) -> dict[str, nn.Module]:
        c, o, a, h = self.config, self.obs_dim, self.num_actions, self.config.hidden
        row = 2 * o + a + 1  # [s, one-hot a, r, s']
        self.encoder = mlp(self.window * (row + 1), 2 * c.latent_dim, h)  # window rows + mask
        self.policy = mlp(o + c.latent_dim, a, h)
        self.value = mlp(o + c.latent_dim, 1, h)
        self.prior = mlp(o, 2 * c.latent_dim, h)
        # f(y; s, a, z) = g(s, a, z) . h(y): a separable critic, M + M network calls for all M x M scores
        self.critic = nn.ModuleDict({"g": mlp(o + a + c.latent_dim, c.critic_dim, h), "h": mlp(1 + o, c.critic_dim, h)})
        self.critic_optimizer = make_adam(self.critic.parameters(), c.critic_lr)
        return {"encoder": self.encoder, "policy": self.policy, "value": self.value, "prior": self.prior}

    def encode(self, future: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Step 1: q's mean and log-std [B, latent_dim] for windows [B, F, row] with masks [B, F]."""
        x = torch.cat([(future * mask[..., None]).flatten(1), mask], 1)
        return _gaussian(self.encoder, x)

    def _pairs(self, batch: StepData, z: Tensor) -> tuple[Tensor, Tensor]:
        """Step 3's M (step, future step) pairs: conditioning rows [M, s + a + z] and outcomes y [M, 1 + s]."""
        o, a = self.obs_dim, self.num_actions
        rows, zs = batch.future[batch.mask > 0], z[:, None, :].expand(-1, self.window, -1)[batch.mask > 0]
        m = min(self.config.contrast_pairs, rows.shape[0])
        pick = torch.randperm(rows.shape[0], generator=self.generator)[:m]
        rows, zs = rows[pick], zs[pick]
        return torch.cat([rows[:, :o + a], zs], 1), rows[:, o + a:]

    def _scores(self, cond: Tensor, y: Tensor) -> Tensor:
        """scores[i, j] = f(y_j; cond_i) = g(cond_i) . h(y_j): [M, M]."""
        return self.critic["g"](cond) @ self.critic["h"](y).T

    def learn(self, batch: StepData) -> dict[str, float]:
        c = self.config
        mean, log_std = self.encode(batch.future, batch.mask)  # 1.
        z = mean + log_std.exp() * torch.randn(mean.shape, generator=self.generator)
        sz = torch.cat([batch.obs, z], 1)
        loss_pi = F.cross_entropy(self.policy(sz), batch.act)  # 2.
        cond, y = self._pairs(batch, z)
        mi = contrastive_mi(self._scores(cond, y))  # 3. (encoder side)
        p_mean, p_log_std = _gaussian(self.prior, batch.obs)
        loss_prior = gaussian_kl(mean, log_std, p_mean, p_log_std).mean()  # 4.
        loss_v = (self.value(sz)[:, 0] - batch.rtg).square().mean()  # 5.
        loss = loss_pi + c.beta * mi + c.prior_weight * loss_prior + loss_v
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        # 3. (critic side): maximise the bound with the latents held fixed
        critic_mi = contrastive_mi(self._scores(cond.detach(), y))
        self.critic_optimizer.zero_grad(set_to_none=True)
        (-critic_mi).backward()
        self.critic_optimizer.step()
        self.steps += 1
        return {"loss/policy": loss_pi.item(), "loss/value": loss_v.item(), "loss/prior": loss_prior.item(),
                "mi/contrastive": critic_mi.item()}

    def conditioned(self, n: int, target: float | None, generator: torch.Generator) -> Conditioned:
        """Step 6: a controller for n episodes (``target`` None: the paper's argmax-V latent)."""
        if target is not None and not np.isfinite(target):
            raise ValueError(f"doc: the target return must be finite or None, got {target!r}")
        return _LatentConditioned(self, n, target, generator)

    @torch.no_grad()
    def future_value(self, future: Tensor, mask: Tensor, obs_n: Tensor) -> Tensor:
        """V(s_t, mu(tau)) in environment units [B] for windows [B, F, row], masks [B, F], z-scored states [B, obs]:
        what the value function says of the encoded (mean) latent of given futures (tests, diagnostics)."""
        mean, _ = self.encode(future, mask)
        return self.value(torch.cat([obs_n, mean], 1))[:, 0] * self.return_scale
