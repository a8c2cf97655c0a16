#!/usr/bin/env bash
# Table 5's real-tumour subset: the 130 MSD Task06 lung-cancer patches of 13 patients
# (../shared/data/real/msd_lung_patches/), patient-grouped 3-fold cross-validation, U-Net, the
# `patches` preset, SEEDS seeds (default 3), arms ARMS (default none, metalung, copypaste, the
# generator GENERATOR (default vqvae, the best on the cohort) and mixed = MetaLung + its lesions).
# Fold-honest: copy-paste keeps each run's training patients' lesions (the real bank is filtered
# per run), and the generator is trained once per fold on that fold's training patients only
# (validation and test patients never seen); each run takes its fold's (lesion_banks as a list).
#   1. the datalist (scripts/msd_benchmark.sh, PREPARE_ONLY)          -> outputs/msd/data/
#      with lung masks by threshold (scripts/patch_lungs.py)          -> $OUT/patch_lungs/
#   2. the real bank of every patient                                 -> $OUT/banks/real
#   3. per fold: its datalist, the bank of its training patients, the generator trained and
#      sampled on it (scripts/synth_benchmark.py: also its realism)    -> $OUT/gen/fold<f>/
#   4. metalung experiment --folds 3                                   -> $OUT/cv/results.md
# Resumable: each step skips what exists; rerun after a kill. The cross-validation is pinned to
# the commit that started it (scripts/pin_code.sh).
# Measured on 2 shared CPU cores: see docs/experiments.md (generator training about 6 min a fold
# quiet, 30-60 s a patches run).
# Finished runs are recorded (no weights) in RECORDS (default docs/results/table5-msd; RECORDS= turns
# it off) with each fold's generated bank (RECORDS/fold<f>/banks), and restored from there, as in
# table5_benchmark.sh.
# Usage: bash scripts/table5_msd.sh   (OUT=..., SEEDS=..., ARMS=..., GENERATOR=..., RECORDS=...)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/outputs/table5/msd}"
SEEDS="${SEEDS:-3}"
GENERATOR="${GENERATOR:-vqvae}"
ARMS="${ARMS:-none,metalung,copypaste,$GENERATOR,mixed}"
VENV="${METALUNG_VENV:-$ROOT/.venv}"
K=3
RECORDS="${RECORDS-$ROOT/docs/results/table5-msd}"
REC_ARGS=()
if [[ -n "$RECORDS" ]]; then REC_ARGS=(--records "$RECORDS"); fi
bash "$ROOT/scripts/bootstrap.sh"
OUT="$ROOT/outputs/msd" PREPARE_ONLY=1 bash "$ROOT/scripts/msd_benchmark.sh"
# the patches show no body outline, so the lung segmentation finds no lung in them: a lung mask
# by threshold (below -500 HU, 4 px from the patch's border) lets lesions be inserted
"$VENV/bin/python" "$ROOT/scripts/patch_lungs.py" "$ROOT/outputs/msd/data/datalist.json" \
    "$OUT/patch_lungs"
DL="$OUT/patch_lungs/datalist.json"
mkdir -p "$OUT/banks"
if [[ ! -f "$OUT/banks/real/bank.json" ]]; then
    "$VENV/bin/metalung" lesion-bank "$DL" --out "$OUT/banks/real" --val-fold -1 --no-progress
fi
"$VENV/bin/python" -c "import sys; from metalung_monai.training.folds import fold_datalists; \
fold_datalists(sys.argv[1], $K, sys.argv[2])" "$DL" "$OUT/folds"
GEN=()
for ((f = 0; f < K; f++)); do
    if [[ ! -f "$OUT/banks/fold$f/bank.json" ]]; then
        "$VENV/bin/metalung" lesion-bank "$OUT/folds/fold$f/datalist.json" --out "$OUT/banks/fold$f" \
            --val-fold $(((f + 1) % K)) --no-progress
    fi
    if [[ -n "$RECORDS" ]]; then  # the fold's generated bank this grid started with, if kept
        source "$ROOT/scripts/keep_banks.sh" "$RECORDS/fold$f" "$OUT/gen/fold$f" restore "$GENERATOR"
    fi
    if [[ ! -f "$OUT/gen/fold$f/$GENERATOR/generated/bank.json" ]]; then
        "$VENV/bin/python" "$ROOT/scripts/synth_benchmark.py" "$OUT/banks/fold$f" "$OUT/gen/fold$f" \
            --generators "$GENERATOR" --preset quick
    fi
    if [[ -n "$RECORDS" ]]; then
        source "$ROOT/scripts/keep_banks.sh" "$RECORDS/fold$f" "$OUT/gen/fold$f" save "$GENERATOR"
    fi
    GEN+=("'$OUT/gen/fold$f/$GENERATOR/generated'")
done
LIST="$(IFS=,; echo "${GEN[*]}")"
source "$ROOT/scripts/pin_code.sh" "$OUT/cv" "$RECORDS"  # the cross-validation keeps its code
"$VENV/bin/metalung" experiment --datalist "$DL" --folds $K --models unet --augment "$ARMS" \
    --preset patches --seeds "$SEEDS" --out "$OUT/cv" \
    --set "lesion_banks={'real': '$OUT/banks/real', '$GENERATOR': [$LIST]}" "${REC_ARGS[@]}"
echo "[table5-msd] results: $OUT/cv/results.md"
