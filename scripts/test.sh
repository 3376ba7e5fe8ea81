#!/usr/bin/env bash
# The project's one test command (README "Testing", and what CI runs): sets up a virtualenv on the
# Lambda runtime's Python from the hashed lock, runs the linters, then the worker's workerd suite and
# the Python suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh

"$VENV/bin/ruff" check .
"$VENV/bin/mypy"
# GitHub Actions security: nothing above low severity (unpinned actions, token persistence, permissions...).
"$VENV/bin/zizmor" --offline --min-severity medium .github/workflows

if [ -f worker/package.json ]; then
  (cd worker && npm ci --no-audit --no-fund --loglevel=error && npm test)
fi

# The IAM simulator the IAM-against-code tests evaluate with (tests/iam/package.json, locked).
(cd tests/iam && npm ci --no-audit --no-fund --loglevel=error)

"$VENV/bin/python" -m pytest "$@"
