"""Held-out evaluation of a policy on a verifiable task: greedy accuracy, pass@k and entropy, all from
the same prompts, tokenisation, stopping rule and answer check.

1. Greedy: one argmax completion per prompt (``sample_completions(greedy=True)``), scored by ``correct_fn``.
2. Sampled: ``n_samples`` completions per prompt at ``temperature`` from the same sampler and the same
   ``max_new_tokens``; c_i = number of correct ones of prompt i.
3. pass@k = mean_i [1 - C(n - c_i, k) / C(n, k)], the unbiased estimator of Chen et al. 2021 (eq. 1),
   computed as 1 - prod_{j = n - c_i + 1}^{n} (1 - k / j) (their numerically stable form); pass@1 is
   the sampled accuracy c_i / n averaged over prompts.
4. Entropy: the mean token entropy H(pi_T) over the sampled completions' tokens (EOS included), the
   quantity the trainer logs as ``rollout/entropy``.
5. Optional: ``answer_logprob``, the exact log pi_T(answer + EOS | prompt) by teacher forcing (``teacher_forced_batch``
   builds the batch; the preference trainer uses it too); exp of it
   is the probability that one sample spells the reference answer and stops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gendiff.entropy import masked_mean

from .sampling import Completions, sample_completions

CorrectFn = Callable[[list[str], list[str]], Sequence[float]]


def pass_at_k(n: int, correct: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Per-prompt unbiased pass@k from ``correct`` [P] counts out of ``n`` samples each (step 3)."""
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n = {n}, got k = {k}")
    c = np.asarray(correct, dtype=np.int64)
    if c.ndim != 1 or (c < 0).any() or (c > n).any():
        raise ValueError(f"correct must be a [P] array of counts in [0, {n}]")
    out = np.ones(c.shape, dtype=np.float64)
    for i, ci in enumerate(c):
        if n - ci >= k:
            out[i] = 1.0 - float(np.prod(1.0 - k / np.arange(n - ci + 1, n + 1)))
    return out


@dataclass
class TaskEval:
    """Output of ``evaluate``.

    Attributes:
        greedy_accuracy: share of prompts whose greedy completion is correct.
        pass_at: {k: pass@k}; pass_at[1] is the sampled accuracy.
        entropy: mean token entropy of the sampled completions (nats).
        n_prompts, n_samples: the sizes used.
        greedy_correct: [P] 0/1 per prompt; sample_correct: [P] correct counts out of n_samples.
        greedy_texts: [P] greedy completions (decoded, special tokens removed).
    """

    greedy_accuracy: float
    pass_at: dict[int, float]
    entropy: float
    n_prompts: int
    n_samples: int
    greedy_correct: list[int] = field(repr=False)
    sample_correct: list[int] = field(repr=False)
    greedy_texts: list[str] = field(repr=False)


def _encode(tokenizer, prompts: list[str], device) -> tuple[Tensor, Tensor]:
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def _correct(correct_fn: CorrectFn, prompts: list[str], texts: list[str]) -> list[int]:
    return [int(float(x) == 1.0) for x in correct_fn(prompts, texts)]


@torch.no_grad()
def evaluate(model, tokenizer, prompts: Sequence[str], correct_fn: CorrectFn, n_samples: int = 64,
             ks: Sequence[int] = (1, 4, 16, 64), temperature: float = 1.0, max_new_tokens: int = 8,
             prompts_per_batch: int = 32, seed: int = 0) -> TaskEval:
    """Steps 1-4 on ``prompts``.

    Args:
        model: a causal LM (put in eval mode here).
        tokenizer: its tokenizer (left padding; EOS ends a completion).
        prompts: [P] held-out prompts.
        correct_fn: ``fn(prompts, completions) -> [P]`` rewards; 1.0 counts as correct.
        n_samples: samples per prompt for pass@k (>= max(ks)).
        ks: the k of pass@k.
        temperature: sampling temperature (greedy ignores it).
        max_new_tokens: the longest completion, for greedy and sampled alike.
        prompts_per_batch: prompts per sampler call (rows = prompts_per_batch * n_samples).
        seed: seeds the sampler's generator.
    """
    if max(ks) > n_samples:
        raise ValueError(f"pass@{max(ks)} needs n_samples >= {max(ks)}, got {n_samples}")
    prompts = list(prompts)
    model.eval()
    device = next(model.parameters()).device
    eos, pad = [tokenizer.eos_token_id], tokenizer.pad_token_id
    gen = torch.Generator(device).manual_seed(seed)
    greedy_ok, greedy_texts, counts, ent_sum, ent_n = [], [], [], 0.0, 0
    for start in range(0, len(prompts), prompts_per_batch):
        chunk = prompts[start : start + prompts_per_batch]
        ids, mask = _encode(tokenizer, chunk, device)
        g = sample_completions(model, ids, mask, max_new_tokens, eos, pad, greedy=True)  # 1.
        texts = tokenizer.batch_decode(g.completion_ids, skip_special_tokens=True)
        greedy_texts += texts
        greedy_ok += _correct(correct_fn, chunk, texts)
        s = sample_completions(model, ids, mask, max_new_tokens, eos, pad, temperature, 1.0, n_samples,
                               generator=gen)  # 2.
        rep = [p for p in chunk for _ in range(n_samples)]
        ok = _correct(correct_fn, rep, tokenizer.batch_decode(s.completion_ids, skip_special_tokens=True))
        counts += [sum(ok[i * n_samples : (i + 1) * n_samples]) for i in range(len(chunk))]
        m = s.completion_mask.bool()
        ent_sum += float(masked_mean(s.entropy, m)) * int(m.sum())  # 4.
        ent_n += int(m.sum())
    pass_at = {k: float(pass_at_k(n_samples, counts, k).mean()) for k in ks}  # 3.
    return TaskEval(greedy_accuracy=sum(greedy_ok) / len(prompts), pass_at=pass_at, entropy=ent_sum / max(ent_n, 1),
                    n_prompts=len(prompts), n_samples=n_samples, greedy_correct=greedy_ok, sample_correct=counts,
                    greedy_texts=greedy_texts)


@torch.no_grad()
def answer_logprob(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], temperature: float = 1.0) -> Tensor:
    """Step 5: [P] exact log pi_T(answer tokens + EOS | prompt), teacher-forced in one forward."""
    from .trainer import policy_logp_entropy

    device = next(model.parameters()).device
    rows = [tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for a in answers]
    batch = teacher_forced_batch(tokenizer, list(prompts), rows, device)
    logp, _ = policy_logp_entropy(model.eval(), batch, temperature)
    return (logp * batch.completion_mask).sum(-1)


def teacher_forced_batch(tokenizer, prompts: list[str], completion_ids: Sequence[Sequence[int]], device=None) -> Completions:
    """A ``Completions`` batch for a teacher-forced forward (``policy_logp_entropy``) over given completions.

    Args:
        tokenizer: left-padding tokenizer (the prompts are encoded as the sampler encodes them).
        prompts: [B] prompts, one per completion.
        completion_ids: [B] token-id lists (EOS included where the completion ended); none may be empty.
        device: where the tensors go (None: CPU).

    Returns:
        ``Completions`` with completions right-padded (``pad``, mask 0), logp / entropy zeros, finished True.
    """
    if len(prompts) != len(completion_ids):
        raise ValueError(f"{len(prompts)} prompts but {len(completion_ids)} completions")
    if not prompts or any(len(r) == 0 for r in completion_ids):
        raise ValueError("teacher_forced_batch needs at least one completion and no empty completion")
    ids, mask = _encode(tokenizer, prompts, device)
    width = max(map(len, completion_ids))
    pad = tokenizer.pad_token_id
    comp = torch.tensor([list(r) + [pad] * (width - len(r)) for r in completion_ids], device=device)
    keep = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in completion_ids], device=device)
    zeros = torch.zeros(len(prompts), width, device=device)
    return Completions(ids, mask, comp, keep, zeros, zeros, torch.ones(len(prompts), dtype=torch.bool, device=device))

