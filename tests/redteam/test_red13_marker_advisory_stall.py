"""Red team, round 13, merge marker, claims 1 and 3: "nothing is lost and no link stalls for ever"
and "nobody but the bootstrap's user can ... make a retry go fast over a failing merge (an endless
retry loop = a stalled link) ... with any SQL their grants allow".

First test (held): the application role and the agent role cannot nextval/setval/alter/drop the
marker, create one, call make/settle_merge_marker, write apply_failures, reset the subscription
counts, or set fraiseql_repl.merging for the database or another role.

Second test (broken): the application role stalls a data link for as long as it likes without
touching the marker. Every merged insert of a key no row holds takes the key's bucket lock
(pg_advisory_xact_lock_shared(1718709113, bucket), install.sql) with no lock timeout; only the
merged delete's exclusive take is bounded (200 ms). pg_advisory_lock is PUBLIC's, so an app session
takes the 256 buckets exclusive at SESSION level and sits idle (no transaction open: no
idle_in_transaction_session_timeout ends it). The apply worker waits inside its first merge (in the
careful part as in the fast part: the wait is no failure, nothing counts it, the marker and the
parking never come into play) and nothing of the link lands until the app lets go.

Seen (2 runs of 2): after 60 s, 0 of 2,000 rows landed; the apply worker 'active', waiting on
Lock/advisory; apply_error_count 0 (nothing counted, nothing parked). Everything lands once the app
session closes. The first test passed both times (nothing allowed).

Fixed: while an apply worker waits on an advisory lock, the fence agent (every probe) ends the client
sessions of other users that hold or wait for a key-bucket lock exclusive (control.sql,
evict_bucket_squatters). The test now runs the agent's call as the agent's role, with the squatter
holding every bucket or only queued behind a legitimate open insert, and checks that the open
insert is left alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh
from replication.agent.maintenance import evict_bucket_squatters
from replication.roles import AGENT_ROLE, APP_ROLE
from replication.sql import subscription_name
from tests.redteam.harness import PASSWORDS, connect, roles_pair

EAST, WEST = REGIONS[0], REGIONS[1]
BASE = 13_700_000
WAIT_S = 60
PROBE_S = 0.25


@pytest.fixture(scope="module")
def two() -> Iterator[Mesh]:
    with roles_pair() as running:
        yield running


def _as(m: Mesh, role: str) -> psycopg.Connection:
    return connect(m, WEST, role, password=PASSWORDS[role], autocommit=True)


def test_roles_cannot_touch_the_marker(two: Mesh) -> None:
    m = two
    sub = subscription_name(m.nodes[WEST], m.nodes[EAST])
    marker = f'fraiseql_repl."merging:{sub}"'
    lit = f"'fraiseql_repl.\"merging:{sub}\"'"
    (subid,) = m.execute(WEST, "SELECT oid FROM pg_subscription WHERE subname = %s", (sub,))[0]
    (owner,) = m.execute(WEST, "SELECT subowner::regrole::text FROM pg_subscription WHERE subname = %s", (sub,))[0]
    attempts = [
        f"SELECT nextval({lit})", f"SELECT setval({lit}, 1)", f"SELECT last_value FROM {marker}",
        f"ALTER SEQUENCE {marker} RESTART", f"DROP SEQUENCE {marker}",
        'CREATE SEQUENCE fraiseql_repl."merging:x"', "SELECT fraiseql_repl.make_merge_marker('x')",
        f"SELECT fraiseql_repl.settle_merge_marker({lit}::regclass)",
        f"SELECT fraiseql_repl.mark_fast_part({lit}::regclass, 0)",
        f"INSERT INTO fraiseql_repl.apply_failures VALUES ({subid}, 0, NULL)",
        "DELETE FROM fraiseql_repl.apply_failures",
        f"SELECT pg_stat_reset_subscription_stats({subid})",
        "ALTER DATABASE postgres SET fraiseql_repl.merging = '1 fast'",
        f"ALTER ROLE {owner} SET fraiseql_repl.merging = '1 fast'",
        f"ALTER ROLE {owner} SET statement_timeout = '1ms'",
        f"LOCK TABLE {marker}",
    ]
    allowed = []
    for role in (APP_ROLE, AGENT_ROLE):
        with _as(m, role) as c:
            for sql in attempts:
                try:
                    c.execute(sql)
                    allowed.append((role, sql))
                except psycopg.Error:
                    pass
    print(f"\nallowed: {allowed}")
    assert not allowed


def _agent_evicting(m: Mesh, stop: threading.Event, ended: list[int]) -> None:
    """What the fence agent's loop does every probe (replication.agent.loop), as the agent's role."""
    with _as(m, AGENT_ROLE) as c:
        while not stop.is_set():
            n = evict_bucket_squatters(c)
            assert n >= 0, "the agent's call failed"
            if n:
                ended.append(n)
            stop.wait(PROBE_S)


@pytest.mark.parametrize("squat", ["hold exclusive", "queue exclusive behind a shared holder"])
def test_an_app_session_squatting_on_the_key_buckets_is_ended_and_the_link_goes_on(two: Mesh, squat: str) -> None:
    global BASE
    BASE += 10_000
    m = two
    m.execute(EAST, "INSERT INTO items (id, v) VALUES (%s, 'first')", (BASE,))
    m.wait_for(WEST, f"SELECT count(*) FROM items WHERE id = {BASE}", 1)
    squatter, local = _as(m, APP_ROLE), _as(m, APP_ROLE)
    stop, ended = threading.Event(), list[int]()
    agent = threading.Thread(target=_agent_evicting, args=(m, stop, ended))
    try:
        # An open local transaction that inserted keys holds their buckets shared: legitimate.
        local.execute("BEGIN")
        local.execute(f"INSERT INTO items (id, v) SELECT {BASE} + 5000 + g, 'local' FROM generate_series(1, 50) g")
        shared = [b for (b,) in m.execute(WEST, "SELECT objid::int FROM pg_locks WHERE locktype = 'advisory' "
                                                "AND classid = 1718709113 AND pid = %s", (local.info.backend_pid,))]
        assert shared, "the open insert holds no bucket"
        if squat == "hold exclusive":
            # every other bucket, at session level, then idle outside any transaction (no idle timeout ends it)
            squatter.execute("SELECT pg_advisory_lock(1718709113, b) FROM generate_series(0, 255) b "
                             "WHERE b <> ALL (%s)", (shared,))
        else:
            # waits for a bucket the open insert holds shared; every later shared request queues behind it
            held = shared[0]
            squatter.execute("SET statement_timeout = 0")
            threading.Thread(target=_quietly, args=(squatter, f"SELECT pg_advisory_lock(1718709113, {held})"),
                             daemon=True).start()
            time.sleep(0.5)
            assert m.execute(WEST, "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND NOT granted",
                             (squatter.info.backend_pid,)) == [(1,)], "the squatter is not waiting"
        m.execute(EAST, f"INSERT INTO items (id, v) SELECT {BASE} + g, 'x' FROM generate_series(1, 2000) g")
        time.sleep(1)
        stalled = m.execute(WEST, f"SELECT count(*) FROM items WHERE id > {BASE} AND id <= {BASE} + 2000")[0][0]
        agent.start()
        m.wait_for(WEST, f"SELECT count(*) FROM items WHERE id > {BASE} AND id <= {BASE} + 2000", 2000, timeout=WAIT_S)
        stop.set()
        agent.join()  # it records what it ended after its call returns, which may be after the link went on
        print(f"\n[{squat}] before the agent ran: {stalled} of 2000 landed; sessions ended: {ended}")
        assert stalled < 2000, "the squatter held nothing back: the probe tests nothing"
        assert ended, "the link went on without the agent ending anyone"
        assert squatter.closed or _dead(squatter), "the squatting session is still there"
        local.execute("COMMIT")  # the legitimate open transaction was left alone
        assert m.execute(WEST, f"SELECT count(*) FROM items WHERE id > {BASE} + 5000")[0][0] == 50
    finally:
        stop.set()
        if agent.is_alive():
            agent.join()
        for c in (squatter, local):
            c.close()


def _quietly(c: psycopg.Connection, sql: str) -> None:
    try:
        c.execute(sql)
    except psycopg.Error:
        pass


def _dead(c: psycopg.Connection) -> bool:
    try:
        c.execute("SELECT 1")
    except psycopg.Error:
        return True
    return False
