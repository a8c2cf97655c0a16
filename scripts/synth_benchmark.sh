#!/usr/bin/env bash
# DeepLungSynth part 1 end to end on one data set: the lesion bank, then every generator bundle
# trained with the `quick` preset (CPU), 500 lesions sampled from each, the realism report of each
# and the side-by-side comparison (Table 6, realism table, picture grid per Lung-RADS class).
#   DATA=cohort (default): the default synthetic cohort (outputs/cohort, made by `metalung phantom`
#                          as scripts/demo.sh does when absent), bank of its training patients
#   DATA=msd:              the real MSD lung-cancer patches (../shared/data/real/msd_lung_patches,
#                          datalist by scripts/msd_benchmark.sh's first steps), every patient
# Writes $OUT/bank, $OUT/<generator>/{models,generated,realism} and $OUT/comparison/comparison.md.
# Resumable: rerun after a kill and only the unfinished steps run (scripts/synth_benchmark.py).
# Usage: DATA=cohort|msd bash scripts/synth_benchmark.sh   (OUT=..., GENERATORS=dcgan,..., PRESET=quick)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${DATA:-cohort}"
OUT="${OUT:-$ROOT/outputs/synth/$DATA}"
VENV="${METALUNG_VENV:-$ROOT/.venv}"
bash "$ROOT/scripts/bootstrap.sh"
mkdir -p "$OUT"
case "$DATA" in
    cohort)
        if [[ ! -f "$ROOT/outputs/cohort/datalist.json" ]]; then
            "$VENV/bin/metalung" phantom --out "$ROOT/outputs/cohort" --patients 40 --size 256 --seed 0 --workers 2
        fi
        DATALIST="$ROOT/outputs/cohort/datalist.json"
        BANK_ARGS=()
        ;;
    msd)
        PREPARE_ONLY=1 bash "$ROOT/scripts/msd_benchmark.sh"
        DATALIST="$ROOT/outputs/msd/data/datalist.json"
        BANK_ARGS=(--val-fold -1)
        ;;
    *)
        echo "synth_benchmark: DATA must be cohort or msd, not '$DATA'" >&2
        exit 2
        ;;
esac
"$VENV/bin/metalung" lesion-bank "$DATALIST" --out "$OUT/bank" "${BANK_ARGS[@]}" --no-progress
ARGS=(--preset "${PRESET:-quick}")
if [[ -n "${GENERATORS:-}" ]]; then ARGS+=(--generators "$GENERATORS"); fi
"$VENV/bin/python" "$ROOT/scripts/synth_benchmark.py" "$OUT/bank" "$OUT" "${ARGS[@]}"
echo "[synth] comparison: $OUT/comparison/comparison.md"
