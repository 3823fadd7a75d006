"""ARES and agentic entropy-balanced AEPO vs GRPO on the tiny arithmetic model, at equal rollout tokens.

1. SFT: one tiny Llama (``build_tiny_lm``, seed 0, 300 steps, 4 layers) without the held-out test problems.
2. RL from that model, per seed and method, with the same prompts per step (16), group budget (8 rows per prompt) and
   learning rate; each run stops at the first step where its cumulative *generated* rollout tokens
   (``rollout/generated_tokens``: every sampled token, but not the prefixes a branch shares with its parent) reach
   ``--token-budget``. So a method whose rows share prefixes takes more steps on the same token budget.
   - grpo: ``rollout=sample``, loss grpo.
   - ares: ``rollout=ares`` (hotter draw at HWE positions, hierarchical entropy reward, difficulty buckets,
     dynamic per-bucket KL with ``kl_coef``), loss grpo.
   - eb_aepo: ``rollout=entropy_balanced`` (pre-monitored global / branch split, consecutive branch penalty; a
     step is one token = one digit) with the loss ``ebpo`` (stop-gradient high clip, entropy-aware advantage).
3. Held-out evaluation: greedy accuracy, pass@1 / pass@k (``--n-samples`` samples), sampled entropy; the last steps'
   training accuracy reward (exact match: ARES's shaped reward is not comparable) and rollout entropy.
4. ``--tune``: the same runs on seed(s) 100+ evaluated on a validation set (not the test set, excluded from RL), for
   choosing settings; the final table uses seeds 0, 1, 2 only.

    python benchmarks/llm/ares_aepo.py --seeds 0 1 2 --out benchmarks/llm/ares_aepo.json
    python benchmarks/llm/ares_aepo.py --tune --seeds 100 --out benchmarks/llm/ares_aepo_tuning.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from gendiff import stats  # noqa: E402
from gendiff.bench import cpu_name  # noqa: E402
from gendiff.io import beside
from gendiff.llm.evaluation import evaluate  # noqa: E402
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_tiny_lm  # noqa: E402
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer  # noqa: E402

METHODS = ("grpo", "ares", "eb_aepo")
METRICS = ("greedy", "pass@1", "pass@k", "entropy", "train_reward_tail", "rollout_entropy_tail", "steps",
           "generated_tokens")


def method_config(method: str, seed: int, args) -> LLMTrainConfig:
    base = {"steps": args.max_steps, "group_size": args.group_size, "prompts_per_step": args.prompts_per_step,
            "max_new_tokens": 8, "lr": args.lr, "seed": seed}
    if method == "ares":
        return LLMTrainConfig(rollout="ares", kl_coef=args.ares_kl_coef,
                              rollout_config={"hwe_boost": args.hwe_boost, "alpha_init": args.ares_alpha,
                                              "window": args.hwe_window, "kl_update_interval": 1}, **base)
    if method == "eb_aepo":
        return LLMTrainConfig(rollout="entropy_balanced", loss="ebpo",
                              rollout_config={"threshold": args.branch_threshold}, **base)
    return LLMTrainConfig(**base)


def settings(args) -> dict:
    keys = ("token_budget", "max_steps", "prompts_per_step", "group_size", "lr", "hwe_window", "hwe_boost", "ares_alpha",
            "ares_kl_coef", "branch_threshold", "heldout", "n_samples", "k", "sft_steps", "tune")
    return {k: getattr(args, k) for k in keys}


def run_one(method: str, seed: int, evalset: list[str], exclude: list[str], args) -> dict:
    tag = hashlib.sha1(json.dumps(settings(args), sort_keys=True).encode()).hexdigest()[:8]
    out = args.runs_dir / f"{method}_s{seed}_{tag}"
    cached = out / "result.json"
    if cached.is_file():
        res = json.loads(cached.read_text())
        if res["settings"] == settings(args):
            return res
    cfg = method_config(method, seed, args)
    model, tok = AutoModelForCausalLM.from_pretrained(args.sft_dir), AutoTokenizer.from_pretrained(args.sft_dir)
    t0 = time.perf_counter()
    trainer = LLMTrainer(model, tok, arithmetic_reward, ArithmeticTask().prompt_source(exclude), cfg)
    logs, tokens = [], 0.0
    while tokens < args.token_budget and len(logs) < args.max_steps:  # 2. equal generated rollout tokens
        m = trainer.step()
        tokens += m["rollout/generated_tokens"]
        logs.append(m)
    train_s = time.perf_counter() - t0
    model = trainer.accelerator.unwrap_model(trainer.model)
    ev = evaluate(model, tok, evalset, arithmetic_reward, n_samples=args.n_samples, ks=(1, args.k), seed=1000)
    last = logs[-args.tail:]
    acc = [m.get("ares/accuracy_reward_mean", m["reward/mean"]) for m in logs]
    res = {"method": method, "seed": seed, "settings": settings(args), "train_seconds": train_s,
           "greedy": ev.greedy_accuracy, "pass@1": ev.pass_at[1], "pass@k": ev.pass_at[args.k], "entropy": ev.entropy,
           "train_reward_tail": statistics.mean(acc[-args.tail:]),
           "rollout_entropy_tail": statistics.mean(m["rollout/entropy"] for m in last),
           "steps": len(logs), "generated_tokens": tokens, "reward": acc,
           "rollout_entropy": [m["rollout/entropy"] for m in logs],
           "extras": {k: [m[k] for m in logs] for k in logs[0] if k.startswith(("eb/", "ares/"))}}
    out.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(res))
    return res


def summarise(runs: list[dict], seeds: list[int]) -> dict:
    by = {(r["method"], r["seed"]): r for r in runs}
    out = {}
    for method in METHODS:
        out[method] = {k: {"mean": statistics.mean(by[method, s][k] for s in seeds),
                           "per_seed": [by[method, s][k] for s in seeds]} for k in METRICS}
    for method in METHODS[1:]:
        diff = {}
        for k in METRICS:
            d = [by[method, s][k] - by["grpo", s][k] for s in seeds]
            lo, hi = stats.t_interval(d) if len(d) > 1 else (float("nan"), float("nan"))
            diff[k] = {"mean": statistics.mean(d), "ci95": [lo, hi], "per_seed": d}
        out[f"{method}_minus_grpo"] = diff
    return out


def markdown(res: dict) -> str:
    s, a = res["summary"], res["settings"]
    what = "validation set (tuning)" if a["tune"] else "held-out test set"
    lines = [f"# ARES and agentic entropy-balanced AEPO vs GRPO at equal rollout tokens ({what})", "",
             f"SFT model: {res['sft']['class']}, evaluation-set greedy accuracy {res['sft']['greedy']:.3f}, "
             f"pass@{a['k']} {res['sft']['pass@k']:.3f}, sampled entropy {res['sft']['entropy']:.3f}.", "",
             f"Each run: {a['prompts_per_step']} prompts x {a['group_size']} rows per step, lr {a['lr']}, until "
             f"{a['token_budget']} generated rollout tokens (branch prefixes not counted). ARES: window "
             f"{a['hwe_window']}, hwe_boost "
             f"{a['hwe_boost']}, alpha {a['ares_alpha']}, kl_coef {a['ares_kl_coef']}; eb_aepo: branch threshold "
             f"{a['branch_threshold']}, loss ebpo. Seeds {res['seeds']}; evaluation on {a['heldout']} problems, "
             f"{a['n_samples']} samples each.", "",
             f"method | greedy | pass@1 | pass@{a['k']} | sampled entropy | train reward (last steps) | rollout "
             "entropy (last steps) | steps | generated tokens", "---|---|---|---|---|---|---|---|---"]
    for m in METHODS:
        row = s[m]
        cells = [f"{row[k]['mean']:.3f} [{', '.join(f'{v:.3f}' for v in row[k]['per_seed'])}]" for k in METRICS[:6]]
        cells += [f"{row['steps']['mean']:.1f}", f"{row['generated_tokens']['mean']:.0f}"]
        lines.append(f"{m} | " + " | ".join(cells))
    for m in METHODS[1:]:
        d = s[f"{m}_minus_grpo"]
        lines.append(f"{m} - grpo (95 % t-interval) | " + " | ".join(
            f"{d[k]['mean']:+.3f} [{d[k]['ci95'][0]:+.3f}, {d[k]['ci95'][1]:+.3f}]" for k in METRICS[:6]) + " | | ")
    lines += ["", f"Machine: {res['machine']}; total {res['total_seconds'] / 60:.1f} min (OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS', 'unset')})."]
    return "\n".join(lines) + "\n"


def tuning_markdown(runs: list[dict], k: int) -> str:
    """One line per tuning run (validation set, seeds >= 100)."""
    lines = ["# ARES / agentic AEPO settings on the validation set (seeds >= 100, not in the final table)", "",
             "method | seed | setting | greedy | pass@1 | pass@" + str(k) + " | entropy | train reward (last) | steps",
             "---|---|---|---|---|---|---|---|---"]
    for r in sorted(runs, key=lambda r: (r["method"], r["seed"])):
        a = r["settings"]
        what = {"grpo": f"lr {a['lr']}", "ares": f"window {a['hwe_window']}, boost {a['hwe_boost']}, alpha "
                f"{a['ares_alpha']}, kl {a['ares_kl_coef']}", "eb_aepo": f"threshold {a['branch_threshold']}"}[r["method"]]
        lines.append(f"{r['method']} | {r['seed']} | {what} | {r['greedy']:.3f} | {r['pass@1']:.3f} | {r['pass@k']:.3f} | "
                     f"{r['entropy']:.3f} | {r['train_reward_tail']:.3f} | {r['steps']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--token-budget", type=int, default=24000)
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--prompts-per-step", type=int, default=16)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--hwe-window", type=int, default=4)
    p.add_argument("--hwe-boost", type=float, default=0.5)
    p.add_argument("--ares-alpha", type=float, default=0.5)
    p.add_argument("--ares-kl-coef", type=float, default=0.01)
    p.add_argument("--branch-threshold", type=float, default=0.5)
    p.add_argument("--heldout", type=int, default=300)
    p.add_argument("--n-samples", type=int, default=16)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--sft-steps", type=int, default=300)
    p.add_argument("--tail", type=int, default=10, help="last steps averaged for the training reward / entropy")
    p.add_argument("--tune", action="store_true", help="evaluate on a validation set excluded from RL (seeds 100+)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--runs-dir", type=Path, default=Path("runs/llm/ares_aepo"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/llm/ares_aepo.json"))
    args = p.parse_args()
    if args.tune and min(args.seeds) < 100:
        p.error("--tune chooses settings on seeds >= 100, not on the final table's seeds")
    task = ArithmeticTask()
    held = task.heldout(args.heldout)
    val = [q for q in task.heldout(args.heldout + 100, seed=100) if q not in set(held)][: args.heldout]
    evalset, exclude = (val, held + val) if args.tune else (held, held)
    t0 = time.perf_counter()
    args.sft_dir = args.runs_dir / "sft"
    if not (args.sft_dir / "config.json").is_file():
        build_tiny_lm(seed=0, sft_steps=args.sft_steps, out_dir=args.sft_dir, exclude=held)
    model, tok = AutoModelForCausalLM.from_pretrained(args.sft_dir), AutoTokenizer.from_pretrained(args.sft_dir)
    sft = evaluate(model, tok, evalset, arithmetic_reward, n_samples=args.n_samples, ks=(1, args.k), seed=1000)
    runs = []
    for seed in args.seeds:
        for method in args.methods:
            r = run_one(method, seed, evalset, exclude, args)
            print(f"{method} s{seed}: greedy {r['greedy']:.3f} pass@1 {r['pass@1']:.3f} pass@{args.k} "
                  f"{r['pass@k']:.3f} entropy {r['entropy']:.3f} steps {r['steps']} ({r['train_seconds']:.0f} s)",
                  flush=True)
            runs.append(r)
    if args.tune:  # every tuning run so far, one line each
        old = json.loads(args.out.read_text())["runs"] if args.out.is_file() else []
        keep = {(r["method"], r["seed"], json.dumps(r["settings"], sort_keys=True)): r for r in old + runs}
        args.out.write_text(json.dumps({"machine": cpu_name(), "runs": list(keep.values())}, indent=2))
        beside(args.out, ".md").write_text(tuning_markdown(list(keep.values()), args.k))
        print(tuning_markdown(list(keep.values()), args.k))
        return
    res = {"settings": settings(args), "seeds": args.seeds, "machine": cpu_name(),
           "sft": {"class": type(model).__name__, "greedy": sft.greedy_accuracy, "pass@k": sft.pass_at[args.k],
                   "entropy": sft.entropy},
           "summary": summarise(runs, args.seeds), "runs": runs, "total_seconds": time.perf_counter() - t0}
    args.out.write_text(json.dumps(res, indent=2))
    beside(args.out, ".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
