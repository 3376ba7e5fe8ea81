#!/usr/bin/env bash
# Build build/lambda-deps.zip: the Lambda layer with psycopg for the replication bootstrap and the
# fence agent (phases b and c), from the same hashed lock as the program. Run before `pulumi up`;
# the offline plan does not need it.
set -euo pipefail
cd "$(dirname "$0")/.."
out="build/lambda-deps"
rm -rf "$out" build/lambda-deps.zip
mkdir -p "$out/python"
# The layer's packages, with their hashes, out of requirements.lock.
awk '/^[a-z]/ { keep = ($1 ~ /^(psycopg|psycopg-binary|typing-extensions)==/) } keep && !/^ *#/' \
  requirements.lock > build/lambda-requirements.txt
python3 -m pip install --quiet --target "$out/python" --only-binary=:all: --no-deps --require-hashes \
  --platform manylinux2014_x86_64 --python-version 3.12 --implementation cp \
  -r build/lambda-requirements.txt
(cd "$out" && python3 -m zipfile -c ../lambda-deps.zip python)
echo "wrote build/lambda-deps.zip"
