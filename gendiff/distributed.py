"""Work split over the processes of an ``accelerate launch`` (one process: everything, nothing gathered).

The benchmarks and the synthesis loops hand out independent items (batches of slices, batches of trajectories),
each with its own random generator seeded from its index, so which process runs an item does not change its
result; gathering the results by index rebuilds exactly what one process computes. Built on accelerate's
``PartialState`` (the launch's rank, size and device) and ``gather_object``.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import gather_object, parse_flag_from_env

T = TypeVar("T")

__all__ = ["gather_by_index", "is_main_process", "my_items", "process_device", "process_state", "wait_for_everyone"]


def process_state() -> PartialState:
    """accelerate's process state (shared with every ``Accelerator``), created with the CPU flag that a CPU launch
    sets (``ACCELERATE_USE_CPU``): a plain ``PartialState()`` ignores it and, created first, would leave every CPU
    process of the launch alone (each a one-process run)."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def my_items(n: int) -> list[int]:
    """The indices of ``n`` items this process runs: round robin (process p of N: p, p + N, ...)."""
    state = process_state()
    return list(range(state.process_index, n, state.num_processes))


def gather_by_index(mine: dict[int, T]) -> list[T]:
    """Every process's ``{index: result}`` gathered in every process; the results in index order.

    Results are pickled between processes (``gather_object``): keep them on the CPU.
    """
    if process_state().num_processes > 1:
        mine = dict(gather_object(list(mine.items())))
    return [mine[i] for i in sorted(mine)]


def is_main_process() -> bool:
    """True in the process that writes files and prints (the only one without a launch)."""
    return process_state().is_main_process


def wait_for_everyone() -> None:
    """Barrier across the launch's processes (a no-op in one process)."""
    process_state().wait_for_everyone()


def process_device(device: str) -> str:
    """``device`` for this process: under a multi-GPU launch, ``auto`` / ``cuda`` become this process's GPU."""
    state = process_state()
    if state.num_processes > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return str(state.device)
    return device
