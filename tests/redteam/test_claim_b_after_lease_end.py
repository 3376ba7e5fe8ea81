"""Claim B: "With the agent dead or paused (no revoke), plain clients cannot commit a write after the
lease's end; an adversarial client can until the next agent run ends its transaction."

Each test FAILS while the claim is broken. The lease is granted by the real agent probes (lease 0.8 s),
then the agents stop (dead): nobody revokes, the lease just runs out.

    .venv/bin/python -m pytest -q tests/redteam/test_claim_b_after_lease_end.py
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator

import pytest

from drills.mesh import REGIONS, Mesh
from drills.sample import APP_SCHEMA
from replication.agent import LOCK_SQL, acquire_loop, probe
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, agent_conn, connect, healthy, key, lease_end, red_mesh, rounds, settings

SCHEMA = APP_SCHEMA + (
    # An ordinary application table, not replicated, with an ordinary deferred foreign key.
    "CREATE TABLE orders (id int PRIMARY KEY, item int NOT NULL REFERENCES items (id) DEFERRABLE INITIALLY DEFERRED)",
)


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with red_mesh(SCHEMA) as running:
        yield running


def committed_after_lease_end(m: Mesh, k: int, lease_until: float) -> float:
    """Seconds between the lease's end and the commit of the transaction that wrote items ``k`` (server clock)."""
    ts = m.execute(EAST, "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 FROM items WHERE id = %s",
                   (k,))
    assert ts, "the write did not commit"
    return float(ts[0][0]) - lease_until


@pytest.mark.xfail(strict=True, reason="documented limit (README, Phase B claims): with the agent down, a "
                   "transaction that does work after its commit check (a deferred constraint queued later, a WITH "
                   "HOLD cursor) commits late, until the next agent run ends it")
def test_a_plain_client_with_a_holdable_cursor_commits_after_the_lease_ends(m: Mesh, agents) -> None:
    """COMMIT fires the deferred lease check, then materializes WITH HOLD cursors (PostgreSQL's
    CommitTransaction: AfterTriggerFireDeferred, then PreCommit_Portals), then writes the commit record.
    A report read through a holdable cursor (psycopg: ``conn.cursor(name, withhold=True)``) in the same
    transaction as a write runs after the check: the write commits when the report is done."""
    healthy(agents)
    k = key()
    client = connect(m, EAST, APP_ROLE)  # a plain client: no SQL tricks, no special setting
    client.execute("INSERT INTO items (id, v) VALUES (%s, 'order placed')", (k,))
    report = client.cursor("report", withhold=True)
    report.execute("SELECT g, pg_sleep(0.5) FROM generate_series(1, 6) g")  # a report that takes 3 s
    rounds(agents, 1)  # the agents' last renewal; then they die
    until = lease_end(m, EAST)
    client.commit()
    late = committed_after_lease_end(m, k, until)
    report.close()
    client.close()
    print(f"\nplain client with a holdable cursor committed {late:.2f} s after the lease's end (no agent running)")
    assert late <= 0, f"a plain client's write committed {late:.2f} s after the lease ended"


@pytest.mark.xfail(strict=True, reason="documented limit (README, Phase B claims): with the agent down, a "
                   "transaction that does work after its commit check (a deferred constraint queued later, a WITH "
                   "HOLD cursor) commits late, until the next agent run ends it")
def test_a_plain_client_whose_deferred_foreign_key_waits_commits_after_the_lease_ends(m: Mesh, agents) -> None:
    """The lease is checked at commit before the application's own deferred constraints that were
    queued later; a deferred foreign key that waits for a row lock (another plain session reserved the
    referenced row with SELECT ... FOR UPDATE) delays the commit record past the lease's end."""
    healthy(agents)
    k0, k = key(), key()
    connect(m, EAST, APP_ROLE, autocommit=True).execute("INSERT INTO items (id, v) VALUES (%s, 'in stock')", (k0,))
    other = connect(m, EAST, APP_ROLE)
    other.execute("SELECT * FROM items WHERE id = %s FOR UPDATE", (k0,))
    client = connect(m, EAST, APP_ROLE)
    client.execute("INSERT INTO items (id, v) VALUES (%s, 'order line')", (k,))
    client.execute("INSERT INTO orders (id, item) VALUES (%s, %s)", (k, k0))
    rounds(agents, 1)  # last renewal; the agents die
    until = lease_end(m, EAST)
    done = threading.Event()
    th = threading.Thread(target=lambda: (client.commit(), done.set()))
    th.start()
    time.sleep(2.5)
    other.rollback()  # the other session finishes
    th.join(10)
    assert done.is_set()
    late = committed_after_lease_end(m, k, until)
    client.close()
    other.close()
    print(f"\nplain client with a deferred foreign key committed {late:.2f} s after the lease's end (no agent running)")
    assert late <= 0, f"a plain client's write committed {late:.2f} s after the lease ended"


def test_the_application_role_can_keep_the_next_agent_run_from_ever_starting(m: Mesh, agents) -> None:
    """The agent loop's mutual exclusion is a session advisory lock on a public key
    (``hashtext('fraiseql_repl.agent')``), and any role can take advisory locks. The application role
    queues for it while the agent holds it; when the invocation ends, the application holds it and every
    later invocation gives up ("timed out waiting for the holder to hand over"). No agent run ever
    happens again, so nothing ends the adversarial writer's transaction: it commits whenever it likes.
    (The region stays fenced for plain clients: this is also a denial of service.)"""
    healthy(agents)
    s = dataclasses.replace(settings(EAST), handoff_wait_s=0.0)  # the next invocation waits 10 s, not 85 s
    invocation = agent_conn(m, EAST)
    assert acquire_loop(invocation, s) is None  # the current invocation holds the loop
    squatter = connect(m, EAST, APP_ROLE, autocommit=True)
    th = threading.Thread(target=lambda: squatter.execute(f"SELECT pg_advisory_lock({LOCK_SQL})"))
    th.start()  # queued behind the agent
    k = key()
    writer = connect(m, EAST, APP_ROLE)
    probe(invocation, s, control_on=True)
    rounds({r: agents[r] for r in REGIONS if r != EAST}, 1, only=[r for r in REGIONS if r != EAST])
    writer.execute("INSERT INTO items (id, v) VALUES (%s, 'adversarial')", (k,))
    writer.execute("SET CONSTRAINTS ALL IMMEDIATE")
    until = lease_end(m, EAST)
    invocation.close()  # the invocation ends (Lambda deadline, crash): the application gets the lock
    th.join(10)
    nxt = agent_conn(m, EAST)
    t0 = time.monotonic()
    skipped = acquire_loop(nxt, s)
    print(f"\nnext agent invocation: {skipped!r} after {time.monotonic() - t0:.1f} s")
    writer.commit()
    late = committed_after_lease_end(m, k, until)
    print(f"adversarial writer committed {late:.2f} s after the lease's end; no agent run could start")
    nxt.close()
    writer.close()
    squatter.close()
    assert skipped is None, f"the application role keeps the agent from running: {skipped}"
