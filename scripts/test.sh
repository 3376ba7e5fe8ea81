#!/usr/bin/env bash
# The project's one test command (README "Quick start", and what CI runs). Sets up a virtualenv on the
# Lambda runtime's Python from the hashed dev lock, then runs a suite (tests/conftest.py says which
# tests are which):
#   scripts/test.sh [pytest args]             the fast suite: the linters, the worker's workerd suite and
#                                             every Python test that starts no PostgreSQL server
#   scripts/test.sh --postgres [pytest args]  the PostgreSQL-and-drill suite (pytest -m postgres)
#   scripts/test.sh --all [pytest args]       both, the fast one first (.ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
suite=fast
case "${1:-}" in
  --postgres) suite=postgres; shift ;;
  --all) suite=all; shift ;;
esac
source scripts/python.sh requirements-dev.lock

fast() {
  "$VENV/bin/ruff" check .
  "$VENV/bin/mypy"
  # GitHub Actions security: nothing above low severity (unpinned actions, token persistence, permissions...).
  "$VENV/bin/zizmor" --offline --min-severity medium .github/workflows
  if [ -f worker/package.json ]; then
    (cd worker && npm ci --no-audit --no-fund --loglevel=error && npm test)
  fi
  "$VENV/bin/python" -m pytest -m "not postgres" "$@"
}

postgres() {
  # The IAM simulator the IAM-against-code tests evaluate with (tests/iam/package.json, locked).
  (cd tests/iam && npm ci --no-audit --no-fund --loglevel=error)
  "$VENV/bin/python" -m pytest -m postgres "$@"
}

case "$suite" in
  fast) fast "$@" ;;
  postgres) postgres "$@" ;;
  all) fast "$@"; postgres "$@" ;;
esac
