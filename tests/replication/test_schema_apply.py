"""`python -m ops schema apply` and the DDL guard on a real three-writer PostgreSQL 18 mesh: a
re-run is a no-op, a changed file and unsafe DDL are refused before any writer changes, a writer
that missed a migration is detected and caught up, every writer has a new column (and merges it)
before any writer sends it, and the event trigger refuses DDL that lacks schema apply's setting."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from drills.schema_change import POLICY_CONFIG
from ops.aws import Runtime
from ops.cli import main
from replication.ddl_rules import analyse, parse_migration
from replication.migrate import Applier, catalog_of, read_writer
from replication.model import ConflictPolicy

A, B, C = REGIONS
OUTPUTS = {"phase": "b", "regions": {r: "active" for r in REGIONS}, "writerDbIdentifiers": {r: r for r in REGIONS},
           "healthCheckIds": {}, "routingControlArns": {r: "arn" for r in REGIONS},
           "arcClusterEndpoints": [{"region": B, "endpoint": "https://arc.invalid"}], "quorum": 2,
           "replicationLagAlarmArns": {}, "slo": {"rtoSeconds": 90, "rpoSeconds": 1, "lagAlarmSeconds": 0.5}}
SCHEMA = (*APP_SCHEMA, "CREATE TABLE gadgets (id int PRIMARY KEY, name text)")


@pytest.fixture(scope="module")
def sm() -> Iterator[Mesh]:
    with mesh(POLICY, SCHEMA, delays=False) as running:
        yield running


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("schema")
    (d / "outputs.json").write_text(json.dumps(OUTPUTS))
    (d / "Pulumi.test.yaml").write_text(POLICY_CONFIG)
    return d


def schema(m: Mesh, files: Path, *args: str) -> tuple[int, list[dict[str, Any]]]:
    out = io.StringIO()
    rc = main(["schema", *args, "--outputs", str(files / "outputs.json"), "--json",
               *(f"--dsn={r}={m.pg[r].dsn}" for r in REGIONS)], Runtime(out=out))
    return rc, [json.loads(x) for x in out.getvalue().splitlines()]


def apply(m: Mesh, files: Path, name: str, sql: str | None = None, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    if sql is not None:
        (files / name).write_text(sql)
    return schema(m, files, "apply", str(files / name), "--policy", str(files / "Pulumi.test.yaml"), *extra)


def columns(m: Mesh, node: str, table: str = "items") -> list[str]:
    return [r[0] for r in m.execute(node, "SELECT attname::text FROM pg_attribute WHERE attrelid = %s::regclass "
                                          "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (table,))]


def history(m: Mesh, node: str, name: str) -> list[tuple[Any, ...]]:
    return m.execute(node, "SELECT checksum, applied_at, completed_at IS NOT NULL FROM fraiseql_repl.migrations "
                           "WHERE name = %s", (name,))


def test_dry_run_changes_nothing_then_apply_records_history_and_a_rerun_is_a_no_op(sm: Mesh, files: Path) -> None:
    sql = "ALTER TABLE items ADD COLUMN note1 text NOT NULL DEFAULT 'none';\n"
    rc, recs = apply(sm, files, "0001_note.sql", sql, "--dry-run")
    assert rc == 0 and recs[-1]["detail"].startswith("dry run: 0001_note.sql rehearsed on every writer")
    assert {r["status"] for r in recs if r["step"] in ("additive", "install", "release")} == {"would"}
    assert all("note1" not in columns(sm, n) and history(sm, n, "0001_note.sql") == [] for n in REGIONS)

    rc, recs = apply(sm, files, "0001_note.sql")
    assert rc == 0, recs[-1]
    first = {n: history(sm, n, "0001_note.sql") for n in REGIONS}
    assert all(len(h) == 1 and h[0][2] for h in first.values())  # completed on every writer
    assert all("note1" in columns(sm, n) for n in REGIONS)

    rc, recs = apply(sm, files, "0001_note.sql")
    assert rc == 0 and recs[-1]["detail"] == "0001_note.sql is already applied on every writer: nothing to do"
    assert not any(r["step"] in ("rehearse", "additive", "install", "release") for r in recs)
    assert {n: history(sm, n, "0001_note.sql") for n in REGIONS} == first  # not run again


def test_a_changed_file_with_an_applied_name_is_refused(sm: Mesh, files: Path) -> None:
    rc, recs = apply(sm, files, "0001_note.sql", "ALTER TABLE items ADD COLUMN note1b text;\n")
    assert rc == 3
    assert "0001_note.sql was applied on us-east-1" in recs[-1]["detail"]
    assert "an applied migration must never change. Put the change in a new migration file" in recs[-1]["detail"]
    assert all("note1b" not in columns(sm, n) for n in REGIONS)


def test_unsafe_ddl_is_refused_before_any_writer_runs_anything(sm: Mesh, files: Path) -> None:
    rc, recs = apply(sm, files, "0002_unsafe.sql", "ALTER TABLE items ADD COLUMN fine int;\n"
                                                   "ALTER TABLE items DROP COLUMN v;\nTRUNCATE gadgets;\n")
    assert rc == 3
    refused = [r["detail"] for r in recs if r["status"] == "refused"]
    assert any("line 2, statement 2 (ALTER TABLE items DROP COLUMN v): drops replicated column public.items.v" in d
               for d in refused)
    assert all("fine" not in columns(sm, n) and history(sm, n, "0002_unsafe.sql") == [] for n in REGIONS)


def test_what_only_the_writers_can_see_is_refused_by_the_rehearsal_on_every_writer(sm: Mesh, files: Path) -> None:
    # LIKE copies no primary key: only PostgreSQL knows, when the writers install the new table.
    rc, recs = apply(sm, files, "0003_likes.sql", "CREATE TABLE likes (LIKE gadgets);\n")
    assert rc == 3
    assert "rehearse on us-east-1: cannot replicate new table public.likes" in recs[-1]["detail"]
    assert "has no primary key" in recs[-1]["detail"]
    assert all(sm.execute(n, "SELECT to_regclass('likes') IS NULL") == [(True,)] for n in REGIONS)


def test_the_guard_refuses_ddl_on_replicated_tables_without_schema_applys_setting(sm: Mesh) -> None:
    def refused(sql: str, applying: bool = False) -> str:
        with sm.connect(A) as c, pytest.raises(psycopg.Error) as e:
            with c.transaction():
                if applying:
                    c.execute("SET LOCAL fraiseql_repl.schema_apply = on")
                c.execute(sql.encode())
        assert e.value.sqlstate == "FQ003", e.value
        return f"{e.value.diag.message_primary} | {e.value.diag.message_hint}"

    added = refused("ALTER TABLE items ADD COLUMN by_hand int")
    assert "column public.items.by_hand was added to a replicated table by hand" in added
    assert "python -m ops schema apply" in added
    with sm.connect(A) as c:  # the setting only schema apply sets lets an addition through
        with c.transaction():
            c.execute("SET LOCAL fraiseql_repl.schema_apply = on")
            c.execute("ALTER TABLE items ADD COLUMN by_apply int")
            raise psycopg.Rollback()
        c.execute("ALTER TABLE scratch ADD COLUMN anything int")  # not replicated: no guard
    # ... and nothing unsafe, even with the setting.
    assert "column public.items.v is replicated and cannot be dropped" in refused("ALTER TABLE items DROP COLUMN v", True)
    assert "cannot be dropped or renamed" in refused("ALTER TABLE items RENAME COLUMN v TO w", True)
    assert "the type of replicated column public.items.v cannot change" in refused(
        "ALTER TABLE items ALTER COLUMN v TYPE varchar(5)", True)
    assert "the primary key of replicated table public.items cannot change" in refused(
        "ALTER TABLE items DROP CONSTRAINT items_pkey", True)
    assert "replicated table public.tags cannot be dropped" in refused("DROP TABLE tags", True)
    assert "cannot be renamed or moved" in refused("ALTER TABLE items RENAME TO things", True)
    assert "replication trigger fraiseql_repl_emit on public.items" in refused(
        "ALTER TABLE items DISABLE TRIGGER fraiseql_repl_emit", True)
    assert "replication trigger fraiseql_repl_local on public.items" in refused("DROP TRIGGER fraiseql_repl_local ON items")
    assert "v" in columns(sm, A) and "by_apply" not in columns(sm, A)


class _Load(threading.Thread):
    """Every writer inserts and updates items as fast as it can; counts what was acknowledged."""

    def __init__(self, m: Mesh, base: int, column: str | None = None):
        super().__init__(daemon=True)
        self.m, self.base, self.column = m, base, column
        self.stop = threading.Event()
        self.acked: list[int] = []
        self.errors: list[str] = []

    def run(self) -> None:
        conns = {n: self.m.connect(n) for n in REGIONS}
        i = 0
        try:
            while not self.stop.is_set():
                for k, (n, c) in enumerate(conns.items()):
                    i += 1
                    key = self.base + i * 3 + k
                    try:
                        c.execute("INSERT INTO items (id, v) VALUES (%s, %s)", (key, n))
                        c.execute("UPDATE items SET v = v || '+' WHERE id = %s", (key,))
                        self.acked.append(key)
                    except psycopg.Error as e:
                        self.errors.append(f"{n}: {e.sqlstate} {e}")
                time.sleep(0.002)
        finally:
            for c in conns.values():
                c.close()


class _Parked(threading.Thread):
    def __init__(self, m: Mesh):
        super().__init__(daemon=True)
        self.m = m
        self.stop = threading.Event()
        self.max = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.max = max([self.max] + [int(self.m.execute(n, "SELECT count(*) FROM fraiseql_repl.parked")[0][0])
                                         for n in REGIONS])
            time.sleep(0.05)


def _under_load(m: Mesh, base: int, action: Any) -> tuple[_Load, _Parked, Any]:
    load, parked = _Load(m, base), _Parked(m)
    load.start()
    parked.start()
    time.sleep(0.5)
    try:
        result = action()
        time.sleep(0.5)
    finally:
        load.stop.set()
        load.join(10)
        parked.stop.set()
        parked.join(10)
    return load, parked, result


def test_every_writer_has_and_merges_a_new_column_before_any_writer_sends_it(sm: Mesh, files: Path) -> None:
    sql = "ALTER TABLE items ADD COLUMN note3 text NOT NULL DEFAULT 'none';\n"
    load, parked, (rc, recs) = _under_load(sm, 3_000_000, lambda: apply(sm, files, "0004_note3.sql", sql))
    assert rc == 0, recs[-1]
    for n in REGIONS:  # the new column is used everywhere once the command is done
        sm.execute(n, "INSERT INTO items (id, v, note3) VALUES (%s, 'noted', %s)", (3_900_000 + REGIONS.index(n), f"by {n}"))
    sm.wait_converged(["items"], timeout=30)
    assert load.errors == [] and len(load.acked) > 100
    assert parked.max == 0  # no writer ever received a column it could not merge yet
    added = max(sm.execute(n, "SELECT applied_at FROM fraiseql_repl.migrations WHERE name = '0004_note3.sql'")[0][0]
                for n in REGIONS)
    installed = max(sm.execute(n, "SELECT installed_at FROM fraiseql_repl.table_meta WHERE table_name = 'public.items'")[0][0]
                    for n in REGIONS)
    assert added < installed
    for n in REGIONS:
        first_sent = sm.execute(n, "SELECT min(origin_at) FROM fraiseql_repl.changes WHERE origin = %s "
                                   "AND tbl = 'public.items' AND row_image ? 'note3'", (n,))[0][0]
        assert first_sent is not None and first_sent > installed, n
        assert sm.execute(n, "SELECT note3 FROM items WHERE id BETWEEN 3900000 AND 3900002 ORDER BY id") == [
            (f"by {r}",) for r in REGIONS]
    # Rows written while the column was held kept its default everywhere (not NULL: an image that
    # lacks a column leaves the merging writer's value alone).
    assert all(sm.execute(n, "SELECT count(*) FROM items WHERE id = ANY (%s) AND note3 = 'none'", (load.acked,))[0][0]
               == len(load.acked) for n in REGIONS)


def test_the_same_change_made_writer_by_writer_by_hand_parks_changes(sm: Mesh) -> None:
    """The control for the test above: it would see a wrong order."""

    def by_hand() -> None:
        for n in REGIONS:
            with sm.connect(n) as c, c.transaction():
                c.execute("SET LOCAL fraiseql_repl.schema_apply = on")
                c.execute("ALTER TABLE items ADD COLUMN note4 text NOT NULL DEFAULT 'none'")
            time.sleep(0.3)
        for n in REGIONS:
            with sm.connect(n) as c, c.transaction():
                c.execute("SET LOCAL fraiseql_repl.schema_apply = on")
                c.execute("SELECT fraiseql_repl.install_table('items', 'lww'); SELECT fraiseql_repl.install_dispatcher()")

    _, parked, _ = _under_load(sm, 4_000_000, by_hand)
    assert parked.max > 0
    for n in REGIONS:
        sm.execute(n, "SELECT fraiseql_repl.retry_parked()")
    assert sum(int(sm.execute(n, "SELECT count(*) FROM fraiseql_repl.parked")[0][0]) for n in REGIONS) == 0
    sm.wait_converged(["items"], timeout=30)


def test_a_writer_that_missed_a_migration_is_detected_and_caught_up(sm: Mesh, files: Path) -> None:
    name = "0005_color.sql"
    sql = "ALTER TABLE gadgets ADD COLUMN color text DEFAULT 'grey';\n"
    (files / name).write_text(sql)
    policy = ConflictPolicy(tables=POLICY.tables, replicated=(*POLICY.replicated, "gadgets"))
    # gadgets joins replication (the stack config names it); then the migration reaches only two writers.
    for n in REGIONS:
        sm.execute(n, "SELECT fraiseql_repl.install_table('gadgets', 'lww'); SELECT fraiseql_repl.install_dispatcher()")
    (files / "Pulumi.gadgets.yaml").write_text(POLICY_CONFIG.replace("replicated: [items]", "replicated: [items, gadgets]"))
    m = parse_migration(name, sql)
    conns = {n: sm.connect(n) for n in (A, B)}
    try:
        states = {n: read_writer(c, n) for n, c in conns.items()}
        Applier(conns, m, analyse(m, catalog_of(states), policy), policy, lambda *a, **k: None, states=states).run()
    finally:
        for c in conns.values():
            c.close()
    sm.execute(A, "INSERT INTO gadgets (id, name, color) VALUES (1, 'lamp', 'red')")
    sm.wait_for(C, "SELECT count(*) FROM fraiseql_repl.parked WHERE sqlstate = 'FQ001'", 1, timeout=20)

    rc, recs = schema(sm, files, "status")
    assert rc == 1
    assert "eu-west-1 missed migration 0005_color.sql (applied on us-east-1, us-west-2)" in recs[-1]["detail"]
    rc, recs = apply(sm, files, "0006_size.sql", "ALTER TABLE gadgets ADD COLUMN size int;\n", "--policy",
                     str(files / "Pulumi.gadgets.yaml"))
    assert rc == 3 and "eu-west-1 missed migration 0005_color.sql" in recs[-1]["detail"]
    assert "apply it first" in recs[-1]["detail"]

    rc, recs = schema(sm, files, "apply", str(files / name), "--policy", str(files / "Pulumi.gadgets.yaml"))
    assert rc == 0, recs[-1]
    additive = {r["data"]["writer"]: r["status"] for r in recs if r["step"] == "additive"}
    assert additive == {A: "skip", B: "skip", C: "ok"}  # the statements ran only where they were missing
    assert next(r for r in recs if r["step"] == "retry" and r["data"]["writer"] == C)["data"]["merged"] >= 1
    assert sm.execute(C, "SELECT name, color FROM gadgets WHERE id = 1") == [("lamp", "red")]
    rc, recs = schema(sm, files, "status")
    assert rc == 0 and recs[-1]["detail"].startswith("every writer has the same")


def test_policy_and_migration_errors_are_usage_errors_before_any_connection(files: Path) -> None:
    (files / "bad.yaml").write_text("config:\n  fraiseql:replication:\n    tables: [{table: x, strategy: magic}]\n")
    (files / "0099_ok.sql").write_text("SELECT 1;")
    out = io.StringIO()
    rc = main(["schema", "apply", str(files / "0099_ok.sql"), "--outputs", str(files / "outputs.json"), "--policy",
               str(files / "bad.yaml"), "--dsn", "us-east-1=host=127.0.0.1 port=1", "--dsn", "us-west-2=host=127.0.0.1 port=1",
               "--dsn", "eu-west-1=host=127.0.0.1 port=1"], Runtime(out=out))
    assert rc == 2 and "the replication block is invalid: fraiseql:replication.tables[0].strategy" in out.getvalue()
    (files / "0098_bad.sql").write_text("ALTER TABLE items ADD COLUMN;")
    out = io.StringIO()
    rc = main(["schema", "apply", str(files / "0098_bad.sql"), "--outputs", str(files / "outputs.json"), "--policy",
               str(files / "Pulumi.test.yaml"), "--dsn", "us-east-1=host=x"], Runtime(out=out))
    assert rc == 2 and "0098_bad.sql: syntax error at or near \";\" at line 1" in out.getvalue()
    out = io.StringIO()
    rc = main(["schema", "status", "--outputs", str(files / "outputs.json"), "--dsn", "us-east-1=host=x password=hunter2"],
              Runtime(out=out))
    assert rc == 2 and "must not carry a password" in out.getvalue() and "hunter2" not in out.getvalue()


def test_new_objects_follow_the_policy(sm: Mesh, files: Path) -> None:
    rc, recs = apply(sm, files, "0007_likes.sql", "CREATE TABLE likes (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0);\n")
    assert rc == 0, recs[-1]
    assert all(sm.execute(n, "SELECT strategy, counter_cols FROM fraiseql_repl.table_meta WHERE table_name = 'public.likes'")
               == [("counter", ["n"])] for n in REGIONS)
    sm.execute(A, "INSERT INTO likes (id) VALUES (1)")
    sm.wait_for(C, "SELECT count(*) FROM likes", 1, timeout=20)
    with sm.paused():  # concurrent increments in every region
        for n in REGIONS:
            sm.execute(n, "UPDATE likes SET n = n + 2 WHERE id = 1")
    sm.wait_converged(["likes"], timeout=30)
    assert all(sm.execute(n, "SELECT n FROM likes WHERE id = 1") == [(6,)] for n in REGIONS)



def test_a_unique_rule_goes_through_schema_apply_and_its_clashes_settle_alike(sm: Mesh, files: Path) -> None:
    """By hand, a unique key the merge does not know (or one it settles, dropped) is refused; through
    schema apply the merge is re-installed with it, and a clash made in two regions ends the same."""
    def refused(sql: str) -> str:
        with sm.connect(A) as c, pytest.raises(psycopg.Error) as e:
            c.execute(sql.encode())
        assert e.value.sqlstate == "FQ003", e.value
        return f"{e.value.diag.message_primary} | {e.value.diag.message_hint}"

    assert "made outside schema apply" in refused("CREATE UNIQUE INDEX items_id_v ON items (id, v)")
    rc, recs = apply(sm, files, "0008_sku.sql", "ALTER TABLE items ADD COLUMN sku text;\n"
                                                "ALTER TABLE items ADD CONSTRAINT items_sku_key UNIQUE (sku);\n"
                                                "CREATE UNIQUE INDEX items_sku_id ON items (sku, id) NULLS NOT DISTINCT;\n")
    assert rc == 0, recs[-1]
    known = {n: sm.execute(n, "SELECT uniques FROM fraiseql_repl.table_shape WHERE table_name = 'public.items'")[0][0]
             for n in REGIONS}
    assert all({(tuple(u["cols"]), u["nnd"]) for u in k} == {(("sku",), False), (("sku", "id"), True)}
               for k in known.values()), known
    with sm.paused():  # each region takes the same sku where it is still free
        sm.execute(A, "INSERT INTO items (id, v, sku) VALUES (4000001, 'a', 'SKU-1')")
        sm.execute(B, "INSERT INTO items (id, v, sku) VALUES (4000002, 'b', 'SKU-1')")
    sm.wait_converged(["items"], timeout=30)
    kept = {n: sm.execute(n, "SELECT id FROM items WHERE sku = 'SKU-1'") for n in REGIONS}
    assert len({str(k) for k in kept.values()}) == 1 and len(kept[A]) == 1, kept
    assert all(sm.execute(n, "SELECT sqlstate FROM fraiseql_repl.parked WHERE tbl = 'public.items' "
                             "AND pk->>'id' IN ('4000001', '4000002')") == [("FQ004",)] for n in REGIONS)
    gone = refused("ALTER TABLE items DROP CONSTRAINT items_sku_key")
    assert "unique key (sku) of replicated table public.items was dropped outside schema apply" in gone
    assert "python -m ops schema apply" in gone
    assert "unique key (sku, id) NULLS NOT DISTINCT" in refused("DROP INDEX items_sku_id")


def test_a_replicated_table_cannot_join_an_inheritance_tree(sm: Mesh) -> None:
    with sm.connect(A) as c:
        c.execute("CREATE TABLE items_kid (LIKE items)")
        try:
            with pytest.raises(psycopg.Error) as e:
                c.execute("ALTER TABLE items_kid INHERIT items")
            assert e.value.sqlstate == "FQ003" and "public.items would be a partition, parent or child" in str(e.value)
        finally:
            c.execute("DROP TABLE items_kid")
