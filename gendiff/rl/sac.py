"""Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications").

Maximum-entropy actor-critic with twin Q networks, a tanh-Gaussian actor and automatic temperature
tuning toward the target entropy -|A|. Defaults follow CORL / Stable-Baselines3 (Adam 3e-4, batch 256,
tau 0.005, gamma 0.99, MLPs 256x2). One update (all vectorised over the batch):

  1. Critic: y = r + gamma (1 - d) [min_k Q'_k(s', a') - alpha log pi(a'|s')], a' ~ pi(.|s')   (eq. 3, 5)
     L_Q = sum_k E (Q_k(s, a) - y)^2.
  2. Actor: L_pi = E [alpha log pi(a~|s) - min_k Q_k(s, a~)], a~ reparameterised                  (eq. 7, 12)
  3. Temperature: L_alpha = -E [log_alpha (log pi(a~|s) + H_target)]                              (eq. 18)
  4. Targets: theta' <- (1 - tau) theta' + tau theta.

Actions: the actor's squashed action tanh(u) in (-1, 1) is what the buffer stores and the critics see;
:class:`~gendiff.rl.common.ActionScaler` maps it to the environment's box. ``TanhGaussianPolicy.log_prob``
and ``act`` work in environment units, which is what the offline datasets' behaviour policies need.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from gendiff.config import from_dict, to_dict
from gendiff.entropy import atanh_clipped, tanh_gaussian_log_prob, tanh_gaussian_sample
from gendiff.rl.common import (
    ActionScaler,
    EpisodeTracker,
    ReplayBuffer,
    TrainLog,
    check_action_space,
    evaluate,
    final_next_obs,
    load_modules,
    make_env,
    make_vec_env,
    mlp,
    read_checkpoint,
    soft_update,
    write_checkpoint,
)

__all__ = ["SAC", "SACConfig", "TanhGaussianPolicy", "TwinQ"]

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


@dataclass
class SACConfig:
    """SAC hyper-parameters (each default lives here; configs/gorl_sac.yaml mirrors them)."""

    lr: float = 3e-4
    batch_size: int = 256
    tau: float = 0.005
    gamma: float = 0.99
    hidden: tuple[int, ...] = (256, 256)
    buffer_size: int = 1_000_000
    learning_starts: int = 5000
    gradient_steps: int = 1
    init_alpha: float = 1.0
    target_entropy: float | None = None  # None: -|A|
    autotune: bool = True
    num_envs: int = 1
    eval_every: int = 5000
    eval_episodes: int = 5
    eval_deterministic: bool = True  # learning-curve evaluations use tanh(mean) (GoRL's latent SAC: sampled)
    unbounded_action_bound: float | None = None
    latent_kl_coef: float = 0.0  # GoRL's latent regulariser, 0.5 E||a||^2 in policy units (0 for plain SAC)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.buffer_size < 1 or self.gradient_steps < 0 or self.num_envs < 1:
            raise ValueError("SACConfig: batch_size, buffer_size, num_envs must be >= 1, gradient_steps >= 0")
        if not (0 < self.tau <= 1 and 0 <= self.gamma <= 1 and self.lr > 0 and self.init_alpha > 0):
            raise ValueError(f"SACConfig: need 0 < tau <= 1, 0 <= gamma <= 1, lr > 0, init_alpha > 0 "
                             f"(got {self.tau}, {self.gamma}, {self.lr}, {self.init_alpha})")
        self.hidden = tuple(int(h) for h in self.hidden)


def check_action_noise(noise: float | None) -> None:
    """An exploration-noise width must be None (the policy's own samples) or >= 0 (NaN refused)."""
    if noise is not None and not noise >= 0:
        raise ValueError(f"action noise must be >= 0, got {noise}")


class TanhGaussianPolicy(nn.Module):
    """pi(a|s): a = scale(tanh(u)), u ~ N(mu(s), diag sigma(s)^2).

    Args:
        obs_dim, act_dim: sizes.
        low, high: [act_dim] environment action bounds.
        hidden: MLP widths.
    """

    def __init__(self, obs_dim: int, act_dim: int, low: Sequence[float], high: Sequence[float],
                 hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.net = mlp(obs_dim, 2 * act_dim, hidden)
        self.scaler = ActionScaler(low, high)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """obs [B, obs_dim] -> (mean [B, act_dim], log_std [B, act_dim]) of the pre-tanh Gaussian."""
        if obs.dim() != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"obs must be [B, {self.obs_dim}], got {tuple(obs.shape)}")
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Reparameterised squashed action [B, act_dim] in (-1, 1) and its log-density [B] there."""
        mean, log_std = self(obs)
        action, logp, _ = tanh_gaussian_sample(mean, log_std, generator)
        return action, logp

    def log_prob(self, obs: Tensor, action: Tensor, eps: float = 1e-3) -> Tensor:
        """log pi(action | obs) with ``action`` [B, act_dim] in environment units -> [B].

        Actions on the box's edge are clipped to +-(1 - eps) in squashed units before arctanh.
        """
        mean, log_std = self(obs)
        u = atanh_clipped(self.scaler.from_env(action.to(mean.dtype)), eps)
        return tanh_gaussian_log_prob(u, mean, log_std) - self.scaler.log_abs_det()

    @torch.no_grad()
    def act(self, obs: np.ndarray | Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None, noise: float | None = None) -> np.ndarray | Tensor:
        """Environment actions for obs [B, obs_dim] (numpy in -> numpy out).

        deterministic: tanh(mean). noise: a width s >= 0 gives tanh(mean) + N(0, s^2) in squashed (-1, 1) units,
        clipped to the box (TD3-style exploration noise; ``deterministic`` is then ignored).
        """
        check_action_noise(noise)
        is_np = isinstance(obs, np.ndarray)
        o = torch.as_tensor(obs, dtype=torch.float32)
        squeeze = o.dim() == 1
        o = o[None] if squeeze else o
        mean, log_std = self(o)
        if noise is not None:
            a = (torch.tanh(mean) + noise * torch.randn(mean.shape, generator=generator)).clamp(-1.0, 1.0)
        else:
            a = torch.tanh(mean) if deterministic else tanh_gaussian_sample(mean, log_std, generator)[0]
        a = self.scaler.to_env(a)
        a = a[0] if squeeze else a
        return a.numpy() if is_np else a


class TwinQ(nn.Module):
    """Two Q networks Q_k(s, a) for the clipped double-Q target: ([B, obs], [B, act]) -> [2, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.q1, self.q2 = mlp(obs_dim + act_dim, 1, hidden), mlp(obs_dim + act_dim, 1, hidden)

    def forward(self, obs: Tensor, act: Tensor) -> Tensor:
        x = torch.cat([obs, act], dim=-1)
        return torch.stack([self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)])


class SAC:
    """SAC agent. ``SAC.from_env(env_id, config)`` builds one for a gymnasium env.

    Args:
        obs_dim, act_dim: sizes; low, high: [act_dim] action bounds; config: hyper-parameters.
    """

    config_class: type[SACConfig] = SACConfig

    def __init__(self, obs_dim: int, act_dim: int, low: Sequence[float], high: Sequence[float],
                 config: SACConfig | None = None, seed: int = 0) -> None:
        self.config = cfg = config or SACConfig()
        torch.manual_seed(seed)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.low, self.high = [float(x) for x in low], [float(x) for x in high]
        self.policy = TanhGaussianPolicy(obs_dim, act_dim, low, high, cfg.hidden)
        self.critic = TwinQ(obs_dim, act_dim, cfg.hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(float(np.log(cfg.init_alpha)), requires_grad=True)
        self.target_entropy = -float(act_dim) if cfg.target_entropy is None else float(cfg.target_entropy)
        self.actor_opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr)
        self.generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_env(cls, env_id: str, config: SACConfig | None = None, seed: int = 0) -> SAC:
        config = config or cls.config_class()
        env = make_env(env_id)
        low, high = check_action_space(env.action_space, config.unbounded_action_bound)
        obs_dim = int(np.prod(env.observation_space.shape))
        env.close()
        return cls(obs_dim, len(low), low, high, config, seed)

    @property
    def alpha(self) -> float:
        return self.log_alpha.detach().exp().item()

    def update(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One gradient step on critic, actor and temperature (steps 1-4 of the module docstring)."""
        cfg, alpha = self.config, self.log_alpha.exp().detach()
        obs, act, rew, nobs, done = batch["obs"], batch["act"], batch["rew"], batch["next_obs"], batch["done"]
        with torch.no_grad():  # 1. soft Bellman target
            next_a, next_logp = self.policy.sample(nobs, self.generator)
            q_next = self.critic_target(nobs, next_a).min(0).values - alpha * next_logp
            y = rew + cfg.gamma * (1.0 - done) * q_next
        q = self.critic(obs, act)
        critic_loss = (q - y).pow(2).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        a_new, logp = self.policy.sample(obs, self.generator)  # 2. actor
        self.critic.requires_grad_(False)
        actor_loss = (alpha * logp - self.critic(obs, a_new).min(0).values).mean()
        if cfg.latent_kl_coef:
            actor_loss = actor_loss + cfg.latent_kl_coef * 0.5 * self.policy.scaler.to_env(a_new).square().sum(-1).mean()
        self.critic.requires_grad_(True)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = torch.zeros(())
        if cfg.autotune:  # 3. temperature toward the target entropy
            alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
        soft_update(self.critic_target, self.critic, cfg.tau)  # 4.
        return {"loss/critic": critic_loss.item(), "loss/actor": actor_loss.item(),
                "loss/alpha": alpha_loss.item(), "actor/entropy": -logp.mean().item(), "actor/alpha": self.alpha,
                "critic/q": q.mean().item()}

    def learn(self, env_id: str, steps: int, seed: int = 0, progress: bool = True,
              action_map: Callable[[Tensor, Tensor], Tensor] | None = None,
              on_step: Callable[[int, SAC], None] | None = None) -> TrainLog:
        """Train for ``steps`` environment steps (summed over the vector env's copies).

        Args:
            action_map: optional (obs [n, obs_dim], policy action [n, act_dim]) -> env action; GoRL uses it
                to decode latent actions. None: the policy's action goes to the env.
            on_step: called as ``on_step(env_step, agent)`` after every vector step (GoRL refits here).
        """
        cfg, log, t0 = self.config, TrainLog(), time.perf_counter()
        envs = make_vec_env(env_id, cfg.num_envs, seed)
        self.buffer = buf = ReplayBuffer(self.obs_dim, self.act_dim, cfg.buffer_size)
        tracker = EpisodeTracker(cfg.num_envs)
        obs, _ = envs.reset(seed=seed)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for step in tqdm(range(0, steps, cfg.num_envs), disable=not progress, desc="sac", leave=False):
                o = torch.as_tensor(obs, dtype=torch.float32)
                with torch.no_grad():
                    a_sq = (torch.rand(cfg.num_envs, self.act_dim, generator=self.generator) * 2 - 1
                            if step < cfg.learning_starts else self.policy.sample(o, self.generator)[0])
                    a_pol = self.policy.scaler.to_env(a_sq)
                    a_env = action_map(o, a_pol) if action_map is not None else a_pol
                nobs, rew, term, trunc, info = envs.step(a_env.numpy())
                buf.add(obs, a_sq.numpy(), rew, final_next_obs(nobs, info), term.astype(np.float32))
                tracker.step(rew, term | trunc)
                obs = nobs
                done_steps = step + cfg.num_envs
                if done_steps >= cfg.learning_starts and buf.size >= cfg.batch_size:
                    for _ in range(cfg.gradient_steps):
                        log.metrics = self.update(buf.sample(cfg.batch_size, self.generator))
                if on_step is not None:
                    on_step(done_steps, self)
                if cfg.eval_every and done_steps % cfg.eval_every < cfg.num_envs:
                    log.add_eval(done_steps, evaluate(self._eval_fn(action_map), env_id, cfg.eval_episodes))
                    if tracker.returns:
                        log.train_returns.append((done_steps, float(np.mean(tracker.returns[-10:]))))
        finally:
            torch.set_num_threads(threads)
            envs.close()
        log.wall_s = time.perf_counter() - t0
        return log

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Environment actions [n, act_dim] for raw observations [n, obs_dim] (the policy's, see
        :meth:`TanhGaussianPolicy.act`): the acting signature PPO and GoRL share."""
        return self.policy.act(obs, deterministic)

    def _eval_fn(self, action_map: Callable[[Tensor, Tensor], Tensor] | None) -> Callable[[np.ndarray], np.ndarray]:
        def act(obs: np.ndarray) -> np.ndarray:
            o = torch.as_tensor(obs)
            a = self.policy.act(o, deterministic=self.config.eval_deterministic and action_map is None)
            return (action_map(o, a) if action_map is not None else a).numpy()
        return act

    # ------------------------------------------------------------------ persistence
    def _checkpoint_modules(self) -> dict[str, nn.Module]:
        """The modules a checkpoint holds, by name (log_alpha is saved beside them)."""
        return {"policy": self.policy, "critic": self.critic, "critic_target": self.critic_target}

    def save(self, path: str | Path) -> Path:
        """Write ``path/model.safetensors`` (all weights) and ``path/config.json`` (sizes, bounds, config)."""
        meta = {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "low": self.low, "high": self.high,
                "config": to_dict(self.config)}
        return write_checkpoint(path, self._checkpoint_modules(), meta, {"log_alpha": self.log_alpha.reshape(1)})

    @classmethod
    def load(cls, path: str | Path) -> SAC:
        """Rebuild an agent written by :meth:`save`."""
        meta, state = read_checkpoint(path, "SAC agent")
        agent = cls(meta["obs_dim"], meta["act_dim"], meta["low"], meta["high"],
                    from_dict(cls.config_class, meta["config"]))
        load_modules(state, agent._checkpoint_modules(), path)
        with torch.no_grad():
            agent.log_alpha.copy_(state["log_alpha"][0])
        return agent
