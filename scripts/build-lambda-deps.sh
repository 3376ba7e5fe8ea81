#!/usr/bin/env bash
# Build build/lambda-deps.zip: the Lambda layer with psycopg for the replication bootstrap and the
# fence agent (phases b and c). Run before `pulumi up`; the offline plan does not need it.
set -euo pipefail
cd "$(dirname "$0")/.."
out="build/lambda-deps"
rm -rf "$out" build/lambda-deps.zip
mkdir -p "$out/python"
python3 -m pip install --quiet --target "$out/python" --only-binary=:all: \
  --platform manylinux2014_x86_64 --python-version 3.12 --implementation cp \
  "psycopg[binary]==3.3.9"
(cd "$out" && python3 -m zipfile -c ../lambda-deps.zip python)
echo "wrote build/lambda-deps.zip"
