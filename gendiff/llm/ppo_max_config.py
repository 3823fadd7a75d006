"""PPO-max's settings and their check (``LLMTrainConfig.critic_config``), apart from the trainer in
``gendiff.llm.ppo_max`` so that ``gendiff.llm.trainer.check_config`` can check them without importing that trainer
(which subclasses ``LLMTrainer``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gendiff.config import as_mapping, check_numbers, from_dict


@dataclass
class PPOMaxConfig:
    """PPO-max settings (``LLMTrainConfig.critic_config``). gamma, lam, value_clip and kl_coef are the released
    MOSS-RLHF English script's; reward_norm "norm" follows the paper's text (the script scales by the std only) with
    our reward_clip 5 (not tuned); critic_lr was chosen for the tiny model on seed 100 (benchmarks/llm/README.md).

    Attributes:
        critic_lr: AdamW learning rate of the critic (transformer copy + value head).
        kl_coef: eta of the token-level KL penalty folded into the reward (step 3; 0: no reference model).
        gamma: GAE discount (1: the released default).
        lam: GAE lambda (0.95).
        value_clip: eps_v, the critic's values stay within V_old +- eps_v in the clipped loss (step 8).
        vf_coef: weight of the value loss.
        reward_norm: step 2: "norm" (r - mean) / std, "scale" r / std, "none".
        reward_clip: delta of step 2 (clip of the reparameterised score).
        whiten_advantages: step 6 on/off.
        critic_warmup_steps: first steps that train only the critic.
    """

    critic_lr: float = 1e-4
    kl_coef: float = 0.01
    gamma: float = 1.0
    lam: float = 0.95
    value_clip: float = 0.2
    vf_coef: float = 1.0
    reward_norm: Literal["norm", "scale", "none"] = "norm"
    reward_clip: float = 5.0
    whiten_advantages: bool = True
    critic_warmup_steps: int = 0


def check_ppo_max_config(cfg: Any, raw: dict[str, Any] | None = None) -> PPOMaxConfig:
    """Validate the PPO-max parts of ``cfg`` (a ``gendiff.llm.trainer.LLMTrainConfig``; not imported here, which
    would make an import cycle) and return its typed ``PPOMaxConfig`` (ValueError naming the value)."""
    if cfg.critic != "ppo_max":
        raise ValueError(f"critic must be 'none' or 'ppo_max', got {cfg.critic!r}" if cfg.critic != "none" else
                         f"critic_config {cfg.critic_config!r} is set but critic is 'none' (pass critic ppo_max)")
    pc = from_dict(PPOMaxConfig, as_mapping("critic_config", cfg.critic_config) if raw is None else raw)
    check_numbers(pc, positive=("critic_lr", "reward_clip"), nonnegative=("kl_coef", "value_clip", "vf_coef"),
                  fraction=("gamma", "lam"))
    if pc.reward_norm not in ("norm", "scale", "none"):
        raise ValueError(f"PPOMaxConfig.reward_norm must be norm, scale or none, got {pc.reward_norm!r}")
    if pc.critic_warmup_steps < 0 or pc.critic_warmup_steps >= cfg.steps:
        raise ValueError(f"PPOMaxConfig.critic_warmup_steps must be in [0, steps = {cfg.steps}), got "
                         f"{pc.critic_warmup_steps}")
    if cfg.advantage != "grpo":
        raise ValueError(f"critic ppo_max computes its own GAE advantages: leave advantage at its default, got "
                         f"{cfg.advantage!r}")
    if cfg.kl_coef > 0:
        raise ValueError(f"critic ppo_max folds its KL into the reward (critic_config kl_coef); the loss-side kl_coef "
                         f"must be 0, got {cfg.kl_coef}")
    if cfg.bupo_layer:
        raise ValueError("critic ppo_max does not combine with BuPO (bupo_layer must be 0)")
    if cfg.loss == "d3s_tokens":  # its sample level drops rows after scoring: the token rewards would not align
        raise ValueError("critic ppo_max does not combine with loss d3s_tokens")
    if cfg.rollout != "sample" or cfg.reset_rate > 0:  # their rows (branches, ARES shaping, resets) are not measured
        raise ValueError(f"critic ppo_max needs plain rollouts: rollout 'sample' and reset_rate 0, got rollout "
                         f"{cfg.rollout!r}, reset_rate {cfg.reset_rate}")
    return pc
