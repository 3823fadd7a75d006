#!/usr/bin/env bash
# ADS at fastMRI size (128 x 128) on one GPU, under 5 minutes on an H100/H200.
# Prepare on the CPU machine with tools/gpu/gpu_prepare_wheels.sh, then run through the device tool with
# carry [".gpu_wheels"]. Writes $OUT/gpu_ads.{json,md} (or benchmarks/ when $OUT is unset) naming the card.
# Steps: 1. install the carried wheels into a private folder; 2. synthetic fastMRI-format data (128 x 128);
# 3. a 'base' U-Net prior trained for 2 minutes (--max-minutes) in bf16; 4. ADS vs every fixed mask at 4x on
# 32 slices (8 at a time) with 16 particles, 50 steps, batched over slices, the ADS window (0.1, 0.4) of the 64 x 64 study
# (chosen on validation slices for a v-prediction prior, benchmarks/ads/README.md); 5. ADS and fixed_dps again under bf16 autocast;
# 6. slices per second.
# CPU smoke of the same commands at toy sizes (32 x 32, 2 slices, 2 particles; ~1 min): GPU_ADS_SMOKE=1 bash tools/gpu/gpu_ads.sh
# Real images instead of phantoms: GPU_ADS_REAL=DIR (the train/ and test/ folders benchmarks/ads/real/make_data.sh
# writes at 128 x 128; carry DIR with the wheels): the prior trains on DIR/train with dihedral augmentation and the
# benchmark runs on DIR/test (24 slices).
source "$(dirname "$0")/gpu_env.sh"
OUT="$OUT_DIR"
W=$(mktemp -d)
if [ "${GPU_ADS_SMOKE:-0}" = 1 ]; then
  SIZE=32; VOL=2; SL=2; TVOL=1; UNET=tiny; TRAIN="--steps 2 --batch-size 4"; N=2; P=2; STEPS="--num-inference-steps 4"
else
  SIZE=128; VOL=64; SL=16; TVOL=4; UNET=base; TRAIN="--steps 20000 --batch-size 64"; N=32; P=16; STEPS=""
fi
# slices sampled together: 8 x 16 particles of a 'base' U-Net with DPS gradients take ~35 GB; 32 x 16 ran out of
# the H200's 140 GB (measured 2026-12-04). GPU_ADS_SLICES=8 benchmarks fewer slices (one batch) when time is short.
N=${GPU_ADS_SLICES:-$N}; B=$(( N < 8 ? N : 8 ))
AUG=none
if [ -n "${GPU_ADS_REAL:-}" ]; then
  mkdir -p "$W/train" "$W/test" && cp "$GPU_ADS_REAL"/train/*.h5 "$W/train" && cp "$GPU_ADS_REAL"/test/*.h5 "$W/test"
  AUG=dihedral
else
  python -m gendiff.cli mri make-synthetic --out "$W/train" --volumes $VOL --slices $SL --size $SIZE --seed 0
  python -m gendiff.cli mri make-synthetic --out "$W/test" --volumes $TVOL --slices 8 --size $SIZE --seed 1000
fi
python -m gendiff.cli mri train-prior --data "$W/train" --out "$W/prior" --size $SIZE --unet $UNET \
    $TRAIN --checkpoint-every 1000 --max-minutes 2 --mixed-precision bf16 --augment $AUG
python -m gendiff.cli mri benchmark --prior "$W/prior" --data "$W/test" --train-data "$W/train" --acceleration 4 \
    --slices $N --num-particles $P --batch-slices $B --guidance dps --acquisition-window 0.1,0.4 $STEPS \
    --strategies ads,equispaced,random,fixed_dps,fastmri_equispaced,fastmri_random,data_variance \
    --out "$OUT/gpu_ads.json" --no-progress --overwrite
# bf16 where quality holds: ADS and fixed-mask DPS again under bf16 autocast, same slices and noise
python -m gendiff.cli mri benchmark --prior "$W/prior" --data "$W/test" --acceleration 4 --slices $N \
    --num-particles $P --batch-slices $B --guidance dps --acquisition-window 0.1,0.4 $STEPS --strategies ads,fixed_dps --precision bf16 \
    --out "$OUT/gpu_ads_bf16.json" --no-progress --overwrite
python - "$OUT/gpu_ads.json" "$OUT/gpu_card.txt" <<'PY'
import json, sys
p = json.load(open(sys.argv[1])); card = open(sys.argv[2]).read().strip()
p["card"] = card
for r in p["rows"]:
    r["slices_per_second"] = 1.0 / r["seconds_per_slice"]
json.dump(p, open(sys.argv[1], "w"), indent=2)
with open(sys.argv[1].replace(".json", ".md"), "a") as f:
    c = p["config"]
    f.write(f"\nCard: {card}. Slices per second ({c['num_particles']} particles, batched over {c['batch_slices']} slices): "
            + ", ".join(f"{r['strategy']} {r['slices_per_second']:.2f}" for r in p["rows"]) + "\n")
    bf = {r["strategy"]: r for r in json.load(open(sys.argv[1].replace(".json", "_bf16.json")))["rows"]}
    fp = {r["strategy"]: r for r in p["rows"]}
    for s in bf:
        f.write(f"bf16 autocast, {s}: SSIM x100 {100 * bf[s]['ssim']:.2f} (fp32 {100 * fp[s]['ssim']:.2f}), "
                f"{1 / bf[s]['seconds_per_slice']:.2f} slices/s (fp32 {1 / fp[s]['seconds_per_slice']:.2f})\n")
PY
