"""BuPO on the tiny model: the per-layer entropy profile, and GRPO vs GRPO with a bottom-up phase.

1. SFT: one tiny Llama (``build_tiny_lm``, seed 0, 300 steps, 4 layers) without the held-out problems
   (``ArithmeticTask.heldout``); RL never draws them either.
2. Profile: H(pi^l) for l = 1..L on held-out prompts + their answers (``gendiff.llm.layer_entropy``), overall and at
   the positions that predict answer tokens. ``--model PATH --profile-only`` does this step alone for any saved
   Hugging Face causal LM.
3. RL from that SFT model, per seed: GRPO, and BuPO = GRPO whose first ``--bupo-steps`` steps optimise the internal
   policy of layer ``--bupo-layer`` (``LLMTrainConfig.bupo_layer`` / ``bupo_steps``); same rollouts (steps x prompts x
   group) for both.
4. Held-out evaluation after RL: greedy accuracy, pass@1 / pass@16 (16 samples), sampled entropy, the last
   steps' training reward and rollout entropy, and the per-layer profile of the trained model; paired BuPO - GRPO
   differences with a 95 % t-interval over seeds.

    python benchmarks/llm/bupo.py --seeds 0 1 2 --out benchmarks/llm/bupo.json
    python benchmarks/llm/bupo.py --profile-only --model PATH --out my_profile.json
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
from gendiff.llm.layer_entropy import layer_entropy_table, markdown_table  # noqa: E402
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_tiny_lm, solve  # noqa: E402
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer  # noqa: E402


def profile(model, tok, held: list[str]) -> dict:
    return layer_entropy_table(model.eval(), tok, [(p, solve(p)) for p in held], batch_size=64)


def settings(args) -> dict:
    keys = ("steps", "prompts_per_step", "group_size", "lr", "updates", "bupo_layer", "bupo_steps", "heldout",
            "n_samples", "sft_steps")
    return {k: getattr(args, k) for k in keys}


def run_one(method: str, seed: int, held: list[str], args) -> dict:
    out = args.runs_dir / f"{method}_s{seed}"
    cached = out / "result.json"
    if cached.is_file():
        res = json.loads(cached.read_text())
        if res["settings"] == settings(args):
            return res
    bupo = {"bupo_layer": args.bupo_layer, "bupo_steps": args.bupo_steps} if method == "bupo" else {}
    cfg = LLMTrainConfig(steps=args.steps, group_size=args.group_size, prompts_per_step=args.prompts_per_step,
                         max_new_tokens=8, lr=args.lr, updates_per_rollout=args.updates, seed=seed, **bupo)
    model, tok = AutoModelForCausalLM.from_pretrained(args.sft_dir), AutoTokenizer.from_pretrained(args.sft_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.jsonl").unlink(missing_ok=True)
    t0 = time.perf_counter()
    trainer = LLMTrainer(model, tok, arithmetic_reward, ArithmeticTask().prompt_source(held), cfg, out_dir=out)
    logs = trainer.train(progress=False)
    train_s = time.perf_counter() - t0
    model = trainer.accelerator.unwrap_model(trainer.model)
    ev = evaluate(model, tok, held, arithmetic_reward, n_samples=args.n_samples, ks=(1, 16), seed=1000)
    last = logs[-args.tail:]
    res = {"method": method, "seed": seed, "settings": settings(args), "train_seconds": train_s,
           "greedy": ev.greedy_accuracy, "pass@1": ev.pass_at[1], "pass@16": ev.pass_at[16], "entropy": ev.entropy,
           "train_reward_tail": statistics.mean(m["reward/mean"] for m in last),
           "rollout_entropy_tail": statistics.mean(m["rollout/entropy"] for m in last),
           "reward": [m["reward/mean"] for m in logs], "rollout_entropy": [m["rollout/entropy"] for m in logs],
           "layer_entropy": [m.get("bupo/layer_entropy") for m in logs],
           "profile_after": [r["completion_entropy"] for r in profile(model, tok, held)["layers"]]}
    cached.write_text(json.dumps(res))
    return res


METRICS = ("greedy", "pass@1", "pass@16", "entropy", "train_reward_tail", "rollout_entropy_tail")


def summarise(runs: list[dict], seeds: list[int]) -> dict:
    by = {(r["method"], r["seed"]): r for r in runs}
    out = {}
    for method in ("grpo", "bupo"):
        out[method] = {k: {"mean": statistics.mean(by[method, s][k] for s in seeds),
                           "per_seed": [by[method, s][k] for s in seeds]} for k in METRICS}
    diff = {}
    for k in METRICS:
        d = [by["bupo", s][k] - by["grpo", s][k] for s in seeds]
        lo, hi = stats.t_interval(d) if len(d) > 1 else (float("nan"), float("nan"))
        diff[k] = {"mean": statistics.mean(d), "ci95": [lo, hi], "per_seed": d}
    out["bupo_minus_grpo"] = diff
    return out


def markdown(res: dict) -> str:
    s, a = res["summary"], res["settings"]
    lines = ["# BuPO vs GRPO on the tiny arithmetic model", "",
             f"SFT model: {res['sft']['class']}, {res['sft']['layers']} layers, held-out greedy accuracy "
             f"{res['sft']['greedy']:.3f} on {a['heldout']} problems neither SFT nor RL sees.", "",
             "## Internal layer policy entropy of the SFT model (held-out prompt + answer)", "",
             markdown_table(res["profile_sft"]), "",
             f"## After RL ({a['steps']} steps x {a['prompts_per_step']} prompts x {a['group_size']} completions, "
             f"lr {a['lr']}; BuPO: layer {a['bupo_layer']} for the first {a['bupo_steps']} steps), seeds "
             f"{res['seeds']}", "",
             "method | greedy | pass@1 | pass@16 | sampled entropy | train reward (last steps) | rollout entropy "
             "(last steps)", "---|---|---|---|---|---|---"]
    for m in ("grpo", "bupo"):
        row = s[m]
        cells = [f"{row[k]['mean']:.3f} [{', '.join(f'{v:.3f}' for v in row[k]['per_seed'])}]" for k in METRICS]
        lines.append(f"{m} | " + " | ".join(cells))
    d = s["bupo_minus_grpo"]
    lines.append("BuPO - GRPO (95 % t-interval) | " + " | ".join(
        f"{d[k]['mean']:+.3f} [{d[k]['ci95'][0]:+.3f}, {d[k]['ci95'][1]:+.3f}]" for k in METRICS))
    lines += ["", "Completion-position entropy per layer after RL (mean over seeds):", "",
              "layer | SFT | GRPO | BuPO", "---|---|---|---"]
    for i, r in enumerate(res["profile_sft"]["layers"]):
        g = statistics.mean(x["profile_after"][i] for x in res["runs"] if x["method"] == "grpo")
        b = statistics.mean(x["profile_after"][i] for x in res["runs"] if x["method"] == "bupo")
        lines.append(f"{i + 1} | {r['completion_entropy']:.4f} | {g:.4f} | {b:.4f}")
    lines += ["", f"Machine: {res['machine']}; total {res['total_seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--prompts-per-step", type=int, default=16)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--updates", type=int, default=1)
    p.add_argument("--bupo-layer", type=int, default=2)
    p.add_argument("--bupo-steps", type=int, default=10)
    p.add_argument("--heldout", type=int, default=300)
    p.add_argument("--n-samples", type=int, default=16)
    p.add_argument("--sft-steps", type=int, default=300)
    p.add_argument("--tail", type=int, default=10, help="last steps averaged for the training reward / entropy")
    p.add_argument("--model", type=Path, default=None, help="a saved causal LM (with --profile-only)")
    p.add_argument("--profile-only", action="store_true")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/llm/bupo"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/llm/bupo.json"))
    args = p.parse_args()
    held = ArithmeticTask().heldout(args.heldout)
    if args.profile_only:
        if args.model is None:
            p.error("--profile-only needs --model PATH")
        model, tok = AutoModelForCausalLM.from_pretrained(args.model), AutoTokenizer.from_pretrained(args.model)
        res = {"model": str(args.model), "class": type(model).__name__, **profile(model, tok, held)}
        args.out.write_text(json.dumps(res, indent=2))
        beside(args.out, ".md").write_text(f"# Layer entropy: {res['class']}\n\n" + markdown_table(res))
        print(markdown_table(res))
        return
    t0 = time.perf_counter()
    args.sft_dir = args.runs_dir / "sft"
    if not (args.sft_dir / "config.json").is_file():
        build_tiny_lm(seed=0, sft_steps=args.sft_steps, out_dir=args.sft_dir, exclude=held)
    model, tok = AutoModelForCausalLM.from_pretrained(args.sft_dir), AutoTokenizer.from_pretrained(args.sft_dir)
    sft_eval = evaluate(model, tok, held, arithmetic_reward, n_samples=args.n_samples, ks=(1, 16), seed=1000)
    prof = profile(model, tok, held)
    print(markdown_table(prof))
    runs = []
    for seed in args.seeds:
        for method in ("grpo", "bupo"):
            r = run_one(method, seed, held, args)
            print(f"{method} s{seed}: greedy {r['greedy']:.3f} pass@16 {r['pass@16']:.3f} entropy {r['entropy']:.3f} "
                  f"({r['train_seconds']:.0f} s)", flush=True)
            runs.append(r)
    res = {"settings": settings(args), "seeds": args.seeds, "machine": cpu_name(),
           "sft": {"class": type(model).__name__, "layers": len(prof["layers"]), "greedy": sft_eval.greedy_accuracy,
                   "pass@16": sft_eval.pass_at[16], "entropy": sft_eval.entropy},
           "profile_sft": prof, "summary": summarise(runs, args.seeds), "runs": runs,
           "total_seconds": time.perf_counter() - t0}
    args.out.write_text(json.dumps(res, indent=2))
    beside(args.out, ".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
