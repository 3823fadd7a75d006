"""Run by test_llm_multiprocess under ``accelerate launch`` (N CPU processes): the TRL adapter on the tiny model.

Usage: trl_two_process.py SAVED_MODEL OUT_DIR. Each process writes OUT_DIR/process<i>.json: whether its
parameters changed, a fingerprint of its weights (sum of |w| per tensor) and, from the main process, TRL's
log history; and the error LLMTrainer raises when prompts_per_step is not divisible by the processes.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig

from gendiff.llm.losses import ClipCovConfig
from gendiff.llm.tasks import ArithmeticTask
from gendiff.llm.trainer import LLMTrainConfig, LLMTrainer
from gendiff.llm.trl import GendiffGRPOTrainer


def main(saved: str, out: str) -> None:
    """Two TRL steps with gendiff's clip_cov loss; per device 4 completions (one prompt x 4), 8 globally."""
    prompts, _ = ArithmeticTask().sample(32, random.Random(0))
    args = GRPOConfig(output_dir=out, per_device_train_batch_size=4, num_generations=4, max_completion_length=5,
                      bf16=False, gradient_checkpointing=False, learning_rate=1e-2, max_steps=2, logging_steps=1,
                      save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0)

    def reward(prompts, completions, **_):
        return [float(c.strip().startswith("1")) + 0.1 * i for i, c in enumerate(completions)]

    trainer = GendiffGRPOTrainer(model=saved, reward_funcs=reward, args=args,
                                 train_dataset=Dataset.from_dict({"prompt": prompts}),
                                 processing_class=AutoTokenizer.from_pretrained(saved),
                                 gendiff_loss="clip_cov", gendiff_loss_config=ClipCovConfig(clip_ratio=0.05))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    acc = trainer.accelerator
    params = list(acc.unwrap_model(trainer.model).parameters())
    res = {"num_processes": acc.num_processes, "process_index": acc.process_index,
           "changed": any(not (a == b).all() for a, b in zip(before, params, strict=True)),
           "weights": [float(p.detach().abs().sum()) for p in params],
           "log_history": trainer.state.log_history if acc.is_main_process else []}
    try:
        LLMTrainer(AutoModelForCausalLM.from_pretrained(saved), AutoTokenizer.from_pretrained(saved),
                   lambda p, c: [0.0] * len(c), prompts, LLMTrainConfig(prompts_per_step=3))
        res["indivisible_error"] = ""
    except ValueError as err:
        res["indivisible_error"] = str(err)
    Path(out, f"process{acc.process_index}.json").write_text(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
