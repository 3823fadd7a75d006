"""Training output folders: checkpoint discovery, atomic writes, refusing to clobber an earlier run.

Used by :mod:`gendiff.training`. A checkpoint is out_dir/checkpoint-<step>/; a folder is written under a
temporary name and renamed when complete, so a killed run never leaves a half-written checkpoint. A run that
replaces an earlier one is built beside it and swapped in when complete (:mod:`gendiff.io`); a resumed run must
have been started with the same settings (:func:`check_resume_config`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gendiff.io import discard_staging, recover_swap, staging_dir, swap_dir

CKPT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-"


class CheckpointError(ValueError):
    """A checkpoint folder is corrupt, incomplete or does not fit the model."""


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders in ``out_dir`` (out_dir/checkpoint-<step>), oldest first."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = [p for p in out.iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX) and p.name[len(CKPT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CKPT_PREFIX):]))


def atomic_dir(final: Path, write: Callable[[Path], None]) -> None:
    """Fill a temporary folder with ``write`` and rename it to ``final`` (a kill leaves no half folder)."""
    tmp = final.parent / f"{TMP_PREFIX}{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


RUN_ENTRIES = ("model", "scheduler", "train_log.jsonl")  # with checkpoint-<step>/: what marks an earlier run
# fields of a run's config that may change when it is resumed; every other field must match the saved one
RESUMABLE_FIELDS = frozenset({"steps", "train_steps", "max_minutes", "checkpoint_every", "log_every",
                              "checkpoints_keep", "resume", "overwrite", "progress", "device", "out", "out_dir"})


def owned_by_run(p: Path) -> bool:
    """Whether an entry of a run folder is written by the run (replaced by a new run; anything else is kept)."""
    return p.name in (*RUN_ENTRIES, "config.yaml") or p.name.startswith((CKPT_PREFIX, TMP_PREFIX))


def prepare_out_dir(out: Path, resume: bool, overwrite: bool) -> Path:
    """Refuse to start over an earlier run unless asked; return the folder to train in.

    A fresh run or a resumed one trains in ``out``. With ``overwrite`` over an earlier run, the new run is built in
    a staging folder beside it (:func:`gendiff.io.staging_dir`) that :func:`finish_run` swaps in when complete:
    until then, and after a kill, the earlier run stays as it was. What a killed save or swap left is cleaned up.
    """
    if resume and overwrite:
        raise ValueError("pass either --resume (resume=True) or --overwrite (overwrite=True), not both")
    recover_swap(out, owned_by_run)
    discard_staging(out)
    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    if resume:
        if not list_checkpoints(out):
            raise FileNotFoundError(f"--resume (resume=True), but {out} holds no complete {CKPT_PREFIX}<step> "
                                    "folder to resume from")
        return out
    ours = [*list_checkpoints(out), *(out / n for n in RUN_ENTRIES)]
    ours = [p for p in ours if p.exists()]
    if not ours:
        return out
    if not overwrite:
        raise FileExistsError(
            f"{out} already holds a training run ({', '.join(p.name for p in ours)}); pass --resume "
            "(resume=True) to continue it or --overwrite (overwrite=True) to start over"
        )
    stage = staging_dir(out)
    stage.mkdir()
    return stage


def finish_run(work: Path, out: Path) -> None:
    """Swap a run built in a staging folder (``work``) in place of the earlier run in ``out``; no-op otherwise."""
    if work != out:
        swap_dir(work, out, owned_by_run)


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], where: str | os.PathLike) -> None:
    """Raise ValueError listing the fields (outside RESUMABLE_FIELDS) in which ``current`` differs from ``saved``."""
    diff = [f"{k} (saved {saved[k]!r}, now {v!r})" for k, v in current.items()
            if k not in RESUMABLE_FIELDS and k in saved and saved[k] != v]
    if diff:
        raise ValueError(f"cannot resume {where}: the run was started with other settings: {'; '.join(diff)}. "
                         "Resume with the saved values, or pass --overwrite to start over")


def log_step(line: str) -> float:
    """Step of one train_log.jsonl line (inf for a torn or foreign line, so it is dropped)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf
