"""Why does RL lower greedy accuracy? Instrumented GRPO runs on 2+2-digit addition.

One SFT model; GRPO runs that each change one setting; every ``--eval-every`` steps, on the same
held-out prompts (never trained on by RL; by SFT only if the SFT model was built without the held-out
set excluded):

- greedy accuracy and sampled accuracy (same prompts, tokeniser, stopping rule, answer check;
  ``gendiff.llm.evaluation.evaluate``), pass@k and the sampled token entropy;
- the exact probability that one sample is the reference answer (teacher forced), its mean and the
  share of problems where it exceeds 0.5;
- the per-token KL(pi || pi_SFT) on the policy's own samples;
- what the wrong greedy answers look like (too short, too long, right length with wrong digits, and
  which digit position is wrong, counted from the right);
- from the trainer's log: reward/mean and rollout/logp_mismatch.

    python benchmarks/llm/greedy_drop.py --name lr2e-4 --seed 100 --lr 2e-4 --out runs/llm/diag/lr2e-4_s100.json
    python benchmarks/llm/greedy_drop.py --report runs/llm/diag/*_s100.json --out benchmarks/llm/greedy_drop.json

``--report`` gathers run files into one JSON (snapshots and settings, per-problem arrays dropped) and a
markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from gendiff.bench import cpu_name  # noqa: E402
from gendiff.io import beside
from gendiff.llm.evaluation import answer_logprob, evaluate  # noqa: E402
from gendiff.llm.sampling import position_ids_from_mask, sample_completions  # noqa: E402
from gendiff.llm.tasks import ArithmeticTask, arithmetic_reward, build_tiny_lm, solve  # noqa: E402
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer  # noqa: E402


@torch.no_grad()
def kl_to_ref(model, ref, tok, prompts: list[str], max_new: int, seed: int) -> float:
    """Mean per-token KL(pi || pi_ref) over 8 samples per prompt from pi (T = 1)."""
    enc = tok(prompts, return_tensors="pt", padding=True)
    c = sample_completions(model, enc["input_ids"], enc["attention_mask"], max_new, [tok.eos_token_id],
                           tok.pad_token_id, group_size=8, generator=torch.Generator().manual_seed(seed))
    t = c.completion_ids.shape[1]
    ids = torch.cat([c.prompt_ids, c.completion_ids], 1)
    mask = torch.cat([c.prompt_mask, torch.ones_like(c.completion_ids)], 1)
    pos = position_ids_from_mask(mask)
    lp = [m(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -(t + 1) : -1].log_softmax(-1)
          for m in (model, ref)]
    kl = (lp[0].exp() * (lp[0] - lp[1])).sum(-1)
    m = c.completion_mask.bool()
    return float(kl[m].mean())


def wrong_kinds(prompts: list[str], texts: list[str]) -> dict[str, int]:
    """Classify wrong greedy answers: short / long / digit position (from the right) of the first error."""
    out: Counter = Counter()
    for p, t in zip(prompts, texts, strict=True):
        ans, pred = solve(p), t.strip()
        if pred == ans:
            continue
        if len(pred) < len(ans):
            out["too_short"] += 1
        elif len(pred) > len(ans):
            out["too_long"] += 1
        else:
            pos = next(i for i, (a, b) in enumerate(zip(reversed(pred), reversed(ans), strict=True)) if a != b)
            out[f"digit_{pos}_from_right"] += 1
    return dict(out)


def snapshot(model, ref, tok, prompts, answers, args) -> dict:
    ev = evaluate(model, tok, prompts, arithmetic_reward, n_samples=args.n_samples, ks=(1, 4, 16, 64),
                  max_new_tokens=args.max_new_tokens, seed=args.seed)
    p = answer_logprob(model, tok, prompts, answers).exp()
    return {"greedy": ev.greedy_accuracy, "pass": ev.pass_at, "entropy": ev.entropy,
            "p_answer_mean": float(p.mean()), "p_answer_gt_half": float((p > 0.5).float().mean()),
            "kl_to_sft": kl_to_ref(model, ref, tok, prompts[:200], args.max_new_tokens, args.seed),
            "wrong_greedy": wrong_kinds(prompts, ev.greedy_texts),
            "greedy_correct": ev.greedy_correct, "sample_correct": ev.sample_correct,
            "p_answer": [round(float(x), 5) for x in p]}


def report(files: list[Path], out: Path) -> None:
    """One JSON and one markdown table from several run files."""
    runs = []
    for f in files:
        r = json.loads(f.read_text())
        for snap in r["snapshots"].values():
            for key in ("greedy_correct", "sample_correct", "p_answer"):
                snap.pop(key, None)
        r.pop("logs", None)
        runs.append(r)
    out.write_text(json.dumps({"runs": runs}, indent=1))
    lines = ["| run | lr | warm-up | reward | step | greedy | pass@1 | pass@16 | entropy | P(answer) > 0.5 | "
             "KL to SFT | wrong greedy: units digit / tens digit / length |", "|---" * 12 + "|"]
    for r in runs:
        a = r["args"]
        reward = "random" if a.get("random_reward") else "shuffled in group" if a.get("shuffled_reward") else "exact match"
        for step, s in r["snapshots"].items():
            w = s["wrong_greedy"]
            length = w.get("too_long", 0) + w.get("too_short", 0)
            kl = "" if step == "0" else f"{s['kl_to_sft']:.3f}"
            lines.append(f"| {r['name']} | {a['lr']:g} | {a.get('warmup', 0)} | {reward} | {step} | {s['greedy']:.3f} | "
                         f"{s['pass']['1']:.3f} | {s['pass']['16']:.3f} | {s['entropy']:.3f} | {s['p_answer_gt_half']:.3f} | "
                         f"{kl} | {w.get('digit_0_from_right', 0)} / {w.get('digit_1_from_right', 0)} / {length} |")
    lines += ["", f"Max rollout/logp_mismatch over these runs: {max(r['max_logp_mismatch'] for r in runs):.1e}.", ""]
    beside(out, ".md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--report", type=Path, nargs="+", help="run files to gather into --out (no training)")
    ap.add_argument("--name")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--loss", default="grpo")
    ap.add_argument("--loss-config", default="{}")
    ap.add_argument("--advantage", default="grpo")
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--prompts-per-step", type=int, default=32)
    ap.add_argument("--updates", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=6)
    ap.add_argument("--kl-coef", type=float, default=0.0)
    ap.add_argument("--partial-credit", action="store_true")
    ap.add_argument("--random-reward", action="store_true",
                    help="control: Bernoulli(0.5) rewards independent of the completion (no signal)")
    ap.add_argument("--shuffled-reward", action="store_true",
                    help="control: the true rewards permuted within each group (no signal; same reward counts, so "
                         "the same advantage sizes and the same share of all-equal groups)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-heldout", type=int, default=500)
    ap.add_argument("--n-samples", type=int, default=64)
    ap.add_argument("--sft-dir", type=Path, default=Path("runs/llm/sft_seed0_heldout"))
    ap.add_argument("--sft-exclude-heldout", type=int, default=1, help="1: SFT never sees the held-out set")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.report:
        report(args.report, args.out)
        return
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    task = ArithmeticTask()
    held = task.heldout(args.n_heldout)
    answers = [solve(p) for p in held]
    if not (args.sft_dir / "config.json").is_file():
        build_tiny_lm(seed=0, sft_steps=300, out_dir=args.sft_dir, exclude=held if args.sft_exclude_heldout else ())
    model, tok = AutoModelForCausalLM.from_pretrained(args.sft_dir), AutoTokenizer.from_pretrained(args.sft_dir)
    ref = AutoModelForCausalLM.from_pretrained(args.sft_dir).eval()
    cfg = LLMTrainConfig(loss=args.loss, loss_config=json.loads(args.loss_config), advantage=args.advantage,
                         steps=args.steps, group_size=args.group_size, prompts_per_step=args.prompts_per_step,
                         max_new_tokens=args.max_new_tokens, lr=args.lr, warmup_steps=args.warmup, updates_per_rollout=args.updates,
                         kl_coef=args.kl_coef, seed=args.seed)

    coin = random.Random(args.seed + 7)

    def reward(prompts, completions, group_ids, **_):
        if args.random_reward:
            return [float(coin.random() < 0.5) for _ in completions]
        r = arithmetic_reward(prompts, completions, partial_credit=args.partial_credit)
        if args.shuffled_reward:
            for g in sorted(set(group_ids)):
                rows = [i for i, x in enumerate(group_ids) if x == g]
                vals = [r[i] for i in rows]
                coin.shuffle(vals)
                for i, v in zip(rows, vals, strict=True):
                    r[i] = v
        return r

    trainer = LLMTrainer(model, tok, reward, task.prompt_source(held), cfg)
    snaps = {0: snapshot(model, ref, tok, held, answers, args)}
    logs = []
    print(f"{args.name} step 0: {json.dumps({k: v for k, v in snaps[0].items() if k in ('greedy', 'pass', 'entropy', 'p_answer_mean')})}", flush=True)
    for step in range(1, args.steps + 1):
        m = trainer.step()
        logs.append({k: m[k] for k in ("reward/mean", "actor/entropy", "rollout/logp_mismatch", "actor/grad_norm",
                                        "actor/ppo_kl", "response_length/mean") if k in m})
        if step % args.eval_every == 0 or step == args.steps:
            cur = trainer.accelerator.unwrap_model(trainer.model)
            snaps[step] = snapshot(cur, ref, tok, held, answers, args)
            s = snaps[step]
            rw = statistics.mean(x["reward/mean"] for x in logs[-args.eval_every:])
            print(f"{args.name} step {step}: train reward {rw:.3f} greedy {s['greedy']:.3f} pass@1 {s['pass'][1]:.3f} "
                  f"pass@16 {s['pass'][16]:.3f} H {s['entropy']:.3f} p_ans {s['p_answer_mean']:.3f} "
                  f">.5 {s['p_answer_gt_half']:.3f} KL {s['kl_to_sft']:.4f} wrong {s['wrong_greedy']}", flush=True)
    res = {"name": args.name, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "machine": f"{platform.machine()}, {cpu_name()}, torch {torch.__version__}, 1 thread",
           "seconds": time.perf_counter() - t0, "snapshots": snaps, "logs": logs,
           "max_logp_mismatch": max(x.get("rollout/logp_mismatch", 0.0) for x in logs)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res))


if __name__ == "__main__":
    main()
