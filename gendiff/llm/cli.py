"""``gendiff llm ...``: RL on the arithmetic task and the entropy-law fit.

  gendiff llm train --task arithmetic --loss grpo --steps N --out DIR [--seed S] [--config FILE]
  gendiff llm entropy-law --runs DIR [DIR ...] --out PNG

``llm train`` builds the tiny LM (tokenizer + Llama + SFT, saved to DIR/sft) unless ``--model PATH``
names a saved one, trains it with ``LLMTrainer`` (every ``LLMTrainConfig`` field is a flag; YAML via
``--config``, e.g. configs/llm_train.yaml), and writes DIR/config.yaml, DIR/log.jsonl, DIR/final/ and
DIR/summary.json (greedy accuracy, pass@1/4/16 and entropy on ``--eval-prompts`` held-out problems
that neither SFT nor RL sees, before and after). An existing DIR/log.jsonl is never overwritten
unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from gendiff.config import add_config_arguments, config_from_args, save_config

from .trainer import LLMTrainConfig

TASKS = ("arithmetic",)


def add_llm_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``llm`` group (``train``, ``entropy-law``) to a ``gendiff`` sub-parser set."""
    llm = subparsers.add_parser("llm", help="entropy-aware LLM RL on a tiny offline model",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = llm.add_subparsers(dest="llm_command", required=True)
    train = sub.add_parser("train", help="RL-train a tiny LM on a verifiable task",
                           description="RL-train a tiny LM on a verifiable task (LLMTrainer)")
    train.add_argument("--task", choices=TASKS, default="arithmetic", help="verifiable task (default: arithmetic)")
    train.add_argument("--out", required=True, help="run folder (config, log.jsonl, final model, summary)")
    train.add_argument("--model", default=None, help="a save_pretrained folder to start from (default: SFT anew)")
    train.add_argument("--sft-steps", type=int, default=300, help="SFT steps of the tiny LM (default: 300)")
    train.add_argument("--partial-credit", action="store_true", help="reward partly correct digits")
    train.add_argument("--eval-prompts", type=int, default=200,
                       help="held-out problems (never trained on) for greedy accuracy and pass@k (default: 200)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_config_arguments(train, LLMTrainConfig)
    train.set_defaults(_run=run_train)
    law = sub.add_parser("entropy-law", help="fit R = -a exp(H) + b to logged runs and plot it",
                         description="fit R = -a exp(H) + b to the (entropy, reward) pairs of run logs")
    law.add_argument("--runs", nargs="+", required=True, help="run folders holding log.jsonl")
    law.add_argument("--out", required=True, help="PNG path (a JSON with a, b, R^2 is written beside it)")
    law.set_defaults(_run=run_entropy_law)
    return llm


def _prepare_out(out: Path, overwrite: bool) -> None:
    if (out / "log.jsonl").exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds a run (log.jsonl); pass --overwrite or another --out")
        (out / "log.jsonl").unlink()
        for name in ("final", "sft"):
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def run_train(args: argparse.Namespace) -> dict:
    """Body of ``gendiff llm train``; returns the summary dict."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .evaluation import evaluate
    from .tasks import ArithmeticTask, arithmetic_answer_key, arithmetic_reward, build_tiny_lm
    from .trainer import LLMTrainer, check_config

    cfg = config_from_args(LLMTrainConfig, args)
    check_config(cfg)  # fail before the SFT minutes
    out = Path(args.out)
    _prepare_out(out, args.overwrite)
    task = ArithmeticTask()
    held = task.heldout(args.eval_prompts)  # never trained on, by SFT or RL
    if args.model:
        if not (Path(args.model) / "config.json").is_file():
            raise FileNotFoundError(f"--model {args.model} is not a save_pretrained folder (no config.json)")
        model = AutoModelForCausalLM.from_pretrained(args.model)
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    else:
        tiny = build_tiny_lm(task, seed=cfg.seed, sft_steps=args.sft_steps, out_dir=out / "sft", exclude=held)
        model, tokenizer = tiny.model, tiny.tokenizer

    def held_out_eval(m) -> dict[str, float]:
        ev = evaluate(m, tokenizer, held, arithmetic_reward, n_samples=16, ks=(1, 4, 16),
                      temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
        return {"greedy": ev.greedy_accuracy, **{f"pass@{k}": v for k, v in ev.pass_at.items()}, "entropy": ev.entropy}

    before = held_out_eval(model.eval())
    save_config(cfg, out)

    def reward(prompts, completions, **_):
        return arithmetic_reward(prompts, completions, partial_credit=args.partial_credit)

    trainer = LLMTrainer(model, tokenizer, reward, task.prompt_source(held), cfg, out_dir=out,
                         cluster_fn=arithmetic_answer_key)
    logs = trainer.train(progress=not args.no_progress)
    after = held_out_eval(trainer.accelerator.unwrap_model(trainer.model))
    summary = {"task": args.task, "loss": cfg.loss, "advantage": cfg.advantage, "steps": cfg.steps, "seed": cfg.seed,
               "eval_prompts": len(held), "before": before, "after": after,
               "accuracy_before": before["greedy"], "accuracy_after": after["greedy"],
               "final_reward": logs[-1]["reward/mean"], "final_entropy": logs[-1].get("actor/entropy"),
               "empty_completions": trainer.state.empty_total}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"held-out ({len(held)} problems) | greedy | pass@1 | pass@16 | entropy\n---|---|---|---|---")
    for name, ev in (("before", before), ("after", after)):
        print(f"{name} | {ev['greedy']:.3f} | {ev['pass@1']:.3f} | {ev['pass@16']:.3f} | {ev['entropy']:.3f}")
    return summary


def run_entropy_law(args: argparse.Namespace) -> dict:
    """Body of ``gendiff llm entropy-law``; prints and writes a, b, R^2."""
    from .entropy_law import entropy_law_from_runs

    png = Path(args.out)
    fit = entropy_law_from_runs(args.runs, png)
    res = {"a": fit.a, "b": fit.b, "r2": fit.r2, "n": fit.n, "runs": list(args.runs)}
    png.with_suffix(".json").write_text(json.dumps(res, indent=2))
    print(f"R = -{fit.a:.4g} exp(H) + {fit.b:.4g}   R^2 = {fit.r2:.3f}   ({fit.n} points)   -> {png}")
    return res
