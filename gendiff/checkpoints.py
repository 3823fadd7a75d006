"""Training output folders: checkpoint discovery, atomic writes, refusing to clobber an earlier run.

Used by :mod:`gendiff.training`. A checkpoint is out_dir/checkpoint-<step>/; a folder is written under a
temporary name and renamed when complete, so a killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

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


def prepare_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start over an earlier run unless asked; remove what a killed save left behind."""
    if resume and overwrite:
        raise ValueError("pass either resume=True or overwrite=True, not both")
    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    if resume:
        if not list_checkpoints(out):
            raise FileNotFoundError(f"resume=True but {out} holds no complete {CKPT_PREFIX}<step> folder to resume from")
        return
    ours = [*list_checkpoints(out), *(out / n for n in ("model", "scheduler", "train_log.jsonl"))]
    ours = [p for p in ours if p.exists()]
    if ours and not overwrite:
        raise FileExistsError(
            f"{out} already holds a training run ({', '.join(p.name for p in ours)}); pass resume=True to "
            "continue it or overwrite=True to start over"
        )
    for p in ours:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def log_step(line: str) -> float:
    """Step of one train_log.jsonl line (inf for a torn or foreign line, so it is dropped)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf
