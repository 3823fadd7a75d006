"""Fast grouped sampling for causal LMs: one prefill per distinct prompt, a KV-cached decode loop.

Used by ``gendiff.llm.trainer`` (rollouts) and ``gendiff.llm.tasks`` (greedy evaluation). Works with any
Hugging Face ``AutoModelForCausalLM`` that accepts ``past_key_values`` / ``use_cache`` / ``position_ids``.

1. Prefill: the P distinct left-padded prompts run once (``logits_to_keep=1``), then the KV cache is
   repeated ``group_size`` times (``DynamicCache.batch_repeat_interleave``): G rollouts of a prompt share
   its prefill.
2. Decode: one token per step for all B = P * G rows, position ids counted from each row's first real
   token (left padding does not shift positions; the training forward uses the same ids).
3. Token choice at temperature T: inverse-CDF sampling (the first token whose cumulative probability
   exceeds u ~ U[0, 1), all uniforms drawn once per rollout), an exact draw from p without a host sync;
   top-p keeps the smallest set of tokens whose mass reaches ``top_p``.
4. Per token it records log pi_T(y_t) and H(pi_T) (``gendiff.entropy``) of the tempered distribution
   pi_T = softmax(logits / T) (top-p is a sampling device, not part of the policy, as in TRL and verl).
   An optional ``token_temperature(scaled [B, V]) -> [B]`` factor (HAPO's adaptive temperature) changes
   only the draw: the token is chosen from softmax(scaled / factor); log-prob and entropy stay of pi_T.
5. A row stops at its first EOS (kept, mask 1); later positions hold ``pad`` with mask 0; the loop ends
   when every row has stopped or after ``max_new_tokens``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gendiff.entropy import token_entropy, token_logprobs

from .fast_decode import FAST_ARCHITECTURES, FastDecoder, supports_fast_decode


@dataclass
class Completions:
    """Sampled completions.

    Attributes:
        prompt_ids: [B, P] left-padded prompt ids (each prompt repeated ``group_size`` times).
        prompt_mask: [B, P] 1 at real prompt tokens.
        completion_ids: [B, T] sampled ids, ``pad`` after a row's EOS (T <= max_new_tokens).
        completion_mask: [B, T] 1 up to and including the first EOS.
        logp: [B, T] log pi_T of the sampled tokens (0 where mask = 0).
        entropy: [B, T] entropy of pi_T at each position (0 where mask = 0).
        finished: [B] bool, the row emitted EOS.
    """

    prompt_ids: Tensor
    prompt_mask: Tensor
    completion_ids: Tensor
    completion_mask: Tensor
    logp: Tensor
    entropy: Tensor
    finished: Tensor

    def select(self, rows: slice | Tensor) -> Completions:
        """The completions at ``rows`` (a slice, [B] bool mask or index tensor)."""
        return Completions(*(getattr(self, f)[rows] for f in Completions.__dataclass_fields__))


def concat_completions(a: Completions, b: Completions, pad_token_id: int) -> Completions:
    """Rows of ``a`` then rows of ``b``; the shorter completions are right-padded (``pad``, mask 0).
    Both must share the prompt width (prompts encoded together)."""
    if a.prompt_ids.shape[1] != b.prompt_ids.shape[1]:
        raise ValueError(f"prompt widths differ: {a.prompt_ids.shape[1]} vs {b.prompt_ids.shape[1]}")
    t = max(a.completion_ids.shape[1], b.completion_ids.shape[1])

    def pad(x: Tensor, value: float | int) -> Tensor:
        return torch.nn.functional.pad(x, (0, t - x.shape[1]), value=value)

    return Completions(
        prompt_ids=torch.cat([a.prompt_ids, b.prompt_ids]), prompt_mask=torch.cat([a.prompt_mask, b.prompt_mask]),
        completion_ids=torch.cat([pad(a.completion_ids, pad_token_id), pad(b.completion_ids, pad_token_id)]),
        completion_mask=torch.cat([pad(a.completion_mask, 0), pad(b.completion_mask, 0)]),
        logp=torch.cat([pad(a.logp, 0.0), pad(b.logp, 0.0)]), entropy=torch.cat([pad(a.entropy, 0.0), pad(b.entropy, 0.0)]),
        finished=torch.cat([a.finished, b.finished]),
    )


def pad_completions(c: Completions, length: int, pad_token_id: int) -> Completions:
    """``c`` with its completions right-padded to ``length`` >= T tokens (``pad``, mask 0, logp / entropy 0)."""
    extra = length - c.completion_ids.shape[1]
    if extra < 0:
        raise ValueError(f"cannot pad completions of {c.completion_ids.shape[1]} tokens to {length}")
    if extra == 0:
        return c

    def pad(x: Tensor, value: float | int) -> Tensor:
        return torch.nn.functional.pad(x, (0, extra), value=value)

    return Completions(c.prompt_ids, c.prompt_mask, pad(c.completion_ids, pad_token_id), pad(c.completion_mask, 0),
                       pad(c.logp, 0.0), pad(c.entropy, 0.0), c.finished)


def position_ids_from_mask(mask: Tensor) -> Tensor:
    """[B, L] positions counted from each row's first real token (0 on left padding)."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Set to -inf the logits outside the smallest set whose probability mass reaches ``top_p``. [B, V]."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    drop = probs.cumsum(-1) - probs >= top_p  # mass strictly before this token already reaches top_p
    sorted_logits = sorted_logits.masked_fill(drop, -torch.inf)
    return torch.full_like(logits, -torch.inf).scatter(-1, order, sorted_logits)


def _choose(logits: Tensor, top_p: float, u: Tensor | None) -> Tensor:
    """argmax (u None), or the inverse-CDF draw: the first v with cdf_v > u * cdf_V, u [B, 1] ~ U[0, 1)."""
    if u is None:
        return logits.argmax(-1)
    cdf = top_p_filter(logits, top_p).softmax(-1).cumsum(-1)
    tok = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return tok.squeeze(-1).clamp_max(logits.shape[-1] - 1)


def cache_kwarg(model) -> str:
    """The name of the KV-cache argument: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _forward(model, **kwargs):
    """Call the model with ``logits_to_keep=1`` when it supports it."""
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        return model(logits_to_keep=1, **kwargs)
    return model(**kwargs)


def sample_completions(
    model,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    max_new_tokens: int,
    eos_token_ids: list[int],
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    group_size: int = 1,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    fast: bool | None = None,
    token_temperature: Callable[[Tensor], Tensor] | None = None,
    shard: tuple[int, int] | None = None,
) -> Completions:
    """Sample ``group_size`` completions per prompt (see the module docstring for the steps).

    Args:
        model: a causal LM (eval mode recommended; dropout would make rollouts noisy).
        prompt_ids: [P, L] left-padded prompt ids; prompt_mask: [P, L].
        max_new_tokens: longest completion.
        eos_token_ids: ids that end a completion.
        pad_token_id: id written after a row's EOS.
        temperature: > 0; greedy: argmax instead of sampling (logp / entropy still of pi_T).
        top_p: nucleus mass in (0, 1].
        group_size: rollouts per prompt (rows are prompt-major: row i answers prompt i // group_size).
        generator: torch.Generator on the model's device, for reproducible draws.
        fast: use ``FastDecoder`` (None: whenever ``supports_fast_decode(model)``; False: the HF forward).
        token_temperature: optional per-row factor of the temperature at each step, from the [B, V]
            tempered logits (step 4); ignored when greedy.
        shard: (first row, total rows) of a larger rollout this call is one slice of (several processes):
            the uniforms of all ``total`` rows are drawn and rows ``first .. first + B - 1`` are kept, so
            the slices of N processes draw exactly the tokens one process would draw for the whole rollout.

    Returns:
        ``Completions`` with B = P * group_size rows (ordinary tensors, usable in autograd).
    """
    if temperature <= 0 or not 0.0 < top_p <= 1.0 or max_new_tokens < 1 or group_size < 1:
        raise ValueError(f"need temperature > 0, 0 < top_p <= 1, max_new_tokens >= 1, group_size >= 1; got "
                         f"{temperature}, {top_p}, {max_new_tokens}, {group_size}")
    if prompt_ids.dim() != 2 or prompt_mask.shape != prompt_ids.shape:
        raise ValueError(f"prompt_ids and prompt_mask must both be [P, L], got {tuple(prompt_ids.shape)} "
                         f"and {tuple(prompt_mask.shape)}")
    with torch.inference_mode():
        ids, keep, scaled, done = _decode(model, prompt_ids, prompt_mask, max_new_tokens, eos_token_ids,
                                          pad_token_id, temperature, top_p, group_size, greedy, generator, fast,
                                          token_temperature, shard)
        zero = torch.zeros((), device=ids.device)
        logp = torch.where(keep, token_logprobs(scaled, ids), zero)  # 4. once, over all steps
        ent = torch.where(keep, token_entropy(scaled), zero)
    return Completions(  # clones leave inference mode, so the tensors can enter autograd later
        prompt_ids=prompt_ids.repeat_interleave(group_size, 0), prompt_mask=prompt_mask.repeat_interleave(group_size, 0),
        completion_ids=ids.clone(), completion_mask=keep.long(), logp=logp.clone(), entropy=ent.clone(),
        finished=done.clone(),
    )


class _HFStepper:
    """The generic path: the model's own forward with its KV cache object."""

    def __init__(self, model) -> None:
        self.model, self.cache_name = model, cache_kwarg(model)

    def prefill(self, ids: Tensor, mask: Tensor, pos: Tensor, group_size: int, max_new_tokens: int) -> Tensor:
        out = _forward(self.model, input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        self.cache = _cache_of(out)
        if group_size > 1:
            self.cache.batch_repeat_interleave(group_size)
        b, n = ids.shape[0] * group_size, ids.shape[1]
        self.attn = torch.ones(b, n + max_new_tokens, dtype=mask.dtype, device=ids.device)
        self.attn[:, :n] = mask.repeat_interleave(group_size, 0)
        self.next_pos, self.length = pos[:, -1:].repeat_interleave(group_size, 0) + 1, n
        return out.logits[:, -1].float().repeat_interleave(group_size, 0)

    def step(self, tokens: Tensor, t: int) -> Tensor:
        out = self.model(input_ids=tokens[:, None], attention_mask=self.attn[:, : self.length + t + 1],
                         position_ids=self.next_pos + t, use_cache=True, **{self.cache_name: self.cache})
        self.cache = _cache_of(out)
        return out.logits[:, -1].float()


def _decode(model, prompt_ids, prompt_mask, max_new_tokens, eos_token_ids, pad_token_id, temperature, top_p,
            group_size, greedy, generator, fast, token_temperature=None, shard=None):
    """Steps 1-3 and 5; returns ids [B, T], keep [B, T], tempered logits [B, T, V], finished [B]."""
    device = prompt_ids.device
    eos = torch.tensor(sorted(set(eos_token_ids)), device=device)
    use_fast = supports_fast_decode(model) if fast is None else fast
    if use_fast and not supports_fast_decode(model):
        raise ValueError(f"fast decoding supports {list(FAST_ARCHITECTURES)} in eval mode, "
                         f"not {type(model).__name__}")
    stepper = FastDecoder(model) if use_fast else _HFStepper(model)
    logits = stepper.prefill(prompt_ids, prompt_mask, position_ids_from_mask(prompt_mask), group_size,
                             max_new_tokens)  # 1.
    b = logits.shape[0]
    ids = torch.full((b, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    keep = torch.zeros(b, max_new_tokens, dtype=torch.bool, device=device)
    scaled_all = torch.empty(b, max_new_tokens, logits.shape[-1], device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    first, total = (0, b) if shard is None else shard
    if not 0 <= first <= total - b:
        raise ValueError(f"shard {shard} does not hold the {b} rows of this rollout")
    u = None if greedy else torch.rand(total, max_new_tokens, 1, device=device, generator=generator)  # one draw
    u = u if u is None or shard is None else u[first : first + b]
    steps = 0
    for t in range(max_new_tokens):  # 2. decode
        scaled = scaled_all[:, t]
        scaled.copy_(logits) if temperature == 1.0 else torch.div(logits, temperature, out=scaled)
        draw = scaled if token_temperature is None or u is None else scaled / token_temperature(scaled)[:, None]
        tok = _choose(draw, top_p, None if u is None else u[:, t])  # 3.
        keep[:, t] = ~done
        ids[:, t] = torch.where(done, pad_token_id, tok)
        done = done | torch.isin(tok, eos)  # 5.
        steps = t + 1
        if t + 1 == max_new_tokens or bool(done.all()):
            break
        logits = stepper.step(ids[:, t], t)
    return ids[:, :steps], keep[:, :steps], scaled_all[:, :steps], done
