"""``gendiff offline synthesize``: a synthetic transition set for augmenting a Minari dataset, split over processes.

The generators are the ones ``train-agent`` uses inside its loop (PGD, Jackson et al. 2024; SynthER, Lu et al.
2023), run once and written to a file a user can load beside the real data (``safetensors.torch.load_file``: obs,
act, rew, next_obs, done in environment units, the layout of ``OfflineDataset.transitions()``).

1. Load the dataset (sizes, environment) and the generator: a saved trajectory pipeline (``pipeline``, from
   ``gendiff offline train-diffusion``) or a saved SynthER model (``synther``). With ``policy``, the learner whose
   weights ``train-agent`` wrote guides the pipeline's actions toward it (PGD); without, sampling is unguided.
2. Cut the work into chunks of ``chunk_windows`` windows (fewer if the request needs fewer; SynthER: that many
   times ``sample_horizon - 1`` transitions). Chunk i draws its noise from its own generator, seeded by (seed, i)
   alone, so the output does not depend on how many processes share the chunks.
3. Each process of an ``accelerate launch`` samples its chunks (round robin, :func:`gendiff.distributed.my_items`);
   the chunks are gathered in order (:func:`gendiff.distributed.gather_by_index`). One process: all chunks.
4. Rows with NaN/inf are dropped (and counted); a window that ends in a termination gives fewer rows than
   ``sample_horizon - 1``, so while fewer than ``num_transitions`` rows exist, another round of chunks (the next
   indices) is sampled. The main process keeps the first ``num_transitions`` rows and writes ``out`` atomically
   (the settings in the file's metadata) and a JSON summary beside it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from gendiff.config import check_literal_fields, check_numbers
from gendiff.distributed import gather_by_index, is_main_process, my_items, process_device
from gendiff.io import atomic_path, atomic_write_text, refuse_existing
from gendiff.offline.datasets import OfflineDataset, check_dataset_id, load_dataset
from gendiff.offline.pgd_loop import (
    TrainAgentConfig,
    finite_rows,
    load_learner_weights,
    sample_windows,
    with_sampler,
)

KEYS = ("obs", "act", "rew", "next_obs", "done")
MAX_ROUNDS = 20  # sampling rounds before giving up (each asks for what is still missing)


@dataclass
class SynthesizeConfig:
    """``gendiff offline synthesize`` (configs/offline_synthesize.yaml). Sampling settings default to
    ``train-agent``'s, so a file made here holds what a train-agent run of the same settings samples."""

    dataset_id: str = "gendiff/hopper/medium-v0"  # Minari dataset the generator was trained on (sizes, checks)
    pipeline: str = ""  # a saved trajectory pipeline (train-diffusion's <out_dir>/pipeline); give this or synther
    synther: str = ""  # a saved SynthER model (SynthER.save's folder); give this or pipeline
    policy: str = ""  # pipeline only: the .safetensors weights train-agent wrote; guides the actions (PGD)
    algo: Literal["td3bc", "iql", "prdc"] = "td3bc"  # the learner that wrote `policy`
    guidance_coeff: float = TrainAgentConfig.guidance_coeff  # PGD guidance scale (with policy)
    cosine_coeff: float = TrainAgentConfig.cosine_coeff  # PGD guidance schedule's cosine term
    normalize_grad: bool = TrainAgentConfig.normalize_grad  # guide with g / (||g|| + eps)
    num_transitions: int = 100_000  # transitions written (non-finite rows dropped first)
    sample_horizon: int = TrainAgentConfig.sample_horizon  # pipeline: window length (sample_horizon - 1 rows each)
    num_inference_steps: int = TrainAgentConfig.num_inference_steps  # denoising steps per sample
    sampler: Literal["heun", "euler"] = TrainAgentConfig.sampler  # pipeline: heun = EDM Algorithm 2, churn 80
    chunk_windows: int = 256  # windows per chunk; chunk i's noise depends on (seed, i) only
    seed: int = 0  # random seed
    device: str = "cpu"  # pipeline and policy device ("cuda", "auto"; each process its own GPU under a launch)
    out: str = "synthetic.safetensors"  # output file (must end in .safetensors; a .json summary beside it)
    overwrite: bool = False  # replace an existing out
    progress: bool = True  # show a progress bar (main process)

    def __post_init__(self) -> None:
        check_literal_fields(self)
        check_numbers(self, positive=("num_transitions", "sample_horizon", "num_inference_steps", "chunk_windows"),
                      nonnegative=("guidance_coeff", "cosine_coeff"))
        if self.pipeline and self.synther:
            raise ValueError(self._one_generator())
        if self.policy and not self.pipeline:
            raise ValueError("--policy guides a trajectory pipeline; SynthER samples transitions unguided")
        if not self.out.endswith(".safetensors"):
            raise ValueError(f"out must be a .safetensors file, got {self.out!r}")
        if self.dataset_id:
            check_dataset_id(self.dataset_id)


    def _one_generator(self) -> str:
        return ("give exactly one generator: --pipeline (a trajectory pipeline) or --synther (a SynthER model); "
                f"got pipeline={self.pipeline!r}, synther={self.synther!r}")


def chunk_generator(seed: int, index: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Step 2: the generator of chunk ``index``, seeded from (seed, index) through numpy's SeedSequence (distinct
    streams for every pair, unlike seed + index)."""
    state = int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(state)


def finite_and_count(rows: dict[str, Tensor]) -> tuple[dict[str, Tensor], int]:
    """(the rows with every entry finite, how many were dropped)."""
    kept = finite_rows(rows)
    return kept, rows["obs"].shape[0] - kept["obs"].shape[0]


def _generator(cfg: SynthesizeConfig, ds: OfflineDataset, device: str) -> tuple[Any, Any]:
    """Step 1: (pipeline or SynthER model, guiding policy or None)."""
    for what, path in (("pipeline", cfg.pipeline), ("synther", cfg.synther), ("policy", cfg.policy)):
        if path and not Path(path).exists():
            raise FileNotFoundError(f"--{what} {path}: no such file or folder")
    if cfg.synther:
        from gendiff.offline.synther import SynthER

        gen = SynthER.load(cfg.synther)
        if (gen.obs_dim, gen.act_dim) != (ds.obs_dim, ds.act_dim):
            raise ValueError(f"synther {cfg.synther}: a model of obs/act dims {gen.obs_dim}/{gen.act_dim}, dataset "
                             f"{ds.dataset_id!r} has {ds.obs_dim}/{ds.act_dim}")
        return gen, None
    from gendiff.offline.diffusion import load_trajectory_pipeline
    from gendiff.offline.learners import build_learner

    pipe = with_sampler(load_trajectory_pipeline(cfg.pipeline, ds, strict=False), cfg.sampler).to(device)
    policy = None
    if cfg.policy:
        policy = build_learner(cfg.algo, ds.transitions(), ds.action_low, ds.action_high, device=device)
        load_learner_weights(policy, cfg.policy)
    return pipe, policy


def windows_per_chunk(cfg: SynthesizeConfig) -> int:
    """Windows in every chunk of a run: ``chunk_windows``, or fewer when the whole request needs fewer."""
    return min(cfg.chunk_windows, math.ceil(cfg.num_transitions / max(cfg.sample_horizon - 1, 1)))


def _chunk(cfg: SynthesizeConfig, gen: Any, policy: Any, index: int, device: str) -> dict[str, Tensor]:
    """Step 3 for chunk ``index``: its transitions on the CPU (gathered between processes by pickling)."""
    g = chunk_generator(cfg.seed, index, "cpu" if cfg.synther else device)
    per = max(cfg.sample_horizon - 1, 1)
    size = windows_per_chunk(cfg)
    if cfg.synther:
        out = gen.sample(size * per, cfg.num_inference_steps, g)
    else:
        out = sample_windows(gen, size, cfg, policy, g)
    return {k: out[k].detach().float().cpu() for k in KEYS}


def synthesize(cfg: SynthesizeConfig) -> dict[str, Any]:
    """Steps 1-4; returns the summary (also written beside ``cfg.out`` by the main process)."""
    if not (cfg.pipeline or cfg.synther):  # checked here, not in the config: its defaults name no generator
        raise ValueError(cfg._one_generator())
    out = Path(cfg.out)
    summary_path = out.with_suffix(".json")
    refuse_existing([out, summary_path], cfg.overwrite, "synthetic data")  # before any work
    t0 = time.perf_counter()
    ds = load_dataset(cfg.dataset_id)
    ds.require_continuous("synthesize")
    device = process_device(cfg.device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    gen, policy = _generator(cfg, ds, device)
    per = max(cfg.sample_horizon - 1, 1)
    chunks: list[dict[str, Tensor]] = []
    have, dropped, rounds = 0, 0, 0
    bar = tqdm(total=cfg.num_transitions, disable=not (cfg.progress and is_main_process()), desc="synthesize")
    while have < cfg.num_transitions:  # a window that terminates early yields fewer than sample_horizon - 1 rows
        if rounds == MAX_ROUNDS:
            raise ValueError(f"{MAX_ROUNDS} rounds of sampling gave {have} of {cfg.num_transitions} usable "
                             "transitions (windows ending at once, or diverging); nothing written")
        start = len(chunks)
        n_new = math.ceil(math.ceil((cfg.num_transitions - have) / per) / windows_per_chunk(cfg))
        mine = {start + j: finite_and_count(_chunk(cfg, gen, policy, start + j, device)) for j in my_items(n_new)}
        for rows_i, bad in gather_by_index(mine):
            chunks.append(rows_i)
            have, dropped = have + rows_i["obs"].shape[0], dropped + bad
        bar.update(min(have, cfg.num_transitions) - bar.n)
        rounds += 1
    bar.close()
    rows = {k: torch.cat([c[k] for c in chunks])[: cfg.num_transitions].contiguous() for k in KEYS}
    summary = {"config": asdict(cfg), "transitions": int(rows["obs"].shape[0]), "non_finite_dropped": int(dropped),
               "chunks": len(chunks), "rounds": rounds,
               "generator": "synther" if cfg.synther else ("pgd" if policy is not None else "unguided"),
               "done_rate": float(rows["done"].mean()), "wall_s": time.perf_counter() - t0}
    if is_main_process():
        from safetensors.torch import save_file

        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            save_file(rows, str(tmp), metadata={"gendiff_synthesize": json.dumps(summary)})
        atomic_write_text(summary_path, json.dumps(summary, indent=2))
    return summary


def run_synthesize(cfg: SynthesizeConfig) -> dict[str, Any]:
    """``gendiff offline synthesize``: :func:`synthesize`, printing the summary as JSON (main process)."""
    res = synthesize(cfg)
    if is_main_process():
        print(json.dumps({k: v for k, v in res.items() if k != "config"}, indent=2))
    return res
