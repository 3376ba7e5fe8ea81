#!/usr/bin/env bash
# The pull-request preview job (.github/workflows/pull-request.yml): select the stack, creating it on
# first use, install what the program and the policy pack need, and give the stack the secrets its
# phase needs. STACK_SECRETS lists them (the workflow's matrix, checked against core/config.py's
# PHASE_SECRETS by tests/test_ci_workflow.py); each fraiseql:<key> comes from the environment variable
# FRAISEQL_<KEY> (the `preview` environment's secret of that name) and goes in through stdin, never
# the command line. `scripts/ci-stack.sh phase-c`
set -euo pipefail
cd "$(dirname "$0")/.."
stack="${1:?usage: scripts/ci-stack.sh STACK}"
read -r -a keys <<< "${STACK_SECRETS:-}"
missing=()
for key in "${keys[@]}"; do
  var="FRAISEQL_$(printf '%s' "$key" | tr '[:lower:]' '[:upper:]')"
  [ -n "${!var:-}" ] || missing+=("$var")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "stack $stack needs the secrets ${missing[*]} in the preview environment (README: Continuous integration)" >&2
  exit 1
fi
pulumi stack select --create "$stack"
pulumi install
(cd policies && pulumi install)
for key in "${keys[@]}"; do
  var="FRAISEQL_$(printf '%s' "$key" | tr '[:lower:]' '[:upper:]')"
  printf '%s' "${!var}" | pulumi config set --secret --stack "$stack" "fraiseql:$key"
done
