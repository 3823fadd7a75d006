#!/usr/bin/env bash
# ADS at fastMRI size (128 x 128) on one GPU, under 5 minutes on an H100/H200.
# Prepare on the CPU machine with benchmarks/gpu_prepare_wheels.sh, then run through the device tool with
# carry [".gpu_wheels"]. Writes $OUT/gpu_ads.{json,md} (or benchmarks/ when $OUT is unset) naming the card.
# Steps: 1. install the carried wheels into a private folder; 2. synthetic fastMRI-format data (128 x 128);
# 3. a 'base' U-Net prior trained for a few minutes in bf16; 4. ADS vs fixed masks at 4x on 32 slices with
# 16 particles, batched over slices; 5. slices per second.
source "$(dirname "$0")/gpu_env.sh"
OUT="$OUT_DIR"
W=$(mktemp -d)
python -m gendiff.cli mri make-synthetic --out "$W/train" --volumes 64 --slices 16 --size 128 --seed 0
python -m gendiff.cli mri make-synthetic --out "$W/test" --volumes 4 --slices 8 --size 128 --seed 1000
timeout 150 python -m gendiff.cli mri train-prior --data "$W/train" --out "$W/prior" --size 128 --unet base \
    --steps 3000 --batch-size 64 --checkpoint-every 1000 || echo "prior training stopped at the time limit"
python -m gendiff.cli mri benchmark --prior "$W/prior" --data "$W/test" --acceleration 4 --slices 32 \
    --particles 16 --steps 200 --batch-slices 32 --guidance dps --strategies ads,equispaced,random,fixed_dps \
    --out "$OUT/gpu_ads.json" --progress false
python - "$OUT/gpu_ads.json" "$OUT/gpu_card.txt" <<'PY'
import json, sys
p = json.load(open(sys.argv[1])); card = open(sys.argv[2]).read().strip()
p["card"] = card
for r in p["rows"]:
    r["slices_per_second"] = 1.0 / r["seconds_per_slice"]
json.dump(p, open(sys.argv[1], "w"), indent=2)
with open(sys.argv[1].replace(".json", ".md"), "a") as f:
    f.write(f"\nCard: {card}. Slices per second (16 particles, batched over 32 slices): "
            + ", ".join(f"{r['strategy']} {r['slices_per_second']:.2f}" for r in p["rows"]) + "\n")
PY
