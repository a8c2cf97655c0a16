#!/usr/bin/env bash
# The real-tumour benchmark: the 130 MSD Task06 lung-cancer patches of 13 patients
# (../shared/data/real/msd_lung_patches/, never copied into the repository), patient-grouped
# 3-fold cross-validation, arms none / metalung / monai / metalung+monai, the `patches` preset
# (48-pixel crops, 160 iterations a run), SEEDS seeds (default 3), MODELS (default unet,deeplabv3).
#   1. a manifest CSV (image, mask, patient) from the folder's patches.csv       -> $OUT/manifest.csv
#   2. metalung convert --manifest: datalist with patient ids and folds           -> $OUT/data/
#   3. metalung experiment --folds 3: every patient tested once per seed          -> $OUT/cv/results.md
# Measured on 2 CPU cores: 28-45 s per U-Net or DeepLabV3 run; the whole default grid (2 models x
# 4 arms x 3 folds x 3 seeds = 72 runs) is given in docs/experiments.md. Resumable: rerun the same
# command after a kill and only unfinished runs are trained.
# Usage: bash scripts/msd_benchmark.sh [MSD_DIR]    (OUT=..., SEEDS=..., MODELS=... to change;
#        PREPARE_ONLY=1 stops after step 2, the datalist, as scripts/synth_benchmark.sh uses it)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MSD="${1:-$ROOT/../shared/data/real/msd_lung_patches}"
OUT="${OUT:-$ROOT/outputs/msd}"
SEEDS="${SEEDS:-3}"
MODELS="${MODELS:-unet,deeplabv3}"
VENV="${METALUNG_VENV:-$ROOT/.venv}"
if [[ ! -f "$MSD/patches.csv" ]]; then
    echo "msd_benchmark: no patches.csv in $MSD (the shared MSD lung patches folder)" >&2
    exit 2
fi
bash "$ROOT/scripts/bootstrap.sh"
MSD="$(cd "$MSD" && pwd)"
mkdir -p "$OUT"
"$VENV/bin/python" - "$MSD" "$OUT/manifest.csv" <<'PY'
import csv, os, sys
src, dst = sys.argv[1], sys.argv[2]
with open(os.path.join(src, "patches.csv"), newline="") as f:
    rows = list(csv.DictReader(f))
tmp = dst + ".tmp"
with open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["image", "mask", "patient"])
    for r in rows:
        w.writerow([f"{src}/images/{r['case']}.nii.gz", f"{src}/masks/{r['case']}.nii.gz", r["patient"]])
os.replace(tmp, dst)
PY
if [[ ! -f "$OUT/data/datalist.json" ]]; then
    "$VENV/bin/metalung" convert --manifest "$OUT/manifest.csv" --out "$OUT/data"
fi
if [[ "${PREPARE_ONLY:-0}" == "1" ]]; then
    echo "[msd] datalist: $OUT/data/datalist.json"
    exit 0
fi
"$VENV/bin/metalung" experiment --datalist "$OUT/data/datalist.json" --folds 3 \
    --models "$MODELS" --augment none,metalung,monai,metalung+monai --preset patches \
    --seeds "$SEEDS" --out "$OUT/cv"
echo "[msd] results: $OUT/cv/results.md"
