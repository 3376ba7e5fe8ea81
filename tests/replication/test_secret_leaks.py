"""Issue 13, item 1: no password in any log line or Lambda result, even when the bootstrap fails.

The real Lambda entry (``replication.bootstrap.handler``) runs against two real PostgreSQL 18
writers that log every statement, every duration, every bind parameter and every connection, and
check the replication role's password (scram). Secrets Manager is moto. The third peer does not
answer, so the subscribe step fails after creating one subscription. Then every server log line,
the error the Lambda returns and everything printed are searched for every password involved.
"""

from __future__ import annotations

import json
import traceback

import boto3
import psycopg
import pytest
from moto import mock_aws

from drills.pg import cluster, free_port
from drills.sample import APP_SCHEMA, POLICY
from replication.bootstrap import handler
from replication.redact import HandlerError
from replication.roles import AGENT_ROLE, APP_ROLE
from tests.replication.pgauth import require_passwords

A, B, DEAD = "us-east-1", "us-west-2", "eu-west-1"
LOUD = {
    "wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10", "track_commit_timestamp": "on",
    "log_statement": "all", "log_min_duration_statement": "0", "log_min_error_statement": "debug5",
    "log_parameter_max_length": "-1", "log_parameter_max_length_on_error": "-1", "log_connections": "all",
    "log_min_messages": "info", "log_error_verbosity": "verbose",
}
MASTER_PASSWORD = "master-Password-value-8c1f0e"


def _policy():
    return {"default": "lww", "replicated": list(POLICY.replicated),
            "tables": [{"table": t.table, "strategy": t.strategy, "columns": list(t.columns)} for t in POLICY.tables]}


@pytest.fixture(scope="module")
def pg():
    with cluster((A, B), settings=LOUD) as nodes:
        for n in nodes.values():
            for stmt in APP_SCHEMA:
                n.execute(stmt)
            require_passwords(n, "fraiseql_repl")
        yield nodes


def _event(pg, region, step):
    dead_port = free_port()  # nothing listens there
    return {
        "step": step, "node": region, "sslmode": "disable", "policy": _policy(),
        "nodes": [{"name": r, "region": r, "host": "127.0.0.1", "port": pg[r].port if r in pg else dead_port,
                   "dbname": "postgres", "user": "fraiseql_repl"} for r in (A, B, DEAD)],
        "master_secret_arn": f"master-{region}", "replication_secret": "fraiseql/test/replication",
        "create_replication_secret": region == A,
        "role_secrets": {APP_ROLE: f"fraiseql/test/{region}/app", AGENT_ROLE: f"fraiseql/test/{region}/agent"},
    }


def _lambda_result(exc: BaseException) -> str:
    """What the Lambda runtime returns (and `pulumi up` prints) for a failed invocation."""
    return json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__,
                       "stackTrace": traceback.format_exception(exc)})


def test_a_failing_bootstrap_leaks_no_password_anywhere(pg, monkeypatch, capfd):
    monkeypatch.setenv("AWS_DEFAULT_REGION", A)
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name=A)
        for r in (A, B):
            sm.create_secret(Name=f"master-{r}", SecretString=json.dumps({"username": "postgres", "password": MASTER_PASSWORD}))
            for role in ("app", "agent"):
                sm.create_secret(Name=f"fraiseql/test/{r}/{role}")
        sm.create_secret(Name="fraiseql/test/replication")
        results = [handler(_event(pg, r, "local"), None) for r in (A, B)]
        with pytest.raises(HandlerError) as info:
            handler(_event(pg, A, "subscribe"), None)
        secrets = [MASTER_PASSWORD] + [
            json.loads(sm.get_secret_value(SecretId=s)["SecretString"])["password"]
            for s in ["fraiseql/test/replication"] + [f"fraiseql/test/{r}/{x}" for r in (A, B) for x in ("app", "agent")]
        ]
    repl_password = secrets[1]

    # the failure is the dead peer, reported by name, and the secret really travelled to the server
    assert "to eu-west-1" in str(info.value) and info.value.__cause__ is None and info.value.__suppress_context__
    conninfo = pg[A].execute("SELECT subconninfo FROM pg_subscription WHERE subname = 'fq_us_east_1_from_us_west_2'")
    assert conninfo and repl_password in conninfo[0][0]
    with psycopg.connect(host="127.0.0.1", port=pg[B].port, dbname="postgres", user="fraiseql_repl",
                         password=repl_password) as c:
        assert c.execute("SELECT current_user").fetchone() == ("fraiseql_repl",)

    printed = capfd.readouterr()
    surfaces = {
        "lambda results": json.dumps(results) + _lambda_result(info.value),
        "stdout/stderr": printed.out + printed.err,
        **{f"{r} server log": pg[r].log_path.read_text(errors="replace") for r in (A, B)},
    }
    assert "CREATE SUBSCRIPTION" in surfaces[f"{A} server log"] or "DO $do$" in surfaces[f"{A} server log"]
    leaks = [(where, line[:160]) for where, text in surfaces.items() for line in text.splitlines()
             for s in secrets if s in line]
    assert leaks == []


def test_redaction_masks_known_values_and_password_fields():
    from replication.redact import redact

    text = "could not connect: host=x password='p@ss w0rd' user=y; token abcdefgh; password=plain"
    out = redact(text, {"abcdefgh"})
    assert "p@ss" not in out and "abcdefgh" not in out and "plain" not in out and out.count("[redacted]") == 3
