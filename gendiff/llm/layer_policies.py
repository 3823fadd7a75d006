"""Internal layer policies of a causal LM (Tan et al. 2025, "Bottom-up Policy Optimization", Sec. 3).

The residual stream after decoder layer l, h_l = h_0 + sum_{i <= l} (attn_i + ffn_i), is unembedded the way the
model unembeds its last layer (logit lens):

1. h_l [B, S, D]: the output of decoder layer l (l = 1..L), captured by a forward hook, *before* the final norm
   (Hugging Face's ``output_hidden_states`` returns the last entry already normed, so hooks are used instead).
2. z_l = lm_head(final_norm(h_l)) [B, S, V] (BuPO Eq. 3-4, pi^l = softmax(z_l / T)); for l = L this is the
   model's own logits, so pi^L is the model's policy.
3. H(pi^l) per token from ``gendiff.entropy.token_entropy`` (BuPO Eq. 5, the internal policy entropy).

Works for any model whose decoder-layer list, final norm and output embedding can be found by name
(Llama / Mistral / Qwen2 / Qwen3 / Gemma: ``model.layers`` + ``model.norm``; GPT-2 / GPT-J / Bloom: ``h`` + ``ln_f``;
GPT-NeoX / OPT / Phi: ``layers`` + ``final_layer_norm`` / ``final_layernorm``); anything else raises a
ValueError naming the model class. Gemma-2's ``final_logit_softcapping`` is applied; other logit
post-processing (e.g. Cohere's ``logit_scale``) is not, so check ``pi^L`` against the model's output there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gendiff.entropy import masked_mean, token_entropy

LAYER_LISTS = ("layers", "h", "blocks", "layer")  # attribute names of the decoder-layer ModuleList
FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f", "final_norm")


@dataclass
class LayerParts:
    """The pieces that turn a residual stream into logits.

    Attributes:
        layers: the L decoder layers, in order.
        final_norm: the norm before the unembedding (None for a model without one).
        lm_head: the output embedding (``model.get_output_embeddings()``).
        softcap: Gemma-2's final logit soft-cap (None: none).
    """

    layers: nn.ModuleList
    final_norm: nn.Module | None
    lm_head: nn.Module
    softcap: float | None = None

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def _containers(model: nn.Module) -> Iterator[nn.Module]:
    """Where decoder layers and the final norm may live: the decoder, the base model, its inner decoder."""
    seen: set[int] = set()
    cands = []
    if hasattr(model, "get_decoder"):
        try:
            cands.append(model.get_decoder())
        except (AttributeError, NotImplementedError):
            pass
    base = getattr(model, "base_model", None)
    cands += [base, getattr(base, "decoder", None), model]
    for c in cands:
        if isinstance(c, nn.Module) and id(c) not in seen:
            seen.add(id(c))
            yield c


def find_layer_parts(model: nn.Module) -> LayerParts:
    """Find the decoder layers, the final norm and the lm_head of a Hugging Face causal LM.

    Raises:
        ValueError: naming the model class when one of them cannot be found.
    """
    name = type(model).__name__
    lm_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if lm_head is None:
        raise ValueError(f"{name}: no output embedding (get_output_embeddings() is None); layer policies need one")
    n_cfg = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    layers = norm = None
    for c in _containers(model):
        for attr in LAYER_LISTS:
            cand = getattr(c, attr, None)
            if layers is None and isinstance(cand, nn.ModuleList) and len(cand) and (n_cfg in (None, len(cand))):
                layers = cand
        for attr in FINAL_NORMS:
            cand = getattr(c, attr, None)
            if norm is None and isinstance(cand, nn.Module) and not isinstance(cand, nn.ModuleList):
                norm = cand
        if layers is not None and norm is not None:
            break
    if layers is None:
        raise ValueError(f"{name}: cannot find its decoder layers (looked for a ModuleList named one of "
                         f"{list(LAYER_LISTS)} of config.num_hidden_layers = {n_cfg} entries)")
    if norm is None:
        raise ValueError(f"{name}: cannot find its final norm (looked for one of {list(FINAL_NORMS)}); the logit lens "
                         "needs the norm the model applies before lm_head")
    softcap = getattr(model.config, "final_logit_softcapping", None)
    return LayerParts(layers=layers, final_norm=norm, lm_head=lm_head, softcap=softcap)


def _check_layers(layers: Sequence[int], n: int) -> list[int]:
    out = [int(i) for i in layers]
    bad = [i for i in out if not 1 <= i <= n]
    if bad or not out:
        raise ValueError(f"layers must be in 1..{n} (the model has {n} decoder layers), got {list(layers)}")
    return out


@contextmanager
def capture_residuals(parts: LayerParts, layers: Sequence[int]) -> Iterator[dict[int, Tensor]]:
    """Forward hooks that store the residual stream h_l [B, S, D] after each decoder layer l in ``layers``
    (1-based) into the yielded dict while the block runs; removed on exit. Gradients flow through them."""
    store: dict[int, Tensor] = {}

    def hook(index: int):
        def fn(_module, _inputs, output):
            store[index] = output[0] if isinstance(output, tuple) else output
        return fn

    handles = [parts.layers[i - 1].register_forward_hook(hook(i)) for i in _check_layers(layers, parts.num_layers)]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def unembed(parts: LayerParts, hidden: Tensor) -> Tensor:
    """Step 2: z = lm_head(final_norm(h)) for a residual stream ``hidden`` [..., D] -> logits [..., V]."""
    z = parts.lm_head(parts.final_norm(hidden) if parts.final_norm is not None else hidden)
    if parts.softcap:
        z = torch.tanh(z / parts.softcap) * parts.softcap
    return z


def layer_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None,
                 layers: Sequence[int] | None = None, keep_last: int | None = None,
                 **forward_kwargs) -> dict[int, Tensor]:
    """Steps 1-2: the internal-policy logits z_l of the chosen layers from one forward of ``model``.

    Args:
        model: a Hugging Face causal LM.
        input_ids: [B, S] token ids.
        attention_mask: [B, S] (1 = token, 0 = padding) or None.
        layers: 1-based layer indices (default: all, 1..L).
        keep_last: unembed only the last ``keep_last`` positions (None: all S).
        **forward_kwargs: passed to ``model(...)`` (e.g. ``position_ids``).

    Returns:
        {l: [B, S', V] float logits}, S' = keep_last or S; gradients flow to the model's parameters.
    """
    parts = find_layer_parts(model)
    chosen = list(range(1, parts.num_layers + 1)) if layers is None else _check_layers(layers, parts.num_layers)
    with capture_residuals(parts, chosen) as store:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **forward_kwargs)
    out = {}
    for i in chosen:
        h = store[i] if keep_last is None else store[i][:, -keep_last:]
        out[i] = unembed(parts, h)
    return out


@dataclass
class LayerEntropyProfile:
    """Output of :func:`layer_entropy_profile`.

    Attributes:
        entropy: [L, B, S] token entropy H(pi^l) in nats (float32; float64 for a float64 model).
        mean: [L] masked mean over the valid tokens of each layer.
    """

    entropy: Tensor
    mean: Tensor


@torch.no_grad()
def layer_entropy_profile(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None,
                          temperature: float = 1.0, **forward_kwargs) -> LayerEntropyProfile:
    """Step 3 for every layer: H(softmax(z_l / T)) [L, B, S] and its masked mean per layer.

    One forward; each layer's [B, S, V] logits are reduced to entropies before the next layer's are made.
    """
    parts = find_layer_parts(model)
    all_layers = list(range(1, parts.num_layers + 1))
    with capture_residuals(parts, all_layers) as store:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **forward_kwargs)
    ent = torch.stack([token_entropy(unembed(parts, store[i]).float() / temperature) for i in all_layers])
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    mean = torch.stack([masked_mean(e, mask) for e in ent])
    return LayerEntropyProfile(entropy=ent, mean=mean)

