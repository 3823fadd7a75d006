"""SALSA at an equal KL budget: GRPO with its KL to the SFT start vs to a soup of two SFT models, each arm with its
own KL coefficient so that both end at the same KL(policy || its reference).

``salsa.py`` held the KL *coefficient* equal (0.1 in both arms); the arms then ended at different KLs to their
references (k3 0.026 for the SFT reference, 0.057 for the soup), so its reward comparison was not at an equal KL
budget. Here:

1. Models: the same base, ingredients and soup as ``salsa.py`` (``salsa.ingredients``, cached in ``--work``).
2. Sweep (``--sweep``, tuning seeds only, e.g. 100): GRPO from SFT A for each reference and each coefficient of
   ``--grid``; per run the mean reward and the mean k3 KL estimate to the arm's reference over the last ``--tail``
   steps, and held-out greedy accuracy. This is the reward-vs-KL curve of each reference.
3. Matched runs (final seeds 0, 1, 2): the SFT arm at ``--kl-sft`` and the soup arm at ``--kl-soup``, coefficients
   read off the seed-100 sweep so that both arms' final KLs agree; the table reports both KLs, so the match is
   checked on the final seeds rather than assumed.

    python benchmarks/llm/salsa_kl.py --sweep --seeds 100 --out benchmarks/llm/salsa_kl_sweep.json
    python benchmarks/llm/salsa_kl.py --seeds 0 1 2 --kl-sft A --kl-soup B --out benchmarks/llm/salsa_kl.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from salsa import greedy, ingredients  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from gendiff import stats  # noqa: E402
from gendiff.bench import cpu_name  # noqa: E402
from gendiff.io import beside
from gendiff.llm.soup import weight_soup  # noqa: E402
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward  # noqa: E402
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer  # noqa: E402


def run_arm(paths: list[Path], reference: str, kl_coef: float, seed: int, a, held: list[str]) -> dict:
    """Steps 2-3 for one reference, coefficient and seed (cached in ``--work`` by its settings)."""
    key = f"{reference}_kl{kl_coef}_s{seed}_steps{a.steps}_p{a.prompts_per_step}_g{a.group_size}_lr{a.lr}"
    cached = Path(a.work) / "kl_runs" / f"{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    path_a, path_b = paths
    model, tok = AutoModelForCausalLM.from_pretrained(path_a).eval(), AutoTokenizer.from_pretrained(path_a)
    spec = "initial" if reference == "sft" else f"soup:{path_a},{path_b}"
    cfg = LLMTrainConfig(steps=a.steps, group_size=a.group_size, prompts_per_step=a.prompts_per_step,
                         max_new_tokens=8, lr=a.lr, kl_coef=kl_coef, reference=spec, seed=seed)
    t0 = time.perf_counter()
    trainer = LLMTrainer(model, tok, arithmetic_reward, ArithmeticTask().prompt_source(held), cfg)
    logs = trainer.train(progress=False)
    last = logs[-a.tail :]
    res = {"reference": reference, "kl_coef": kl_coef, "seed": seed,
           "reward_tail": statistics.mean(m["reward/mean"] for m in last),
           "kl_tail": statistics.mean(m["kl/k3"] for m in last), "kl_first": logs[0]["kl/k3"],
           "greedy": greedy(trainer.model, tok, held), "kl_curve": [m["kl/k3"] for m in logs],
           "reward_curve": [m["reward/mean"] for m in logs], "seconds": time.perf_counter() - t0}
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(res))
    return res


def sweep_table(cells: list[dict]) -> list[str]:
    lines = ["| reference | kl_coef | KL k3 to its reference, last steps | reward, last steps | greedy |",
             "|---|---|---|---|---|"]
    for c in sorted(cells, key=lambda c: (c["reference"], c["kl_coef"], c["seed"])):
        lines.append(f"| {c['reference']} | {c['kl_coef']} | {c['kl_tail']:.4f} | {c['reward_tail']:.3f} | "
                     f"{c['greedy']:.3f} |")
    return lines


def matched_table(cells: list[dict], seeds: list[int]) -> list[str]:
    lines = ["| reference | kl_coef | KL k3 to its reference, last steps (per seed) | reward, last steps (per seed) | "
             "greedy (per seed) |", "|---|---|---|---|---|"]
    by = {}
    for ref in ("sft", "soup"):
        c = sorted((x for x in cells if x["reference"] == ref), key=lambda x: x["seed"])
        by[ref] = c

        def col(k: str, cs=c) -> str:
            v = [x[k] for x in cs]
            return f"{statistics.mean(v):.4f} [{', '.join(f'{x:.4f}' for x in v)}]" if k == "kl_tail" else \
                f"{statistics.mean(v):.3f} [{', '.join(f'{x:.3f}' for x in v)}]"

        lines.append(f"| {ref} | {c[0]['kl_coef']} | {col('kl_tail')} | {col('reward_tail')} | {col('greedy')} |")
    for k, name in (("reward_tail", "reward"), ("greedy", "greedy"), ("kl_tail", "KL")):
        d = [x[k] - y[k] for x, y in zip(by["soup"], by["sft"], strict=True)]
        lo, hi = stats.t_interval(d) if len(d) > 1 else (float("nan"), float("nan"))
        lines.append(f"\nSoup minus SFT {name} per seed: {', '.join(f'{v:+.4f}' for v in d)}; mean {statistics.mean(d):+.4f}, "
                     f"95 % t-interval [{lo:+.4f}, {hi:+.4f}].")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sweep", action="store_true", help="step 2: every reference x every --grid coefficient")
    p.add_argument("--grid", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0])
    p.add_argument("--kl-sft", type=float, default=0.1)
    p.add_argument("--kl-soup", type=float, default=0.1)
    p.add_argument("--base-steps", type=int, default=150)
    p.add_argument("--sft-steps", type=int, default=150)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--tail", type=int, default=10)
    p.add_argument("--eval-prompts", type=int, default=200)
    p.add_argument("--work", default="runs/llm/salsa")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    held = ArithmeticTask().heldout(a.eval_prompts)
    paths = ingredients(Path(a.work), a, held)
    tok = AutoTokenizer.from_pretrained(paths[0])
    starts = {"sft_a": greedy(AutoModelForCausalLM.from_pretrained(paths[0]).eval(), tok, held),
              "soup": greedy(weight_soup(paths), tok, held)}
    arms = [(ref, c) for ref in ("sft", "soup") for c in a.grid] if a.sweep else [("sft", a.kl_sft), ("soup", a.kl_soup)]
    cells = []
    for seed in a.seeds:
        for ref, coef in arms:
            cells.append(run_arm(paths, ref, coef, seed, a, held))
            c = cells[-1]
            print(f"{ref} kl_coef {coef} s{seed}: KL {c['kl_tail']:.4f} reward {c['reward_tail']:.3f} greedy "
                  f"{c['greedy']:.3f}", flush=True)
    res = {"settings": {k: v for k, v in vars(a).items() if k != "out"}, "start_greedy": starts, "cells": cells,
           "cpu": cpu_name(), "python": platform.python_version(), "torch": torch.__version__,
           "seconds": time.perf_counter() - t0}
    head = (f"GRPO {a.steps} steps from SFT A, {a.prompts_per_step} prompts x {a.group_size}, lr {a.lr}; KL and reward "
            f"are means over the last {a.tail} steps (k3 per token to the arm's own reference); greedy accuracy on "
            f"{a.eval_prompts} held-out problems (start: SFT A {starts['sft_a']:.3f}, soup {starts['soup']:.3f}); "
            f"seeds {a.seeds}.")
    title = "SALSA reward vs KL sweep (tuning)" if a.sweep else "SALSA at a matched KL budget"
    body = sweep_table(cells) if a.sweep else matched_table(cells, a.seeds)
    md = "\n".join([f"# {title}", "", head, "", *body, "", f"Total {res['seconds'] / 60:.1f} min on {res['cpu']}, "
                    "1 torch thread.", ""])
    a.out.write_text(json.dumps(res, indent=2, default=str))
    beside(a.out, ".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
