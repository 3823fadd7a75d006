"""``gendiff llm layer-entropy``: the per-layer internal-policy entropy profile of a saved causal LM (BuPO Sec. 4).

1. Sequences: lines of ``--texts`` (``prompt<TAB>completion``, or a whole line as the prompt), or ``--n-texts``
   arithmetic problems with their answers; each encodes as prompt ids + completion ids (no special tokens added
   to the completion), left-padded in batches.
2. One forward per batch; H(pi^l_T) at every position that predicts a next token of the sequence, for l = 1..L
   (``gendiff.llm.layer_policies.layer_entropy_profile``).
3. Per layer: the mean over all those positions, and over the positions that predict completion tokens.
   Written as OUT.json and OUT.md (a table, one row per layer).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gendiff.io import atomic_write_text, refuse_existing

from .layer_policies import find_layer_parts, layer_entropy_profile
from .sampling import position_ids_from_mask


@dataclass
class LayerEntropyConfig:
    """``gendiff llm layer-entropy``: which model, which sequences, where the profile goes."""

    model: str | None = field(default=None, metadata={"help": "save_pretrained folder of a causal LM; required"})
    out: str | None = field(default=None, metadata={"help": "output stem: OUT.json and OUT.md (unset: print only)"})
    texts: str | None = field(default=None, metadata={"help": "text file, one 'prompt<TAB>completion' per line (unset: "
                                                              "arithmetic problems with their answers)"})
    n_texts: int = 64  # arithmetic sequences when --texts is unset
    batch_size: int = 16  # sequences per forward
    temperature: float = 1.0  # T of pi^l_T = softmax(z_l / T)
    seed: int = 0  # seeds the arithmetic problems
    overwrite: bool = False  # replace existing OUT.json / OUT.md


def _pairs(cfg: LayerEntropyConfig) -> list[tuple[str, str]]:
    if cfg.texts:
        lines = [ln for ln in Path(cfg.texts).read_text().splitlines() if ln.strip()]
        if not lines:
            raise ValueError(f"--texts {cfg.texts} holds no non-empty line")
        return [tuple(ln.split("\t", 1)) if "\t" in ln else (ln, "") for ln in lines]
    from .tasks import ArithmeticTask

    prompts, answers = ArithmeticTask().sample(cfg.n_texts, random.Random(cfg.seed))
    return list(zip(prompts, answers, strict=True))


def layer_entropy_table(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16,
                        temperature: float = 1.0) -> dict:
    """Steps 1-3 for ``model`` on (prompt, completion) ``pairs``: {"layers": [{layer, entropy, completion_entropy,
    ...}], "tokens", "completion_tokens"}; completion_entropy is None when no pair has a completion."""
    n_layers = find_layer_parts(model).num_layers
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sums = torch.zeros(n_layers, 2, dtype=torch.float64)
    counts = torch.zeros(2, dtype=torch.float64)
    dev = next(model.parameters()).device
    for s in range(0, len(pairs), batch_size):
        rows, spans = [], []
        for p, c in pairs[s : s + batch_size]:
            p_ids = tokenizer(p)["input_ids"]
            c_ids = tokenizer(c, add_special_tokens=False)["input_ids"] if c else []
            rows.append(p_ids + c_ids)
            spans.append((len(p_ids), len(c_ids)))
        width = max(map(len, rows))
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=dev)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=dev)
        every = torch.zeros(len(rows), width, dtype=torch.bool)
        comp = torch.zeros_like(every)
        for i, (lp, lc) in enumerate(spans):  # position j predicts token j + 1
            every[i, width - lp - lc : width - 1] = True
            comp[i, width - lc - 1 : width - 1] = lc > 0  # none without a completion
        prof = layer_entropy_profile(model, ids, mask, temperature, position_ids=position_ids_from_mask(mask))
        ent = prof.entropy.double().cpu()  # [L, B, S]
        for k, m in enumerate((every, comp)):
            sums[:, k] += (ent * m).sum((1, 2))
            counts[k] += m.sum()
    means = sums / counts.clamp_min(1)
    layers = [{"layer": i + 1, "entropy": float(means[i, 0]),
               "completion_entropy": float(means[i, 1]) if counts[1] else None} for i in range(n_layers)]
    return {"layers": layers, "tokens": int(counts[0]), "completion_tokens": int(counts[1])}


def markdown_table(res: dict) -> str:
    """The profile as a markdown table (one row per layer)."""
    lines = ["layer | entropy (all positions) | entropy (completion positions)", "---|---|---"]
    for r in res["layers"]:
        c = "-" if r["completion_entropy"] is None else f"{r['completion_entropy']:.4f}"
        lines.append(f"{r['layer']} | {r['entropy']:.4f} | {c}")
    return "\n".join(lines) + "\n"


def run_layer_entropy(cfg: LayerEntropyConfig) -> dict:
    """``gendiff llm layer-entropy``: load ``cfg.model``, measure the profile, print it, write OUT.json / OUT.md."""
    from .run import _load_lm

    if not cfg.model:
        raise ValueError("gendiff llm layer-entropy needs --model DIR (a save_pretrained folder)")
    if cfg.n_texts < 1 or cfg.batch_size < 1 or not cfg.temperature > 0:
        raise ValueError(f"--n-texts and --batch-size must be >= 1 and --temperature > 0, got {cfg.n_texts}, "
                         f"{cfg.batch_size}, {cfg.temperature}")
    outs = [] if not cfg.out else [Path(cfg.out).with_suffix(".json"), Path(cfg.out).with_suffix(".md")]
    refuse_existing(outs, cfg.overwrite)
    pairs = _pairs(cfg)
    model, tokenizer = _load_lm(cfg.model, "--model")
    model.eval()
    res = {"model": cfg.model, "class": type(model).__name__, "sequences": len(pairs), "temperature": cfg.temperature,
           **layer_entropy_table(model, tokenizer, pairs, cfg.batch_size, cfg.temperature)}
    table = markdown_table(res)
    print(table, end="")
    if outs:
        atomic_write_text(outs[0], json.dumps(res, indent=2))
        atomic_write_text(outs[1], f"# Internal layer policy entropy: {res['class']} ({cfg.model})\n\n{table}")
    return res
