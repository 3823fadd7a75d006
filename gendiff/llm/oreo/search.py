"""Value-guided step-level beam search (OREO's test-time search), a step being one token.

Per prompt, with beam width B and E expansions per step:

1. Start: one beam, the prompt, with no completion token.
2. Expand: every unfinished beam proposes its E most likely next tokens under the policy (top-E of pi(. | s)).
3. Score: each child state s' = s + a is scored by the value function V(s'), one batched value forward. A child
   whose token is EOS, or that reaches ``max_new_tokens``, is finished; its score is V at the state after its last
   token (``OREOConfig.terminal_value`` trains V there to predict the reward).
4. Select: the B best of (the finished beams kept so far + the new children) by score, ties broken by the policy's
   log-probability of the completion; repeat 2-4 until every kept beam is finished.
5. Answer: the best kept beam.

B = E = 1 is greedy decoding (step 2 keeps the argmax, step 4 keeps it); the benchmark compares against exactly
that. Expanding by top-E rather than by sampling keeps the search deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

ValueFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class SearchConfig:
    """Beam-search settings.

    Attributes:
        beam_width: B, beams kept per step (>= 1).
        expansions: E, next tokens tried per beam and step (>= 1).
        max_new_tokens: longest completion.
    """

    beam_width: int = 4
    expansions: int = 4
    max_new_tokens: int = 8

    def __post_init__(self) -> None:
        for key in ("beam_width", "expansions", "max_new_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"SearchConfig.{key} (--{key.replace('_', '-')}) must be >= 1, got {getattr(self, key)}")


@dataclass
class SearchOutput:
    """Per prompt: the chosen completion's token ids (EOS included when it ended), its text and its value score."""

    token_ids: list[list[int]]
    texts: list[str]
    scores: list[float]


@dataclass
class _Beam:
    tokens: list[int]
    logp: float
    score: float
    finished: bool


@torch.no_grad()
def _search_one(policy, value_fn: ValueFn, prompt_ids: Tensor, eos: int, cfg: SearchConfig) -> _Beam:
    """Steps 1-5 for one prompt; ``prompt_ids`` [L] without padding."""
    device = prompt_ids.device
    beams = [_Beam([], 0.0, float("-inf"), False)]  # 1.
    while not all(b.finished for b in beams):
        open_ = [b for b in beams if not b.finished]
        t = len(open_[0].tokens)  # every open beam has t tokens
        ids = torch.cat([prompt_ids.expand(len(open_), -1),
                         torch.tensor([b.tokens for b in open_], dtype=torch.long, device=device).view(len(open_), t)], 1)
        logits = policy(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1].float()
        logp = torch.log_softmax(logits, -1)
        top = logp.topk(min(cfg.expansions, logp.shape[-1]), -1)  # 2.
        children = [(b, int(a), float(lp)) for i, b in enumerate(open_)
                    for a, lp in zip(top.indices[i].tolist(), top.values[i].tolist(), strict=True)]
        child_ids = torch.cat([ids.repeat_interleave(top.indices.shape[1], 0), top.indices.reshape(-1, 1)], 1)
        scores = value_fn(child_ids, torch.ones_like(child_ids)).float().tolist()  # 3.
        new = [_Beam(b.tokens + [a], b.logp + lp, s, a == eos or t + 1 >= cfg.max_new_tokens)
               for (b, a, lp), s in zip(children, scores, strict=True)]
        pool = [b for b in beams if b.finished] + new
        beams = sorted(pool, key=lambda b: (b.score, b.logp), reverse=True)[: cfg.beam_width]  # 4.
    return beams[0]  # 5.


def value_guided_search(policy, value_fn: ValueFn, tokenizer, prompts: Sequence[str], config: SearchConfig | None = None,
                        progress: bool = False) -> SearchOutput:
    """Steps 1-5 for each prompt.

    Args:
        policy: a causal LM (eval mode).
        value_fn: ``fn(input_ids [N, L], attention_mask [N, L]) -> [N]`` the value of the state ending at each row's
            last token (``gendiff.llm.oreo.last_values(value_model)``, or any known function in tests).
        tokenizer: the policy's tokenizer (with an EOS; a prompt encodes with its BOS).
        prompts: [P] prompts.
        config: ``SearchConfig``.

    Returns:
        ``SearchOutput`` with P entries.
    """
    cfg = config or SearchConfig()
    if tokenizer.eos_token_id is None:
        raise ValueError("value_guided_search needs a tokenizer with an EOS token")
    if not prompts:
        raise ValueError("value_guided_search needs at least one prompt")
    policy.eval()
    device = next(policy.parameters()).device
    out = SearchOutput([], [], [])
    for prompt in tqdm(list(prompts), desc="oreo search", disable=not progress):
        ids = torch.tensor(tokenizer(prompt)["input_ids"], dtype=torch.long, device=device)
        best = _search_one(policy, value_fn, ids, tokenizer.eos_token_id, cfg)
        out.token_ids.append(best.tokens)
        out.texts.append(tokenizer.decode(best.tokens, skip_special_tokens=True))
        out.scores.append(best.score)
    return out
