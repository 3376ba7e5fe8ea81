"""Other shapes of a backfill that another region writes to (tests/redteam/test_backfill_fence.py
is the update case, and states the claim): eu's change waits, at east, for a row east's apply of
the backfill holds, so the link from eu to east is held until that apply commits; only its ends
(eu, east) may be fenced, the rest only for the hand-over.

* ``counters``: west's backfill increments 60,000 counter rows; eu increments one of them. The
  counter's shard merge (its own trigger) waits for the counter row west's apply holds (56 fenced
  probes over 16.1 s, 1 run, red team 19).
* FK child: west's backfill updates 60,000 parent rows; eu inserts a child of one. The merge's
  foreign-key check locks the parent ``FOR KEY SHARE``, which waits on the ``FOR UPDATE`` west's apply
  took on that parent, for the rest of the apply (18 to 23 fenced probes over 4.8 to 6.4 s, 2 of 2).

Each also checks that the writers converge with the agent's maintenance running. A minute or so
each, so CI skips them:

    FRAISEQL_LONG_PROBES=1 .venv/bin/python -m pytest -q -s tests/redteam/test_backfill_fence_shapes.py -p no:cacheprovider
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from drills.mesh import REGIONS, Mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.agent.maintenance import maintain
from replication.model import ConflictPolicy
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, EU, WEST, agent_conn, connect, long_probe, red_mesh
from tests.redteam.test_backfill_fence import ROWS, Prober, _report, assert_fenced_only_while_held, race

SCHEMA = (*APP_SCHEMA,
          "CREATE TABLE parents (id int PRIMARY KEY, v text)",
          "CREATE TABLE children (id int PRIMARY KEY, parent int REFERENCES parents (id) ON DELETE CASCADE, v text)")
# A minute or so each: FRAISEQL_LONG_PROBES=1 runs them.
pytestmark = long_probe

FK_POLICY = ConflictPolicy(tables=POLICY.tables, replicated=(*POLICY.replicated, "parents", "children"))


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with red_mesh(SCHEMA, FK_POLICY) as running:
        yield running


def _until(m: Mesh, sql: str, args: tuple, want: Any, timeout: float = 300, maintained: bool = False) -> float:
    """Until every writer answers ``want``; with ``maintained``, the agent's maintenance runs meanwhile
    (on connections of its own: the prober's are in use), as the agent's loop runs it between probes."""
    t0 = time.monotonic()
    maint = {r: agent_conn(m, r) for r in REGIONS} if maintained else {}
    while time.monotonic() - t0 < timeout:
        for c in maint.values():
            maintain(c, full=False)
        if all(m.execute(r, sql, args)[0][0] == want for r in REGIONS):
            return time.monotonic() - t0
        time.sleep(0.2)
    state = {r: (m.execute(r, sql, args)[0][0],
                 m.execute(r, "SELECT sqlstate, count(*) FROM fraiseql_repl.parked GROUP BY 1"),
                 m.execute(r, "SELECT subname, pid IS NOT NULL, extract(epoch FROM clock_timestamp() - last_msg_receipt_time)::int "
                              "FROM pg_stat_subscription WHERE relid IS NULL")) for r in REGIONS}
    raise AssertionError(f"did not replicate in {timeout} s: {sql} {args}: {state}")


@pytest.mark.parametrize("shape", ["counters", "fk_child"])
def test_backfill_shapes_fence_only_the_ends_of_the_held_link(m: Mesh, agents: Any, shape: str) -> None:
    lo, hi = 40_000_001, 40_000_000 + ROWS
    one: tuple[str, tuple[int, ...]]
    with Prober(agents) as pr:
        pr.all_writable_for(2.0)
        west = connect(m, WEST, APP_ROLE, autocommit=True)
        if shape == "counters":
            west.execute("INSERT INTO counters (id, label) SELECT g, 'c' FROM generate_series(%s::int, %s::int) g", (lo, hi))
            _until(m, "SELECT count(*) FROM counters WHERE id BETWEEN %s AND %s", (lo, hi), ROWS)
            bulk = ("UPDATE counters SET hits = hits + 1 WHERE id BETWEEN %s AND %s", (lo, hi))
            one = ("UPDATE counters SET hits = hits + 1 WHERE id = %s", (lo,))
            done = ("SELECT sum(hits) FROM counters WHERE id BETWEEN %s AND %s", (lo, hi), ROWS + 1)
        else:
            west.execute("INSERT INTO parents (id, v) SELECT g, 'p' FROM generate_series(%s::int, %s::int) g", (lo, hi))
            _until(m, "SELECT count(*) FROM parents WHERE id BETWEEN %s AND %s", (lo, hi), ROWS)
            bulk = ("UPDATE parents SET v = 'backfilled' WHERE id BETWEEN %s AND %s", (lo, hi))
            one = ("INSERT INTO children (id, parent, v) VALUES (%s, %s, 'eu')", (lo, lo))
            done = ("SELECT count(*) FROM parents WHERE id BETWEEN %s AND %s AND v = 'backfilled'", (lo, hi), ROWS)
        pr.all_writable_for(2.0)
        t_start, t_commit = race(m, west, bulk, one)
        diverged = ""
        try:
            replicated_s = _until(m, *done, timeout=60, maintained=True)
        except AssertionError as exc:  # reported with the fences
            diverged, replicated_s = str(exc), float("nan")
        fences = assert_fenced_only_while_held(pr, t_start, {EU, EAST}, shape)
    print(f"\n{shape}: " + _report(fences, t_commit - t_start, replicated_s) + (f"; DIVERGED: {diverged}" if diverged else ""))
    assert not diverged, f"{shape}: writers did not converge with the agent's maintenance running: {diverged}"
