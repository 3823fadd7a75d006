"""TRL adapter: ``GendiffGRPOTrainer``, a ``trl.GRPOTrainer`` whose loss is any registered gendiff loss.

TRL keeps everything it does (generation, rewards, advantages, reference model, logging, accelerate,
DeepSpeed); only ``_compute_loss`` (TRL 1.16) is replaced:

1. One forward of the policy over prompt + completion (``logits_to_keep`` = completion length + 1),
   logits / temperature, log-probs and token entropy from ``gendiff.entropy`` (differentiable, chunked).
2. old log-probs: TRL's ``old_per_token_logps`` when it computed them (several iterations per
   generation), else the detached current ones (on-policy, ratio 1), exactly as TRL does.
3. loss, metrics = ``POLICY_LOSSES[gendiff_loss](logp, old, advantages, completion_mask, config, ...)``;
   with ``beta > 0`` the k3 KL to TRL's reference log-probs is added, aggregated like the policy loss.
4. Divided by the gradient-accumulation steps (TRL's "grpo" convention); metrics go to TRL's logs;
   ``actor/entropy_coef_next`` is carried to the next step (adaptive entropy bonus).

Several processes: TRL does the distribution (``accelerate launch ... script.py``); its global batch is
per_device_train_batch_size x processes x gradient_accumulation_steps completions, which num_generations must
divide. The gendiff loss is computed on each process's completions (token-mean within a process, as TRL's own
losses); tests/llm/test_llm_multiprocess.py trains it under two CPU processes. The carried entropy coefficient
is each process's own (from its completions); DeepSpeed / FSDP: configs/accelerate/.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from trl import GRPOTrainer

from gendiff.config import from_dict
from gendiff.entropy import masked_mean, token_entropy, token_logprobs

from .losses import POLICY_LOSSES, agg_loss, k3_kl
from .sampling import position_ids_from_mask


class GendiffGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` with a gendiff policy loss.

    Args:
        *args, **kwargs: as for ``trl.GRPOTrainer`` (model, reward_funcs, args, train_dataset, ...).
        gendiff_loss: a key of ``POLICY_LOSSES`` (grpo, clip_cov, kl_cov, entropy_bonus, ...).
        gendiff_loss_config: the loss's config dataclass, or a dict of its fields (None: defaults).
    """

    def __init__(self, *args, gendiff_loss: str = "grpo", gendiff_loss_config: Any = None, **kwargs) -> None:
        self.gendiff_loss_fn = POLICY_LOSSES.get(gendiff_loss)  # unknown name: KeyError listing valid ones
        cls = self.gendiff_loss_fn.config_class
        if gendiff_loss_config is None or isinstance(gendiff_loss_config, dict):
            gendiff_loss_config = from_dict(cls, gendiff_loss_config or {})
        elif not isinstance(gendiff_loss_config, cls):
            raise TypeError(f"gendiff_loss_config for {gendiff_loss!r} must be a {cls.__name__} or a dict, "
                            f"got {type(gendiff_loss_config).__name__}")
        self.gendiff_loss_name, self.gendiff_loss_config = gendiff_loss, gendiff_loss_config
        self._gendiff_entropy_coef: float | None = None
        self._gendiff_entropy_hist: list[float] = []
        super().__init__(*args, **kwargs)

    def _gendiff_logp_entropy(self, model, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 1: [B, T] log-probs and entropies of the completion tokens at TRL's temperature."""
        completion_ids = inputs["completion_ids"]
        t = completion_ids.shape[1]
        ids = torch.cat([inputs["prompt_ids"], completion_ids], 1)
        mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
        with self.accelerator.autocast():
            out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                        logits_to_keep=t + 1)
        logits = out.logits[:, -(t + 1) : -1].float() / self.temperature
        return token_logprobs(logits, completion_ids), token_entropy(logits)

    def _compute_loss(self, model, inputs):  # noqa: D401 - TRL hook
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        logp, entropy = self._gendiff_logp_entropy(model, inputs)  # 1.
        old = inputs.get("old_per_token_logps")
        old = logp.detach() if old is None else old  # 2.
        mode = "train" if self.model.training else "eval"
        zero = torch.zeros((), device=logp.device)
        if not bool(mask.any()):  # all completions empty: a differentiable zero
            return (logp * zero).sum()
        max_steps = max(int(getattr(self.state, "max_steps", 0) or 0), 1)
        hist = self._gendiff_entropy_hist
        loss, metrics = self.gendiff_loss_fn(  # 3.
            logp, old, inputs["advantages"], mask, self.gendiff_loss_config, entropy=entropy,
            entropy_coef=self._gendiff_entropy_coef, progress=min(1.0, self.state.global_step / max_steps),
            entropy_history_mean=sum(hist) / len(hist) if hist else None,
        )
        if self.beta != 0.0:
            k3 = k3_kl(inputs["ref_per_token_logps"], logp, mask)
            kl = agg_loss(k3, mask, self.gendiff_loss_config.loss_agg_mode, self.gendiff_loss_config.norm_len)
            loss = loss + self.beta * kl
            metrics["kl/k3"] = float(kl.detach())
        if mode == "train":  # 4.
            loss = loss / self.current_gradient_accumulation_steps
            if "actor/entropy_coef_next" in metrics:
                self._gendiff_entropy_coef = metrics["actor/entropy_coef_next"]
            hist.append(float(masked_mean(entropy.detach(), mask)))
        for key, value in metrics.items():
            self._metrics[mode][f"gendiff/{key}"].append(value)
        self._metrics[mode]["entropy"].append(float(masked_mean(entropy.detach(), mask)))
        return loss

    def gendiff_config_dict(self) -> dict[str, Any]:
        """The resolved loss config, for logs."""
        return {"loss": self.gendiff_loss_name, **dataclasses.asdict(self.gendiff_loss_config)}
