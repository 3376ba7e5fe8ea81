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
   fraiseql_repl_emit`` swaps the change capture for anything; neither is refused. Nor are a
   trigger or rule enabled ALWAYS that vetoes merged deletes, a CHECK or SET NOT NULL that a peer's
   row breaks (parked there for good): shape_drift has no kind for them outside counter columns.
3. Availability: a merged delete that removes nothing waits, with no lock timeout, for any open
   transaction that inserted a key of the same bucket, and the whole link waits behind it.

Held (tried, no break; with an int key): a key change (UPDATE ... SET id), a savepoint rolled back
and the insert re-done, COPY, INSERT ... ON CONFLICT DO UPDATE, MERGE, a REPEATABLE READ insert
(the delete waits, then removes the row), and a REPEATABLE READ snapshot taken before the delete
merged (the insert is refused, 40001). A foreign key to a table that is not replicated is accepted
but does not stop the merge (its triggers do not fire in replica mode).

Status: 1 and 3 are fixed (key_bucket hashes the key with jsonb's own hash, consistent with jsonb
equality; a merged delete waits at most 200 ms for the bucket, then is retried and parked, and the
agent merges it again later); their probes fail on the code before. 2 is fixed too: the guard also
fires on CREATE TABLE, CREATE (OR REPLACE) TRIGGER, ALTER TRIGGER and CREATE RULE; it compares each
replication trigger with the definition its install recorded; and shape_drift has two more kinds,
'constraint' (a CHECK or NOT NULL made since the install on columns peers already send) and 'merge
veto' (a BEFORE trigger or a rule enabled ALWAYS or REPLICA). Those probes failed before it.

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
    "CREATE TABLE red9_num2 (id numeric PRIMARY KEY, v text)",
    "CREATE TABLE red9_veto (id int PRIMARY KEY, v text)",
    "CREATE TABLE red9_chk (id int PRIMARY KEY, v text)",
    "CREATE TABLE red9_nn (id int PRIMARY KEY, v text)",
    "CREATE TABLE red9_fk (id int PRIMARY KEY, v text)",
    "CREATE TABLE red9_fk_parent (id int PRIMARY KEY)",  # not replicated
)
POLICY = ConflictPolicy(tables=(TablePolicy("counters", "counter", ("hits",)),),
                        replicated=("items", "red9_num", "red9_int", "red9_trg", "red9_num2", "red9_veto",
                                                    "red9_chk", "red9_nn", "red9_fk"))


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


@pytest.mark.parametrize(("first", "east_spelling"), [(1, "0"), (20, "00")], ids=["k.0-vs-k.00", "control-k.00-both"])
def test_numeric_key_end_to_end_every_writer_ends_equal(m: Mesh, first: int, east_spelling: str) -> None:
    # The same race with real apply workers, no change merged by hand. us-east-1 stops hearing
    # us-west-2. us-west-2 inserts key k written k.00 (first incarnation: born -infinity); eu-west-1
    # receives it and deletes it. Meanwhile us-east-1's application inserts k written k.0 (also a
    # first incarnation here: born -infinity) and commits after eu-west-1's delete has merged there.
    # Then every link heals. With one bucket the delete's merge waits for the insert's commit and
    # removes the row (and the other writers drop its image at their tombstones): all equal.
    # a key whose two spellings fell in different buckets (every key, once the buckets follow jsonb
    # equality: then the first one)
    k = next((i for i in range(first, first + 200) if m.execute(
        EAST, "SELECT fraiseql_repl.key_bucket('public.red9_num2', jsonb_build_object('id', %s::numeric)) <> "
              "fraiseql_repl.key_bucket('public.red9_num2', jsonb_build_object('id', %s::numeric))",
        (f"{i}.0", f"{i}.00"))[0][0]), first)
    east_key = f"{k}.{east_spelling}"
    count = f"SELECT count(*) FROM red9_num2 WHERE id = {k}"
    try:
        m.links[(EAST, WEST)].partition()
        m.execute(WEST, f"INSERT INTO red9_num2 (id, v) VALUES ({k}.00, 'west')")
        until(lambda: m.execute(EU, count)[0][0] == 1, "west's row at eu-west-1")
        with m.connect(EAST) as local:
            local.execute("BEGIN")
            local.execute(f"INSERT INTO red9_num2 (id, v) VALUES ({east_key}, 'east')")
            m.execute(EU, f"DELETE FROM red9_num2 WHERE id = {k}")
            until(lambda: bool(m.execute(EAST, "SELECT count(*) FROM fraiseql_repl.tombstones WHERE table_name = "
                                               "'public.red9_num2' AND pk = jsonb_build_object('id', %s::numeric)", (k,))[0][0])
                  or bool(m.execute(EAST, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                                          "'logical replication apply worker' AND wait_event_type = 'Lock'")[0][0]),
                  "eu-west-1's delete merged at us-east-1, or waits there")
            local.execute("COMMIT")
    finally:
        m.links[(EAST, WEST)].heal()
    rows: dict[str, list[Any]] = {}

    def settled() -> bool:
        rows.update({r: m.execute(r, f"SELECT id::text, v, _repl_born::text FROM red9_num2 WHERE id = {k}") for r in REGIONS})
        return all(rows[r] == rows[EAST] for r in REGIONS)

    try:
        until(settled, "every writer equal", timeout=20, every=0.5)
    except AssertionError:
        pass  # the assertion below says how they differ
    assert all(rows[r] == rows[EAST] for r in REGIONS), f"key {k}: rows per writer after the heal: {rows}"


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


@pytest.mark.parametrize("how", ["trigger", "rule"])
def test_a_veto_that_fires_on_merges_is_refused(m: Mesh, how: str) -> None:
    # An application trigger (or rule) that fires on merges too (ENABLE ALWAYS) is refused on a
    # counter table only (counter_column_problems). On any other replicated table, CREATE TRIGGER /
    # CREATE RULE plus ALTER TABLE ... ENABLE ALWAYS pass the guard (shape_drift has no kind for
    # them), and one that vetoes deletes keeps a row on this writer that every other writer deleted.
    k = 100 if how == "trigger" else 200
    m.execute(WEST, f"INSERT INTO red9_veto (id, v) VALUES ({k}, 'west')")
    until(lambda: all(m.execute(r, f"SELECT count(*) FROM red9_veto WHERE id = {k}")[0][0] == 1 for r in REGIONS),
          "the row everywhere")
    try:
        with m.connect(EAST) as c:
            if how == "trigger":
                c.execute("CREATE FUNCTION public.red9_veto_fn() RETURNS trigger LANGUAGE plpgsql AS "
                          "'BEGIN IF OLD.id = 100 THEN RETURN NULL; END IF; RETURN OLD; END'")
                c.execute("CREATE TRIGGER red9_veto BEFORE DELETE ON red9_veto FOR EACH ROW EXECUTE FUNCTION public.red9_veto_fn()")
                c.execute("ALTER TABLE red9_veto ENABLE ALWAYS TRIGGER red9_veto")
            else:
                c.execute("CREATE RULE red9_keep AS ON DELETE TO red9_veto WHERE OLD.id = 200 DO INSTEAD NOTHING")
                c.execute("ALTER TABLE red9_veto ENABLE ALWAYS RULE red9_keep")
        refused = None
    except psycopg.Error as exc:
        refused = exc.sqlstate
    drift = m.execute(EAST, "SELECT kind, col FROM fraiseql_repl.shape_drift() WHERE table_name = 'public.red9_veto'")
    seen: dict[str, int] = {}
    if refused is None:
        m.execute(WEST, f"DELETE FROM red9_veto WHERE id = {k}")
        until(lambda: m.execute(EU, f"SELECT count(*) FROM red9_veto WHERE id = {k}")[0][0] == 0, "the delete at eu-west-1")
        until(lambda: bool(m.execute(EAST, "SELECT count(*) FROM fraiseql_repl.tombstones WHERE table_name = "
                                           "'public.red9_veto' AND pk = jsonb_build_object('id', %s)", (k,))[0][0]),
              "the delete merged at us-east-1")
        seen = {r: m.execute(r, f"SELECT count(*) FROM red9_veto WHERE id = {k}")[0][0] for r in REGIONS}
    assert refused == "FQ003" or (refused is None and len(set(seen.values())) == 1), \
        f"{how} firing on merges not refused; shape_drift: {drift}; rows of deleted key {k} per writer: {seen}"


def test_an_open_insert_of_an_unrelated_key_does_not_stall_a_link(m: Mesh) -> None:
    # Availability, not safety ("a change that cannot be merged is parked, so one bad change never
    # stalls the link", objects.sql). Both us-east-1 and us-west-2 delete key k1 (us-west-2 before
    # it hears us-east-1's delete). At us-east-1, us-west-2's delete removes nothing, so it takes
    # k1's bucket exclusive, with no lock timeout: it waits for any open transaction that inserted
    # any key of the table in that bucket (an idle-in-transaction session, a bulk load: some 1,500
    # new keys hold all 256 buckets). Everything us-west-2 writes after it waits too.
    def bucket(k: int) -> int:
        return int(m.execute(EAST, "SELECT fraiseql_repl.key_bucket('public.items', jsonb_build_object('id', %s))", (k,))[0][0])

    k1 = 7001
    k2 = next(k for k in range(7002, 20000) if bucket(k) == bucket(k1))
    marker = 7000
    m.execute(WEST, f"INSERT INTO items (id, v) VALUES ({k1}, 'west')")
    until(lambda: all(m.execute(r, f"SELECT count(*) FROM items WHERE id = {k1}")[0][0] == 1 for r in REGIONS), "k1 everywhere")
    arrived = False
    with m.connect(EAST) as app:
        try:
            m.links[(WEST, EAST)].partition()
            app.execute("BEGIN")
            app.execute(f"INSERT INTO items (id, v) VALUES ({k2}, 'unrelated, same bucket')")
            m.execute(EAST, f"DELETE FROM items WHERE id = {k1}")
            m.execute(WEST, f"DELETE FROM items WHERE id = {k1}")
            m.execute(WEST, f"INSERT INTO items (id, v) VALUES ({marker}, 'written after the delete')")
            try:
                until(lambda: m.execute(EAST, f"SELECT count(*) FROM items WHERE id = {marker}")[0][0] == 1,
                      "us-west-2's later write at us-east-1", timeout=15, every=0.2)
                arrived = True
            except AssertionError:
                pass
            waiting = m.execute(EAST, "SELECT backend_type, wait_event_type, wait_event, state FROM pg_stat_activity "
                                      "WHERE backend_type = 'logical replication apply worker' AND wait_event_type = 'Lock'")
        finally:
            app.execute("ROLLBACK")
            m.links[(WEST, EAST)].heal()
    assert arrived, (f"k1 {k1} and k2 {k2} share bucket {bucket(k1)}; us-west-2's write after its delete of k1 did not "
                     f"reach us-east-1 in 15 s while an insert of k2 stayed open there; apply workers waiting: {waiting}")


@pytest.mark.parametrize(("table", "ddl", "row"), [
    ("red9_chk", "ALTER TABLE red9_chk ADD CONSTRAINT red9_chk_v CHECK (v IS DISTINCT FROM 'forbidden')", "(1, 'forbidden')"),
    ("red9_nn", "ALTER TABLE red9_nn ALTER COLUMN v SET NOT NULL", "(1, NULL)"),
    ("red9_fk", "ALTER TABLE red9_fk ADD CONSTRAINT red9_fk_p FOREIGN KEY (id) REFERENCES red9_fk_parent (id)", "(1, 'x')"),
], ids=["check", "not-null", "fk-to-unreplicated"])
def test_a_constraint_added_by_hand_that_peers_rows_can_break_is_refused(m: Mesh, table: str, ddl: str, row: str) -> None:
    # A constraint added by hand on one writer only (ALTER TABLE: the guard runs, shape_drift has no
    # kind for CHECK, NOT NULL or a foreign key to a table that is not replicated). A peer's row that
    # breaks it cannot be merged there: parked, retried, parked again, for good; that writer never
    # has the row the others have.
    try:
        m.execute(EAST, ddl)
        refused = None
    except psycopg.Error as exc:
        refused = exc.sqlstate
    seen: dict[str, int] = {}
    parked_here: list[Any] = []
    if refused is None:
        m.execute(WEST, f"INSERT INTO {table} (id, v) VALUES {row}")
        until(lambda: m.execute(EU, f"SELECT count(*) FROM {table}")[0][0] == 1, "the row at eu-west-1")
        until(lambda: bool(m.execute(EAST, f"SELECT count(*) FROM {table}")[0][0] or m.execute(
            EAST, "SELECT count(*) FROM fraiseql_repl.parked WHERE tbl = %s", (f"public.{table}",))[0][0]),
              "the row merged or parked at us-east-1")
        for _ in range(3):
            m.execute(EAST, "SELECT * FROM fraiseql_repl.retry_parked()")
        seen = {r: m.execute(r, f"SELECT count(*) FROM {table}")[0][0] for r in REGIONS}
        parked_here = m.execute(EAST, "SELECT sqlstate, left(error, 120) FROM fraiseql_repl.parked WHERE tbl = %s",
                                (f"public.{table}",))
    assert refused == "FQ003" or len(set(seen.values())) == 1, \
        f"{ddl!r} accepted; rows per writer: {seen}; parked at us-east-1: {parked_here}"
