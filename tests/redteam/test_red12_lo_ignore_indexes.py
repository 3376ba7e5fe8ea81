"""Claim A (docs/architecture.md): "no transaction on a replicated table commits after its agent revoked
the lease, whatever SQL the application role runs", bound: the time end_writes takes.

The large-object guard (fraiseql_repl.large_object_opens, control.sql) counts a session's opens as its
pending scans of pg_largeobject_metadata's index (pg_stat_get_xact_numscans). But lo_open reaches that
catalog through systable_beginscan, which uses the index only while ``ignore_system_indexes`` is off,
and ``ignore_system_indexes`` is PGC_BACKEND: any role may set it in its connection's startup packet
(``options=-c ignore_system_indexes=on``, PGOPTIONS). In such a session every lo_open scans the
catalog's heap instead, the index's count stays 0, and the guard never fires: the red8 attack
(tests/redteam/test_red8_commit_large_objects.py, read descriptors closed after the commit check,
serving no interrupt) works again with the application role and the grants render_app_grants gives it.
Found: 3 of 3 runs (a commit landed 1.2 s, 18.3 s and 2.0 s after the revoke). Fixed: the guard
counts the catalog's table scans too.

    .venv/bin/python -m pytest -q -s tests/redteam/test_red12_lo_ignore_indexes.py
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from drills.mesh import Mesh
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, assert_not_after_revoke, commit_lands_after_revoke, connect, healthy, key, present

INV_READ = 0x40000  # libpq-fs.h: a read descriptor registers the snapshot with the resource owner
NO_INDEX = "-c ignore_system_indexes=on"  # PGC_BACKEND: any role sets it when it connects


def _open(app: psycopg.Connection[Any], oid: int, n: int) -> None:
    app.execute(f"SELECT count(lo_open({oid}, {INV_READ})) FROM generate_series(1, {n})")


def test_many_opens_without_the_index_do_not_refuse_the_write(m: Mesh, agents: Any) -> None:
    """The guard's own promise (red8's first test), from a session that connected without system indexes."""
    app = connect(m, EAST, APP_ROLE, autocommit=True, options=NO_INDEX)
    k = key()
    app.execute("BEGIN")
    oid = app.execute("SELECT lo_create(0)").fetchone()[0]  # type: ignore[index]
    _open(app, oid, 2_000)
    counted = app.execute(  # what fraiseql_repl.large_object_opens() reads
        "SELECT pg_stat_get_xact_numscans('pg_largeobject_metadata_oid_index'::regclass)").fetchone()[0]  # type: ignore[index]
    print(f"\n2,000 opens; the guard counts {counted}")
    healthy(agents)
    refused = None
    try:
        app.execute("INSERT INTO items (id, v) VALUES (%s, 'after 2,000 opens, no index')", (k,))
        app.execute("COMMIT")
    except psycopg.Error as exc:
        refused = exc
    app.close()
    assert refused is not None and refused.sqlstate == "54000" and not present(m, EAST, k), (
        f"a write after 2,000 large-object opens committed: the guard counted {counted} opens "
        f"(the session connected with {NO_INDEX})")


def test_a_commit_held_by_descriptors_opened_without_the_index_lands_after_the_revoke(m: Mesh, agents: Any) -> None:
    app = connect(m, EAST, APP_ROLE, autocommit=True, options=NO_INDEX)
    k = key()
    app.execute("BEGIN")
    oid = app.execute("SELECT lo_create(0)").fetchone()[0]  # type: ignore[index]
    started = time.monotonic()
    _open(app, oid, 80_000)
    print(f"\n80,000 read descriptors opened in {time.monotonic() - started:.1f} s")
    healthy(agents)  # the lease is valid when the write and its COMMIT run
    try:
        app.execute("INSERT INTO items (id, v) VALUES (%s, 'committed after the revoke')", (k,))
    except psycopg.Error as refused:  # the guard counted the opens: nothing to commit late
        assert refused.sqlstate == "54000", refused
        app.close()
        assert not present(m, EAST, k)
        return
    late = commit_lands_after_revoke(m, agents, app, k, fence_within_s=30)
    assert_not_after_revoke(late)
