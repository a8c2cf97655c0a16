#!/usr/bin/env bash
# Lint (ruff check + format check) and the test suite. Installs what it needs first
# (scripts/bootstrap.sh). Extra arguments go to pytest, e.g. `bash scripts/test.sh -k dicom -x`;
# the fast inner loop (every module, no test over ~2 s) is `bash scripts/test.sh -m "not slow"`.
# Tests run in METALUNG_TEST_WORKERS pytest-xdist processes (default 2, one thread each; 0: in
# this process), whole files per worker, so that module fixtures are built once.
# Exit status: pytest's, or 1 when pytest passed and lint failed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
BIN="${METALUNG_VENV:-$ROOT/.venv}/bin"
lint=0
"$BIN/ruff" check --quiet . || lint=1
"$BIN/ruff" format --check --quiet --extend-exclude "*.md" . || lint=1
[ "$lint" = 0 ] || echo "[test] ruff: lint or format findings above" >&2
status=0
"$BIN/python" -m pytest -q -n "${METALUNG_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@" || status=$?
if [ "$status" = 0 ] && [ "$lint" != 0 ]; then
  status=1
fi
exit "$status"
