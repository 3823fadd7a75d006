"""A trainer for the preference losses (``PREFERENCE_LOSSES``) on a locally made preference ``DatasetDict``.

One step:

1. Batch: ``batch_size`` rows of the loss's split (``pairs`` for pairwise losses, ``lists`` for listwise ones),
   drawn without replacement from a seeded shuffle of the split, reshuffled every epoch.
2. Forward: the rows' candidates are teacher-forced through the policy in one batch
   (``teacher_forced_batch`` + ``policy_logp_entropy``, the RL trainer's forward at T = 1); the sequence
   log-prob of a candidate is the sum of its token log-probs (EOS included), the entropy is the mean token
   entropy H(pi) (``gendiff.entropy``) over the candidates' tokens.
3. Reference / anchor: ``anchor = fixed``: the frozen starting policy's sequence log-probs, computed once for
   the whole split before training (DPO always uses these). ``anchor = ema`` (ADPO's dynamic anchor): a copy
   of the policy whose weights follow theta_anc <- alpha theta_anc + (1 - alpha) theta after every step
   (``anchor_ema`` = alpha; alpha = 0: the anchor is the policy before this step, the previous policy), scored
   without gradient on the same batch. Logged: ``prefs/did_entropy``, the entropy of the differential information
   distribution q proportional to pi / pi_ref over each row's candidates (``gendiff.llm.prefs.did``).
4. Update: loss = ``PREFERENCE_LOSSES[loss](logp [b, K], anchor_logp [b, K], config, rewards=, mask=)``, AdamW,
   gradient-norm clip, then step 3's anchor update.

The policy runs in eval mode (no dropout). Single process (no accelerate / DDP, unlike ``LLMTrainer``).
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from datasets import Dataset, DatasetDict
from torch import Tensor

from gendiff.config import check_numbers, from_dict, parse_yaml_mapping
from gendiff.entropy import masked_mean

from ..evaluation import teacher_forced_batch
from ..offline_loop import OfflineStepLoop
from ..trainer import policy_logp_entropy
from .common import PREFERENCE_LOSSES
from .did import did_entropy


@dataclass
class PrefTrainConfig:
    """Settings of ``PrefTrainer``."""

    loss: str = field(default="dpo", metadata={"choices": PREFERENCE_LOSSES.names})  # preference loss
    loss_config: dict[str, Any] = field(default_factory=dict)  # the loss's settings (YAML mapping, e.g. "{beta: 0.5}")
    steps: int = 60  # optimizer steps
    batch_size: int = 16  # pairs (pairwise losses) or lists (listwise losses) per step
    lr: float = 1e-4  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient-norm clip (0: none)
    anchor: Literal["fixed", "ema"] = "fixed"  # ADPO anchor: the frozen start (fixed) or an EMA of the policy (ema)
    anchor_ema: float = 0.9  # ema anchor: weight of the old anchor per step (0: the previous policy)
    seed: int = 0  # seeds the batch order
    log_every: int = 1  # steps between log.jsonl lines

    def loss_settings(self) -> Any:
        """The typed config of ``loss`` from ``loss_config`` (ValueError for unknown fields or bad values)."""
        raw = self.loss_config
        if isinstance(raw, str):
            raw = parse_yaml_mapping(raw, f"loss_config {raw!r}")
        if not isinstance(raw, dict):
            raise ValueError(f"loss_config must be a mapping of field: value, got {raw!r}")
        return from_dict(PREFERENCE_LOSSES.get(self.loss).config_class, raw)


def check_pref_config(cfg: PrefTrainConfig) -> Any:
    """Validate ``cfg``; return the loss's typed config."""
    for key in ("steps", "batch_size", "log_every"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"PrefTrainConfig.{key} must be >= 1, got {getattr(cfg, key)}")
    check_numbers(cfg, positive=("lr",), nonnegative=("weight_decay", "max_grad_norm"), fraction=("anchor_ema",))
    if cfg.anchor not in ("fixed", "ema"):
        raise ValueError(f"PrefTrainConfig.anchor must be 'fixed' or 'ema', got {cfg.anchor!r}")
    if cfg.loss in ("dpo", "cpl") and cfg.anchor != "fixed":
        raise ValueError(f"{cfg.loss} has no moving anchor (dpo: the frozen reference; cpl: reference-free); anchor "
                         "'ema' is an ADPO option (adpo, adpo_listwise)")
    return cfg.loss_settings()


def _split(data: Dataset | DatasetDict, kind: str) -> Dataset:
    name = "pairs" if kind == "pairwise" else "lists"
    if isinstance(data, DatasetDict):
        if name not in data:
            raise ValueError(f"a {kind} loss trains on the {name!r} split; the data has {list(data)}")
        data = data[name]
    need = ("prompt", "chosen_ids", "rejected_ids") if kind == "pairwise" else ("prompt", "completion_ids", "rewards")
    missing = [c for c in need if c not in data.column_names]
    if missing:
        raise ValueError(f"the {name} data lacks columns {missing} (make it with gendiff llm prefs make)")
    if len(data) == 0:
        raise ValueError(f"the {name} split is empty: nothing to train on")
    return data


class PrefTrainer(OfflineStepLoop):
    """Preference-loss trainer (see the module docstring for the steps).

    Args:
        model: a Hugging Face causal LM, the policy (trained in place).
        tokenizer: its left-padding tokenizer.
        data: a ``DatasetDict`` from ``make_preferences`` (or the one split the loss needs).
        config: ``PrefTrainConfig``.
        ref_model: the frozen reference (default: a copy of ``model`` as given).
        out_dir: where log.jsonl and final/ go (None: nothing is written).
    """

    def __init__(self, model, tokenizer, data: Dataset | DatasetDict, config: PrefTrainConfig | None = None,
                 ref_model=None, out_dir: str | Path | None = None) -> None:
        self.config = cfg = config or PrefTrainConfig()
        self.loss_cfg = check_pref_config(cfg)
        self.loss_fn = PREFERENCE_LOSSES.get(cfg.loss)
        self.kind: str = self.loss_fn.kind  # type: ignore[attr-defined]
        self.data = _split(data, self.kind)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = next(model.parameters()).device
        self.out_dir = Path(out_dir) if out_dir is not None else None
        ref = ref_model if ref_model is not None else copy.deepcopy(model)
        self.ref_logp = self._score_all(ref.eval())  # step 3, fixed anchor: [N, K]
        self.anchor_model = None
        if cfg.anchor == "ema":
            self.anchor_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.rng = random.Random(cfg.seed)
        self.order: list[int] = []
        self.step_count = 0
        self.loop_desc = f"prefs {cfg.loss}"  # the progress bar (OfflineStepLoop.train)

    # ------------------------------------------------------------------ batches
    def _rows(self, idx: list[int]) -> tuple[list[str], list[list[int]], Tensor, Tensor | None]:
        """The candidates of rows ``idx``, flattened: (prompts [n], ids [n], slot mask [b, K], rewards [b, K])."""
        rows = self.data[idx]
        if self.kind == "pairwise":
            cands = [[c, r] for c, r in zip(rows["chosen_ids"], rows["rejected_ids"], strict=True)]
            rewards = None
        else:
            cands = rows["completion_ids"]
        width = max(map(len, cands))
        mask = torch.tensor([[i < len(c) for i in range(width)] for c in cands], device=self.device)
        if self.kind != "pairwise":
            rewards = torch.tensor([list(r) + [0.0] * (width - len(r)) for r in rows["rewards"]],
                                   dtype=torch.float32, device=self.device)
        prompts = [p for p, c in zip(rows["prompt"], cands, strict=True) for _ in c]
        return prompts, [ids for c in cands for ids in c], mask, rewards

    def _seq_logp(self, model, prompts: list[str], ids: list[list[int]], mask: Tensor) -> tuple[Tensor, Tensor]:
        """Step 2: ([b, K] sequence log-probs, 0 at empty slots; mean token entropy)."""
        batch = teacher_forced_batch(self.tokenizer, prompts, ids, self.device)
        logp, entropy = policy_logp_entropy(model, batch, 1.0)
        tok = batch.completion_mask.bool()
        seq = (logp * tok).sum(-1)
        out = torch.zeros(mask.shape, dtype=seq.dtype, device=self.device).masked_scatter(mask, seq)
        return out, masked_mean(entropy.detach(), tok)

    @torch.no_grad()
    def _score_all(self, model, chunk: int = 64) -> Tensor:
        parts = []
        for start in range(0, len(self.data), chunk):
            idx = list(range(start, min(start + chunk, len(self.data))))
            prompts, ids, mask, _ = self._rows(idx)
            seq, _ = self._seq_logp(model, prompts, ids, mask)
            parts.append(seq)
        width = max(p.shape[1] for p in parts)
        return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])

    # ------------------------------------------------------------------ step
    def step(self) -> dict[str, float]:
        """Steps 1-4 once; returns the metrics."""
        t0 = time.perf_counter()
        cfg = self.config
        idx = self._next_indices()
        prompts, ids, mask, rewards = self._rows(idx)
        logp, entropy = self._seq_logp(self.model, prompts, ids, mask)
        ref = self.ref_logp[idx][:, : mask.shape[1]]
        if self.anchor_model is None:
            anchor = ref
        else:
            with torch.no_grad():
                anchor, _ = self._seq_logp(self.anchor_model, prompts, ids, mask)
        extras = {} if self.kind == "pairwise" else {"rewards": rewards, "mask": mask}
        loss, metrics = self.loss_fn(logp, anchor, self.loss_cfg, **extras)
        loss.backward()
        if cfg.max_grad_norm > 0:
            metrics["actor/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.anchor_model is not None:  # step 3, dynamic anchor
            with torch.no_grad():
                for a, p in zip(self.anchor_model.parameters(), self.model.parameters(), strict=True):
                    a.mul_(cfg.anchor_ema).add_(p.detach(), alpha=1.0 - cfg.anchor_ema)
        self.step_count += 1
        with torch.no_grad():
            metrics["actor/entropy"] = float(entropy)
            metrics["prefs/logratio_ref"] = float(masked_mean((logp - ref).detach(), mask))
            # entropy of the differential information from the frozen reference to the policy (before this
            # step's update), restricted to each row's candidates: in [0, log K] (gendiff.llm.prefs.did)
            metrics["prefs/did_entropy"] = float(did_entropy(logp.detach(), ref, mask).mean())
        metrics["time/step"] = time.perf_counter() - t0
        metrics["step"] = self.step_count
        return metrics

    def loop_postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        """The progress bar: the preference loss and the entropy."""
        return {"loss": f"{metrics['loss/preference']:.3f}", "entropy": f"{metrics['actor/entropy']:.3f}"}
