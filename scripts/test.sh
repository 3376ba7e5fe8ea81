#!/usr/bin/env bash
# The project's one test command (README "Test", and what CI runs): sets up what the tests need
# on a fresh clone, then runs the Python suite and, when present, the worker's workerd suite.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

if [ -f worker/package.json ]; then
  (cd worker && npm ci --no-audit --no-fund --loglevel=error && npm test)
fi

.venv/bin/python -m pytest "$@"
