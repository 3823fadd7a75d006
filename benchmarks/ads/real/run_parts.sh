#!/usr/bin/env bash
# The real test table as one `gendiff mri benchmark` run per strategy, in priority order, so that a run cut short
# still leaves complete, paired rows (merge_tables.py pairs them; the numbers equal one joint run's).
# Usage: bash benchmarks/ads/real/run_parts.sh ACCELERATION   (one process per acceleration, side by side)
set -euo pipefail
cd "$(dirname "$0")/../../.."
A="$1"; DATA="${DATA:-runs/real_data}"; PRIOR="${PRIOR:-benchmarks/ads/priors/real64ft}"; OUT=benchmarks/ads/real
P="$OUT/parts"; mkdir -p "$P"
export OMP_NUM_THREADS=1 MPLBACKEND=Agg
W_TV=$(.venv/bin/python -c "import json; print(json.load(open('$OUT/tune_cs_real64.json'))['chosen']['cs_tv'])")
W_WL=$(.venv/bin/python -c "import json; print(json.load(open('$OUT/tune_cs_real64.json'))['chosen']['cs_wavelet'])")
run() {  # strategy reconstructors
  test -f "$P/real64_acc${A}_$1.json" || .venv/bin/gendiff mri benchmark --prior "$PRIOR" --data "$DATA/test" \
    --train-data "$DATA/train" --acceleration "$A" --slices 16 --num-particles 4 --num-inference-steps 50 --batch-slices 8 \
    --acquisition-window 0.1,0.4 --strategies "$1" --reconstructors "$2" --cs-tv-weight "$W_TV" --cs-wavelet-weight "$W_WL" \
    --out "$P/real64_acc${A}_$1.json" --no-progress
  .venv/bin/python $OUT/merge_tables.py --inputs "$P/*real64_acc${A}_*.json" --out "$OUT/real64_acc$A.json" \
    --title "Real MR test split (S0_10slices, test_piesno), 64 x 64, ${A}x: every mask with DPS, and CS" > /dev/null
}
run ads dps,zero_filled,cs_tv
run data_variance dps
run centre dps
run ads_total_variance dps
run fastmri_random dps,zero_filled,cs_tv,cs_wavelet
run fastmri_equispaced dps,zero_filled,cs_tv,cs_wavelet
run fixed_dps dps
