"""Proximal Policy Optimization (Schulman et al. 2017) with GAE (Schulman et al. 2016), cleanrl-style.

The policy draws a *pre-squash* action u ~ pi(u|s) (diagonal Gaussian, or a mixture of Gaussians with
``head="pmoe"``); the environment gets scale(tanh(T(s, u))) where T is the identity for plain PPO and
GoRL's frozen decoder otherwise (the ratio pi/pi_old in u-space is exact because T is fixed during a
stage). Per rollout of ``num_steps`` x ``num_envs`` transitions:

  1. GAE: delta_t = r_t + gamma V(s_{t+1}) (1 - d_t) - V(s_t); A_t = sum_l (gamma lambda)^l delta_{t+l}
     (eq. 11-16 of GAE); truncated episodes bootstrap with V(final obs).
  2. For ``update_epochs`` x minibatches: r = exp(log pi(u|s) - log pi_old(u|s)),
     L = -E min(r A, clip(r, 1 - eps, 1 + eps) A) (PPO eq. 7) + vf_coef (V - R)^2 - ent_coef H
     + latent_kl_coef KL(pi(.|s) || N(0, I))   (GoRL's latent regulariser; 0 for plain PPO).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from gendiff.config import from_dict, to_dict
from gendiff.entropy import gaussian_entropy, gaussian_log_prob
from gendiff.rl.common import (
    ActionScaler,
    EpisodeTracker,
    RunningMeanStd,
    TrainLog,
    check_action_space,
    evaluate,
    load_modules,
    make_env,
    make_vec_env,
    mlp,
    read_checkpoint,
    write_checkpoint,
)

__all__ = ["GaussianHead", "PPO", "PPOConfig", "Transform"]

Transform = Callable[[Tensor, Tensor], Tensor]  # (obs [n, obs_dim], u [n, d]) -> pre-squash action [n, d]


@dataclass
class PPOConfig:
    """PPO hyper-parameters (cleanrl's continuous-control defaults, 4 envs x 512 steps per rollout)."""

    lr: float = 3e-4
    actor_lr_scale: float = 1.0  # actor's rate lr * actor_lr_scale, critic's lr (GoRL's latent PPO: 4, see benchmarks/gorl/README.md)
    num_envs: int = 4
    num_steps: int = 512
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 32
    update_epochs: int = 10
    clip_coef: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    anneal_lr: bool = True
    norm_obs: bool = True
    hidden: tuple[int, ...] = (64, 64)
    head: Literal["gaussian", "pmoe"] = "gaussian"
    num_experts: int = 4
    init_log_std: float = 0.0
    latent_kl_coef: float = 0.0
    eval_every: int = 10_000
    eval_episodes: int = 5
    eval_deterministic: bool = True
    unbounded_action_bound: float | None = None

    def __post_init__(self) -> None:
        for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"PPOConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not (0 <= self.lr < float("inf") and 0 <= self.actor_lr_scale < float("inf")):  # 0 freezes (tests use it)
            raise ValueError(f"PPOConfig: lr and actor_lr_scale must be finite and >= 0, got {self.lr} and "
                             f"{self.actor_lr_scale}")
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ValueError("PPOConfig: num_envs * num_steps must be divisible by num_minibatches")
        if self.latent_kl_coef and self.head != "gaussian":
            raise ValueError("the latent regulariser (latent_kl_coef > 0) needs head='gaussian'")
        self.hidden = tuple(int(h) for h in self.hidden)


class GaussianHead(nn.Module):
    """Diagonal Gaussian pi(u|s) = N(mu(s), diag exp(log_std)^2), state-independent log_std (cleanrl)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], init_log_std: float = 0.0) -> None:
        super().__init__()
        self.mean = mlp(obs_dim, act_dim, hidden, nn.Tanh)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def params(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean = self.mean(obs)
        return mean, self.log_std.expand_as(mean)

    def sample(self, obs: Tensor, deterministic: bool = False,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """u [B, d] and log pi(u|s) [B]."""
        mean, log_std = self.params(obs)
        u = mean if deterministic else mean + log_std.exp() * torch.randn(mean.shape, generator=generator)
        return u, gaussian_log_prob(u, mean, log_std)

    def log_prob_entropy(self, obs: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.params(obs)
        return gaussian_log_prob(u, mean, log_std), gaussian_entropy(log_std)

    def kl_to_standard_normal(self, obs: Tensor) -> Tensor:
        """KL(N(mu, sigma^2) || N(0, I)) = 0.5 sum (mu^2 + sigma^2 - 1 - 2 log sigma): [B]."""
        mean, log_std = self.params(obs)
        return 0.5 * (mean.square() + (2 * log_std).exp() - 1.0 - 2 * log_std).sum(-1)


class PPO:
    """PPO agent for a gymnasium Box-action env. Build with :meth:`from_env`."""

    def __init__(self, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray,
                 config: PPOConfig | None = None, seed: int = 0) -> None:
        self.config = cfg = config or PPOConfig()
        torch.manual_seed(seed)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        if cfg.head == "pmoe":
            from gendiff.rl.pmoe import MixtureGaussianHead
            self.actor: nn.Module = MixtureGaussianHead(obs_dim, act_dim, cfg.hidden, cfg.num_experts, nn.Tanh)
        else:
            self.actor = GaussianHead(obs_dim, act_dim, cfg.hidden, cfg.init_log_std)
        self.critic = mlp(obs_dim, 1, cfg.hidden, nn.Tanh)
        self.obs_rms = RunningMeanStd(obs_dim)
        self.scaler = ActionScaler(low, high)
        self.low, self.high = [float(x) for x in low], [float(x) for x in high]
        self.transform: Transform | None = None  # GoRL's frozen decoder
        # two groups so that the actor's rate can differ (actor_lr_scale); with scale 1 this is one Adam at lr
        self.opt = torch.optim.Adam([{"params": list(self.actor.parameters())},
                                     {"params": list(self.critic.parameters())}], lr=cfg.lr, eps=1e-5)
        self.generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_env(cls, env_id: str, config: PPOConfig | None = None, seed: int = 0) -> PPO:
        config = config or PPOConfig()
        env = make_env(env_id)
        low, high = check_action_space(env.action_space, config.unbounded_action_bound)
        obs_dim = int(np.prod(env.observation_space.shape))
        env.close()
        return cls(obs_dim, len(low), low, high, config, seed)

    # ------------------------------------------------------------------ persistence
    def checkpoint_modules(self) -> dict[str, nn.Module]:
        """The modules a checkpoint holds, by name: actor, critic and the observation statistics."""
        return {"actor": self.actor, "critic": self.critic, "obs_rms": self.obs_rms}

    _checkpoint_modules = checkpoint_modules  # the name save / load use

    def load_weights_from(self, other: PPO) -> None:
        """Copy ``other``'s actor, critic and observation statistics into this agent (a warm start; the optimiser
        state, config and generator stay this agent's). Both must have the same sizes and head."""
        theirs = other.checkpoint_modules()
        for name, module in self.checkpoint_modules().items():
            module.load_state_dict(theirs[name].state_dict())

    def save(self, path: str | Path) -> Path:
        """Write ``path/model.safetensors`` (actor, critic and the observation statistics) and ``path/config.json``
        (sizes, bounds, config). For acting and evaluation: the optimiser state is not saved."""
        meta = {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "low": self.low, "high": self.high,
                "config": to_dict(self.config)}
        return write_checkpoint(path, self._checkpoint_modules(), meta)

    @classmethod
    def load(cls, path: str | Path) -> PPO:
        """Rebuild an agent written by :meth:`save` (a GoRL latent policy's decoder is GoRL's to restore)."""
        meta, state = read_checkpoint(path, "PPO agent")
        agent = cls(meta["obs_dim"], meta["act_dim"], meta["low"], meta["high"], from_dict(PPOConfig, meta["config"]))
        load_modules(state, agent._checkpoint_modules(), path)
        return agent

    def normalize_obs(self, obs: Tensor) -> Tensor:
        """The policy's and critic's input for raw observations [n, obs_dim]: (obs - mean) / std with the running
        statistics when ``norm_obs``, else ``obs`` itself (differentiable in ``obs``)."""
        return self.obs_rms(obs) if self.config.norm_obs else obs

    _norm = normalize_obs  # the name the training loop uses

    def env_action(self, obs: Tensor, u: Tensor) -> Tensor:
        """scale(tanh(T(s, u))): [n, d] environment actions (T = identity without a decoder)."""
        pre = self.transform(obs, u) if self.transform is not None else u
        return self.scaler.to_env(torch.tanh(pre))

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Environment actions [n, act_dim] for raw observations [n, obs_dim]."""
        o = torch.as_tensor(obs, dtype=torch.float32)
        u, _ = self.actor.sample(self._norm(o), deterministic, self.generator)
        return self.env_action(o, u).numpy()

    def _gae(self, ro: dict[str, Tensor], last_value: Tensor) -> tuple[Tensor, Tensor]:
        """Step 1: advantages and returns, [T, n] each."""
        cfg, T = self.config, ro["rew"].shape[0]
        adv, last = torch.zeros_like(ro["rew"]), torch.zeros_like(last_value)
        for t in reversed(range(T)):
            next_v = last_value if t == T - 1 else ro["value"][t + 1]
            nonterminal = 1.0 - ro["done"][t]
            delta = ro["rew"][t] + cfg.gamma * next_v * nonterminal - ro["value"][t]
            last = delta + cfg.gamma * cfg.gae_lambda * nonterminal * last
            adv[t] = last
        return adv, adv + ro["value"]

    def _rollout(self, envs, obs: np.ndarray, tracker: EpisodeTracker) -> tuple[dict[str, Tensor], np.ndarray]:
        cfg, T, n = self.config, self.config.num_steps, self.config.num_envs
        ro = {k: torch.zeros(T, n) for k in ("rew", "done", "value", "logp")}
        ro["obs"], ro["u"] = torch.zeros(T, n, self.obs_dim), torch.zeros(T, n, self.act_dim)
        ro["pre"] = torch.zeros(T, n, self.act_dim)
        for t in range(T):
            if cfg.norm_obs:
                self.obs_rms.update(obs)
            o = torch.as_tensor(obs, dtype=torch.float32)
            with torch.no_grad():
                u, logp = self.actor.sample(self._norm(o), False, self.generator)
                pre = self.transform(o, u) if self.transform is not None else u
                value = self.critic(self._norm(o)).squeeze(-1)
            nobs, rew, term, trunc, info = envs.step(self.scaler.to_env(torch.tanh(pre)).numpy())
            tracker.step(rew, term | trunc)
            rew = rew.astype(np.float64)
            if "_final_obs" in info:  # bootstrap truncated episodes with V(final obs)
                for i in np.flatnonzero(info["_final_obs"] & trunc & ~term):
                    fo = torch.as_tensor(info["final_obs"][i], dtype=torch.float32)[None]
                    with torch.no_grad():
                        rew[i] += cfg.gamma * float(self.critic(self._norm(fo)))
            ro["obs"][t], ro["u"][t], ro["pre"][t], ro["logp"][t], ro["value"][t] = o, u, pre, logp, value
            ro["rew"][t] = torch.as_tensor(rew, dtype=torch.float32)
            ro["done"][t] = torch.as_tensor(term | trunc, dtype=torch.float32)
            obs = nobs
        return ro, obs

    def update(self, ro: dict[str, Tensor], adv: Tensor, ret: Tensor) -> dict[str, float]:
        """Step 2: clipped-surrogate epochs over shuffled minibatches of the flattened rollout."""
        cfg = self.config
        obs, u, logp_old = ro["obs"].flatten(0, 1), ro["u"].flatten(0, 1), ro["logp"].flatten()
        nobs, adv, ret = self._norm(obs), adv.flatten(), ret.flatten()
        n, mb = obs.shape[0], obs.shape[0] // cfg.num_minibatches
        stats: dict[str, float] = {}
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(n, generator=self.generator)
            for start in range(0, n, mb):
                idx = perm[start:start + mb]
                logp, ent = self.actor.log_prob_entropy(nobs[idx], u[idx])
                ratio = (logp - logp_old[idx]).exp()
                a = adv[idx]
                a = (a - a.mean()) / (a.std() + 1e-8)
                pg = -torch.min(ratio * a, ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef) * a).mean()
                vf = (self.critic(nobs[idx]).squeeze(-1) - ret[idx]).pow(2).mean()
                loss = pg + cfg.vf_coef * vf - cfg.ent_coef * ent.mean()
                kl = torch.zeros(())
                if cfg.latent_kl_coef:
                    kl = self.actor.kl_to_standard_normal(nobs[idx]).mean()
                    loss = loss + cfg.latent_kl_coef * kl
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_([*self.actor.parameters(), *self.critic.parameters()], cfg.max_grad_norm)
                self.opt.step()
            stats = {"loss/policy": pg.item(), "loss/value": vf.item(), "actor/entropy": ent.mean().item(),
                     "actor/latent_kl": kl.item(), "actor/clipfrac": float(((ratio - 1).abs() > cfg.clip_coef)
                                                                           .float().mean())}
        return stats

    def _set_lr(self, it: int, iters: int, env_steps: int, lr_fraction: Callable[[int], float] | None,
                actor_scale_fraction: Callable[[int], float] | None = None) -> None:
        """Learning rates before iteration ``it`` of ``iters`` (``env_steps`` done): actor lr * m * f, critic lr * f,
        with f = 1 without ``anneal_lr``, else ``lr_fraction(env_steps)`` (GoRL's per-stage schedule) or the linear
        1 - it / iters; and the actor's multiple m = actor_lr_scale, or with ``actor_scale_fraction`` (GoRL's
        ``actor_lr_decay``) m = 1 + (actor_lr_scale - 1) * actor_scale_fraction(env_steps)."""
        cfg = self.config
        if not cfg.anneal_lr:
            f = 1.0
        else:
            f = 1.0 - it / iters if lr_fraction is None else lr_fraction(env_steps)
        m = cfg.actor_lr_scale
        if actor_scale_fraction is not None:
            m = 1.0 + (m - 1.0) * actor_scale_fraction(env_steps)
        actor_group, critic_group = self.opt.param_groups
        actor_group["lr"], critic_group["lr"] = cfg.lr * m * f, cfg.lr * f

    def learn(self, env_id: str, steps: int, seed: int = 0, progress: bool = True,
              on_rollout: Callable[[int, dict[str, Tensor], Tensor], None] | None = None,
              lr_fraction: Callable[[int], float] | None = None,
              actor_scale_fraction: Callable[[int], float] | None = None,
              wrapper: Callable[[gym.Env], gym.Env] | None = None,
              vector_wrapper: Callable[[gym.vector.VectorEnv], gym.vector.VectorEnv] | None = None) -> TrainLog:
        """Train for ``steps`` env steps; ``on_rollout(env_step, rollout, advantages)`` sees each rollout.

        ``wrapper`` wraps each training env (e.g. a state-adversarial attack on the observations the agent sees,
        gendiff.rl.attacks.AttackedObservation); ``vector_wrapper`` wraps the vector env of all copies (e.g. the
        batched gendiff.rl.attacks.AttackedVectorObservation); the evaluations every ``eval_every`` steps use the
        plain env.

        With ``anneal_lr`` the learning rate is ``lr * lr_fraction(env_steps_done)`` before each iteration;
        the default fraction falls linearly from 1 to 0 over the whole run (GoRL passes a per-stage one).
        ``actor_scale_fraction`` (GoRL passes its per-stage one) scales the actor's extra multiple, see ``_set_lr``.
        The rates are set from ``self.config`` at every iteration, so a config replaced between calls (e.g. a
        reloaded agent given another ``actor_lr_scale``) takes effect.
        """
        cfg, log, t0 = self.config, TrainLog(), time.perf_counter()
        envs = make_vec_env(env_id, cfg.num_envs, seed, wrapper=wrapper)
        envs = vector_wrapper(envs) if vector_wrapper is not None else envs
        tracker = EpisodeTracker(cfg.num_envs)
        obs, _ = envs.reset(seed=seed)
        per_iter = cfg.num_envs * cfg.num_steps
        iters = max(1, steps // per_iter)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for it in tqdm(range(iters), disable=not progress, desc="ppo", leave=False):
                self._set_lr(it, iters, it * per_iter, lr_fraction, actor_scale_fraction)
                ro, obs = self._rollout(envs, obs, tracker)
                with torch.no_grad():
                    last_v = self.critic(self._norm(torch.as_tensor(obs, dtype=torch.float32))).squeeze(-1)
                adv, ret = self._gae(ro, last_v)
                done_steps = (it + 1) * per_iter
                log.metrics = self.update(ro, adv, ret)
                if on_rollout is not None:  # GoRL: data for the decoder refit (after this rollout's update)
                    on_rollout(done_steps, ro, adv)
                if cfg.eval_every and (done_steps % cfg.eval_every < per_iter or it == iters - 1):
                    fn = lambda o: self.act(o, cfg.eval_deterministic)  # noqa: E731
                    log.add_eval(done_steps, evaluate(fn, env_id, cfg.eval_episodes))
                    if tracker.returns:
                        log.train_returns.append((done_steps, float(np.mean(tracker.returns[-10:]))))
        finally:
            torch.set_num_threads(threads)
            envs.close()
        log.wall_s = time.perf_counter() - t0
        return log
