"""OREO on the tiny arithmetic LM: (a) value-guided search vs greedy decoding of the same OREO policy; (b) the OREO
policy alone vs DPO trained on pairs made from the same trajectories.

1. Start: one tiny Llama SFT-trained on 2+2-digit addition (``build_tiny_lm``, seed 0, the held-out problems
   excluded), built once and cached under ``--work``; it is the sampler, the frozen reference and the value body.
2. Data per seed s: ``--prompts`` training prompts (``random.Random(s)``, never held-out), ``--k`` samples each at
   T = 1, exact-match 0/1 reward (``make_trajectories``): the trajectories for OREO and, from the same samples, the
   r_i > r_j pairs for DPO.
3. Train from fresh copies of the start: OREO (``OREOTrainer``: ``--steps`` x ``--batch-size`` trajectories) and
   DPO (``PrefTrainer``: ``--steps`` x ``--dpo-batch-size`` pairs, i.e. the same number of sequences per step).
4. Measure on ``--eval-prompts`` held-out problems: greedy exact-match accuracy of start, OREO and DPO; the
   value-guided beam search (``value_guided_search``) of the OREO policy with the OREO value model for each
   ``--search B,E``; and the value model's pair accuracy: the share of held-out problems where V after the correct
   answer + EOS exceeds V after the answer off by one + EOS (0.5: the value cannot tell them apart).

    python benchmarks/llm/oreo.py --seeds 100 --grid --out benchmarks/llm/oreo_tuning.json
    python benchmarks/llm/oreo.py --seeds 0 1 2 --out benchmarks/llm/oreo.json
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
from gendiff.llm.oreo import (  # noqa: E402
    OREOTrainConfig,
    OREOTrainer,
    SearchConfig,
    last_values,
    make_trajectories,
    state_values,
    value_guided_search,
)
from gendiff.llm.prefs.trainer import PrefTrainConfig, PrefTrainer  # noqa: E402
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_tiny_lm, solve  # noqa: E402


def start_policy(work: Path, sft_steps: int, held: list[str]):
    path = work / f"sft{sft_steps}"
    if not (path / "config.json").is_file():
        build_tiny_lm(ArithmeticTask(), seed=0, sft_steps=sft_steps, out_dir=path, exclude=held)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def greedy(model, tok, held: list[str]) -> float:
    return evaluate(model, tok, held, arithmetic_reward, n_samples=1, ks=(1,), seed=0).greedy_accuracy


@torch.no_grad()
def value_pair_accuracy(value, tok, held: list[str]) -> float:
    """Share of held-out problems whose finished correct answer gets a higher V(s_T) than the answer off by one."""
    eos = tok.eos_token_id
    terminal = []
    for shift in (0, 1):
        ids = [tok(str(int(solve(q)) + shift), add_special_tokens=False)["input_ids"] + [eos] for q in held]
        batch = teacher_forced_batch(tok, held, ids)
        v = state_values(value.eval(), batch)
        terminal.append(v.gather(1, batch.completion_mask.sum(-1, keepdim=True)).squeeze(1))
    return float((terminal[0] > terminal[1]).float().mean())


def run_oreo(start, ref, tok, data, held, beta: float, lr: float, value_lr: float, seed: int, a) -> dict:
    model = copy.deepcopy(start)
    cfg = OREOTrainConfig(beta=beta, alpha=a.alpha, steps=a.steps, batch_size=a.batch_size, lr=lr, value_lr=value_lr,
                          seed=seed)
    t0 = time.perf_counter()
    trainer = OREOTrainer(model, tok, data, cfg, ref_model=ref)
    logs = trainer.train(progress=False)
    cell = {"method": "oreo", "beta": beta, "alpha": a.alpha, "lr": lr, "value_lr": value_lr, "seed": seed,
            "greedy": greedy(model, tok, held), "final_value_loss": logs[-1]["loss/value"],
            "final_policy_loss": logs[-1]["loss/policy"], "train_seconds": time.perf_counter() - t0, "search": {},
            "value_pair_acc": value_pair_accuracy(trainer.value_model, tok, held)}
    for be in a.search:
        b, e = (int(x) for x in be.split(","))
        t1 = time.perf_counter()
        found = value_guided_search(model, last_values(trainer.value_model), tok, held, SearchConfig(b, e))
        cell["search"][be] = sum(arithmetic_reward(held, found.texts)) / len(held)
        cell[f"search_seconds_{be}"] = time.perf_counter() - t1
    return cell


def run_dpo(start, ref, tok, data, held, seed: int, a) -> dict:
    model = copy.deepcopy(start)
    cfg = PrefTrainConfig(loss="dpo", loss_config={"beta": a.dpo_beta}, steps=a.steps, batch_size=a.dpo_batch_size,
                          lr=a.dpo_lr, seed=seed)
    t0 = time.perf_counter()
    PrefTrainer(model, tok, data, cfg, ref_model=ref).train(progress=False)
    return {"method": "dpo", "beta": a.dpo_beta, "lr": a.dpo_lr, "seed": seed, "greedy": greedy(model, tok, held),
            "train_seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--grid", action="store_true", help="tuning: OREO over --grid-beta x --grid-lr x --grid-value-lr")
    p.add_argument("--grid-beta", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--grid-lr", type=float, nargs="+", default=[3e-5, 1e-4])
    p.add_argument("--grid-value-lr", type=float, nargs="+", default=[1e-3])
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--value-lr", type=float, default=1e-3)
    p.add_argument("--search", nargs="+", default=["2,2", "4,4"], help="beam width,expansions pairs")
    p.add_argument("--dpo-beta", type=float, default=8.0, help="chosen on seed 100 in prefs_noise_tuning (0 % noise)")
    p.add_argument("--dpo-lr", type=float, default=3e-5)
    p.add_argument("--no-dpo", action="store_true")
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dpo-batch-size", type=int, default=16)
    p.add_argument("--sft-steps", type=int, default=300)
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--eval-prompts", type=int, default=200)
    p.add_argument("--work", default="runs/llm/oreo")
    p.add_argument("--out", required=True)
    p.add_argument("--report", action="store_true", help="only rewrite OUT.md from OUT.json")
    a = p.parse_args()
    if a.report:
        result = json.loads(Path(a.out).read_text())
        beside(Path(a.out), ".md").write_text(report(result))
        return
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
        data = make_trajectories(start, tok, prompts, arithmetic_reward, a.k, seed=seed)
        traj = data["trajectories"]
        data_stats.append({"seed": seed, "trajectories": len(traj), "correct": int(sum(traj["reward"])),
                           "pairs": len(data["pairs"]) if "pairs" in data else 0})
        grid = (itertools.product(a.grid_beta, a.grid_lr, a.grid_value_lr) if a.grid
                else [(a.beta, a.lr, a.value_lr)])
        for beta, lr, value_lr in grid:
            cells.append(run_oreo(start, ref, tok, data, held, beta, lr, value_lr, seed, a))
            print(json.dumps(cells[-1]), flush=True)
        if not a.no_dpo:
            cells.append(run_dpo(start, ref, tok, data, held, seed, a))
            print(json.dumps(cells[-1]), flush=True)
    result = {"machine": {"cpu": cpu_name(), "python": platform.python_version(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "node": platform.node()},
              "settings": {k: v for k, v in vars(a).items() if k != "out"}, "start_greedy": start_acc,
              "data": data_stats, "cells": cells, "minutes": (time.perf_counter() - t_all) / 60}
    out = Path(a.out)
    out.write_text(json.dumps(result, indent=2))
    beside(out, ".md").write_text(report(result))
    print(report(result))


def _mean_ci(xs: list[float]) -> str:
    m = statistics.mean(xs)
    if len(xs) < 2:
        return f"{m:+.3f}"
    t = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78}.get(len(xs), 2.0)
    h = t * statistics.stdev(xs) / len(xs) ** 0.5
    return f"{m:+.3f} [{m - h:+.3f}, {m + h:+.3f}]"


def _row(name: str, settings: str, xs: list[float]) -> str:
    return f"{name} | {settings} | {statistics.mean(xs):.3f} | " + ", ".join(f"{x:.3f}" for x in xs)


def report(r: dict) -> str:
    s = r["settings"]
    kind = "tuning grid" if s["grid"] else "final table" if max(s["seeds"]) < 100 else "tuning seed"
    dpo = "" if s["no_dpo"] else (f"; DPO {s['steps']} steps x {s['dpo_batch_size']} pairs, beta {s['dpo_beta']}, "
                                  f"lr {s['dpo_lr']:g}")
    lines = [f"# OREO on the tiny arithmetic LM ({kind})", "",
             f"Machine: {r['machine']['cpu']}, torch {r['machine']['torch']}, {r['machine']['threads']} thread; "
             f"{r['minutes']:.1f} min. Seeds {s['seeds']}; start: tiny Llama (char-level, a step = one token = one "
             f"digit), SFT {s['sft_steps']} steps; data per seed: {s['prompts']} prompts x k = {s['k']} samples at "
             "T = 1, 0/1 exact-match reward (trajectories / correct / DPO pairs: "
             + ", ".join(f"{d['trajectories']} / {d['correct']} / {d['pairs']}" for d in r["data"])
             + f"); OREO {s['steps']} steps x {s['batch_size']} trajectories, alpha {s['alpha']}{dpo}; accuracy on "
             f"{s['eval_prompts']} held-out problems.", "",
             "row | settings | mean accuracy | per seed", "---|---|---|---",
             _row("start (SFT), greedy", "-", [r["start_greedy"]] * len(s["seeds"]))]
    groups: dict[tuple, list[dict]] = {}
    for c in r["cells"]:
        key = (c["method"], c["beta"], c["lr"], c.get("value_lr"))
        groups.setdefault(key, []).append(c)
    for (method, beta, lr, vlr), cs in groups.items():
        cs = sorted(cs, key=lambda c: c["seed"])
        if method == "dpo":
            lines.append(_row("DPO, greedy", f"beta {beta:g}, lr {lr:g}", [c["greedy"] for c in cs]))
            continue
        settings = f"beta {beta:g}, lr {lr:g}, value lr {vlr:g}"
        lines.append(_row("OREO policy, greedy", settings, [c["greedy"] for c in cs]))
        for be in s["search"]:
            lines.append(_row(f"OREO policy + value, search B,E = {be}", settings, [c["search"][be] for c in cs]))
        lines.append(_row("OREO value: pair accuracy (correct vs off by one)", settings,
                          [c["value_pair_acc"] for c in cs]))
    if len(s["seeds"]) > 1:
        lines += ["", "Paired differences per seed (mean, 95 % t-interval over seeds):", ""]
        dpo = {c["seed"]: c["greedy"] for c in r["cells"] if c["method"] == "dpo"}
        for (method, beta, lr, vlr), cs in groups.items():
            if method != "oreo":
                continue
            tag = f"beta {beta:g}, lr {lr:g}, value lr {vlr:g}"
            for be in s["search"]:
                d = [c["search"][be] - c["greedy"] for c in cs]
                lines.append(f"- search ({be}) - greedy, same OREO policy ({tag}): {_mean_ci(d)}")
            if dpo:
                d = [c["greedy"] - dpo[c["seed"]] for c in cs if c["seed"] in dpo]
                lines.append(f"- OREO greedy - DPO greedy ({tag}): {_mean_ci(d)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
