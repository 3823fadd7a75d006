#!/usr/bin/env bash
# GoRL decoder throughput on one GPU (HopperStand sizes: obs 15, action 4), prepared for an H100 / H200.
# Not run on the project's CPUs. Finishes in well under 5 minutes (hard limit 280 s below).
#
# The GPU machine has torch (CUDA), accelerate, huggingface-hub, safetensors, tqdm but not diffusers / gymnasium:
# their Python 3.12 wheels travel in the git-ignored folder .gpu_wheels/ (tools/gpu/gpu_prepare_wheels.sh) and are
# installed here without network into a private target folder. Run on an H200 on 2026-12-04
# (benchmarks/gorl/gpu_gorl_h200.json).
# Output: $OUT/gpu_gorl.json (+ the card's name); stdout shows a table.
# CPU smoke of the same code at small batches: GPU_GORL_SMOKE=1 bash tools/gpu/gpu_gorl.sh
source "$(dirname "$0")/gpu_env.sh"
timeout 280 python - "$OUT_DIR" <<'PY'
import json, sys, time
import torch
from gendiff.rl.decoders import DiffusionDecoder, FlowDecoder

sys.path.insert(0, "tools/gpu")  # gpu_device.py (the working directory is the repo root: gpu_env.sh)
from gpu_device import pick_device

smoke, dev, card, sync = pick_device("GPU_GORL_SMOKE")
obs_dim, act_dim = 15, 4  # dm_control hopper-stand
rows = []
for cls in (FlowDecoder, DiffusionDecoder):
    dec = cls(obs_dim, act_dim, width=256, depth=3, num_inference_steps=10).to(dev)
    # a short refit so the weights are not at initialisation (timing only; data are random)
    obs, u = torch.randn(4096, obs_dim, device=dev), torch.randn(4096, act_dim, device=dev)
    sync(); t0 = time.perf_counter()
    fit_steps = 200 if not smoke else 2
    dec.fit(obs, u, steps=fit_steps, batch_size=256)
    sync(); fit_s = time.perf_counter() - t0
    for batch in ((1, 64, 1024, 16384, 131072) if not smoke else (1, 64)):
        o, z = torch.randn(batch, obs_dim, device=dev), torch.randn(batch, act_dim, device=dev)
        for _ in range(3):
            dec.decode(o, z)
        sync()
        reps = 20 if batch <= 16384 else 5
        t0 = time.perf_counter()
        for _ in range(reps):
            dec.decode(o, z)
        sync()
        per_call = (time.perf_counter() - t0) / reps
        rows.append({"decoder": cls.__name__, "batch": batch, "nfe_per_action": dec.nfe_per_action,
                     "us_per_call": per_call * 1e6, "actions_per_s": batch / per_call,
                     "fit_steps": fit_steps, "fit_s": fit_s})
        print(f"{cls.__name__:17s} batch {batch:7d}: {per_call*1e3:8.2f} ms/call, {batch/per_call:12.0f} actions/s")
out = {"card": card, "torch": torch.__version__, "obs_dim": obs_dim, "act_dim": act_dim, "rows": rows}
with open(f"{sys.argv[1]}/gpu_gorl.json", "w") as f:
    json.dump(out, f, indent=2)
print("card:", card)
PY
