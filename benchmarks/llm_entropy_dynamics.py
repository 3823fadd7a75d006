"""Entropy dynamics on the arithmetic task: GRPO vs Clip-Cov vs KL-Cov vs the adaptive entropy bonus.

One SFT model (``build_tiny_lm``, seed 0, saved once to --sft-dir) is RL-trained by ``LLMTrainer`` with each
loss for each seed. Every method uses the same settings (two updates per rollout, so that KL-Cov, which
has no gradient on the first, on-policy update, acts at all). Reports, per method: the token entropy at
the start and the end of training (mean +- std over seeds), the final mean reward and greedy accuracy,
and the entropy-law fit R = -a exp(H) + b over all logged steps. Writes JSON + markdown + a PNG.

    python benchmarks/llm_entropy_dynamics.py --steps 60 --seeds 0 1 2 --out benchmarks/llm_entropy_dynamics.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from gendiff.llm.entropy_law import entropy_law_from_runs  # noqa: E402
from gendiff.llm.tasks import ArithmeticTask, accuracy, arithmetic_reward, build_tiny_lm  # noqa: E402
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer  # noqa: E402

METHODS: dict[str, tuple[str, dict]] = {
    "grpo": ("grpo", {}),
    "clip_cov": ("clip_cov", {"clip_ratio": 2e-2}),  # ~100 tokens per batch: 2e-4 would pick one token
    "kl_cov": ("kl_cov", {"kl_ratio": 2e-2}),
    "entropy_bonus_adaptive": ("entropy_bonus", {"coef": 5e-3, "coef_step": 5e-3, "coef_max": 5e-2}),
}


def run_one(sft: Path, method: str, seed: int, steps: int, lr: float, runs: Path, target_entropy: float) -> dict:
    loss, loss_cfg = METHODS[method]
    if loss == "entropy_bonus":
        loss_cfg = {**loss_cfg, "target_entropy": target_entropy}
    cfg = LLMTrainConfig(loss=loss, loss_config=loss_cfg, steps=steps, group_size=8, prompts_per_step=4,
                         max_new_tokens=6, lr=lr, updates_per_rollout=2, seed=seed)
    model, tok = AutoModelForCausalLM.from_pretrained(sft), AutoTokenizer.from_pretrained(sft)
    task = ArithmeticTask()
    out = runs / f"{method}_s{seed}"
    (out / "log.jsonl").unlink(missing_ok=True)
    t0 = time.perf_counter()
    trainer = LLMTrainer(model, tok, arithmetic_reward, lambda n, rng: task.sample(n, rng)[0], cfg, out_dir=out)
    logs = trainer.train(progress=False)
    acc = accuracy(trainer.accelerator.unwrap_model(trainer.model), tok, task)
    k = max(1, steps // 10)  # average the first / last 10 % of steps
    return {"method": method, "seed": seed, "seconds": time.perf_counter() - t0, "accuracy": acc,
            "entropy_start": statistics.mean(m["actor/entropy"] for m in logs[:k]),
            "entropy_end": statistics.mean(m["actor/entropy"] for m in logs[-k:]),
            "reward_end": statistics.mean(m["reward/mean"] for m in logs[-k:]),
            "entropy": [m["actor/entropy"] for m in logs], "reward": [m["reward/mean"] for m in logs]}


def summarise(results: list[dict]) -> dict[str, dict[str, float]]:
    out = {}
    for method in METHODS:
        rows = [r for r in results if r["method"] == method]
        if not rows:
            continue
        stat = {}
        for key in ("entropy_start", "entropy_end", "reward_end", "accuracy", "seconds"):
            vals = [r[key] for r in rows]
            stat[key] = statistics.mean(vals)
            stat[key + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out[method] = stat
    return out


def plot(results: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    colours = dict(zip(METHODS, ("C0", "C1", "C2", "C3"), strict=True))
    for r in results:
        label = r["method"] if r["seed"] == min(x["seed"] for x in results) else None
        axes[0].plot(r["entropy"], color=colours[r["method"]], alpha=0.7, label=label)
        axes[1].plot(r["reward"], color=colours[r["method"]], alpha=0.4)
    axes[0].set(xlabel="step", ylabel="token entropy (nats)")
    axes[1].set(xlabel="step", ylabel="mean reward")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--sft-dir", type=Path, default=Path("runs/llm_sft_seed0"))
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/llm_entropy_dynamics"))
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("llm_entropy_dynamics.json"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if not (args.sft_dir / "config.json").is_file():
        tiny = build_tiny_lm(seed=0, out_dir=args.sft_dir)
        print(f"SFT model: greedy accuracy {tiny.accuracy:.3f} -> {args.sft_dir}", flush=True)
    sft_seconds = time.perf_counter() - t0
    probe = run_one(args.sft_dir, "grpo", 10_000, 2, 1e-12, args.runs_dir, 0.0)  # lr ~0: initial entropy
    target = probe["entropy_start"]
    results = []
    for seed in args.seeds:
        for method in args.methods:
            results.append(run_one(args.sft_dir, method, seed, args.steps, args.lr, args.runs_dir, target))
            r = results[-1]
            print(f"{method:24s} seed {seed}: H {r['entropy_start']:.3f} -> {r['entropy_end']:.3f}, "
                  f"reward {r['reward_end']:.3f}, acc {r['accuracy']:.3f} ({r['seconds']:.0f} s)", flush=True)
    law = entropy_law_from_runs([args.runs_dir / f"{r['method']}_s{r['seed']}" for r in results],
                                args.out.with_name(args.out.stem + "_law.png"))
    res = {"settings": {"steps": args.steps, "seeds": args.seeds, "lr": args.lr, "group_size": 8,
                        "prompts_per_step": 4, "updates_per_rollout": 2, "max_new_tokens": 6,
                        "target_entropy": target, "methods": {m: METHODS[m] for m in args.methods},
                        "threads": args.threads},
           "sft_accuracy": probe["accuracy"], "sft_seconds": sft_seconds,
           "summary": summarise(results),
           "entropy_law": {"a": law.a, "b": law.b, "r2": law.r2, "n": law.n},
           "total_seconds": time.perf_counter() - t0, "runs": results}
    args.out.write_text(json.dumps(res, indent=2))
    plot(results, args.out.with_suffix(".png"))
    write_md(res, args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())


def write_md(res: dict, path: Path) -> None:
    s = res["settings"]
    lines = [f"# Entropy dynamics on 2+2-digit addition ({len(s['seeds'])} seeds, {s['steps']} steps)", "",
             f"Settings: {s}", "", f"SFT greedy accuracy: {res['sft_accuracy']:.3f}", "",
             "| method | H start | H end | reward (last 10 %) | greedy accuracy | s / run |",
             "|---|---|---|---|---|---|"]
    for m, st in res["summary"].items():
        lines.append(f"| {m} | {st['entropy_start']:.3f} | {st['entropy_end']:.3f} +- {st['entropy_end_std']:.3f} | "
                     f"{st['reward_end']:.3f} +- {st['reward_end_std']:.3f} | {st['accuracy']:.3f} +- "
                     f"{st['accuracy_std']:.3f} | {st['seconds']:.0f} |")
    law = res["entropy_law"]
    lines += ["", f"Entropy law over all logged steps: R = -{law['a']:.3g} exp(H) + {law['b']:.3g}, "
              f"R^2 = {law['r2']:.3f} ({law['n']} points).", "",
              f"Total cost: {res['total_seconds']:.0f} s on this machine.", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
