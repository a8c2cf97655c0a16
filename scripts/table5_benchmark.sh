#!/usr/bin/env bash
# The thesis' Table 5 on the default synthetic cohort: U-Net, quick preset, SEEDS seeds (default 3),
# every augmentation arm: none, the six single MetaLung operations and all six (metalung), the
# thesis' peers blur and elastic, the generic MONAI pipeline (monai), copy-paste of real lesions
# (copypaste, TumorCP's peer), lesions of each generator inserted online (vqvae, dcgan, diffusion)
# and MetaLung + generated lesions (mixed).
#   1. the lesion bank and the generators (scripts/synth_benchmark.sh, resumable; skipped when
#      their outputs exist)                                         -> outputs/synth/cohort/
#   2. metalung experiment over every arm, the banks given as the setting lesion_banks
#                                                                   -> $OUT/results.md
# Resumable: rerun after a kill and only unfinished runs are trained (same settings, same folder).
# Measured cost on 2 shared CPU cores: 6-8 minutes a run, so 16 arms x 3 seeds is 5-6 hours;
# ARMS=... and SEEDS=... run a part of the grid (a later call with more adds to the same folder).
# The grid is pinned to the code that started it: its commit is kept in $OUT/code_commit (written
# at the first call), and every later call runs `metalung experiment` with that commit's package and
# bundles (extracted with `git archive` into outputs/pinned/<commit>, put first on PYTHONPATH), so a
# grid that takes several sessions stays one configuration while the library moves on (its
# fingerprint holds the bundle configs and presets: a later loader setting would otherwise refuse
# the grid). Start a grid of the current code in a new OUT.
# Usage: bash scripts/table5_benchmark.sh   (OUT=..., SEEDS=..., ARMS=none,copypaste,...)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/outputs/table5/cohort}"
SEEDS="${SEEDS:-3}"
ARMS="${ARMS:-none,metalung,monai,copypaste,dcgan,mixed,vqvae,diffusion,blur,elastic,mirror,relocate,rotate_image,rotate_tumor,noise_image,noise_tumor}"
VENV="${METALUNG_VENV:-$ROOT/.venv}"
SYN="$ROOT/outputs/synth/cohort"
bash "$ROOT/scripts/bootstrap.sh"
if [[ ! -f "$SYN/comparison/comparison.md" ]]; then
    DATA=cohort OUT="$SYN" bash "$ROOT/scripts/synth_benchmark.sh"
fi
BANKS="{'real': '$SYN/bank', 'dcgan': '$SYN/dcgan/generated', 'vqvae': '$SYN/vqvae/generated', 'diffusion': '$SYN/diffusion/generated'}"
mkdir -p "$OUT"
if [[ ! -f "$OUT/code_commit" ]]; then
    if [[ -n "$(git -C "$ROOT" status --porcelain -- metalung_monai bundles)" ]]; then
        echo "[table5] warning: uncommitted changes in metalung_monai/ or bundles/ are not pinned" >&2
    fi
    git -C "$ROOT" rev-parse HEAD > "$OUT/code_commit.tmp" && mv "$OUT/code_commit.tmp" "$OUT/code_commit"
fi
PIN="$(cat "$OUT/code_commit")"
if [[ "$PIN" != "$(git -C "$ROOT" rev-parse HEAD)" ]]; then
    CODE="$ROOT/outputs/pinned/$PIN"
    if [[ ! -f "$CODE/.complete" ]]; then
        rm -rf "$CODE" && mkdir -p "$CODE"
        git -C "$ROOT" archive "$PIN" metalung_monai bundles | tar -x -C "$CODE"
        touch "$CODE/.complete"
    fi
    echo "[table5] this grid is pinned to commit $PIN: running its code from $CODE"
    export PYTHONPATH="$CODE${PYTHONPATH:+:$PYTHONPATH}"
fi
"$VENV/bin/metalung" experiment --datalist "$ROOT/outputs/cohort/datalist.json" --models unet \
    --augment "$ARMS" --preset quick --seeds "$SEEDS" --out "$OUT" --set "lesion_banks=$BANKS"
echo "[table5] results: $OUT/results.md"
