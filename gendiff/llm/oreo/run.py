"""``gendiff llm oreo make|train|search``: typed configs and run functions (the CLI only wires).

make: SFT a tiny LM (or load ``--model``), sample ``--k`` completions for ``--prompts`` training prompts, reward them
with the task's verifier and write DIR/data (a ``datasets.DatasetDict``: ``trajectories``, plus ``pairs`` and
``lists`` from the same samples, so ``gendiff llm prefs train --data DIR --loss dpo`` trains DPO on them), DIR/policy,
DIR/make.yaml and DIR/stats.json.

train: OREO from DIR/policy (also the frozen reference) on DIR/data; writes OUT/log.jsonl, OUT/final/ (policy),
OUT/value/ (value model), OUT/config.yaml and OUT/summary.json / .md (held-out greedy accuracy before and after).

search: held-out accuracy of greedy decoding and of the value-guided beam search of one policy with one value model
(OUT/search.json / .md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from gendiff.config import load_yaml, save_config
from gendiff.io import atomic_write_text, loading, refuse_existing, seed_everything

from ..prefs.run import _load_lm, save_made_data, start_model_and_prompts
from .search import SearchConfig
from .trainer import OREOTrainConfig


@dataclass
class OREOMakeConfig:
    """``gendiff llm oreo make``: offline trajectories from a policy and the task's verifier."""

    out: str | None = None  # folder for data/, policy/, make.yaml and stats.json (required)
    model: str | None = None  # save_pretrained policy that samples (unset: SFT a tiny LM anew)
    task: Literal["arithmetic"] = "arithmetic"  # verifiable task with a 0/1 reward
    sft_steps: int = 300  # SFT steps of the tiny LM (when --model is unset)
    prompts: int = 256  # training prompts (never one of the held-out problems)
    k: int = 4  # completions sampled per prompt
    temperature: float = 1.0  # sampling temperature
    max_new_tokens: int = 8  # longest completion in tokens
    eval_prompts: int = 200  # held-out problems excluded from the prompts
    seed: int = 0  # seeds SFT, the prompts and the sampler
    overwrite: bool = False  # replace earlier data in --out
    progress: bool = True  # show progress bars


@dataclass
class OREOTrainRunConfig(OREOTrainConfig):
    """``gendiff llm oreo train``: every ``OREOTrainConfig`` field, then the data, the start and the run folder."""

    data: str | None = None  # a gendiff llm oreo make folder (data/, policy/); required
    out: str | None = None  # run folder; required
    model: str | None = None  # starting policy, frozen reference and value-model body (unset: DATA/policy)
    eval_prompts: int = 200  # held-out problems for greedy accuracy (at most make's --eval-prompts)
    overwrite: bool = False  # replace an earlier run in --out
    progress: bool = True  # show the progress bar

    def train_config(self) -> OREOTrainConfig:
        """The ``OREOTrainer`` settings alone (what OUT/config.yaml holds)."""
        return OREOTrainConfig(**{f.name: getattr(self, f.name) for f in fields(OREOTrainConfig)})


@dataclass
class OREOSearchConfig(SearchConfig):
    """``gendiff llm oreo search``: the beam settings, then the policy, the value model and where results go."""

    run: str | None = None  # a gendiff llm oreo train folder (final/, value/); or give --policy and --value
    policy: str | None = None  # save_pretrained policy (unset: RUN/final)
    value: str | None = None  # saved value model (unset: RUN/value)
    out: str | None = None  # results stem: OUT.json and OUT.md (unset: RUN/search)
    eval_prompts: int = 200  # held-out problems
    overwrite: bool = False  # replace earlier results
    progress: bool = True  # show the progress bar


def run_oreo_make(cfg: OREOMakeConfig) -> dict:
    """``gendiff llm oreo make``: returns (and writes to DIR/stats.json) the data's counts."""
    from ..tasks import ArithmeticTask, arithmetic_reward
    from .data import make_trajectories

    if not cfg.out:
        raise ValueError("gendiff llm oreo make needs --out DIR")
    for key, low in (("prompts", 1), ("k", 2), ("max_new_tokens", 1), ("eval_prompts", 1), ("sft_steps", 0)):
        if getattr(cfg, key) < low:
            raise ValueError(f"--{key.replace('_', '-')} must be >= {low}, got {getattr(cfg, key)}")
    if not cfg.temperature > 0:
        raise ValueError(f"--temperature must be positive, got {cfg.temperature}")
    out = Path(cfg.out)
    refuse_existing([out / "data", out / "stats.json"], cfg.overwrite, "trajectory data")
    task = ArithmeticTask()
    held = task.heldout(cfg.eval_prompts)
    model, tokenizer, prompts = start_model_and_prompts(cfg, task, held)
    data = make_trajectories(model, tokenizer, prompts, arithmetic_reward, cfg.k, cfg.temperature, cfg.max_new_tokens,
                             cfg.seed, progress=cfg.progress)
    save_made_data(out, data, model, tokenizer, cfg)
    rewards = data["trajectories"]["reward"]
    stats = {"prompts": len(prompts), "trajectories": len(rewards), "correct": int(sum(rewards)),
             "pairs": len(data["pairs"]) if "pairs" in data else 0,
             "lists": len(data["lists"]) if "lists" in data else 0, "k": cfg.k, "seed": cfg.seed}
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    print(f"{stats['trajectories']} trajectories ({stats['correct']} correct), {stats['pairs']} pairs from "
          f"{len(prompts)} prompts -> {out / 'data'}")
    return stats


def _check_eval_prompts(data_dir: Path, n: int) -> None:
    if n < 1:
        raise ValueError(f"--eval-prompts must be >= 1, got {n}")
    if (data_dir / "make.yaml").is_file():
        made = load_yaml(data_dir / "make.yaml").get("eval_prompts", n)
        if n > made:  # heldout(n) is a prefix of heldout(m) for n <= m
            raise ValueError(f"--eval-prompts {n} exceeds the {made} held-out problems that make excluded from the "
                             "training prompts; evaluation problems would overlap the data")


def _greedy(model, tokenizer, held: list[str]) -> float:
    from ..evaluation import evaluate
    from ..tasks import arithmetic_reward

    return evaluate(model, tokenizer, held, arithmetic_reward, n_samples=1, ks=(1,), seed=0).greedy_accuracy


def run_oreo_train(rc: OREOTrainRunConfig) -> dict:
    """``gendiff llm oreo train``: returns the summary (also OUT/summary.json and OUT/summary.md)."""
    from datasets import load_from_disk

    from ..tasks import ArithmeticTask
    from .trainer import OREOTrainer

    if not rc.data or not rc.out:
        raise ValueError("gendiff llm oreo train needs --data DIR (from gendiff llm oreo make) and --out DIR")
    cfg = rc.train_config()
    data_dir, out = Path(rc.data), Path(rc.out)
    _check_eval_prompts(data_dir, rc.eval_prompts)
    refuse_existing([out / "summary.json", out / "log.jsonl", out / "value"], rc.overwrite, "an OREO run")
    if rc.overwrite:
        (out / "log.jsonl").unlink(missing_ok=True)
    with loading(data_dir / "data", "the trajectory data"):
        data = load_from_disk(str(data_dir / "data"))
    model, tokenizer = _load_lm(rc.model or data_dir / "policy", "the starting policy")
    held = ArithmeticTask().heldout(rc.eval_prompts)
    seed_everything(cfg.seed)
    before = _greedy(model, tokenizer, held)
    trainer = OREOTrainer(model, tokenizer, data, cfg, out_dir=out)
    save_config(cfg, out)
    logs = trainer.train(progress=rc.progress)
    after = _greedy(trainer.model, tokenizer, held)
    last = logs[-1]
    summary = {"steps": cfg.steps, "seed": cfg.seed, "beta": cfg.beta, "alpha": cfg.alpha, "data": str(data_dir),
               "trajectories": len(trainer.data), "eval_prompts": len(held), "greedy_before": before,
               "greedy_after": after, "final_value_loss": last["loss/value"], "final_policy_loss": last["loss/policy"]}
    md = (f"# gendiff llm oreo train ({cfg.steps} steps, seed {cfg.seed}, beta {cfg.beta}, alpha {cfg.alpha})\n\n"
          f"held-out ({len(held)} problems) | greedy accuracy\n---|---\nbefore | {before:.3f}\nafter | {after:.3f}\n")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "summary.md", md)
    print(md, end="")
    return summary


def run_oreo_search(sc: OREOSearchConfig) -> dict:
    """``gendiff llm oreo search``: greedy vs value-guided search on held-out problems (OUT.json / OUT.md)."""
    from ..tasks import ArithmeticTask, arithmetic_reward
    from .search import value_guided_search
    from .value import last_values, load_value_model

    if not sc.run and not (sc.policy and sc.value and sc.out):
        raise ValueError("gendiff llm oreo search needs --run DIR (a gendiff llm oreo train folder) or all of "
                         "--policy, --value and --out")
    if sc.eval_prompts < 1:
        raise ValueError(f"--eval-prompts must be >= 1, got {sc.eval_prompts}")
    run = Path(sc.run) if sc.run else None
    policy_dir = Path(sc.policy) if sc.policy else run / "final"
    value_dir = Path(sc.value) if sc.value else run / "value"
    stem = Path(sc.out) if sc.out else run / "search"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    refuse_existing([json_path, md_path], sc.overwrite, "search results")
    model, tokenizer = _load_lm(policy_dir, "the policy")
    with loading(value_dir, "the value model"):
        value = load_value_model(value_dir)
    held = ArithmeticTask().heldout(sc.eval_prompts)
    greedy = _greedy(model, tokenizer, held)
    beam = SearchConfig(sc.beam_width, sc.expansions, sc.max_new_tokens)
    found = value_guided_search(model, last_values(value), tokenizer, held, beam, progress=sc.progress)
    search = sum(arithmetic_reward(held, found.texts)) / len(held)
    result = {"policy": str(policy_dir), "value": str(value_dir), "eval_prompts": len(held),
              "beam_width": sc.beam_width, "expansions": sc.expansions, "greedy": greedy, "search": search}
    md = (f"# gendiff llm oreo search (B = {sc.beam_width}, E = {sc.expansions})\n\n"
          f"held-out ({len(held)} problems) | accuracy\n---|---\ngreedy | {greedy:.3f}\nvalue-guided search | {search:.3f}\n")
    stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(result, indent=2))
    atomic_write_text(md_path, md)
    print(md, end="")
    return result
