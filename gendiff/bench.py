"""``gendiff bench sampler``: what the shared loop costs over the plain diffusers loop.

Step 1. One UNet2DModel and DDIM scheduler; the same seed for every variant.
Step 2. Per-step time of (a) the diffusers loop as its docs write it, (b) GuidedSampler without
        guidance, (c) GuidedSampler with DPS (forward + backward) and (d) with x0-space guidance
        (forward only). Variants are interleaved and repeated; the median is reported.
Step 3. Ratios (b)/(a) (target <= 1.05) and (c)/(d); JSON + markdown under ``out_dir``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

from gendiff.config import check_literal_fields, check_numbers, to_dict
from gendiff.guidance import DPSGuidance, GuidanceState, X0SpaceGuidance
from gendiff.io import atomic_write_text, refuse_existing
from gendiff.models.unet2d import make_unet2d
from gendiff.operators import PixelOperator
from gendiff.sampler import GuidedSampler


@dataclass
class SamplerBenchConfig:
    """Settings of ``gendiff bench sampler`` (defaults mirrored in configs/bench_sampler.yaml)."""

    out_dir: str = "benchmarks/sampler"  # folder for sampler.json and sampler.md
    unet: Literal["tiny", "small", "base"] = "small"  # U-Net size (untrained: only time is measured)
    size: int = 32  # image side in pixels
    channels: int = 1  # image channels
    batch: int = 16  # images per sampling run
    steps: int = 10  # sampling steps per run
    repeats: int = 5  # timed runs of each variant (interleaved)
    threads: int = 1  # torch CPU threads
    seed: int = 0  # random seed
    overwrite: bool = False  # replace sampler.json / sampler.md in out_dir

    def __post_init__(self) -> None:
        check_literal_fields(self)
        check_numbers(self, positive=("size", "channels", "batch", "steps", "repeats", "threads"))


def _plain_loop(model, sched, shape, steps: int, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    sched.set_timesteps(steps)
    start = time.perf_counter()
    x = randn_tensor(shape, generator=g) * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            out = model(sched.scale_model_input(x, t), t).sample
            x = sched.step(out, t, x, generator=g).prev_sample
    return (time.perf_counter() - start) / steps


def _guided(model, sched, terms, shape, steps: int, seed: int, state) -> float:
    sampler = GuidedSampler(model, sched, terms)
    start = time.perf_counter()
    sampler(shape[1:], batch_size=shape[0], num_inference_steps=steps,
            generator=torch.Generator().manual_seed(seed), state=state)
    return (time.perf_counter() - start) / steps


def cpu_name() -> str:
    """CPU model name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line(threads: str) -> str:
    """The one-line machine statement of a CPU benchmark's result: CPU model and the machine's core count, torch
    version and ``threads`` (e.g. "1 thread per run; runs share the cores")."""
    return f"{cpu_name()} ({os.cpu_count()} cores), torch {torch.__version__}, {threads}"


def package_versions(names: tuple[str, ...] = ("torch", "numpy", "gymnasium", "mujoco", "minari")) -> dict[str, str]:
    """The installed version of each distribution in ``names`` ("not installed" where missing): recorded beside
    results whose numbers depend on them (a rebuilt dataset that differs can then be traced to an upgrade)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine_info() -> dict:
    """CPU model, GPU name (if any), platform, torch version and threads: stated beside every benchmark."""
    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "gpu": gpu, "platform": platform.platform(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


def run_sampler_bench(cfg: SamplerBenchConfig) -> dict:
    """Steps 1-3; returns the JSON payload."""
    out = Path(cfg.out_dir)
    refuse_existing([out / "sampler.json", out / "sampler.md"], cfg.overwrite)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = make_unet2d(cfg.unet, cfg.size, cfg.channels).eval()
    sched = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    shape = (cfg.batch, cfg.channels, cfg.size, cfg.size)
    op = PixelOperator((cfg.channels, cfg.size, cfg.size), batch_size=cfg.batch)
    op.mask = torch.rand(cfg.batch, op.num_candidates, generator=torch.Generator().manual_seed(1)) < 0.3
    y = op.forward(torch.randn(shape))
    variants = {
        "plain_diffusers": lambda: _plain_loop(model, sched, shape, cfg.steps, cfg.seed),
        "guided_no_guidance": lambda: _guided(model, sched, [], shape, cfg.steps, cfg.seed, None),
        "guided_dps": lambda: _guided(model, sched, [DPSGuidance(1.0)], shape, cfg.steps, cfg.seed,
                                      GuidanceState(operator=op, y=y)),
        "guided_x0_space": lambda: _guided(model, sched, [X0SpaceGuidance(0.5)], shape, cfg.steps, cfg.seed,
                                           GuidanceState(operator=op, y=y)),
    }
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(cfg.repeats):  # interleaved, so drifts in machine load hit every variant alike
        for k, fn in variants.items():
            times[k].append(fn())
    med = {k: statistics.median(v) for k, v in times.items()}
    payload = {
        "machine": machine_info(), "settings": to_dict(cfg),
        "seconds_per_step_median": med, "seconds_per_step_all": times,
        "ratio_guided_over_plain": med["guided_no_guidance"] / med["plain_diffusers"],
        "ratio_dps_over_x0_space": med["guided_dps"] / med["guided_x0_space"],
    }
    atomic_write_text(out / "sampler.json", json.dumps(payload, indent=2))
    atomic_write_text(out / "sampler.md", _table(payload))
    print(_table(payload))
    return payload


def _table(p: dict) -> str:
    s = p["settings"]
    rows = [f"# GuidedSampler benchmark\n\nMachine: {p['machine']['cpu']} ({p['machine']['platform']}), torch "
            f"{p['machine']['torch']}, {s['threads']} thread(s). UNet2DModel '{s['unet']}' at {s['size']}x{s['size']}, "
            f"{s['channels']} channel(s), batch {s['batch']}, DDIM {s['steps']} steps, median of {s['repeats']} "
            f"interleaved runs after one warm-up, seed {s['seed']}.\n",
            "| variant | seconds / step |", "|---|---:|"]
    rows += [f"| {k} | {v:.4f} |" for k, v in p["seconds_per_step_median"].items()]
    rows += ["", f"GuidedSampler (no guidance) / plain diffusers loop: **{p['ratio_guided_over_plain']:.3f}** "
             "(target <= 1.05)", "",
             f"DPS (forward + backward) / x0-space guidance (forward only): **{p['ratio_dps_over_x0_space']:.2f}**"]
    return "\n".join(rows) + "\n"
