"""Issue 19, claim 12: no password in any statistics view, on two real PostgreSQL 18 writers that
record every statement, nested ones included (``pg_stat_statements.track = all``).

The real Lambda entry (``replication.bootstrap.handler``) creates the roles and subscriptions with
secrets from Secrets Manager (moto). Then ``pg_stat_statements`` and ``pg_stat_activity`` are
searched, as a superuser sees them, for every password involved. Role passwords reach the server as
SCRAM verifiers only. The subscriptions' connection strings must carry the replication password, so
the subscribe step refuses to run while nested statements are recorded, and runs once they are not.
"""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from drills.pg import cluster
from drills.sample import APP_SCHEMA, POLICY
from replication.bootstrap import handler
from replication.redact import HandlerError
from replication.roles import AGENT_ROLE, APP_ROLE
from tests.replication.pgauth import require_passwords

A, B = "us-east-1", "us-west-2"
STATS = {
    "wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10", "track_commit_timestamp": "on",
    "shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all",
    "pg_stat_statements.track_utility": "on",
}


def _policy() -> dict[str, object]:
    return {"default": "lww", "replicated": list(POLICY.replicated),
            "tables": [{"table": t.table, "strategy": t.strategy, "columns": list(t.columns)} for t in POLICY.tables]}


def _event(pg, region: str, step: str) -> dict[str, object]:
    return {
        "step": step, "node": region, "sslmode": "disable", "policy": _policy(),
        "nodes": [{"name": r, "region": r, "host": "127.0.0.1", "port": pg[r].port, "dbname": "postgres",
                   "user": "fraiseql_repl"} for r in (A, B)],
        "master_secret_arn": f"master-{region}", "replication_secret": "fraiseql/test/replication",
        "create_replication_secret": region == A,
        "role_secrets": {APP_ROLE: f"fraiseql/test/{region}/app", AGENT_ROLE: f"fraiseql/test/{region}/agent"},
    }


def _recorded(node) -> str:
    rows = node.execute("SELECT query FROM pg_stat_statements UNION ALL "
                        "SELECT coalesce(query, '') FROM pg_stat_activity")
    return "\n".join(q for (q,) in rows)


def test_no_password_reaches_a_statistics_view(monkeypatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", A)
    with cluster((A, B), settings=STATS) as pg, mock_aws():
        for n in pg.values():
            for stmt in APP_SCHEMA:
                n.execute(stmt)
            n.execute("CREATE EXTENSION pg_stat_statements")
            require_passwords(n, "fraiseql_repl")
        sm = boto3.client("secretsmanager", region_name=A)
        for r in (A, B):
            sm.create_secret(Name=f"master-{r}", SecretString=json.dumps({"username": "postgres", "password": "m-" + r}))
            for role in ("app", "agent"):
                sm.create_secret(Name=f"fraiseql/test/{r}/{role}")
        sm.create_secret(Name="fraiseql/test/replication")
        for r in (A, B):
            handler(_event(pg, r, "local"), None)
        secrets = [json.loads(sm.get_secret_value(SecretId=s)["SecretString"])["password"]
                   for s in ["fraiseql/test/replication"] + [f"fraiseql/test/{r}/{x}" for r in (A, B) for x in ("app", "agent")]]
        for r in (A, B):
            text = _recorded(pg[r])
            assert "ALTER ROLE" in text or "CREATE ROLE" in text  # nested statements really are recorded
            assert [s for s in secrets if s in text] == [], r
        with pytest.raises(HandlerError) as refused:
            handler(_event(pg, A, "subscribe"), None)
        assert "pg_stat_statements.track" in str(refused.value)
        for r in (A, B):
            assert [s for s in secrets if s in _recorded(pg[r])] == [], r
        # with only top-level statements recorded, the subscriptions are made, and still nothing leaks
        for n in pg.values():
            n.execute("ALTER SYSTEM SET pg_stat_statements.track = 'top'")
            n.execute("SELECT pg_reload_conf()")
        for r in (A, B):
            handler(_event(pg, r, "subscribe"), None)
        for r in (A, B):
            assert pg[r].execute("SELECT count(*) FROM pg_subscription")[0][0] == 2
            text = _recorded(pg[r])
            assert [s for s in secrets if s in text] == [], r


def test_the_verifier_is_what_postgresql_computes_for_the_password() -> None:
    # PostgreSQL's own SCRAM verifier for a fixed salt (from SELECT rolpassword after
    # SET password_encryption = 'scram-sha-256'; ALTER ROLE ... PASSWORD 'correct horse'), recomputed.
    with cluster(("one",)) as pg:
        node = pg["one"]
        node.execute("CREATE ROLE probe LOGIN PASSWORD 'correct horse'")
        stored = node.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'probe'")[0][0]
    method, rest = stored.split("$", 1)
    iterations, salt_b64 = rest.split("$")[0].split(":")
    import base64

    from replication.roles import scram_verifier

    assert scram_verifier("correct horse", salt=base64.b64decode(salt_b64), iterations=int(iterations)) == stored
