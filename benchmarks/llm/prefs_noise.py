"""Label-noise robustness of preference losses on the tiny arithmetic LM: DPO vs ADPO pairwise vs ADPO listwise.

1. Start: one tiny Llama SFT-trained on 2+2-digit addition (``build_tiny_lm``, seed 0, the held-out problems
   excluded), built once and cached under ``--work``.
2. Data per seed s: ``--prompts`` training prompts (``random.Random(s)``, never held-out), ``--k`` samples each
   from the start policy at T = 1, ranked by the exact-match reward (``gendiff.llm.prefs.data``: pairs and lists,
   ties skipped); then ``add_label_noise(clean, f, seed=s)`` for each noise level f (nested flips: the pairs
   flipped at 20 % are among those flipped at 40 %; lists: reward order reversed).
3. Train: each method from a fresh copy of the start (``PrefTrainer``, the start is the frozen reference / anchor),
   ``--steps`` steps of ``--batch-size`` rows.
4. Measure: greedy exact-match accuracy on ``--eval-prompts`` held-out problems (``evaluate``), and the share of
   the training pairs whose implicit reward (log pi - log pi_ref) ranks the *truly* better completion first
   (``true_pair_acc``; tells whether a method learnt the noise).

Methods are ``loss[:anchor]`` (e.g. ``adpo_listwise:ema``); settings per loss with ``--beta`` (DPO), ``--alpha`` (CPL; its grid is --grid-beta), ``--tau``
(ADPO's tau_anc), ``--label-smoothing`` (pairwise ADPO's eps), ``--reward-temperature`` (listwise ADPO's tau_q).

    python benchmarks/llm/prefs_noise.py --seeds 100 --noise 0.2 --grid --out benchmarks/llm/prefs_noise_tuning.json
    python benchmarks/llm/prefs_noise.py --seeds 0 1 2 --out benchmarks/llm/prefs_noise.json
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from gendiff.bench import cpu_name  # noqa: E402
from gendiff.io import beside
from gendiff.llm.evaluation import evaluate, teacher_forced_batch  # noqa: E402
from gendiff.llm.prefs.data import add_label_noise, build_preferences, sample_candidates  # noqa: E402
from gendiff.llm.prefs.trainer import PrefTrainConfig, PrefTrainer  # noqa: E402
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_tiny_lm  # noqa: E402
from gendiff.llm.trainer import policy_logp_entropy  # noqa: E402


def start_policy(work: Path, sft_steps: int, held: list[str]):
    path = work / f"sft{sft_steps}"
    if not (path / "config.json").is_file():
        build_tiny_lm(ArithmeticTask(), seed=0, sft_steps=sft_steps, out_dir=path, exclude=held)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def greedy(model, tok, held: list[str]) -> float:
    return evaluate(model, tok, held, arithmetic_reward, n_samples=1, ks=(1,), seed=0).greedy_accuracy


@torch.no_grad()
def true_pair_accuracy(model, ref, tok, clean) -> float:
    """Share of the clean pairs where log pi/pi_ref of the truly better completion exceeds the worse one's."""
    hits = 0
    pairs = clean["pairs"]
    for start in range(0, len(pairs), 128):
        rows = pairs[start : start + 128]
        prompts = [p for p in rows["prompt"] for _ in range(2)]
        ids = [x for c, r in zip(rows["chosen_ids"], rows["rejected_ids"], strict=True) for x in (c, r)]
        batch = teacher_forced_batch(tok, prompts, ids)
        seq = [(policy_logp_entropy(m, batch, 1.0)[0] * batch.completion_mask).sum(-1).view(-1, 2) for m in (model, ref)]
        ratio = seq[0] - seq[1]
        hits += int((ratio[:, 0] > ratio[:, 1]).sum())
    return hits / len(pairs)


def loss_config(loss: str, a: argparse.Namespace, knob: float | None = None) -> dict:
    if loss == "dpo":
        return {"beta": knob if knob is not None else a.beta}
    if loss == "cpl":  # reference-free: --alpha (and the CPLConfig default lambda 0.5)
        return {"alpha": knob if knob is not None else a.alpha}
    if loss == "adpo":
        return {"tau_anc": knob if knob is not None else a.tau, "label_smoothing": a.label_smoothing}
    return {"tau_anc": knob if knob is not None else a.tau_listwise, "reward_temperature": a.reward_temperature}


def run_cell(start, ref, tok, data, clean, method: str, cfg_loss: dict, lr: float, seed: int, a, held) -> dict:
    loss, _, anchor = method.partition(":")
    model = copy.deepcopy(start)
    cfg = PrefTrainConfig(loss=loss, loss_config=cfg_loss, steps=a.steps, batch_size=a.batch_size, lr=lr,
                          anchor=anchor or "fixed", anchor_ema=a.anchor_ema, seed=seed)
    t0 = time.perf_counter()
    logs = PrefTrainer(model, tok, data, cfg, ref_model=ref).train(progress=False)
    return {"method": method, "loss_config": cfg_loss, "lr": lr, "seed": seed, "greedy": greedy(model, tok, held),
            "true_pair_acc": true_pair_accuracy(model, ref, tok, clean), "final_loss": logs[-1]["loss/preference"],
            "entropy": logs[-1]["actor/entropy"], "seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    p.add_argument("--methods", nargs="+", default=["dpo", "adpo", "adpo_listwise"])
    p.add_argument("--grid", action="store_true", help="tuning: every method over --grid-knobs x --grid-lr")
    p.add_argument("--grid-lr", type=float, nargs="+", default=[1e-4, 3e-4])
    p.add_argument("--grid-beta", type=float, nargs="+", default=[0.1, 0.5, 2.0])
    p.add_argument("--grid-tau", type=float, nargs="+", default=[0.5, 2.0, 10.0])
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=0.1, help="CPL's alpha (methods: cpl)")
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--tau-listwise", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--reward-temperature", type=float, default=0.25)
    p.add_argument("--anchor-ema", type=float, default=0.9)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--sft-steps", type=int, default=300)
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--eval-prompts", type=int, default=300)
    p.add_argument("--work", default="runs/llm/prefs_noise")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    task = ArithmeticTask()
    held = task.heldout(a.eval_prompts)
    start, tok = start_policy(Path(a.work), a.sft_steps, held)
    ref = copy.deepcopy(start).requires_grad_(False)
    start_acc = greedy(start, tok, held)
    print(f"start greedy {start_acc:.3f}", flush=True)
    cells, data_stats = [], []
    for seed in a.seeds:
        prompts = task.sample(a.prompts, random.Random(seed), exclude=held)[0]
        clean = build_preferences(sample_candidates(start, tok, prompts, arithmetic_reward, a.k, seed=seed), seed=seed)
        data_stats.append({"seed": seed, "pairs": len(clean["pairs"]), "lists": len(clean["lists"])})
        for f in a.noise:
            data = add_label_noise(clean, f, seed=seed)
            for method in a.methods:
                loss = method.partition(":")[0]
                knobs = ([None] if not a.grid else a.grid_beta if loss in ("dpo", "cpl") else a.grid_tau)
                for knob, lr in itertools.product(knobs, a.grid_lr if a.grid else [a.lr]):
                    cell = run_cell(start, ref, tok, data, clean, method, loss_config(loss, a, knob), lr, seed, a, held)
                    cell["noise"] = f
                    cells.append(cell)
                    print(json.dumps(cell), flush=True)
    result = {"machine": {"cpu": cpu_name(), "python": platform.python_version(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "node": platform.node()},
              "settings": {k: v for k, v in vars(a).items() if k != "out"}, "start_greedy": start_acc,
              "data": data_stats, "cells": cells, "minutes": (time.perf_counter() - t_all) / 60}
    out = Path(a.out)
    out.write_text(json.dumps(result, indent=2))
    beside(out, ".md").write_text(report(result))
    print(report(result))


def _ci(xs: list[float]) -> str:
    if len(xs) < 2:
        return ""
    m, s = statistics.mean(xs), statistics.stdev(xs)
    t = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78}.get(len(xs), 2.0)
    h = t * s / len(xs) ** 0.5
    return f" [{m - h:+.3f}, {m + h:+.3f}]"


def report(r: dict) -> str:
    s = r["settings"]
    lines = [f"# Preference losses under label noise ({'tuning grid' if s['grid'] else 'final table'})", "",
             f"Machine: {r['machine']['cpu']}, torch {r['machine']['torch']}, {r['machine']['threads']} thread; "
             f"{r['minutes']:.1f} min. Seeds {s['seeds']}; start: tiny Llama, SFT {s['sft_steps']} steps; data: "
             f"{s['prompts']} prompts x k = {s['k']} samples (pairs / lists per seed: "
             + ", ".join(f"{d['pairs']} / {d['lists']}" for d in r["data"]) + f"); {s['steps']} steps x batch "
             f"{s['batch_size']}; greedy accuracy on {s['eval_prompts']} held-out problems.", ""]
    groups: dict[tuple, list[dict]] = {}
    for c in r["cells"]:
        groups.setdefault((c["method"], json.dumps(c["loss_config"]), c["lr"]), []).append(c)
    noise = s["noise"]
    head = "method | settings | " + " | ".join(f"greedy @ {int(100 * f)} % flipped" for f in noise)
    lines += [head + " | true-pair acc @ " + " / ".join(f"{int(100 * f)}" for f in noise),
              "---|---|" + "---|" * len(noise) + "---",
              "start (SFT) | - | " + " | ".join(f"{r['start_greedy']:.3f}" for _ in noise) + " | -"]
    for (method, cfg, lr), cs in groups.items():
        row = [method, f"{cfg[1:-1]}, lr {lr:g}"]
        tpa = []
        for f in noise:
            xs = [c["greedy"] for c in sorted(cs, key=lambda c: c["seed"]) if c["noise"] == f]
            row.append(f"{statistics.mean(xs):.3f} [" + ", ".join(f"{x:.3f}" for x in xs) + "]" if xs else "-")
            ts = [c["true_pair_acc"] for c in cs if c["noise"] == f]
            tpa.append(f"{statistics.mean(ts):.2f}" if ts else "-")
        lines.append(" | ".join(row) + " | " + " / ".join(tpa))
    if len(noise) > 1 and len(s["seeds"]) > 1:
        lines += ["", f"Drop from {int(100 * noise[0])} % to {int(100 * noise[-1])} % flipped (per seed, mean, 95 % "
                  "t-interval):", ""]
        for (method, _, _), cs in groups.items():
            by = {(c["seed"], c["noise"]): c["greedy"] for c in cs}
            d = [by[(sd, noise[-1])] - by[(sd, noise[0])] for sd in s["seeds"]]
            lines.append(f"- {method}: {statistics.mean(d):+.3f}{_ci(d)} (" + ", ".join(f"{x:+.3f}" for x in d) + ")")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
