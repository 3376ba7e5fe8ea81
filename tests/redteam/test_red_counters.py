"""Red team, claims A and B for 'counter' tables on a live 3-writer PostgreSQL 18 mesh: a writer that
has purged a key's tombstone, and verify --repair run while a change is on its way.
The test FAILS while the claim is broken.

Run: .venv/bin/python -m pytest -q tests/redteam/test_red_counters.py
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA
from replication.model import ConflictPolicy, TablePolicy
from replication.verify import repair, verify

EAST, WEST, EU = REGIONS
POLICY = ConflictPolicy(tables=(TablePolicy("counters", "counter", ("hits",)),), replicated=("items",))


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with mesh(POLICY, APP_SCHEMA, delays=False) as running:
        yield running


def settle(m: Mesh, timeout: float = 60.0) -> None:
    """Every writer has applied everything each origin committed before now. The watermark is emitted
    again until it arrives, as the agent does every probe: one emitted while some write transaction
    was still open claims no later than that transaction's start (emit_watermark), and would never
    reach ``at``."""
    for o in m.names:
        at = m.execute(o, "SELECT clock_timestamp()::text")[0][0]
        deadline = time.monotonic() + timeout
        pending = [r for r in m.names if r != o]
        while pending:
            m.execute(o, "SELECT fraiseql_repl.emit_watermark()")
            time.sleep(0.05)
            pending = [r for r in pending if not m.execute(
                r, f"SELECT coalesce(max(at) >= '{at}', false) FROM fraiseql_repl.applied WHERE origin = '{o}'")[0][0]]
            assert not pending or time.monotonic() < deadline, f"{pending} never applied {o}'s changes up to {at}"


def test_increments_of_a_deleted_incarnation_stay_deleted_after_verify_repair(m: Mesh) -> None:
    # Claims A and B ("counters sum every live incarnation"). Key 90: us-west-2 adds 3, us-east-1
    # deletes the row; us-east-1 (only) purges the tombstone, then inserts the key again with 1.
    # Every writer shows 1. Later, eu-west-1 relabels the row and verify --repair runs before the
    # change has reached everyone: repair re-sends every writer's own shards of the key, dead ones
    # included, and us-east-1, which no longer has the tombstone, counts the dead +3 again.
    m.execute(EAST, "INSERT INTO counters (id, label, hits) VALUES (90, 'first', 0)")
    settle(m)
    m.execute(WEST, "UPDATE counters SET hits = hits + 3 WHERE id = 90")
    settle(m)
    m.execute(EAST, "DELETE FROM counters WHERE id = 90")
    settle(m)
    deadline = time.monotonic() + 60
    while not m.execute(EAST, "SELECT fraiseql_repl.purge_tombstones(interval '0')")[0][0]:
        assert time.monotonic() < deadline, "the tombstone never became safe to purge"
        settle(m)
    m.execute(EAST, "INSERT INTO counters (id, label, hits) VALUES (90, 'second', 1)")
    settle(m)
    before = {r: m.execute(r, "SELECT hits FROM counters WHERE id = 90") for r in REGIONS}
    with m.paused():
        m.execute(EU, "UPDATE counters SET label = 'relabelled' WHERE id = 90")
        conns = {r: m.connect(r) for r in REGIONS}
        try:
            actions = repair(conns, verify(conns, margin_s=0, tables=["public.counters"]))
        finally:
            for c in conns.values():
                c.close()
    settle(m)
    after = {r: m.execute(r, "SELECT hits FROM counters WHERE id = 90") for r in REGIONS}
    assert all(v == [(1,)] for v in before.values()) and all(v == [(1,)] for v in after.values()), \
        {"before": before, "repair": actions, "after": after}
