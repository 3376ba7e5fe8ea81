#!/usr/bin/env bash
# Build build/lambda-deps.zip: the Lambda layer with psycopg and the RDS CA bundle for the replication bootstrap and the
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
# The RDS CA bundle (every region's roots) for sslmode=verify-full; layers unpack under /opt, so the
# functions find it at /opt/rds-ca/global-bundle.pem (components/_database.RDS_CA_BUNDLE).
mkdir -p "$out/rds-ca"
curl --fail --silent --show-error --proto '=https' --tlsv1.2 \
  -o "$out/rds-ca/global-bundle.pem" https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
grep -q "BEGIN CERTIFICATE" "$out/rds-ca/global-bundle.pem"
(cd "$out" && python3 -m zipfile -c ../lambda-deps.zip python rds-ca)
echo "wrote build/lambda-deps.zip"
