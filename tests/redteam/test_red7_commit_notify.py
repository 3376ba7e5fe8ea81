"""Claim A (docs/architecture.md): "no transaction on a replicated table commits after its agent revoked
the lease", bound: "the time end_writes takes (milliseconds)". Round 6's way of holding a commit past
its check (ON COMMIT temporary tables) is closed by taking TEMPORARY from the application role.

Attack: another piece of PostgreSQL's pre-commit work that the session sizes and that serves no
interrupt: NOTIFY. CommitTransaction fires the deferred triggers (the lease check runs here, and
passes), then PreCommit_Notify writes every notification the transaction queued into the shared
notification queue (async.c: asyncQueueAddEntries, one SLRU page at a time, no CHECK_FOR_INTERRUPTS
anywhere in the loop), then HOLD_INTERRUPTS and the commit record. pg_notify() is executable by
PUBLIC and needs no privilege, no temporary table, no CREATE: the application role queues 200,000
distinct 7,000-byte payloads (~1.4 GB) in the same transaction as its write to a replicated table,
and its COMMIT spends seconds after the lease check. The agent revokes, end_writes signals the
session (it holds RowExclusiveLock on fraiseql_repl.changes) and returns, and the transaction
commits anyway: the termination is served only after the commit record.

Observed before the fix: standalone, 100,000 notifications, pg_terminate_backend 0.3 s into COMMIT:
COMMIT took 3.0 s and the row was there. On the red mesh with the real agent (this probe, 2 runs,
both failed): COMMIT took 2.5 s / 3.7 s and the row committed 1.20 s / 1.73 s after the agent revoked
the lease (-0.09 s / 0.46 s after the agent's end_writes had returned).

Fixed: the queue is what bounds that work, so its size is part of the guard
(``max_notify_queue_pages`` = 1024 pages, 8 MB, a required parameter; control.sql ``guard_problem``
refuses every write where it is larger, tests/replication/test_adversary_fence.py). A full queue
took at most 28 ms after the check here on a loaded 2-core machine; this transaction's COMMIT is
refused ("too many notifications in the NOTIFY queue") before its commit record.

    .venv/bin/python -m pytest -q -s tests/redteam/test_red7_commit_notify.py
"""

from __future__ import annotations

from typing import Any

from drills.mesh import Mesh
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, assert_not_after_revoke, commit_lands_after_revoke, connect, healthy, key

NOTIFICATIONS = 200_000
PAYLOAD = 7000  # bytes; PostgreSQL's limit is 8000


def test_a_commit_held_after_its_check_by_notify_lands_after_the_revoke(m: Mesh, agents: Any) -> None:
    app = connect(m, EAST, APP_ROLE, autocommit=True)
    healthy(agents)
    k = key()
    app.execute("BEGIN")
    # queued now, written into the shared queue at COMMIT, after the lease check (queued before the
    # write, which takes the lock end_writes looks for, so the agent's renewals meanwhile leave it be)
    app.execute(f"SELECT count(pg_notify('red7', repeat('x', {PAYLOAD}) || i)) "
                f"FROM generate_series(1, {NOTIFICATIONS}) i")
    healthy(agents)  # the lease is valid when the write and its COMMIT run
    app.execute("INSERT INTO items (id, v) VALUES (%s, 'committed after the revoke')", (k,))
    late = commit_lands_after_revoke(m, agents, app, k, fence_within_s=30)
    assert_not_after_revoke(late)
