#!/usr/bin/env bash
# The thesis' Table 5 on the default synthetic cohort: U-Net, quick preset, SEEDS seeds (default 3),
# every augmentation arm: none, the six single MetaLung operations and all six (metalung), the
# thesis' peers blur and elastic, the generic MONAI pipeline (monai), copy-paste of real lesions
# (copypaste, TumorCP's peer), lesions of each generator inserted online (vqvae, dcgan, diffusion)
# and MetaLung + generated lesions (mixed).
#   1. the lesion bank and the generators (scripts/synth_benchmark.sh, resumable; skipped when
#      the four banks exist)                                        -> outputs/synth/cohort/
#   2. metalung experiment over every arm, the banks given as the setting lesion_banks
#                                                                   -> $OUT/results.md
# Resumable: rerun after a kill and only unfinished runs are trained (same settings, same folder).
# Measured cost on 2 shared CPU cores: 6-8 minutes a run, so 16 arms x 3 seeds is 5-6 hours;
# ARMS=... and SEEDS=... run a part of the grid (a later call with more adds to the same folder).
# The grid keeps the code that started it (scripts/pin_code.sh: $OUT/code_commit), so that it stays
# one configuration over several sessions; start a grid of the current code in a new OUT.
# Each finished run's results (no weights, a few hundred kB) are kept in RECORDS (default
# docs/results/table5-cohort, in the repository; RECORDS= turns it off) with the pinned commit and
# the generated banks (scripts/keep_banks.sh: generator training is not reproducible across
# machine set-ups), and restored from there into an OUT that lacks them: the grid survives machines
# that keep only what is committed, as long as the cohort and its real lesion bank come out
# identically (the banks' content is part of every run's key; a difference is refused, naming it).
# Usage: bash scripts/table5_benchmark.sh   (OUT=..., SEEDS=..., ARMS=none,copypaste,..., RECORDS=...)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/outputs/table5/cohort}"
SEEDS="${SEEDS:-3}"
ARMS="${ARMS:-none,metalung,monai,copypaste,dcgan,mixed,vqvae,diffusion,blur,elastic,mirror,relocate,rotate_image,rotate_tumor,noise_image,noise_tumor}"
VENV="${METALUNG_VENV:-$ROOT/.venv}"
SYN="$ROOT/outputs/synth/cohort"
RECORDS="${RECORDS-$ROOT/docs/results/table5-cohort}"
REC_ARGS=()
if [[ -n "$RECORDS" ]]; then REC_ARGS=(--records "$RECORDS"); fi
bash "$ROOT/scripts/bootstrap.sh"
GENS=(dcgan vqvae diffusion)
if [[ -n "$RECORDS" ]]; then  # the generated banks this grid was started with (not reproducible)
    source "$ROOT/scripts/keep_banks.sh" "$RECORDS" "$SYN" restore "${GENS[@]}"
fi
# the grid needs the banks, not the generators' comparison report
if [[ ! -f "$SYN/bank/bank.json" || ! -f "$SYN/dcgan/generated/bank.json" \
    || ! -f "$SYN/vqvae/generated/bank.json" || ! -f "$SYN/diffusion/generated/bank.json" ]]; then
    if [[ -f "$SYN/dcgan/generated/bank.json" && -f "$SYN/vqvae/generated/bank.json" \
        && -f "$SYN/diffusion/generated/bank.json" ]]; then  # restored: the real bank only
        if [[ ! -f "$ROOT/outputs/cohort/datalist.json" ]]; then
            "$VENV/bin/metalung" phantom --out "$ROOT/outputs/cohort" --patients 40 --size 256 \
                --seed 0 --workers 2
        fi
        "$VENV/bin/metalung" lesion-bank "$ROOT/outputs/cohort/datalist.json" --out "$SYN/bank" \
            --no-progress
    else
        DATA=cohort OUT="$SYN" bash "$ROOT/scripts/synth_benchmark.sh"
    fi
fi
if [[ -n "$RECORDS" ]]; then
    source "$ROOT/scripts/keep_banks.sh" "$RECORDS" "$SYN" save "${GENS[@]}"
fi
BANKS="{'real': '$SYN/bank', 'dcgan': '$SYN/dcgan/generated', 'vqvae': '$SYN/vqvae/generated', 'diffusion': '$SYN/diffusion/generated'}"
source "$ROOT/scripts/pin_code.sh" "$OUT" "$RECORDS"  # a grid keeps the code that started it
"$VENV/bin/metalung" experiment --datalist "$ROOT/outputs/cohort/datalist.json" --models unet \
    --augment "$ARMS" --preset quick --seeds "$SEEDS" --out "$OUT" --set "lesion_banks=$BANKS" \
    "${REC_ARGS[@]}"
echo "[table5] results: $OUT/results.md"
