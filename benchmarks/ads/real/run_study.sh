#!/usr/bin/env bash
# The issue-33 study, one single-threaded job after another (CPU; see README.md beside this script for timings).
# Needs: `make setup`, benchmarks/ads/real/make_data.sh (DATA) and the real prior (PRIOR, README.md: train-prior).
# Steps (each writes JSON + markdown under benchmarks/ads/real/):
#   1. CS weights on the real validation volume (tune_cs.py); 2. the real test split, 4x and 8x: ADS and every
#   fixed mask with DPS, and every mask with zero-filling / CS-TV / L1-wavelet; 3. phantoms: data, CS weight on the
#   phantom validation slices, centre block (DPS) and CS rows beside the stored shipped-prior tables.
# STEPS="0 1 2 3" (default) runs all; e.g. STEPS=3 only the phantoms. 0: why_ads.py on 4 validation slices.
set -euo pipefail
cd "$(dirname "$0")/../../.."
DATA="${DATA:-runs/real_data}"; PRIOR="${PRIOR:-benchmarks/ads/priors/real64ft}"; PH="${PH:-runs/phantom_data}"
OUT=benchmarks/ads/real; G=.venv/bin/gendiff; PY=.venv/bin/python
export OMP_NUM_THREADS=1 MPLBACKEND=Agg
STEPS="${STEPS:-0 1 2 3}"
chosen() { $PY -c "import json,sys; print(json.load(open(sys.argv[1]))['chosen'][sys.argv[2]])" "$1" "$2"; }
if [[ " $STEPS " == *" 0 "* ]]; then  # the measurement behind the analysis (validation slices)
  $PY $OUT/why_ads.py --prior "$PRIOR" --data "$DATA/val" --train-data "$DATA/train" --slices 4 \
    --out $OUT/why_ads_real64.json
fi
if [[ " $STEPS " == *" 1 "* ]]; then
  $PY $OUT/tune_cs.py --data "$DATA/val" --train-data "$DATA/train" --size 64 \
    --out $OUT/tune_cs_real64.json
fi
if [[ " $STEPS " == *" 2 "* ]]; then  # one process per acceleration, side by side; one run per strategy (run_parts.sh)
  bash $OUT/run_parts.sh 4 & bash $OUT/run_parts.sh 8 & wait
fi
if [[ " $STEPS " == *" 3 "* ]]; then
  test -d "$PH/test" || $G mri make-synthetic --out "$PH/test" --volumes 8 --slices 8 --size 128 --seed 1000
  test -d "$PH/val" || $G mri make-synthetic --out "$PH/val" --volumes 4 --slices 4 --size 128 --seed 2000
  test -f $OUT/tune_cs_phantom64.json || \
    $PY $OUT/tune_cs.py --data "$PH/val" --size 64 --slices 8 --reconstructors cs_tv --out $OUT/tune_cs_phantom64.json
  test -f $OUT/tune_cs_phantom32.json || \
    $PY $OUT/tune_cs.py --data "$PH/val" --size 32 --slices 8 --reconstructors cs_tv --out $OUT/tune_cs_phantom32.json  # the demo's
  W=$(chosen $OUT/tune_cs_phantom64.json cs_tv)
  for a in 4 8; do
    B="--prior benchmarks/ads/priors/mri64v6k --data $PH/test --acceleration $a --slices 32 --num-particles 8 --num-inference-steps 50
       --batch-slices 8 --acquisition-window 0.1,0.4 --cs-tv-weight $W --no-progress"
    $G mri benchmark $B --strategies centre --reconstructors dps,zero_filled,cs_tv --out $OUT/phantom64_centre_acc$a.json
    $G mri benchmark $B --strategies fastmri_equispaced,fastmri_random --reconstructors zero_filled,cs_tv \
      --out $OUT/phantom64_cs_acc$a.json
    $PY $OUT/phantom_table.py --stored benchmarks/ads/mri64v6k_shipped_acc$a.json \
      --new $OUT/phantom64_centre_acc$a.json,$OUT/phantom64_cs_acc$a.json \
      --data "$PH/test" --cs-tv-weight "$W" --out $OUT/phantom64_acc$a.json
  done
fi
