#!/usr/bin/env bash
# Sourced by the long grids (table5_benchmark.sh, table5_msd.sh): pin the experiment in folder $1
# to the commit that started it, so that a grid taking several sessions stays one configuration
# while the library moves on (an experiment's fingerprint holds the bundle configs and presets, so
# any later change to them would otherwise make `metalung experiment` refuse the folder).
#   - first call: the current commit is written to $1/code_commit (a warning when metalung_monai/
#     or bundles/ have uncommitted changes: those are not pinned);
#   - later calls, once the checkout has moved on: that commit's package and bundles are extracted
#     (git archive) into outputs/pinned/<commit> and put first on PYTHONPATH for the rest of the
#     calling script.
# Start a grid of the current code in a new folder. Usage: source scripts/pin_code.sh OUT_DIR
PIN_OUT="$1"
PIN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$PIN_OUT"
if [[ ! -f "$PIN_OUT/code_commit" ]]; then
    if [[ -n "$(git -C "$PIN_ROOT" status --porcelain -- metalung_monai bundles)" ]]; then
        echo "[pin] warning: uncommitted changes in metalung_monai/ or bundles/ are not pinned" >&2
    fi
    git -C "$PIN_ROOT" rev-parse HEAD > "$PIN_OUT/code_commit.tmp"
    mv "$PIN_OUT/code_commit.tmp" "$PIN_OUT/code_commit"
fi
PIN="$(cat "$PIN_OUT/code_commit")"
if [[ "$PIN" != "$(git -C "$PIN_ROOT" rev-parse HEAD)" ]]; then
    PIN_CODE="$PIN_ROOT/outputs/pinned/$PIN"
    if [[ ! -f "$PIN_CODE/.complete" ]]; then
        rm -rf "$PIN_CODE" && mkdir -p "$PIN_CODE"
        git -C "$PIN_ROOT" archive "$PIN" metalung_monai bundles | tar -x -C "$PIN_CODE"
        touch "$PIN_CODE/.complete"
    fi
    echo "[pin] $PIN_OUT is pinned to commit $PIN: running its code from $PIN_CODE"
    export PYTHONPATH="$PIN_CODE${PYTHONPATH:+:$PYTHONPATH}"
fi
