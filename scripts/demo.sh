#!/usr/bin/env bash
# The main job on the embedded default data. Installs what it needs first (scripts/bootstrap.sh).
#   1. generates the default synthetic chest-CT cohort (40 patients, 256x256, seed 0) with its
#      tumour masks, HU-threshold lung masks, datalist and overview.png  -> outputs/cohort/
# Resumable: rerunning reuses what is already complete. OUT=... changes the output folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
VENV="${METALUNG_VENV:-$ROOT/.venv}"
OUT="${OUT:-$ROOT/outputs}"
"$VENV/bin/metalung" phantom --out "$OUT/cohort" --patients 40 --size 256 --seed 0 --workers 2
echo "[demo] cohort: $OUT/cohort/datalist.json, overview: $OUT/cohort/overview.png"
