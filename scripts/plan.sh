#!/usr/bin/env bash
# Set up the runtime dependencies (requirements.lock only) and run the offline plan:
# `scripts/plan.sh phase-a [--json]`.
set -euo pipefail
cd "$(dirname "$0")/.."
stack="${1:-phase-a}"; shift || true
source scripts/python.sh requirements.lock
exec "$VENV/bin/python" -m infra plan --stack "$stack" "$@"
