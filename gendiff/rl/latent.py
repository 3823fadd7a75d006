"""GoRL's base learners: the :class:`LatentLearner` protocol and its PPO and SAC adapters.

GoRL (:mod:`gendiff.rl.gorl`) optimises a latent policy pi_theta(z|s) with PPO or SAC and decodes z with a frozen
generative decoder u = g(s, z). Everything GoRL does differently per base goes through :class:`LatentLearner`:

  * collect a stage's experience: :meth:`LatentLearner.learn` runs the base's own training loop, decodes its
    latent actions with :class:`StageHooks` and hands the recent (s, u, advantage) window to ``StageHooks.refit``
    when a refit is due (step 2 of the GoRL schedule);
  * sample z ~ pi_theta(z|s) per state (acting, and the "final_policy" refit data);
  * the latent actor and its optimiser, a freshly initialised actor, and the parameters that, zeroed, make
    pi_theta exactly N(0, I) (step 4, the latent reset);
  * the ``GoRL(...)`` keyword that takes the base's config (``config_arg``), to rebuild it when loading.

:data:`LATENT_BASES` maps ``GoRLConfig.base`` ("ppo", "sac") to the adapter class that builds and loads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from gendiff.rl.common import ActionScaler, TrainLog
from gendiff.rl.ppo import PPO, GaussianHead, PPOConfig
from gendiff.rl.sac import SAC, SACConfig, TanhGaussianPolicy

__all__ = ["LATENT_BASES", "LatentLearner", "LatentSettings", "PPOLatent", "SACLatent", "StageHooks"]

Decode = Callable[[Tensor, Tensor], Tensor]  # (obs [n, obs_dim], z [n, d]) -> [n, d]


class LatentSettings(Protocol):
    """The GoRL settings a base learner is built from (:class:`gendiff.rl.gorl.GoRLConfig` has them; this module
    does not import gorl, which imports it)."""

    latent_kl_coef: float  # the latent regulariser toward N(0, I)
    latent_bound: float  # SAC: the latent box [-L, L]
    recent_steps: int  # size of the recent (s, u, advantage) window handed to the decoder refit


@dataclass(frozen=True)
class StageHooks:
    """What a base learner's training loop calls back into GoRL with during :meth:`LatentLearner.learn`.

    Attributes:
        decode: u = g(s, z), the current decoder's pre-squash action [n, d] (GoRL.transform).
        env_action: scale(tanh(g(s, z))) [n, d], the environment action (GoRL.env_action).
        refit_due: whether the stage ends at this env step (step 1).
        refit: steps 2-4 on the recent window: (env step, obs [n, obs_dim], executed pre-squash actions u [n, d]
            or None when the refit redraws them, advantages [n]); it also schedules the next refit.
        recent_steps: size of the recent window (``GoRLConfig.recent_steps``).
        redraws_actions: ``decoder_data="final_policy"``: the refit draws u itself, so the window's are not needed.
        lr_fraction, actor_scale_fraction: PPO's per-stage learning-rate fractions (steps 5-6), None for the default.
    """

    decode: Decode
    env_action: Decode
    refit_due: Callable[[int], bool]
    refit: Callable[[int, Tensor, Tensor | None, Tensor], None]
    recent_steps: int
    redraws_actions: bool
    lr_fraction: Callable[[int], float] | None = None
    actor_scale_fraction: Callable[[int], float] | None = None


@runtime_checkable
class LatentLearner(Protocol):
    """What GoRL needs from its base learner, the RL algorithm over the latent z (see the module docstring)."""

    learner: PPO | SAC  # the wrapped agent (``GoRL.agent``), saved under GoRL's ``path/agent``
    config_arg: ClassVar[str]  # the GoRL(...) keyword that takes the base's config: "ppo_config" or "sac_config"
    obs_dim: int
    act_dim: int

    def learn(self, env_id: str, steps: int, seed: int, progress: bool, hooks: StageHooks) -> TrainLog:
        """Train for ``steps`` env steps, acting through ``hooks.env_action`` and refitting through ``hooks.refit``."""
        ...

    def sample_latent(self, obs: Tensor, deterministic: bool = False,
                      generator: torch.Generator | None = None) -> Tensor:
        """z ~ pi_theta(z|s) [n, d] for raw observations obs [n, obs_dim] (deterministic: the latent mean); a None
        generator draws from the stream the base acts with."""
        ...

    def latent_actor(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The latent actor pi_theta and the optimiser that holds its moments."""
        ...

    def fresh_latent_actor(self) -> nn.Module:
        """A newly initialised actor of the same shape (draws from the global torch stream)."""
        ...

    def standard_normal_params(self) -> list[Tensor]:
        """The actor's output parameters which, all zero, make pi_theta(z|s) exactly N(0, I) (pre-squash)."""
        ...


@dataclass
class RecentWindow:
    """FIFO of the latest (s, u, advantage) rows, ``capacity`` rows of the newest rollouts."""

    capacity: int
    rows: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list)

    def add(self, obs: Tensor, u: Tensor, adv: Tensor) -> None:
        """Append one rollout's rows (obs [n, obs_dim], u [n, d], adv [n]); drop whole old rollouts beyond capacity."""
        self.rows.append((obs, u, adv))
        while sum(r[0].shape[0] for r in self.rows) - self.rows[0][0].shape[0] >= self.capacity:
            self.rows.pop(0)

    def data(self) -> tuple[Tensor, Tensor, Tensor]:
        """The newest ``capacity`` rows: obs [m, obs_dim], u [m, d], adv [m]."""
        return tuple(torch.cat(x)[-self.capacity:] for x in zip(*self.rows))  # type: ignore[return-value]


class PPOLatent:
    """GoRL's PPO base: a Gaussian latent policy whose rollouts act through GoRL's decoder (``PPO.transform``).

    The refit window is the latest ``recent_steps`` rollout rows (s, u = g(s, z) executed, GAE advantage).
    """

    learner_class: ClassVar[type[PPO]] = PPO
    config_arg: ClassVar[str] = "ppo_config"

    def __init__(self, learner: PPO, decode: Decode, recent_steps: int) -> None:
        self.learner = learner
        self.obs_dim, self.act_dim = learner.obs_dim, learner.act_dim
        learner.transform = decode  # PPO's actions go through the current decoder
        self.recent = RecentWindow(recent_steps)

    @classmethod
    def build(cls, env_id: str, config: LatentSettings, ppo_config: PPOConfig | None, sac_config: SACConfig | None,
              seed: int, decode: Decode) -> tuple[PPOLatent, ActionScaler]:
        """PPO over the latent with GoRL's latent KL and a Gaussian head; the environment's action scaler."""
        pc = dataclasses.replace(ppo_config or PPOConfig(), latent_kl_coef=config.latent_kl_coef, head="gaussian")
        learner = PPO.from_env(env_id, pc, seed)
        return cls(learner, decode, config.recent_steps), learner.scaler

    def learn(self, env_id: str, steps: int, seed: int, progress: bool, hooks: StageHooks) -> TrainLog:
        """PPO iterations; after each one's update its rollout joins the window and a due refit runs on it."""

        def on_rollout(step: int, ro: dict[str, Tensor], adv: Tensor) -> None:
            self.recent.add(ro["obs"].flatten(0, 1), ro["pre"].flatten(0, 1), adv.flatten())
            if hooks.refit_due(step):
                hooks.refit(step, *self.recent.data())

        return self.learner.learn(env_id, steps, seed, progress, on_rollout=on_rollout, lr_fraction=hooks.lr_fraction,
                                  actor_scale_fraction=hooks.actor_scale_fraction)

    def sample_latent(self, obs: Tensor, deterministic: bool = False,
                      generator: torch.Generator | None = None) -> Tensor:
        gen = self.learner.generator if generator is None else generator
        z, _ = self.learner.actor.sample(self.learner.normalize_obs(obs), deterministic, gen)
        return z

    def latent_actor(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        return self.learner.actor, self.learner.opt

    def fresh_latent_actor(self) -> nn.Module:
        ag = self.learner
        return GaussianHead(ag.obs_dim, ag.act_dim, ag.config.hidden, ag.config.init_log_std)

    def standard_normal_params(self) -> list[Tensor]:
        """The mean network's output layer (weight, bias) and the log std."""
        actor = self.learner.actor
        out = actor.mean[-1]
        return [out.weight, out.bias, actor.log_std]


class SACLatent:
    """GoRL's SAC base: a tanh-Gaussian latent policy over the box [-L, L]; its env actions are decoded by
    ``action_map``. The refit window is the replay buffer's latest ``recent_steps`` rows, decoded with the current
    decoder, with the advantage min Q(s, z) - min Q(s, z' ~ pi); the buffer is emptied after each refit (its latents
    meant other actions under the old decoder)."""

    learner_class: ClassVar[type[SAC]] = SAC
    config_arg: ClassVar[str] = "sac_config"

    def __init__(self, learner: SAC, decode: Decode, recent_steps: int) -> None:
        self.learner = learner
        self.obs_dim, self.act_dim = learner.obs_dim, learner.act_dim

    @classmethod
    def build(cls, env_id: str, config: LatentSettings, ppo_config: PPOConfig | None, sac_config: SACConfig | None,
              seed: int, decode: Decode) -> tuple[SACLatent, ActionScaler]:
        """SAC over the latent box [-latent_bound, latent_bound] with GoRL's latent regulariser; the environment's
        action scaler (from a probe SAC built on the environment)."""
        sc = dataclasses.replace(sac_config or SACConfig(), latent_kl_coef=config.latent_kl_coef)
        probe = SAC.from_env(env_id, sc, seed)  # the environment's bounds
        bound = [config.latent_bound] * probe.act_dim
        learner = SAC(probe.obs_dim, probe.act_dim, [-b for b in bound], bound, sc, seed)
        return cls(learner, decode, config.recent_steps), probe.policy.scaler

    def learn(self, env_id: str, steps: int, seed: int, progress: bool, hooks: StageHooks) -> TrainLog:
        """SAC steps acting through the decoder; a due refit runs on the buffer's recent rows, then empties it."""

        def on_step(step: int, agent: SAC) -> None:
            if not hooks.refit_due(step) or agent.buffer.size < 2:
                return
            batch = agent.buffer.recent(hooks.recent_steps)
            with torch.no_grad():
                z = agent.policy.scaler.to_env(batch["act"])
                u = None if hooks.redraws_actions else hooks.decode(batch["obs"], z)
                pi_a, _ = agent.policy.sample(batch["obs"], agent.generator)
                adv = (agent.critic(batch["obs"], batch["act"]).min(0).values
                       - agent.critic(batch["obs"], pi_a).min(0).values)
            hooks.refit(step, batch["obs"], u, adv)
            agent.buffer.clear()

        return self.learner.learn(env_id, steps, seed, progress, action_map=hooks.env_action, on_step=on_step)

    def sample_latent(self, obs: Tensor, deterministic: bool = False,
                      generator: torch.Generator | None = None) -> Tensor:
        return self.learner.policy.act(obs, deterministic, generator)

    def latent_actor(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        return self.learner.policy, self.learner.actor_opt

    def fresh_latent_actor(self) -> nn.Module:
        ag = self.learner
        return TanhGaussianPolicy(ag.obs_dim, ag.act_dim, ag.low, ag.high, ag.config.hidden)

    def standard_normal_params(self) -> list[Tensor]:
        """The policy network's output layer (weight, bias): mean 0 and log std 0 before the squash."""
        out = self.learner.policy.net[-1]
        return [out.weight, out.bias]


LATENT_BASES: dict[str, type[PPOLatent] | type[SACLatent]] = {"ppo": PPOLatent, "sac": SACLatent}
