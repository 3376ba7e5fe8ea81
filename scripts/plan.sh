#!/usr/bin/env bash
# Set up the runtime dependencies and run the offline plan: `scripts/plan.sh phase-a [--json]`.
set -euo pipefail
cd "$(dirname "$0")/.."
stack="${1:-phase-a}"; shift || true
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
exec .venv/bin/python -m infra plan --stack "$stack" "$@"
