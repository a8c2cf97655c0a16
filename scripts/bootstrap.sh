#!/usr/bin/env bash
# Create the project's virtual environment (.venv) and install metalung-monai into it.
# Idempotent: reinstalls only when pyproject.toml changed since the last successful install.
# Environment: PYTHON (default python3), METALUNG_VENV (default <repo>/.venv),
#              TORCH_SPEC (default "torch==2.14.1 torchvision==0.29.1", the builds on this machine's disk).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${METALUNG_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.metalung-stamp"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/bootstrap.sh" | sha1sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[bootstrap] installing $TORCH_SPEC and metalung-monai[dev] (first run: about 2-3 minutes)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # one resolution: the pinned torch and everything else together, so that no dependency can
  # pull (or later upgrade to) another torch. Byte-compiling stays on: with
  # PYTHONDONTWRITEBYTECODE set, every test process would otherwise recompile torch and MONAI.
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q $TORCH_SPEC -e "$ROOT[dev]"
  echo "$WANT" > "$STAMP"
fi
