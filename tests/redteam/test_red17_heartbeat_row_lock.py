"""Red team, round 17, control link, claim: "nothing a writer's application role, its fence agent's
role, the verify rounds, purges or a joining copy can do makes a control subscription's apply fail
for good (or stall for longer than stale_after) on a healthy mesh: every writer keeps receiving
every other writer's heartbeats."

Attack (the fence agent's role only, fraiseql_agent, with its real grants: SELECT, INSERT, UPDATE,
DELETE on fraiseql_repl.heartbeats): on us-west-2, an agent-role session opens a transaction and
locks the row of a PEER (us-east-1) in us-west-2's heartbeats: ``SELECT ... FOR UPDATE`` needs only
the UPDATE privilege, and the own-row trigger (heartbeat_own_row) fires on writes, not on row locks.
Every heartbeat of us-east-1 arrives as an INSERT, which the replica trigger heartbeat_upsert turns
into an UPDATE of that row: the apply worker of fq_ctl_us_west_2_from_us_east_1 waits on the row lock,
with no timeout, for as long as the session keeps its transaction open (nothing ends it: no
idle_in_transaction_session_timeout; the agent's evictions cover its loop lock and the merges' bucket
locks only). Everything else on that link waits behind it (us-east-1's verify rows too), and the
session's own writer, its agent included, sees nothing wrong (no apply error).

The test holds the lock for HOLD_S (longer than the deployed default stale_after of 15 s) while the
superuser writes a heartbeat of us-east-1 every second, and FAILS while us-west-2's copy of us-east-1's
heartbeat gets older than STALE_S meanwhile.

    .venv/bin/python -m pytest -q -s tests/redteam/test_red17_heartbeat_row_lock.py -p no:cacheprovider
"""

from __future__ import annotations

import time

import psycopg

from replication.roles import AGENT_ROLE
from replication.sql import control_subscription_name
from tests.redteam.harness import APPLY_ERRORS, EAST, EU, WEST, beat, connect, red_mesh

HOLD_S = 25.0
STALE_S = 15.0  # the deployed agent's default stale_after
AGE = "SELECT extract(epoch FROM clock_timestamp() - received_at)::float8 FROM fraiseql_repl.heartbeats WHERE node = %s"


def test_the_agent_role_cannot_hold_back_a_peers_heartbeats() -> None:
    with red_mesh() as m:
        east = m.execute(EAST, "SELECT fraiseql_repl.node_name()")[0][0]
        sub = control_subscription_name(m.nodes[WEST], m.nodes[EAST])
        beat(m, EAST, 1)
        m.wait_for(WEST, "SELECT count(*) FROM fraiseql_repl.heartbeats WHERE node = %s" % f"'{east}'", 1)
        m.wait_for(EU, "SELECT count(*) FROM fraiseql_repl.heartbeats WHERE node = %s" % f"'{east}'", 1)
        before = m.execute(WEST, APPLY_ERRORS, (sub,))[0][0]

        holder = connect(m, WEST, AGENT_ROLE, autocommit=True)
        holder.execute("BEGIN")
        refused = None
        try:
            holder.execute("SELECT seq FROM fraiseql_repl.heartbeats WHERE node = %s FOR UPDATE", (east,))
        except psycopg.errors.InsufficientPrivilege as exc:  # no UPDATE on heartbeats for the agent's role
            refused = str(exc).splitlines()[0]
        worst = {WEST: 0.0, EU: 0.0}
        t0 = time.monotonic()
        seq = 2
        while time.monotonic() - t0 < (HOLD_S if refused is None else 3.0):
            beat(m, EAST, seq)
            seq += 1
            time.sleep(1.0)
            for r in worst:
                worst[r] = max(worst[r], m.execute(r, AGE, (east,))[0][0])
        waiting = m.execute(WEST, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'logical replication apply worker' "
                                  "AND wait_event_type = 'Lock'")[0][0]
        holder.execute("ROLLBACK")
        holder.close()
        released = time.monotonic()
        m.wait_for(WEST, "SELECT seq FROM fraiseql_repl.heartbeats WHERE node = %s" % f"'{east}'", seq - 1, timeout=30)
        after = m.execute(WEST, APPLY_ERRORS, (sub,))[0][0]
        print(f"\n{AGENT_ROLE} on {WEST} locking {east}'s heartbeat row FOR UPDATE (refused: {refused!r}): oldest copy of "
              f"{east}'s heartbeat meanwhile {worst} s (stale_after {STALE_S:.0f} s); apply workers waiting on a lock on "
              f"{WEST}: {waiting}; {sub} apply errors {before} -> {after}; caught up "
              f"{time.monotonic() - released:.1f} s after the release")
        assert worst[WEST] <= STALE_S, (
            f"an {AGENT_ROLE} session on {WEST} kept {WEST} from receiving {east}'s heartbeats for {worst[WEST]:.1f} s "
            f"(stale_after {STALE_S:.0f} s) with one row lock, and no apply error to show for it")
