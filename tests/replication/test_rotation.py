"""Issue 13, item 1: the replication password rotates, and every subscription keeps streaming.

Three real PostgreSQL 18 writers check ``fraiseql_repl``'s password (scram); Secrets Manager is
moto. Secrets Manager's own part of a rotation (a version labelled AWSPENDING, then the four
steps) is played by ``begin_rotation`` and the loop below; everything else is the real code: the
rotation function's ``rotate`` and, for each region, the bootstrap's ``run_step``. Writes go on in
every region during the rotation; afterwards every walsender is killed so that each subscription
has to log in again, with the new password only.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid

import boto3
import psycopg
import pytest
from moto import mock_aws
from moto.secretsmanager.models import secretsmanager_backends

from drills.pg import cluster
from drills.sample import APP_SCHEMA, POLICY
from replication.bootstrap import run_step
from replication.rotation import rotate
from replication.sql import REQUIRED_PARAMETERS, render_lease
from tests.replication.pgauth import require_passwords

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
SECRET = "fraiseql/test/replication"
# What a writer's parameter group sets (the write guard refuses writes without some of them).
SETTINGS = {**REQUIRED_PARAMETERS, "wal_retrieve_retry_interval": "200ms"}


def _policy():
    return {"default": "lww", "replicated": list(POLICY.replicated),
            "tables": [{"table": t.table, "strategy": t.strategy, "columns": list(t.columns)} for t in POLICY.tables]}


def _connect(node, user, password, options):
    return psycopg.connect(host="127.0.0.1", port=node.port, dbname="postgres", user=user, password=password,
                           options=options or None, autocommit=True, connect_timeout=5)


def begin_rotation(sm, name: str) -> str:
    """What Secrets Manager's RotateSecret does before calling the function: a new version labelled
    AWSPENDING, with no value yet."""
    token = str(uuid.uuid4())
    secret = secretsmanager_backends["123456789012"]["us-east-1"].secrets[name]
    secret.versions[token] = {"createdate": int(time.time()), "version_id": token, "version_stages": ["AWSPENDING"]}
    secret.rotation_requested = secret.rotation_enabled = True
    return token


def _password(sm, **version) -> str:
    return json.loads(sm.get_secret_value(SecretId=SECRET, **version)["SecretString"])["password"]


@pytest.fixture(scope="module")
def world():
    with cluster(REGIONS, settings=SETTINGS) as pg, mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        sm.create_secret(Name="master", SecretString=json.dumps({"username": "postgres", "password": "unused"}))
        sm.create_secret(Name=SECRET)
        for n in pg.values():
            for stmt in APP_SCHEMA:
                n.execute(stmt)
            require_passwords(n, "fraiseql_repl")

        def event(region, step, **extra):
            return {"step": step, "node": region, "sslmode": "disable", "policy": _policy(), "wait_s": 30,
                    "nodes": [{"name": r, "region": r, "host": "127.0.0.1", "port": pg[r].port, "dbname": "postgres",
                               "user": "fraiseql_repl"} for r in REGIONS],
                    "master_secret_arn": "master", "replication_secret": SECRET,
                    "create_replication_secret": region == REGIONS[0], **extra}

        for step in ("local", "subscribe"):
            for r in REGIONS:
                run_step(event(r, step), _connect, sm, sleep=time.sleep)
        for n in pg.values():
            for stmt in render_lease(float("inf"), "test: no agent"):
                n.execute(stmt)
        yield pg, sm, event


def _converged(pg, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {r: pg[r].execute("SELECT count(*), coalesce(sum(id), 0) FROM items") for r in REGIONS}
        if len(set(map(str, seen.values()))) == 1:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"not converged: {seen}")


def test_rotation_keeps_every_subscription_streaming(world):
    pg, sm, event = world
    old = _password(sm)
    keys = itertools.count(1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(region: str) -> None:
        base = (REGIONS.index(region) + 1) * 1_000_000
        try:
            with pg[region].connect() as c:
                while not stop.is_set():
                    c.execute("INSERT INTO items (id, v) VALUES (%s, 'during rotation')", (base + next(keys),))
                    time.sleep(0.01)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(r,)) for r in REGIONS]
    for t in threads:
        t.start()
    token = begin_rotation(sm, SECRET)

    def invoke(region, step, version):
        return run_step(event(region, step, version_id=version), _connect, sm, sleep=time.sleep)

    try:
        for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
            rotate({"SecretId": SECRET, "ClientRequestToken": token, "Step": step}, sm, invoke, list(REGIONS))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    new = _password(sm, VersionStage="AWSCURRENT")
    assert new != old and _password(sm, VersionId=token) == new
    assert token in [v for v, s in sm.describe_secret(SecretId=SECRET)["VersionIdsToStages"].items() if "AWSCURRENT" in s]

    # every subscription must now log in with the new password: kill every walsender
    for r in REGIONS:
        pg[r].execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
    for r in REGIONS:
        pg[r].execute("INSERT INTO items (id, v) VALUES (%s, 'after rotation')", (9_000_000 + REGIONS.index(r),))
    counts = _converged(pg)
    assert counts[REGIONS[0]][0][0] > 3
    with pytest.raises(psycopg.OperationalError):
        _connect(pg[REGIONS[1]], "fraiseql_repl", old, "")
    with _connect(pg[REGIONS[1]], "fraiseql_repl", new, "") as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_a_retried_step_changes_nothing(world):
    pg, sm, event = world
    token = begin_rotation(sm, SECRET)
    calls = []

    def invoke(region, step, version):
        calls.append((region, step))
        return run_step(event(region, step, version_id=version), _connect, sm, sleep=time.sleep)

    rotate({"SecretId": SECRET, "ClientRequestToken": token, "Step": "createSecret"}, sm, invoke, list(REGIONS))
    first = _password(sm, VersionId=token)
    rotate({"SecretId": SECRET, "ClientRequestToken": token, "Step": "createSecret"}, sm, invoke, list(REGIONS))
    assert _password(sm, VersionId=token) == first and calls == []
    rotate({"SecretId": SECRET, "ClientRequestToken": token, "Step": "setSecret"}, sm, invoke, list(REGIONS))
    assert calls == [(r, "set_password") for r in REGIONS] + [(r, "resubscribe") for r in REGIONS]
    with pytest.raises(ValueError, match="not a version"):
        rotate({"SecretId": SECRET, "ClientRequestToken": str(uuid.uuid4()), "Step": "setSecret"}, sm, invoke, list(REGIONS))


def test_enabling_rotation_only_tests_the_configuration(world):
    """The stack enables rotation without rotating: Secrets Manager's testSecret call then has no
    pending value, and must neither fail nor touch a database."""
    pg, sm, event = world
    token = begin_rotation(sm, SECRET)
    calls = []
    out = rotate({"SecretId": SECRET, "ClientRequestToken": token, "Step": "testSecret"}, sm,
                 lambda *a: calls.append(a), list(REGIONS))
    assert out["done"].startswith("configuration test") and calls == []
