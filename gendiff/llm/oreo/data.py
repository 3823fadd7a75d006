"""OREO's offline data: trajectories sampled from the SFT policy, rewarded by the task's verifier.

1. Sample and score: ``k`` completions per prompt at ``temperature`` from the policy, rewarded by ``reward_fn``
   (0/1 exact match on the arithmetic task), duplicates of one prompt removed
   (``gendiff.llm.prefs.data.sample_candidates``, the preference data's sampler).
2. Trajectories: one row per distinct completion, with its token ids (EOS included when it ended) and its reward.
   A step is one token; with the default char-level tokenizer a token is one digit (or EOS).
3. Pairs and lists from the same candidates (``build_preferences``: r_i > r_j pairs, non-constant lists), so that DPO
   (``gendiff llm prefs train --data DIR``) trains on exactly the trajectories OREO sees (left out when no prompt got
   two different rewards).

Returns a ``datasets.DatasetDict`` with splits ``trajectories``, ``pairs`` and ``lists`` (the last two when any).
"""

from __future__ import annotations

from collections.abc import Sequence

from datasets import Dataset, DatasetDict

from ..prefs.data import RewardFn, build_preferences, sample_candidates

TRAJECTORY_COLUMNS = ("prompt_index", "prompt", "completion", "completion_ids", "reward")


def make_trajectories(model, tokenizer, prompts: Sequence[str], reward_fn: RewardFn, k: int = 4,
                      temperature: float = 1.0, max_new_tokens: int = 8, seed: int = 0,
                      progress: bool = False) -> DatasetDict:
    """Steps 1-3 (see the module docstring).

    Args:
        model, tokenizer: the sampling policy (eval mode; left-padding tokenizer with an EOS).
        prompts: [P] training prompts.
        reward_fn: ``fn(prompts, completions) -> [B]`` rewards.
        k: samples per prompt (>= 2).
        temperature, max_new_tokens: sampling settings.
        seed: seeds the sampler.

    Returns:
        ``DatasetDict`` with ``trajectories`` (``TRAJECTORY_COLUMNS``), ``pairs`` and ``lists``.
    """
    cands = sample_candidates(model, tokenizer, prompts, reward_fn, k, temperature, max_new_tokens, seed,
                              progress=progress)  # 1.
    rows: dict[str, list] = {c: [] for c in TRAJECTORY_COLUMNS}
    for p, cand in enumerate(cands):  # 2.
        for text, ids, r in zip(cand.texts, cand.ids, cand.rewards, strict=True):
            if not ids:
                continue
            for col, value in zip(TRAJECTORY_COLUMNS, (p, cand.prompt, text, ids, r), strict=True):
                rows[col].append(value)
    if not rows["prompt"]:
        raise ValueError("no trajectory was sampled (every completion was empty)")
    out = DatasetDict({"trajectories": Dataset.from_dict(rows)})
    try:
        prefs = build_preferences(cands, 0, seed)  # 3.
    except ValueError:  # no prompt with two different rewards: OREO still trains; there is nothing for DPO
        return out
    out["pairs"], out["lists"] = prefs["pairs"], prefs["lists"]
    return out
