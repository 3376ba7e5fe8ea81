"""Claim A (docs/architecture.md): "no transaction on a replicated table commits after its agent revoked
the lease", bound: "the time end_writes takes (milliseconds)".

Attack: large-object descriptors, closed at commit after the lease check. CommitTransaction fires the
deferred triggers (the lease check runs here, and passes), then AtEOXact_LargeObject closes every
large-object descriptor the transaction still has open, before HOLD_INTERRUPTS and the commit record,
serving no interrupt. A descriptor opened for reading (INV_READ) registers the transaction's snapshot
with the transaction's resource owner; opening the same large object N times registers the same
snapshot N times. The cost of closing them grows faster than N^2 (measured below: 10,000 -> 0.3 s,
40,000 -> 3.1 s, 160,000 -> 88 s). Our reading of resowner.c (PostgreSQL 17+, not confirmed with a
profiler): identical entries land in one cluster of the resource owner's open-addressing hash, and
each ResourceOwnerForget scans past the slots its predecessors emptied. lo_create and lo_open are executable by PUBLIC: the application
role needs no grant beyond the ones render_app_grants gives it.

The opens are done before the write (they take a while too, quadratic as well, but the session has
not written a replicated table yet: end_writes has no reason to end it, and its agent renews the lease
meanwhile); then the write (its statement check passes), then COMMIT: the commit check passes and the
descriptors are closed for seconds. The agent revokes, end_writes signals the session (it holds
RowExclusiveLock on fraiseql_repl.changes) and returns, and the transaction commits anyway.

Observed (2-core box, standalone PostgreSQL 18, the application role, max_notify_queue_pages = 1024):
40,000 opens took 12.4 s and the COMMIT 3.1 s; 160,000 opens 91 s and the COMMIT 88 s; with
pg_terminate_backend 0.5 s into a 40,000-descriptor COMMIT, the COMMIT returned success 2.95 s in.
Write descriptors (INV_WRITE) register no snapshot: 40,000 of them closed at commit in 0.0 s.
On the red mesh with the real agent (this probe, 60,000 descriptors; opens 9.5 s to 28 s depending on
the machine's load), 4 runs, all failed: the row committed 8.6 s / 14.6 s / 4.2 s / 6.2 s after the
agent revoked the lease (7.2 s / 13.2 s / 2.9 s / 4.9 s after its end_writes had returned; the COMMIT
took (not recorded) / 15.4 s / 5.0 s / 7.2 s; the first run was before the probe renewed the lease
right before COMMIT). One more run of that first version was refused at commit (the lease had run out
between healthy() and the COMMIT: a race in the probe, since removed).

Fixed (2026-12-07): the lease check refuses a write to a replicated table from a session that opened
large objects 1,000 times or more lately (fraiseql_repl.large_object_opens, control.sql), at the write
and at commit. The probe's attack is now refused at its write; opens made after the write are refused
at commit; a few opens are not refused.

    .venv/bin/python -m pytest -q -s tests/redteam/test_red8_commit_large_objects.py
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from drills.mesh import Mesh
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, connect, healthy, key, present

OPENS = 2_000  # past the 1,000 the check allows; the attack used 60,000
INV_READ = 0x40000  # libpq-fs.h: a read descriptor registers the snapshot with the resource owner


def _open(app: psycopg.Connection[Any], oid: int, n: int) -> None:
    app.execute(f"SELECT count(lo_open({oid}, {INV_READ})) FROM generate_series(1, {n})")


def test_a_write_after_many_large_object_opens_is_refused(m: Mesh, agents: Any) -> None:
    app = connect(m, EAST, APP_ROLE, autocommit=True)
    k = key()
    app.execute("BEGIN")
    oid = app.execute("SELECT lo_create(0)").fetchone()[0]  # type: ignore[index]
    _open(app, oid, OPENS)
    healthy(agents)  # the lease is valid: only the opens can refuse the write
    with pytest.raises(psycopg.Error) as refused:
        app.execute("INSERT INTO items (id, v) VALUES (%s, 'after many opens')", (k,))
    assert refused.value.sqlstate == "54000", refused.value
    app.close()
    assert not present(m, EAST, k)


def test_large_objects_opened_after_the_write_are_refused_at_commit(m: Mesh, agents: Any) -> None:
    app = connect(m, EAST, APP_ROLE, autocommit=True)
    k = key()
    app.execute("BEGIN")
    healthy(agents)
    app.execute("INSERT INTO items (id, v) VALUES (%s, 'before the opens')", (k,))
    oid = app.execute("SELECT lo_create(0)").fetchone()[0]  # type: ignore[index]
    _open(app, oid, OPENS)
    healthy(agents)
    with pytest.raises(psycopg.Error) as refused:
        app.execute("COMMIT")
    assert refused.value.sqlstate == "54000", refused.value
    app.close()
    assert not present(m, EAST, k)


def test_a_few_large_object_opens_do_not_refuse_a_write(m: Mesh, agents: Any) -> None:
    app = connect(m, EAST, APP_ROLE, autocommit=True)
    k = key()
    app.execute("BEGIN")
    oid = app.execute("SELECT lo_create(0)").fetchone()[0]  # type: ignore[index]
    _open(app, oid, 10)
    healthy(agents)
    app.execute("INSERT INTO items (id, v) VALUES (%s, 'a few opens')", (k,))
    app.execute("COMMIT")
    app.close()
    assert present(m, EAST, k)
