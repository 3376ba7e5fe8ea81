"""The bootstrap Lambda's two steps, run region by region as `pulumi up` invokes them, against three
real PostgreSQL 18 nodes, with Secrets Manager in moto: afterwards the mesh replicates."""

from __future__ import annotations

import json
import time

import boto3
import psycopg
import pytest
from moto import mock_aws

from drills.pg import cluster
from drills.sample import APP_SCHEMA, POLICY
from replication.bootstrap import run_step
from replication.sql import REQUIRED_PARAMETERS, render_lease

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
# What a writer's parameter group sets (the write guard refuses writes without some of them).
SETTINGS = {**REQUIRED_PARAMETERS}


def _policy_event():
    return {
        "default": POLICY.default,
        "tables": [{"table": t.table, "strategy": t.strategy, "columns": list(t.columns)} for t in POLICY.tables],
        "replicated": list(POLICY.replicated),
    }


@pytest.fixture(scope="module")
def nodes():
    with cluster(REGIONS, settings=SETTINGS) as pg:
        for node in pg.values():
            for stmt in APP_SCHEMA:
                node.execute(stmt)
        yield pg


def _event(pg, region, step):
    return {
        "step": step,
        "node": region,
        "nodes": [{"name": r, "region": r, "host": "127.0.0.1", "port": pg[r].port, "dbname": "postgres",
                   "user": "fraiseql_repl", "index": i + 1} for i, r in enumerate(REGIONS)],
        "policy": _policy_event(),
        "master_secret_arn": f"master-{region}",
        "replication_secret": "fraiseql/test/replication",
        "create_replication_secret": region == REGIONS[0],
        "sslmode": "disable",
    }


def test_two_steps_per_region_build_a_replicating_mesh_and_rerun_is_harmless(nodes):
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        for r in REGIONS:
            sm.create_secret(Name=f"master-{r}", SecretString=json.dumps({"username": "postgres", "password": "x"}))
        sm.create_secret(Name="fraiseql/test/replication")  # declared by Pulumi with no value

        def connect(node, user, password, options):
            return psycopg.connect(host="127.0.0.1", port=node.port, dbname="postgres", user=user,
                                   options=options or None, autocommit=True)

        for step in ("local", "subscribe", "local", "subscribe"):  # the second round is a re-run
            for r in REGIONS:
                result = run_step(_event(nodes, r, step), connect, sm, sleep=lambda s: None)
                assert result["ok"] and result["step"] == step
        password = json.loads(sm.get_secret_value(SecretId="fraiseql/test/replication")["SecretString"])["password"]

    assert len(password) >= 32
    role = nodes["eu-west-1"].execute(
        "SELECT rolreplication, rolcanlogin FROM pg_roles WHERE rolname = 'fraiseql_repl'")
    assert role == [(True, True)]
    subs = nodes["us-west-2"].execute("SELECT subname FROM pg_subscription ORDER BY subname")
    assert [s for (s,) in subs] == ["fq_ctl_us_west_2_from_eu_west_1", "fq_ctl_us_west_2_from_us_east_1",
                                    "fq_us_west_2_from_eu_west_1", "fq_us_west_2_from_us_east_1"]

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):  # fenced until its agent grants a lease
        nodes["us-east-1"].execute("INSERT INTO items (id, v) VALUES (1, 'from us-east-1')")
    for stmt in render_lease(float("inf"), "test: no agent"):
        nodes["us-east-1"].execute(stmt)
    nodes["us-east-1"].execute("INSERT INTO items (id, v) VALUES (1, 'from us-east-1')")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen = [n.execute("SELECT v FROM items WHERE id = 1") for n in nodes.values()]
        if all(rows == [("from us-east-1",)] for rows in seen):
            break
        time.sleep(0.2)
    assert all(rows == [("from us-east-1",)] for rows in seen)
    # one data and one control subscription per peer, even after the re-run
    assert nodes["eu-west-1"].execute("SELECT count(*) FROM pg_subscription") == [(4,)]


def test_a_later_region_waits_for_the_password_then_gives_up_clearly():
    from replication.bootstrap import _replication_password

    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        sm.create_secret(Name="repl")
        with pytest.raises(RuntimeError, match="secret repl has no value after 0 s"):
            _replication_password(sm, "repl", create=False, wait_s=0.0, sleep=lambda s: None)
        # and the first region creates it instead of waiting
        first = _replication_password(sm, "repl", create=True, wait_s=0.0)
        assert _replication_password(sm, "repl", create=False, wait_s=0.0) == first


def test_the_phase_a_primary_keeps_writing_through_its_first_install_and_a_rerun_never_unfences():
    # A mesh of one: the start of A -> B, when Pulumi bootstraps the primary alone while its copies
    # are still read replicas. Writes continue (a transition lease) until the fence agent runs.
    from replication.sql import render_lease as lease

    with cluster(["us-east-1"], settings=SETTINGS) as pg, mock_aws():
        node = pg["us-east-1"]
        for stmt in APP_SCHEMA:
            node.execute(stmt)
        node.execute("INSERT INTO items (id, v) VALUES (1, 'phase a')")
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        sm.create_secret(Name="master-us-east-1", SecretString=json.dumps({"username": "postgres", "password": "x"}))
        sm.create_secret(Name="fraiseql/test/replication")

        def connect(n, user, password, options):
            return psycopg.connect(host="127.0.0.1", port=n.port, dbname="postgres", user=user,
                                   options=options or None, autocommit=True)

        event = {**_event({r: node for r in REGIONS}, "us-east-1", "local"),
                 "nodes": [{"name": "us-east-1", "region": "us-east-1", "host": "127.0.0.1", "port": node.port,
                            "dbname": "postgres", "user": "fraiseql_repl", "index": 1}]}
        assert run_step(event, connect, sm, sleep=lambda s: None)["ok"]
        node.execute("INSERT INTO items (id, v) VALUES (2, 'during the transition')")  # not fenced
        assert node.execute("SELECT granted_by FROM fraiseql_repl.lease") == [("transition:runbook",)]
        for stmt in lease(None, "fenced by its agent"):
            node.execute(stmt)
        assert run_step(event, connect, sm, sleep=lambda s: None)["ok"]  # Pulumi runs it again
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            node.execute("INSERT INTO items (id, v) VALUES (3, 'after the agent fenced it')")
