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

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from gendiff.config import check_literal_fields, from_dict, to_dict
from gendiff.rl.common import TrainLog, load_modules, read_checkpoint, write_checkpoint
from gendiff.rl.decoders import IdentityDecoder, make_decoder
from gendiff.rl.ppo import PPO, GaussianHead, PPOConfig
from gendiff.rl.sac import SAC, SACConfig, TanhGaussianPolicy

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


@dataclass
class _Recent:
    """FIFO of the latest (s, u, advantage) rows."""

    capacity: int
    rows: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list)

    def add(self, obs: Tensor, u: Tensor, adv: Tensor) -> None:
        self.rows.append((obs, u, adv))
        while sum(r[0].shape[0] for r in self.rows) - self.rows[0][0].shape[0] >= self.capacity:
            self.rows.pop(0)

    def data(self) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(torch.cat(x)[-self.capacity:] for x in zip(*self.rows))  # type: ignore[return-value]


class GoRL:
    """GoRL agent on a gymnasium env (see the module docstring).

    Args:
        env_id: gymnasium id; config: GoRL settings; ppo_config / sac_config: the base learner's settings.
    """

    def __init__(self, env_id: str, config: GoRLConfig | None = None, ppo_config: PPOConfig | None = None,
                 sac_config: SACConfig | None = None, seed: int = 0) -> None:
        self.config = cfg = config or GoRLConfig()
        self.env_id, self.seed = env_id, seed
        self.generator = torch.Generator().manual_seed(seed + 7)
        if cfg.base == "ppo":
            pc = dataclasses.replace(ppo_config or PPOConfig(), latent_kl_coef=cfg.latent_kl_coef, head="gaussian")
            self.agent: PPO | SAC = PPO.from_env(env_id, pc, seed)
            self.scaler = self.agent.scaler
        else:
            sc = dataclasses.replace(sac_config or SACConfig(), latent_kl_coef=cfg.latent_kl_coef)
            probe = SAC.from_env(env_id, sc, seed)  # the environment's bounds
            self.scaler = probe.policy.scaler
            bound = [cfg.latent_bound] * probe.act_dim
            self.agent = SAC(probe.obs_dim, probe.act_dim, [-b for b in bound], bound, sc, seed)
        self.obs_dim, self.act_dim = self.agent.obs_dim, self.agent.act_dim
        self.decoder: torch.nn.Module = IdentityDecoder()  # stage 0
        extra = {"solver": cfg.flow_solver} if cfg.decoder == "flow" else {}
        self.generative = make_decoder(cfg.decoder, self.obs_dim, self.act_dim, width=cfg.decoder_width,
                                       depth=cfg.decoder_depth, num_inference_steps=cfg.num_inference_steps, **extra)
        self.stages: list[StageRecord] = []
        self._recent = _Recent(cfg.recent_steps)
        self._next_refit = cfg.stage_length(0)
        if isinstance(self.agent, PPO):
            self.agent.transform = self.transform  # PPO's actions go through the current decoder

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
        inner = PPO.load(Path(path) / "agent") if config.base == "ppo" else SAC.load(Path(path) / "agent")
        agent = cls(meta["env_id"], config, inner.config if isinstance(inner, PPO) else None,
                    inner.config if isinstance(inner, SAC) else None, seed=meta["seed"])
        agent.agent = inner
        if isinstance(inner, PPO):
            inner.transform, agent.scaler = agent.transform, inner.scaler
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
        if isinstance(self.agent, PPO):
            return self.agent.act(obs, deterministic)
        return self.env_action(o, self.agent.policy.act(o, deterministic)).numpy()

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
        if isinstance(self.agent, PPO):
            z, _ = self.agent.actor.sample(self.agent._norm(obs), False, generator)
        else:
            z = self.agent.policy.act(obs, False, generator)
        return self.transform(obs, z)

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
        ag, mode = self.agent, self.config.latent_reset_init
        actor, opt = (ag.actor, ag.opt) if isinstance(ag, PPO) else (ag.policy, ag.actor_opt)
        # drawn in every mode (also "recentre", which does not load it), so that the three modes share one random
        # stream and runs of one seed differ only in the reset
        fresh = (GaussianHead(ag.obs_dim, ag.act_dim, ag.config.hidden, ag.config.init_log_std)
                 if isinstance(ag, PPO) else TanhGaussianPolicy(ag.obs_dim, ag.act_dim, ag.low, ag.high,
                                                                ag.config.hidden))
        if mode != "recentre":
            actor.load_state_dict(fresh.state_dict())  # same Parameter objects: the optimiser keeps them
        out = (actor.mean if isinstance(ag, PPO) else actor.net)[-1]
        if mode != "fresh":  # N(0, I): zero output layer, log std 0
            with torch.no_grad():
                out.weight.zero_()
                out.bias.zero_()
                if isinstance(ag, PPO):
                    actor.log_std.zero_()
        log_std = [actor.log_std] if isinstance(ag, PPO) else []
        for p in ([out.weight, out.bias, *log_std] if mode == "recentre" else actor.parameters()):
            opt.state.pop(p, None)

    def _on_rollout(self, step: int, ro: dict[str, Tensor], adv: Tensor) -> None:
        self._recent.add(ro["obs"].flatten(0, 1), ro["pre"].flatten(0, 1), adv.flatten())
        if step >= self._next_refit:
            self._refit(step, *self._recent.data())
            self._next_refit += self.config.stage_length(len(self.stages))

    def _on_sac_step(self, step: int, agent: SAC) -> None:
        if step < self._next_refit or agent.buffer.size < 2:
            return
        batch = agent.buffer.recent(self.config.recent_steps)
        with torch.no_grad():
            z = agent.policy.scaler.to_env(batch["act"])
            # "final_policy": _refit redraws the actions, so the batch's are not decoded
            u = None if self.config.decoder_data == "final_policy" else self.transform(batch["obs"], z)
            pi_a, _ = agent.policy.sample(batch["obs"], agent.generator)
            adv = agent.critic(batch["obs"], batch["act"]).min(0).values - agent.critic(batch["obs"], pi_a).min(0).values
        self._refit(step, batch["obs"], u, adv)
        agent.buffer.clear()
        self._next_refit += self.config.stage_length(len(self.stages))

    def _stage_lr_fraction(self, step: int) -> float:
        """Steps 5-6: 1 at the last refit (or the start), falling linearly to 0 at the next refit; ``step`` is the
        number of env steps done before the PPO iteration."""
        start = self.stages[-1].step if self.stages else 0
        return max(0.0, 1.0 - (step - start) / (self._next_refit - start))

    def learn(self, steps: int, progress: bool = True) -> TrainLog:
        """Run the staged schedule for ``steps`` env steps; returns the learning curve."""
        if isinstance(self.agent, PPO):
            frac = self._stage_lr_fraction if self.config.lr_schedule == "stage" else None
            actor_frac = self._stage_lr_fraction if self.config.actor_lr_decay else None
            log = self.agent.learn(self.env_id, steps, self.seed, progress, on_rollout=self._on_rollout,
                                   lr_fraction=frac, actor_scale_fraction=actor_frac)
        else:
            log = self.agent.learn(self.env_id, steps, self.seed, progress,
                                   action_map=self.env_action, on_step=self._on_sac_step)
        log.metrics["gorl/stages"] = float(len(self.stages))
        return log
