"""Nothing lost, nothing silent: how gendiff writes outputs and reads saved files.

Writing (build-then-swap):
- a results file is written under a temporary name beside its final one and renamed over it when complete
  (:func:`atomic_path`, :func:`atomic_write_text`); an existing one is replaced only with ``--overwrite``
  (:func:`refuse_existing`, checked before any work);
- a run folder that replaces an earlier run is built in a staging folder beside it (:func:`staging_dir`) and
  swapped in when complete (:func:`swap_dir`); a kill leaves the earlier run as it was, and a kill inside the
  swap itself is completed or undone by :func:`recover_swap` the next time.

Reading: :func:`loading` turns every way a saved file can be broken (missing, truncated, foreign, a pickle where
safetensors belong, a bad config.json) into one :class:`LoadError` line that names the file and the cause, and
never passes on a library's advice to load unsafe pickles.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

OVERWRITE_FLAG = "--overwrite"


class LoadError(ValueError):
    """A saved model, pipeline, checkpoint or config cannot be loaded; the message names the file and the cause."""


# --------------------------------------------------------------------------------------------------
# Results files
# --------------------------------------------------------------------------------------------------
def refuse_existing(paths: Iterable[str | os.PathLike], overwrite: bool, what: str = "results") -> None:
    """Raise FileExistsError naming the first of ``paths`` that exists, unless ``overwrite``.

    Called before any work, so a refused command costs nothing and changes nothing.
    """
    if overwrite:
        return
    for p in map(Path, paths):
        if p.exists():
            raise FileExistsError(f"{p} exists ({what} of an earlier run); pass {OVERWRITE_FLAG} to replace it or "
                                  "choose another --out")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); on success rename it over ``path``, else delete it.

    Example: ``with atomic_path(png) as tmp: fig.savefig(tmp)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader (or a kill) sees the old file or the new one, never half."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


RESULT_EXTENSIONS = (".json", ".md", ".png", ".csv", ".txt", ".jsonl")


def beside(out: str | os.PathLike, ext: str) -> Path:
    """The results file ``out`` with the extension ``ext`` (e.g. a table's ".md" beside its ".json").

    A results extension (:data:`RESULT_EXTENSIONS`) ending ``out`` is replaced; anything else is kept and ``ext``
    appended: ``--out runs/coeff0.3`` gives ``runs/coeff0.3.md``, where ``Path.with_suffix`` gives
    ``runs/coeff0.md`` and lets the runs of two coefficients overwrite each other's files.
    """
    p = Path(out)
    return p.with_suffix(ext) if p.suffix.lower() in RESULT_EXTENSIONS else p.with_name(p.name + ext)


def refuse_existing_table(out: str | os.PathLike, overwrite: bool, what: str = "a benchmark table") -> None:
    """:func:`refuse_existing` for a table written as ``out``.json and ``out``.md (:func:`beside`)."""
    refuse_existing([beside(out, ".json"), beside(out, ".md")], overwrite, what)


# --------------------------------------------------------------------------------------------------
# Run folders
# --------------------------------------------------------------------------------------------------
def staging_dir(final: str | os.PathLike) -> Path:
    """Where a replacement for the folder ``final`` is built: a hidden sibling, ``.<name>.staging``."""
    final = Path(final)
    return final.parent / f".{final.name}.staging"


def _old_dir(final: Path) -> Path:
    return final.parent / f".{final.name}.old"


def swap_dir(new: str | os.PathLike, final: str | os.PathLike,
             owned: Callable[[Path], bool] = lambda p: True) -> None:
    """Move the complete folder ``new`` to ``final``, replacing the earlier one.

    Two renames (final -> .final.old, new -> final), then the entries of the earlier folder that the run does not
    own (``owned(path)`` False: the user's own files) are moved across and the rest is deleted.
    """
    new, final = Path(new), Path(final)
    old = _old_dir(final)
    recover_swap(final, owned)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    _finish_swap(final, old, owned)


def _finish_swap(final: Path, old: Path, owned: Callable[[Path], bool]) -> None:
    if not old.exists():
        return
    for p in old.iterdir():
        if not owned(p) and not (final / p.name).exists():
            os.replace(p, final / p.name)
    shutil.rmtree(old)


def recover_swap(final: str | os.PathLike, owned: Callable[[Path], bool] = lambda p: True) -> None:
    """Complete (or undo) a :func:`swap_dir` that a kill interrupted between its renames."""
    final = Path(final)
    old = _old_dir(final)
    if not old.exists():
        return
    if not final.exists():  # killed between the two renames: the earlier folder goes back
        os.replace(old, final)
    else:
        _finish_swap(final, old, owned)


def discard_staging(final: str | os.PathLike) -> None:
    """Delete what an interrupted replacement of ``final`` left in its staging folder (it never counted)."""
    stage = staging_dir(final)
    if stage.exists():
        warnings.warn(f"removing {stage}: an unfinished replacement of {final} that an interrupted run left",
                      stacklevel=3)
        shutil.rmtree(stage)


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
_UNSAFE_HINT = re.compile(r"weights_only|trust the source|pickle", re.IGNORECASE)


def error_cause(err: BaseException) -> str:
    """One line saying why loading failed, without any advice to load untrusted pickles."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, pickle.UnpicklingError) or _UNSAFE_HINT.search(text):
        return ("the file holds pickled Python objects or is not a weights file; gendiff loads only safetensors and "
                "plain tensors (weights_only=True) and never runs pickled code")
    first = text.split(". ")[0]
    if len(first) > 300:
        first = first[:297] + "..."
    return f"{type(err).__name__}: {first}"


class _DropErrors(logging.Filter):
    """Drops ERROR records: the error they announce reaches the user as the one LoadError line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextmanager
def loading(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn any error raised while loading ``what`` from ``path`` into one :class:`LoadError` line.

    While loading, the error records that diffusers / transformers log before raising are dropped (their warnings
    still show), so that a broken file gives one line, not a log message and then the error.
    """
    handlers = [h for name in ("diffusers", "transformers") for h in logging.getLogger(name).handlers]
    drop = _DropErrors()
    for h in handlers:
        h.addFilter(drop)
    try:
        yield
    except LoadError:
        raise
    except Exception as err:  # every way a saved file can be broken ends here, named
        raise LoadError(f"cannot load {what} from {path}: {error_cause(err)}") from None
    finally:
        for h in handlers:
            h.removeFilter(drop)


# --------------------------------------------------------------------------------------------------
# Devices and seeds
# --------------------------------------------------------------------------------------------------
def resolve_device(device: str, field: str = "device") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other name must be a torch device that exists here."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{field} {device!r} is not a device name (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{field} {device!r}: this torch build or machine has no CUDA device; use auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{field} {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type not in ("cpu", "cuda"):
        avail = getattr(torch, dev.type, None)
        if avail is None or not getattr(avail, "is_available", lambda: False)():
            raise ValueError(f"{field} {device!r}: no {dev.type} device here; use auto, cpu or cuda")
    return dev


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's and Python's global generators before anything random is built."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def tree_fingerprint(path: str | os.PathLike) -> str:
    """A short content hash of a file or of every file under a folder (relative names and bytes, in sorted order).

    Results that span sessions record it for the inputs they were made from (a dataset, a saved pipeline), so that
    runs made from a rebuilt input that differs are never mixed into one table unnoticed. Raises
    FileNotFoundError naming ``path`` when it does not exist.
    """
    import hashlib

    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"cannot fingerprint {root}: no such file or folder")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root) if f != root else f.name).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:16]
