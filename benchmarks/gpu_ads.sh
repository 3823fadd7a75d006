#!/usr/bin/env bash
# ADS at fastMRI size (128 x 128) on one GPU, under 5 minutes on an H100/H200.
# Prepare on the CPU machine with benchmarks/gpu_prepare_wheels.sh, then run through the device tool with
# carry [".gpu_wheels"]. Writes $OUT/gpu_ads.{json,md} (or benchmarks/ when $OUT is unset) naming the card.
# Steps: 1. install the carried wheels into a private folder; 2. synthetic fastMRI-format data (128 x 128);
# 3. a 'base' U-Net prior trained for 2 minutes (--max-minutes) in bf16; 4. ADS vs every fixed mask at 4x on
# 32 slices with 16 particles, 50 steps, batched over slices; 5. ADS and fixed_dps again under bf16 autocast;
# 6. slices per second.
source "$(dirname "$0")/gpu_env.sh"
OUT="$OUT_DIR"
W=$(mktemp -d)
python -m gendiff.cli mri make-synthetic --out "$W/train" --volumes 64 --slices 16 --size 128 --seed 0
python -m gendiff.cli mri make-synthetic --out "$W/test" --volumes 4 --slices 8 --size 128 --seed 1000
python -m gendiff.cli mri train-prior --data "$W/train" --out "$W/prior" --size 128 --unet base \
    --steps 20000 --batch-size 64 --checkpoint-every 1000 --max-minutes 2 --mixed-precision bf16
python -m gendiff.cli mri benchmark --prior "$W/prior" --data "$W/test" --train-data "$W/train" --acceleration 4 \
    --slices 32 --particles 16 --batch-slices 32 --guidance dps \
    --strategies ads,equispaced,random,fixed_dps,fastmri_equispaced,fastmri_random,data_variance \
    --out "$OUT/gpu_ads.json" --progress false
# bf16 where quality holds: ADS and fixed-mask DPS again under bf16 autocast, same slices and noise
python -m gendiff.cli mri benchmark --prior "$W/prior" --data "$W/test" --acceleration 4 --slices 32 \
    --particles 16 --batch-slices 32 --guidance dps --strategies ads,fixed_dps --precision bf16 \
    --out "$OUT/gpu_ads_bf16.json" --progress false
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
    bf = {r["strategy"]: r for r in json.load(open(sys.argv[1].replace(".json", "_bf16.json")))["rows"]}
    fp = {r["strategy"]: r for r in p["rows"]}
    for s in bf:
        f.write(f"bf16 autocast, {s}: SSIM x100 {100 * bf[s]['ssim']:.2f} (fp32 {100 * fp[s]['ssim']:.2f}), "
                f"{1 / bf[s]['seconds_per_slice']:.2f} slices/s (fp32 {1 / fp[s]['seconds_per_slice']:.2f})\n")
PY
