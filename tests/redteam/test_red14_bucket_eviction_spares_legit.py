"""Red team, round 14, key-bucket squatters, claims (b) "no legitimate application session (ordinary
inserts/updates/deletes on replicated tables, any isolation level, open transactions) is ever
terminated" and (a) for the queued squatter.

Attack: while an apply worker waits on a bucket lock (an app squatter holds every bucket exclusive
that a legitimate open transaction does not hold shared, and queues exclusive for one it does), the
agent's eviction runs every 0.25 s as the agent role. Legitimate application sessions are in every
lock state a bucket can be in for them: a SERIALIZABLE transaction left open after inserts, a key
change (UPDATE of the primary key: the new key's bucket shared) and a delete; a REPEATABLE READ one;
a READ COMMITTED insert of a key in a bucket the squatter queues for (itself queued, ShareLock, behind
the squatter's exclusive request). Checks: only the squatter is ended; the others commit; the link
goes on.

HELD (2 runs of 2): only the squatter ended; every legitimate session committed. A session holding a
bucket shared at session level was left alone then; since test_red14_bucket_shared_hold.py it is a
squatter too (idle, holding a bucket without a write), and the test expects it ended.
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
from tests.redteam.harness import PASSWORDS, connect, roles_pair

EAST, WEST = REGIONS[0], REGIONS[1]
BASE = 14_800_000
PROBE_S = 0.25


@pytest.fixture(scope="module")
def two() -> Iterator[Mesh]:
    with roles_pair() as running:
        yield running


def _as(m: Mesh, role: str) -> psycopg.Connection:
    return connect(m, WEST, role, password=PASSWORDS[role], autocommit=True)


def _quietly(c: psycopg.Connection, sql: str, out: list) -> None:
    try:
        c.execute(sql)
        out.append("ok")
    except psycopg.Error as exc:
        out.append(type(exc).__name__)


def _alive(c: psycopg.Connection) -> bool:
    try:
        c.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


@pytest.mark.parametrize("run", [1, 2])
def test_the_eviction_ends_the_squatter_and_no_legitimate_session(two: Mesh, run: int) -> None:
    global BASE
    BASE += 10_000
    m = two
    for k in (BASE + 1, BASE + 2, BASE + 3):
        m.execute(WEST, "INSERT INTO items (id, v) VALUES (%s, 'existing')", (k,))
    m.execute(EAST, "INSERT INTO items (id, v) VALUES (%s, 'first')", (BASE,))
    m.wait_for(WEST, f"SELECT count(*) FROM items WHERE id = {BASE}", 1)
    ser, rr, rc, shared_sess, squatter = (_as(m, APP_ROLE) for _ in range(5))
    stop, ended = threading.Event(), list[int]()
    results: dict[str, list] = {"rc": [], "squat": []}

    def agent() -> None:
        with _as(m, AGENT_ROLE) as c:
            while not stop.is_set():
                n = evict_bucket_squatters(c)
                if n:
                    ended.append(n)
                stop.wait(PROBE_S)

    evictor = threading.Thread(target=agent)
    try:
        ser.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
        ser.execute(f"INSERT INTO items (id, v) SELECT {BASE} + 5000 + g, 'ser' FROM generate_series(1, 50) g")
        ser.execute(f"UPDATE items SET id = {BASE} + 6000 WHERE id = {BASE + 1}")  # a key change
        ser.execute(f"DELETE FROM items WHERE id = {BASE + 2}")
        rr.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        rr.execute(f"INSERT INTO items (id, v) SELECT {BASE} + 7000 + g, 'rr' FROM generate_series(1, 20) g")
        rr.execute(f"UPDATE items SET v = 'rr' WHERE id = {BASE + 3}")
        shared_sess.execute("SELECT pg_advisory_lock_shared(1718709113, 7)")
        held = sorted({b for (b,) in m.execute(
            WEST, "SELECT objid::int FROM pg_locks WHERE locktype = 'advisory' AND classid = 1718709113 "
                  "AND pid = ANY(%s)", ([ser.info.backend_pid, rr.info.backend_pid, shared_sess.info.backend_pid],))})
        squatter.execute("SELECT pg_advisory_lock(1718709113, b) FROM generate_series(0, 255) b WHERE b <> ALL (%s)",
                         (held,))
        threading.Thread(target=_quietly, args=(squatter, f"SELECT pg_advisory_lock(1718709113, {held[0]})",
                                                results["squat"]), daemon=True).start()
        time.sleep(0.3)
        # a plain insert of a key in that bucket: queued (shared) behind the squatter's exclusive request
        key = m.execute(WEST, "SELECT g FROM generate_series(%s, %s) g WHERE "
                              "fraiseql_repl.key_bucket('public.items', jsonb_build_object('id', g)) = %s LIMIT 1",
                        (BASE + 8000, BASE + 9000, held[0]))
        if not key:
            key = [(BASE + 8000,)]
        threading.Thread(target=_quietly, args=(rc, f"INSERT INTO items (id, v) VALUES ({key[0][0]}, 'rc')",
                                                results["rc"]), daemon=True).start()
        m.execute(EAST, f"INSERT INTO items (id, v) SELECT {BASE} + g, 'x' FROM generate_series(10, 2000) g")
        time.sleep(1)
        stalled = m.execute(WEST, f"SELECT count(*) FROM items WHERE id >= {BASE} + 10 AND id <= {BASE} + 2000")[0][0]
        evictor.start()
        m.wait_for(WEST, f"SELECT count(*) FROM items WHERE id >= {BASE} + 10 AND id <= {BASE} + 2000", 1991, timeout=60)
        time.sleep(0.5)
        alive = {"serializable": _alive(ser), "repeatable read": _alive(rr), "read committed insert": _alive(rc),
                 "session shared": _alive(shared_sess), "squatter": _alive(squatter)}
        ser_commit = rr_commit = None
        try:
            ser.execute("COMMIT")
            ser_commit = "ok"
        except psycopg.Error as exc:
            ser_commit = type(exc).__name__
        try:
            rr.execute("COMMIT")
            rr_commit = "ok"
        except psycopg.Error as exc:
            rr_commit = type(exc).__name__
        print(f"\n[run {run}] buckets held shared {len(held)}; stalled before the agent: {stalled} of 1991; ended {ended}; "
              f"alive {alive}; commits: serializable {ser_commit}, repeatable read {rr_commit}, rc insert {results['rc']}")
        assert stalled < 1991, "nothing was held back: the probe tests nothing"
        assert not alive["squatter"]
        assert not alive["session shared"], "a session lock on a bucket, held while idle, was left"
        assert alive["serializable"] and alive["repeatable read"] and alive["read committed insert"]
        assert ser_commit == "ok" and rr_commit == "ok" and results["rc"] == ["ok"]
    finally:
        stop.set()
        if evictor.is_alive():
            evictor.join()
        for c in (ser, rr, rc, shared_sess, squatter):
            c.close()
