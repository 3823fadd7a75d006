"""KV-cached decoding for Llama-family models without the per-module overhead of the HF forward.

For small models a decode step is dominated by Python and dispatch overhead (~60 module calls, ~300
small ops), not by arithmetic. ``FastDecoder`` reads the weights of a ``LlamaForCausalLM`` (also
``MistralForCausalLM`` without sliding window, ``Qwen2ForCausalLM``) and runs the same computation with
fewer ops: q/k/v and gate/up projections fused into one matmul each, one RMSNorm op, rotary tables for
all decode positions computed once by the model's own ``rotary_emb`` (so every RoPE scaling type is
honoured), a preallocated KV cache written in place (no ``torch.cat`` growth), grouped-query attention
through ``scaled_dot_product_attention(enable_gqa=...)``, and no attention mask when nothing is padded.

Per layer (the HF Llama decoder layer, in order):
1. h = RMSNorm(x); q, k, v = split(W_qkv h); q, k <- RoPE(q, k) (RMSNorm gains are folded into the
   following weights: W diag(g) h = W (g * h)).
2. Write k, v into the cache at the current positions; attend over the cache (causal, padding masked).
3. x <- x + W_o attn; h = RMSNorm(x); x <- x + W_down(act(W_gate h) * W_up h).
Then logits = W_lm RMSNorm(x). The sampler checks ``supports_fast_decode`` and otherwise uses the
generic HF path; the trainer's ``rollout/logp_mismatch`` metric compares both against the training
forward at every step (~1e-6 in fp32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FAST_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")


def supports_fast_decode(model) -> bool:
    """True for the plain Llama-family architectures this decoder reproduces exactly."""
    if type(model).__name__ not in FAST_ARCHITECTURES or model.training:
        return False
    cfg = model.config
    if getattr(cfg, "sliding_window", None) is not None and getattr(cfg, "use_sliding_window", True):
        return False
    inner = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    return inner is not None and all(hasattr(inner, n) for n in needed) and hasattr(model, "lm_head")


def _rope(x: Tensor, cos: Tensor, sin_signed: Tensor) -> Tensor:
    """RoPE, x cos + rotate_half(x) sin, with rotate_half(x) = roll(x, d / 2) * [-1..-1, 1..1] and the sign
    folded into ``sin_signed``."""
    return torch.addcmul(x * cos, torch.roll(x, x.shape[-1] // 2, dims=-1), sin_signed)


def _signed(sin: Tensor) -> Tensor:
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


def _cat_bias(*linears) -> Tensor | None:
    biases = [lin.bias for lin in linears]
    if all(b is None for b in biases):
        return None
    return torch.cat([b if b is not None else torch.zeros(lin.out_features, dtype=lin.weight.dtype,
                                                          device=lin.weight.device)
                      for b, lin in zip(biases, linears, strict=True)])


class FastDecoder:
    """Prefill + one-token steps for a Llama-family ``model`` (weights read at construction; build a new
    decoder after every parameter update), and a differentiable full-sequence forward (``logits``).

    Args:
        model: a model for which ``supports_fast_decode`` is True.
        grad: build the fused weights with autograd (for ``logits`` in training); gradients reach the
            model's own parameters through the concatenations.
    """

    def __init__(self, model, grad: bool = False) -> None:
        with torch.set_grad_enabled(grad):
            self._build(model)

    def _build(self, model) -> None:
        inner, cfg = model.model, model.config
        self.embed, self.pad_idx = inner.embed_tokens.weight, inner.embed_tokens.padding_idx
        self.rotary = inner.rotary_emb
        attn0 = inner.layers[0].self_attn
        self.head_dim = attn0.head_dim
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.scaling = attn0.scaling
        self.layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            ln1, ln2 = layer.input_layernorm, layer.post_attention_layernorm  # RMSNorm gains folded into W
            self.layers.append((
                ln1.variance_epsilon, torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]) * ln1.weight,
                _cat_bias(a.q_proj, a.k_proj, a.v_proj), a.o_proj, ln2.variance_epsilon,
                torch.cat([m.gate_proj.weight, m.up_proj.weight]) * ln2.weight, _cat_bias(m.gate_proj, m.up_proj),
                m.down_proj, m.act_fn,
            ))
        self.norm_eps, self.lm_w = inner.norm.variance_epsilon, model.lm_head.weight * inner.norm.weight
        self.lm_b = model.lm_head.bias
        self.cache: list[tuple[Tensor, Tensor]] = []
        self.key_mask: Tensor | None = None
        self.length = 0

    @staticmethod
    def _norm(x: Tensor, eps: float) -> Tensor:
        """RMSNorm without its gain (folded into the next weight), in float32 as in HF."""
        return F.rms_norm(x.float(), (x.shape[-1],), None, eps).to(x.dtype)

    def _layers(self, x: Tensor, cos: Tensor, sin: Tensor, start: int, mask: Tensor | None,
                causal: bool = False) -> Tensor:
        b, n, _ = x.shape
        d, nh, nkv = self.head_dim, self.n_heads, self.n_kv
        caches = self.cache or [None] * len(self.layers)  # no cache: attend within x (training forward)
        for (eps1, w_qkv, b_qkv, o_proj, eps2, w_gu, b_gu, down, act), cache in zip(self.layers, caches,
                                                                                     strict=True):
            qkv = F.linear(self._norm(x, eps1), w_qkv, b_qkv).view(b, n, nh + 2 * nkv, d).transpose(1, 2)  # 1.
            qk = _rope(qkv[:, : nh + nkv], cos, sin)
            q, k, v = qk[:, :nh], qk[:, nh:], qkv[:, nh + nkv :]
            if cache is not None:  # 2.
                kc, vc = cache
                kc[:, :, start : start + n], vc[:, :, start : start + n] = k, v
                k, v = kc[:, :, : start + n], vc[:, :, : start + n]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling, is_causal=causal,
                                                 enable_gqa=nkv != nh)
            x = x + F.linear(out.transpose(1, 2).reshape(b, n, nh * d), o_proj.weight, o_proj.bias)  # 3.
            gate, up = F.linear(self._norm(x, eps2), w_gu, b_gu).chunk(2, dim=-1)
            x = x + F.linear(act(gate) * up, down.weight, down.bias)
        return x

    def _logits(self, x: Tensor) -> Tensor:
        return F.linear(self._norm(x[:, -1], self.norm_eps), self.lm_w, self.lm_b).float()

    @staticmethod
    def _mask(valid: Tensor) -> Tensor:
        """[P, 1, L, L] causal and padding mask; a padded query row attends to itself (never all False)."""
        n = valid.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=valid.device).tril()
        eye = torch.eye(n, dtype=torch.bool, device=valid.device)
        return ((causal & valid[:, None, :]) | eye)[:, None]

    def logits(self, ids: Tensor, mask: Tensor, pos: Tensor, keep: int) -> Tensor:
        """Differentiable forward of the [B, L] batch; returns the [B, keep, V] logits of the last ``keep``
        positions (like ``logits_to_keep``). Build the decoder with ``grad=True`` for training."""
        self.cache = []
        x = F.embedding(ids, self.embed, self.pad_idx)
        cos, sin = self.rotary(x, pos)
        valid = mask.bool()
        no_pad = bool(valid.all())  # then plain causal attention (the fastest SDPA kernel)
        x = self._layers(x, cos[:, None], _signed(sin)[:, None], 0, None if no_pad else self._mask(valid), no_pad)
        return F.linear(self._norm(x[:, -keep:], self.norm_eps), self.lm_w, self.lm_b)

    @torch.no_grad()
    def prefill(self, ids: Tensor, mask: Tensor, pos: Tensor, group_size: int, max_new_tokens: int) -> Tensor:
        """Run the [P, L] prompts, allocate the [P * G, kv_heads, L + max_new_tokens, d] caches and return
        the [P * G, V] next-token logits."""
        p, n = ids.shape
        x = F.embedding(ids, self.embed, self.pad_idx)
        valid = mask.bool()
        cos, sin = self.rotary(x, pos)
        sin = _signed(sin)
        total = n + max_new_tokens
        self.cache = [(x.new_empty(p, self.n_kv, total, self.head_dim), x.new_empty(p, self.n_kv, total,
                                                                                    self.head_dim))
                      for _ in self.layers]
        x = self._layers(x, cos[:, None], sin[:, None], 0, self._mask(valid))
        logits = self._logits(x).repeat_interleave(group_size, 0)
        self.cache = [(k.repeat_interleave(group_size, 0), v.repeat_interleave(group_size, 0))
                      for k, v in self.cache]
        b = p * group_size
        self.key_mask = None
        if not bool(valid.all()):
            self.key_mask = torch.ones(b, 1, 1, total, dtype=torch.bool, device=ids.device)
            self.key_mask[:, 0, 0, :n] = valid.repeat_interleave(group_size, 0)
        steps = torch.arange(max_new_tokens, device=ids.device)
        self._cos, sin = self.rotary(x, (pos[:, -1:] + 1 + steps).repeat_interleave(group_size, 0))
        self._sin = _signed(sin)
        self.length = n
        return logits

    @torch.no_grad()
    def step(self, tokens: Tensor, t: int) -> Tensor:
        """Feed the [B] tokens chosen at decode step ``t``; return the [B, V] logits for step t + 1."""
        x = F.embedding(tokens[:, None], self.embed, self.pad_idx)
        cos, sin = self._cos[:, None, t : t + 1], self._sin[:, None, t : t + 1]
        end = self.length + t + 1
        mask = None if self.key_mask is None else self.key_mask[..., :end]
        return self._logits(self._layers(x, cos, sin, self.length + t, mask))
