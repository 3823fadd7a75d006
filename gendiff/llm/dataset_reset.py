"""DR-PO (Chang et al. 2024, Dataset Reset Policy Optimization for RLHF): rollouts that start from a prefix of a
preferred dataset response (a "reset" state) as well as from the prompt.

The paper (Alg. 1 and its code's ``RollinProcessor``): each rollout of a batch is, with probability beta, reset to a
state of the offline preference dataset, the prompt x with the first h tokens of the preferred response y+ already
written, h ~ Uniform{1, ..., |y+| - 1}; the policy generates the rest; the policy-gradient loss masks the h roll-in
tokens out; the reward model scores the whole response (roll-in + continuation).

In ``LLMTrainer`` (a GRPO-family trainer without a critic):

1. Mixing (``reset_rate`` = beta): each of a step's prompts, i.e. a whole group of ``group_size`` rollouts, is reset
   independently with probability ``reset_rate`` (u ~ U[0, 1) < rate, from the trainer's seeded ``random.Random``).
   The group is reset as a whole so that GRPO's group baseline compares rollouts from one state s_h = (x, y+_{<h}):
   its group-relative advantage then plays the part of the paper's critic A(s_h, a) (the paper draws per rollout).
2. Reset state: one preferred response drawn uniformly from the distinct (prompt, chosen) rows of the data's
   ``pairs`` split (``gendiff llm prefs make``), h ~ Uniform{1, ..., L - 1}, L = its token count (EOS included when
   it ended), as in the paper. Responses with L < 2 have no such prefix and are never drawn.
3. Roll-in: the h prefix tokens are appended to the prompt's tokens (``extend_prompts``): the sampler conditions on
   them and they belong to no completion, so the loss, the old log-probs, the KL term and the entropy see only the
   generated continuation (mask 1 only on generated tokens). A continuation that is EOS alone ends a non-empty
   answer (prefix + EOS) and is trained on (``keep_eos_after_prefix``), unlike an empty completion of a prompt.
4. Reward (``full_answers``): the reward function (and EMPO's answer clusters) sees the whole answer,
   decode(prefix + continuation), as the paper's reward model scores roll-in + continuation.

A prefix of length 0 leaves the prompt as it is: that rollout is a plain prompt rollout.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from gendiff.config import load_yaml
from gendiff.io import loading

from .sampling import Completions


@dataclass(frozen=True)
class ResetRow:
    """One preferred dataset response: its prompt and its token ids (through EOS when it ended)."""

    prompt: str
    chosen_ids: tuple[int, ...]


def check_reset_rate(rate: float) -> None:
    """ValueError unless ``rate`` is a number in [0, 1]."""
    if not isinstance(rate, int | float) or not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"reset_rate must be a fraction in [0, 1], got {rate!r}")


def _data_folder(path: str | Path) -> Path:
    """The ``save_to_disk`` folder: DIR/data of a ``gendiff llm prefs make`` folder, or DIR itself."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"reset_data {str(path)!r} does not exist (make it with `gendiff llm prefs make --out "
                                "DIR` and pass DIR)")
    return path / "data" if (path / "data").is_dir() else path


def load_reset_rows(path: str | Path, tokenizer) -> list[ResetRow]:
    """Step 2's pool: the distinct (prompt, chosen_ids) rows of the data's ``pairs`` split, in first-seen order.

    Args:
        path: a ``gendiff llm prefs make`` folder (its ``data/``) or a saved ``DatasetDict`` with a ``pairs`` split.
        tokenizer: the policy's tokenizer; every chosen response must decode to its stored text with it (a dataset
            sampled with another tokenizer would hand the policy foreign token ids).

    Returns:
        [N] ``ResetRow`` with at least 2 tokens each (a prefix of 1..L-1 tokens exists).
    """
    from datasets import load_from_disk

    folder = _data_folder(path)
    with loading(folder, "the reset data"):
        data = load_from_disk(str(folder))
    if "pairs" not in data:
        raise ValueError(f"reset data {folder} has no 'pairs' split (it has {list(data)}); make it with "
                         "`gendiff llm prefs make`")
    pairs = data["pairs"]
    missing = [c for c in ("prompt", "chosen", "chosen_ids") if c not in pairs.column_names]
    if missing:
        raise ValueError(f"reset data {folder} lacks the columns {missing} of `gendiff llm prefs make` pairs")
    vocab = len(tokenizer)
    rows: dict[ResetRow, None] = {}
    for prompt, text, ids in zip(pairs["prompt"], pairs["chosen"], pairs["chosen_ids"], strict=True):
        if any(not 0 <= i < vocab for i in ids) or tokenizer.decode(ids, skip_special_tokens=True) != text:
            raise ValueError(f"reset data {folder}: the chosen response {text!r} of {prompt!r} does not decode from "
                             f"its token ids with this tokenizer: the data was made with another tokenizer")
        if len(ids) >= 2:
            rows.setdefault(ResetRow(prompt, tuple(ids)), None)
    if not rows:
        raise ValueError(f"reset data {folder} has no chosen response of >= 2 tokens (no prefix to reset to)")
    return list(rows)


def check_reset_data(path: str | Path, task: str, heldout: Collection[str], is_task_prompt: Callable[[str], bool]) -> None:
    """Before a run: the reset data exists, was made for ``task`` and never holds a held-out evaluation problem.

    Args:
        path: a ``gendiff llm prefs make`` folder (its ``make.yaml`` names the task) or a saved ``DatasetDict``.
        task: the run's task name.
        heldout: the run's evaluation problems (a reset to one of them would train on the test set).
        is_task_prompt: whether a prompt is one of ``task``'s (a foreign dataset fails here when it has no make.yaml).
    """
    from datasets import load_from_disk

    folder = _data_folder(path)
    made = Path(path) / "make.yaml"
    if made.is_file():
        made_task = load_yaml(made).get("task")
        if made_task != task:
            raise ValueError(f"reset_data {str(path)!r} was made for the task {made_task!r}, this run is {task!r}")
    with loading(folder, "the reset data"):
        prompts = load_from_disk(str(folder))["pairs"]["prompt"] if (folder / "dataset_dict.json").is_file() else []
    bad = next((p for p in prompts if not is_task_prompt(p)), None)
    if bad is not None:
        raise ValueError(f"reset_data {str(path)!r} holds the prompt {bad!r}, which is not a prompt of the task {task!r}")
    held = set(heldout).intersection(prompts)
    if held:
        raise ValueError(f"reset_data {str(path)!r} holds {len(held)} of the run's held-out problems (e.g. "
                         f"{sorted(held)[0]!r}): make it with --eval-prompts >= this run's --eval-prompts")


class DatasetReset:
    """Steps 1-2: which of a step's prompts start from a reset state, and which state.

    Args:
        rows: the pool of preferred responses (``load_reset_rows``).
        rate: probability that a prompt (a whole group) is replaced by a reset state, in [0, 1].
    """

    def __init__(self, rows: list[ResetRow], rate: float) -> None:
        check_reset_rate(rate)
        if not rows:
            raise ValueError("DatasetReset needs at least one preferred response")
        short = [r for r in rows if len(r.chosen_ids) < 2]
        if short:
            raise ValueError(f"a reset response needs >= 2 tokens, got {list(short[0].chosen_ids)} for {short[0].prompt!r}")
        self.rows, self.rate = rows, float(rate)

    @classmethod
    def load(cls, path: str | Path, tokenizer, rate: float) -> DatasetReset:
        """From a ``gendiff llm prefs make`` folder (``load_reset_rows``)."""
        check_reset_rate(rate)
        return cls(load_reset_rows(path, tokenizer), rate)

    def choose(self, prompts: list[str], rng: random.Random) -> tuple[list[str], list[list[int]]]:
        """Steps 1-2 for one step's prompts.

        Per prompt, in order: u = rng.random(); if u < rate, a row = rng.randrange(N) and h = rng.randint(1, L - 1)
        replace it (rate 0: no draw at all, the prompt stream is untouched).

        Returns:
            ([P] prompts, [P] prefixes): a reset prompt is its row's prompt and its prefix the row's first h token
            ids; any other prompt is kept with the empty prefix.
        """
        if self.rate <= 0.0:
            return list(prompts), [[] for _ in prompts]
        out_prompts, prefixes = [], []
        for p in prompts:
            if rng.random() < self.rate:
                row = self.rows[rng.randrange(len(self.rows))]
                h = rng.randint(1, len(row.chosen_ids) - 1)
                out_prompts.append(row.prompt)
                prefixes.append(list(row.chosen_ids[:h]))
            else:
                out_prompts.append(p)
                prefixes.append([])
        return out_prompts, prefixes


def extend_prompts(ids: Tensor, mask: Tensor, prefixes: list[list[int]], pad_id: int,
                   context: int | None = None, max_new_tokens: int = 0) -> tuple[Tensor, Tensor]:
    """Step 3: append each prompt's prefix tokens and re-pad on the left.

    Args:
        ids: [P, L] left-padded prompt ids.
        mask: [P, L] 1 at real tokens.
        prefixes: [P] lists of h_p token ids (empty: the prompt is kept).
        pad_id: the pad token.
        context, max_new_tokens: the model's context (None: unchecked) and the completion budget.

    Returns:
        ([P, L'] ids, [P, L'] mask), L' = max_p (real tokens of p + h_p); ``ids`` and ``mask`` themselves when every
        prefix is empty.
    """
    if len(prefixes) != ids.shape[0]:
        raise ValueError(f"{len(prefixes)} prefixes for {ids.shape[0]} prompts")
    if not any(prefixes):
        return ids, mask
    rows = [r[m.bool()].tolist() + list(pre) for r, m, pre in zip(ids.cpu(), mask.cpu(), prefixes, strict=True)]
    if context is not None and max(map(len, rows)) + max_new_tokens > context:
        raise ValueError(f"a reset prompt of {max(map(len, rows))} tokens (prompt + prefix) + max_new_tokens "
                         f"{max_new_tokens} exceeds the model's context of {context} tokens")
    width = max(map(len, rows))
    new_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], dtype=ids.dtype)
    new_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=mask.dtype)
    return new_ids.to(ids.device), new_mask.to(mask.device)


def keep_eos_after_prefix(batch: Completions, row_prefixes: list[list[int]], eos_ids: list[int]) -> None:
    """Step 3, in place: a row that continues a prefix and stops at once (EOS first) ends a non-empty answer; its EOS
    keeps mask 1 (the trainer masks EOS-first rows of plain prompts as empty completions).

    Args:
        batch: the sampled rows ([B, T] ``completion_mask`` is changed in place).
        row_prefixes: [B] each row's prefix token ids (empty: a prompt rollout, left as it is).
        eos_ids: the ids that end a completion.
    """
    reset = torch.tensor([bool(p) for p in row_prefixes], device=batch.completion_ids.device)
    eos_first = batch.finished & torch.isin(batch.completion_ids[:, 0], torch.tensor(eos_ids, device=reset.device))
    first = batch.completion_mask[:, 0]
    batch.completion_mask[:, 0] = torch.where(reset & eos_first, torch.ones_like(first), first)


def full_answers(row_prefixes: list[list[int]], completions: list[list[int]],
                 tokenizer) -> tuple[list[str], list[list[int]]]:
    """Step 4: the whole answers that the reward sees.

    Args:
        row_prefixes: [B] each completion's prefix token ids.
        completions: [B] generated token ids (through EOS when it ended).
        tokenizer: decodes with ``skip_special_tokens``.

    Returns:
        ([B] texts of prefix + continuation, [B] their token ids).
    """
    ids = [list(p) + list(c) for p, c in zip(row_prefixes, completions, strict=True)]
    return tokenizer.batch_decode(ids, skip_special_tokens=True), ids


def reset_metrics(prefixes: list[list[int]]) -> dict[str, float]:
    """``drpo/reset_frac`` (share of the step's prompts reset) and ``drpo/prefix_mean`` (mean h over the resets)."""
    lengths = [len(p) for p in prefixes if p]
    return {"drpo/reset_frac": len(lengths) / max(len(prefixes), 1),
            "drpo/prefix_mean": sum(lengths) / len(lengths) if lengths else 0.0}
