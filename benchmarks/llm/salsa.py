"""SALSA on the tiny arithmetic LM: GRPO with a KL penalty to the SFT start vs to a soup of two SFT models.

1. Base: one tiny Llama (``build_tiny_lm``, seed 0, ``--base-steps`` SFT steps, held-out problems excluded).
2. Ingredients: two copies of the base, each SFT-trained ``--sft-steps`` more steps on its own data seed (1, 2):
   two independently fine-tuned SFT models of one basin. Soup = their uniform weight average (``weight_soup``).
3. RL per seed: GRPO from SFT model A (``LLMTrainer``), ``--steps`` steps, with the **same KL coefficient**
   ``--kl-coef`` in both arms; only the KL reference differs: A itself (``reference: initial``) or the soup
   (``reference: soup:A,B``).
4. Measure: mean training reward over the last 10 steps, the final step's KL estimate to the arm's reference
   (k3), greedy exact-match accuracy on ``--eval-prompts`` held-out problems.

    python benchmarks/llm/salsa.py --seeds 0 1 2 --out benchmarks/llm/salsa.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from gendiff.bench import cpu_name  # noqa: E402
from gendiff.io import beside
from gendiff.llm.evaluation import evaluate  # noqa: E402
from gendiff.llm.soup import weight_soup  # noqa: E402
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_tiny_lm, sft  # noqa: E402
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer  # noqa: E402


def greedy(model, tok, held: list[str]) -> float:
    return evaluate(model, tok, held, arithmetic_reward, n_samples=1, ks=(1,), seed=0).greedy_accuracy


def ingredients(work: Path, a: argparse.Namespace, held: list[str]) -> list[Path]:
    """Steps 1-2, cached under ``work``."""
    task = ArithmeticTask()
    paths = [work / f"sft_seed{s}" for s in (1, 2)]
    if all((p / "config.json").is_file() for p in paths):
        return paths
    base = build_tiny_lm(task, seed=0, sft_steps=a.base_steps, exclude=held)
    for seed, path in zip((1, 2), paths, strict=True):
        model = copy.deepcopy(base.model)
        sft(model, base.tokenizer, task, a.sft_steps, seed=seed, exclude=held)
        model.save_pretrained(path)
        base.tokenizer.save_pretrained(path)
    return paths


def run_arm(path_a: Path, path_b: Path, reference: str, seed: int, a, held: list[str]) -> dict:
    """Step 3-4 for one arm and seed."""
    task = ArithmeticTask()
    model, tok = AutoModelForCausalLM.from_pretrained(path_a).eval(), AutoTokenizer.from_pretrained(path_a)
    spec = "initial" if reference == "sft" else f"soup:{path_a},{path_b}"
    cfg = LLMTrainConfig(steps=a.steps, group_size=a.group_size, prompts_per_step=a.prompts_per_step,
                         max_new_tokens=8, lr=a.lr, kl_coef=a.kl_coef, reference=spec, seed=seed)
    t0 = time.perf_counter()
    trainer = LLMTrainer(model, tok, arithmetic_reward, task.prompt_source(held), cfg)
    logs = trainer.train(progress=False)
    return {"reference": reference, "seed": seed, "reward_last10": statistics.mean(m["reward/mean"] for m in logs[-10:]),
            "kl_final": logs[-1]["kl/k3"], "kl_first": logs[0]["kl/k3"], "greedy": greedy(trainer.model, tok, held),
            "entropy_final": logs[-1]["actor/entropy"], "seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--base-steps", type=int, default=150)
    p.add_argument("--sft-steps", type=int, default=150)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--kl-coef", type=float, default=0.1)
    p.add_argument("--eval-prompts", type=int, default=200)
    p.add_argument("--work", default="runs/llm/salsa")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    held = ArithmeticTask().heldout(a.eval_prompts)
    path_a, path_b = ingredients(Path(a.work), a, held)
    tok = AutoTokenizer.from_pretrained(path_a)
    starts = {name: greedy(m, tok, held) for name, m in (
        ("sft_a", AutoModelForCausalLM.from_pretrained(path_a).eval()),
        ("sft_b", AutoModelForCausalLM.from_pretrained(path_b).eval()), ("soup", weight_soup([path_a, path_b])))}
    print("start greedy", starts, flush=True)
    cells = []
    for seed in a.seeds:
        for reference in ("sft", "soup"):
            cells.append(run_arm(path_a, path_b, reference, seed, a, held))
            print(json.dumps(cells[-1]), flush=True)
    out = Path(a.out)
    summary = {"settings": vars(a), "kl": "equal KL coefficient (kl_coef) in both arms, k3 estimator",
               "start_greedy": starts, "cells": cells, "cpu": cpu_name(), "python": platform.python_version(),
               "torch": torch.__version__, "seconds": time.perf_counter() - t_all}
    out.write_text(json.dumps(summary, indent=2))
    beside(out, ".md").write_text(table(summary))
    print(table(summary))


def table(s: dict) -> str:
    st = s["settings"]
    lines = [f"# SALSA: KL to the SFT start vs to a soup of two SFT models (GRPO, kl_coef {st['kl_coef']} in both arms)",
             "", f"Start greedy accuracy on {st['eval_prompts']} held-out problems: SFT A {s['start_greedy']['sft_a']:.3f}, "
             f"SFT B {s['start_greedy']['sft_b']:.3f}, soup {s['start_greedy']['soup']:.3f}. GRPO {st['steps']} steps "
             f"from SFT A, {st['prompts_per_step']} prompts x {st['group_size']}, lr {st['lr']}; seeds {st['seeds']}.",
             "", "| reference | reward, last 10 steps (per seed) | greedy (per seed) | KL k3 first -> last step (mean) |",
             "|---|---|---|---|"]
    for ref in ("sft", "soup"):
        c = [x for x in s["cells"] if x["reference"] == ref]
        rw, gr = [x["reward_last10"] for x in c], [x["greedy"] for x in c]
        lines.append(f"| {ref} | {statistics.mean(rw):.3f} [{', '.join(f'{v:.3f}' for v in rw)}] | "
                     f"{statistics.mean(gr):.3f} [{', '.join(f'{v:.3f}' for v in gr)}] | "
                     f"{statistics.mean(x['kl_first'] for x in c):.4f} -> {statistics.mean(x['kl_final'] for x in c):.4f} |")
    diffs = [x["reward_last10"] - y["reward_last10"] for x, y in zip(
        [x for x in s["cells"] if x["reference"] == "soup"], [x for x in s["cells"] if x["reference"] == "sft"],
        strict=True)]
    lines += ["", f"Soup minus SFT reward per seed: {', '.join(f'{d:+.3f}' for d in diffs)}. "
              f"Total time {s['seconds'] / 60:.1f} min on {s['cpu']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
