"""GoRL: generative policies for online RL by decoupling optimisation from generation.

pi(a|s) = integral scale(tanh(g_phi(s, z))) pi_theta(z|s) dz. The latent policy pi_theta is a diagonal
Gaussian (latent dim = action dim) optimised by PPO (base "ppo") or by SAC (base "sac", a tanh-Gaussian
over the latent box [-L, L]); the decoder g_phi is the identity at stage 0 and then a flow-matching or
diffusion decoder (:mod:`gendiff.rl.decoders`) started from ``latents=z``. Two-timescale schedule:

  1. Stage k (``stage_steps`` env steps, or entry k of a list of stage lengths, the last repeated; the
     reference's HopperStand runs 4 stages of [60M, 60M, 30M, 30M]): latent RL with the decoder frozen, with the
     latent regulariser toward N(0, I) (PPO: ``latent_kl_coef`` KL(pi_theta(.|s) || N(0, I)); SAC:
     ``latent_kl_coef`` 0.5 E||z||^2, which with SAC's own entropy term is the same KL up to alpha).
  2. Collect the (s, u) pairs of the most recent ``recent_steps`` rollout steps, where u = g(s, z) is the
     pre-squash action executed (``decoder_data="positive_advantage"`` keeps pairs whose advantage is above
     the window's mean, A - mean(A) > 0, which is robust to a biased critic: GAE for PPO,
     min Q(s, z) - min Q(s, z' ~ pi) for SAC; "all" keeps every pair). ``"final_policy"`` keeps the states
     but replaces their actions by the stage's final policy: u = g(s, z) with z ~ pi_theta(z|s) drawn after the
     stage's last update, so the new decoder represents the policy the stage ended with, not a blend of the
     policies it went through (the reference refits on fresh rollouts of the final policy; this reuses the
     recent states instead of spending env steps on new ones). ``final_policy_draws`` = K redraws K actions per
     state (K x recent_steps pairs, the same fit steps): more samples of the policy at each state instead of one.
  3. Refit the decoder by conditional flow matching / denoising (8 noise draws per action) and swap it in.
     With the SAC base the replay buffer is emptied (its latents meant other actions under the old decoder).
  4. ``reset_latent``: re-initialise the latent policy (the reference's fresh encoder each stage). A fresh
     pi_theta(z|s) is close to N(0, I), which the new decoder maps to the refit data's action distribution,
     so the next stage starts from the previous stage's behaviour instead of applying pi_theta's shift (and
     its narrowing) twice. ``latent_reset_init="gaussian"`` makes it exactly N(0, I): the output layer is
     zeroed and log std set to 0 (the reference's "gaussian_warm_value" encoder initialisation; with the SAC
     base the pre-squash Gaussian is N(0, I)). "fresh" keeps the network's random initialisation.
     ``"recentre"`` also starts the stage at exactly N(0, I), but keeps the actor's hidden layers (the state
     features learned so far, with their optimiser moments): only the output layer and log std are reset.
     The critic and the observation statistics are kept (the behaviour, hence its value, is unchanged).
  5. ``lr_schedule="stage"`` (PPO base with ``anneal_lr``): the learning rate falls linearly from ``lr`` to 0
     within each stage and restarts at every refit, as if each stage were its own PPO run (the reference
     trains a fresh PPO per stage). The default "run" anneals once over the whole run, so with
     ``reset_latent`` the fresh latent policies of the last stages learn at a near-zero rate.
  6. ``actor_lr_decay`` (PPO base): the latent actor's rate multiple (``PPOConfig.actor_lr_scale`` = S) applies
     right after each refit (and at the start) and falls linearly to 1 by the next refit: the actor's rate is
     lr (1 + (S - 1) f), f as in step 5 (the critic keeps lr; ``anneal_lr`` still multiplies both). Large steps
     while the reset latent policy moves away from N(0, I), plain PPO's step when the stage fine-tunes it.
     Off by default.

Other options: ``PPOConfig.actor_lr_scale`` (a constant multiple of the latent actor's rate, the PPO base);
``flow_solver`` ("euler", the reference's, or "heun": n steps cost 2 n - 1 decoder calls) and
``num_inference_steps`` for sampling the flow decoder; ``decoder_fit_steps`` / ``decoder_batch_size`` /
``decoder_lr`` / ``noise_draws`` for each refit.

``decoder_data="positive_advantage"`` is our choice where ALGORITHMS.md only says "recent rollouts": with
"all" the refit decoder only re-represents the current policy's action distribution. The reference code
(bennidict23/GoRL) fits a fresh decoder on all pairs of new stochastic rollouts of the stage's final policy
(50k steps, batch 8192) and re-initialises the latent policy every stage (``reset_latent=True`` here).

What these options measured (Hopper-v5, the two-mode tasks), including the decoder's known loss of action spread
per refit, is in benchmarks/gorl/README.md ("Findings formerly in gorl.py's docstring").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from gendiff.config import check_literal_fields, from_dict, to_dict
from gendiff.rl.common import TrainLog, load_modules, read_checkpoint, write_checkpoint
from gendiff.rl.decoders import IdentityDecoder, make_decoder
from gendiff.rl.latent import LATENT_BASES, LatentLearner, StageHooks
from gendiff.rl.ppo import PPO, PPOConfig
from gendiff.rl.sac import SAC, SACConfig

__all__ = ["GoRL", "GoRLConfig", "StageRecord"]


@dataclass
class GoRLConfig:
    """GoRL settings (configs/gorl.yaml mirrors these defaults)."""

    decoder: Literal["flow", "diffusion"] = "flow"
    base: Literal["ppo", "sac"] = "ppo"
    stage_steps: int | list[int] = 20_000  # a list: each stage's length in order (stage 0 first), the last repeated
    first_stage_steps: int | None = None  # stage 0 (identity decoder) length; None: stage_steps (int form only)
    recent_steps: int = 20_000
    decoder_data: Literal["all", "positive_advantage", "final_policy"] = "positive_advantage"
    final_policy_draws: int = 1  # "final_policy": actions redrawn per recent state (more pairs, less noisy fit)
    decoder_fit_steps: int = 500
    decoder_batch_size: int = 256
    decoder_lr: float = 1e-3
    noise_draws: int = 8
    decoder_width: int = 256
    decoder_depth: int = 3
    num_inference_steps: int = 10  # decoder sampling steps (flow "heun": 2 n - 1 network calls)
    flow_solver: Literal["euler", "heun"] = "euler"  # the reference's Euler; see FlowDecoder
    latent_kl_coef: float = 0.01
    latent_bound: float = 3.0  # SAC base: latent box [-L, L]
    reset_latent: bool = False  # step 4: fresh latent policy after each refit (the reference's default)
    latent_reset_init: Literal["fresh", "gaussian", "recentre"] = "fresh"  # step 4: random init or N(0, I)
    lr_schedule: Literal["run", "stage"] = "run"  # step 5: PPO's linear anneal over the run or within each stage
    actor_lr_decay: bool = False  # step 6 (PPO base): the actor's rate multiple falls from actor_lr_scale to 1 per stage

    def __post_init__(self) -> None:
        lengths = self.stage_steps if isinstance(self.stage_steps, list) else [self.stage_steps]
        if not lengths or min(lengths) < 1:
            raise ValueError(f"GoRLConfig.stage_steps must be >= 1 (or a non-empty list of such), got {self.stage_steps}")
        if self.first_stage_steps is not None and self.first_stage_steps < 1:
            raise ValueError(f"GoRLConfig.first_stage_steps must be >= 1 or null, got {self.first_stage_steps}")
        if isinstance(self.stage_steps, list) and self.first_stage_steps is not None:
            raise ValueError("GoRLConfig: give stage 0's length either as first_stage_steps or as the first entry of a "
                             "stage_steps list, not both")
        for name in ("recent_steps", "decoder_fit_steps", "noise_draws", "num_inference_steps", "final_policy_draws"):
            if getattr(self, name) < 1:
                raise ValueError(f"GoRLConfig.{name} must be >= 1, got {getattr(self, name)}")
        check_literal_fields(self)  # decoder, base, decoder_data, flow_solver, latent_reset_init, lr_schedule
        if self.latent_kl_coef < 0 or not self.latent_bound > 0:
            raise ValueError("GoRLConfig: latent_kl_coef must be >= 0 and latent_bound > 0")
        if self.actor_lr_decay and self.base != "ppo":
            raise ValueError("GoRLConfig.actor_lr_decay acts on PPOConfig.actor_lr_scale: it needs base 'ppo'")

    def stage_length(self, k: int) -> int:
        """Env steps of stage ``k`` (0: the identity-decoder stage)."""
        if isinstance(self.stage_steps, list):
            return self.stage_steps[min(k, len(self.stage_steps) - 1)]
        return (self.first_stage_steps or self.stage_steps) if k == 0 else self.stage_steps


@dataclass
class StageRecord:
    """One decoder refit: env step, pairs used, final loss, seconds, and how much the new decoder's actions
    vary with z: ``z_spread`` is the mean over refit states of the std of u = g(s, z) over z ~ N(0, I) (per
    action dimension, averaged), ``data_spread`` the std of the refit actions u over the data. A z_spread
    that shrinks stage after stage means the decoder is turning deterministic (z ignored). ``policy_shift``
    is how far the refit (and the latent reset) moved the behaviour: the root mean square, over 128 refit states
    and the action dimensions, of E[u_after | s] - E[u_before | s], the pre-squash action's mean under the policy
    just after the swap and under the stage's final policy. Each mean is estimated from 256 draws, and the
    draws' own variance (var_before + var_after) / 256 is subtracted from the mean square, so a perfect refit
    with the N(0, I) reset reads ~0: it measures the distillation error that each refit adds.
    """

    step: int
    pairs: int
    loss: float
    seconds: float
    z_spread: float = float("nan")
    data_spread: float = float("nan")
    policy_shift: float = float("nan")


class GoRL:
    """GoRL agent on a gymnasium env (see the module docstring).

    The base learner (PPO or SAC over the latent, ``config.base``) is reached only through the
    :class:`~gendiff.rl.latent.LatentLearner` protocol (``self.base``); ``self.agent`` is the wrapped PPO / SAC.

    Args:
        env_id: gymnasium id; config: GoRL settings; ppo_config / sac_config: the base learner's settings.
    """

    def __init__(self, env_id: str, config: GoRLConfig | None = None, ppo_config: PPOConfig | None = None,
                 sac_config: SACConfig | None = None, seed: int = 0) -> None:
        self.config = cfg = config or GoRLConfig()
        self.env_id, self.seed = env_id, seed
        self.generator = torch.Generator().manual_seed(seed + 7)
        self.base: LatentLearner
        self.base, self.scaler = LATENT_BASES[cfg.base].build(env_id, cfg, ppo_config, sac_config, seed,
                                                              self.transform)
        self.obs_dim, self.act_dim = self.base.obs_dim, self.base.act_dim
        self.decoder: torch.nn.Module = IdentityDecoder()  # stage 0
        extra = {"solver": cfg.flow_solver} if cfg.decoder == "flow" else {}
        self.generative = make_decoder(cfg.decoder, self.obs_dim, self.act_dim, width=cfg.decoder_width,
                                       depth=cfg.decoder_depth, num_inference_steps=cfg.num_inference_steps, **extra)
        self.stages: list[StageRecord] = []
        self._next_refit = cfg.stage_length(0)

    @property
    def agent(self) -> PPO | SAC:
        """The base learner's agent (the latent policy, its critic and optimisers)."""
        return self.base.learner

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``path/agent/`` (the base learner, :meth:`PPO.save` / :meth:`SAC.save`), ``path/model.safetensors``
        (the generative decoder) and ``path/config.json`` (env id, seed, GoRL config, refits so far). For acting and
        evaluation: optimiser states and the recent-pairs window are not saved."""
        path = Path(path)
        self.agent.save(path / "agent")
        meta = {"env_id": self.env_id, "seed": self.seed, "config": to_dict(self.config), "refits": len(self.stages)}
        return write_checkpoint(path, {"decoder": self.generative}, meta)

    @classmethod
    def load(cls, path: str | Path) -> GoRL:
        """Rebuild an agent written by :meth:`save` (makes the environment once, for its spaces)."""
        meta, state = read_checkpoint(path, "GoRL agent")
        config = from_dict(GoRLConfig, meta["config"])
        base = LATENT_BASES[config.base]
        inner = base.learner_class.load(Path(path) / "agent")
        agent = cls(meta["env_id"], config, seed=meta["seed"], **{base.config_arg: inner.config})
        agent.base = base(inner, agent.transform, config.recent_steps)  # the saved weights replace the fresh ones
        load_modules(state, {"decoder": agent.generative}, path)
        if meta["refits"] > 0:  # stage 0 acts through the identity decoder
            agent.decoder = agent.generative
        return agent

    # ------------------------------------------------------------------ acting
    def transform(self, obs: Tensor, z: Tensor) -> Tensor:
        """Pre-squash action u = g(s, z) [n, d] with the current (frozen) decoder."""
        return self.decoder.decode(obs, z)

    def env_action(self, obs: Tensor, z: Tensor) -> Tensor:
        """scale(tanh(g(s, z))) [n, d]."""
        return self.scaler.to_env(torch.tanh(self.transform(obs, z)))

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Environment actions [n, act_dim] (deterministic: latent mean, then the decoder)."""
        o = torch.as_tensor(obs, dtype=torch.float32)
        return self.env_action(o, self.base.sample_latent(o, deterministic)).numpy()

    # ------------------------------------------------------------------ schedule
    def _refit(self, step: int, obs: Tensor, u: Tensor | None, adv: Tensor) -> None:
        """Steps 2-3: select pairs, fit the generative decoder, swap it in (obs [n, obs_dim], executed pre-squash
        actions u [n, d], None with ``final_policy`` which redraws them, advantages adv [n])."""
        cfg, t0 = self.config, time.perf_counter()
        probe = torch.Generator().manual_seed(self.seed + 104_729 * (len(self.stages) + 1))  # diagnostics only
        states = obs[torch.randperm(obs.shape[0], generator=probe)[:128]]
        before, noise_before = self._mean_action(states, probe)
        if cfg.decoder_data == "final_policy":  # K = final_policy_draws actions per recent state
            obs, adv = obs.repeat(cfg.final_policy_draws, 1), adv.repeat(cfg.final_policy_draws)
            u = self._final_policy_actions(obs, self.generator)
        if u is None:
            raise ValueError("GoRL._refit needs the executed actions unless decoder_data is 'final_policy'")
        centred = adv - adv.mean()
        keep = centred > 0 if cfg.decoder_data == "positive_advantage" else torch.ones_like(adv, dtype=torch.bool)
        if int(keep.sum()) < 2:
            keep = torch.ones_like(adv, dtype=torch.bool)
        losses = self.generative.fit(obs[keep], u[keep], cfg.decoder_fit_steps, cfg.decoder_batch_size,
                                     cfg.decoder_lr, cfg.noise_draws, self.generator)
        self.decoder = self.generative
        if cfg.reset_latent:
            self._reset_latent_policy()
        after, noise_after = self._mean_action(states, probe)
        shift = float(((after - before).square() - noise_before - noise_after).mean().clamp_min(0).sqrt())
        self.stages.append(StageRecord(step, int(keep.sum()), float(np.mean(losses[-20:])),
                                       time.perf_counter() - t0, self._z_spread(obs[keep]),
                                       float(u[keep].std(0).mean()), shift))

    @torch.no_grad()
    def _final_policy_actions(self, obs: Tensor, generator: torch.Generator) -> Tensor:
        """``decoder_data="final_policy"``: u = g(s, z), z ~ pi_theta(z|s) of the current latent policy and the
        current (outgoing) decoder, for raw states obs [n, obs_dim] -> [n, act_dim]."""
        return self.transform(obs, self.base.sample_latent(obs, False, generator))

    @torch.no_grad()
    def _mean_action(self, obs: Tensor, generator: torch.Generator, draws: int = 256) -> tuple[Tensor, Tensor]:
        """E[u | s] of the current policy (latent policy, then decoder) from ``draws`` draws per state, and the
        variance of that estimate (the draws' variance / draws): both [n, act_dim] for obs [n, obs_dim]."""
        u = self._final_policy_actions(obs.repeat(draws, 1), generator).view(draws, obs.shape[0], -1)
        return u.mean(0), u.var(0) / draws

    @torch.no_grad()
    def _z_spread(self, obs: Tensor, states: int = 128, draws: int = 16) -> float:
        """Mean over ``states`` states of std_z g(s, z), z ~ N(0, I) (``draws`` per state).

        Uses its own generator, so that measuring does not change the training's random stream.
        """
        gen = torch.Generator().manual_seed(self.seed + 7919 * (len(self.stages) + 1))
        o = obs[torch.randperm(obs.shape[0], generator=gen)[:states]]
        z = torch.randn(draws, o.shape[0], self.act_dim, generator=gen)
        u = self.generative.decode(o.repeat(draws, 1), z.flatten(0, 1)).view(draws, o.shape[0], -1)
        return float(u.std(0).mean())

    def _reset_latent_policy(self) -> None:
        """Step 4: fresh weights for the latent actor (exactly N(0, I) with ``latent_reset_init="gaussian"``),
        and its optimiser moments dropped (critic kept). ``"recentre"`` resets only the output layer and the
        log std to N(0, I), keeping the hidden layers and their moments."""
        mode = self.config.latent_reset_init
        actor, opt = self.base.latent_actor()
        # drawn in every mode (also "recentre", which does not load it), so that the three modes share one random
        # stream and runs of one seed differ only in the reset
        fresh = self.base.fresh_latent_actor()
        if mode != "recentre":
            actor.load_state_dict(fresh.state_dict())  # same Parameter objects: the optimiser keeps them
        head = self.base.standard_normal_params()  # output layer (and PPO's log std)
        if mode != "fresh":  # N(0, I): zero output layer, log std 0
            with torch.no_grad():
                for p in head:
                    p.zero_()
        for p in (head if mode == "recentre" else actor.parameters()):
            opt.state.pop(p, None)

    def _refit_due(self, step: int) -> bool:
        """Step 1: the stage ends once ``step`` env steps are done."""
        return step >= self._next_refit

    def _end_stage(self, step: int, obs: Tensor, u: Tensor | None, adv: Tensor) -> None:
        """Steps 2-4 on the base's recent window (see :meth:`_refit`), then the next stage's end."""
        self._refit(step, obs, u, adv)
        self._next_refit += self.config.stage_length(len(self.stages))

    def _stage_lr_fraction(self, step: int) -> float:
        """Steps 5-6: 1 at the last refit (or the start), falling linearly to 0 at the next refit; ``step`` is the
        number of env steps done before the PPO iteration."""
        start = self.stages[-1].step if self.stages else 0
        return max(0.0, 1.0 - (step - start) / (self._next_refit - start))

    def learn(self, steps: int, progress: bool = True) -> TrainLog:
        """Run the staged schedule for ``steps`` env steps; returns the learning curve."""
        cfg = self.config
        hooks = StageHooks(decode=self.transform, env_action=self.env_action, refit_due=self._refit_due,
                           refit=self._end_stage, recent_steps=cfg.recent_steps,
                           redraws_actions=cfg.decoder_data == "final_policy",
                           lr_fraction=self._stage_lr_fraction if cfg.lr_schedule == "stage" else None,
                           actor_scale_fraction=self._stage_lr_fraction if cfg.actor_lr_decay else None)
        log = self.base.learn(self.env_id, steps, self.seed, progress, hooks)
        log.metrics["gorl/stages"] = float(len(self.stages))
        return log
