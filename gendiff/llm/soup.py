"""SALSA's reference model (Chegini et al. 2024, "SALSA: Soup-based Alignment Learning for Stronger Adaptation in
RLHF", arXiv 2411.01798): a weight-space average ("model soup") of independently fine-tuned SFT models, used as
the KL reference of RL in place of the frozen initial policy.

(/work/shared/reference holds only the abstract; the steps follow it.)

1. Ingredients: two (or more) SFT models of one architecture, fine-tuned independently (e.g. from one base with
   different seeds / data orders), so that they lie in one linearly connected basin.
2. Soup: theta_soup = sum_i w_i theta_i, w_i >= 0, sum_i w_i = 1 (the paper's default is the uniform average of
   two). Every floating-point parameter and buffer is averaged; integer buffers must agree.
3. Reference: the RL loss's KL term is taken to pi_soup instead of the SFT start (``LLMTrainConfig.reference =
   "soup:A,B"``; ``gendiff.llm.trainer`` builds the soup with ``weight_soup``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

SOUP_PREFIX = "soup:"


def parse_reference(spec: str) -> list[str] | None:
    """``"initial"`` -> None (the frozen initial policy); ``"soup:A,B[,...]"`` -> the ingredient folders.

    Raises:
        ValueError: another spelling, or a soup of fewer than two ingredients.
    """
    if spec == "initial":
        return None
    if not spec.startswith(SOUP_PREFIX):
        raise ValueError(f"reference must be 'initial' or 'soup:PATH_A,PATH_B', got {spec!r}")
    paths = [p.strip() for p in spec[len(SOUP_PREFIX):].split(",") if p.strip()]
    if len(paths) < 2:
        raise ValueError(f"a soup reference needs at least two comma-separated model folders, got {spec!r}")
    return paths


def _load(path: str | Path) -> nn.Module:
    from transformers import AutoModelForCausalLM

    from gendiff.io import loading

    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"soup ingredient {path} is not a save_pretrained folder (no config.json)")
    with loading(path, "soup ingredient"):
        return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)


def _vocab(path: str | Path) -> dict[str, int] | None:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path).get_vocab()
    except (OSError, ValueError):  # no tokenizer saved beside the weights: nothing to compare
        return None


def weight_soup(models: Sequence[nn.Module | str | Path], weights: Sequence[float] | None = None) -> nn.Module:
    """Steps 1-2: the weighted average of ``models``' weights, as a new model in eval mode.

    Args:
        models: >= 2 models of one architecture, or save_pretrained folders (loaded with safetensors; their
            tokenizers, when saved, must have one vocabulary).
        weights: one weight per model, >= 0, summing to 1 (default: uniform).

    Returns:
        A copy of the first model whose every floating-point tensor of the state dict is sum_i w_i theta_i
        (computed in float64, stored in the first model's dtypes), with gradients off.

    Raises:
        ValueError: fewer than two models, bad weights, other parameter names (architecture), other shapes or
            dtypes, differing integer buffers, or different tokenizers.
    """
    if len(models) < 2:
        raise ValueError(f"a soup needs at least two models, got {len(models)}")
    weights = [1.0 / len(models)] * len(models) if weights is None else [float(w) for w in weights]
    if len(weights) != len(models):
        raise ValueError(f"{len(weights)} weights for {len(models)} models")
    if any(not math.isfinite(w) or w < 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"soup weights must be finite, >= 0 and sum to 1, got {weights}")
    names = [str(m) if isinstance(m, (str, Path)) else f"model {i}" for i, m in enumerate(models)]
    paths = [m for m in models if isinstance(m, (str, Path))]
    vocabs = [v for v in map(_vocab, paths) if v is not None]
    if any(v != vocabs[0] for v in vocabs[1:]):
        raise ValueError(f"the soup's ingredients {[str(p) for p in paths]} have different tokenizers")
    loaded = [_load(m) if isinstance(m, (str, Path)) else m for m in models]
    states = [m.state_dict() for m in loaded]
    first = states[0]
    for name, sd in zip(names[1:], states[1:], strict=True):
        if set(sd) != set(first):
            extra, missing = sorted(set(sd) - set(first))[:5], sorted(set(first) - set(sd))[:5]
            raise ValueError(f"{name} has another architecture than {names[0]}: parameters only in it {extra}, "
                             f"missing from it {missing}")
        for key, t in sd.items():
            if t.shape != first[key].shape or t.dtype != first[key].dtype:
                raise ValueError(f"{name} does not match {names[0]} at {key}: {tuple(t.shape)} {t.dtype} vs "
                                 f"{tuple(first[key].shape)} {first[key].dtype}")
    soup_state = {}
    for key, t0 in first.items():
        if t0.is_floating_point():
            acc = sum(w * sd[key].detach().to(torch.float64) for w, sd in zip(weights, states, strict=True))
            soup_state[key] = acc.to(t0.dtype)
        else:
            if any(not torch.equal(sd[key], t0) for sd in states[1:]):
                raise ValueError(f"the ingredients differ at the non-float buffer {key}; it cannot be averaged")
            soup_state[key] = t0.clone()
    soup = copy.deepcopy(loaded[0])
    soup.load_state_dict(soup_state)
    return soup.eval().requires_grad_(False)
