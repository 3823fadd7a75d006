"""PPO-max vs GRPO on the tiny arithmetic model at equal samples.

1. SFT: one tiny Llama (``build_tiny_lm``, seed 0, 4 layers) without the held-out problems (``ArithmeticTask.heldout``);
   RL never draws them either.
2. RL from that SFT model, per seed and method, with the same steps x prompts x group completions (equal samples and
   equal sampled tokens budget: max_new_tokens 8), the same policy lr, PPO-clip eps 0.2 and updates per rollout:
   - grpo: ``LLMTrainer`` (group-normalised advantages, no KL), the repo's GRPO baseline;
   - ppo_max: ``PPOMaxTrainer`` (``gendiff.llm.ppo_max``: value head on a copy of the SFT transformer, score
     normalisation + clipping, token-level KL reward, GAE, whitening, value clipping) with ``--critic-lr`` and
     ``--kl-coef``. Several values of either make a grid (the settings check on the tuning seeds).
3. Held-out evaluation after RL: greedy accuracy, pass@1 / pass@16 (16 samples), sampled entropy, the last steps'
   training reward and rollout entropy; paired differences to GRPO with a 95 % t-interval over seeds.

    python benchmarks/llm/ppo_max.py --seeds 100 --critic-lr 1e-4 1e-3 --kl-coef 0 0.01 --out benchmarks/llm/ppo_max_tuning.json
    python benchmarks/llm/ppo_max.py --seeds 0 1 2 --out benchmarks/llm/ppo_max.json
"""

from __future__ import annotations

import argparse
import itertools
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
from gendiff.llm.ppo_max import PPOMaxTrainer  # noqa: E402
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_tiny_lm  # noqa: E402
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer  # noqa: E402

METRICS = ("greedy", "pass@1", "pass@16", "entropy", "train_reward_tail", "rollout_entropy_tail")


def settings(args) -> dict:
    keys = ("steps", "prompts_per_step", "group_size", "lr", "updates", "heldout", "n_samples", "sft_steps",
            "max_new_tokens", "lam", "value_clip", "reward_clip")
    return {k: getattr(args, k) for k in keys}


def methods(args) -> list[tuple[str, dict | None]]:
    """(name, PPOMaxConfig fields or None for GRPO)."""
    out: list[tuple[str, dict | None]] = [("grpo", None)]
    for lr, kl in itertools.product(args.critic_lr, args.kl_coef):
        name = "ppo_max" if len(args.critic_lr) * len(args.kl_coef) == 1 else f"ppo_max_clr{lr:g}_kl{kl:g}"
        out.append((name, {"critic_lr": lr, "kl_coef": kl, "lam": args.lam, "value_clip": args.value_clip,
                           "reward_clip": args.reward_clip}))
    return out


def run_one(name: str, critic: dict | None, seed: int, held: list[str], args) -> dict:
    out = args.runs_dir / f"{name}_s{seed}"
    cached = out / "result.json"
    if cached.is_file():
        res = json.loads(cached.read_text())
        if res["settings"] == settings(args) and res["critic_config"] == critic:
            return res
    extra = {"critic": "ppo_max", "critic_config": critic} if critic is not None else {}
    cfg = LLMTrainConfig(steps=args.steps, group_size=args.group_size, prompts_per_step=args.prompts_per_step,
                         max_new_tokens=args.max_new_tokens, lr=args.lr, updates_per_rollout=args.updates, seed=seed,
                         **extra)
    model, tok = AutoModelForCausalLM.from_pretrained(args.sft_dir), AutoTokenizer.from_pretrained(args.sft_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.jsonl").unlink(missing_ok=True)
    t0 = time.perf_counter()
    cls = LLMTrainer if critic is None else PPOMaxTrainer
    trainer = cls(model, tok, arithmetic_reward, ArithmeticTask().prompt_source(held), cfg, out_dir=out)
    logs = trainer.train(progress=False)
    train_s = time.perf_counter() - t0
    model = trainer.accelerator.unwrap_model(trainer.model)
    ev = evaluate(model, tok, held, arithmetic_reward, n_samples=args.n_samples, ks=(1, 16),
                  max_new_tokens=args.max_new_tokens, seed=1000)
    last = logs[-args.tail :]
    res = {"method": name, "seed": seed, "settings": settings(args), "critic_config": critic, "train_seconds": train_s,
           "greedy": ev.greedy_accuracy, "pass@1": ev.pass_at[1], "pass@16": ev.pass_at[16], "entropy": ev.entropy,
           "train_reward_tail": statistics.mean(m["reward/mean"] for m in last),
           "rollout_entropy_tail": statistics.mean(m["rollout/entropy"] for m in last),
           "samples": sum(args.prompts_per_step * args.group_size for _ in logs),
           "sampled_tokens": sum(m["response_length/mean"] * args.prompts_per_step * args.group_size for m in logs),
           "reward": [m["reward/mean"] for m in logs], "rollout_entropy": [m["rollout/entropy"] for m in logs],
           "value_loss": [m.get("critic/value_loss") for m in logs], "ref_kl": [m.get("ppo_max/ref_kl") for m in logs]}
    cached.write_text(json.dumps(res))
    return res


def summarise(runs: list[dict], names: list[str], seeds: list[int]) -> dict:
    by = {(r["method"], r["seed"]): r for r in runs}
    out = {}
    for name in names:
        out[name] = {k: {"mean": statistics.mean(by[name, s][k] for s in seeds),
                         "per_seed": [by[name, s][k] for s in seeds]} for k in (*METRICS, "sampled_tokens")}
    for name in names[1:]:
        diff = {}
        for k in METRICS:
            d = [by[name, s][k] - by["grpo", s][k] for s in seeds]
            lo, hi = stats.t_interval(d) if len(d) > 1 else (float("nan"), float("nan"))
            diff[k] = {"mean": statistics.mean(d), "ci95": [lo, hi], "per_seed": d}
        out[f"{name}_minus_grpo"] = diff
    return out


def markdown(res: dict) -> str:
    s, a, names = res["summary"], res["settings"], res["methods"]
    lines = ["# PPO-max vs GRPO on the tiny arithmetic model (equal samples)", "",
             f"SFT model: {res['sft']['class']}, held-out greedy accuracy {res['sft']['greedy']:.3f}, pass@16 "
             f"{res['sft']['pass@16']:.3f}, entropy {res['sft']['entropy']:.3f} on {a['heldout']} problems neither SFT "
             "nor RL sees.", "",
             f"RL: {a['steps']} steps x {a['prompts_per_step']} prompts x {a['group_size']} completions "
             f"(max {a['max_new_tokens']} new tokens), policy lr {a['lr']}, {a['updates']} update(s) per rollout, "
             f"PPO clip 0.2; seeds {res['seeds']}. PPO-max: GAE gamma 1, lambda {a['lam']}, value clip "
             f"{a['value_clip']}, score norm + clip {a['reward_clip']}, whitened advantages; critic settings per row.", "",
             "method | critic lr | KL coef | greedy | pass@1 | pass@16 | sampled entropy | train reward (last steps) | "
             "rollout entropy (last steps) | sampled tokens", "---|---|---|---|---|---|---|---|---|---"]
    crit = {r["method"]: r["critic_config"] for r in res["runs"]}
    for m in names:
        row, c = s[m], crit[m]
        cells = [f"{row[k]['mean']:.3f} [{', '.join(f'{v:.3f}' for v in row[k]['per_seed'])}]" for k in METRICS]
        head = f"{m} | {c['critic_lr']:g} | {c['kl_coef']:g}" if c else f"{m} | - | -"
        lines.append(f"{head} | " + " | ".join(cells) + f" | {row['sampled_tokens']['mean']:.0f}")
    for m in names[1:]:
        d = s[f"{m}_minus_grpo"]
        lines.append(f"{m} - grpo (95 % t-interval) | | | " + " | ".join(
            f"{d[k]['mean']:+.3f} [{d[k]['ci95'][0]:+.3f}, {d[k]['ci95'][1]:+.3f}]" for k in METRICS) + " |")
    lines += ["", "Critic fit (PPO-max rows): clipped value loss, mean over seeds of the first / last 10 steps' mean:"]
    for m in names[1:]:
        vl = [r["value_loss"] for r in res["runs"] if r["method"] == m]
        first, last = (statistics.mean(statistics.mean(v[a:b]) for v in vl) for a, b in ((0, 10), (-10, None)))
        lines.append(f"- {m}: {first:.3f} -> {last:.3f}")
    secs = {m: statistics.mean(r["train_seconds"] for r in res["runs"] if r["method"] == m) for m in names}
    lines += ["", "Mean training wall time per run: " + ", ".join(f"{m} {v:.0f} s" for m, v in secs.items()) + ".",
              f"Machine: {res['machine']}, 1 torch thread (shared 2-core machine); total "
              f"{res['total_seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--prompts-per-step", type=int, default=16)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--updates", type=int, default=1)
    p.add_argument("--critic-lr", type=float, nargs="+", default=[1e-4])
    p.add_argument("--kl-coef", type=float, nargs="+", default=[0.01])
    p.add_argument("--lam", type=float, default=0.95)
    p.add_argument("--value-clip", type=float, default=0.2)
    p.add_argument("--reward-clip", type=float, default=5.0)
    p.add_argument("--heldout", type=int, default=300)
    p.add_argument("--n-samples", type=int, default=16)
    p.add_argument("--sft-steps", type=int, default=300)
    p.add_argument("--tail", type=int, default=10, help="last steps averaged for the training reward / entropy")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/llm/ppo_max"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/llm/ppo_max.json"))
    args = p.parse_args()
    t0 = time.perf_counter()
    held = ArithmeticTask().heldout(args.heldout)
    args.sft_dir = args.runs_dir / "sft"
    if not (args.sft_dir / "config.json").is_file():
        build_tiny_lm(seed=0, sft_steps=args.sft_steps, out_dir=args.sft_dir, exclude=held)
    model, tok = AutoModelForCausalLM.from_pretrained(args.sft_dir), AutoTokenizer.from_pretrained(args.sft_dir)
    sft = evaluate(model, tok, held, arithmetic_reward, n_samples=args.n_samples, ks=(1, 16),
                   max_new_tokens=args.max_new_tokens, seed=1000)
    runs, todo = [], methods(args)
    for seed in args.seeds:
        for name, critic in todo:
            r = run_one(name, critic, seed, held, args)
            print(f"{name} s{seed}: greedy {r['greedy']:.3f} pass@16 {r['pass@16']:.3f} entropy {r['entropy']:.3f} "
                  f"reward tail {r['train_reward_tail']:.3f} ({r['train_seconds']:.0f} s)", flush=True)
            runs.append(r)
    names = [n for n, _ in todo]
    res = {"settings": settings(args), "seeds": args.seeds, "methods": names, "machine": cpu_name(),
           "sft": {"class": type(model).__name__, "greedy": sft.greedy_accuracy, "pass@16": sft.pass_at[16],
                   "entropy": sft.entropy},
           "summary": summarise(runs, names, args.seeds), "runs": runs, "total_seconds": time.perf_counter() - t0}
    args.out.write_text(json.dumps(res, indent=2))
    beside(args.out, ".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
