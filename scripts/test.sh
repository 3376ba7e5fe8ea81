#!/usr/bin/env bash
# The project's one test command (README "Quick start", and what CI runs). Sets up a virtualenv on the
# Lambda runtime's Python from the hashed dev lock, then runs a suite (tests/conftest.py says which
# tests are which):
#   scripts/test.sh [pytest args]             the fast suite: the linters, the worker's workerd suite and
#                                             every Python test that starts no PostgreSQL server (on
#                                             two pytest-xdist workers)
#   scripts/test.sh --postgres [pytest args]  the PostgreSQL-and-drill suite (pytest -m postgres)
#   scripts/test.sh --all [pytest args]       both, the fast one first (.ci/run)
# With FRAISEQL_STAGE_TIMES=FILE (bench/ci.py), each stage appends "NAME WALL USER SYS" in seconds to FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
suite=fast
case "${1:-}" in
  --postgres) suite=postgres; shift ;;
  --all) suite=all; shift ;;
esac

stage() {
  local name="$1"; shift
  if [ -z "${FRAISEQL_STAGE_TIMES:-}" ]; then "$@"; return; fi
  local TIMEFORMAT="$name %R %U %S"
  { time "$@" 2>&3; } 3>&2 2>>"$FRAISEQL_STAGE_TIMES"
}

linters() {
  "$VENV/bin/ruff" check .
  "$VENV/bin/mypy"
  # GitHub Actions security: nothing above low severity (unpinned actions, token persistence, permissions...).
  "$VENV/bin/zizmor" --offline --min-severity medium .github/workflows
}

worker() {
  if [ -f worker/package.json ]; then
    (cd worker && npm ci --no-audit --no-fund --loglevel=error && npm test)
  fi
}

fast() {
  stage linters linters
  stage workerd worker
  # Two workers (pytest-xdist), one per core, each taking whole modules (their module fixtures run once);
  # `scripts/test.sh -n 0 ...` runs it in one process.
  stage fast-pytest "$VENV/bin/python" -m pytest -m "not postgres" -n 2 --dist loadfile "$@"
}

postgres() {
  # The IAM simulator the IAM-against-code tests evaluate with (tests/iam/package.json, locked).
  stage iam-npm-ci bash -c 'cd tests/iam && npm ci --no-audit --no-fund --loglevel=error'
  stage postgres-pytest "$VENV/bin/python" -m pytest -m postgres "$@"
}

stage venv source scripts/python.sh requirements-dev.lock

case "$suite" in
  fast) fast "$@" ;;
  postgres) postgres "$@" ;;
  all) fast "$@"; postgres "$@" ;;
esac
