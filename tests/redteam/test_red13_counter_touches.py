"""Red team round 13, counters (claim 2: the shards' sum is exactly the sum of what the local writes
meant; the refresh adds or removes nothing).

Attack: the refresh is an ordinary nested UPDATE of the application's table, so the application's
own (ordinary, install-accepted) BEFORE UPDATE triggers count it as an application write. The
schema (made by the owner before the install) counts the edits of a row in a second counter column:
``NEW.edits := OLD.edits + 1`` on every update. ``hits`` is shown clamped at bigint's maximum
(us-east-1 sets it near the maximum while us-west-2 concurrently adds 1000). The application takes
1 off hits on us-east-1 in one UPDATE: one edit. The refresh of hits (the row was at the bound) is a
second update of the row, and the application's trigger adds a second edit, recorded as a +1 shard
like any write (so the writers agree, on a count the application never made). A control row, not
clamped, gets the same UPDATE and one edit.

Observed (2 runs of 2): control edits +1, the clamped row's edits +2 on every writer (shards +2).

    .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/redteam/test_red13_counter_touches.py
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drills.mesh import REGIONS, Mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.model import ConflictPolicy, TablePolicy
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, WEST, connect, red_mesh

MAX = 9_223_372_036_854_775_807
SCHEMA = APP_SCHEMA + (
    "CREATE TABLE tally (id int PRIMARY KEY, hits bigint NOT NULL DEFAULT 0, edits bigint NOT NULL DEFAULT 0)",
    """CREATE FUNCTION tally_edits() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.edits := OLD.edits + 1;
    RETURN NEW;
END $$""",
    "CREATE TRIGGER tally_edits BEFORE UPDATE ON tally FOR EACH ROW EXECUTE FUNCTION tally_edits()",
)
R_POLICY = ConflictPolicy(tables=POLICY.tables + (TablePolicy("tally", "counter", ("hits", "edits")),),
                          replicated=POLICY.replicated)


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with red_mesh(SCHEMA, R_POLICY) as running:
        for r in REGIONS:
            running.set_fence(r, False)
        yield running


def _edits(m: Mesh) -> dict[str, list[tuple[int, int, int]]]:
    return {r: m.execute(r, "SELECT t.id, t.edits, (SELECT sum(amount) FROM fraiseql_repl.shards s WHERE "
                            "s.table_name = 'public.tally' AND s.col = 'edits' AND s.pk = jsonb_build_object('id', t.id))::bigint "
                            "FROM tally t ORDER BY t.id") for r in REGIONS}


def test_the_refresh_counts_as_an_edit(m: Mesh) -> None:
    east = connect(m, EAST, APP_ROLE, autocommit=True)
    west = connect(m, WEST, APP_ROLE, autocommit=True)
    east.execute("INSERT INTO tally (id, hits) VALUES (1, 0), (2, 0)")
    m.wait_applied()
    with m.paused():  # row 1 clamped, row 2 (the control) not
        east.execute("UPDATE tally SET hits = %s WHERE id IN (1, 2)", (MAX - 600,))
        west.execute("UPDATE tally SET hits = hits + 1000 WHERE id = 1")
        west.execute("UPDATE tally SET hits = hits + 10 WHERE id = 2")
    m.wait_applied()
    before = _edits(m)
    east.execute("UPDATE tally SET hits = hits - 1 WHERE id = 1")  # one application update: one edit
    east.execute("UPDATE tally SET hits = hits - 1 WHERE id = 2")
    east.close()
    west.close()
    m.wait_applied()
    after = _edits(m)
    print(f"\nedits (id, shown, shards) before: {before}\nafter: {after}")
    gained = {r: [a[1] - b[1] for a, b in zip(after[r], before[r])] for r in REGIONS}
    assert all(g == [1, 1] for g in gained.values()), f"edits gained per row (clamped, control): {gained}"
