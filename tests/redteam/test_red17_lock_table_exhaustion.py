"""Red team, round 17, control link, claim: "nothing a writer's application role, its fence agent's
role, the verify rounds, purges or a joining copy can do makes a control subscription's apply fail
for good (or stall for longer than stale_after) on a healthy mesh: every writer keeps receiving
every other writer's heartbeats."

Attack (the application role only, fraiseql_app; pg_advisory_lock is PUBLIC's): on us-west-2 one
application session takes session-level advisory locks, in batches, until the server's shared lock
table is full ("out of shared memory"), and keeps them (session locks outlive the failed statement;
nothing ends the session: the agent's evict_bucket_squatters only looks at the merges' lock class).
Every apply worker on us-west-2 needs a shared lock-table entry for each transaction it applies (its
transaction id's lock), so the control links from us-east-1 and eu-west-1 fail with "out of shared
memory" at every retry, for as long as the session lives: us-west-2 hears nobody.

The test FAILS while a heartbeat written on us-east-1 (by the superuser) has not reached us-west-2
within WAIT_S (longer than the deployed default stale_after of 15 s) while the session holds its
locks.

    .venv/bin/python -m pytest -q -s tests/redteam/test_red17_lock_table_exhaustion.py -p no:cacheprovider
"""

from __future__ import annotations

import time

import psycopg
import pytest

from replication.roles import APP_ROLE
from replication.sql import control_subscription_name
from tests.redteam.harness import APPLY_ERRORS, EAST, PASSWORDS, WEST, beat, connect, red_mesh

WAIT_S = 20.0


LIMIT = pytest.mark.xfail(strict=True, reason=(
    "documented limit (replication/README.md, Fence: resources the application shares with the mesh): an "
    "application session that fills its server's shared lock table stops every new transaction there, the apply "
    "workers' included, for as long as it lives; that writer hears nobody and its lease runs out, and nothing "
    "acknowledged is lost"))


@LIMIT
def test_the_application_cannot_starve_the_control_apply_of_locks() -> None:
    with red_mesh() as m:
        east = m.execute(EAST, "SELECT fraiseql_repl.node_name()")[0][0]
        sub = control_subscription_name(m.nodes[WEST], m.nodes[EAST])
        seen = "SELECT coalesce(max(seq), 0) FROM fraiseql_repl.heartbeats WHERE node = '%s'" % east
        beat(m, EAST, 1)
        m.wait_for(WEST, seen, 1)
        before = m.execute(WEST, APPLY_ERRORS, (sub,))[0][0]

        app = connect(m, WEST, APP_ROLE, autocommit=True, password=PASSWORDS[APP_ROLE])
        held, refusal = 0, None
        for start in range(0, 10_000_000, 1000):
            try:
                app.execute("SELECT count(pg_advisory_lock(g)) FROM generate_series(%s::bigint, %s::bigint) g",
                            (start + 1, start + 1000))
                held += 1000
            except psycopg.Error as exc:
                refusal = str(exc).splitlines()[0]
                break
        beat(m, EAST, 2)
        time.sleep(WAIT_S)  # nothing on us-west-2 can even be read meanwhile (every new transaction needs a lock entry)
        app.close()  # the attacker lets go; only then can the observation be made
        m.wait_for(WEST, seen, 2, timeout=60)
        late = m.execute(WEST, "SELECT extract(epoch FROM received_at - sent_at)::float8 FROM fraiseql_repl.heartbeats "
                               "WHERE node = %s", (east,))[0][0]
        after = m.execute(WEST, APPLY_ERRORS, (sub,))[0][0]
        lines = open(m.pg[WEST].log_path, errors="replace").read().splitlines()
        oom = [ln for ln in lines if "out of shared memory" in ln]
        workers = [ln for ln in oom if "logical replication" in ln]
        arrived = late if late <= 15.0 else None
        print(f"\n{APP_ROLE} on {WEST} holds {held} advisory locks (stopped by: {refusal}); {east}'s heartbeat "
              f"reached {WEST} {late:.1f} s after it was sent (the session held its locks {WAIT_S:.0f} s); {sub} apply errors {before} -> {after}; "
              f"'out of shared memory' lines in {WEST}'s log: {len(oom)}, from logical replication workers: {len(workers)}; "
              f"e.g. {workers[:2] or oom[:2]}")
        assert arrived is not None, (
            f"one {APP_ROLE} session holding {held} advisory locks on {WEST} kept {WEST}'s control apply from "
            f"{east} failing for {WAIT_S:.0f} s ({after - before} apply errors, 'out of shared memory')")
