"""Red team, round 14, verify rounds: attacks on claim 1 that HELD (keep as regressions), and the
exact boundary of the one that did not (tests/redteam/test_red14_verify_idle_xact.py).

The watermark a writer emits (emit_watermark) claims no later than the start of the oldest open
transaction holding an xid. Measured directly: the lag of the watermark this writer would emit now,
while an application-role session does each of the following (one at a time):

- held: a long read in a transaction (no xid): ``BEGIN; SELECT count(*) FROM items; pg_sleep``;
- held: an idle session holding session advisory locks (no xid);
- held: the application cannot stamp a row's version (_repl_ts) into the future or the past (a row
  whose version stays newer than every horizon would never be compared): the trigger overrides it;
- broken (the boundary of the idle_xact finding, printed, not asserted): anything that takes an xid
  and stays open, e.g. ``SELECT ... FOR SHARE`` of one row, or pg_current_xact_id(), and the same
  from a session in ANOTHER database (template1: PUBLIC may connect), since pg_stat_activity is
  cluster-wide.

Seen (2 runs of 2): passed; long read lag ~0 s, advisory ~0 s, _repl_ts = the write's own clock (0.004-0.011 s old); FOR
SHARE / xid / xid in template1 each pinned the watermark to the session's BEGIN (lag = its age).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.bootstrap import apply
from replication.roles import AGENT_ROLE, APP_ROLE, render_roles, secret_options

EAST, WEST = REGIONS[0], REGIONS[1]
PASSWORDS = {APP_ROLE: "app-password-0123456789", AGENT_ROLE: "agent-password-0123456789"}
BASE = 14_600_000
HOLD_S = 4.0


@pytest.fixture(scope="module")
def two() -> Iterator[Mesh]:
    with mesh(POLICY, APP_SCHEMA, regions=(EAST, WEST), delays=False) as running:
        for r in (EAST, WEST):
            with psycopg.connect(running.pg[r].dsn, autocommit=True, options=secret_options(PASSWORDS)) as c:
                apply(c, render_roles(POLICY, [APP_ROLE, AGENT_ROLE]))
        running.execute(WEST, f"INSERT INTO items (id, v) SELECT {BASE} + g, 'v' FROM generate_series(1, 100) g")
        yield running


def _app(m: Mesh, db: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(f"host=127.0.0.1 port={m.pg[WEST].port} dbname={db} user={APP_ROLE} "
                           f"password={PASSWORDS[APP_ROLE]}", autocommit=True)


def _watermark_lag(m: Mesh) -> float:
    """How far behind now the watermark WEST emits now is (seconds)."""
    m.execute(WEST, "SELECT fraiseql_repl.emit_watermark()")
    return float(m.execute(WEST, "SELECT extract(epoch FROM clock_timestamp() - origin_at)::float8 FROM "
                                 "fraiseql_repl.changes WHERE op = 'w' AND origin = fraiseql_repl.node_name() "
                                 "ORDER BY id DESC LIMIT 1")[0][0])


def _lag_while(m: Mesh, *stmts: str, db: str = "postgres") -> float:
    with _app(m, db) as c:
        for s in stmts:
            c.execute(s.encode())
        time.sleep(HOLD_S)
        lag = _watermark_lag(m)
    return lag


def test_reads_and_advisory_locks_do_not_hold_the_watermark(two: Mesh) -> None:
    m = two
    read = _lag_while(m, "BEGIN", "SELECT count(*) FROM items", "SELECT pg_sleep(0.1)")
    adv = _lag_while(m, "SELECT pg_advisory_lock(1718709113, b) FROM generate_series(0, 255) b")
    share = _lag_while(m, "BEGIN", f"SELECT v FROM items WHERE id = {BASE + 1} FOR SHARE")
    xid = _lag_while(m, "BEGIN", "SELECT pg_current_xact_id()")
    other_db = _lag_while(m, "BEGIN", "SELECT pg_current_xact_id()", db="template1")
    print(f"\nwatermark lag after {HOLD_S} s: long read {read:.2f}, advisory {adv:.2f} (held); "
          f"FOR SHARE {share:.2f}, xid {xid:.2f}, xid in template1 {other_db:.2f} (each pins it)")
    assert read < 1 and adv < 1


def test_the_app_cannot_stamp_a_rows_version(two: Mesh) -> None:
    m = two
    with _app(m) as c:
        c.execute(f"INSERT INTO items (id, v, _repl_ts) VALUES ({BASE + 500}, 'x', 'infinity')")
        c.execute(f"UPDATE items SET _repl_ts = '2999-01-01' WHERE id = {BASE + 2}")
        c.execute(f"UPDATE items SET _repl_ts = '1999-01-01' WHERE id = {BASE + 3}")
    got = m.execute(WEST, "SELECT id, extract(epoch FROM clock_timestamp() - _repl_ts)::float8 FROM items "
                          f"WHERE id IN ({BASE + 500}, {BASE + 2}, {BASE + 3}) ORDER BY id")
    print(f"\nversions (seconds before now): {got}")
    assert all(0 <= age < 5 for _, age in got)
