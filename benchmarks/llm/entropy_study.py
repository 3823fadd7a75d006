"""Does RL make the tiny model better, and what do the entropy methods buy? Held-out study on 2+2-digit addition.

1. SFT: one tiny Llama (``build_tiny_lm``, seed 0, 300 steps) trained without the 500 held-out problems
   (``ArithmeticTask.heldout(500)``); RL never draws them either (``prompt_source(held)``).
2. RL: every method x seed from that SFT model with ``LLMTrainer`` (same settings for all methods).
3. Held-out evaluation before and after (``gendiff.llm.evaluation.evaluate``): greedy accuracy, pass@k for
   k = 1, 4, 16, 64 from 64 samples per problem at T = 1 (Chen et al.'s unbiased estimator), and the
   sampled token entropy; all from the same prompts, sampler, stopping rule and answer check.
4. Per method: mean, std and every seed; paired differences to the SFT start and to GRPO with a 95 %
   t-interval over seeds; the entropy-law fit R = -a exp(H) + b (Cui et al. 2025) over every logged step.

Each finished run is cached as runs/.../<method>_s<seed>/result.json, so an interrupted study resumes.

    python benchmarks/llm/entropy_study.py --seeds 0 1 2 --methods grpo clip_cov kl_cov \
        --out benchmarks/llm/entropy_study.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from gendiff import stats  # noqa: E402
from gendiff.bench import cpu_name  # noqa: E402
from gendiff.io import beside
from gendiff.llm.entropy_law import fit_entropy_law  # noqa: E402
from gendiff.llm.evaluation import evaluate  # noqa: E402
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_tiny_lm  # noqa: E402
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer  # noqa: E402

METHODS: dict[str, tuple[str, dict]] = {
    "grpo": ("grpo", {}),
    # a batch holds ~1e3 completion tokens (the paper's ~1e6): the paper's 2e-4 / 2e-3 would pick 0-2 tokens
    "clip_cov": ("clip_cov", {"clip_ratio": 2e-2}),
    "kl_cov": ("kl_cov", {"kl_ratio": 2e-2}),
    "clip_cov_x5": ("clip_cov", {"clip_ratio": 1e-1}),
    "kl_cov_x5": ("kl_cov", {"kl_ratio": 1e-1}),
}
KS = (1, 4, 16, 64)


def eval_dict(model, tok, held: list[str], args) -> dict:
    ev = evaluate(model, tok, held, arithmetic_reward, n_samples=args.n_samples, ks=KS,
                  max_new_tokens=args.max_new_tokens, seed=args.eval_seed)
    return {"greedy": ev.greedy_accuracy, **{f"pass@{k}": v for k, v in ev.pass_at.items()}, "entropy": ev.entropy}


def run_one(method: str, seed: int, held: list[str], args) -> dict:
    out = args.runs_dir / f"{method}_s{seed}"
    cached = out / "result.json"
    if cached.is_file():
        res = json.loads(cached.read_text())
        if res["settings"] == settings(args):
            return res
    loss, loss_cfg = METHODS[method]
    cfg = LLMTrainConfig(loss=loss, loss_config=loss_cfg, steps=args.steps, group_size=args.group_size,
                         prompts_per_step=args.prompts_per_step, max_new_tokens=args.max_new_tokens, lr=args.lr,
                         updates_per_rollout=args.updates, kl_coef=args.kl_coef, seed=seed)
    model, tok = AutoModelForCausalLM.from_pretrained(args.sft_dir), AutoTokenizer.from_pretrained(args.sft_dir)
    (out / "log.jsonl").unlink(missing_ok=True)
    t0 = time.perf_counter()
    trainer = LLMTrainer(model, tok, arithmetic_reward, ArithmeticTask().prompt_source(held), cfg, out_dir=out)
    logs = trainer.train(progress=False)
    train_s = time.perf_counter() - t0
    end = eval_dict(trainer.accelerator.unwrap_model(trainer.model), tok, held, args)
    res = {"method": method, "seed": seed, "settings": settings(args), "train_seconds": train_s, "end": end,
           "entropy": [m["actor/entropy"] for m in logs], "reward": [m["reward/mean"] for m in logs],
           "max_logp_mismatch": max(m.get("rollout/logp_mismatch", 0.0) for m in logs)}
    cached.write_text(json.dumps(res))
    return res


def settings(args) -> dict:
    return {k: getattr(args, k) for k in ("steps", "lr", "group_size", "prompts_per_step", "updates",
                                          "max_new_tokens", "kl_coef", "n_samples", "eval_seed", "n_heldout")}


def t_interval(xs: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval (gendiff.stats) of paired differences over seeds."""
    return (statistics.mean(xs), *stats.t_interval(xs))


def summarise(results: list[dict], start: dict) -> dict:
    keys = ["greedy", *[f"pass@{k}" for k in KS], "entropy"]
    out: dict = {}
    by = {m: sorted((r for r in results if r["method"] == m), key=lambda r: r["seed"]) for m in METHODS}
    grpo = {r["seed"]: r for r in by.get("grpo", [])}
    for method, rows in by.items():
        if not rows:
            continue
        s: dict = {"seeds": [r["seed"] for r in rows]}
        for k in keys:
            vals = [r["end"][k] for r in rows]
            s[k] = {"mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                    "per_seed": vals, "vs_sft": t_interval([v - start[k] for v in vals])}
            paired = [r["end"][k] - grpo[r["seed"]]["end"][k] for r in rows if r["seed"] in grpo]
            if method != "grpo" and paired:
                s[k]["vs_grpo"] = t_interval(paired)
        s["train_entropy_end"] = statistics.mean(statistics.mean(r["entropy"][-max(1, len(r["entropy"]) // 10):])
                                                 for r in rows)
        fit = fit_entropy_law([h for r in rows for h in r["entropy"]], [y for r in rows for y in r["reward"]])
        s["entropy_law"] = {"a": fit.a, "b": fit.b, "r2": fit.r2, "n": fit.n}
        s["train_seconds"] = statistics.mean(r["train_seconds"] for r in rows)
        out[method] = s
    return out


def claims(res: dict) -> list[str]:
    """Markdown bullets: on how many seeds GRPO beats the SFT start in greedy accuracy, and each entropy
    method ends with higher entropy than GRPO and at least GRPO's pass@16 (same seed)."""
    runs = {(r["method"], r["seed"]): r["end"] for r in res["runs"]}
    seeds, sft = res["seeds"], res["sft"]
    out = []
    if all(("grpo", s) in runs for s in seeds):
        greedy = {s: runs[("grpo", s)]["greedy"] for s in seeds}
        ok = [s for s in seeds if greedy[s] > sft["greedy"]]
        out.append(f"- GRPO greedy accuracy above the SFT start ({sft['greedy']:.3f}): {len(ok)} of {len(seeds)} seeds ("
                   + ", ".join(f"seed {s}: {greedy[s]:.3f}" for s in seeds) + ").")
    for m in res["summary"]:
        if m == "grpo" or not all((m, s) in runs and ("grpo", s) in runs for s in seeds):
            continue
        rows = [(s, runs[(m, s)], runs[("grpo", s)]) for s in seeds]
        ent = [s for s, e, g in rows if e["entropy"] > g["entropy"]]
        p16 = [s for s, e, g in rows if e["pass@16"] >= g["pass@16"]]
        both = [s for s in ent if s in p16]
        out.append(f"- {m}: entropy above GRPO's on {len(ent)} of {len(seeds)} seeds, pass@16 >= GRPO's on "
                   f"{len(p16)}, both on {len(both)} (" + "; ".join(
                       f"seed {s}: H {e['entropy']:.3f} vs {g['entropy']:.3f}, pass@16 {e['pass@16']:.3f} vs "
                       f"{g['pass@16']:.3f}" for s, e, g in rows) + ").")
    return out


def write_md(res: dict, path: Path) -> None:
    st, s0 = res["settings"], res["sft"]
    keys = ["greedy", *[f"pass@{k}" for k in KS], "entropy"]
    lines = [f"# Held-out study on 2+2-digit addition ({len(res['seeds'])} seeds, {st['steps']} steps)", "",
             f"Machine: {res['machine']}.", "", f"Settings: {st}", "",
             f"SFT start ({st['n_heldout']} held-out problems never trained on by SFT or RL): "
             + ", ".join(f"{k} {s0[k]:.3f}" for k in keys) + ".", "",
             "End of RL, mean +- std over seeds [per seed]:", "",
             "| method | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for m, s in res["summary"].items():
        cells = [f"{s[k]['mean']:.3f} +- {s[k]['std']:.3f} [{', '.join(f'{v:.3f}' for v in s[k]['per_seed'])}]"
                 for k in keys]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences, mean [95 % t-interval over seeds]:", "",
              "| method | vs | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for m, s in res["summary"].items():
        for ref in ("vs_sft", "vs_grpo"):
            if ref in s["greedy"]:
                cells = [f"{s[k][ref][0]:+.3f} [{s[k][ref][1]:+.3f}, {s[k][ref][2]:+.3f}]" for k in keys]
                lines.append(f"| {m} | {ref[3:].upper()} | " + " | ".join(cells) + " |")
    lines += ["", "Entropy law R = -a exp(H) + b per method (training entropy and reward of every logged step, "
              "all seeds):", "", "| method | a | b | R^2 | points | training H (last 10 %) | s / run |",
              "|---|---|---|---|---|---|---|"]
    for m, s in res["summary"].items():
        f = s["entropy_law"]
        lines.append(f"| {m} | {f['a']:.3g} | {f['b']:.3g} | {f['r2']:.3f} | {f['n']} | {s['train_entropy_end']:.3f} | "
                     f"{s['train_seconds']:.0f} |")
    lines += ["", "Per-seed checks (end of RL, held-out problems):", ""] + claims(res)
    lines += ["", f"Max rollout/logp_mismatch over all runs: {res['max_logp_mismatch']:.1e}.",
              f"Total cost: {res['total_seconds']:.0f} s wall (shared 2-core machine, 1 thread).", ""]
    path.write_text("\n".join(lines))


def plot(res: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for i, method in enumerate(res["summary"]):
        rows = [r for r in res["runs"] if r["method"] == method]
        for ax, key, w in ((axes[0], "entropy", 1), (axes[1], "reward", 10)):
            curves = np.array([np.convolve(r[key], np.ones(w) / w, mode="valid") for r in rows])
            x = np.arange(curves.shape[1]) + w - 1
            for c in curves:
                ax.plot(x, c, color=f"C{i}", alpha=0.2, lw=0.8)
            ax.plot(x, curves.mean(0), color=f"C{i}", lw=1.8, label=method)
        ks = np.array(KS)
        axes[2].plot(ks, [res["summary"][method][f"pass@{k}"]["mean"] for k in KS], "o-", color=f"C{i}", label=method)
    axes[2].plot(np.array(KS), [res["sft"][f"pass@{k}"] for k in KS], "k--", label="SFT start")
    axes[0].set(xlabel="step", ylabel="training token entropy (nats)")
    axes[1].set(xlabel="step", ylabel="training reward (10-step mean)")
    axes[2].set(xlabel="k", ylabel="held-out pass@k", xscale="log")
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["grpo", "clip_cov", "kl_cov"], choices=list(METHODS))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--prompts-per-step", type=int, default=32)
    ap.add_argument("--updates", type=int, default=2, help="updates per rollout (KL-Cov acts from the second)")
    ap.add_argument("--max-new-tokens", type=int, default=6)
    ap.add_argument("--kl-coef", type=float, default=0.0)
    ap.add_argument("--n-heldout", type=int, default=500)
    ap.add_argument("--n-samples", type=int, default=64)
    ap.add_argument("--eval-seed", type=int, default=0)
    ap.add_argument("--sft-dir", type=Path, default=Path("runs/llm/sft_seed0_heldout"))
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/llm/study"))
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("entropy_study.json"))
    ap.add_argument("--render-only", action="store_true", help="rewrite .md / .png from --out's JSON")
    args = ap.parse_args()
    if args.render_only:
        res = json.loads(args.out.read_text())
        write_md(res, beside(args.out, ".md"))
        plot(res, beside(args.out, ".png"))
        return
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    held = ArithmeticTask().heldout(args.n_heldout)
    if not (args.sft_dir / "config.json").is_file():
        build_tiny_lm(seed=0, sft_steps=300, out_dir=args.sft_dir, exclude=held)
    start_file = args.runs_dir / "sft_eval.json"
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    if start_file.is_file() and json.loads(start_file.read_text())["settings"] == settings(args) | {"steps": None}:
        start = json.loads(start_file.read_text())["eval"]
    else:
        sft = AutoModelForCausalLM.from_pretrained(args.sft_dir)
        start = eval_dict(sft, AutoTokenizer.from_pretrained(args.sft_dir), held, args)
        start_file.write_text(json.dumps({"settings": settings(args) | {"steps": None}, "eval": start}))
    print("SFT start:", {k: round(v, 3) for k, v in start.items()}, flush=True)
    results = []
    for seed in args.seeds:
        for method in args.methods:
            r = run_one(method, seed, held, args)
            results.append(r)
            print(f"{method:12s} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in r["end"].items())
                  + f" ({r['train_seconds']:.0f} s)", flush=True)
    res = {"settings": settings(args), "seeds": args.seeds, "methods": {m: METHODS[m] for m in args.methods},
           "machine": f"{platform.machine()}, {cpu_name()}, torch {torch.__version__}, 1 thread, CPU only",
           "sft": start, "summary": summarise(results, start), "runs": results,
           "max_logp_mismatch": max(r["max_logp_mismatch"] for r in results),
           "total_seconds": time.perf_counter() - t0}
    args.out.write_text(json.dumps(res, indent=2))
    write_md(res, beside(args.out, ".md"))
    plot(res, beside(args.out, ".png"))
    print(beside(args.out, ".md").read_text())


if __name__ == "__main__":
    main()
