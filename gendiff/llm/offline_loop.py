"""The loop shared by the LLM trainers that learn from a fixed dataset (``gendiff.llm.prefs.PrefTrainer``,
``gendiff.llm.oreo.OREOTrainer``): seeded epoch order over the rows, one ``step()`` per batch, log.jsonl every
``log_every`` steps, the final model (and whatever the trainer adds) saved at the end."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


class OfflineStepLoop:
    """Mixin. The trainer provides ``config`` (``steps``, ``batch_size``, ``log_every``), ``data`` (the rows),
    ``order`` (list, the rest of this epoch), ``rng`` (random.Random), ``out_dir`` (Path or None), ``model``,
    ``tokenizer``, ``step_count`` and ``step() -> metrics``; and may override :meth:`loop_postfix`,
    :meth:`save_extras` and ``loop_desc``."""

    loop_desc = "offline"
    config: Any
    data: Any
    order: list[int]
    rng: random.Random
    out_dir: Path | None
    step_count: int

    def _next_indices(self) -> list[int]:
        """The next ``batch_size`` rows of the seeded epoch order (a new shuffled epoch when one runs out)."""
        out: list[int] = []
        while len(out) < min(self.config.batch_size, len(self.data)):
            if not self.order:
                self.order = list(range(len(self.data)))
                self.rng.shuffle(self.order)
            out.append(self.order.pop())
        return out

    def loop_postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        """What the progress bar shows after a step."""
        return {}

    def save_extras(self, out_dir: Path) -> None:
        """What the trainer saves beside final/ (nothing here)."""

    def train(self, steps: int | None = None, progress: bool = True) -> list[dict[str, float]]:
        """Run ``steps`` steps (default ``config.steps``); write log.jsonl, final/ and :meth:`save_extras` when
        ``out_dir`` is set. Returns every step's metrics."""
        steps = self.config.steps if steps is None else steps
        log = None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            log = (self.out_dir / "log.jsonl").open("a")
        logs = []
        try:
            bar = tqdm(range(steps), desc=self.loop_desc, disable=not progress)
            for _ in bar:
                m = self.step()
                logs.append(m)
                bar.set_postfix(**self.loop_postfix(m))
                if log is not None and self.step_count % self.config.log_every == 0:
                    log.write(json.dumps(m) + "\n")
        finally:
            if log is not None:
                log.close()
        if self.out_dir is not None:
            self.model.save_pretrained(self.out_dir / "final")
            self.tokenizer.save_pretrained(self.out_dir / "final")
            self.save_extras(self.out_dir)
        return logs

    def step(self) -> dict[str, float]:  # pragma: no cover - every trainer defines its own
        raise NotImplementedError
