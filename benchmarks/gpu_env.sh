# Sourced by benchmarks/gpu_*.sh: installs the carried wheels (.gpu_wheels/, filled by
# benchmarks/gpu_prepare_wheels.sh, including a wheel of gendiff itself) into a private folder and puts
# only that folder on PYTHONPATH. The source tree is NOT put on the path: pipelines/, mri/ and offline/
# become gendiff.pipelines / .mri / .offline only through the installed wheel.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT_DIR="${OUT:-benchmarks}"
SITE="$(mktemp -d)/site"
if [ -d .gpu_wheels ]; then
  python -m pip install --quiet --no-index --no-deps --target "$SITE" .gpu_wheels/*.whl
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT_DIR/gpu_card.txt" || true
else
  echo "no GPU (nvidia-smi not found): CPU smoke" | tee "$OUT_DIR/gpu_card.txt"
fi
