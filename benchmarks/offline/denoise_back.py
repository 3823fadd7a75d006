r"""Where the trajectory model's blur enters: real windows noised to a level sigma and sampled back to sigma = 0.

``coverage.py`` measured the generated states as lying 1.8-3.1x farther from the real data than held-out real
states do. Generation runs the sampler from sigma_max = 80; starting it instead from real windows noised to a lower
sigma shows at which noise levels the denoiser stops returning samples to the data (SDEdit, Meng et al. 2022):

1. Episodes are split as ``trajectory_model.py`` splits them (the pipeline it exported never trained on the held-out
   ones); the held-out episodes give windows x0 of ``--horizon`` steps, the training episodes' states the reference
   set (z-scored by their own mean / std, a KD-tree).
2. For each start level sigma in ``--sigmas``: x = x0 + s0 n (n ~ N(0, I), s0 the scheduler's first level, which
   folds in step 0's churn), then the pipeline's sampler run from sigma (EDM's schedule with sigma_max = sigma;
   steps ``--inference-steps`` x log(sigma / sigma_min) / log(80 / sigma_min), at least 4), with the reference's
   churn (80) and without (0).
3. Per row: each sampled state's distance to the nearest reference state (mean, 95 % bootstrap over states), and the
   mean squared change of the states and actions against x0 (the model's z units; noise variance sigma^2 before
   denoising). The yardstick: x0's own states. The states of a window are correlated, so the intervals (over
   states) are narrower than intervals over windows would be.

  python benchmarks/offline/denoise_back.py --tiny --pipeline P   # smoke: 4 windows, 4 steps (a few seconds)
Full commands and results: benchmarks/offline/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from scipy.spatial import cKDTree
from torch import Tensor

from gendiff.bench import machine_line
from gendiff.io import beside, refuse_existing_table
from gendiff.offline.datasets import OfflineDataset, load_dataset
from gendiff.offline.diffusion import edm_heun_scheduler, load_trajectory_pipeline
from gendiff.offline.trajectories import make_windows, split_episodes
from gendiff.pipelines.pgd import PolicyGuidedTrajectoryPipeline
from gendiff.schedulers import EDMHeunScheduler
from gendiff.stats import mean_ci


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset-id", default="gendiff/hopper/medium-v3")
    p.add_argument("--pipeline", required=True, help="a saved trajectory pipeline folder")
    p.add_argument("--sigmas", default="0.05,0.2,0.5,1,2,5,80")
    p.add_argument("--windows", type=int, default=64, help="held-out windows (at most as many as there are)")
    p.add_argument("--horizon", type=int, default=64)
    p.add_argument("--inference-steps", type=int, default=64, help="steps of a full run from sigma_max = 80")
    p.add_argument("--seed", type=int, default=0, help="the episode split's seed (trajectory_model.py's) and the noise")
    p.add_argument("--out", default="benchmarks/offline/denoise_back_hopper")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out .json / .md")
    a = p.parse_args()
    refuse_existing_table(a.out, a.overwrite)
    if a.tiny:
        a.sigmas, a.windows, a.horizon, a.inference_steps = "0.2,80", 4, 16, 4
    return a


def steps_from(sigma: float, full_steps: int, sched: EDMHeunScheduler) -> int:
    """Step 2: the share of a full run's steps that lies below ``sigma`` on a log scale (at least 4)."""
    lo, hi = sched.config.sigma_min, sched.config.sigma_max
    return max(4, round(full_steps * math.log(sigma / lo) / math.log(hi / lo)))


def denoise_back(pipe: PolicyGuidedTrajectoryPipeline, ds: OfflineDataset, sigmas: list[float], windows: int,
                 horizon: int, full_steps: int, seed: int) -> tuple[list[dict[str, Any]], int]:
    """Steps 1-3 for one pipeline (on its own device): (rows, number of held-out episodes). The first row is the
    yardstick (real x0); then one row per start sigma and churn (the reference's 80, and 0)."""
    train_eps, held_eps = split_episodes(ds.episodes, seed)  # 1.
    norm, dev = pipe.normalizer, pipe.device
    x0 = norm.normalize(make_windows(held_eps, ds.action_low, ds.action_high, horizon, horizon))[:windows]
    ref = torch.cat([torch.as_tensor(e.observations[:-1], dtype=torch.float32) for e in train_eps])  # [N, S]
    mu, sd = ref.mean(0), ref.std(0) + 1e-6
    tree = cKDTree(((ref - mu) / sd).double().numpy())

    def measure(x: Tensor) -> dict[str, Any]:  # x [W, H, D] z-scored windows (CPU)
        obs = norm.unnormalize(x)[..., norm.obs_slice].reshape(-1, norm.obs_dim)
        dist = torch.as_tensor(tree.query(((obs - mu) / sd).double().numpy(), k=1)[0], dtype=torch.float32)
        return {"state_nn": mean_ci(dist.numpy()), "obs_change": float((x - x0)[..., norm.obs_slice].square().mean()),
                "act_change": float((x - x0)[..., norm.act_slice].square().mean())}

    rows: list[dict[str, Any]] = [{"sigma": 0.0, "churn": None, "steps": 0, **measure(x0)}]
    base = edm_heun_scheduler(pipe.scheduler)
    gen = torch.Generator().manual_seed(seed)  # start noise; on a GPU the churn noise has its own generator
    pipe_gen = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(seed)
    for sigma in sigmas:  # 2.
        for churn in (base.config.s_churn, 0.0):
            sched = EDMHeunScheduler.from_config(base.config, sigma_max=sigma, s_churn=churn)
            n = steps_from(sigma, full_steps, base)
            sched.set_timesteps(n)
            s0 = sched.init_noise_sigma
            start = x0 / s0 + torch.randn(x0.shape, generator=gen)
            out = pipe.with_scheduler(sched)(batch_size=x0.shape[0], horizon=horizon, num_inference_steps=n,
                                             latents=start[:, None].to(dev), generator=pipe_gen)
            rows.append({"sigma": sigma, "churn": churn, "steps": n, "start_sigma": s0,
                         **measure(norm.normalize(out.windows.float().cpu()))})  # 3.
            print(f"sigma {sigma:g} churn {churn:g}: state distance {rows[-1]['state_nn']['mean']:.4f}", flush=True)
    return rows, len(held_eps)


def main() -> None:
    a = _args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ds = load_dataset(a.dataset_id)
    pipe = load_trajectory_pipeline(a.pipeline, ds, strict=False)
    rows, n_held = denoise_back(pipe, ds, [float(s) for s in a.sigmas.split(",")], a.windows, a.horizon,
                                a.inference_steps, a.seed)
    n_windows = rows[0]["state_nn"]["n"] // a.horizon
    res = {"settings": vars(a), "rows": rows, "held_out_episodes": n_held, "wall_s": time.perf_counter() - t0,
           "machine": machine_line("1 thread")}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    beside(out, ".json").write_text(json.dumps(res, indent=1))
    md = [f"# Real windows noised and sampled back: {a.dataset_id}", "",
          f"Machine: {res['machine']}. Pipeline {a.pipeline}; {n_windows} windows of {a.horizon} steps from the "
          f"{n_held} held-out episodes (split seed {a.seed}); reference: the training episodes' states; a full "
          f"run {a.inference_steps} Heun steps; intervals over states (correlated within a window: too narrow). "
          f"Wall {res['wall_s']:.0f} s.", "",
          "| start sigma | churn | steps | state distance to the data [95 %] | state change vs x0 (z^2) | "
          "action change vs x0 (z^2) |", "|---|---|---|---|---|---|"]
    for r in rows:
        m, real = r["state_nn"], r["churn"] is None
        start, churn = ("real x0", "") if real else (f"{r['sigma']:g}", f"{r['churn']:g}")
        md.append(f"| {start} | {churn} | {r['steps'] or ''} | {m['mean']:.4f} [{m['ci95'][0]:.4f}, "
                  f"{m['ci95'][1]:.4f}] | {r['obs_change']:.4g} | {r['act_change']:.4g} |")
    beside(out, ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
