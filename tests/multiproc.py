"""Launch ``python -m gendiff ...`` (or a script) under ``accelerate launch`` with several CPU processes.

accelerate's own CPU multi-process launch (``accelerate launch --cpu --num_processes N``) needs MPI; without it
accelerate starts one process. The documented CPU route (README "Scaling out") is torch's launcher through
``accelerate launch --multi_gpu`` with ``ACCELERATE_USE_CPU=true``: N processes on the gloo backend
(``DistributedType.MULTI_CPU``), the same code path as N GPUs with NCCL.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ACCELERATE = Path(sys.executable).with_name("accelerate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(args: list[str], nproc: int = 2, module: bool = True) -> list[str]:
    """The ``accelerate launch`` command line for ``python -m gendiff ARGS`` (module) or ``python ARGS``."""
    head = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", str(nproc), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    return head + (["-m", "gendiff"] if module else []) + args


def launch_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a CPU launch: this one plus the CPU flag, one thread per process, no downloads."""
    return {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}


def launch(args: list[str], nproc: int = 2, module: bool = True, timeout: float = 600,
           cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run under ``nproc`` CPU processes; returns the completed process (stdout and stderr captured)."""
    return subprocess.run(launch_command(args, nproc, module), capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=launch_env(env))
