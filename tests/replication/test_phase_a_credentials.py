"""Issue 13 item 3: phase A's app credentials follow the writer through a failover.

The bootstrap's ``roles`` step creates ``fraiseql_app`` on a real PostgreSQL 18 primary with the
password it generates into Secrets Manager (moto). A streaming standby (pg_basebackup, as RDS's
cross-region replica is) carries the role and its password; once promoted, the same secret logs in
and writes, with nothing re-pointed.
"""

from __future__ import annotations

import json

import boto3
import psycopg
import pytest
from moto import mock_aws

from drills.pg import cluster
from replication.bootstrap import run_step
from tests.replication.pgauth import require_passwords


def _connect(node, user, password, options):
    return psycopg.connect(host="127.0.0.1", port=node.port, dbname="postgres", user=user, password=password,
                           options=options or None, autocommit=True)


def test_the_app_secret_opens_the_promoted_standby(tmp_path):
    with cluster(["primary"], settings={"wal_level": "replica"}) as pg, mock_aws():
        primary = pg["primary"]
        primary.execute("CREATE TABLE tb_user (id int PRIMARY KEY, name text)")
        require_passwords(primary, "fraiseql_app")
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        sm.create_secret(Name="master", SecretString=json.dumps({"username": "postgres", "password": "unused"}))
        app_arn = sm.create_secret(Name="fraiseql/phase-a/app")["ARN"]
        event = {"step": "roles", "node": "us-east-1", "policy": {}, "master_secret_arn": "master",
                 "role_secrets": {"fraiseql_app": app_arn}, "sslmode": "disable",
                 "nodes": [{"name": "us-east-1", "region": "us-east-1", "host": "127.0.0.1", "port": primary.port,
                            "dbname": "postgres", "user": "fraiseql_repl"}]}
        assert run_step(event, _connect, sm)["ok"]
        assert run_step(event, _connect, sm)["ok"]  # idempotent: same password, same grants
        creds = json.loads(sm.get_secret_value(SecretId=app_arn)["SecretString"])
        assert creds["username"] == "fraiseql_app"

        standby = primary.make_standby("standby")
        pg["standby"] = standby
        standby.start()
        primary.kill()
        standby.promote()
        standby.wait_ready(writable=True)
        with _connect(standby, creds["username"], creds["password"], "") as app:
            app.execute("INSERT INTO tb_user (id, name) VALUES (1, 'after failover')")
            assert app.execute("SELECT name FROM tb_user").fetchall() == [("after failover",)]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("DROP TABLE tb_user")
        with pytest.raises(psycopg.OperationalError):
            _connect(standby, "fraiseql_app", "not-the-password", "")
