#!/usr/bin/env bash
# Rebuild the inputs of the offline agent study (benchmarks/offline/README.md, "The study's inputs") from nothing:
#   1. the Minari "medium" dataset (gendiff offline make-dataset; skipped when $MINARI_DATASETS_PATH holds it),
#   2. the trajectory model (20k steps, lr 2e-3, every skip connection) and SynthER (10k steps), trained by
#      trajectory_model.py on the same 95 % of episodes, with its fidelity check at 20k steps written beside them
#      (compare with trajectory_model_<env>_lr2e-3.md: the rebuilt model should land near the recorded error).
# Everything runs on one thread; about 45 (Hopper) / 20 (HalfCheetah) minutes for the dataset and ~35 for the models
# on an idle core. The agent study records a fingerprint of these files (agents.py), so runs made from a rebuilt copy
# that differs are never merged with earlier ones unnoticed.
#
#   bash benchmarks/offline/assets.sh hopper        # or halfcheetah; RUNS=<folder> (default runs/pgd_tm)
#   bash benchmarks/offline/assets.sh halfcheetah linear   # the same model with the linear action layout
#                                                           # (action_layout=linear; SynthER as a 500-step placeholder)
set -euo pipefail
env_name="${1:?usage: assets.sh hopper|halfcheetah [linear]}"
layout="${2:-arctanh}"
case "$env_name" in
  hopper) env_id=Hopper-v5 ;;
  halfcheetah) env_id=HalfCheetah-v5 ;;
  *) echo "assets.sh: unknown environment '$env_name' (hopper or halfcheetah)" >&2; exit 2 ;;
esac
case "$layout" in
  arctanh|linear) ;;
  *) echo "assets.sh: unknown action layout '$layout' (linear, or nothing for the paper's arctanh)" >&2; exit 2 ;;
esac
runs="${RUNS:-runs/pgd_tm}"
dataset="gendiff/$env_name/medium-v3"
root="${MINARI_DATASETS_PATH:-$HOME/.minari/datasets}"
py="${PYTHON:-.venv/bin/python}"
export OMP_NUM_THREADS=1

# 1. the dataset (make-dataset never replaces an existing one without --force)
if [ -d "$root/$dataset" ]; then
  echo "assets.sh: $root/$dataset exists; kept"
else
  "$py" -m gendiff offline make-dataset --env "$env_id" --level medium --steps 100000 --sac-steps 300000 \
    --rollout-noise 0.1 --dataset-id "$dataset" --no-progress
fi

# 2. the trajectory model and SynthER (resumable: trajectory_model.py trains on from --work's checkpoints)
if [ "$layout" = linear ]; then
  work="$runs/${env_name}_linear"
  if [ -f "$work/linear/pipeline/model_index.json" ]; then
    echo "assets.sh: $work holds the linear-action pipeline; kept"
  else
    "$py" benchmarks/offline/trajectory_model.py --dataset-id "$dataset" \
      --variants "linear:residual=0,skips=all,lr=2e-3,action_layout=linear" --checkpoints 20000 --sweep-steps "" \
      --synther-steps 500 --work "$work" --out "$work/check"
  fi
  echo "assets.sh: --pipeline $work/linear/pipeline --dataset-id $dataset"
  exit 0
fi
work="$runs/${env_name}_lr2e-3"
if [ -f "$work/lr2e-3/pipeline/model_index.json" ] && [ -d "$work/synther" ]; then
  echo "assets.sh: $work holds the pipeline and SynthER; kept"
else
  "$py" benchmarks/offline/trajectory_model.py --dataset-id "$dataset" \
    --variants "lr2e-3:residual=0,skips=all,lr=2e-3" --checkpoints 20000 --sweep-steps "" --synther-steps 10000 \
    --work "$work" --out "$work/check"
fi
echo "assets.sh: --pipeline $work/lr2e-3/pipeline --synther $work/synther --dataset-id $dataset"
