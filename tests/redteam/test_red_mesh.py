"""Red team, claims A, B and C on a live 3-writer PostgreSQL 18 mesh: real local writes, real apply
workers, links frozen with the harness's proxies (``Mesh.paused`` / ``DelayProxy.partition``).
Every test FAILS while the claim it names is broken.

Run: .venv/bin/python -m pytest -q tests/redteam/test_red_mesh.py
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Optional

import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA
from replication.model import ConflictPolicy, TablePolicy
from replication.verify import repair, verify

EAST, WEST, EU = REGIONS
SCHEMA = APP_SCHEMA + (
    # a composite key with a timestamptz column (time series, events, bookings...)
    "CREATE TABLE readings (device int, at timestamptz, v text, PRIMARY KEY (device, at))",
)
POLICY = ConflictPolicy(tables=(TablePolicy("counters", "counter", ("hits",)),), replicated=("items", "readings"))
AT = "2026-01-01 00:00:00+00"


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with mesh(POLICY, SCHEMA, delays=False) as running:
        yield running


def where_key(device: int) -> str:
    return f"device = {device} AND at = '{AT}'"


def everywhere(m: Mesh, sql: str) -> dict[str, list[tuple[Any, ...]]]:
    return {r: m.execute(r, sql) for r in m.names}


# -- 1. purge_tombstones and a delete whose transaction outlives the purge margin ----------------

def test_a_row_deleted_in_a_long_transaction_stays_deleted_on_a_writer_that_purges(m: Mesh) -> None:
    # Claims A and C, with the agent's own functions and default margin (purge_tombstones(), 1 s).
    # us-west-2 deletes k in a transaction that goes on working; its agent's watermark, written
    # meanwhile, commits first. It used to claim "applied up to now", past the delete, so a writer
    # that purged as soon as allowed forgot the delete and took eu-west-1's concurrent edit back.
    k = 81001
    m.execute(WEST, "INSERT INTO items (id, v) VALUES (%s, 'one')", (k,))
    m.wait_converged(["items"], timeout=60)
    with m.connect(WEST) as s1:
        with s1.transaction():
            s1.execute("DELETE FROM items WHERE id = %s", (k,))
            row = s1.execute("SELECT max(origin_at) FROM fraiseql_repl.changes WHERE op = 'd' "
                             "AND pk = jsonb_build_object('id', %s::int)", (k,)).fetchone()
            assert row is not None
            deleted_at = row[0]
            time.sleep(1.5)
            m.execute(WEST, "SELECT fraiseql_repl.emit_watermark()")
            claimed = m.execute(WEST, "SELECT max(origin_at) FROM fraiseql_repl.changes WHERE op = 'w'")[0][0]
            # the watermark claims no later than the delete still in flight
            assert claimed <= deleted_at, (claimed, deleted_at)
            m.execute(EU, "SELECT fraiseql_repl.emit_watermark()")
            # the eu-west-1 -> us-east-1 link is slow for a moment; eu-west-1's application edits k
            m.links[(EAST, EU)].partition()
            m.execute(EU, "UPDATE items SET v = 'edited on eu-west-1' WHERE id = %s", (k,))
        # the delete commits
    try:
        m.wait_for(EAST, f"SELECT count(*) FROM items WHERE id = {k}", 0)
        m.wait_for(EU, f"SELECT count(*) FROM items WHERE id = {k}", 0)  # the delete removes eu's edit
        # us-east-1's agent purges what purge_tombstones says is safe
        purged = m.execute(EAST, "SELECT fraiseql_repl.purge_tombstones()")[0][0]
    finally:
        m.heal()
    m.wait_applied()
    left = everywhere(m, f"SELECT v FROM items WHERE id = {k}")
    assert all(v == [] for v in left.values()), {"purged on us-east-1": purged, "rows of the deleted key": left}


# -- 2. timestamptz in a key: the tombstone is looked up by the key's text, which is time-zone dependent

def test_an_update_concurrent_with_a_delete_does_not_resurrect_the_row(m: Mesh) -> None:
    # Claim C (and A). us-east-1's session runs in America/New_York (a driver's or a role's TimeZone
    # setting), the others in UTC. The same key, deleted on us-east-1 while us-west-2 updates it:
    # remove-wins for that incarnation, so the row must be gone everywhere, and verify --repair
    # must leave it gone.
    m.execute(EAST, f"INSERT INTO readings VALUES (1, '{AT}', 'a')")
    m.wait_converged(["readings"], timeout=60)
    with m.paused():
        with m.connect(EAST, options="-c TimeZone=America/New_York") as ny:
            ny.execute(f"DELETE FROM readings WHERE {where_key(1)}")
        m.execute(WEST, f"UPDATE readings SET v = 'b' WHERE {where_key(1)}")
    m.wait_applied()
    before = everywhere(m, f"SELECT v FROM readings WHERE {where_key(1)}")
    conns = {r: m.connect(r) for r in REGIONS}
    try:
        report = verify(conns, margin_s=0, tables=["public.readings"])
        actions = repair(conns, report)
    finally:
        for c in conns.values():
            c.close()
    m.wait_applied()
    after = everywhere(m, f"SELECT v FROM readings WHERE {where_key(1)}")
    assert all(v == [] for v in before.values()) and all(v == [] for v in after.values()), \
        {"before repair": before, "repair": actions, "after repair": after}


@pytest.mark.parametrize("east_tz", ["UTC", "America/New_York"])
def test_a_reinsert_made_after_the_delete_was_seen_survives(m: Mesh, east_tz: str) -> None:
    # Claims B and C. us-east-1 and eu-west-1 delete the key concurrently; us-west-2 sees us-east-1's
    # delete, then re-inserts the key (acknowledged). That re-insert is a new incarnation and must
    # survive eu-west-1's delete of the old one. It does when us-east-1's session is in UTC like the
    # others, and is lost everywhere when it is in America/New_York.
    dev = 2 if east_tz == "UTC" else 3
    m.execute(EAST, f"INSERT INTO readings VALUES ({dev}, '{AT}', 'a')")
    m.wait_converged(["readings"], timeout=60)
    with m.paused():
        with m.connect(EAST, options=f"-c TimeZone={east_tz}") as c:
            c.execute(f"DELETE FROM readings WHERE {where_key(dev)}")
        m.execute(EU, f"DELETE FROM readings WHERE {where_key(dev)}")
        m.links[(WEST, EAST)].heal()
        m.wait_for(WEST, f"SELECT count(*) FROM readings WHERE {where_key(dev)}", 0)
        m.execute(WEST, f"INSERT INTO readings VALUES ({dev}, '{AT}', 're-inserted on us-west-2')")
    m.wait_applied()
    left = everywhere(m, f"SELECT v FROM readings WHERE {where_key(dev)}")
    assert all(v == [("re-inserted on us-west-2",)] for v in left.values()), left


# -- 3. verify compares text renderings that depend on each writer's TimeZone ------------------------

@pytest.mark.parametrize("eu_tz", [None, "Europe/Paris"])
def test_verify_repair_does_not_undo_a_write_made_while_it_runs(m: Mesh, eu_tz: Optional[str]) -> None:
    # Claim B. eu-west-1's database runs in its local time zone (ALTER DATABASE ... SET timezone, or a
    # per-region parameter group). The rows are identical, but every row's image (to_jsonb, which
    # renders _repl_ts in the session's zone) differs, so verify reports it diverged "under the same
    # version" and repair restamps it: a new version with the winner's old contents. The
    # application's update made on us-west-2 between the verify and the repair (acknowledged, the
    # newest write, still on its way to us-east-1) is overwritten everywhere. With every writer in UTC, nothing is reported.
    k = 82001 if eu_tz is None else 82002
    m.execute(EAST, "INSERT INTO items (id, v) VALUES (%s, 'original')", (k,))
    m.wait_applied()
    if eu_tz:
        m.execute(EU, f"ALTER DATABASE postgres SET timezone = '{eu_tz}'")
    conns = {r: m.connect(r) for r in REGIONS}
    try:
        deadline = time.monotonic() + (5 if eu_tz is None else 60)
        while True:  # until the row is older than verify's horizon (now minus twice the replay lag)
            report = verify(conns, margin_s=0, tables=["public.items"])
            report.divergences = [d for d in report.divergences if d.pk == {"id": k}]  # this test's key only
            if report.divergences or eu_tz is None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        m.links[(EAST, WEST)].partition()  # the update is still on its way to us-east-1 when repair runs
        m.execute(WEST, "UPDATE items SET v = 'acknowledged update' WHERE id = %s", (k,))
        actions = repair(conns, report)
    finally:
        m.heal()
        for c in conns.values():
            c.close()
        m.execute(EU, "ALTER DATABASE postgres RESET timezone")
    m.wait_applied()
    left = everywhere(m, f"SELECT v FROM items WHERE id = {k}")
    assert all(v == [("acknowledged update",)] for v in left.values()), {"repair": actions, "rows": left}
