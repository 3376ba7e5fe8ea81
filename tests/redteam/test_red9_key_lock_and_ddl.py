"""Red team (red9), on a live 3-writer PostgreSQL 18 mesh, against two claims:

1. "A deleted row never comes back; every writer ends equal": a merged delete and an uncommitted
   insert of the same new key meet at the key's lock (fraiseql_repl.key_bucket: a hash of the key's
   jsonb *text*). Two spellings of one key value that the primary key and the tombstones hold equal
   but whose jsonb text differs (numeric 1.0 and 1.00) hash to different buckets, so the delete
   does not wait for the insert and the race of test_red_unique_stale_version section 4 is open
   again for such keys.
2. "By-hand DDL that would make the merge unable to settle is refused": the DDL guard fires on
   ALTER TABLE, ALTER SCHEMA and CREATE INDEX only. ``CREATE TABLE ... INHERITS (items)`` makes a
   replicated table a parent (shape_drift's own 'inheritance' kind) and ``CREATE OR REPLACE TRIGGER
   fraiseql_repl_emit`` swaps the change capture for anything; neither is refused.

Run: .venv/bin/python -m pytest -q tests/redteam/test_red9_key_lock_and_ddl.py
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA
from replication.model import ConflictPolicy, TablePolicy

EAST, WEST, EU = REGIONS
SCHEMA = APP_SCHEMA + (
    "CREATE TABLE red9_num (id numeric PRIMARY KEY, v text)",
    "CREATE TABLE red9_int (id int PRIMARY KEY, v text)",
    "CREATE TABLE red9_trg (id int PRIMARY KEY, v text)",
)
POLICY = ConflictPolicy(tables=(TablePolicy("counters", "counter", ("hits",)),),
                        replicated=("items", "red9_num", "red9_int", "red9_trg"))


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with mesh(POLICY, SCHEMA, delays=False) as running:
        yield running


def until(cond: Callable[[], bool], what: str, timeout: float = 60, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(every)


_ids = itertools.count(1)


def _race(m: Mesh, table: str, local_key: str, merged_key: str) -> tuple[Any, list[Any], list[Any]]:
    """us-east-1's application inserts ``local_key`` and holds the transaction open; meanwhile a
    peer's delete of the same incarnation (born like the local row, as in section 4 of
    test_red_unique_stale_version) is merged on another connection with the key spelled
    ``merged_key``. Returns (the delete's merge finished before the insert committed?, the
    tombstones, the rows left)."""
    with m.connect(EAST) as local, m.connect(EAST) as dele:
        pid = dele.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        local.execute("BEGIN")
        (born,) = local.execute(f"INSERT INTO {table} (id, v) VALUES ({local_key}, 'east') "
                                "RETURNING _repl_born::text").fetchone()  # type: ignore[misc]

        def delete() -> None:
            with dele.transaction():
                dele.execute("SET LOCAL session_replication_role = replica")
                dele.execute("INSERT INTO fraiseql_repl.changes (origin, id, tbl, op, pk, ts, node, born, origin_at) "
                             f"VALUES (%s, %s, %s, 'd', jsonb_build_object('id', {merged_key}), clock_timestamp(), %s, %s, "
                             "clock_timestamp())",
                             (EU, 3 * 10**9 + next(_ids), f"public.{table}", EU, born))

        th = threading.Thread(target=delete)
        th.start()
        until(lambda: not th.is_alive() or bool(m.execute(
            EAST, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (pid,))[0][0]),
            "the delete's merge finished or waits")
        finished_first = not th.is_alive()
        local.execute("COMMIT")
        th.join(60)
    tombs = m.execute(EAST, "SELECT pk::text, born::text FROM fraiseql_repl.tombstones WHERE table_name = %s",
                      (f"public.{table}",))
    rows = m.execute(EAST, f"SELECT id::text, _repl_born::text FROM {table}")
    return finished_first, tombs, rows


def test_control_same_spelling_the_delete_waits_and_removes_the_row(m: Mesh) -> None:
    # Control: the same race with one spelling of the key (int key): the key's lock makes the
    # delete wait for the insert's commit, and it removes the row.
    finished_first, tombs, rows = _race(m, "red9_int", "7", "7")
    assert tombs and not rows, f"delete finished first: {finished_first}; tombstones {tombs}; rows {rows}"


def test_a_delete_of_a_numeric_key_spelled_otherwise_removes_the_uncommitted_insert(m: Mesh) -> None:
    # The same race on a numeric primary key: the application inserts 1.0, the peer's delete names
    # the key as 1.00 (the same key to the primary key and to the tombstones: jsonb compares
    # numerics by value, and the insert's own tombstone check matches it). key_bucket hashes the
    # jsonb text ('{"id": 1.0}' vs '{"id": 1.00}'): different buckets, the delete does not wait,
    # removes nothing, commits its tombstone; the insert commits after it. us-east-1 keeps a row of
    # the incarnation the tombstone says was deleted; every other writer drops its image there.
    buckets = m.execute(EAST, "SELECT fraiseql_repl.key_bucket('public.red9_num', jsonb_build_object('id', 1.0)), "
                              "fraiseql_repl.key_bucket('public.red9_num', jsonb_build_object('id', 1.00)), "
                              "jsonb_build_object('id', 1.0) = jsonb_build_object('id', 1.00)")[0]
    finished_first, tombs, rows = _race(m, "red9_num", "1.0", "1.00")
    assert tombs, "the delete left no tombstone"
    assert not rows, (f"buckets {buckets[:2]} (jsonb equal: {buckets[2]}); the delete finished before the insert "
                      f"committed: {finished_first}; tombstones {tombs}; rows still here {rows}")


# -- claim 2: by-hand DDL --------------------------------------------------------------------------

def test_create_table_inherits_a_replicated_table_is_refused(m: Mesh) -> None:
    # shape_drift reports a replicated table with an inheritance child ('inheritance': "writes
    # through the other table skip its change capture"), and ALTER TABLE ... INHERIT is refused.
    # CREATE TABLE ... INHERITS (items) is not a tag the guard fires on. Then a row written through
    # the child is in us-east-1's items (SELECT * FROM items) and in no peer's, for good.
    try:
        with m.connect(EAST) as c:
            c.execute("CREATE TABLE red9_items_child () INHERITS (items)")
            c.execute("INSERT INTO red9_items_child (id, v) VALUES (9001, 'through the child')")
        refused = None
    except psycopg.Error as exc:
        refused = exc.sqlstate
    drift = m.execute(EAST, "SELECT kind, detail FROM fraiseql_repl.shape_drift() WHERE table_name = 'public.items'")
    time.sleep(2)
    seen = {r: m.execute(r, "SELECT count(*) FROM items WHERE id = 9001")[0][0] for r in REGIONS}
    assert refused == "FQ003", f"CREATE TABLE ... INHERITS (items) was not refused; shape_drift now: {drift}; " \
                               f"rows with id 9001 in items per writer: {seen}"


def test_create_or_replace_trigger_on_the_change_capture_is_refused(m: Mesh) -> None:
    # The 'trigger' drift ("this writer's changes would stop replicating") is refused for ALTER TABLE
    # ... DISABLE TRIGGER and DROP TRIGGER. CREATE OR REPLACE TRIGGER keeps the name and the enabled
    # flag (all shape_drift looks at) and swaps the function: not refused, not even reported, and
    # us-east-1's inserts stop replicating.
    try:
        with m.connect(EAST) as c:
            (tdef,) = c.execute("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'red9_trg'::regclass "
                                "AND tgname = 'fraiseql_repl_emit'").fetchone()  # type: ignore[misc]
            c.execute("CREATE FUNCTION public.red9_noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'")
            head = tdef.split(" EXECUTE FUNCTION ")[0].replace("CREATE TRIGGER", "CREATE OR REPLACE TRIGGER", 1)
            c.execute(head + " EXECUTE FUNCTION public.red9_noop()")
        refused = None
    except psycopg.Error as exc:
        refused = exc.sqlstate
    drift = m.execute(EAST, "SELECT kind, col FROM fraiseql_repl.shape_drift() WHERE table_name = 'public.red9_trg'")
    seen: dict[str, int] = {}
    if refused is None:
        m.execute(EAST, "INSERT INTO red9_trg (id, v) VALUES (1, 'east')")
        m.execute(WEST, "INSERT INTO red9_trg (id, v) VALUES (2, 'west')")
        until(lambda: m.execute(EAST, "SELECT count(*) FROM red9_trg WHERE id = 2")[0][0] == 1, "west's row at east")
        time.sleep(2)
        seen = {r: m.execute(r, "SELECT count(*) FROM red9_trg WHERE id = 1")[0][0] for r in REGIONS}
    assert refused == "FQ003", f"CREATE OR REPLACE TRIGGER fraiseql_repl_emit was not refused ({tdef}); " \
                               f"shape_drift: {drift}; east's row 1 per writer: {seen}"
