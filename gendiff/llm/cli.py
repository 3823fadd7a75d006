"""``gendiff llm ...``: RL on the arithmetic task and the entropy-law fit (wiring only).

  gendiff llm train --task arithmetic --loss grpo --steps N --out DIR [--seed S] [--config FILE]
  gendiff llm entropy-law --runs DIR [DIR ...] --out PNG

Each command takes one typed config (``--config FILE`` plus ``--field value`` overrides; configs/llm_train.yaml holds
the trainer's defaults). The configs and run functions live in gendiff.llm.run (``LLMRunConfig``, ``run_train``) and
gendiff.llm.entropy_law (``EntropyLawConfig``, ``run_entropy_law``).
"""

from __future__ import annotations

import argparse

from gendiff.commands import add_experiment, add_group


def add_llm_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``llm`` group (``train``, ``entropy-law``) to a ``gendiff`` sub-parser set."""
    from gendiff.llm.entropy_law import EntropyLawConfig, run_entropy_law
    from gendiff.llm.run import LLMRunConfig, run_train

    sub = add_group(subparsers, "llm", "entropy-aware LLM RL on a tiny offline model")
    add_experiment(sub, "train", LLMRunConfig, run_train, "RL-train a tiny LM on a verifiable task (LLMTrainer)")
    add_experiment(sub, "entropy-law", EntropyLawConfig, run_entropy_law,
                   "fit R = -a exp(H) + b to the (entropy, reward) pairs of run logs and plot it")
