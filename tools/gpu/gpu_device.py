"""Device choice shared by the inline Python of tools/gpu/gpu_gorl.sh and gpu_pgd.sh (run from the repo root).

``pick_device("GPU_PGD_SMOKE")`` returns (smoke, device, card name, synchronise): the CUDA GPU, or the CPU when the
environment sets the smoke flag to 1 (toy sizes, to check the script end to end without a GPU).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import torch


def pick_device(smoke_flag: str) -> tuple[bool, torch.device, str, Callable[[], None]]:
    """(smoke, device, card, sync); exits with a message when there is no GPU and no smoke flag."""
    smoke = os.environ.get(smoke_flag) == "1"
    if torch.cuda.is_available():
        return smoke, torch.device("cuda"), torch.cuda.get_device_name(0), torch.cuda.synchronize
    if not smoke:
        sys.exit(f"this script needs a CUDA GPU (or {smoke_flag}=1 for a CPU smoke run at toy sizes)")
    return smoke, torch.device("cpu"), "CPU smoke", lambda: None
