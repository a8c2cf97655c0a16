#!/usr/bin/env bash
# Sourced by scripts/table5_benchmark.sh: keep the generated lesion banks a grid inserts from with
# its records, because generator training on CPU is not reproducible from one machine set-up to
# the next (the same code and seeds gave 480 / 62 / 67 DCGAN / VQ-VAE / diffusion lesions on one
# day and 465 / 106 / 4 on another), and the banks' content is part of every run's key.
#   - a bank missing from SYN_DIR/<generator>/generated but kept in RECORDS_DIR/banks/<generator>
#     is restored from there (bank.json, bank.npz, lesions.csv: what a bank is read from);
#   - a bank present in SYN_DIR but not yet kept is copied into RECORDS_DIR/banks/<generator>.
# Each file is written under a temporary name and renamed. Usage:
#   source scripts/keep_banks.sh RECORDS_DIR SYN_DIR restore|save GENERATOR...
keep_banks() {
    local rec="$1" syn="$2" mode="$3"
    shift 3
    local g f src dst
    for g in "$@"; do
        if [[ "$mode" == restore ]]; then
            src="$rec/banks/$g" dst="$syn/$g/generated"
        else
            src="$syn/$g/generated" dst="$rec/banks/$g"
        fi
        if [[ -f "$dst/bank.json" || ! -f "$src/bank.json" ]]; then
            continue
        fi
        mkdir -p "$dst"
        for f in bank.npz lesions.csv bank.json; do  # bank.json last: it marks the bank complete
            cp "$src/$f" "$dst/.$f.tmp" && mv "$dst/.$f.tmp" "$dst/$f"
        done
        echo "[banks] $g: $mode $src -> $dst"
    done
}
keep_banks "$@"
