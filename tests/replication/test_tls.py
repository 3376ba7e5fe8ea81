"""Issue 13 item 7: the clients of a writer check who the server is.

- The fence agent (its real ``_connect``) and the bootstrap Lambda (its real handler) connect with
  ``sslmode=verify-full`` against the CA bundle named by ``FRAISEQL_DB_SSLROOTCERT`` (on AWS, the
  RDS bundle the layer ships). The embedded PostgreSQL 18 build has no SSL, so a TLS terminator
  with a certificate for ``localhost`` stands in front of it: the clients' checks are real, and a
  server whose certificate another CA signed is refused.
- Subscriptions run inside RDS, where no CA file can be named: the bootstrap gives them TLS with
  SCRAM channel binding (``channel_binding=require``), so the publisher proves it holds the
  password verifier on that very TLS session (that part needs a server built with SSL: RDS).
"""

from __future__ import annotations

import json

import boto3
import psycopg
import pytest
from moto import mock_aws

from drills.pg import cluster
from replication.agent import Settings
from replication.agent.entry import _connect
from replication.bootstrap import handler, run_step
from tests.replication.tlscerts import make_ca, server_cert
from tests.replication.tlsproxy import TlsTerminator

REGION = "us-east-1"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    out = tmp_path_factory.mktemp("ca")
    ca_path, ca_key, ca = make_ca(out)
    other_ca, _, _ = make_ca(out, "some other CA")
    server_cert(out, ca_key, ca)
    with cluster([REGION], settings={"wal_level": "logical"}) as pg:
        proxy = TlsTerminator(pg[REGION].port, out / "server.crt", out / "server.key")
        try:
            yield pg, proxy, ca_path, other_ca
        finally:
            proxy.close()


def _settings(port: int, rootcert: str) -> Settings:
    # as the agent reads them from the environment the stack writes (FRAISEQL_DB_SSLROOTCERT)
    return Settings(region=REGION, regions=(REGION, "us-west-2", "eu-west-1"), probe_s=1, stale_after_s=3, lease_s=3,
                    unfence_after=1, db_host="localhost", db_port=port, db_name="postgres", db_sslmode="verify-full",
                    db_secret_arn="x", db_sslrootcert=rootcert)


def test_the_agent_verifies_the_writer(tls):
    pg, proxy, ca, other = tls
    conn = _connect(_settings(proxy.port, str(ca)), "postgres", "")
    try:
        assert conn.pgconn.ssl_in_use and conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        conn.close()
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        _connect(_settings(proxy.port, str(other)), "postgres", "")


def _event(port):
    return {"step": "local", "node": REGION, "policy": {"default": "lww", "replicated": [], "tables": []},
            "nodes": [{"name": REGION, "region": REGION, "host": "localhost", "port": port, "dbname": "postgres",
                       "user": "fraiseql_repl"}],
            "master_secret_arn": "master", "replication_secret": "repl", "create_replication_secret": True}


def test_the_bootstrap_lambda_verifies_its_writer(tls, monkeypatch):
    pg, proxy, ca, other = tls
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("FRAISEQL_DB_SSLMODE", raising=False)  # the deployed default: verify-full
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name=REGION)
        sm.create_secret(Name="master", SecretString=json.dumps({"username": "postgres", "password": "unused"}))
        sm.create_secret(Name="repl")
        monkeypatch.setenv("FRAISEQL_DB_SSLROOTCERT", str(other))
        with pytest.raises(Exception, match="certificate verify failed"):
            handler(_event(proxy.port), None)
        monkeypatch.setenv("FRAISEQL_DB_SSLROOTCERT", str(ca))
        assert handler(_event(proxy.port), None)["ok"]


class _Recorder:
    """A connection that keeps the statements run_step sends (what the server would receive)."""

    def __init__(self):
        self.sql: list[str] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, stmt, params=None):
        self.sql.append(stmt.decode() if isinstance(stmt, bytes) else stmt)


def test_deployed_subscriptions_bind_the_channel():
    nodes = [{"name": r, "region": r, "host": f"writer.{r}.rds.amazonaws.com", "port": 5432, "dbname": "fraiseql",
              "user": "fraiseql_repl"} for r in (REGION, "us-west-2")]
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name=REGION)
        sm.create_secret(Name="master", SecretString=json.dumps({"username": "admin", "password": "unused"}))
        sm.create_secret(Name="repl", SecretString=json.dumps({"password": "p"}))
        rec = _Recorder()
        event = {**_event(0), "step": "subscribe", "nodes": nodes}  # no sslmode: as deployed
        run_step(event, lambda *a: rec, sm)
    creates = [s for s in rec.sql if "CREATE SUBSCRIPTION" in s]
    assert creates and all("sslmode=require channel_binding=require" in s for s in creates)
    assert not any("sslmode=disable" in s or "'p'" in s for s in rec.sql)


def test_the_layer_ships_the_rds_ca_bundle_where_the_functions_look():
    from components._database import DB_TLS_ENV, RDS_CA_BUNDLE
    from components.quorum import QuorumArgs
    from infra.paths import REPO

    script = (REPO / "scripts" / "build-lambda-deps.sh").read_text()
    assert "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem" in script
    # where the bundle lands in the layer (rds-ca/global-bundle.pem, so /opt/rds-ca/...): the real
    # build, run with stand-ins for pip and curl, in tests/test_lambda_archives.py
    assert RDS_CA_BUNDLE == "/opt/rds-ca/global-bundle.pem"
    assert DB_TLS_ENV == {"FRAISEQL_DB_SSLMODE": "verify-full", "FRAISEQL_DB_SSLROOTCERT": RDS_CA_BUNDLE}
    assert QuorumArgs.__dataclass_fields__["db_sslrootcert"].default == RDS_CA_BUNDLE
    assert QuorumArgs.__dataclass_fields__["db_sslmode"].default == "verify-full"
