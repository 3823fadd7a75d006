"""A compact GRPO-family trainer for any Hugging Face causal LM, tokenizer and reward function.

One step (Shao et al. 2024, GRPO, Alg. 1, with the loss and the advantage taken from the registries):

1. Rollout: ``prompts_per_step`` prompts, ``group_size`` completions each, from the fast KV-cached
   sampler (``gendiff.llm.sampling``) at ``temperature`` / ``top_p``. Loss ``hapo``: each token is drawn
   at T (1 + tau h), h from the last update's entropy map. Advantage ``aepo``: ``regularizer_size``
   more per prompt at T x ``target_temperature(H, H*)``.
1c. ``rollout``: ``ares`` (``gendiff.llm.ares``: a hotter draw at high-window-entropy positions, the reward shaped
   by the hierarchical entropy reward of the group's difficulty, per-difficulty KL weights) or ``entropy_balanced``
   (``gendiff.llm.entropy_balanced``: agentic AEPO's pre-monitored split of the group_size budget between whole
   rollouts and branches at high-entropy tokens). One process only; ``rollout/generated_tokens`` counts the tokens
   sampled (branches share their parents' prefixes).
1d. DR-PO (``reset_rate`` > 0, ``gendiff.llm.dataset_reset``): a share of the step's prompts is replaced by a
   dataset prompt + a prefix of its preferred response; the group continues it (no loss on the prefix tokens) and
   the reward sees prefix + continuation.
2. Reward: ``reward_fn(prompts, completions, **meta) -> list[float]`` on the decoded completions; NaN,
   inf or a wrong count raise ``ValueError``.
3. Advantage: ``ADVANTAGES[config.advantage]`` over the groups, with what each estimator needs: token
   mask and entropy (empg, hapo), online riskpo quantiles, the regulariser flags (aepo), log pi_T at
   the target temperature from one no-grad forward (dcpo), answer-equivalence clusters from
   ``cluster_fn`` (empo_reward). Loss ``d3s_tokens``: each group keeps its max-Var(A) rollouts.
4. Update, ``updates_per_rollout`` times, each an optimizer step over ``grad_accum`` micro-batches: one
   forward of the policy over prompt + completion gives log pi_T and the token entropy H(pi_T) at the
   completion positions only (``gendiff.entropy`` chunked functions, pi_T = softmax(logits / T)).
   The first update runs before any parameter change, so its detached log-probs *are* the old log-probs:
   they are cached for the later updates and no extra no-grad pass is spent on them.
   Loss = ``POLICY_LOSSES[config.loss]`` + kl_coef * agg(k3), k3 = exp(ref - logp) - (ref - logp) - 1
   (Schulman's estimator of KL(pi || ref), to a frozen copy of the initial policy; kl_coef = 0: no copy).
   ``reference = "soup:A,B"`` (SALSA) makes ref the weight average of the save_pretrained models A and B
   (``gendiff.llm.soup.weight_soup``) instead of the initial policy.
4b. BuPO (Tan et al. 2025, Bottom-up Policy Optimization, Sec. 5): for the first ``bupo_steps`` steps the same
   loss is computed on the internal policy of decoder layer ``bupo_layer``, pi^l_T = softmax(lm_head(norm(h_l)) / T)
   (``gendiff.llm.layer_policies``): log pi^l_T and H(pi^l_T) replace log pi_T and H(pi_T) in the loss, the old
   log-probs and the KL reference's log-probs. The rollouts still come from the full policy pi (as in the paper);
   only layers <= l, the final norm and the lm_head receive gradient. Then the normal top-layer objective.
4c. SPEAR (``spear``, ``gendiff.llm.spear``): step 2's reward plus the curriculum's intrinsic reward (``intrinsic_fn``),
   successes into the replay buffer after step 3, and each update adds w_sil(t) x the self-imitation loss on
   replayed completions with recalibrated advantages (one process only).
5. Carried states: ``actor/entropy_coef_next`` -> next step's ``entropy_coef`` (adaptive entropy bonus),
   running mean entropy -> ``entropy_history_mean`` (EPO), step / steps -> ``progress`` (EPO, D3S),
   HAPO's entropy map -> the next rollout's temperatures, the first rollout's entropy -> AEPO / DCPO's
   default target. The learning rate warms up linearly over ``warmup_steps``.

Empty completions (EOS as the first token: zero tokens) get their reward and count in their group's
advantage, but carry no loss (mask 0); ``rollout/empty_count`` counts them and a warning is issued.
Rows that never emit EOS are truncated at ``max_new_tokens`` and trained on as they are.
The policy runs in eval mode (no dropout) for rollouts and updates, so ratios are exactly 1 at first.

Several processes (``accelerate launch``, DDP; N = the number of processes):

- The global batch of a step is ``prompts_per_step`` x ``group_size`` completions over all processes (plus
  AEPO's regulariser rows). Every process draws the same ``prompts_per_step`` prompts and the same uniforms
  for all rows (the seeded ``rng`` and ``generator`` advance identically everywhere) and rolls out its
  slice: prompts_per_step / N prompts, whole groups (ValueError naming the numbers otherwise), encoded
  with the left padding of the whole batch, completions right-padded to the whole batch's length. So N
  processes sample exactly the tokens one process would (up to float round-off in the forward).
- Advantages are computed on the gathered rows (rewards, masks, entropies, log-probs, EMPO's cluster keys)
  in one-process row order, then each process keeps its rows: every estimator sees the whole batch.
  The rollout metrics (reward, entropy, lengths, empty count) are of the whole batch too.
- Loss: micro-batch i of process p is scaled by N c_pi / sum_p c_pi, c = its valid tokens
  (``loss_agg_mode`` token-mean) or non-empty rows (seq-mean-*), so DDP's gradient average is the
  aggregate over the i-th micro-batches of all processes: with ``grad_accum`` = 1 exactly the gradient of
  one process on the whole batch (for losses that aggregate the token loss over the completion mask:
  grpo, entropy_bonus, epo, bapo, steer, the KL term). Losses that choose tokens or rows from batch
  statistics (clip_cov, kl_cov, top_entropy, d3s_tokens, hapo's entropy quantiles) choose them per
  process, and clip_cov's random pick draws from a per-process generator.
- Update metrics are averaged over processes weighted by c; states carried to the next step (entropy
  coefficient, HAPO statistics, entropy history) come from these averages, so they agree on all processes.
- Only the main process prints the progress bar and writes log.jsonl, checkpoints and the final model;
  checkpoints hold every process's torch random state (``rng.pt``, ``per_process``) and a resume needs
  the same number of processes.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import math
import random
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object
from torch import Tensor
from tqdm.auto import tqdm

from gendiff.checkpoints import atomic_dir
from gendiff.config import as_mapping, check_numbers, from_dict
from gendiff.entropy import masked_mean, token_entropy, token_logprobs
from gendiff.io import loading

from .advantages import ADVANTAGES, target_temperature
from .ares import ARESConfig, ARESState
from .dataset_reset import (
    DatasetReset,
    check_reset_rate,
    extend_prompts,
    full_answers,
    keep_eos_after_prefix,
    reset_metrics,
)
from .entropy_balanced import EBRolloutConfig, entropy_balanced_rollout
from .fast_decode import FastDecoder, supports_fast_decode
from .layer_policies import find_layer_parts, layer_logits
from .losses import (
    POLICY_LOSSES,
    HAPOStats,
    agg_loss,
    d3s_select_samples,
    hapo_apply_stats,
    hapo_temperature,
    hapo_token_temperature,
    k3_kl,
)
from .sampling import (
    Completions,
    concat_completions,
    pad_completions,
    position_ids_from_mask,
    sample_completions,
)
from .soup import parse_reference, weight_soup
from .spear import SPEAR, IntrinsicFn, SPEARConfig

RewardFn = Callable[..., Sequence[float]]
PromptSource = Sequence[str] | Callable[[int, random.Random], list[str]]
ClusterFn = Callable[[list[str], list[str]], Sequence[Any]]


def answer_clusters(prompts: list[str], completions: list[str]) -> list[str]:
    """Default EMPO semantic classes: completions are equivalent when their stripped texts are equal."""
    return [c.strip() for c in completions]


@dataclass
class LLMTrainConfig:
    """Settings of ``LLMTrainer`` (mirrored by configs/llm_train.yaml)."""

    loss: str = field(default="grpo", metadata={"choices": POLICY_LOSSES.names})  # policy loss
    loss_config: dict[str, Any] = field(default_factory=dict)  # the loss's settings (YAML mapping)
    advantage: str = field(default="grpo", metadata={"choices": ADVANTAGES.names})  # advantage estimator
    advantage_config: dict[str, Any] = field(default_factory=dict)  # the estimator's settings (YAML mapping)
    steps: int = 100  # RL steps (one rollout and its updates each)
    group_size: int = 8  # completions sampled per prompt
    prompts_per_step: int = 4  # prompts per rollout
    max_new_tokens: int = 16  # longest completion in tokens
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling mass (1: off)
    updates_per_rollout: int = 1  # optimizer steps per rollout
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-5  # learning rate
    warmup_steps: int = 0  # learning-rate warm-up steps
    weight_decay: float = 0.0  # weight decay
    max_grad_norm: float = 1.0  # gradient-norm clip
    kl_coef: float = 0.0  # weight of the KL penalty to the reference (0: none)
    reference: str = "initial"  # KL reference: the initial policy, or soup:A,B (SALSA: the average of models A, B)
    riskpo_momentum: float = 0.1  # momentum of RiskPO's online quantile estimates
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # autocast dtype (GPU)
    seed: int = 0  # random seed
    log_every: int = 1  # steps between log.jsonl lines
    checkpoint_every: int = 0  # steps between checkpoint-<step>/ folders (0: none)
    bupo_layer: int = 0  # BuPO: layer l (1..L) whose internal policy the first bupo_steps steps train (0: off)
    bupo_steps: int = 0  # BuPO: steps of the bottom-up phase on bupo_layer, then the top-layer objective
    rollout: Literal["sample", "ares", "entropy_balanced"] = "sample"  # 1c. how a step's rows are drawn
    rollout_config: dict[str, Any] = field(default_factory=dict)  # ARESConfig / EBRolloutConfig fields (YAML mapping)
    reset_rate: float = 0.0  # DR-PO: share of a step's prompts (whole groups) that start from a prefix of a preferred response of reset_data, in [0, 1] (0: off)
    reset_data: str | None = None  # DR-PO: a `gendiff llm prefs make` folder; its pairs' chosen responses are the reset states
    critic: Literal["none", "ppo_max"] = "none"  # ppo_max: critic-based PPO-max (gendiff.llm.ppo_max.PPOMaxTrainer)
    critic_config: dict[str, Any] = field(default_factory=dict)  # PPOMaxConfig fields (YAML mapping)
    spear: bool = False  # SPEAR: replay buffer, self-imitation loss and intrinsic-reward curriculum (gendiff.llm.spear)
    spear_config: dict[str, Any] = field(default_factory=dict)  # SPEARConfig fields (YAML mapping)


_as_dict = as_mapping  # the name this module's checks use


def check_config(cfg: LLMTrainConfig) -> tuple[Any, Any]:
    """Validate ``cfg``; return the typed (loss config, advantage config)."""
    ints = {"steps": 1, "group_size": 1, "prompts_per_step": 1, "max_new_tokens": 1, "updates_per_rollout": 1,
            "grad_accum": 1, "log_every": 1, "checkpoint_every": 0, "warmup_steps": 0, "bupo_layer": 0,
            "bupo_steps": 0}
    for key, low in ints.items():
        if getattr(cfg, key) < low:
            raise ValueError(f"LLMTrainConfig.{key} must be >= {low}, got {getattr(cfg, key)}")
    check_numbers(cfg, positive=("temperature", "top_p", "lr"), nonnegative=("kl_coef", "weight_decay", "max_grad_norm"),
                  fraction=("top_p", "riskpo_momentum"))
    if (cfg.bupo_layer > 0) != (cfg.bupo_steps > 0):
        raise ValueError(f"BuPO needs both bupo_layer and bupo_steps > 0 (or both 0: off), got bupo_layer "
                         f"{cfg.bupo_layer}, bupo_steps {cfg.bupo_steps}")
    if cfg.grad_accum > cfg.group_size * cfg.prompts_per_step:
        raise ValueError(f"grad_accum {cfg.grad_accum} exceeds the batch of {cfg.group_size * cfg.prompts_per_step}")
    check_rollout(cfg, _as_dict("rollout_config", cfg.rollout_config))
    check_reset_rate(cfg.reset_rate)
    if cfg.reset_rate > 0 and not cfg.reset_data:
        raise ValueError(f"reset_rate {cfg.reset_rate} needs reset_data (a `gendiff llm prefs make` folder)")
    if parse_reference(cfg.reference) is not None and cfg.kl_coef <= 0:
        raise ValueError(f"reference {cfg.reference!r} is a KL reference: it needs kl_coef > 0")
    loss_cfg = from_dict(POLICY_LOSSES.get(cfg.loss).config_class, _as_dict("loss_config", cfg.loss_config))
    adv_cfg = from_dict(ADVANTAGES.get(cfg.advantage).config_class, _as_dict("advantage_config", cfg.advantage_config))
    if cfg.loss == "hapo" and not 0.0 <= loss_cfg.temperature_tau < 1.0:
        raise ValueError(f"hapo temperature_tau must be in [0, 1), got {loss_cfg.temperature_tau}")
    if cfg.loss == "d3s_tokens" and not 0.0 < loss_cfg.sample_keep <= 1.0:
        raise ValueError(f"d3s_tokens sample_keep must be in (0, 1], got {loss_cfg.sample_keep}")
    if cfg.advantage == "aepo" and adv_cfg.regularizer_size < 1:
        raise ValueError(f"aepo regularizer_size must be >= 1, got {adv_cfg.regularizer_size}")
    if cfg.spear_config and not cfg.spear:
        raise ValueError(f"spear_config {cfg.spear_config!r} is given but spear is off: pass spear: true (--spear)")
    from_dict(SPEARConfig, _as_dict("spear_config", cfg.spear_config))  # SPEARConfig checks its fields
    if cfg.spear and (cfg.rollout != "sample" or cfg.reset_rate > 0 or cfg.critic != "none"):
        raise ValueError(f"spear replays plain rollouts of the policy: it needs rollout 'sample', reset_rate 0 and "
                         f"critic 'none', got rollout {cfg.rollout!r}, reset_rate {cfg.reset_rate}, critic {cfg.critic!r}")
    if cfg.advantage in ("aepo", "dcpo") and not 0.0 < adv_cfg.temp_low <= adv_cfg.temp_high:
        raise ValueError(f"{cfg.advantage} needs 0 < temp_low <= temp_high, got {adv_cfg.temp_low}, {adv_cfg.temp_high}")
    if cfg.critic != "none" or cfg.critic_config:  # PPO-max: its own checks (advantage, KL, critic settings)
        from .ppo_max_config import check_ppo_max_config

        check_ppo_max_config(cfg, _as_dict("critic_config", cfg.critic_config))
    return loss_cfg, adv_cfg


def check_rollout(cfg: LLMTrainConfig, mapping: dict[str, Any]) -> ARESConfig | EBRolloutConfig | None:
    """Step 1c's typed settings (None for ``sample``), or ValueError naming the clash."""
    kinds = {"ares": ARESConfig, "entropy_balanced": EBRolloutConfig}
    if cfg.rollout not in ("sample", *kinds):
        raise ValueError(f"unknown rollout {cfg.rollout!r}; valid: ['sample', 'ares', 'entropy_balanced']")
    if cfg.rollout == "sample":
        if mapping:
            raise ValueError(f"rollout_config {mapping!r} needs rollout ares or entropy_balanced, not sample")
        return None
    if cfg.advantage == "aepo" or cfg.loss == "hapo" or cfg.bupo_layer or cfg.reset_rate > 0:
        raise ValueError(f"rollout {cfg.rollout!r} draws its own rows: it does not combine with advantage aepo, loss "
                         f"hapo, BuPO or DR-PO resets (got advantage {cfg.advantage!r}, loss {cfg.loss!r}, bupo_layer "
                         f"{cfg.bupo_layer}, reset_rate {cfg.reset_rate})")
    return from_dict(kinds[cfg.rollout], mapping)


def check_rewards(rewards: Any, n: int) -> Tensor:
    """[n] float64 rewards, or ValueError naming the problem (wrong count, NaN / inf, not numbers)."""
    try:
        r = torch.as_tensor([float(x) for x in rewards], dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"reward_fn must return a list of {n} numbers: {err}") from None
    if r.numel() != n:
        raise ValueError(f"reward_fn returned {r.numel()} rewards for {n} completions")
    bad = (~torch.isfinite(r)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"reward_fn returned NaN or inf at completions {bad[:10]}")
    return r


def policy_logp_entropy(model, batch: Completions, temperature: float, fast: bool | None = None,
                        layer: int | None = None) -> tuple[Tensor, Tensor]:
    """log pi_T and H(pi_T) at the completion positions, from one forward over prompt + completion.

    Args:
        model: the policy (or the reference model).
        batch: prompts and completions.
        temperature: T of pi_T = softmax(logits / T).
        fast: use the ``FastDecoder`` forward (same function, fewer ops; gradients reach the model's
            parameters); None: whenever ``supports_fast_decode(model)``.
        layer: None: the model's policy; l in 1..L: the internal layer policy pi^l (BuPO,
            ``gendiff.llm.layer_policies``: logits lm_head(final_norm(h_l)), from the plain HF forward).

    Returns:
        (logp [B, T], entropy [B, T]) with gradient; values at mask = 0 are meaningless.
    """
    logits = completion_logits(model, batch, fast, layer) / temperature
    return token_logprobs(logits, batch.completion_ids), token_entropy(logits)


def completion_logits(model, batch: Completions, fast: bool | None = None, layer: int | None = None) -> Tensor:
    """[B, T, V] float32 logits that predict each completion token (``policy_logp_entropy``'s forward, T = 1)."""
    t = batch.completion_ids.shape[1]
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
    mask = torch.cat([batch.prompt_mask, torch.ones_like(batch.completion_ids)], 1)
    pos = position_ids_from_mask(mask)
    if layer is not None:
        logits = layer_logits(model, ids, mask, layers=[layer], keep_last=t + 1, position_ids=pos)[layer]
    elif supports_fast_decode(model) if fast is None else fast:
        logits = FastDecoder(model, grad=torch.is_grad_enabled()).logits(ids, mask, pos, t + 1)
    else:
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            kwargs["logits_to_keep"] = t + 1
        logits = model(**kwargs).logits[:, -(t + 1) :]
    return logits[:, :-1].float()


@dataclass
class TrainerState:
    """What carries over between steps (saved in checkpoints)."""

    step: int = 0
    entropy_coef: float | None = None
    riskpo_quantiles: tuple[float, float] | None = None
    entropy_sum: float = 0.0
    entropy_count: int = 0
    empty_total: int = 0
    hapo_stats: HAPOStats | None = None
    target_entropy: float | None = None
    ares: dict[str, Any] | None = None  # ARESState.state_dict() (rollout ares)


class LLMTrainer:
    """GRPO-family trainer (see the module docstring for the steps).

    Args:
        model: a Hugging Face causal LM (e.g. ``AutoModelForCausalLM.from_pretrained(path)``).
        tokenizer: its tokenizer; needs an EOS token (the pad token defaults to EOS).
        reward_fn: ``reward_fn(prompts, completions, **meta) -> list[float]``; meta holds ``group_ids``,
            ``completion_ids`` and ``step`` (passed only if the function accepts them or ``**kwargs``).
        prompts: a list of prompts (drawn uniformly with the seed) or ``fn(n, rng) -> list[str]``.
        config: ``LLMTrainConfig``.
        out_dir: where log.jsonl, checkpoints and the final model go (None: nothing is written).
        ref_model: the KL reference (default when kl_coef > 0: the soup of ``config.reference`` = "soup:A,B",
            else a frozen copy of ``model``).
        cluster_fn: ``fn(prompts, completions) -> [B] hashable keys``, the semantic classes of EMPO
            (advantage ``empo_reward``); default ``answer_clusters`` (equal stripped text).
        intrinsic_fn: SPEAR's intrinsic reward ``fn(prompts, completions, finished) -> [B]`` (e.g.
            ``gendiff.llm.spear.format_reward``); None: the curriculum has no intrinsic term.
    """

    def __init__(self, model, tokenizer, reward_fn: RewardFn, prompts: PromptSource,
                 config: LLMTrainConfig | None = None, out_dir: str | Path | None = None, ref_model=None,
                 cluster_fn: ClusterFn | None = None, intrinsic_fn: IntrinsicFn | None = None) -> None:
        self.config = cfg = config or LLMTrainConfig()
        self.loss_cfg, self.adv_cfg = check_config(cfg)
        if cfg.critic != "none" and not getattr(self, "has_critic", False):
            raise ValueError(f"critic {cfg.critic!r} needs gendiff.llm.ppo_max.PPOMaxTrainer, not LLMTrainer")
        self.loss_fn, self.adv_fn = POLICY_LOSSES.get(cfg.loss), ADVANTAGES.get(cfg.advantage)
        if not callable(reward_fn):
            raise TypeError(f"reward_fn must be callable, got {type(reward_fn).__name__}")
        if not callable(prompts) and (isinstance(prompts, str) or len(prompts) == 0):
            raise ValueError("prompts must be a non-empty list of strings or a callable fn(n, rng)")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id: completions could never end")
        self.tokenizer, self.reward_fn, self.prompts = tokenizer, reward_fn, prompts
        self.cluster_fn = cluster_fn or answer_clusters
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.eos_ids = sorted({tokenizer.eos_token_id, *([gen_eos] if isinstance(gen_eos, int) else gen_eos or [])})
        self.context = getattr(model.config, "max_position_embeddings", None)
        torch.manual_seed(cfg.seed)
        self.accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
        self.num_processes, self.process_index = self.accelerator.num_processes, self.accelerator.process_index
        if self.accelerator.distributed_type == DistributedType.FSDP:
            raise ValueError("LLMTrainer does not run under FSDP: its rollouts sample from the full parameters and "
                             "each process stops decoding on its own; use DDP or DeepSpeed ZeRO-2 "
                             "(configs/accelerate/llm_zero2.yaml). FSDP suits the TRL adapter (gendiff.llm.trl)")
        if cfg.prompts_per_step % self.num_processes:
            raise ValueError(f"prompts_per_step {cfg.prompts_per_step} is not divisible by the {self.num_processes} "
                             "processes: each process rolls out prompts_per_step / processes whole groups")
        if cfg.bupo_layer:  # BuPO: the layer must exist; DDP would wait for the gradients of the layers above l
            n_layers = find_layer_parts(model).num_layers
            if cfg.bupo_layer > n_layers:
                raise ValueError(f"bupo_layer {cfg.bupo_layer} exceeds the {n_layers} decoder layers of "
                                 f"{type(model).__name__}")
            if self.num_processes > 1:
                raise ValueError("bupo_layer runs on one process only: under DDP the layers above bupo_layer get no "
                                 "gradient in the bottom-up phase")
        self.rollout_cfg = check_rollout(cfg, _as_dict("rollout_config", cfg.rollout_config))
        self.ares = ARESState(self.rollout_cfg) if cfg.rollout == "ares" else None
        if cfg.rollout != "sample" and self.num_processes > 1:
            raise ValueError(f"rollout {cfg.rollout!r} runs on one process only (its rows are drawn per prompt)")
        self.spear = None
        if intrinsic_fn is not None and not cfg.spear:
            raise ValueError("intrinsic_fn is SPEAR's intrinsic reward: it needs spear on (it would be ignored)")
        if cfg.spear:  # 4c. SPEAR: one buffer, on one process
            if self.num_processes > 1:
                raise ValueError("spear runs on one process only: the replay buffer is not sharded over processes")
            self.spear = SPEAR(from_dict(SPEARConfig, _as_dict("spear_config", cfg.spear_config)), self.pad_id,
                               intrinsic_fn, seed=cfg.seed + 1)
        self.ref_model = None
        if cfg.kl_coef > 0:
            soup = parse_reference(cfg.reference) if ref_model is None else None
            if soup is not None:  # SALSA: the KL reference is the weight average of the SFT models
                ref_model = weight_soup(soup)
                if ref_model.config.vocab_size != model.config.vocab_size:
                    raise ValueError(f"the soup reference has vocabulary size {ref_model.config.vocab_size}, the "
                                     f"policy {model.config.vocab_size}: they must share the tokenizer")
            self.ref_model = (ref_model or copy.deepcopy(model)).to(self.accelerator.device).eval()
            self.ref_model.requires_grad_(False)
        model.eval()  # no dropout: rollouts and updates see the same function
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        self.model, self.optimizer = self.accelerator.prepare(model, opt)
        self.generator = torch.Generator(self.accelerator.device).manual_seed(cfg.seed)
        # losses that draw (clip_cov) use a per-process generator under N processes: the rollout generator must
        # advance identically everywhere; one process keeps the single generator (unchanged behaviour)
        self.loss_generator = self.generator if self.num_processes == 1 else \
            torch.Generator(self.accelerator.device).manual_seed(cfg.seed + 1 + self.process_index)
        self._order: Tensor | None = None  # N processes: global row -> gathered row, for the current rollout
        self._mine: Tensor | None = None  # N processes: the global rows of this process
        self.rng = random.Random(cfg.seed)
        self.state = TrainerState()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._reward_params = inspect.signature(reward_fn).parameters
        self._warned_empty = False
        # DR-PO (gendiff.llm.dataset_reset): some groups start from a prefix of a preferred dataset response
        self.reset = DatasetReset.load(cfg.reset_data, tokenizer, cfg.reset_rate) if cfg.reset_rate > 0 else None

    def _bupo_layer(self) -> int | None:
        """Step 4b: the decoder layer whose internal policy this step optimises (None: the model's policy)."""
        cfg = self.config
        return cfg.bupo_layer if cfg.bupo_layer and self.state.step < cfg.bupo_steps else None

    # ------------------------------------------------------------------ rollout
    def _next_prompts(self) -> list[str]:
        n = self.config.prompts_per_step
        if callable(self.prompts):
            out = list(self.prompts(n, self.rng))
            if len(out) != n or not all(isinstance(p, str) for p in out):
                raise ValueError(f"the prompt source must return {n} strings, got {out!r}")
            return out
        return [self.prompts[self.rng.randrange(len(self.prompts))] for _ in range(n)]

    def encode_prompts(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Left-padded [P, L] ids and mask; a prompt that leaves no room for the completion raises."""
        rows = [self.tokenizer(p)["input_ids"] for p in prompts]
        for p, r in zip(prompts, rows, strict=True):
            if len(r) == 0:
                raise ValueError(f"prompt {p!r} encodes to zero tokens")
            if self.context is not None and len(r) + self.config.max_new_tokens > self.context:
                raise ValueError(f"prompt of {len(r)} tokens + max_new_tokens {self.config.max_new_tokens} exceeds "
                                 f"the model's context of {self.context} tokens: {p[:60]!r}")
        width = max(map(len, rows))
        ids = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return ids.to(self.accelerator.device), mask.to(self.accelerator.device)

    def _call_reward(self, prompts: list[str], completions: list[str], meta: dict[str, Any]) -> Tensor:
        takes_all = any(p.kind == p.VAR_KEYWORD for p in self._reward_params.values())
        kwargs = {k: v for k, v in meta.items() if takes_all or k in self._reward_params}
        return check_rewards(self.reward_fn(prompts, completions, **kwargs), len(completions))

    def _sample(self, ids: Tensor, mask: Tensor, temperature: float, group_size: int,
                token_temperature=None) -> Completions:
        """``group_size`` completions of each of this process's prompts ([P, L] ``ids`` / ``mask``); N processes:
        the uniforms of all N P group_size rows are drawn and this process's slice is kept."""
        rows = ids.shape[0] * group_size
        shard = None if self.num_processes == 1 else (self.process_index * rows, self.num_processes * rows)
        batch = sample_completions(self.accelerator.unwrap_model(self.model), ids, mask, self.config.max_new_tokens,
                                   self.eos_ids, self.pad_id, temperature, self.config.top_p, group_size,
                                   generator=self.generator, token_temperature=token_temperature, shard=shard)
        empty = batch.finished & (batch.completion_mask.sum(-1) == 1)  # EOS first: zero real tokens
        batch.completion_mask = batch.completion_mask * (~empty)[:, None]
        return batch

    def _target_temperature(self, entropy: float) -> float:
        """AEPO / DCPO: the temperature factor toward the target entropy (first rollout's by default)."""
        st, c = self.state, self.adv_cfg
        if st.target_entropy is None:
            st.target_entropy = entropy if c.target_entropy is None else float(c.target_entropy)
        return target_temperature(entropy, st.target_entropy, c.temp_low, c.temp_high)

    # ------------------------------------------------------------------ several processes
    def _global_sum(self, *values: float) -> list[float]:
        """The sums over processes of a few numbers (the numbers themselves for one process)."""
        if self.num_processes == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(t, "sum").tolist()

    def _masked_mean(self, x: Tensor, mask: Tensor) -> float:
        """masked_mean over the valid tokens of all processes (0 when there are none anywhere)."""
        if self.num_processes == 1:
            return float(masked_mean(x, mask)) if bool(mask.any()) else 0.0
        total, count = self._global_sum(float(torch.where(mask.bool(), x, 0.0).double().sum()), float(mask.sum()))
        return total / count if count else 0.0

    def _set_row_order(self, rows: int, n_main: int) -> None:
        """N processes of ``rows`` rows each (``n_main`` on-policy, then regularisers): the one-process order.

        Sets ``_order`` [N rows] (global row -> row of the gathered, process-major tensor: on-policy rows of
        processes 0..N-1, then their regulariser rows, as one process lays them out) and ``_mine`` [rows]
        (the global rows of this process)."""
        proc = torch.arange(self.num_processes)[:, None] * rows
        order = torch.cat([(proc + torch.arange(n_main)).flatten(), (proc + torch.arange(n_main, rows)).flatten()])
        where = torch.empty_like(order)
        where[order] = torch.arange(len(order))
        dev = self.accelerator.device
        self._order = order.to(dev)
        self._mine = where[self.process_index * rows : (self.process_index + 1) * rows].to(dev)

    def _glob(self, x: Tensor) -> Tensor:
        """[rows, ...] of this process -> [N rows, ...] of all processes in one-process order (x for one)."""
        if self.num_processes == 1:
            return x
        dtype = x.dtype
        g = self.accelerator.gather(x.long() if dtype == torch.bool else x.contiguous())
        return g[self._order].to(dtype)

    def _glob_list(self, x: list) -> list:
        """A list with one entry per row of this process -> the list of all rows in one-process order."""
        if self.num_processes == 1:
            return x
        flat = gather_object(x)
        return [flat[i] for i in self._order.tolist()]

    def _local(self, x: Tensor) -> Tensor:
        """Global rows -> the rows of this process (x for one process)."""
        return x if self.num_processes == 1 else x[self._mine]

    # ------------------------------------------------------------------ rollout (steps 1-3)
    @torch.no_grad()
    def rollout(self, prompts: list[str], prefixes: list[list[int]] | None = None) -> dict[str, Any]:
        """Steps 1-3: sample, score, compute advantages. Returns the batch and its rollout metrics.

        ``prompts`` are the step's prompts over all processes; each process rolls out its slice of them.
        ``prefixes`` (DR-PO, ``gendiff.llm.dataset_reset``): per prompt, token ids that the rollouts continue from;
        they extend the prompt (no loss on them) and the reward sees prefix + continuation."""
        cfg, name, st = self.config, self.config.advantage, self.state
        n_proc, rank = self.num_processes, self.process_index
        ids, mask = self.encode_prompts(prompts)  # all prompts: the same left padding on every process
        reset_stats = {}
        if prefixes is not None:  # DR-PO roll-in: the prefix tokens extend the prompts
            ids, mask = extend_prompts(ids, mask, prefixes, self.pad_id, self.context, cfg.max_new_tokens)
            reset_stats = reset_metrics(prefixes)
        n_loc = len(prompts) // n_proc
        first = rank * n_loc  # this process's first prompt (its first group id)
        if n_proc > 1:
            ids, mask, prompts = ids[first : first + n_loc], mask[first : first + n_loc], prompts[first : first + n_loc]
            prefixes = prefixes[first : first + n_loc] if prefixes is not None else None
        t0 = time.perf_counter()
        hapo_tau = getattr(self.loss_cfg, "temperature_tau", 0.0) if cfg.loss == "hapo" else 0.0
        token_temp = hapo_token_temperature(st.hapo_stats, hapo_tau) if hapo_tau and st.hapo_stats else None
        draw_temp = self.ares.token_temperature() if self.ares is not None else token_temp  # 1c. ARES: hotter at HWE
        if cfg.rollout == "entropy_balanced":  # 1c. agentic AEPO: global rollouts + branches at high-entropy steps
            batch, generated, eb_metrics = entropy_balanced_rollout(
                self.accelerator.unwrap_model(self.model), ids, mask, cfg.group_size, cfg.max_new_tokens, self.eos_ids,
                self.pad_id, cfg.temperature, cfg.top_p, self.generator, self.rollout_cfg)
            empty = batch.finished & (batch.completion_mask.sum(-1) == 1)
            batch.completion_mask = batch.completion_mask * (~empty)[:, None]
        else:
            batch = self._sample(ids, mask, cfg.temperature, cfg.group_size, draw_temp)  # 1.
            generated, eb_metrics = None, {}
        n_main = batch.completion_ids.shape[0]
        group_ids = torch.arange(n_main, device=ids.device) // cfg.group_size + first
        rep_prompts = [p for p in prompts for _ in range(cfg.group_size)]
        entropy = self._masked_mean(batch.entropy, batch.completion_mask)
        metrics: dict[str, float] = {"rollout/entropy": entropy, **eb_metrics, **reset_stats}
        if token_temp is not None:  # the factors the draw used (from the same entropies of pi_T)
            metrics["hapo/temperature_factor_mean"] = self._masked_mean(hapo_temperature(
                hapo_apply_stats(batch.entropy, st.hapo_stats), 1.0, hapo_tau), batch.completion_mask)
        if name == "aepo":  # 1b. AEPO: regulariser rollouts at the target temperature
            t_reg = cfg.temperature * self._target_temperature(entropy)
            k = self.adv_cfg.regularizer_size
            batch = concat_completions(batch, self._sample(ids, mask, t_reg, k), self.pad_id)
            group_ids = torch.cat([group_ids, torch.arange(len(prompts) * k, device=ids.device) // k + first])
            rep_prompts += [p for p in prompts for _ in range(k)]
            metrics["aepo/temperature"] = t_reg
        if n_proc > 1:  # the whole batch's completion length on every process; rows in one-process order
            width = torch.tensor([batch.completion_ids.shape[1]], device=ids.device)
            batch = pad_completions(batch, int(self.accelerator.gather(width).max()), self.pad_id)
            self._set_row_order(batch.completion_ids.shape[0], n_main)
        t_gen = time.perf_counter() - t0
        row_prefixes = None
        if prefixes is not None:  # DR-PO: EOS right after a prefix ends a non-empty answer: trained on, not "empty"
            row_prefixes = [prefixes[g] for g in (group_ids - first).tolist()]
            keep_eos_after_prefix(batch, row_prefixes, self.eos_ids)
        lengths = batch.completion_mask.sum(-1) + (batch.finished & (batch.completion_mask.sum(-1) == 0))
        n_empty = int((batch.completion_mask.sum(-1) == 0).sum())
        if n_empty and not self._warned_empty:
            warnings.warn(f"{n_empty} empty completion(s) (EOS first): they are scored but carry no loss; "
                          "see the metric rollout/empty_count", stacklevel=3)
            self._warned_empty = True
        texts = self.tokenizer.batch_decode(batch.completion_ids, skip_special_tokens=True)
        comp_lists = [row[: int(n)].tolist() for row, n in zip(batch.completion_ids.cpu(), lengths.cpu(), strict=True)]
        if row_prefixes is not None:  # DR-PO: the reward sees the whole answer, prefix + continuation
            texts, comp_lists = full_answers(row_prefixes, comp_lists, self.tokenizer)
        meta = {"group_ids": group_ids.tolist(), "completion_ids": comp_lists, "step": st.step}
        rewards = task_rewards = self._call_reward(rep_prompts, texts, meta).to(ids.device, torch.float32)  # 2.
        buckets = None
        if self.ares is not None:  # 2b. ARES: r_acc + hierarchical entropy reward, difficulty from the pass rate
            metrics["ares/accuracy_reward_mean"] = float(rewards.mean())
            rewards, buckets, ares_metrics = self.ares.shape(rewards, group_ids, batch.entropy, batch.completion_mask)
            metrics.update(ares_metrics)
        if self.spear is not None:  # 4c. SPEAR step 1: + w_in(t) x the intrinsic reward
            rewards, spear_metrics = self.spear.shape_rewards(rewards, rep_prompts, texts, batch.finished, st.step)
            metrics.update(spear_metrics)
        is_reg = torch.arange(len(texts), device=ids.device) >= n_main
        adv, adv_metrics = self._advantages(rewards, group_ids, batch, rep_prompts, texts, is_reg, entropy)  # 3.
        replay = None
        if self.spear is not None:  # 4c. SPEAR steps 2-3: successes into the buffer, this step's replay batch
            metrics.update(self.spear.observe(batch, task_rewards, adv, group_ids, rep_prompts, st.step, ~is_reg))
            replay, spear_metrics = self.spear.replay_batch(st.step, ids.device)
            metrics.update(spear_metrics)
        g_rewards, g_reg, g_lengths = self._glob(rewards), self._glob(is_reg), self._glob(lengths)
        if self.spear is not None:  # reward/mean stays the task reward; the shaped one is logged beside it
            metrics["spear/shaped_reward_mean"] = float(g_rewards[~g_reg].mean())
            g_rewards = task_rewards
        metrics.update({**adv_metrics, "reward/mean": float(g_rewards[~g_reg].mean()),
                        "reward/std": float(g_rewards[~g_reg].std(unbiased=False)),
                        "response_length/mean": float(g_lengths[: n_main * n_proc].float().mean()),
                        "rollout/empty_count": int(self._global_sum(n_empty)[0]),
                        "rollout/truncated_frac": float((~self._glob(batch.finished)).float().mean()),
                        "time/generate": t_gen})
        if row_prefixes is not None:  # DR-PO: the reward of the groups that started from the prompt alone
            plain = self._glob(torch.tensor([not p for p in row_prefixes], device=ids.device))
            from_prompt = ~g_reg & plain
            if bool(from_prompt.any()):
                metrics["drpo/reward_from_prompt"] = float(g_rewards[from_prompt].mean())
        keep = self._d3s_rows(adv, group_ids - first, batch.completion_mask)
        if keep is not None:  # 3b. D3S sample level: only the max-variance rollouts of each group
            batch, adv, is_reg = batch.select(keep), adv[keep], is_reg[keep]
            buckets = None if buckets is None else [b for b, k in zip(buckets, keep.tolist(), strict=True) if k]
            metrics["d3s/kept_rollouts"] = float(self._global_sum(float(keep.sum()))[0])
        ref = None
        if self.ref_model is not None:
            with self.accelerator.autocast():
                ref, _ = policy_logp_entropy(self.ref_model, batch, cfg.temperature, layer=self._bupo_layer())
        kl_weight = None
        if buckets is not None and ref is not None:  # 6. ARES dynamic KL: per-bucket weights, adapted to the KL now
            m = batch.completion_mask
            k3 = k3_kl(ref, batch.logp, m)
            self.ares.kl.update(buckets, (k3.sum(-1) / m.sum(-1).clamp_min(1)).tolist())
            kl_weight = self.ares.kl.weights(buckets).to(ids.device)
        tokens = self._global_sum(float(batch.completion_mask.sum()))[0]
        metrics["rollout/generated_tokens"] = float(tokens if generated is None else generated)
        # the sampler's log pi_T of rows drawn at T (HAPO's adaptive temperature changes only the draw)
        return {"batch": batch, "advantages": adv, "ref_logp": ref, "texts": texts, "rewards": rewards,
                "on_policy": ~is_reg, "metrics": metrics, "replay": replay, "tokens": tokens, "kl_weight": kl_weight}

    def _advantages(self, rewards: Tensor, group_ids: Tensor, batch: Completions, prompts: list[str],
                    texts: list[str], is_reg: Tensor, entropy: float) -> tuple[Tensor, dict]:
        """Step 3 on the rows of all processes (gathered in one-process order); returns this process's rows'
        advantages ([rows] or [rows, T]) and the metrics of the whole batch."""
        name, extras, own, st = self.config.advantage, {}, {}, self.state
        glob = self._glob
        if name in ("empg", "hapo", "dcpo"):
            m = glob(batch.completion_mask.bool())
            extras["mask"] = m if bool(m.any()) else torch.ones_like(m)
        if name == "empg":
            extras["entropy"] = glob(batch.entropy)
        if name == "dcpo":  # log pi_T(y) at the target temperature; the samples came from pi at T
            t_target = self.config.temperature * self._target_temperature(entropy)
            extras["logp"], extras["logp_target"] = glob(batch.logp), glob(policy_logp_entropy(
                self.accelerator.unwrap_model(self.model), batch, t_target)[0])
            own["dcpo/temperature"] = t_target
        if name == "aepo":
            extras["is_regularizer"] = glob(is_reg)
        rewards, group_ids = glob(rewards), glob(group_ids)
        if name == "empo_reward":  # semantic classes: answer-equivalence clusters
            keys = self._glob_list(list(self.cluster_fn(prompts, texts)))
            index: dict[Any, int] = {}
            extras["cluster_ids"] = torch.tensor([index.setdefault(k, len(index)) for k in keys], device=rewards.device)
        if name == "riskpo":
            _, m = self.adv_fn(rewards, group_ids, self.adv_cfg)  # this batch's quantiles
            q = (m["riskpo/q_alpha"], m["riskpo/q_beta"])
            old, mom = st.riskpo_quantiles, self.config.riskpo_momentum
            st.riskpo_quantiles = q if old is None else tuple((1 - mom) * o + mom * n for o, n in zip(old, q, strict=True))
            extras["quantiles"] = st.riskpo_quantiles
        adv, metrics = self.adv_fn(None if name == "empo_reward" else rewards, group_ids, self.adv_cfg, **extras)
        if name == "empo_reward":
            metrics["empo/semantic_reward_mean"] = metrics.pop("reward/mean")
        return self._local(adv.to(torch.float32)), {**metrics, **own}

    def _d3s_rows(self, adv: Tensor, group_ids: Tensor, mask: Tensor) -> Tensor | None:
        """D3S sample level (loss d3s_tokens): [B] bool of the kept rollouts, or None."""
        share = getattr(self.loss_cfg, "sample_keep", 1.0) if self.config.loss == "d3s_tokens" else 1.0
        if share >= 1.0:
            return None
        row_adv = adv if adv.dim() == 1 else masked_mean(adv, mask.bool(), dim=-1)
        size = int(torch.bincount(group_ids).max())
        return d3s_select_samples(row_adv, group_ids, max(1, round(share * size)))

    # ------------------------------------------------------------------ update
    def _loss_extras(self) -> dict[str, Any]:
        st = self.state
        hist = st.entropy_sum / st.entropy_count if st.entropy_count else None
        return {"generator": self.loss_generator, "entropy_coef": st.entropy_coef, "entropy_history_mean": hist,
                "progress": min(1.0, st.step / self.config.steps)}

    def _micro_loss(self, roll: dict[str, Any], rows: slice, old: Tensor | None) -> tuple[Tensor | None, dict, Tensor]:
        sub: Completions = roll["batch"].select(rows)
        mask = sub.completion_mask
        bare = self.accelerator.unwrap_model(self.model)
        layer = self._bupo_layer()  # 4b. BuPO: the internal policy of a lower layer in the first steps
        with self.accelerator.autocast():  # a DDP-wrapped model must run its own forward (gradient sync)
            logp, entropy = policy_logp_entropy(self.model, sub, self.config.temperature,
                                                fast=None if bare is self.model else False, layer=layer)
        first = old is None
        old = logp.detach() if first else old
        if not bool(mask.any()):  # only empty completions in this micro-batch
            # N processes: a zero loss through the model, so that DDP's gradient all-reduce still meets
            return (logp.sum() * 0.0 if self.num_processes > 1 else None), {}, old
        adv = roll["advantages"][rows]
        loss, metrics = self.loss_fn(logp, old, adv, mask, self.loss_cfg, entropy=entropy, **self._loss_extras())
        if self.ref_model is not None:
            k3 = k3_kl(roll["ref_logp"][rows], logp, mask)
            if roll.get("kl_weight") is not None:  # ARES: the row's difficulty bucket weight beta_d
                k3 = k3 * roll["kl_weight"][rows][:, None]
            kl = agg_loss(k3, mask, self.loss_cfg.loss_agg_mode, self.loss_cfg.norm_len)
            loss = loss + self.config.kl_coef * kl
            metrics["kl/k3"] = float(kl.detach())
        on = roll["on_policy"][rows]
        if layer is not None:  # actor/entropy stays the model's policy's (entropy law, EPO history): renamed
            metrics["bupo/layer"] = float(layer)
            if "actor/entropy" in metrics:
                metrics["bupo/layer_entropy"] = metrics.pop("actor/entropy")
        elif first and bool(on.any()):  # sampler (KV cache) vs training forward, same parameters: ~1e-6
            metrics["rollout/logp_mismatch"] = float((logp.detach() - sub.logp).abs().mul(mask)[on].max())
        return loss, metrics, old

    def _agg_count(self, mask: Tensor) -> float:
        """What the loss's aggregate divides by on [b, T] ``mask``: valid tokens (token-mean), else non-empty rows."""
        if getattr(self.loss_cfg, "loss_agg_mode", "token-mean") == "token-mean":
            return float(mask.sum())
        return float((mask.sum(-1) > 0).sum())

    def _reduce_metrics(self, local: dict[str, float], weight: float) -> dict[str, float]:
        """N processes: each metric averaged over the processes that have it, weighted by ``weight``."""
        if self.num_processes == 1:
            return local
        every = gather_object([(local, weight)])
        out = {}
        for key in dict.fromkeys(k for m, _ in every for k in m):
            pairs = [(m[key], w) for m, w in every if key in m]
            total = sum(w for _, w in pairs)
            out[key] = sum(v * w for v, w in pairs) / total if total > 0 else sum(v for v, _ in pairs) / len(pairs)
        return out

    def update(self, roll: dict[str, Any]) -> dict[str, float]:
        """Step 4: ``updates_per_rollout`` optimizer steps on one rollout; returns averaged metrics.

        N processes: micro-batch i of this process is weighted N c_i / sum_p c_pi (``_agg_count``), so that
        DDP's average is the aggregate over the i-th micro-batches of all processes (module docstring)."""
        cfg, n = self.config, roll["batch"].completion_ids.shape[0]
        bounds = [round(i * n / cfg.grad_accum) for i in range(cfg.grad_accum + 1)]
        olds: list[Tensor | None] = [None] * cfg.grad_accum
        sums: dict[str, list[float]] = defaultdict(list)
        weights: list[float] | None = None
        mask = roll["batch"].completion_mask
        counts = [self._agg_count(mask[bounds[i] : bounds[i + 1]]) for i in range(cfg.grad_accum)]
        if self.num_processes > 1:
            totals = self._global_sum(*counts)
            weights = [self.num_processes * c / t if t else 0.0 for c, t in zip(counts, totals, strict=True)]
            sync_at = max((i for i, t in enumerate(totals) if t), default=-1)
        for _ in range(cfg.updates_per_rollout):
            for i in range(cfg.grad_accum):
                if weights is not None and totals[i] == 0:  # empty on every process: skipped everywhere
                    continue
                rows = slice(bounds[i], bounds[i + 1])
                # DDP: all-reduce the gradients once, in the last micro-batch that is not empty everywhere
                sync = contextlib.nullcontext() if weights is None or i == sync_at else \
                    self.accelerator.no_sync(self.model)
                with sync:
                    loss, metrics, olds[i] = self._micro_loss(roll, rows, olds[i])
                    if loss is None:
                        continue
                    if weights is not None:
                        loss = loss * weights[i]
                    self.accelerator.backward(loss / cfg.grad_accum)
                for k, v in metrics.items():
                    sums[k].append(v)
            if roll.get("replay") is not None:  # 4c. SPEAR step 4: + w_sil(t) x the self-imitation loss
                with self.accelerator.autocast():
                    logp, entropy = policy_logp_entropy(self.model, roll["replay"].batch, cfg.temperature)
                    loss, metrics = self.spear.loss(logp, entropy, roll["replay"], self.state.step, self.loss_generator)
                self.accelerator.backward(loss)
                for k, v in metrics.items():
                    sums[k].append(v)
            if cfg.max_grad_norm > 0:
                norm = self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                if norm is not None:  # DeepSpeed clips inside its step and may not report the norm
                    sums["actor/grad_norm"].append(float(norm))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return self._reduce_metrics({k: sum(v) / len(v) for k, v in sums.items()}, sum(counts))

    # ------------------------------------------------------------------ loop
    def step(self) -> dict[str, float]:
        """One full step (rollout, reward, advantages, updates); returns its metrics."""
        t0 = time.perf_counter()
        st, cfg = self.state, self.config
        lr = cfg.lr * min(1.0, (st.step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        for group in self.optimizer.param_groups:  # linear warm-up over the first warmup_steps steps
            group["lr"] = lr
        prompts, prefixes = self._next_prompts(), None
        if self.reset is not None:  # DR-PO: some groups start from a prefix of a preferred response
            prompts, prefixes = self.reset.choose(prompts, self.rng)
        roll = self.rollout(prompts, prefixes)
        if self.ares is not None:
            st.ares = self.ares.state_dict()
        metrics = {**roll["metrics"], **self.update(roll), "actor/lr": lr}
        if "actor/entropy_coef_next" in metrics:
            st.entropy_coef = metrics["actor/entropy_coef_next"]
        if "actor/hapo_pivot" in metrics:  # HAPO: the last update's entropy map sets the next temperatures
            st.hapo_stats = HAPOStats(*(metrics[f"actor/hapo_{k}"] for k in HAPOStats._fields))
        if "actor/entropy" in metrics:
            st.entropy_sum, st.entropy_count = st.entropy_sum + metrics["actor/entropy"], st.entropy_count + 1
        st.empty_total += metrics["rollout/empty_count"]
        st.step += 1
        metrics["time/step"] = dt = time.perf_counter() - t0
        metrics["perf/tokens_per_s"] = roll["tokens"] / dt
        metrics["step"] = st.step
        return metrics

    def train(self, steps: int | None = None, progress: bool = True) -> list[dict[str, float]]:
        """Run ``steps`` steps (default: up to ``config.steps``, counting those a resumed state has done); log,
        checkpoint, save the final model."""
        steps = self.config.steps - self.state.step if steps is None else steps
        logs = []
        log_path = None
        main = self.accelerator.is_main_process  # N processes: only the main one prints and writes
        if self.out_dir is not None and main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.out_dir / "log.jsonl"
        bar = tqdm(range(steps), desc=f"llm {self.config.loss}", disable=not progress or not main)
        for _ in bar:
            m = self.step()
            logs.append(m)
            bar.set_postfix(reward=f"{m['reward/mean']:.3f}", entropy=f"{m.get('actor/entropy', math.nan):.3f}")
            if log_path is not None and (self.state.step % self.config.log_every == 0):
                with log_path.open("a") as f:
                    f.write(json.dumps(m) + "\n")
            every = self.config.checkpoint_every
            if self.out_dir is not None and every and self.state.step % every == 0:
                self.save_checkpoint(self.out_dir / f"checkpoint-{self.state.step}")
        if self.out_dir is not None and main:  # written under a temporary name: a kill leaves no half final/
            atomic_dir(self.out_dir / "final", self.save)
        self.accelerator.wait_for_everyone()
        return logs

    def save(self, path: str | Path) -> Path:
        """Save model and tokenizer (``save_pretrained``) and the trainer state (JSON) to ``path`` (N processes:
        the main process writes, the others do nothing)."""
        path = Path(path)
        if not self.accelerator.is_main_process:
            return path
        path.mkdir(parents=True, exist_ok=True)
        self.accelerator.unwrap_model(self.model).save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        (path / "trainer_state.json").write_text(json.dumps(asdict(self.state), indent=2))
        return path

    def save_checkpoint(self, path: str | Path) -> Path:
        """:meth:`save` plus what an exact resume needs (optimizer, random states), written atomically.

        N processes: every process must call it (the random states are gathered); the main process writes
        ``rng.pt`` with its own states at the top level and every process's under ``per_process``."""
        path = Path(path)
        rng = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.num_processes > 1:
            rng["loss_generator"] = self.loss_generator.get_state()
            rng = {**rng, "per_process": gather_object([rng])}

        def write(folder: Path) -> None:
            self.save(folder)
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
            torch.save(rng, folder / "rng.pt")
            (folder / "python_rng.json").write_text(json.dumps(self.rng.getstate()))
            self.write_checkpoint_extras(folder)

        if self.accelerator.is_main_process:
            atomic_dir(path, write)
        self.accelerator.wait_for_everyone()
        return path

    def write_checkpoint_extras(self, folder: Path) -> None:
        """What a subclass adds to a checkpoint (e.g. PPO-max's critic), written into the folder before it is
        renamed into place, so a kill never leaves a checkpoint without it. Nothing here."""

    def load_checkpoint(self, path: str | Path) -> int:
        """Restore the state :meth:`save_checkpoint` wrote (the model's weights are loaded by the caller, e.g.
        ``from_pretrained(path)``); returns the checkpoint's step."""
        path = Path(path)
        with loading(path, "the trainer checkpoint"):
            state = json.loads((path / "trainer_state.json").read_text())
            q = state.get("riskpo_quantiles")
            self.state = TrainerState(**{**state, "riskpo_quantiles": tuple(q) if q is not None else None})
            if self.ares is not None and self.state.ares is not None:
                self.ares.load_state_dict(self.state.ares)
            self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
            rng = torch.load(path / "rng.pt", weights_only=True)
            written_by = len(rng.get("per_process", [None]))
            if written_by != self.num_processes:
                raise ValueError(f"{path} was written by {written_by} process(es); resume it with as many, not "
                                 f"{self.num_processes} (each process's random state is restored)")
            if self.num_processes > 1:
                rng = rng["per_process"][self.process_index]
                self.loss_generator.set_state(rng["loss_generator"])
            self.generator.set_state(rng["generator"])
            torch.set_rng_state(rng["torch"])
            version, internal, gauss = json.loads((path / "python_rng.json").read_text())
            self.rng.setstate((version, tuple(internal), gauss))
        return self.state.step
