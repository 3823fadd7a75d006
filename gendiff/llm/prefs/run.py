"""``gendiff llm prefs make`` and ``gendiff llm prefs train``: typed configs and run functions (the CLI only wires).

make: SFT a tiny LM (or load ``--model``), sample ``--k`` completions for ``--prompts`` training prompts, rank them
by the task reward, write DIR/data (a ``datasets.DatasetDict`` with ``pairs`` and ``lists``, ``save_to_disk``),
DIR/policy (the sampling policy), DIR/make.yaml (the settings) and DIR/stats.json (counts, flips).

train: load DIR/data and a starting policy (default DIR/policy, also the frozen reference), train it with
``PrefTrainer`` and write OUT/log.jsonl, OUT/final/, OUT/config.yaml, OUT/summary.json and OUT/summary.md (greedy
accuracy, pass@1 and entropy on ``--eval-prompts`` held-out problems before and after; make never samples them).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from gendiff.config import load_yaml, save_config
from gendiff.io import atomic_write_text, loading, refuse_existing, seed_everything

from .trainer import PrefTrainConfig, check_pref_config


@dataclass
class PrefMakeConfig:
    """``gendiff llm prefs make``: preference data from a policy and the task reward."""

    out: str | None = None  # folder for data/, policy/, make.yaml and stats.json (required)
    model: str | None = None  # save_pretrained policy that samples (unset: SFT a tiny LM anew)
    task: Literal["arithmetic"] = "arithmetic"  # verifiable task with a reward
    sft_steps: int = 300  # SFT steps of the tiny LM (when --model is unset)
    prompts: int = 256  # training prompts (never one of the held-out problems)
    k: int = 4  # completions sampled per prompt
    temperature: float = 1.0  # sampling temperature
    max_new_tokens: int = 8  # longest completion in tokens
    partial_credit: bool = False  # reward partly correct digits (more pairs with distinct rewards)
    max_pairs_per_prompt: int = 0  # keep at most this many pairs per prompt (0: all)
    noise: float = 0.0  # fraction of pairs (and of lists) whose labels are flipped (exact, seeded)
    eval_prompts: int = 200  # held-out problems excluded from the prompts (train evaluates on them)
    seed: int = 0  # seeds SFT, the prompts, the sampler and the flips
    overwrite: bool = False  # replace earlier data in --out
    progress: bool = True  # show progress bars


@dataclass
class PrefTrainRunConfig(PrefTrainConfig):
    """``gendiff llm prefs train``: every ``PrefTrainConfig`` field, then the data, the start and the run folder."""

    data: str | None = None  # a gendiff llm prefs make folder (data/, policy/); required
    out: str | None = None  # run folder (log.jsonl, final/, summary.json / .md); required
    model: str | None = None  # starting policy and frozen reference (unset: DATA/policy)
    eval_prompts: int = 200  # held-out problems for greedy accuracy (at most make's --eval-prompts)
    eval_samples: int = 4  # samples per held-out problem for pass@1 and the entropy
    overwrite: bool = False  # replace an earlier run's summary in --out
    progress: bool = True  # show the progress bar

    def train_config(self) -> PrefTrainConfig:
        """The ``PrefTrainer`` settings alone (what OUT/config.yaml holds)."""
        return PrefTrainConfig(**{f.name: getattr(self, f.name) for f in fields(PrefTrainConfig)})


def _load_lm(path: str | Path, what: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"{what} {path} is not a save_pretrained folder (no config.json)")
    with loading(path, what):
        return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True).eval(), AutoTokenizer.from_pretrained(path)


def save_made_data(out: Path, data, model, tokenizer, cfg) -> None:
    """OUT/data (``save_to_disk`` into a temporary folder, then renamed over the old one), OUT/policy and
    OUT/make.yaml: what a ``make`` command writes (also ``gendiff llm oreo make``)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".data.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    data.save_to_disk(str(tmp))
    shutil.rmtree(out / "data", ignore_errors=True)
    tmp.rename(out / "data")
    model.save_pretrained(out / "policy")
    tokenizer.save_pretrained(out / "policy")
    save_config(cfg, out, "make.yaml")


def start_model_and_prompts(cfg: Any, task: Any, held: list[str]) -> tuple[Any, Any, list[str]]:
    """The model that data is sampled from (``cfg.model``, or the tiny LM SFT-trained anew without the held-out
    problems ``held``) and ``cfg.prompts`` seeded training prompts of ``task`` (held-out excluded); shared by
    ``prefs make`` and ``oreo make``."""
    from ..tasks import build_tiny_lm

    seed_everything(cfg.seed)
    if cfg.model:
        model, tokenizer = _load_lm(cfg.model, "--model")
    else:
        tiny = build_tiny_lm(task, seed=cfg.seed, sft_steps=cfg.sft_steps, exclude=held)
        model, tokenizer = tiny.model.eval(), tiny.tokenizer
    prompts = task.sample(cfg.prompts, random.Random(cfg.seed + 7919), exclude=held)[0]
    return model, tokenizer, prompts


def run_make(cfg: PrefMakeConfig) -> dict:
    """``gendiff llm prefs make``: returns (and writes to DIR/stats.json) the data's counts."""
    from ..tasks import ArithmeticTask, arithmetic_reward
    from .data import make_preferences

    if not cfg.out:
        raise ValueError("gendiff llm prefs make needs --out DIR")
    for key, low in (("prompts", 1), ("k", 2), ("max_new_tokens", 1), ("eval_prompts", 1), ("sft_steps", 0),
                     ("max_pairs_per_prompt", 0)):
        if getattr(cfg, key) < low:
            raise ValueError(f"--{key.replace('_', '-')} must be >= {low}, got {getattr(cfg, key)}")
    if not 0.0 <= cfg.noise <= 1.0:
        raise ValueError(f"--noise must be a fraction in [0, 1], got {cfg.noise}")
    if not cfg.temperature > 0:
        raise ValueError(f"--temperature must be positive, got {cfg.temperature}")
    out = Path(cfg.out)
    refuse_existing([out / "data", out / "stats.json"], cfg.overwrite, "preference data")
    task = ArithmeticTask()
    held = task.heldout(cfg.eval_prompts)
    model, tokenizer, prompts = start_model_and_prompts(cfg, task, held)

    def reward(p: list[str], c: list[str]) -> list[float]:
        return arithmetic_reward(p, c, partial_credit=cfg.partial_credit)

    data = make_preferences(model, tokenizer, prompts, reward, cfg.k, cfg.temperature, cfg.max_new_tokens,
                            cfg.noise, cfg.seed, cfg.max_pairs_per_prompt, progress=cfg.progress)
    save_made_data(out, data, model, tokenizer, cfg)
    stats = {"prompts": len(prompts), "pairs": len(data["pairs"]), "lists": len(data["lists"]),
             "flipped_pairs": sum(data["pairs"]["flipped"]), "flipped_lists": sum(data["lists"]["flipped"]),
             "noise": cfg.noise, "k": cfg.k, "seed": cfg.seed}
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    print(f"{stats['pairs']} pairs ({stats['flipped_pairs']} flipped), {stats['lists']} lists "
          f"({stats['flipped_lists']} flipped) from {len(prompts)} prompts -> {out / 'data'}")
    return stats


def _md(summary: dict) -> str:
    lines = [f"# gendiff llm prefs train: {summary['loss']} ({summary['steps']} steps, seed {summary['seed']})", "",
             f"held-out ({summary['eval_prompts']} problems) | greedy | pass@1 | entropy", "---|---|---|---"]
    for name in ("before", "after"):
        ev = summary[name]
        lines.append(f"{name} | {ev['greedy']:.3f} | {ev['pass@1']:.3f} | {ev['entropy']:.3f}")
    return "\n".join(lines) + "\n"


def run_prefs_train(rc: PrefTrainRunConfig) -> dict:
    """``gendiff llm prefs train``: returns the summary (also OUT/summary.json and OUT/summary.md)."""
    from datasets import load_from_disk

    from ..evaluation import evaluate
    from ..tasks import ArithmeticTask, arithmetic_reward
    from .trainer import PrefTrainer

    if not rc.data or not rc.out:
        raise ValueError("gendiff llm prefs train needs --data DIR (from gendiff llm prefs make) and --out DIR")
    cfg = rc.train_config()
    check_pref_config(cfg)
    if rc.eval_prompts < 1 or rc.eval_samples < 1:
        raise ValueError(f"--eval-prompts and --eval-samples must be >= 1, got {rc.eval_prompts}, {rc.eval_samples}")
    data_dir, out = Path(rc.data), Path(rc.out)
    if (data_dir / "make.yaml").is_file():
        made = load_yaml(data_dir / "make.yaml").get("eval_prompts", rc.eval_prompts)
        if rc.eval_prompts > made:  # heldout(n) is a prefix of heldout(m) for n <= m
            raise ValueError(f"--eval-prompts {rc.eval_prompts} exceeds the {made} held-out problems that make excluded "
                             "from the training prompts; evaluation problems would overlap the data")
    refuse_existing([out / "summary.json", out / "summary.md", out / "log.jsonl"], rc.overwrite, "a preference run")
    if rc.overwrite:
        (out / "log.jsonl").unlink(missing_ok=True)
    with loading(data_dir / "data", "the preference data"):
        data = load_from_disk(str(data_dir / "data"))
    model, tokenizer = _load_lm(rc.model or data_dir / "policy", "the starting policy")
    held = ArithmeticTask().heldout(rc.eval_prompts)
    seed_everything(cfg.seed)

    def held_out(m) -> dict[str, float]:
        ev = evaluate(m, tokenizer, held, arithmetic_reward, n_samples=rc.eval_samples, ks=(1,), seed=cfg.seed)
        return {"greedy": ev.greedy_accuracy, "pass@1": ev.pass_at[1], "entropy": ev.entropy}

    before = held_out(model)
    trainer = PrefTrainer(model, tokenizer, data, cfg, out_dir=out)
    save_config(cfg, out)
    logs = trainer.train(progress=rc.progress)
    after = held_out(trainer.model)
    summary = {"loss": cfg.loss, "loss_config": trainer.loss_cfg.__dict__, "anchor": cfg.anchor, "steps": cfg.steps,
               "seed": cfg.seed, "data": str(data_dir), "train_rows": len(trainer.data), "eval_prompts": len(held),
               "before": before, "after": after, "final_loss": logs[-1]["loss/preference"]}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "summary.md", _md(summary))
    print(_md(summary), end="")
    return summary
