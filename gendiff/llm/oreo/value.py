"""OREO's value function V_phi(s): a separate value model, PPO-max's critic (``gendiff.llm.ppo_max.ValueModel``: a copy
of the policy's transformer body plus a zero-initialised linear head on its last hidden state).

Why separate (not a head on the policy's own hidden states): the paper trains a value model apart from the policy,
initialised from the same SFT model; with a shared body the value regression would move the policy's features
(and the policy loss the value's), and the test-time search needs V on states the policy never visits. The tiny
model makes the second forward cheap.

1. ``state_values``: V(s_0) .. V(s_T) of teacher-forced completions, V(s_t) read at the last token of
   s_t = prompt + a_{<t} (s_T: after the last completion token, EOS included).
2. ``last_values``: the search's value function, V at each row's last token.
3. ``save_value_model`` / ``load_value_model``: the body's ``save_pretrained`` folder plus ``value_head.safetensors``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..ppo_max import ValueModel
from ..sampling import Completions

HEAD_FILE = "value_head.safetensors"


def state_values(value_model: ValueModel, batch: Completions) -> Tensor:
    """Step 1: [B, T + 1] V(s_0) .. V(s_T) for completions of T tokens (columns after a row's T_b + 1 are padding)."""
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
    mask = torch.cat([batch.prompt_mask, torch.ones_like(batch.completion_ids)], 1)
    return value_model.position_values(ids, mask)[:, batch.prompt_ids.shape[1] - 1 :]


def last_values(value_model: ValueModel) -> Callable[[Tensor, Tensor], Tensor]:
    """Step 2: ``fn(input_ids [N, L], attention_mask [N, L]) -> [N]`` V of the state ending at each row's last token."""
    return lambda ids, mask: value_model.position_values(ids, mask)[:, -1]


def save_value_model(value_model: ValueModel, path: str | Path) -> None:
    """Step 3: write the body (``save_pretrained``) and the head (safetensors) to ``path``."""
    path = Path(path)
    value_model.backbone.save_pretrained(path)
    head = {k: v.detach().cpu().contiguous() for k, v in value_model.head.state_dict().items()}
    save_file(head, str(path / HEAD_FILE))


def load_value_model(path: str | Path) -> ValueModel:
    """Step 3: the value model ``save_value_model`` wrote (eval mode); FileNotFoundError for another folder."""
    from transformers import AutoModel

    path = Path(path)
    if not (path / "config.json").is_file() or not (path / HEAD_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a saved OREO value model (needs config.json and {HEAD_FILE})")
    body = AutoModel.from_pretrained(path, use_safetensors=True)
    model = ValueModel(body, int(body.config.hidden_size))
    model.head.load_state_dict(load_file(str(path / HEAD_FILE)))
    return model.eval()
