#!/usr/bin/env bash
# The real-image study set of benchmarks/ads/real (issue 33), from pip-installable packages only.
# Usage: bash benchmarks/ads/real/make_data.sh [DATA_DIR (default runs/real_data)]   (~1 min; needs `make setup`)
# 1. installs the data wheels into the venv, at data-making time only (--no-deps: only their files are used):
#    dipy 1.12.1 (dipy/data/files: S0_10slices.nii.gz, aniso_vox.nii.gz, test_piesno.nii.gz, t1_coronal_slice.npy)
#    and pydicom-data 1.0.0 (data_store/data: the MR files MR2_UNCR.dcm, MR-SIEMENS-DICOM-WithOverlays.dcm,
#    emri_small.dcm; one encoding of each image: the uncompressed little-endian one);
# 2. imports them with `gendiff mri import` at 128 x 128 (zero-padded to square, resampled; smooth random phase,
#    seed 0), one file per volume, into DATA_DIR/{train,val,test}: whole volumes, chosen by anatomy before any
#    result was seen (README.md beside this script):
#      train  aniso_vox (24 axial brain slices), t1_coronal_slice (1), MR2_UNCR (1, shoulder), MR-SIEMENS (1, abdomen)
#      val    emri_small (10 sagittal brain frames)            -- for choosing settings (CS weights)
#      test   S0_10slices (10 axial brain), test_piesno (14 axial brain) -- 24 slices of 2 volumes unseen in training
# 3. writes DATA_DIR/split.json (volume -> split, slices) and checks that no volume is on two sides.
set -euo pipefail
cd "$(dirname "$0")/../../.."
DATA="${1:-runs/real_data}"
PY=.venv/bin/python
test -x "$PY" || { echo "run 'make setup' first" >&2; exit 1; }
.venv/bin/pip install -q --no-deps dipy==1.12.1 pydicom-data==1.0.0
.venv/bin/pip install -q nibabel pydicom  # the gendiff[mri-io] extra
DIPY="$($PY -c 'import importlib.util as u; print(u.find_spec("dipy").submodule_search_locations[0])')/data/files"
DCM="$($PY -c 'import importlib.util as u; print(u.find_spec("data_store").submodule_search_locations[0])')/data"
imp() { .venv/bin/gendiff mri import --size 128 --seed "$1" --out "$DATA/$2" --inputs "$3" --overwrite; }
imp 0 train "$DIPY/aniso_vox.nii.gz,$DIPY/t1_coronal_slice.npy,$DCM/MR2_UNCR.dcm,$DCM/MR-SIEMENS-DICOM-WithOverlays.dcm"
imp 1 val "$DCM/emri_small.dcm"
imp 2 test "$DIPY/S0_10slices.nii.gz,$DIPY/test_piesno.nii.gz"
$PY - "$DATA" <<'PY'
import json, sys
from pathlib import Path
import h5py
root = Path(sys.argv[1]); listing, seen = {}, {}
for split in ("train", "val", "test"):
    listing[split] = []
    for f in sorted((root / split).glob("*.h5")):
        with h5py.File(f, "r") as hf:
            src, n = str(hf.attrs["source"]), int(hf["kspace"].shape[0])
        assert src not in seen, f"{src} is in {seen[src]} and {split}"
        seen[src] = split
        listing[split].append({"file": f"{split}/{f.name}", "source": src, "slices": n})
(root / "split.json").write_text(json.dumps(listing, indent=2))
for s, v in listing.items():
    print(f"{s}: {len(v)} volume(s), {sum(e['slices'] for e in v)} slices: " + ", ".join(e["source"] for e in v))
PY
