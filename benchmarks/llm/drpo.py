"""DR-PO on the tiny arithmetic model: GRPO with dataset resets vs GRPO from the prompt only, at equal samples.

1. SFT: one tiny Llama (``build_tiny_lm``, seed 0, ``--sft-steps`` steps) without the held-out problems
   (``ArithmeticTask.heldout``); RL never draws them either.
2. Offline preference data from that model (``gendiff llm prefs make``: ``--data-prompts`` training prompts, k = 4
   samples each, exact-match reward, seed 0): the chosen responses are the reset states. It holds no held-out problem
   (checked with ``check_reset_data``).
3. RL from the SFT model, per seed: GRPO (``reset_rate`` 0) and DR-PO (GRPO with ``reset_rate`` r: each prompt's group
   starts, with probability r, from a dataset prompt + a prefix of its chosen response, h ~ U{1..L-1}).
   **Equal samples = equal completions**: both arms run ``--steps`` x ``--prompts-per-step`` x ``--group-size``
   rollouts with the same ``max_new_tokens``; a reset rollout generates only the continuation, so DR-PO generates
   fewer tokens; the table reports the generated tokens of each arm.
4. Held-out evaluation after RL, from the prompt alone (what a user gets): greedy accuracy, pass@1 (= the mean
   sampled exact-match reward), pass@4, pass@16 (16 samples), sampled entropy; the training reward of the last
   ``--tail`` steps (DR-PO: over its prompt-only groups, ``drpo/reward_from_prompt``, and over all groups);
   paired DR-PO - GRPO differences with a 95 % t-interval over seeds.

    python benchmarks/llm/drpo.py --seeds 100 --rates 0.25 0.5 1.0 --out benchmarks/llm/drpo_tuning.json
    python benchmarks/llm/drpo.py --seeds 0 1 2 --rates 0.25 --out benchmarks/llm/drpo.json  # rate chosen on seed 100
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

from gendiff import stats  # noqa: E402
from gendiff.bench import cpu_name  # noqa: E402
from gendiff.io import beside
from gendiff.llm.dataset_reset import check_reset_data  # noqa: E402
from gendiff.llm.evaluation import evaluate  # noqa: E402
from gendiff.llm.prefs.run import PrefMakeConfig, run_make  # noqa: E402
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_tiny_lm, solve  # noqa: E402
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer  # noqa: E402

METRICS = ("greedy", "pass@1", "pass@4", "pass@16", "entropy", "train_reward_from_prompt", "generated_tokens")


def settings(a) -> dict:
    keys = ("steps", "prompts_per_step", "group_size", "lr", "heldout", "n_samples", "sft_steps", "data_prompts", "tail")
    return {k: getattr(a, k) for k in keys}


def is_task_prompt(p: str) -> bool:
    try:
        return bool(solve(p))
    except ValueError:
        return False


def run_one(rate: float, seed: int, held: list[str], a) -> dict:
    """Step 3-4 for one arm (rate 0: GRPO) and seed, cached in runs_dir by its settings."""
    out = a.runs_dir / f"rate{rate}_s{seed}"
    cached = out / "result.json"
    if cached.is_file():
        res = json.loads(cached.read_text())
        if res["settings"] == settings(a):
            return res
    reset = {"reset_rate": rate, "reset_data": str(a.data_dir)} if rate > 0 else {}
    cfg = LLMTrainConfig(steps=a.steps, group_size=a.group_size, prompts_per_step=a.prompts_per_step,
                         max_new_tokens=8, lr=a.lr, seed=seed, **reset)
    model, tok = AutoModelForCausalLM.from_pretrained(a.sft_dir), AutoTokenizer.from_pretrained(a.sft_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    trainer = LLMTrainer(model, tok, arithmetic_reward, ArithmeticTask().prompt_source(held), cfg)
    logs = trainer.train(progress=False)
    train_s = time.perf_counter() - t0
    ev = evaluate(trainer.accelerator.unwrap_model(trainer.model), tok, held, arithmetic_reward,
                  n_samples=a.n_samples, ks=(1, 4, 16), seed=1000)
    rows = a.prompts_per_step * a.group_size
    last = logs[-a.tail :]
    from_prompt = [m["drpo/reward_from_prompt"] if rate > 0 else m["reward/mean"] for m in last
                   if rate == 0 or "drpo/reward_from_prompt" in m]
    res = {"rate": rate, "seed": seed, "settings": settings(a), "train_seconds": train_s,
           "greedy": ev.greedy_accuracy, **{f"pass@{k}": v for k, v in ev.pass_at.items()}, "entropy": ev.entropy,
           "train_reward_from_prompt": statistics.mean(from_prompt) if from_prompt else float("nan"),
           "train_reward_all": statistics.mean(m["reward/mean"] for m in last),
           "completions": a.steps * rows,
           "generated_tokens": sum(m["response_length/mean"] * rows for m in logs),
           "reset_frac": statistics.mean(m.get("drpo/reset_frac", 0.0) for m in logs),
           "prefix_mean": statistics.mean([m["drpo/prefix_mean"] for m in logs if m.get("drpo/prefix_mean")] or [0.0]),
           "reward": [m["reward/mean"] for m in logs]}
    cached.write_text(json.dumps(res))
    return res


def summarise(runs: list[dict], seeds: list[int], rates: list[float]) -> dict:
    by = {(r["rate"], r["seed"]): r for r in runs}
    out = {}
    for rate in [0.0, *rates]:
        out[str(rate)] = {k: {"mean": statistics.mean(by[rate, s][k] for s in seeds),
                              "per_seed": [by[rate, s][k] for s in seeds]} for k in METRICS}
        if rate > 0:
            diff = {}
            for k in METRICS:
                d = [by[rate, s][k] - by[0.0, s][k] for s in seeds]
                lo, hi = stats.t_interval(d) if len(d) > 1 else (float("nan"), float("nan"))
                diff[k] = {"mean": statistics.mean(d), "ci95": [lo, hi], "per_seed": d}
            out[f"{rate}_minus_grpo"] = diff
    return out


def markdown(res: dict) -> str:
    s, a = res["summary"], res["settings"]
    lines = ["# DR-PO (dataset reset) vs GRPO from the prompt only, equal completions", "",
             f"SFT model: 4-layer Llama, {a['sft_steps']} SFT steps, held-out greedy accuracy {res['sft']['greedy']:.3f}, "
             f"pass@1 {res['sft']['pass@1']:.3f} on {a['heldout']} problems neither SFT, the data nor RL sees. Reset "
             f"data: `gendiff llm prefs make` on {a['data_prompts']} training prompts, k 4, from the SFT model: "
             f"{res['data']['pairs']} pairs, {res['data']['reset_states']} distinct chosen responses.", "",
             f"RL: {a['steps']} steps x {a['prompts_per_step']} prompts x {a['group_size']} completions (equal "
             f"completions in every arm), GRPO loss and advantage, lr {a['lr']}, seeds {res['seeds']}. Held-out "
             f"metrics from the prompt alone, {a['n_samples']} samples per problem; train reward: mean of the last "
             f"{a['tail']} steps over the groups that started from the prompt.", "",
             "arm | greedy | pass@1 | pass@4 | pass@16 | sampled entropy | train reward (from prompt) | generated tokens",
             "---|---|---|---|---|---|---|---"]

    def fmt(k: str, v: float, sign: str = "") -> str:
        return f"{v:{sign},.0f}" if k == "generated_tokens" else f"{v:{sign}.3f}"

    for rate in ["0.0", *(str(r) for r in res["rates"])]:
        row = s[rate]
        name = "GRPO (prompt only)" if rate == "0.0" else f"DR-PO, reset rate {rate}"
        cells = [f"{fmt(k, row[k]['mean'])} [{', '.join(fmt(k, v) for v in row[k]['per_seed'])}]" for k in METRICS]
        lines.append(f"{name} | " + " | ".join(cells))
    if len(res["seeds"]) > 1:
        for rate in res["rates"]:
            d = s[f"{rate}_minus_grpo"]
            lines.append(f"DR-PO {rate} - GRPO (95 % t-interval) | " + " | ".join(
                f"{fmt(k, d[k]['mean'], '+')} [{fmt(k, d[k]['ci95'][0], '+')}, {fmt(k, d[k]['ci95'][1], '+')}]"
                for k in METRICS))
    for rate in res["rates"]:
        r = [x for x in res["runs"] if x["rate"] == rate]
        lines.append("")
        lines.append(f"DR-PO {rate}: share of groups reset {statistics.mean(x['reset_frac'] for x in r):.3f}, mean prefix "
                     f"{statistics.mean(x['prefix_mean'] for x in r):.2f} tokens, train reward over all groups "
                     f"(reset ones included) {statistics.mean(x['train_reward_all'] for x in r):.3f}.")
    lines += ["", f"Machine: {res['machine']}, 1 torch thread; total {res['total_seconds'] / 60:.1f} min "
              f"(RL runs {sum(x['train_seconds'] for x in res['runs']) / 60:.1f} min)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rates", type=float, nargs="+", default=[0.25], help="DR-PO reset rates (GRPO, rate 0, always runs)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--prompts-per-step", type=int, default=16)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--heldout", type=int, default=300)
    p.add_argument("--n-samples", type=int, default=16)
    p.add_argument("--sft-steps", type=int, default=300)
    p.add_argument("--data-prompts", type=int, default=256)
    p.add_argument("--tail", type=int, default=20, help="last steps averaged for the training reward")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/llm/drpo"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/llm/drpo.json"))
    a = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    held = ArithmeticTask().heldout(a.heldout)
    a.sft_dir, a.data_dir = a.runs_dir / "sft", a.runs_dir / "prefs"
    if not (a.sft_dir / "config.json").is_file():  # 1.
        build_tiny_lm(seed=0, sft_steps=a.sft_steps, out_dir=a.sft_dir, exclude=held)
    if not (a.data_dir / "stats.json").is_file():  # 2.
        run_make(PrefMakeConfig(out=str(a.data_dir), model=str(a.sft_dir), prompts=a.data_prompts, k=4,
                                eval_prompts=a.heldout, seed=0, progress=False))
    check_reset_data(a.data_dir, "arithmetic", held, is_task_prompt)
    model, tok = AutoModelForCausalLM.from_pretrained(a.sft_dir), AutoTokenizer.from_pretrained(a.sft_dir)
    sft_eval = evaluate(model, tok, held, arithmetic_reward, n_samples=a.n_samples, ks=(1, 4, 16), seed=1000)
    from gendiff.llm.dataset_reset import load_reset_rows

    data = {**json.loads((a.data_dir / "stats.json").read_text()), "reset_states": len(load_reset_rows(a.data_dir, tok))}
    runs = []
    for seed in a.seeds:
        for rate in [0.0, *a.rates]:
            r = run_one(rate, seed, held, a)
            print(f"rate {rate} s{seed}: greedy {r['greedy']:.3f} pass@1 {r['pass@1']:.3f} pass@16 {r['pass@16']:.3f} "
                  f"tokens {r['generated_tokens']:.0f} ({r['train_seconds']:.0f} s)", flush=True)
            runs.append(r)
    res = {"settings": settings(a), "seeds": a.seeds, "rates": a.rates, "machine": cpu_name(),
           "equal_samples": "equal completions (steps x prompts x group size, same max_new_tokens); generated tokens "
                            "reported per arm",
           "sft": {"greedy": sft_eval.greedy_accuracy, **{f"pass@{k}": v for k, v in sft_eval.pass_at.items()},
                   "entropy": sft_eval.entropy},
           "data": data, "summary": summarise(runs, a.seeds, a.rates), "runs": runs,
           "total_seconds": time.perf_counter() - t0}
    a.out.write_text(json.dumps(res, indent=2, default=str))
    beside(a.out, ".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
