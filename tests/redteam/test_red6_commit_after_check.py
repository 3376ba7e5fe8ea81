"""Claim A (docs/architecture.md): "no transaction on a replicated table commits after its agent revoked
the lease", bound: "the time end_writes takes (milliseconds)".

Attack: the commit check is a deferred constraint trigger, so it runs at the start of COMMIT. What
PostgreSQL does after it, before the commit record, is the application's to make long: ON COMMIT
DELETE ROWS temporary tables are truncated at commit (PreCommit_on_commit_actions), each truncation
drops the table's local buffers by scanning the whole local buffer pool, and no interrupt is
processed anywhere on that path (HOLD_INTERRUPTS follows it directly). The application role may
create temporary tables and set temp_buffers: 2,000 such tables and temp_buffers = 8GB make the
commit take seconds after its lease check passed. The agent revokes, end_writes signals the session
(it holds RowExclusiveLock on fraiseql_repl.changes) and returns 1, and the transaction commits
anyway, seconds later: pg_terminate_backend is only processed once it is over.

Observed (2-core box, 2 runs by hand with a hand revoke, then the probe below with the real agent):
commit took ~5 s, end_writes returned 1, the row committed 4.8 s after the revoke.

    .venv/bin/python -m pytest -q tests/redteam/test_red6_commit_after_check.py
"""

from __future__ import annotations

from typing import Any

from drills.mesh import Mesh
from replication.roles import APP_ROLE
from tests.redteam.harness import (
    EAST,
    assert_not_after_revoke,
    commit_lands_after_revoke,
    connect,
    healthy,
    key,
    temp_tables_refused,
)

TABLES = 2000
TEMP_BUFFERS = "8GB"


def test_a_commit_held_after_its_check_by_on_commit_truncation_lands_after_the_revoke(m: Mesh, agents: Any) -> None:
    app = connect(m, EAST, APP_ROLE, autocommit=True)
    # Closed at the root: the bootstrap takes TEMPORARY from the application role. The attack runs
    # wherever that privilege comes back.
    if temp_tables_refused(app):
        app.close()
        return
    app.execute(f"SET temp_buffers = '{TEMP_BUFFERS}'")
    for i in range(0, TABLES, 100):
        app.execute(f"DO $$BEGIN FOR i IN {i + 1}..{i + 100} LOOP EXECUTE format("
                    f"'CREATE TEMP TABLE t%s (x int) ON COMMIT DELETE ROWS', i); END LOOP; END$$".encode())
    healthy(agents)
    k = key()
    app.execute("BEGIN")
    app.execute("INSERT INTO items (id, v) VALUES (%s, 'committed after the revoke')", (k,))
    app.execute("INSERT INTO t1 VALUES (1)")  # the transaction touched a temp table: every ON COMMIT table is truncated
    late = commit_lands_after_revoke(m, agents, app, k)
    assert_not_after_revoke(late)
