#!/usr/bin/env bash
# Run the whole test suite. Installs what it needs first (scripts/bootstrap.sh).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k dicom -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec "${METALUNG_VENV:-$ROOT/.venv}/bin/python" -m pytest -q "$@"
