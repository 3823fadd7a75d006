"""``gendiff llm ...``: RL on the arithmetic task and the entropy-law fit.

  gendiff llm train --task arithmetic --loss grpo --steps N --out DIR [--seed S] [--config FILE]
  gendiff llm entropy-law --runs DIR [DIR ...] --out PNG

``llm train`` builds the tiny LM (tokenizer + Llama + SFT, saved to DIR/sft) unless ``--model PATH``
names a saved one, trains it with ``LLMTrainer`` (every ``LLMTrainConfig`` field is a flag; YAML via
``--config``, e.g. configs/llm_train.yaml), and writes DIR/config.yaml, DIR/log.jsonl, DIR/final/ and
DIR/summary.json (greedy accuracy, pass@1/4/16 and entropy on ``--eval-prompts`` held-out problems
that neither SFT nor RL sees, before and after). An earlier run in DIR is replaced only with
``--overwrite`` (``--overwrite true``), and only when the new run is complete (it is built in a staging folder
beside DIR); ``--resume`` continues it from its latest DIR/checkpoint-<step>/ (written every
``--checkpoint-every`` steps) to ``--steps``.
"""

from __future__ import annotations

import argparse

from gendiff.config import add_bool_flag, add_config_arguments

from .entropy_law import run_entropy_law
from .run import TASKS, run_train
from .trainer import LLMTrainConfig


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
    add_bool_flag(train, "--partial-credit", "reward partly correct digits")
    train.add_argument("--eval-prompts", type=int, default=200,
                       help="held-out problems (never trained on) for greedy accuracy and pass@k (default: 200)")
    add_bool_flag(train, "--overwrite", "replace an existing run in --out (after the new run completes)")
    add_bool_flag(train, "--resume", "continue the run in --out from its latest checkpoint-<step>/")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_config_arguments(train, LLMTrainConfig)
    train.set_defaults(_run=run_train)
    law = sub.add_parser("entropy-law", help="fit R = -a exp(H) + b to logged runs and plot it",
                         description="fit R = -a exp(H) + b to the (entropy, reward) pairs of run logs")
    law.add_argument("--runs", nargs="+", required=True, help="run folders holding log.jsonl")
    law.add_argument("--out", required=True, help="PNG path (a JSON with a, b, R^2 is written beside it)")
    add_bool_flag(law, "--overwrite", "replace an existing PNG / JSON")
    law.set_defaults(_run=run_entropy_law)
    return llm
