#!/usr/bin/env bash
# Run HERE (CPU machine, with network to PyPI): fills the git-ignored .gpu_wheels/ with the Python 3.12
# manylinux wheels that the GPU machine lacks (it has torch, accelerate, transformers, huggingface-hub, einops,
# h5py, scikit-image, safetensors, tqdm) plus a wheel of gendiff itself. huggingface-hub stays the image's own: the
# 2.x wheel needs httpx2, which the H200 image lacks (measured 2026-12-04). 64 MiB carry limit: check `du -sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .gpu_wheels && mkdir -p .gpu_wheels
.venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 -d .gpu_wheels diffusers fastmri==0.3.0 runstats scikit-learn \
    threadpoolctl joblib minari gymnasium mujoco farama-notifications cloudpickle
.venv/bin/pip wheel -q --no-deps --no-build-isolation -w .gpu_wheels .
du -sh .gpu_wheels
