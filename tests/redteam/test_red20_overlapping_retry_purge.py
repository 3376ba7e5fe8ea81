"""Red team 20, claim 2: "no deleted row comes back, whatever the interleaving of housekeeping"
(12be4ad: housekeeping on MaintenanceSide, its own thread and connection).

Found on 12be4ad: 4 of 4 runs failed (a first version, with run 2 started 0.15 s after run 1, 3 of 4).
Fixed in retry_parked, which now takes each parked change's row lock and skips one already merged.

purge_tombstones spares a key's tombstone while a change of the key is parked: retry_parked needs
it to know the change is dead. retry_parked walks the parked changes from the snapshot its loop
opened with. Two housekeeping runs of one writer can now overlap: the loop lock (an advisory
lock) is held by the lease loop's connection, the housekeeping runs on another one, and nothing
serialises housekeeping runs. When the loop connection is lost (a reset connection, a terminated
session), the invocation waiting in acquire_loop's pg_advisory_lock takes the loop at once and starts
its MaintenanceSide, whose first run is a full one, while the old invocation's side goes on until its
loop notices and its teardown stops it. Before 12be4ad the housekeeping ran on the lock holder's
connection: it ended with the lock. Overlapping, they give:
  run 1: retry_parked merges the dead parked change (the tombstone wins), unparks it, commits;
         then purge_tombstones: nothing of the key is parked any more, the tombstone goes;
  run 2: its retry_parked, whose loop still holds the parked change (it waited behind run 1's
         row locks on the parked changes before it), merges it with no tombstone left: the
         deleted row is inserted again, here only (a replica-role merge is not sent out).
With the housekeeping serial on the lease loop's connection (before 12be4ad), run 2 starts after
run 1 ended and never sees the change.

The parked changes are laid out by hand (as red19 drives the agents by hand): the dead one is the
key's own insert as its origin sent it, parked at east; ahead of it, 6,000 changes of a table east
does not replicate yet (FQ002, "parked and retried"), which is what makes a retry_parked take a while.
The watermarks and leases come from the real agent probe on a thread (Probing); the housekeeping is
the real ``maintain(full=True)`` that MaintenanceSide runs, on two agent connections.

    .venv/bin/python -m pytest -q -s tests/redteam/test_red20_overlapping_retry_purge.py -p no:cacheprovider
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from replication.agent.maintenance import maintain
from replication.roles import APP_ROLE
from tests.redteam.harness import (
    EAST,
    EU,
    REGIONS,
    WEST,
    agent_conn,
    connect,
    key_state,
    probed_mesh,
    wait_in_statement,
    wait_until,
)

FILLERS = 6000


def _dead_parked_change(m: Any, k: int) -> None:
    """Key k inserted and deleted at west, everywhere; its insert parked at east, behind FILLERS
    changes parked there earlier."""
    with connect(m, WEST, APP_ROLE, autocommit=True) as c:
        c.execute("INSERT INTO items (id, v) VALUES (%s, 'doomed')", (k,))
    wait_until("k everywhere", lambda: all(m.execute(r, "SELECT count(*) FROM items WHERE id = %s", (k,)) == [(1,)] for r in REGIONS))
    with connect(m, WEST, APP_ROLE, autocommit=True) as c:
        c.execute("DELETE FROM items WHERE id = %s", (k,))
    pk = json.dumps({"id": k})
    wait_until("k's tombstone everywhere", lambda: all(
        m.execute(r, "SELECT count(*) FROM items WHERE id = %s", (k,)) == [(0,)] and
        m.execute(r, "SELECT count(*) FROM fraiseql_repl.tombstones WHERE pk = %s::jsonb", (pk,)) == [(1,)] for r in REGIONS))
    ins = m.execute(WEST, "SELECT to_jsonb(c)::text FROM fraiseql_repl.changes c "
                          "WHERE pk = %s::jsonb AND op <> 'd' ORDER BY id LIMIT 1", (pk,))[0]
    m.execute(EAST, "DELETE FROM fraiseql_repl.parked WHERE tbl = 'public.ghost'")
    m.execute(EAST, "INSERT INTO fraiseql_repl.parked (origin, id, tbl, op, pk, ts, node, born, sqlstate, error) "
                    "SELECT 'us-west-2', 100000000 + g, 'public.ghost', 'u', jsonb_build_object('id', g), clock_timestamp(), 'us-west-2', "
                    "'-infinity', 'FQ002', 'change for public.ghost, which is not replicated on this node yet' "
                    "FROM generate_series(1, %s) g", (FILLERS,))
    m.execute(EAST, "INSERT INTO fraiseql_repl.parked (origin, id, tbl, op, pk, ts, node, born, row_image, origin_at, sqlstate, error) "
                    "SELECT origin, id, tbl, op, pk, ts, node, born, row_image, origin_at, '55P03', 'parked while its key was held' "
                    "FROM jsonb_populate_record(NULL::fraiseql_repl.changes, %s::jsonb)", (ins[0],))
    time.sleep(2.5)  # past purge_tombstones' 1 s margin, watermarks out


def test_overlapping_housekeeping_does_not_bring_a_deleted_row_back() -> None:
    with probed_mesh() as (m, _agents):
        side1, side2 = agent_conn(m, EAST), agent_conn(m, EAST)
        # control: the two runs one after the other (the serial loop)
        _dead_parked_change(m, 7001)
        t = time.monotonic()
        a = maintain(side1, full=True)
        b = maintain(side2, full=True)
        control = key_state(m, 7001)
        print(f"\ncontrol (serial) in {time.monotonic() - t:.2f} s: {a}, {b}; k (rows, tombstones, parked) {control}")
        assert control[EAST][0] == 0, f"the serial control already brings the row back: {control}"

        # overlapping: run 2 starts while run 1 is in its retry_parked
        _dead_parked_change(m, 7002)
        out: dict[str, Any] = {}

        def run(name: str, conn: Any) -> None:
            t0 = time.monotonic()
            out[name] = maintain(conn, full=True)
            out[name + "_s"] = round(time.monotonic() - t0, 2)
        th = [threading.Thread(target=run, args=("run1", side1)), threading.Thread(target=run, args=("run2", side2))]
        th[0].start()
        wait_in_statement(m, EAST, side1.info.backend_pid, "retry_parked")
        th[1].start()  # run 2 starts while run 1 is in its retry_parked
        for x in th:
            x.join()
        time.sleep(2)
        after = key_state(m, 7002)
        print(f"overlapping: {out}; k (rows, tombstones, parked) {after}")
    assert after[EAST][0] == 0 and after[WEST][0] == 0 and after[EU][0] == 0, (
        f"a row deleted at {WEST} (and gone everywhere) is back at {EAST} after two overlapping housekeeping runs "
        f"(rows, tombstones, parked per writer): {after}")
