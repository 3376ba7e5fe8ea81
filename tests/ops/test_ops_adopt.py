"""`python -m ops adopt`: its preflight refusals, dry run, resume, the pause bound and abort, on real
PostgreSQL 18 (a source with `wal_level = logical`, an empty new primary, and a source that cannot
publish). The whole move under load is the drill (tests/drills/test_adopt_drill.py)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ops.adopt as adopt
from drills.adopt import SCHEMA, SETTINGS, _outputs
from drills.pg import PG_BIN, PgNode, cluster
from ops.aws import Runtime
from tests.ops.conftest import Result, run_cli

FILL = ("INSERT INTO tb_user (email, name) SELECT 'u' || g || '@example.com', 'u' || g FROM generate_series(1, 50) g;"
        "INSERT INTO tb_post (fk_author, title, body) SELECT 1 + g % 50, 't' || g, 'b' FROM generate_series(1, 200) g;"
        "INSERT INTO tb_post_stats (fk_post) SELECT pk_post FROM tb_post")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, PgNode]]:
    with cluster(["source", "target", "plain"], settings=SETTINGS, per_node={"plain": {"wal_level": "replica"}}) as nodes:
        yield nodes


class Pair:
    """A fresh database on each side, filled like a FraiseQL source, and the runbook's arguments."""

    def __init__(self, servers: dict[str, PgNode], tmp: Path, source: str = "source") -> None:
        self.db = "a" + uuid.uuid4().hex[:10]
        self.source, self.target = servers[source], servers["target"]
        for node in (self.source, self.target):
            node.execute(f"CREATE DATABASE {self.db}")
        self.src_dsn = self.source.dsn.replace("dbname=postgres", f"dbname={self.db}")
        self.tgt_dsn = self.target.dsn.replace("dbname=postgres", f"dbname={self.db}")
        self.sql(self.src_dsn, SCHEMA + FILL)
        self.outputs = tmp / "outputs.json"
        self.outputs.write_text(json.dumps(_outputs(self.target.port)))
        self.state = tmp / "fraiseql-adopt.json"

    @staticmethod
    def sql(dsn: str, text: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as c:
            cur = c.execute(text.encode())
            return cur.fetchall() if cur.description else []

    def args(self, action: str, *extra: str) -> list[str]:
        return ["adopt", action, "--outputs", str(self.outputs), "--source", self.src_dsn, "--target-dsn", self.tgt_dsn,
                "--pg-bin", str(PG_BIN), "--state", str(self.state), "--json", *extra]

    def run(self, action: str, *extra: str) -> Result:
        return run_cli(self.args(action, *extra), Runtime(out=io.StringIO(), sleep=lambda s: None))

    def footprint(self) -> dict[str, Any]:
        """What the runbook creates, on both sides."""
        return {
            "publications": self.sql(self.src_dsn, "SELECT pubname FROM pg_publication"),
            "slots": self.sql(self.src_dsn, "SELECT slot_name FROM pg_replication_slots WHERE slot_name = 'fraiseql_adopt'"),
            "subscriptions": self.sql(self.tgt_dsn, "SELECT subname FROM pg_subscription WHERE subname = 'fraiseql_adopt'"),
            "target tables": self.sql(self.tgt_dsn, "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN "
                                                    "('pg_catalog', 'information_schema')"),
            "source setting": self.sql(self.src_dsn, "SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d "
                                                     "ON d.oid = s.setdatabase WHERE d.datname = current_database()"),
        }


def test_the_dry_run_checks_and_lists_every_step_and_changes_nothing(servers, tmp_path):
    pair = Pair(servers, tmp_path)
    before = pair.footprint()
    result = pair.run("sync", "--dry-run")
    assert result.code == 0, result.text
    assert [e["step"] for e in result.events if e["status"] == "would"] == list(adopt.SYNC_PLAN[1:])
    assert pair.footprint() == before and not pair.state.exists()


def test_a_table_without_a_key_is_refused_before_anything_changes(servers, tmp_path):
    pair = Pair(servers, tmp_path)
    pair.sql(pair.src_dsn, "CREATE TABLE audit_log (at timestamptz, line text)")
    before = pair.footprint()
    result = pair.run("sync")
    assert result.code == 3
    assert any("audit_log" in e["detail"] and "REPLICA IDENTITY FULL" in e["detail"] for e in result.steps("preflight"))
    assert pair.footprint() == before


def test_a_source_that_cannot_decode_logically_is_refused_with_the_fix(servers, tmp_path):
    pair = Pair(servers, tmp_path, source="plain")
    result = pair.run("sync")
    assert result.code == 3
    assert any("rds.logical_replication = 1" in e["detail"] for e in result.steps("preflight"))


def test_a_new_primary_that_already_holds_data_is_refused(servers, tmp_path):
    pair = Pair(servers, tmp_path)
    pair.sql(pair.tgt_dsn, "CREATE TABLE tb_user (pk_user bigint PRIMARY KEY); INSERT INTO tb_user VALUES (1)")
    result = pair.run("sync")
    assert result.code == 3 and any("already holds rows in public.tb_user" in e["detail"] for e in result.steps("preflight"))


def test_a_password_on_the_command_line_is_refused(servers, tmp_path):
    pair = Pair(servers, tmp_path)
    args = pair.args("sync")
    args[args.index("--source") + 1] += " password=hunter2"
    result = run_cli(args, Runtime(out=io.StringIO(), sleep=lambda s: None))
    assert result.code == 2 and "hunter2" not in result.text


def test_sync_then_a_cutover_whose_pause_runs_out_releases_the_fence_and_a_rerun_finishes(servers, tmp_path, monkeypatch):
    pair = Pair(servers, tmp_path)
    assert pair.run("sync").code == 0
    assert pair.run("sync").code == 0  # a second sync is a no-op
    pair.sql(pair.src_dsn, "SELECT fn_register_user(gen_random_uuid(), 'late@example.com', 'Late')")  # after the copy

    real = adopt._marker
    calls: list[str] = []

    def slow_drain(sides: Any, opts: Any, rt: Any, *, timeout_s: float, step: str) -> float:
        calls.append(step)
        if step == "drain":
            raise TimeoutError("drain: simulated")
        return real(sides, opts, rt, timeout_s=timeout_s, step=step)

    monkeypatch.setattr(adopt, "_marker", slow_drain)
    failed = pair.run("cutover")
    assert failed.code == 1 and calls == ["preflight", "drain"]
    assert pair.footprint()["source setting"] == [], "the fence is released: the source takes writes again"
    pair.sql(pair.src_dsn, "SELECT fn_register_user(gen_random_uuid(), 'meanwhile@example.com', 'Meanwhile')")
    monkeypatch.setattr(adopt, "_marker", real)

    done = pair.run("cutover")
    assert done.code == 0, done.text
    result = done.last("result")["data"]
    users = pair.sql(pair.tgt_dsn, "SELECT count(*) FROM tb_user WHERE email IN ('late@example.com', 'meanwhile@example.com')")
    assert users == [(2,)]
    assert result["rows_compared"] == pair.sql(pair.src_dsn, "SELECT (SELECT count(*) FROM tb_user) + (SELECT count(*) "
                                                              "FROM tb_post) + (SELECT count(*) FROM tb_post_stats)")[0][0]
    after = pair.footprint()
    assert after["publications"] == after["slots"] == after["subscriptions"] == []
    assert after["source setting"] == [(["default_transaction_read_only=on"],)], "the source stays read-only"
    assert not pair.state.exists()
    # The new primary's keys continue after the copied ones.
    pair.sql(pair.tgt_dsn, "SELECT fn_register_user(gen_random_uuid(), 'new@example.com', 'New')")


def test_abort_removes_what_sync_made_and_releases_the_source(servers, tmp_path):
    pair = Pair(servers, tmp_path)
    assert pair.run("sync").code == 0
    status = pair.run("status")
    assert status.code == 0 and status.last("subscription")["data"]["ready"] == status.last("subscription")["data"]["tables"]
    assert pair.run("abort").code == 0
    after = pair.footprint()
    assert after["publications"] == after["slots"] == after["subscriptions"] == after["source setting"] == []


def test_a_source_the_new_primary_cannot_reach_names_the_route_and_rule_to_add(servers, tmp_path, monkeypatch):
    import psycopg

    pair = Pair(servers, tmp_path)

    def unreachable(*_: Any) -> None:
        raise psycopg.OperationalError('connection to server at "10.0.3.7", port 5432 failed: timeout expired')

    monkeypatch.setattr(adopt, "_create_subscription", unreachable)
    result = pair.run("sync")
    assert result.code == 1 and "Traceback" not in result.text
    detail = result.last("result")["detail"]
    assert "route" in detail and "security group" in detail and "run this again" in detail
