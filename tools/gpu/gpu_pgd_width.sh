#!/usr/bin/env bash
# Does a wider trajectory U-Net stop blurring the synthetic states? (issue 26; benchmarks/offline/README.md,
# "Where the blur enters"). On CPU budgets the 32-channel model's states end 0.27-0.30 from the data (real: 0.146)
# whether sampled from sigma 0.2 or from noise, and twice the training moved that by <= 0.02.
#
# For each base width in PGD_WIDTHS (default "32 128"; the CPU model has 32, the reference 1024), train the PGD
# trajectory model on gendiff/hopper/medium-v3's training episodes (trajectory_model.py's split; windows of 64, lr
# 2e-3, EMA 0.995, batch PGD_BATCH = 256, bf16 autocast) for PGD_MINUTES (default 3) of wall time, then measure it
# with benchmarks/offline/denoise_back.py's function (64 held-out windows noised to sigma 0.2 / 1 / 80 and sampled
# back with 64-step Heun, churn 80 and 0). The 32-channel row is the control at the same GPU budget.
# Hard limit 540 s. Output: $OUT/gpu_pgd_width.json (with the card's name).
#
# Before the call, here: bash tools/gpu/gpu_prepare_wheels.sh; mkdir -p runs/minari && cp -a
# "$MINARI_DATASETS_PATH"/gendiff runs/minari/   (15 MB; run with carry [".gpu_wheels", "runs/minari"]).
# CPU smoke of the same code (random episodes, toy sizes): GPU_PGD_WIDTH_SMOKE=1 bash tools/gpu/gpu_pgd_width.sh
source "$(dirname "$0")/gpu_env.sh"
export MINARI_DATASETS_PATH="${PGD_MINARI:-$PWD/runs/minari}"
timeout 540 python - "$OUT_DIR" <<'PY'
import json, os, sys, tempfile, time

import numpy as np
import torch

sys.path[:0] = ["tools/gpu", "benchmarks/offline"]  # gpu_device.py, denoise_back.py (the cwd is the repo root)
from denoise_back import denoise_back
from gpu_device import pick_device

from gendiff.offline.datasets import Episode, OfflineDataset, load_dataset
from gendiff.offline.diffusion import TrajectoryDiffusionConfig, edm_scheduler, trajectory_unet, trajectory_windows
from gendiff.offline.trajectories import split_episodes
from gendiff.pipelines.pgd import PolicyGuidedTrajectoryPipeline
from gendiff.training import PRIOR_EMA_DECAY, TrainConfig, train_denoiser

smoke, dev, card, sync = pick_device("GPU_PGD_WIDTH_SMOKE")
if smoke:  # random-walk states, uniform actions: only that the code runs end to end
    rng = np.random.default_rng(0)
    f32 = np.float32
    eps = [Episode((rng.standard_normal((41, 11)).cumsum(0) * 0.1).astype(f32), rng.uniform(-1, 1, (40, 3)).astype(f32),
                   rng.standard_normal(40).astype(f32), np.zeros(40, f32), np.eye(1, 40, 39, dtype=f32)[0])
           for _ in range(40)]
    ds = OfflineDataset("smoke/random-v0", None, eps, np.full(3, -1.0, f32), np.ones(3, f32))
else:
    ds = load_dataset("gendiff/hopper/medium-v3")
widths = [int(w) for w in os.environ.get("PGD_WIDTHS", "8" if smoke else "32 128").split()]
minutes = float(os.environ.get("PGD_MINUTES", "0.05" if smoke else "3"))
batch = int(os.environ.get("PGD_BATCH", "8" if smoke else "256"))
horizon, n_windows, full_steps = (16, 4, 4) if smoke else (64, 64, 64)
train_eps, _ = split_episodes(ds.episodes, 0)
train_ds = OfflineDataset(ds.dataset_id, ds.env_id, train_eps, ds.action_low, ds.action_high)
rows = []
for width in widths:
    cfg = TrajectoryDiffusionConfig(dataset_id=ds.dataset_id, horizon=horizon, dim=width, lr=2e-3)
    windows, norm = trajectory_windows(train_ds, cfg)
    torch.manual_seed(0)
    unet = trajectory_unet(norm, cfg)
    tcfg = TrainConfig(steps=10**8, batch_size=batch, lr=cfg.lr, ema_decay=PRIOR_EMA_DECAY, checkpoint_every=10**8,
                       log_every=200, max_minutes=minutes, mixed_precision="no" if smoke else "bf16")
    sync(); t0 = time.perf_counter()
    res = train_denoiser(unet, norm.normalize(windows), edm_scheduler(), tcfg, tempfile.mkdtemp(), progress=False)
    sync(); train_s = time.perf_counter() - t0
    pipe = PolicyGuidedTrajectoryPipeline(unet=res.model, scheduler=edm_scheduler(), normalizer=norm.to_config()).to(dev)
    measured, n_held = denoise_back(pipe, ds, [0.2, 1.0, 80.0], n_windows, horizon, full_steps, seed=0)
    rows.append({"width": width, "params": sum(p.numel() for p in unet.parameters()), "steps": res.global_step,
                 "train_s": train_s, "last_losses": res.losses[-3:], "denoise_back": measured, "held_out": n_held})
    dist = ", ".join(f"{r['sigma']:g}/{r['churn']}: {r['state_nn']['mean']:.3f}" for r in measured)
    print(f"width {width}: {rows[-1]['params']:,} params, {res.global_step} steps in {train_s:.0f} s; {dist}", flush=True)
out = {"card": card, "torch": torch.__version__, "dataset": ds.dataset_id, "batch": batch, "minutes": minutes,
       "horizon": horizon, "rows": rows}
with open(f"{sys.argv[1]}/gpu_pgd_width.json", "w") as f:
    json.dump(out, f, indent=2)
print("card:", card)
PY
