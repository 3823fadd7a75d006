"""PPO-max: critic-based PPO for language models with the tricks of Zheng et al. 2023, "Secrets of RLHF in Large
Language Models Part I: PPO" (arXiv 2307.04964; released code OpenLMLab/MOSS-RLHF, ``ppo/ppo_trainer.py``).

One step of ``PPOMaxTrainer`` (``LLMTrainConfig.critic = "ppo_max"``, settings in ``PPOMaxConfig``):

1. Rollout and score: ``LLMTrainer.rollout`` (the same sampler, prompts and reward function as GRPO; its group
   advantages are replaced below). Equal samples: the same steps x prompts x group_size completions as a GRPO run.
2. Score reparameterisation (Sec. 5.3.1): the sequence scores r(x, y) update running moments (``RunningMeanStd``,
   historical mean and std), then r~ = clip((r - mean) / std, -delta, delta) (``reward_norm = "norm"``; ``"scale"``:
   r / std as the released script's ``--use_reward_scaling``; ``"none"``: raw r, still clipped).
3. Token-level KL penalty (Sec. 5.3.2): r_t = -eta (log pi(y_t) - log pi_ref(y_t)) at every completion token, and
   r~ added at the last token, pi_ref = the frozen initial (SFT) policy, both at the sampling temperature T.
4. Values: V(s_t) = w^T h_t + b from ``ValueModel`` (a linear head on the last hidden state of a copy of the policy's
   transformer), h_t the state before token t; V = 0 after the last token (terminal).
5. GAE (Sec. 3.2): ``gae_advantages(r, V, mask, gamma, lam)`` -> A_t and returns R_t = A_t + V(s_t).
6. Global advantage normalisation (Sec. 5.3.1): A is whitened over all valid tokens of the batch (``whiten``).
7. Policy update: the ``POLICY_LOSSES`` loss (``grpo`` = PPO-clip, ratio clip eps = 0.2, the paper's policy-loss
   clipping) on the token advantages A, through ``LLMTrainer.update`` (its micro-batches, global gradient clipping
   ``max_grad_norm``, ``updates_per_rollout`` epochs); no KL term in the loss (it is in the reward).
8. Critic update (value-function loss clipping, the released ``use_critic_loss_clip``): on the same micro-batches and
   epochs, L_V = vf_coef * 0.5 * mean_t max((V - R)^2, (clip(V, V_old - eps_v, V_old + eps_v) - R)^2), its own AdamW
   (``critic_lr``) and gradient clip. The first ``critic_warmup_steps`` steps update only the critic (the paper's
   critic pre-training, done here on the policy's own first rollouts).

Critic initialisation: the paper starts the critic from the reward model. The arithmetic task's reward is a rule (no
reward model), so the critic's transformer starts from the SFT policy's weights and the head from zero (V = 0 at
step 0); ``critic_warmup_steps`` stands in for the critic pre-training. One process only (no DDP for the critic).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gendiff.entropy import masked_mean
from gendiff.io import loading
from gendiff.rl.common import RunningMeanStd

from .advantages import check_right_padded, gae_advantages, whiten
from .ppo_max_config import check_ppo_max_config
from .sampling import Completions, position_ids_from_mask
from .trainer import LLMTrainConfig, LLMTrainer, policy_logp_entropy


class ValueModel(nn.Module):
    """V(s_t): a linear head on the last hidden state of a Hugging Face transformer (the causal LM's base model).

    Args:
        backbone: the transformer without its LM head (``causal_lm.base_model``), returning ``last_hidden_state``.
        hidden_size: width of the hidden states.
    """

    def __init__(self, backbone: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)  # V = 0 at the start (no reward model to start from)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_causal_lm(cls, model: nn.Module) -> ValueModel:
        """A critic whose transformer is a copy of ``model``'s (the SFT policy) and whose head is zero."""
        base = getattr(model, "base_model", None)
        if base is None or base is model:
            raise ValueError(f"{type(model).__name__} exposes no base_model (transformer without LM head) for a "
                             "value head")
        return cls(copy.deepcopy(base), int(model.config.hidden_size))

    def forward(self, batch: Completions) -> Tensor:
        """Values of the states before each completion token: [B, T] (float32), from one forward over prompt +
        completion; the state before token t is the hidden state at the position that predicts it."""
        t = batch.completion_ids.shape[1]
        ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
        mask = torch.cat([batch.prompt_mask, torch.ones_like(batch.completion_ids)], 1)
        return self.position_values(ids, mask)[:, -(t + 1) : -1]

    def position_values(self, ids: Tensor, mask: Tensor) -> Tensor:
        """[B, L] float32 values at every position of left-padded ``ids`` [B, L] (the state that ends there)."""
        hidden = self.backbone(input_ids=ids, attention_mask=mask,
                               position_ids=position_ids_from_mask(mask)).last_hidden_state
        return self.head(hidden.float()).squeeze(-1)


def reparameterize_scores(scores: Tensor, moments: RunningMeanStd, mode: str, clip: float) -> Tensor:
    """Step 2: fold [B] ``scores`` into ``moments``, then r~ = clip((r - mean) / std) ("norm"), clip(r / std)
    ("scale") or clip(r) ("none"); std = sqrt(var + 1e-8) of the running (population) variance. Returns [B]."""
    moments.update(scores.detach().double().reshape(-1, 1).cpu())
    mean, std = float(moments.mean[0]), float((moments.var[0] + 1e-8).sqrt())
    x = scores.double()
    x = (x - mean) / std if mode == "norm" else x / std if mode == "scale" else x
    return x.clamp(-clip, clip).to(scores.dtype)


def kl_token_rewards(scores: Tensor, logp: Tensor, ref_logp: Tensor | None, mask: Tensor, kl_coef: float) -> Tensor:
    """Step 3: r_t = -kl_coef (logp_t - ref_logp_t) at valid tokens, plus ``scores`` [B] at each row's last valid
    token ([B, T] right-padded ``mask``; rows without a valid token get nothing). Returns [B, T], 0 at padding."""
    m = check_right_padded(mask, logp)
    if scores.shape != logp.shape[:1]:
        raise ValueError(f"scores must be [B] = ({logp.shape[0]},), got {tuple(scores.shape)}")
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    r = torch.zeros_like(logp) if ref_logp is None or kl_coef == 0 else -kl_coef * (logp - ref_logp)
    r = torch.where(m, r, zero)
    last = (m.sum(-1) - 1).clamp_min(0)
    has = m.any(-1)
    r[torch.arange(len(r), device=r.device)[has], last[has]] += scores[has].to(r.dtype)
    return r


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
                       clip: float) -> tuple[Tensor, Tensor]:
    """Step 8: 0.5 * token-mean of max((V - R)^2, (clip(V, V_old - clip, V_old + clip) - R)^2) over ``mask``.

    Args: [B, T] each (``values`` with gradient). Returns (loss scalar, clip fraction: share of valid tokens where the
    clipped branch is the larger one)."""
    m = mask != 0
    v_clip = torch.maximum(torch.minimum(values, old_values + clip), old_values - clip)
    l1, l2 = (values - returns) ** 2, (v_clip - returns) ** 2
    return 0.5 * masked_mean(torch.maximum(l1, l2), m), masked_mean((l2 > l1).to(values.dtype), m)


class PPOMaxTrainer(LLMTrainer):
    """``LLMTrainer`` with a critic: PPO-max (module docstring). Arguments as ``LLMTrainer``, plus ``critic`` (a
    ``ValueModel``; default: ``ValueModel.from_causal_lm(model)``). ``config.critic`` must be "ppo_max"."""

    has_critic = True

    def __init__(self, model, tokenizer, reward_fn, prompts, config: LLMTrainConfig | None = None, out_dir=None,
                 ref_model=None, cluster_fn=None, critic: ValueModel | None = None) -> None:
        cfg = config or LLMTrainConfig(critic="ppo_max")
        self.ppo = check_ppo_max_config(cfg)
        super().__init__(model, tokenizer, reward_fn, prompts, cfg, out_dir, None, cluster_fn)
        if self.num_processes > 1:
            raise ValueError("critic ppo_max runs on one process only (the critic is not wrapped for DDP)")
        dev, bare = self.accelerator.device, self.accelerator.unwrap_model(self.model)
        self.critic = (critic or ValueModel.from_causal_lm(bare)).to(dev).eval()
        self.critic_optimizer = torch.optim.AdamW(self.critic.parameters(), lr=self.ppo.critic_lr)
        self.kl_ref = None
        if self.ppo.kl_coef > 0:  # step 3's pi_ref: the frozen initial policy
            self.kl_ref = (ref_model or copy.deepcopy(bare)).to(dev).eval().requires_grad_(False)
        self.moments = RunningMeanStd(1, clip=self.ppo.reward_clip)

    @torch.no_grad()
    def rollout(self, prompts: list[str], prefixes: list[list[int]] | None = None) -> dict[str, Any]:
        """Steps 1-6: sample and score (``LLMTrainer.rollout``), then token rewards, values, GAE, whitening
        (``prefixes`` is always None: the config check refuses DR-PO resets)."""
        roll = super().rollout(prompts, prefixes)  # 1. (its group advantages are replaced below)
        batch, pc = roll["batch"], self.ppo
        m = batch.completion_mask.bool()
        scores = reparameterize_scores(roll["rewards"], self.moments, pc.reward_norm, pc.reward_clip)  # 2.
        ref = None
        if self.kl_ref is not None:
            ref = policy_logp_entropy(self.kl_ref, batch, self.config.temperature)[0]
        rewards = kl_token_rewards(scores.float(), batch.logp.float(), ref, m, pc.kl_coef)  # 3.
        values = self.critic(batch)  # 4.
        adv, returns = gae_advantages(rewards, values, m, pc.gamma, pc.lam)  # 5.
        metrics = roll["metrics"]
        if bool(m.any()):
            metrics.update({"ppo_max/score_mean": float(scores.mean()), "ppo_max/value_mean": float(masked_mean(values, m)),
                            "ppo_max/return_mean": float(masked_mean(returns, m)),
                            "ppo_max/adv_raw_std": float(masked_mean((adv - masked_mean(adv, m)) ** 2, m).sqrt())})
            if ref is not None:
                metrics["ppo_max/ref_kl"] = float(masked_mean(batch.logp.float() - ref, m))
            if pc.whiten_advantages:
                adv = whiten(adv, m)  # 6.
            metrics["adv/mean"], metrics["adv/std"] = float(masked_mean(adv, m)), float(adv[m].std(unbiased=False))
        metrics.update({"ppo_max/running_mean": float(self.moments.mean[0]),
                        "ppo_max/running_std": float(self.moments.var[0].sqrt())})
        return {**roll, "advantages": adv, "values": values, "returns": returns}

    def update(self, roll: dict[str, Any]) -> dict[str, float]:
        """Steps 7-8: the policy update (``LLMTrainer.update``, skipped in the critic warm-up), then the critic's."""
        critic_only = self.state.step < self.ppo.critic_warmup_steps
        metrics = {} if critic_only else super().update(roll)  # 7.
        return {**metrics, **self._critic_update(roll), "ppo_max/critic_only": float(critic_only)}

    def _critic_update(self, roll: dict[str, Any]) -> dict[str, float]:
        """Step 8 on the micro-batches and epochs of the policy update; returns averaged critic metrics."""
        cfg, batch = self.config, roll["batch"]
        n = batch.completion_ids.shape[0]
        bounds = [round(i * n / cfg.grad_accum) for i in range(cfg.grad_accum + 1)]
        sums: dict[str, list[float]] = {"critic/value_loss": [], "critic/vf_clipfrac": []}
        for _ in range(cfg.updates_per_rollout):
            for i in range(cfg.grad_accum):
                rows = slice(bounds[i], bounds[i + 1])
                mask = batch.completion_mask[rows]
                if not bool(mask.any()):
                    continue
                with self.accelerator.autocast():
                    values = self.critic(batch.select(rows))
                loss, clipfrac = clipped_value_loss(values, roll["values"][rows], roll["returns"][rows], mask,
                                                    self.ppo.value_clip)
                (self.ppo.vf_coef * loss / cfg.grad_accum).backward()
                sums["critic/value_loss"].append(float(loss.detach()))
                sums["critic/vf_clipfrac"].append(float(clipfrac))
            if cfg.max_grad_norm > 0:
                sums.setdefault("critic/grad_norm", []).append(
                    float(torch.nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)))
            self.critic_optimizer.step()
            self.critic_optimizer.zero_grad(set_to_none=True)
        return {k: sum(v) / len(v) for k, v in sums.items() if v}

    # ------------------------------------------------------------------ checkpoints
    def write_checkpoint_extras(self, folder: Path) -> None:
        """What ``LLMTrainer.save_checkpoint`` adds inside its atomically written folder: the critic, its optimizer
        and the running score moments (critic.pt), and the PPO-max settings (ppo_max.json)."""
        torch.save({"critic": self.critic.state_dict(), "optimizer": self.critic_optimizer.state_dict(),
                    "moments": self.moments.state_dict()}, folder / "critic.pt")
        (folder / "ppo_max.json").write_text(json.dumps(asdict(self.ppo), indent=2))

    def load_checkpoint(self, path: str | Path) -> int:
        """``LLMTrainer.load_checkpoint`` plus what ``save_checkpoint`` added; returns the checkpoint's step."""
        step = super().load_checkpoint(path)
        with loading(path, "the PPO-max critic checkpoint"):
            state = torch.load(Path(path) / "critic.pt", weights_only=True)
            self.critic.load_state_dict(state["critic"])
            self.critic_optimizer.load_state_dict(state["optimizer"])
            self.moments.load_state_dict(state["moments"])
        return step
