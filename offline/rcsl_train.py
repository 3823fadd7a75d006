"""``gendiff offline train-rcsl``: train RCBC or DoC on a Discrete-action Minari dataset and evaluate it.

1. Load the dataset (gendiff.offline.datasets.load_dataset: unknown ids list the local ones) and build the learner
   (:data:`gendiff.offline.rcsl.RCSL_LEARNERS`) with the config's hyper-parameters.
2. Train ``steps`` updates.
3. Evaluate: for every target return (RCBC needs targets; DoC also runs its own argmax-value choice, target
   None) play ``eval_episodes`` episodes; report achieved vs conditioned / predicted returns.
4. Write ``out``/metrics.json and the weights (``out``/model/, safetensors).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gendiff.config import check_literal_fields, check_numbers
from gendiff.io import refuse_existing, seed_everything
from gendiff.offline.datasets import check_dataset_id, load_dataset
from gendiff.offline.doc import DoCConfig
from gendiff.offline.rcbc import RCBCConfig
from gendiff.offline.rcsl import RCSL_LEARNERS, RCSLLearner, evaluate_conditioned


@dataclass
class RCSLTrainConfig:
    """``gendiff offline train-rcsl`` (configs/offline_train_rcsl.yaml). Learner hyper-parameters not listed here
    keep the defaults of RCBCConfig / DoCConfig (gendiff/offline/rcbc.py, doc.py)."""

    dataset_id: str = "gendiff/gamble/mixed-v0"  # Minari dataset with Discrete actions (gendiff offline make-gamble)
    algo: Literal["rcbc", "doc"] = "rcbc"  # rcbc: return-conditioned BC; doc: Dichotomy of Control
    steps: int = 2000  # training updates
    seed: int = 0  # random seed
    targets: list[float] = field(default_factory=lambda: [2.0, 4.0, 6.0])  # target returns to condition on
    eval_episodes: int = 500  # episodes per evaluation
    beta: float | None = None  # doc: weight of the mutual-information penalty (None: DoCConfig's default)
    prior_weight: float | None = None  # doc: weight of KL(q || prior) (None: DoCConfig's default)
    out: str = "runs/rcsl"  # output folder: metrics.json and model/
    overwrite: bool = False  # replace the results of an earlier run at `out`
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        check_literal_fields(self)
        check_numbers(self, positive=("steps", "eval_episodes"), nonnegative=("beta", "prior_weight"))
        if self.algo == "rcbc" and not self.targets:
            raise ValueError("rcbc needs at least one target return (--targets)")
        check_dataset_id(self.dataset_id)

    def learner_config(self) -> RCBCConfig | DoCConfig:
        """The learner's config: its defaults, with the overrides given here."""
        if self.algo == "rcbc":
            return RCBCConfig()
        given = {k: v for k, v in (("beta", self.beta), ("prior_weight", self.prior_weight)) if v is not None}
        return DoCConfig(**given)


def build_rcsl(cfg: RCSLTrainConfig) -> RCSLLearner:
    """Step 1: the learner for ``cfg`` on its dataset (KeyError naming the local ids for an unknown dataset)."""
    ds = load_dataset(cfg.dataset_id)
    return RCSL_LEARNERS.get(cfg.algo)(ds, cfg.learner_config(), seed=cfg.seed)


def evaluate_targets(learner: RCSLLearner, env_id: str, targets: list[float | None], episodes: int,
                     seed: int = 10_000) -> list[dict[str, Any]]:
    """Step 3: one evaluation per target (None: DoC's argmax-value latents), without the per-episode lists."""
    rows = []
    for target in targets:
        res = evaluate_conditioned(learner, env_id, episodes, target, seed)
        rows.append({"target": target, **{k: v for k, v in res.items() if k not in ("returns", "predicted")}})
    return rows


def run_train_rcsl(cfg: RCSLTrainConfig) -> dict[str, Any]:
    """Steps 1-4 of the module docstring; prints and returns the metrics."""
    out = Path(cfg.out)
    refuse_existing([out / "metrics.json"], cfg.overwrite)
    seed_everything(cfg.seed)
    learner = build_rcsl(cfg)
    metrics = learner.train(cfg.steps, progress=cfg.progress)
    env_id = load_dataset(cfg.dataset_id).env_id
    if env_id is None:
        raise ValueError(f"dataset {cfg.dataset_id!r} names no environment to evaluate in")
    targets: list[float | None] = [float(t) for t in cfg.targets]
    if cfg.algo == "doc":
        targets = [None, *targets]
    result = {"config": dataclasses.asdict(cfg), "learner_config": dataclasses.asdict(learner.config),
              "final_losses": metrics[-1], "evaluations": evaluate_targets(learner, env_id, targets, cfg.eval_episodes)}
    out.mkdir(parents=True, exist_ok=True)
    learner.save(out / "model")
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["evaluations"], indent=2))
    return result
