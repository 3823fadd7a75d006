"""OREO's value function V_phi(s): a separate small value model, the policy's transformer body plus a linear head.

Why separate (not a head on the policy's own hidden states): the paper trains a value model apart from the policy,
initialised from the same SFT model; with a shared body the value regression would move the policy's features
(and the policy loss the value's), and the test-time search needs V on states the policy never visits. The tiny
model makes the second forward cheap.

1. Body: a copy of the causal LM's base model (``lm.base_model``: ``LlamaModel``, ``Qwen2Model``, ``GPT2Model``), its
   last hidden state h [B, L, H] (after the final norm).
2. Head: V = w . h + b at every position, w and b zero at the start (V = 0 everywhere before training).
3. The value of state s_t = prompt + a_{<t} is read at s_t's last token (``state_values``).

Saved as the body's ``save_pretrained`` folder plus ``value_head.safetensors``; ``ValueModel.from_pretrained`` reads
it back (``AutoModel``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..sampling import Completions, position_ids_from_mask

HEAD_FILE = "value_head.safetensors"


class ValueModel(nn.Module):
    """V_phi: transformer body + linear head (see the module docstring).

    Args:
        body: a Hugging Face base model (no LM head) returning ``last_hidden_state``.
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_policy(cls, lm: nn.Module) -> ValueModel:
        """Step 1: a value model whose body is a copy of ``lm``'s base model (``lm`` is not changed)."""
        return cls(copy.deepcopy(lm.base_model))

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None) -> Tensor:
        """[B, L] values at every position of left-padded ``input_ids`` [B, L] (positions from the mask)."""
        pos = position_ids_from_mask(attention_mask) if position_ids is None else position_ids
        h = self.body(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos).last_hidden_state
        return self.head(h.float()).squeeze(-1)  # 2.

    def last_values(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """[N] V at the last position of each row (the state that ends there); rows are left-padded."""
        return self(input_ids, attention_mask)[:, -1]

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.body.save_pretrained(path)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, str(path / HEAD_FILE))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ValueModel:
        from transformers import AutoModel

        path = Path(path)
        if not (path / "config.json").is_file() or not (path / HEAD_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a saved OREO value model (needs config.json and {HEAD_FILE})")
        model = cls(AutoModel.from_pretrained(path, use_safetensors=True))
        model.head.load_state_dict(load_file(str(path / HEAD_FILE)))
        return model.eval()


def state_values(value_model: ValueModel, batch: Completions) -> Tensor:
    """Step 3: [B, T + 1] V(s_0) .. V(s_T) for completions of T tokens: V(s_t) is read at the prompt's last token
    plus t completion tokens (column T_b + 1 onwards of a row with T_b valid tokens is padding)."""
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
    mask = torch.cat([batch.prompt_mask, torch.ones_like(batch.completion_ids)], 1)
    values = value_model(ids, mask)
    return values[:, batch.prompt_ids.shape[1] - 1 :]
