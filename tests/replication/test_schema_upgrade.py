"""A writer of the previous release, bootstrapped with this one, ends with the catalog of a new install.

The previous release is frozen in `fixtures/release_previous.sql` (its bootstrap SQL; how it was made:
`fixtures/freeze_release.py`). Each case runs in its own database of one PostgreSQL 18 server; the
catalog of `fraiseql_repl` (tables, columns in order with types, defaults and nullability, constraints,
indexes, sequences, views, functions' definitions, triggers, event triggers, publications, grants)
is dumped and compared.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drills.mesh import MESH_SETTINGS
from drills.pg import PgNode, cluster
from drills.sample import APP_SCHEMA, POLICY
from replication import sql
from replication.bootstrap import apply
from replication.model import Node
from tests.replication.fixtures.freeze_release import NODE

PREVIOUS = Path(__file__).parent / "fixtures" / "release_previous.sql"
ME = Node(**NODE)  # type: ignore[arg-type]

#: Everything the bootstrap makes, by kind, normalized (names instead of oids, no data).
CATALOG = {
    "relation": """
        SELECT c.relname, c.relkind, c.relpersistence, coalesce(c.relacl::text, ''),
               CASE c.relkind WHEN 'v' THEN pg_get_viewdef(c.oid) WHEN 'i' THEN pg_get_indexdef(c.oid) ELSE '' END
        FROM pg_class c WHERE c.relnamespace = 'fraiseql_repl'::regnamespace""",
    "sequence": """
        SELECT s.seqrelid::regclass::text, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmax,
               s.seqmin, s.seqcycle
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = 'fraiseql_repl'::regnamespace""",
    # Columns by position (row types of the change log are built positionally), of the schema's tables
    # and of the replicated ones (their version columns).
    "column": """
        SELECT a.attrelid::regclass::text, row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum), a.attname,
               format_type(a.atttypid, a.atttypmod), a.attnotnull, coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
               a.attidentity, a.attgenerated, coalesce(a.attcollation::regcollation::text, '')
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'u', 'v')
          AND (c.relnamespace = 'fraiseql_repl'::regnamespace
               OR EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'fraiseql_repl_local'))""",
    "constraint": """
        SELECT x.conrelid::regclass::text, x.conname, pg_get_constraintdef(x.oid), x.condeferrable, x.condeferred
        FROM pg_constraint x JOIN pg_class c ON c.oid = x.conrelid WHERE c.relnamespace = 'fraiseql_repl'::regnamespace""",
    "function": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid),
               coalesce(p.proacl::text, '')
        FROM pg_proc p WHERE p.pronamespace = 'fraiseql_repl'::regnamespace""",
    "trigger": """
        SELECT t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
        FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
        WHERE NOT t.tgisinternal AND p.pronamespace = 'fraiseql_repl'::regnamespace""",
    "event trigger": """
        SELECT e.evtname, e.evtevent, e.evtfoid::regproc::text, e.evtenabled, coalesce(e.evttags::text, '')
        FROM pg_event_trigger e""",
    "publication": """
        SELECT p.pubname, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate,
               coalesce((SELECT string_agg(r.prrelid::regclass::text, ', ' ORDER BY r.prrelid::regclass::text)
                         FROM pg_publication_rel r WHERE r.prpubid = p.oid), '')
        FROM pg_publication p""",
    "default privilege": """
        SELECT d.defaclobjtype, d.defaclacl::text FROM pg_default_acl d
        WHERE d.defaclnamespace = 'fraiseql_repl'::regnamespace""",
}


def catalog(conn: psycopg.Connection[Any]) -> set[tuple[Any, ...]]:
    return {(kind, *row) for kind, q in CATALOG.items() for row in conn.execute(q.encode()).fetchall()}


def differences(a: set[tuple[Any, ...]], b: set[tuple[Any, ...]]) -> list[str]:
    """What one catalog has and the other lacks, briefly (a function's whole body is long)."""
    return sorted([f"fresh only: {r[:3]}" for r in a - b] + [f"upgraded only: {r[:3]}" for r in b - a])


def bootstrap() -> list[str]:
    return sql.render_local_objects(ME, [ME], POLICY)


@pytest.fixture(scope="module")
def server() -> Iterator[PgNode]:
    with cluster(["schema"], settings=MESH_SETTINGS) as pg:
        yield pg["schema"]


_names = itertools.count()


@pytest.fixture
def database(server: PgNode) -> Callable[..., psycopg.Connection[Any]]:
    """A new database with the application's tables (and, with ``previous``, the previous release)."""
    opened: list[psycopg.Connection[Any]] = []

    def make(*, previous: bool = False) -> psycopg.Connection[Any]:
        name = f"db{next(_names)}"
        server.execute(f"CREATE DATABASE {name}")
        conn = server.connect(dbname=name)
        opened.append(conn)
        apply(conn, APP_SCHEMA)
        if previous:
            apply(conn, sql._split(PREVIOUS.read_text(encoding="utf-8")))
            assert conn.execute("SELECT to_regclass('fraiseql_repl.schema_upgrades')").fetchone() == (None,)
        return conn

    yield make
    for c in opened:
        c.close()


def test_the_previous_release_upgraded_has_the_catalog_of_a_new_install(database: Callable[..., Any]) -> None:
    fresh, upgraded = database(), database(previous=True)
    apply(fresh, bootstrap())
    apply(upgraded, bootstrap())
    assert differences(catalog(fresh), catalog(upgraded)) == []
    recorded = "SELECT version, name, how FROM fraiseql_repl.schema_upgrades ORDER BY 1"
    assert fresh.execute(recorded).fetchall() == [(v, n, "installed") for v, n in sql.upgrades()]
    assert upgraded.execute(recorded).fetchall() == [(v, n, "upgraded") for v, n in sql.upgrades()]


def test_a_rerun_runs_no_upgrade_again(database: Callable[..., Any]) -> None:
    upgraded = database(previous=True)
    apply(upgraded, bootstrap())
    before = upgraded.execute("SELECT * FROM fraiseql_repl.schema_upgrades ORDER BY 1").fetchall()
    shape = catalog(upgraded)
    apply(upgraded, bootstrap())
    assert upgraded.execute("SELECT * FROM fraiseql_repl.schema_upgrades ORDER BY 1").fetchall() == before
    assert catalog(upgraded) == shape


@pytest.mark.parametrize("missing", [v for v, _ in sql.upgrades()])
def test_an_upgrade_left_out_shows_in_the_catalog(database: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
                                                  missing: int) -> None:
    # What the comparison above is worth: without any one upgrade, the upgraded writer differs (or
    # its install fails, where the release's functions use what the upgrade makes).
    fresh, upgraded = database(), database(previous=True)
    apply(fresh, bootstrap())
    kept = [u for u in sql.upgrades() if u[0] != missing]
    monkeypatch.setattr(sql, "upgrades", lambda: kept)
    try:
        apply(upgraded, bootstrap())
    except psycopg.Error:
        return
    assert differences(catalog(fresh), catalog(upgraded)) != []


def test_two_bootstraps_at_once_run_an_upgrade_once(database: Callable[..., Any], server: PgNode) -> None:
    upgraded = database(previous=True)
    dbname = upgraded.info.dbname
    version, *upgrade_blocks = sql.render_upgrades()
    apply(upgraded, [version])
    first = server.connect(dbname=dbname, autocommit=False)
    second = server.connect(dbname=dbname)
    errors: list[BaseException] = []
    try:
        first.execute(upgrade_blocks[0].encode())  # ran, not committed yet

        def run() -> None:
            try:
                apply(second, upgrade_blocks)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        pid = second.info.backend_pid
        for _ in range(200):  # until the second bootstrap waits for the first one's lock
            if upgraded.execute("SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND NOT granted",
                                (pid,)).fetchall():
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("the second bootstrap did not wait for the first")
        first.commit()
        t.join(30)
    finally:
        first.close()
        second.close()
    assert errors == []
    assert upgraded.execute("SELECT version, how FROM fraiseql_repl.schema_upgrades ORDER BY 1").fetchall() == [
        (v, "upgraded") for v, _ in sql.upgrades()]


def test_upgrade_3_records_the_triggers_and_constraints_the_install_would(database: Callable[..., Any]) -> None:
    # Upgrade 3 records each table's replication triggers and CHECK/NOT NULL constraints as they are,
    # before anything is re-installed, for the DDL guard to compare with. What it records must be what
    # the install records (spelled alike whatever the session's search_path), or the guard would
    # refuse DDL over a difference in spelling.
    upgraded = database(previous=True)
    upgraded.execute("CREATE FUNCTION public.short(text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT length($1) < 100'")
    upgraded.execute("ALTER TABLE items ADD CONSTRAINT items_v_short CHECK (public.short(v))")  # spelled by search_path
    apply(upgraded, sql.render_upgrades())
    shapes = "SELECT table_name, triggers, rules FROM fraiseql_repl.table_shape ORDER BY 1"
    by_upgrade = upgraded.execute(shapes).fetchall()
    assert by_upgrade and all(triggers and rules is not None for _, triggers, rules in by_upgrade), by_upgrade
    apply(upgraded, bootstrap())
    assert upgraded.execute(shapes).fetchall() == by_upgrade
    assert upgraded.execute("SELECT * FROM fraiseql_repl.shape_drift()").fetchall() == []
