"""One ``gendiff llm train`` run: build (or load) the tiny LM, RL-train it with ``LLMTrainer``, evaluate it.

The run writes DIR/config.yaml, DIR/log.jsonl, DIR/final/ and DIR/summary.json (greedy accuracy, pass@1/4/16 and
entropy on ``--eval-prompts`` held-out problems that neither SFT nor RL sees, before and after). An earlier run in DIR
is replaced only with ``--overwrite``, and only when the new run is complete (it is built in a
staging folder beside DIR); ``--resume`` continues it from its latest DIR/checkpoint-<step>/ (written every
``--checkpoint-every`` steps) to ``--steps``.

Under ``accelerate launch`` with N processes the main process prepares DIR, runs SFT (the others load its saved
model), writes every file and prints; all processes train (see ``gendiff.llm.trainer``: the global batch is
``--prompts-per-step`` x ``--group-size`` over all processes) and evaluate the same held-out problems.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gendiff.checkpoints import check_resume_config, list_checkpoints, log_step
from gendiff.config import load_yaml, save_config, to_dict
from gendiff.distributed import process_state
from gendiff.io import (
    atomic_write_text,
    discard_staging,
    loading,
    recover_swap,
    seed_everything,
    staging_dir,
    swap_dir,
)

from .trainer import LLMTrainConfig


@dataclass
class LLMRunConfig(LLMTrainConfig):
    """One ``gendiff llm train`` run: every ``LLMTrainConfig`` field, then the task, the starting model and the run
    folder (these are written to DIR/run_args.json, the trainer's settings to DIR/config.yaml)."""

    task: Literal["arithmetic"] = field(default="arithmetic", metadata={"help": "verifiable task"})
    out: str | None = field(default=None, metadata={"help": "run folder (config, log.jsonl, final model, summary); "
                                                            "required"})
    model: str | None = field(default=None, metadata={"help": "a save_pretrained folder to start from (unset: SFT "
                                                              "anew)"})
    sft_steps: int = field(default=300, metadata={"help": "SFT steps of the tiny LM"})
    partial_credit: bool = field(default=False, metadata={"help": "reward partly correct digits"})
    prompt_templates: int = field(default=1, metadata={"help": "prompt augmentation: K prompt templates (SFT and RL "
                                                                "prompts; gendiff.llm.templates), 1: plain a+b= only"})
    eval_prompts: int = field(default=200, metadata={"help": "held-out problems (never trained on) for greedy accuracy "
                                                             "and pass@k"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing run in --out (after the new run "
                                                             "completes)"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --out from its latest checkpoint-<step>/"})
    progress: bool = True  # show the progress bar (--no-progress hides it)

    def train_config(self) -> LLMTrainConfig:
        """The ``LLMTrainer`` settings alone (what DIR/config.yaml holds)."""
        return LLMTrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(LLMTrainConfig)})


RUN_ARGS = "run_args.json"  # the run's options outside LLMTrainConfig (checked on resume)


def _on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on the main process only and hand its result, or its error, to every process."""
    from accelerate.utils import broadcast_object_list

    state = process_state()
    if state.num_processes == 1:
        return fn()
    box: list[Any] = [None]
    if state.is_main_process:
        try:
            box = [(True, fn())]
        except Exception as err:  # every process raises it, none waits forever
            box = [(False, err)]
    broadcast_object_list(box)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def _owned(p: Path) -> bool:
    """What a run writes into --out (replaced by a new run; other files there are kept)."""
    return p.name in ("log.jsonl", "final", "sft", "summary.json", "config.yaml", RUN_ARGS) or \
        p.name.startswith(("checkpoint-", ".tmp-"))


def _prepare_out(out: Path, overwrite: bool, resume: bool = False) -> Path:
    """The folder to run in: ``out`` (a new or resumed run) or, to replace an earlier run, a staging folder."""
    if overwrite and resume:
        raise ValueError("pass either --resume or --overwrite, not both")
    recover_swap(out, _owned)
    discard_staging(out)
    if resume:
        if not list_checkpoints(out):
            raise FileNotFoundError(f"--resume: {out} holds no complete checkpoint-<step>/ to resume from (a run "
                                    "writes them every --checkpoint-every steps)")
        return out
    earlier = [p.name for p in (out / "log.jsonl", out / "final", out / "sft") if p.exists()]
    if not earlier:
        out.mkdir(parents=True, exist_ok=True)
        return out
    if not overwrite:
        raise FileExistsError(f"{out} already holds a run ({', '.join(earlier)}); pass --overwrite to replace it, "
                              "--resume to continue it, or another --out")
    staging_dir(out).mkdir(parents=True)
    return staging_dir(out)


def _load_lm(path: str | Path, what: str):
    """A save_pretrained causal LM and its tokenizer, or one LoadError line naming the folder and the cause."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"{what} {path} is not a save_pretrained folder (no config.json)")
    with loading(path, what):
        return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True), AutoTokenizer.from_pretrained(path)


def run_train(rc: LLMRunConfig) -> dict:
    """``gendiff llm train``: validate, SFT (or load) the model, RL-train it in ``rc.out``, print the held-out table;
    returns the summary dict."""
    from .trainer import check_config

    if not rc.out:
        raise ValueError("gendiff llm train needs --out DIR (the run folder)")
    cfg = rc.train_config()
    check_config(cfg)  # fail before the SFT minutes
    if rc.sft_steps < 0:
        raise ValueError(f"--sft-steps must be >= 0, got {rc.sft_steps}")
    from .templates import check_templates

    try:
        check_templates(rc.prompt_templates)
    except ValueError as err:
        raise ValueError(f"--prompt-templates: {err}") from None
    if rc.eval_prompts < 1:
        raise ValueError(f"--eval-prompts must be >= 1, got {rc.eval_prompts}")
    if cfg.reset_rate > 0:  # DR-PO: the reset data must be of this task and hold no held-out problem
        from .dataset_reset import check_reset_data
        from .tasks import ArithmeticTask, solve

        def is_task_prompt(prompt: str) -> bool:
            try:
                return bool(solve(prompt))
            except ValueError:
                return False

        check_reset_data(cfg.reset_data, rc.task, ArithmeticTask().heldout(rc.eval_prompts), is_task_prompt)
    out = Path(rc.out)
    run_args = {"task": rc.task, "model": rc.model, "sft_steps": rc.sft_steps,
                "partial_credit": rc.partial_credit, "eval_prompts": rc.eval_prompts}
    if rc.prompt_templates != 1:  # recorded only when used: earlier runs resume unchanged
        run_args["prompt_templates"] = rc.prompt_templates
    if rc.resume and (out / "config.yaml").is_file():  # the resumed run must be the same run
        saved = load_yaml(out / "config.yaml")
        if (out / RUN_ARGS).is_file():
            saved.update(json.loads((out / RUN_ARGS).read_text()))
        check_resume_config(saved, {**to_dict(cfg), **run_args}, out)
    main = process_state().is_main_process
    work = _on_main(lambda: _prepare_out(out, rc.overwrite, rc.resume))
    try:
        summary = _train(rc, cfg, out, work, run_args)
    except BaseException:
        if work != out and main:  # a failed replacement never counted: the earlier run stays as it was
            shutil.rmtree(work, ignore_errors=True)
        raise
    if not main:
        return summary
    if work != out:  # a replacement run is complete: swap it in
        swap_dir(work, out, _owned)
    print(f"held-out ({summary['eval_prompts']} problems) | greedy | pass@1 | pass@16 | entropy\n---|---|---|---|---")
    for name in ("before", "after"):
        ev = summary[name]
        print(f"{name} | {ev['greedy']:.3f} | {ev['pass@1']:.3f} | {ev['pass@16']:.3f} | {ev['entropy']:.3f}")
    return summary


def _train(rc: LLMRunConfig, cfg: LLMTrainConfig, out: Path, work: Path, run_args: dict) -> dict:
    """SFT (or load) the model, train it in ``work`` (resuming from ``out``'s latest checkpoint), write the summary."""
    from .evaluation import evaluate
    from .spear import format_reward
    from .tasks import ArithmeticTask, arithmetic_answer_key, arithmetic_reward, build_tiny_lm
    from .templates import TEMPLATES
    from .trainer import LLMTrainer

    main = process_state().is_main_process
    task = ArithmeticTask(templates=rc.prompt_templates)  # held-out problems and evaluation: plain "a+b=" prompts
    held = task.heldout(rc.eval_prompts)  # never trained on, by SFT or RL
    seed_everything(cfg.seed)
    if rc.model:
        model, tokenizer = _load_lm(rc.model, "--model")
    elif rc.resume:
        model, tokenizer = _load_lm(out / "sft", "the run's SFT model")
    elif process_state().num_processes == 1:
        tiny = build_tiny_lm(task, seed=cfg.seed, sft_steps=rc.sft_steps, out_dir=work / "sft", exclude=held)
        model, tokenizer = tiny.model, tiny.tokenizer
    else:  # N processes: the main one runs SFT and saves it, every process loads the saved model
        _on_main(lambda: build_tiny_lm(task, seed=cfg.seed, sft_steps=rc.sft_steps, out_dir=work / "sft",
                                       exclude=held) and None)
        model, tokenizer = _load_lm(work / "sft", "the run's SFT model")

    for t in TEMPLATES[: rc.prompt_templates]:  # prompt augmentation: the tokenizer must spell every template
        text = t.prompt(12, "+", 39) + t.render(12, "+", 39)
        if tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) != text:
            raise ValueError(f"--prompt-templates {rc.prompt_templates}: the model's tokenizer cannot spell template "
                             f"{t.name!r} ({text!r}); SFT a model on the templates (no --model) or lower the count")

    def held_out_eval(m) -> dict[str, float]:
        ev = evaluate(m, tokenizer, held, arithmetic_reward, n_samples=16, ks=(1, 4, 16),
                      temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
        return {"greedy": ev.greedy_accuracy, **{f"pass@{k}": v for k, v in ev.pass_at.items()}, "entropy": ev.entropy}

    model.eval()
    before = held_out_eval(model)
    ref_model, start = None, 0
    if rc.resume:  # the policy continues from the checkpoint; the KL reference stays the initial model
        ckpt = list_checkpoints(out)[-1]
        kl = cfg.kl_coef > 0 or cfg.critic == "ppo_max"  # PPO-max's reward KL is to the initial model too
        ref_model = model if kl and cfg.reference == "initial" else None  # a soup is rebuilt
        model, _ = _load_lm(ckpt, "the checkpoint")
        model.eval()
    elif main:
        save_config(cfg, work)
        atomic_write_text(work / RUN_ARGS, json.dumps(run_args, indent=2))

    def reward(prompts, completions, **_):
        return arithmetic_reward(prompts, completions, partial_credit=rc.partial_credit)

    trainer_cls, extra = LLMTrainer, {"intrinsic_fn": format_reward} if cfg.spear else {}
    if cfg.critic == "ppo_max":  # PPO-max: the trainer with a critic (gendiff.llm.ppo_max); SPEAR is refused there
        from .ppo_max import PPOMaxTrainer as trainer_cls
    trainer = trainer_cls(model, tokenizer, reward, task.prompt_source(held), cfg, out_dir=work,
                          ref_model=ref_model, cluster_fn=arithmetic_answer_key, **extra)
    if rc.resume:
        start = trainer.load_checkpoint(ckpt)
        if start > cfg.steps:
            raise ValueError(f"{ckpt} is at step {start}, past --steps {cfg.steps}")
        log = work / "log.jsonl"  # drop lines logged after the checkpoint
        if log.exists() and main:
            lines = [ln for ln in log.read_text().splitlines() if log_step(ln) <= start]
            atomic_write_text(log, "".join(ln + "\n" for ln in lines))
        if main:
            save_config(cfg, work)  # the resumed run's steps
    logs = trainer.train(progress=rc.progress)
    after = held_out_eval(trainer.accelerator.unwrap_model(trainer.model))
    last = logs[-1] if logs else {}
    summary = {"task": rc.task, "loss": cfg.loss, "advantage": cfg.advantage, "critic": cfg.critic, "steps": cfg.steps,
               "seed": cfg.seed,
               "resumed_from": start, "eval_prompts": len(held), "before": before, "after": after,
               "accuracy_before": before["greedy"], "accuracy_after": after["greedy"],
               "final_reward": last.get("reward/mean"), "final_entropy": last.get("actor/entropy"),
               "empty_completions": trainer.state.empty_total}
    if main:
        atomic_write_text(work / "summary.json", json.dumps(summary, indent=2))
    return summary
