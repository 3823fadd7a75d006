"""OREO training: the policy and the value model fitted jointly to the soft Bellman equation on offline trajectories.

One step:

1. Batch: ``batch_size`` trajectories (prompt, completion token ids, reward), drawn without replacement from a
   seeded shuffle of the ``trajectories`` split, reshuffled every epoch.
2. Forwards, teacher-forced over prompt + completion (``teacher_forced_batch``): the policy's logits
   (``completion_logits``, the RL trainer's forward) give log pi_theta(a_t | s_t); the frozen reference (the starting
   policy) gives log pi_ref(a_t | s_t) and, when alpha > 0, the per-step KL(pi_theta || pi_ref)
   (``gendiff.entropy.token_kl``); the value model gives V_phi(s_0) .. V_phi(s_T) (``state_values``).
3. Losses (``gendiff.llm.oreo.losses``): L_V on phi and L_pi (+ alpha L_reg) on theta, each with its own AdamW and
   gradient-norm clip. They share no parameter; both are computed from the same forward before either update.

Policy and value run in eval mode (no dropout). Single process.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict
from torch import Tensor

from gendiff.config import check_numbers
from gendiff.entropy import masked_mean, token_entropy, token_kl, token_logprobs

from ..evaluation import teacher_forced_batch
from ..offline_loop import OfflineStepLoop
from ..trainer import completion_logits
from .losses import OREOConfig, oreo_policy_loss, oreo_value_loss
from .value import ValueModel, save_value_model, state_values


@dataclass
class OREOTrainConfig:
    """Settings of ``OREOTrainer``."""

    beta: float = 0.1  # KL strength of the soft Bellman equation
    alpha: float = 0.0  # weight of the per-step KL regulariser in the policy loss
    terminal_value: bool = True  # also fit V after EOS with target R (the search scores finished beams by it)
    steps: int = 100  # optimizer steps
    batch_size: int = 32  # trajectories per step
    lr: float = 3e-5  # policy AdamW learning rate
    value_lr: float = 3e-4  # value-model AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay (both)
    max_grad_norm: float = 1.0  # gradient-norm clip of each model (0: none)
    seed: int = 0  # seeds the batch order
    log_every: int = 1  # steps between log.jsonl lines

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "log_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"OREOTrainConfig.{key} (--{key.replace('_', '-')}) must be >= 1, got {getattr(self, key)}")
        check_numbers(self, positive=("beta", "lr", "value_lr"), nonnegative=("alpha", "weight_decay", "max_grad_norm"))

    def loss_config(self) -> OREOConfig:
        return OREOConfig(beta=self.beta, alpha=self.alpha, terminal_value=self.terminal_value)


def trajectory_split(data: Dataset | DatasetDict) -> Dataset:
    """The ``trajectories`` split, checked (ValueError naming what is missing)."""
    if isinstance(data, DatasetDict):
        if "trajectories" not in data:
            raise ValueError(f"OREO trains on the 'trajectories' split; the data has {list(data)} "
                             "(make it with gendiff llm oreo make)")
        data = data["trajectories"]
    missing = [c for c in ("prompt", "completion_ids", "reward") if c not in data.column_names]
    if missing:
        raise ValueError(f"the trajectory data lacks columns {missing} (make it with gendiff llm oreo make)")
    if len(data) == 0:
        raise ValueError("the trajectories split is empty: nothing to train on")
    return data


class OREOTrainer(OfflineStepLoop):
    """OREO trainer (see the module docstring for the steps).

    Args:
        model: the policy, a Hugging Face causal LM (trained in place).
        tokenizer: its left-padding tokenizer.
        data: a ``DatasetDict`` from ``make_trajectories`` (or its ``trajectories`` split).
        config: ``OREOTrainConfig``.
        value_model: V_phi (default: ``ValueModel.from_causal_lm(model)``, a copy of the start's body).
        ref_model: the frozen reference (default: a copy of ``model`` as given).
        out_dir: where log.jsonl, final/ (policy) and value/ go (None: nothing is written).
    """

    def __init__(self, model, tokenizer, data: Dataset | DatasetDict, config: OREOTrainConfig | None = None,
                 value_model: ValueModel | None = None, ref_model=None, out_dir: str | Path | None = None) -> None:
        self.config = cfg = config or OREOTrainConfig()
        self.loss_cfg = cfg.loss_config()
        self.data = trajectory_split(data)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = next(model.parameters()).device
        self.value_model = (value_model or ValueModel.from_causal_lm(model)).to(self.device).eval()
        self.ref_model = (ref_model if ref_model is not None else copy.deepcopy(model)).eval().requires_grad_(False)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.value_optimizer = torch.optim.AdamW(self.value_model.parameters(), lr=cfg.value_lr,
                                                 weight_decay=cfg.weight_decay)
        self.rng = random.Random(cfg.seed)
        self.order: list[int] = []
        self.step_count = 0
        self.loop_desc = "oreo"  # the progress bar (OfflineStepLoop.train)

    def losses(self, idx: list[int]) -> tuple[Tensor, Tensor, dict[str, float]]:
        """Steps 2-3 on rows ``idx``: (value loss, policy loss, metrics)."""
        rows = self.data[idx]
        batch = teacher_forced_batch(self.tokenizer, rows["prompt"], rows["completion_ids"], self.device)
        mask = batch.completion_mask.bool()
        rewards = torch.tensor(rows["reward"], dtype=torch.float32, device=self.device)
        logits = completion_logits(self.model, batch)  # 2. [b, T, V]
        logp = token_logprobs(logits, batch.completion_ids)
        with torch.no_grad():
            ref_logits = completion_logits(self.ref_model, batch)
            ref_logp = token_logprobs(ref_logits, batch.completion_ids)
        kl = token_kl(logits, ref_logits) if self.loss_cfg.alpha > 0 else None
        v_all = state_values(self.value_model, batch)  # [b, T + 1]
        values = v_all[:, :-1]
        terminal = v_all.gather(1, mask.sum(-1, keepdim=True)).squeeze(1)  # V(s_T) after each row's last token
        loss_v, m_v = oreo_value_loss(values, logp, ref_logp, rewards, mask, self.loss_cfg, terminal)  # 3.
        loss_pi, m_pi = oreo_policy_loss(logp, ref_logp, values, rewards, mask, self.loss_cfg, kl)
        with torch.no_grad():
            m_pi["actor/entropy"] = float(masked_mean(token_entropy(logits.detach()), mask))
            m_pi["oreo/reward_mean"] = float(rewards.mean())
        return loss_v, loss_pi, {**m_v, **m_pi}

    def step(self) -> dict[str, float]:
        """Steps 1-3 once; returns the metrics."""
        t0 = time.perf_counter()
        cfg = self.config
        loss_v, loss_pi, metrics = self.losses(self._next_indices())
        (loss_v + loss_pi).backward()  # disjoint parameters: each loss reaches only its own model
        for name, model, opt in (("actor", self.model, self.optimizer),
                                 ("value", self.value_model, self.value_optimizer)):
            if cfg.max_grad_norm > 0:
                metrics[f"{name}/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
            opt.step()
            opt.zero_grad(set_to_none=True)
        self.step_count += 1
        metrics["time/step"] = time.perf_counter() - t0
        metrics["step"] = self.step_count
        return metrics

    def loop_postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        """The progress bar: the two losses."""
        return {"value": f"{metrics['loss/value']:.3f}", "policy": f"{metrics['loss/policy']:.3f}"}

    def save_extras(self, out_dir: Path) -> None:
        """The value model beside final/: ``out_dir``/value."""
        save_value_model(self.value_model, out_dir / "value")
