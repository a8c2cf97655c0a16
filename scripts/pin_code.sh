#!/usr/bin/env bash
# Sourced by the long grids (table5_benchmark.sh, table5_msd.sh): pin the experiment in folder $1
# to the commit that started it, so that a grid taking several sessions stays one configuration
# while the library moves on (an experiment's fingerprint holds the bundle configs and presets, so
# any later change to them would otherwise make `metalung experiment` refuse the folder).
#   - first call: the current commit is written to $1.code_commit, beside the folder (inside it, the
#     file would make a new experiment folder look like someone else's; a warning when
#     metalung_monai/ or bundles/ have uncommitted changes: those are not pinned);
#   - later calls, once the checkout has moved on: that commit's package and bundles are extracted
#     (git archive) into outputs/pinned/<commit> and put first on PYTHONPATH for the rest of the
#     calling script.
#   - with a records folder (RECORDS_DIR, `metalung experiment --records`): the commit is kept there
#     too, and a new OUT_DIR (outputs lost between sessions) takes the records' commit; an OUT_DIR
#     and a records folder of two commits are refused.
# Start a grid of the current code in a new folder.
# Usage: source scripts/pin_code.sh OUT_DIR [RECORDS_DIR]
PIN_OUT="${1%/}"
PIN_REC="${2:-}"
PIN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PIN_FILE="$PIN_OUT.code_commit"
mkdir -p "$(dirname "$PIN_OUT")"
if [[ ! -f "$PIN_FILE" && -n "$PIN_REC" && -f "$PIN_REC/code_commit" ]]; then
    cp "$PIN_REC/code_commit" "$PIN_FILE.tmp"
    mv "$PIN_FILE.tmp" "$PIN_FILE"
    echo "[pin] $PIN_OUT takes the commit of its records in $PIN_REC"
fi
if [[ ! -f "$PIN_FILE" ]]; then
    if [[ -n "$(git -C "$PIN_ROOT" status --porcelain -- metalung_monai bundles)" ]]; then
        echo "[pin] warning: uncommitted changes in metalung_monai/ or bundles/ are not pinned" >&2
    fi
    git -C "$PIN_ROOT" rev-parse HEAD > "$PIN_FILE.tmp"
    mv "$PIN_FILE.tmp" "$PIN_FILE"
fi
PIN="$(cat "$PIN_FILE")"
if ! git -C "$PIN_ROOT" cat-file -e "$PIN^{commit}" 2>/dev/null; then
    echo "[pin] error: $PIN_OUT is pinned to commit $PIN, which this repository does not hold" >&2
    return 1
fi
if [[ -n "$PIN_REC" ]]; then
    mkdir -p "$PIN_REC"
    if [[ ! -f "$PIN_REC/code_commit" ]]; then
        cp "$PIN_FILE" "$PIN_REC/code_commit.tmp"
        mv "$PIN_REC/code_commit.tmp" "$PIN_REC/code_commit"
    elif [[ "$(cat "$PIN_REC/code_commit")" != "$PIN" ]]; then
        echo "[pin] error: $PIN_OUT is pinned to commit $PIN but its records in $PIN_REC to" \
            "$(cat "$PIN_REC/code_commit"); use another OUT or records folder" >&2
        return 1
    fi
fi
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
