"""What one large transaction costs a subscriber's apply worker in memory (issue 19, item 5: a bulk
load of 1,000,000 rows must not take a region down).

Found: every merged row runs in a subtransaction (receive_change's exception block), and each
subtransaction gets its own CurTransactionContext (an 8 kB first block). A statement on a table with
transition-table triggers (the per-statement change capture) allocates its transition capture state
there, so the context is not empty when the subtransaction commits, and it lives until the apply
transaction ends: about 8 kB per merged row, 6.9 GB past 1,000,000 rows. The first test shows the
cause on a bare server. The second is the fix on a live writer: past its first 1,000 changes a
transaction is merged without a subtransaction per change (fraiseql_repl.merge_carefully), so the
apply worker keeps a few hundred bytes per row (8.5 kB before).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.pg import cluster
from drills.sample import APP_SCHEMA, POLICY
from replication.sql import subscription_name

EAST, WEST = REGIONS[0], REGIONS[1]
ROWS = 20_000


def _rss_kb(pid: int) -> int:
    match = re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read())
    return int(match[1]) if match else 0


def _kb_per_row_in_subtransactions(transition_trigger: bool) -> float:
    with cluster(["n1"]) as nodes, nodes["n1"].connect() as c:
        c.autocommit = True
        c.execute("CREATE TABLE target (i int PRIMARY KEY)")
        c.execute("CREATE TABLE incoming (i int)")
        c.execute("CREATE FUNCTION merge_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                  "BEGIN INSERT INTO target VALUES (NEW.i); EXCEPTION WHEN OTHERS THEN NULL; END; "
                  "RETURN NULL; END $$")
        c.execute("CREATE TRIGGER merge_one BEFORE INSERT ON incoming FOR EACH ROW EXECUTE FUNCTION merge_one()")
        if transition_trigger:
            c.execute("CREATE FUNCTION capture() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$")
            c.execute("CREATE TRIGGER capture AFTER INSERT ON target REFERENCING NEW TABLE AS new_rows "
                      "FOR EACH STATEMENT EXECUTE FUNCTION capture()")
        (pid,) = c.execute("SELECT pg_backend_pid()").fetchone()  # type: ignore[misc]
        c.execute("BEGIN")
        before = _rss_kb(pid)
        c.execute(f"INSERT INTO incoming SELECT generate_series(1, {ROWS})")
        grown = _rss_kb(pid) - before
        c.execute("COMMIT")
        return grown / ROWS


def test_a_subtransaction_per_row_keeps_8kb_per_row_where_the_target_has_a_transition_table_trigger() -> None:
    # Memory, not time: deterministic on any load. Without the trigger the subtransactions cost
    # (almost) nothing; with it, each keeps its context's first block until the transaction ends.
    assert _kb_per_row_in_subtransactions(transition_trigger=False) < 1
    assert _kb_per_row_in_subtransactions(transition_trigger=True) > 6


@pytest.fixture(scope="module")
def two() -> Any:
    with mesh(POLICY, APP_SCHEMA, regions=(EAST, WEST), delays=False) as running:
        yield running


def test_applying_one_large_transaction_costs_the_apply_worker_little_memory_per_row(two: Mesh) -> None:
    data = subscription_name(two.nodes[WEST], two.nodes[EAST])
    apply_pid = two.execute(WEST, "SELECT pid FROM pg_stat_subscription WHERE subname = %s AND pid IS NOT NULL "
                                  "AND relid IS NULL", (data,))
    assert len(apply_pid) == 1, apply_pid
    pid = apply_pid[0][0]
    # A worker's first transaction is merged carefully (it has no apply error count on record yet).
    two.execute(EAST, "INSERT INTO items (id, v) VALUES (6_999_999, 'first')")
    two.wait_for(WEST, "SELECT count(*) FROM items WHERE id = 6999999", 1)
    base, peak, done = _rss_kb(pid), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kb(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        two.execute(EAST, f"INSERT INTO items (id, v) SELECT 7_000_000 + g, 'bulk' FROM generate_series(1, {ROWS}) g")
        two.wait_for(WEST, "SELECT count(*) FROM items WHERE id > 7000000", ROWS, timeout=300)
    finally:
        done.set()
        sampler.join()
    per_row = (peak[0] - base) / ROWS
    print(f"\napply worker: {base} kB before, peak {peak[0]} kB: {per_row:.2f} kB per merged row")
    assert per_row < 1, f"the apply worker kept {per_row:.2f} kB per merged row (a 1,000,000-row load: {per_row:.1f} GB)"


def _apply_errors(m: Mesh, region: str, sub: str) -> int:
    return int(m.execute(region, "SELECT coalesce(apply_error_count, 0) FROM pg_stat_subscription_stats "
                                 "WHERE subname = %s", (sub,))[0][0])


def test_a_change_that_fails_past_the_careful_start_parks_it_after_one_retry_and_the_rest_lands(two: Mesh) -> None:
    data = subscription_name(two.nodes[WEST], two.nodes[EAST])
    with two.connect(EAST) as c, c.transaction():
        # A table only this writer replicates: its change cannot be merged on the other.
        c.execute("SET LOCAL fraiseql_repl.schema_apply = on")
        c.execute("SELECT fraiseql_repl.install_table('scratch', 'lww'); SELECT fraiseql_repl.install_dispatcher()")
    two.execute(EAST, "INSERT INTO items (id, v) VALUES (7_900_000, 'first')")
    two.wait_for(WEST, "SELECT count(*) FROM items WHERE id = 7900000", 1)
    errors_before = _apply_errors(two, WEST, data)
    with two.connect(EAST) as c, c.transaction():
        c.execute("INSERT INTO items (id, v) SELECT 7_900_000 + g, 'bulk' FROM generate_series(1, 2500) g")
        c.execute("INSERT INTO scratch (id) VALUES (1)")
        c.execute("INSERT INTO items (id, v) SELECT 7_900_000 + g, 'bulk' FROM generate_series(2501, 3000) g")
    two.wait_for(WEST, "SELECT count(*) FROM items WHERE id > 7900000", 3000, timeout=120)
    parked = two.execute(WEST, "SELECT tbl FROM fraiseql_repl.parked")
    assert parked == [("public.scratch",)], parked
    # One failed attempt (merged without subtransactions past the first 1,000 changes), then the
    # careful one; the next transaction merges as usual.
    two.execute(EAST, "INSERT INTO items (id, v) VALUES (7_903_001, 'after')")
    two.wait_for(WEST, "SELECT count(*) FROM items WHERE id = 7903001", 1)
    assert _apply_errors(two, WEST, data) == errors_before + 1
