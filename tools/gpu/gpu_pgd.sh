#!/usr/bin/env bash
# Policy-guided trajectory diffusion throughput on one GPU (Hopper sizes: obs 11, action 3, windows of 64),
# run on an H200 on 2026-12-04 (benchmarks/offline/gpu_pgd_h200.json). Hard limit 280 s (well under 5 minutes).
#
# The GPU machine has torch (CUDA), accelerate, huggingface-hub, safetensors, tqdm, scikit-image (scipy) but not
# diffusers / gymnasium: their Python 3.12 wheels travel in the git-ignored folder .gpu_wheels/
# (tools/gpu/gpu_prepare_wheels.sh) and are installed without network into a private target folder.
# gendiff itself comes from its carried wheel (tools/gpu/gpu_prepare_wheels.sh), with gendiff.offline and
# gendiff.pipelines in it.
# Measures: synthetic transitions per second, unguided and PGD-guided (TD3+BC actor as N(pi(s), 1)), for
# 128 EDM steps, plus 500 denoiser training steps/s, plus the offline learners' updates/s on the GPU (TD3+BC, IQL,
# PRDC; batch 256 of which 16 real, 256x2 MLPs: the training loop's BatchSampler.sample + learn, no host sync).
# Output: $OUT/gpu_pgd.json (with the card's name).
# CPU smoke of the same code: GPU_PGD_SMOKE=1 bash tools/gpu/gpu_pgd.sh
source "$(dirname "$0")/gpu_env.sh"
timeout 280 python - "$OUT_DIR" <<'PY'
import json, sys, tempfile, time
import torch
from gendiff.models import TemporalUNet1D
from gendiff.offline.diffusion import edm_scheduler
from gendiff.offline.learners import build_learner
from gendiff.offline.pgd_loop import BatchSampler
from gendiff.offline.td3bc import TD3BC
from gendiff.trajectory_layout import TrajectoryNormalizer
from gendiff.pipelines.pgd import PolicyGuidedTrajectoryPipeline
from gendiff.training import TrainConfig, train_denoiser

sys.path.insert(0, "tools/gpu")  # gpu_device.py (the working directory is the repo root: gpu_env.sh)
from gpu_device import pick_device

smoke, dev, card, sync = pick_device("GPU_PGD_SMOKE")
obs_dim, act_dim, H = 11, 3, 64
D = obs_dim + act_dim + 2
windows = torch.randn(4096, 32, D)  # timing only: random data stand in for Hopper windows
norm = TrajectoryNormalizer.fit(windows, obs_dim, act_dim, [-1.0] * act_dim, [1.0] * act_dim)
unet = TemporalUNet1D(transition_dim=D, dim=64 if not smoke else 16, dim_mults=(1, 2, 4))
steps = 500 if not smoke else 5
t0 = time.perf_counter()
res = train_denoiser(unet, norm.normalize(windows), edm_scheduler(), TrainConfig(steps=steps, batch_size=256,
                     checkpoint_every=steps), tempfile.mkdtemp(), progress=False)
train_steps_per_s = steps / (time.perf_counter() - t0)
pipe = PolicyGuidedTrajectoryPipeline(unet=res.model, scheduler=edm_scheduler(), normalizer=norm.to_config()).to(dev)
agent = TD3BC(obs_dim, act_dim, [-1.0] * act_dim, [1.0] * act_dim, torch.randn(1000, obs_dim))
for m in (agent.actor, agent.state_norm, agent.scaler):
    m.to(dev)
rows = []
n_steps = 128 if not smoke else 4
for batch in ((64, 256, 1024, 4096) if not smoke else (4,)):
    for name, policy, coeff in (("unguided", None, 0.0), ("pgd", agent, 0.3)):
        gen = torch.Generator(device=dev).manual_seed(0)
        pipe(batch_size=min(batch, 8), horizon=H, num_inference_steps=2, policy=policy, guidance_scale=coeff,
             policy_type="deterministic", generator=gen)  # warm-up
        sync(); t0 = time.perf_counter()
        out = pipe(batch_size=batch, horizon=H, num_inference_steps=n_steps, policy=policy, guidance_scale=coeff,
                   policy_type="deterministic", generator=gen)
        sync(); dt = time.perf_counter() - t0
        n = out.transitions["obs"].shape[0]
        rows.append({"mode": name, "windows": batch, "transitions": n, "seconds": dt, "transitions_per_s": n / dt})
        print(f"{name:8s} {batch:5d} windows x {H} steps, {n_steps} EDM steps: {dt:7.2f} s, {n / dt:10.0f} transitions/s")
learner_rows = []
n_rows = 200_000 if not smoke else 512
real = {"obs": torch.randn(n_rows, obs_dim), "act": torch.rand(n_rows, act_dim) * 2 - 1, "rew": torch.randn(n_rows),
        "next_obs": torch.randn(n_rows, obs_dim), "done": torch.zeros(n_rows)}
for algo in ("td3bc", "iql", "prdc"):
    learner = build_learner(algo, real, [-1.0] * act_dim, [1.0] * act_dim, seed=0, device=dev)
    sampler = BatchSampler(learner, real, 256, 16, seed=0)
    sampler.set_synthetic({k: v[: n_rows // 2] for k, v in real.items()})
    for _ in range(20):  # warm-up: cuBLAS handles, the allocator, the actor's every-2nd-update branch
        learner.learn(sampler.sample())
    n_updates = (2000 if algo != "prdc" else 500) if not smoke else 4
    sync(); t0 = time.perf_counter()
    for _ in range(n_updates):
        learner.learn(sampler.sample())
    sync(); dt = time.perf_counter() - t0
    learner_rows.append({"algo": algo, "updates": n_updates, "seconds": dt, "updates_per_s": n_updates / dt})
    print(f"{algo:6s} {n_updates} updates (batch 256): {dt:6.2f} s, {n_updates / dt:8.0f} updates/s")
out = {"card": card, "torch": torch.__version__, "horizon": H, "edm_steps": n_steps,
       "train_steps_per_s_batch256": train_steps_per_s, "rows": rows, "learners": learner_rows,
       "learner_dataset_rows": n_rows}
with open(f"{sys.argv[1]}/gpu_pgd.json", "w") as f:
    json.dump(out, f, indent=2)
print("card:", card)
PY
