"""``gendiff llm ...``: RL on the arithmetic task and the entropy-law fit (wiring only).

  gendiff llm train --task arithmetic --loss grpo --steps N --out DIR [--seed S] [--config FILE]
  gendiff llm entropy-law --runs DIR [DIR ...] --out PNG
  gendiff llm layer-entropy --model DIR [--texts FILE] [--out STEM]
  gendiff llm prefs make --out DIR [--k 4 --prompts 256 --noise 0.2]
  gendiff llm prefs train --data DIR --loss {dpo,adpo,adpo_listwise,cpl} --out RUN
  gendiff llm oreo make --out DIR; gendiff llm oreo train --data DIR --out RUN; gendiff llm oreo search --run RUN

Each command takes one typed config (``--config FILE`` plus ``--field value`` overrides; configs/llm_train.yaml holds
the trainer's defaults). The configs and run functions live in gendiff.llm.run (``LLMRunConfig``, ``run_train``) and
gendiff.llm.entropy_law (``EntropyLawConfig``, ``run_entropy_law``); the preference commands' in gendiff.llm.prefs.run, OREO's in gendiff.llm.oreo.run.
"""

from __future__ import annotations

import argparse

from gendiff.commands import add_experiment, add_group


def add_llm_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``llm`` group (``train``, ``entropy-law``, ``layer-entropy``, ``prefs make`` / ``prefs train``) to
    a ``gendiff`` sub-parser set."""
    from gendiff.llm.entropy_law import EntropyLawConfig, run_entropy_law
    from gendiff.llm.layer_entropy import LayerEntropyConfig, run_layer_entropy
    from gendiff.llm.oreo.run import (
        OREOMakeConfig,
        OREOSearchConfig,
        OREOTrainRunConfig,
        run_oreo_make,
        run_oreo_search,
        run_oreo_train,
    )
    from gendiff.llm.prefs.run import PrefMakeConfig, PrefTrainRunConfig, run_make, run_prefs_train
    from gendiff.llm.run import LLMRunConfig, run_train

    sub = add_group(subparsers, "llm", "entropy-aware LLM RL on a tiny offline model")
    add_experiment(sub, "train", LLMRunConfig, run_train, "RL-train a tiny LM on a verifiable task (LLMTrainer)", multiprocess=True)
    add_experiment(sub, "entropy-law", EntropyLawConfig, run_entropy_law,
                   "fit R = -a exp(H) + b to the (entropy, reward) pairs of run logs and plot it")
    add_experiment(sub, "layer-entropy", LayerEntropyConfig, run_layer_entropy,
                   "entropy of each layer's internal policy lm_head(norm(h_l)) (BuPO's profile), JSON + markdown")
    prefs = add_group(sub, "prefs", "preference data from the task reward and preference losses (DPO, ADPO, CPL)")
    add_experiment(prefs, "make", PrefMakeConfig, run_make,
                   "sample k completions per prompt, rank them by reward, save pairs and lists (datasets)")
    add_experiment(prefs, "train", PrefTrainRunConfig, run_prefs_train,
                   "train a policy on preference data with a preference loss; held-out greedy accuracy")
    oreo = add_group(sub, "oreo", "OREO: policy + value from the soft Bellman equation on offline trajectories")
    add_experiment(oreo, "make", OREOMakeConfig, run_oreo_make,
                   "sample k completions per prompt, reward them (0/1), save trajectories (+ pairs for DPO)")
    add_experiment(oreo, "train", OREOTrainRunConfig, run_oreo_train,
                   "train the policy and the value model jointly (OREO); held-out greedy accuracy")
    add_experiment(oreo, "search", OREOSearchConfig, run_oreo_search,
                   "value-guided token-level beam search vs greedy decoding on held-out problems")
