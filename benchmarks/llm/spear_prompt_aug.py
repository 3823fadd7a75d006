"""SPEAR and prompt augmentation vs GRPO on the tiny arithmetic model, at equal rollout tokens.

1. SFT: one tiny Llama (``build_tiny_lm``, seed 0) on the arithmetic task stated in all 4 prompt templates
   (``ArithmeticTask(templates=4)``: plain "a+b=", "rev a+b=", "sum a+b=" with a column trace, "ans a+b:" -> "[c]"),
   without the held-out problems (plain prompts, ``ArithmeticTask.heldout``); RL never draws them either.
2. RL from that model, per seed, three methods with the same settings except:
   - ``grpo``: GRPO on plain prompts (the single template);
   - ``spear``: GRPO + SPEAR (``LLMTrainConfig.spear``: replay of own successes, self-imitation loss with
     P50-recalibrated advantages and Clip-Cov on replayed tokens, the format-reward curriculum);
   - ``prompt_aug``: GRPO on prompts whose template is drawn among the 4 per question (prompt augmentation).
   Each run stops once its rollouts hold ``--token-budget`` completion tokens (equal rollout tokens: the templated
   completions are longer, so prompt augmentation gets fewer steps; SPEAR's replay adds compute, no rollout).
3. Every ``--eval-every`` steps: held-out greedy accuracy and sampled entropy on ``--curve-prompts`` plain prompts
   (the entropy-over-training curve, comparable across methods); at the end the full held-out evaluation:
   greedy accuracy, pass@1 / pass@16 (16 samples, temperature 1), sampled entropy. Paired method - GRPO
   differences with a 95 % t-interval over seeds.

    python benchmarks/llm/spear_prompt_aug.py --tune --seeds 100            # settings, on seed 100
    python benchmarks/llm/spear_prompt_aug.py --seeds 0 1 2 --lr-grpo 5e-5 --lr-spear 2e-4 --lr-prompt-aug 5e-5 \
        --out benchmarks/llm/spear_prompt_aug.json
"""

from __future__ import annotations

import argparse
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
from gendiff.llm.spear import format_reward  # noqa: E402
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_tiny_lm  # noqa: E402
from gendiff.llm.templates import TEMPLATES, match_template  # noqa: E402
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer  # noqa: E402

METHODS = ("grpo", "spear", "prompt_aug")
METRICS = ("greedy", "pass@1", "pass@16", "entropy", "steps", "rollout_tokens", "train_seconds")


def settings(args, method: str) -> dict:
    keys = ("token_budget", "prompts_per_step", "group_size", "max_new_tokens", "heldout", "n_samples", "sft_steps",
            "templates", "sil_coef", "sil_ramp_steps", "intrinsic_coef", "intrinsic_decay_steps", "replay_batch")
    return {**{k: getattr(args, k) for k in keys}, "lr": args.lrs.get(method, args.lr)}


def curve_point(model, tok, curve: list[str], seed: int) -> dict:
    ev = evaluate(model, tok, curve, arithmetic_reward, n_samples=4, ks=(1,), seed=seed)
    return {"greedy": ev.greedy_accuracy, "entropy": ev.entropy}


def run_one(method: str, seed: int, held: list[str], args) -> dict:
    out = args.runs_dir / f"{method}_s{seed}_lr{args.lrs.get(method, args.lr):g}"
    cached = out / "result.json"
    if cached.is_file():
        res = json.loads(cached.read_text())
        if res["settings"] == settings(args, method):
            return res
    spear = {"spear": True, "spear_config": {"sil_coef": args.sil_coef, "sil_ramp_steps": args.sil_ramp_steps,
                                             "intrinsic_coef": args.intrinsic_coef, "replay_batch": args.replay_batch,
                                             "intrinsic_decay_steps": args.intrinsic_decay_steps}} \
        if method == "spear" else {}
    cfg = LLMTrainConfig(steps=args.max_steps, group_size=args.group_size, prompts_per_step=args.prompts_per_step,
                         max_new_tokens=args.max_new_tokens, lr=args.lrs.get(method, args.lr), seed=seed, **spear)
    model, tok = AutoModelForCausalLM.from_pretrained(args.sft_dir), AutoTokenizer.from_pretrained(args.sft_dir)
    task = ArithmeticTask(templates=args.templates if method == "prompt_aug" else 1)
    curve = held[: args.curve_prompts]
    t0 = time.perf_counter()
    trainer = LLMTrainer(model, tok, arithmetic_reward, task.prompt_source(held), cfg,
                         intrinsic_fn=format_reward if method == "spear" else None)
    logs, tokens, points, eval_s = [], 0.0, [], 0.0
    while tokens < args.token_budget and len(logs) < args.max_steps:
        if len(logs) % args.eval_every == 0:
            te = time.perf_counter()
            points.append({"step": len(logs), "tokens": tokens, **curve_point(trainer.model, tok, curve, 1000)})
            eval_s += time.perf_counter() - te
        m = trainer.step()
        tokens += m["perf/tokens_per_s"] * m["time/step"]  # this step's completion tokens
        logs.append({k: v for k, v in m.items() if k.startswith(("reward/", "rollout/", "spear/", "sil/", "actor/"))})
    points.append({"step": len(logs), "tokens": tokens, **curve_point(trainer.model, tok, curve, 1000)})
    train_s = time.perf_counter() - t0 - eval_s
    ev = evaluate(trainer.model, tok, held, arithmetic_reward, n_samples=args.n_samples, ks=(1, 16), seed=1000)
    res = {"method": method, "seed": seed, "settings": settings(args, method), "train_seconds": train_s,
           "steps": len(logs), "rollout_tokens": tokens,
           "greedy": ev.greedy_accuracy, "pass@1": ev.pass_at[1], "pass@16": ev.pass_at[16], "entropy": ev.entropy,
           "curve": points, "reward": [m["reward/mean"] for m in logs],
           "rollout_entropy": [m["rollout/entropy"] for m in logs],
           "spear": {k: [m.get(k) for m in logs] for k in ("spear/buffer_size", "spear/replay_rows", "sil/clip_cov_count",
                                                           "spear/intrinsic_reward_mean")} if method == "spear" else None}
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
        for k in METRICS[:4]:
            d = [by[method, s][k] - by["grpo", s][k] for s in seeds]
            lo, hi = stats.t_interval(d) if len(d) > 1 else (float("nan"), float("nan"))
            diff[k] = {"mean": statistics.mean(d), "ci95": [lo, hi], "per_seed": d}
        out[f"{method}_minus_grpo"] = diff
    return out


def markdown(res: dict) -> str:
    s, a = res["summary"], res["settings"]
    lines = [f"# SPEAR and prompt augmentation vs GRPO on the tiny arithmetic model (seeds {res['seeds']})", "",
             f"SFT model: {res['sft']['class']}, SFT'd {a['sft_steps']} steps on the 4 prompt templates "
             f"({', '.join(t.name for t in TEMPLATES)}); held-out greedy accuracy (plain prompts) "
             f"{res['sft']['greedy']:.3f}, pass@16 {res['sft']['pass@16']:.3f}, sampled entropy "
             f"{res['sft']['entropy']:.3f}, on {a['heldout']} problems neither SFT nor RL sees; per template greedy: "
             + ", ".join(f"{k} {v:.3f}" for k, v in res["sft"]["greedy_per_template"].items()) + ".", "",
             f"Each run: {a['prompts_per_step']} prompts x {a['group_size']} completions per step, max "
             f"{a['max_new_tokens']} new tokens, until {a['token_budget']} completion tokens (equal rollout tokens); "
             f"lr per method {res['lrs']} (benchmarks/llm/README.md says how each was chosen); SPEAR: c_sil {a['sil_coef']} ramped over "
             f"{a['sil_ramp_steps']} steps, format reward c_in {a['intrinsic_coef']} decayed over "
             f"{a['intrinsic_decay_steps']} steps, {a['replay_batch']} replayed completions per step; prompt_aug: "
             f"{a['templates']} templates. Evaluation on plain held-out prompts.", "",
             "method | greedy | pass@1 | pass@16 | sampled entropy | steps | rollout tokens | train s",
             "---|---|---|---|---|---|---|---"]
    for m in METHODS:
        row = s[m]
        cells = [f"{row[k]['mean']:.3f} [{', '.join(f'{v:.3f}' for v in row[k]['per_seed'])}]" for k in METRICS[:4]]
        cells += [f"{row[k]['mean']:.0f}" for k in METRICS[4:]]
        lines.append(f"{m} | " + " | ".join(cells))
    for m in METHODS[1:]:
        d = s[f"{m}_minus_grpo"]
        lines.append(f"{m} - grpo (95 % t-interval) | " + " | ".join(
            f"{d[k]['mean']:+.3f} [{d[k]['ci95'][0]:+.3f}, {d[k]['ci95'][1]:+.3f}]" for k in METRICS[:4]) + " | | |")
    lines += ["", "Held-out sampled entropy (plain prompts, 4 samples) over training, mean over seeds, by share of "
              "the token budget:", "", "method | " + " | ".join(f"{f:.0%}" for f in res["curve_fracs"]),
              "---|" + "---|" * len(res["curve_fracs"])]
    for m in METHODS:
        lines.append(f"{m} entropy | " + " | ".join(f"{v:.3f}" for v in res["curves"][m]["entropy"]))
    for m in METHODS:
        lines.append(f"{m} greedy | " + " | ".join(f"{v:.3f}" for v in res["curves"][m]["greedy"]))
    lines += ["", f"Machine: {res['machine']}; total {res['total_seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def curves(runs: list[dict], fracs: list[float], budget: float) -> dict:
    """Per method, the curve's value at the last point at or before each budget share, averaged over seeds."""
    out = {}
    for m in METHODS:
        mine = [r for r in runs if r["method"] == m]
        out[m] = {}
        for key in ("entropy", "greedy"):
            vals = []
            for f in fracs:
                at = [max((p for p in r["curve"] if p["tokens"] <= f * budget + 1e-9), key=lambda p: p["tokens"])[key]
                      for r in mine]
                vals.append(statistics.mean(at))
            out[m][key] = vals
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tune", action="store_true", help="run every method at each --tune-lrs (settings, seed 100)")
    p.add_argument("--tune-lrs", type=float, nargs="+", default=[5e-5, 2e-4])
    p.add_argument("--lr", type=float, default=1e-4, help="default learning rate")
    p.add_argument("--lr-grpo", type=float, default=None)
    p.add_argument("--lr-spear", type=float, default=None)
    p.add_argument("--lr-prompt-aug", type=float, default=None)
    p.add_argument("--token-budget", type=float, default=30000)
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--prompts-per-step", type=int, default=16)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--templates", type=int, default=4)
    p.add_argument("--sil-coef", type=float, default=1.0)
    p.add_argument("--sil-ramp-steps", type=int, default=20)
    p.add_argument("--intrinsic-coef", type=float, default=0.5)
    p.add_argument("--intrinsic-decay-steps", type=int, default=20)
    p.add_argument("--replay-batch", type=int, default=32)
    p.add_argument("--heldout", type=int, default=200)
    p.add_argument("--curve-prompts", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--n-samples", type=int, default=16)
    p.add_argument("--sft-steps", type=int, default=400)
    p.add_argument("--runs-dir", type=Path, default=Path("runs/llm/spear_prompt_aug"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/llm/spear_prompt_aug.json"))
    p.add_argument("--report", action="store_true", help="rewrite the markdown of an existing --out JSON only")
    args = p.parse_args()
    if args.report:
        beside(args.out, ".md").write_text(markdown(json.loads(args.out.read_text())))
        return
    args.lrs = {m: v for m, v in (("grpo", args.lr_grpo), ("spear", args.lr_spear), ("prompt_aug", args.lr_prompt_aug))
                if v is not None}
    t0 = time.perf_counter()
    held = ArithmeticTask().heldout(args.heldout)
    args.sft_dir = args.runs_dir / f"sft{args.sft_steps}"
    if not (args.sft_dir / "config.json").is_file():
        build_tiny_lm(ArithmeticTask(templates=4), seed=0, sft_steps=args.sft_steps, out_dir=args.sft_dir,
                      exclude=held)
    model, tok = AutoModelForCausalLM.from_pretrained(args.sft_dir), AutoTokenizer.from_pretrained(args.sft_dir)
    sft_eval = evaluate(model, tok, held, arithmetic_reward, n_samples=args.n_samples, ks=(1, 16), seed=1000)
    per_t = {}
    for t in TEMPLATES:
        prompts = [t.prompt(*match_template(h)[1]) for h in held]
        per_t[t.name] = evaluate(model, tok, prompts, arithmetic_reward, n_samples=1, ks=(1,),
                                 max_new_tokens=args.max_new_tokens).greedy_accuracy
    print(f"SFT: greedy {sft_eval.greedy_accuracy:.3f} pass@16 {sft_eval.pass_at[16]:.3f} entropy "
          f"{sft_eval.entropy:.3f}; per template {per_t}", flush=True)
    if args.tune:
        rows = []
        for lr in args.tune_lrs:
            args.lr, args.lrs = lr, {}
            for seed in args.seeds:
                for method in METHODS:
                    r = run_one(method, seed, held, args)
                    rows.append(r)
                    print(f"lr {lr:g} {method} s{seed}: greedy {r['greedy']:.3f} pass@16 {r['pass@16']:.3f} entropy "
                          f"{r['entropy']:.3f} steps {r['steps']} ({r['train_seconds']:.0f} s)", flush=True)
        table = ["lr | method | seed | greedy | pass@1 | pass@16 | entropy | steps", "---|---|---|---|---|---|---|---"]
        table += [f"{r['settings']['lr']:g} | {r['method']} | {r['seed']} | {r['greedy']:.3f} | {r['pass@1']:.3f} | "
                  f"{r['pass@16']:.3f} | {r['entropy']:.3f} | {r['steps']}" for r in rows]
        total = time.perf_counter() - t0
        args.out.write_text(json.dumps({"tuning": rows, "machine": cpu_name(), "total_seconds": total}, indent=2))
        table += ["", f"Machine: {cpu_name()}; total {total / 60:.1f} min (with the shared SFT model's training, when "
                  "it was not cached)."]
        beside(args.out, ".md").write_text("# Settings on seed(s) " + str(args.seeds) + "\n\n" +
                                               "\n".join(table) + "\n")
        print("\n".join(table))
        return
    runs = []
    for seed in args.seeds:
        for method in METHODS:
            r = run_one(method, seed, held, args)
            print(f"{method} s{seed}: greedy {r['greedy']:.3f} pass@16 {r['pass@16']:.3f} entropy {r['entropy']:.3f} "
                  f"steps {r['steps']} ({r['train_seconds']:.0f} s)", flush=True)
            runs.append(r)
    fracs = [0.0, 0.25, 0.5, 0.75, 1.0]
    res = {"settings": settings(args, "grpo"), "lrs": {m: args.lrs.get(m, args.lr) for m in METHODS},
           "seeds": args.seeds, "machine": cpu_name(),
           "sft": {"class": type(model).__name__, "greedy": sft_eval.greedy_accuracy, "pass@16": sft_eval.pass_at[16],
                   "entropy": sft_eval.entropy, "greedy_per_template": per_t},
           "summary": summarise(runs, args.seeds), "curve_fracs": fracs,
           "curves": curves(runs, fracs, args.token_budget), "runs": runs, "total_seconds": time.perf_counter() - t0}
    args.out.write_text(json.dumps(res, indent=2))
    beside(args.out, ".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
