# Sourced by tools/gpu/gpu_*.sh: installs the carried wheels (.gpu_wheels/, filled by
# tools/gpu/gpu_prepare_wheels.sh, including a wheel of gendiff itself) into a private folder and puts
# only that folder on PYTHONPATH. The source tree must NOT be on the path: pipelines/, mri/ and offline/
# become gendiff.pipelines / .mri / .offline only through the installed wheel, and `python -m ...` / `python -`
# would put the working directory (the repo root, whose gendiff/ lacks them) first: PYTHONSAFEPATH=1 stops that.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT_DIR="${OUT:-benchmarks}"
SITE="$(mktemp -d)/site"
WHEELS="${GPU_WHEELS:-.gpu_wheels}"  # tests/test_gpu_scripts.py points this at a freshly built gendiff wheel
if [ -d "$WHEELS" ]; then
  python -m pip install --quiet --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONSAFEPATH=1 HF_HUB_OFFLINE=1
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT_DIR/gpu_card.txt" || true
else
  echo "no GPU (nvidia-smi not found): CPU smoke" | tee "$OUT_DIR/gpu_card.txt"
fi
