"""Dynamic entropy-balanced rollout of agentic AEPO (Dong et al. 2025, "Agentic Entropy-Balanced Policy
Optimization", arXiv 2510.14545, Sec. 3.1; not the Arbitrary-Entropy AEPO of ``gendiff.llm.advantages`` nor ARES's
AEPO). Forms follow the authors' rollout code (``vllm_rollout_with_tools.py`` of github.com/dongguanting/ARPO,
AEPO branch). Its policy-update half is the loss ``ebpo`` (``gendiff.llm.losses.ebpo``).

A *step* here is one token (one digit on the arithmetic task: the tokenizer is char-level); in the paper a step is
a tool call. Entropies are normalised by log |V|, as the authors do. Each prompt gets a budget of k rows
(``group_size``); every row is a group member for the advantage.

1. Entropy pre-monitoring: one probe rollout per prompt. H_root = mean entropy of its first ``root_tokens``
   tokens (the question's uncertainty), H_step = mean entropy of its later tokens (the steps' uncertainty; H_root
   when there are none). Global budget (paper: m = k sigma(beta (H_root - H_step)); the authors' code rounds as)
   m = clip(floor(k sigma(beta (H_root - H_step))) + 1, 1, k). The probe is the first of the m global rollouts.
2. The other m - 1 global rollouts from the prompt.
3. Entropy-balanced branching over the global rows, step t = ``root_tokens`` .. T - 1 in order (one level: branches
   do not branch again): at a valid step, branch with probability P_t = (alpha + gamma dH_t)(1 - P_hat(l)),
   dH_t = H_t - H_root, alpha ~ U[0, 1) (the authors' random base), P_hat(l) = min(1, lambda l), l = the prompt's
   number of consecutive steps that branched just before t (the consecutive high-entropy branch penalty; reset by
   a step without a branch); a branch is made when clip(P_t, 0, 1) >= ``threshold`` and slots (k - m) remain.
4. A branch at step t keeps the parent's tokens y_<t (and their log-probs / entropies: same policy, same prefix)
   and samples y_t.. again, to at most max_new_tokens in total. Slots left after the walk get fresh rollouts from
   the prompt (as the authors add whole samples for prompts that stopped branching).
5. Generated tokens = all sampled tokens (probe, globals, fresh rollouts, branch continuations), not the shared
   prefixes: the count a budget comparison must use (``rollout/generated_tokens``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gendiff.config import check_numbers

from .sampling import Completions, sample_completions


@dataclass
class EBRolloutConfig:
    """Settings of ``LLMTrainConfig.rollout = "entropy_balanced"`` (``rollout_config``).

    Attributes:
        beta: sensitivity of the global budget to H_root - H_step (0.5, the authors' code).
        root_tokens: leading tokens whose mean entropy is H_root (1).
        threshold: tau, branch when P_t >= tau (0.5, the authors' ``branch_probability``).
        entropy_weight: gamma on dH_t (0.2, the authors' ``entropy_weight``).
        penalty: lambda of P_hat(l) = min(1, lambda l) (0.05, the authors' code).
        normalize: divide entropies by log |V| (True, as the authors).
    """

    beta: float = 0.5
    root_tokens: int = 1
    threshold: float = 0.5
    entropy_weight: float = 0.2
    penalty: float = 0.05
    normalize: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.root_tokens, int) and self.root_tokens >= 1):
            raise ValueError(f"EBRolloutConfig.root_tokens must be a positive int, got {self.root_tokens!r}")
        check_numbers(self, nonnegative=("beta", "entropy_weight", "penalty"), fraction=("threshold",))


def global_budget(h_root: float, h_step: float, k: int, beta: float) -> int:
    """Step 1: m = clip(floor(k sigmoid(beta (h_root - h_step))) + 1, 1, k) global rollouts out of k."""
    if k < 1:
        raise ValueError(f"the budget k must be >= 1, got {k}")
    if not (math.isfinite(h_root) and math.isfinite(h_step)):
        raise ValueError(f"entropies must be finite, got H_root {h_root}, H_step {h_step}")
    return max(1, min(k, int(k / (1.0 + math.exp(-beta * (h_root - h_step)))) + 1))


def branch_probability(u: float, delta_h: float, consecutive: int, gamma: float, penalty: float) -> float:
    """Step 3: clip((u + gamma dH) (1 - min(1, penalty l)), 0, 1) for l = ``consecutive`` branching steps."""
    if consecutive < 0:
        raise ValueError(f"consecutive must be >= 0, got {consecutive}")
    return max(0.0, min(1.0, (u + gamma * delta_h) * (1.0 - min(1.0, penalty * consecutive))))


def plan_branches(entropy: Tensor, mask: Tensor, h_root: float, slots: int, uniforms: Tensor,
                  config: EBRolloutConfig) -> list[tuple[int, int]]:
    """Step 3 for one prompt: the (row, step) branch points among its global rows.

    Args:
        entropy: [m, T] (normalised) token entropies of the prompt's global rows; mask: [m, T] valid tokens.
        h_root: the prompt's H_root; slots: k - m branches at most.
        uniforms: [m, T] the alpha ~ U[0, 1) of each (row, step).

    Returns:
        Branch points in the order they were made (step-major, then row).
    """
    if entropy.shape != mask.shape or uniforms.shape != entropy.shape or entropy.dim() != 2:
        raise ValueError(f"entropy, mask and uniforms must share one [m, T] shape, got {tuple(entropy.shape)}, "
                         f"{tuple(mask.shape)}, {tuple(uniforms.shape)}")
    out: list[tuple[int, int]] = []
    consecutive = 0
    valid = mask.bool()
    for t in range(config.root_tokens, entropy.shape[1]):
        made = False
        for j in range(entropy.shape[0]):
            if len(out) >= slots:
                return out
            if not bool(valid[j, t]):
                continue
            p = branch_probability(float(uniforms[j, t]), float(entropy[j, t]) - h_root, consecutive,
                                   config.entropy_weight, config.penalty)
            if p >= config.threshold:
                out.append((j, t))
                made = True
        consecutive = consecutive + 1 if made else 0
    return out


def _stack(rows: list[tuple[Tensor, ...]], pad_id: int) -> tuple[Tensor, ...]:
    """[(ids [T_i], mask, logp, entropy)] -> right-padded [N, T] tensors."""
    t = max(r[0].shape[0] for r in rows)
    pads = (pad_id, 0, 0.0, 0.0)
    return tuple(torch.stack([torch.nn.functional.pad(r[i], (0, t - r[i].shape[0]), value=pads[i]) for r in rows])
                 for i in range(4))


@torch.no_grad()
def entropy_balanced_rollout(model, prompt_ids: Tensor, prompt_mask: Tensor, k: int, max_new_tokens: int,
                             eos_token_ids: list[int], pad_token_id: int, temperature: float, top_p: float,
                             generator: torch.Generator | None, config: EBRolloutConfig
                             ) -> tuple[Completions, int, dict[str, float]]:
    """Steps 1-5: k rows per prompt (prompt-major), the generated-token count and metrics.

    Args:
        model: the policy; prompt_ids / prompt_mask: [P, L] left-padded prompts.
        k: rows per prompt; the rest as ``sample_completions``.

    Returns:
        (Completions with P k rows, generated tokens, metrics ``eb/global_mean``, ``eb/branches``, ``eb/fresh``,
        ``eb/h_root``, ``eb/h_step``).
    """
    dev, n_p = prompt_ids.device, prompt_ids.shape[0]
    norm = math.log(model.config.vocab_size) if config.normalize else 1.0

    def draw(ids: Tensor, mask: Tensor, new: int) -> Completions:
        return sample_completions(model, ids, mask, new, eos_token_ids, pad_token_id, temperature, top_p, 1,
                                  generator=generator)

    probe = draw(prompt_ids, prompt_mask, max_new_tokens)  # 1. pre-monitoring
    ent = probe.entropy.double() / norm
    valid = probe.completion_mask.bool()
    first = valid & (valid.long().cumsum(-1) <= config.root_tokens)
    later = valid & ~first
    h_root = [float(ent[i][first[i]].mean()) if bool(first[i].any()) else 0.0 for i in range(n_p)]
    h_step = [float(ent[i][later[i]].mean()) if bool(later[i].any()) else h_root[i] for i in range(n_p)]
    m = [global_budget(h_root[i], h_step[i], k, config.beta) for i in range(n_p)]
    extra = torch.tensor([x - 1 for x in m], device=dev)
    more = draw(prompt_ids.repeat_interleave(extra, 0), prompt_mask.repeat_interleave(extra, 0), max_new_tokens) \
        if int(extra.sum()) else None  # 2.
    rows: list[list[tuple[Tensor, ...]]] = [[] for _ in range(n_p)]

    def add(c: Completions, i: int, p: int) -> None:
        n = int(c.completion_mask[i].sum())
        rows[p].append((c.completion_ids[i, :n], c.completion_mask[i, :n], c.logp[i, :n], c.entropy[i, :n]))

    owner = [p for p in range(n_p) for _ in range(m[p] - 1)]
    for p in range(n_p):
        add(probe, p, p)
    for i, p in enumerate(owner):
        add(more, i, p)
    branches, fresh = [], []  # 3. (prompt, parent row, step); prompts needing fresh rollouts
    for p in range(n_p):
        ids, msk, _, en = _stack(rows[p], pad_token_id)
        u = torch.rand(msk.shape, generator=generator, device=dev)
        plan = plan_branches(en.double() / norm, msk, h_root[p], k - m[p], u, config)
        branches += [(p, j, t) for j, t in plan]
        fresh += [p] * (k - m[p] - len(plan))
    generated = int(probe.completion_mask.sum()) + (int(more.completion_mask.sum()) if more is not None else 0)
    if branches:  # 4. continue each prefix
        real = [prompt_ids[p][prompt_mask[p].bool()] for p, _, _ in branches]
        ctx = [torch.cat([r, rows[p][j][0][:t]]) for r, (p, j, t) in zip(real, branches, strict=True)]
        width = max(len(c) for c in ctx)
        ids = torch.stack([torch.nn.functional.pad(c, (width - len(c), 0), value=pad_token_id) for c in ctx])
        cmask = torch.stack([torch.nn.functional.pad(torch.ones_like(c), (width - len(c), 0)) for c in ctx])
        cont = draw(ids, cmask, max_new_tokens - min(t for _, _, t in branches))
        for i, (p, j, t) in enumerate(branches):
            n = min(int(cont.completion_mask[i].sum()), max_new_tokens - t)
            generated += n
            par = rows[p][j]
            rows[p].append(tuple(torch.cat([par[f][:t], x[i, :n]]) for f, x in
                                 enumerate((cont.completion_ids, cont.completion_mask, cont.logp, cont.entropy))))
    if fresh:
        idx = torch.tensor(fresh, device=dev)
        new = draw(prompt_ids[idx], prompt_mask[idx], max_new_tokens)
        generated += int(new.completion_mask.sum())
        for i, p in enumerate(fresh):
            add(new, i, p)
    flat = [r for p in range(n_p) for r in rows[p]]
    ids, msk, logp, ent_t = _stack(flat, pad_token_id)
    finished = torch.tensor([bool(torch.isin(r[0][-1:], torch.tensor(eos_token_ids, device=dev)).any()) for r in flat],
                            device=dev)
    batch = Completions(prompt_ids.repeat_interleave(k, 0), prompt_mask.repeat_interleave(k, 0), ids, msk.long(),
                        logp.to(probe.logp.dtype), ent_t.to(probe.entropy.dtype), finished)
    metrics = {"eb/global_mean": sum(m) / n_p, "eb/branches": float(len(branches)), "eb/fresh": float(len(fresh)),
               "eb/h_root": sum(h_root) / n_p, "eb/h_step": sum(h_step) / n_p}
    return batch, generated, metrics
