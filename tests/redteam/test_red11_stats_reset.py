"""Red team, round 11, claim M (2): "the retry is always careful, whatever else happens: stats
resets, ..." (replication/README.md, large transactions; fraiseql_repl.merge_carefully).

Found: the careful decision compares the link's apply_error_count with the count recorded at the
last careful commit. A reset of the subscription's statistics between a failed attempt and its
retry (an operator clearing the counters after an alert, monitoring tooling) puts the count back to
the recorded value when that was 0 (a link that never failed before), so the retry is merged fast
again and fails again on the same change: one more failed attempt, apply error and unhealthy link,
before the careful one. Not a stall: the attempt after that is careful and parks the change.
Held here with a row lock and a frozen proxy only to place the reset between the two attempts.

Fixed: the decision compares the count together with stats_reset, the time the counts were last
reset (fraiseql_repl.apply_failures.counted_since).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.sql import subscription_name

EAST, WEST = REGIONS[0], REGIONS[1]
FAILED = "change for public.scratch, which is not replicated on this node yet"


@pytest.fixture
def two() -> Iterator[Mesh]:
    with mesh(POLICY, APP_SCHEMA, regions=(EAST, WEST), delays=False) as running:
        yield running


def _failures(m: Mesh) -> int:
    return sum(1 for line in m.pg[WEST].log_path.read_text(errors="replace").splitlines()
               if "apply worker ERROR" in line and FAILED in line)


def test_the_retry_after_a_stats_reset_is_careful(two: Mesh) -> None:
    m = two
    sub = subscription_name(m.nodes[WEST], m.nodes[EAST])
    with m.connect(EAST) as c, c.transaction():
        # A table only this writer replicates: its change cannot be merged on the other.
        c.execute("SET LOCAL fraiseql_repl.schema_apply = on")
        c.execute("SELECT fraiseql_repl.install_table('scratch', 'lww'); SELECT fraiseql_repl.install_dispatcher()")
    m.execute(EAST, "INSERT INTO items (id, v) VALUES (7_500_000, 'first')")  # a careful commit on record: 0 errors
    m.wait_for(WEST, "SELECT count(*) FROM items WHERE id = 7500000", 1)
    with m.connect(WEST, autocommit=False) as lock:
        lock.execute("SELECT 1 FROM items WHERE id = 7500000 FOR UPDATE")
        with m.connect(EAST) as c, c.transaction():
            c.execute("INSERT INTO items (id, v) SELECT 7_500_000 + g, 'bulk' FROM generate_series(1, 1500) g")
            c.execute("UPDATE items SET v = 'held' WHERE id = 7500000")  # past the first 1,000: merged fast
            c.execute("INSERT INTO scratch (id) VALUES (1)")
            c.execute("INSERT INTO items (id, v) SELECT 7_500_000 + g, 'bulk' FROM generate_series(1501, 2000) g")
        time.sleep(3)  # the fast attempt waits on the row; the rest of the transaction is on its socket
        for p in m.links_of(WEST):
            p.partition()  # the retry's connection will wait here
        lock.rollback()
    deadline = time.monotonic() + 60
    while _failures(m) < 1:
        assert time.monotonic() < deadline, "the fast attempt never failed"
        time.sleep(0.2)
    time.sleep(1)
    m.execute(WEST, "SELECT pg_stat_reset_subscription_stats(oid) FROM pg_subscription WHERE subname = %s", (sub,))
    m.heal()
    m.wait_for(WEST, "SELECT count(*) FROM items WHERE id > 7500000", 2000, timeout=120)
    assert m.execute(WEST, "SELECT tbl FROM fraiseql_repl.parked") == [("public.scratch",)]
    assert _failures(m) == 1, (f"the change failed {_failures(m)} times: the retry after the stats reset was merged "
                               "fast again (the count was back at the recorded 0)")
