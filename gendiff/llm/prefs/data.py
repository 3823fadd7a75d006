"""Preference data made locally from a policy and a task reward.

1. Sample: ``k`` completions per prompt from the policy (``sample_completions``, KV-cached, seeded), at
   ``temperature``; each completion keeps its sampled token ids (through EOS when it ended).
2. Score: ``reward_fn(prompts, completions)`` on the decoded texts (e.g. ``arithmetic_reward``).
3. Deduplicate: identical token sequences of one prompt count once.
4. Pairs: every (i, j) of a prompt's distinct completions with r_i > r_j gives (chosen = i, rejected = j);
   **pairs with equal rewards are skipped** (they carry no preference). ``max_pairs_per_prompt`` > 0 keeps a
   seeded random subset of them.
5. Lists: the prompt's distinct completions with their rewards (for listwise losses); **lists whose rewards are
   all equal are skipped**, like equal pairs.
6. Label noise (``add_label_noise``): exactly round(fraction * n) pairs, chosen by a seeded permutation, have
   chosen and rejected swapped (``flipped`` = True; ``chosen_reward`` / ``rejected_reward`` stay the true rewards
   of the completions in those columns, so a flipped pair has chosen_reward < rejected_reward). The same fraction
   of lists has its observed ``rewards`` reversed, r' = max + min - r (for a 0/1 reward: 1 - r, i.e. every
   pairwise comparison in the list flips); ``true_rewards`` keeps the clean ones. One seed gives nested
   flips: the pairs flipped at 20 % are among those flipped at 40 %.

The result is a ``datasets.DatasetDict`` with splits ``pairs`` and ``lists`` (``save_to_disk``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from datasets import Dataset, DatasetDict
from tqdm.auto import tqdm

from ..sampling import sample_completions

PAIR_COLUMNS = ("prompt_index", "prompt", "chosen", "rejected", "chosen_ids", "rejected_ids", "chosen_reward",
                "rejected_reward", "flipped")
LIST_COLUMNS = ("prompt_index", "prompt", "completions", "completion_ids", "rewards", "true_rewards", "flipped")
RewardFn = Callable[[list[str], list[str]], Sequence[float]]


@dataclass
class Candidates:
    """Step 1-3 output for one prompt: its distinct completions (texts, token ids) and their rewards."""

    prompt: str
    texts: list[str]
    ids: list[list[int]]
    rewards: list[float]


@torch.no_grad()
def sample_candidates(model, tokenizer, prompts: Sequence[str], reward_fn: RewardFn, k: int, temperature: float = 1.0,
                      max_new_tokens: int = 8, seed: int = 0, prompts_per_batch: int = 64,
                      progress: bool = False) -> list[Candidates]:
    """Steps 1-3: ``k`` samples per prompt, their rewards, duplicates removed (first occurrence kept).

    Returns:
        [P] ``Candidates`` in prompt order.
    """
    if k < 2:
        raise ValueError(f"k (completions per prompt) must be >= 2 to form preferences, got {k}")
    if not prompts:
        raise ValueError("sample_candidates needs at least one prompt")
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    out: list[Candidates] = []
    for start in tqdm(range(0, len(prompts), prompts_per_batch), desc="prefs sample", disable=not progress):
        chunk = list(prompts[start : start + prompts_per_batch])
        enc = tokenizer(chunk, return_tensors="pt", padding=True)
        c = sample_completions(model, enc["input_ids"].to(device), enc["attention_mask"].to(device), max_new_tokens,
                               [tokenizer.eos_token_id], tokenizer.pad_token_id, temperature, 1.0, k, generator=gen)
        texts = tokenizer.batch_decode(c.completion_ids, skip_special_tokens=True)
        rep = [p for p in chunk for _ in range(k)]
        rewards = [float(r) for r in reward_fn(rep, texts)]
        if len(rewards) != len(rep):
            raise ValueError(f"reward_fn returned {len(rewards)} rewards for {len(rep)} completions")
        lengths = c.completion_mask.sum(-1).tolist()
        for i, prompt in enumerate(chunk):
            seen: dict[tuple[int, ...], int] = {}
            cand = Candidates(prompt, [], [], [])
            for row in range(i * k, (i + 1) * k):
                ids = tuple(c.completion_ids[row, : lengths[row]].tolist())
                if ids in seen:
                    continue
                seen[ids] = row
                cand.texts.append(texts[row])
                cand.ids.append(list(ids))
                cand.rewards.append(rewards[row])
            out.append(cand)
    return out


def build_preferences(candidates: Sequence[Candidates], max_pairs_per_prompt: int = 0, seed: int = 0) -> DatasetDict:
    """Steps 4-5: the clean ``pairs`` and ``lists`` splits (``flipped`` all False)."""
    rng = random.Random(seed)
    pairs: dict[str, list] = {c: [] for c in PAIR_COLUMNS}
    lists: dict[str, list] = {c: [] for c in LIST_COLUMNS}
    for p, cand in enumerate(candidates):
        r = cand.rewards
        found = [(i, j) for i in range(len(r)) for j in range(len(r)) if r[i] > r[j]]  # equal rewards: skipped
        if max_pairs_per_prompt > 0 and len(found) > max_pairs_per_prompt:
            found = sorted(rng.sample(found, max_pairs_per_prompt))
        for i, j in found:
            row = (p, cand.prompt, cand.texts[i], cand.texts[j], cand.ids[i], cand.ids[j], r[i], r[j], False)
            for col, value in zip(PAIR_COLUMNS, row, strict=True):
                pairs[col].append(value)
        if len(r) >= 2 and max(r) > min(r):  # a list with all-equal rewards: skipped
            row = (p, cand.prompt, cand.texts, cand.ids, list(r), list(r), False)
            for col, value in zip(LIST_COLUMNS, row, strict=True):
                lists[col].append(value)
    if not pairs["prompt"]:
        raise ValueError("no preference pair: every prompt's completions got equal rewards (raise k or the "
                         "temperature, or use a graded reward such as partial credit)")
    return DatasetDict({"pairs": Dataset.from_dict(pairs), "lists": Dataset.from_dict(lists)})


def _flip_pair(row: dict) -> dict:
    return {**row, "chosen": row["rejected"], "rejected": row["chosen"], "chosen_ids": row["rejected_ids"],
            "rejected_ids": row["chosen_ids"], "chosen_reward": row["rejected_reward"],
            "rejected_reward": row["chosen_reward"], "flipped": not row["flipped"]}


def _flip_list(row: dict) -> dict:
    hi, lo = max(row["rewards"]), min(row["rewards"])
    return {**row, "rewards": [hi + lo - x for x in row["rewards"]], "flipped": not row["flipped"]}


def flip_indices(n: int, fraction: float, seed: int) -> list[int]:
    """The round(fraction * n) rows to flip: the first ones of a seeded permutation (nested over fractions)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"noise fraction must be in [0, 1], got {fraction}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[: round(fraction * n)])


def add_label_noise(data: DatasetDict, fraction: float, seed: int = 0) -> DatasetDict:
    """Step 6: flip exactly round(fraction * n) pairs and as many lists (seeded, recorded in ``flipped``)."""
    missing = [s for s in ("pairs", "lists") if s not in data]
    if missing:
        raise ValueError(f"add_label_noise needs the splits 'pairs' and 'lists'; missing {missing}")
    out = {}
    for split, flip in (("pairs", _flip_pair), ("lists", _flip_list)):
        ds = data[split]
        chosen = set(flip_indices(len(ds), fraction, seed))
        rows = [flip(row) if i in chosen else row for i, row in enumerate(ds)]
        out[split] = Dataset.from_list(rows, features=ds.features) if chosen else ds
    return DatasetDict(out)


def make_preferences(model, tokenizer, prompts: Sequence[str], reward_fn: RewardFn, k: int = 4,
                     temperature: float = 1.0, max_new_tokens: int = 8, noise: float = 0.0, seed: int = 0,
                     max_pairs_per_prompt: int = 0, progress: bool = False) -> DatasetDict:
    """Steps 1-6: sample, score, pair, list and (``noise`` > 0) flip; see the module docstring.

    Args:
        model, tokenizer: the policy that samples (eval mode; left-padding tokenizer with an EOS).
        prompts: [P] training prompts.
        reward_fn: ``fn(prompts, completions) -> [B]`` rewards.
        k: completions per prompt (>= 2).
        temperature, max_new_tokens: sampling settings.
        noise: fraction of pairs (and of lists) whose labels are flipped, in [0, 1].
        seed: seeds the sampler, the pair subsets and the flips.
        max_pairs_per_prompt: keep at most this many pairs per prompt (0: all).

    Returns:
        ``DatasetDict`` with ``pairs`` (columns ``PAIR_COLUMNS``) and ``lists`` (``LIST_COLUMNS``).
    """
    if max_pairs_per_prompt < 0:
        raise ValueError(f"max_pairs_per_prompt must be >= 0, got {max_pairs_per_prompt}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise fraction must be in [0, 1], got {noise}")
    cands = sample_candidates(model, tokenizer, prompts, reward_fn, k, temperature, max_new_tokens, seed,
                              progress=progress)
    clean = build_preferences(cands, max_pairs_per_prompt, seed)
    return add_label_noise(clean, noise, seed) if noise > 0 else clean
