#!/usr/bin/env bash
# Build build/lambda-deps.zip: the Lambda layer with psycopg and the RDS CA bundle for the replication bootstrap and the
# fence agent (phases b and c), from the same hashed lock as the program. Run before `pulumi preview` or `pulumi up`;
# the offline plan does not need it.
#
# The zip is the same bytes on every machine (infra/lambda_archive.py: sorted, fixed times and modes, no
# bytecode), so a deploy from another machine does not publish a new layer version. BUILD_DIR (default
# build) is where it goes.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
out="$build/lambda-deps"
rm -rf "$out" "$build/lambda-deps.zip"
mkdir -p "$out/python"
# The layer's packages, with their hashes, out of requirements.lock.
awk '/^[a-z]/ { keep = ($1 ~ /^(psycopg|psycopg-binary|typing-extensions)==/) } keep && !/^ *#/' \
  requirements.lock > "$build/lambda-requirements.txt"
# --no-compile: no __pycache__ (bytecode embeds build times; Lambda compiles what it imports).
python3 -m pip install --quiet --no-compile --target "$out/python" --only-binary=:all: --no-deps --require-hashes \
  --platform manylinux2014_x86_64 --python-version 3.12 --implementation cp \
  -r "$build/lambda-requirements.txt"
# The RDS CA bundle (every region's roots) for sslmode=verify-full; layers unpack under /opt, so the
# functions find it at /opt/rds-ca/global-bundle.pem (components/_database.RDS_CA_BUNDLE).
mkdir -p "$out/rds-ca"
curl --fail --silent --show-error --proto '=https' --tlsv1.2 \
  -o "$out/rds-ca/global-bundle.pem" https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
grep -q "BEGIN CERTIFICATE" "$out/rds-ca/global-bundle.pem"
python3 -m infra.lambda_archive "$out" "$build/lambda-deps.zip"
