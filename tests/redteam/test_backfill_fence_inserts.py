"""A bulk load that another region inserts into (tests/redteam/test_backfill_fence.py is the update
case, and states the claim): the backfill INSERTs new keys, and eu's application inserts one of the
same keys (the first) concurrently. At east, west's apply has inserted the key (uncommitted) when
eu's insert arrives: the merge's ``INSERT ... ON CONFLICT`` waits on that uncommitted insert for the
rest of west's apply, and east's link from eu is held until the apply commits. Only that link's
ends (eu, east) may be fenced meanwhile, the rest only for the hand-over (red team 19: eu fenced, 18
probes over 4.7 s; on the set table ``tags``, 22 to 25 over 5.9 to 6.8 s; 3 of 3 runs each).
``items`` with a key the backfill does not have is the control: nobody is fenced.

A minute or so each, so CI skips them:

    FRAISEQL_LONG_PROBES=1 .venv/bin/python -m pytest -q -s tests/redteam/test_backfill_fence_inserts.py -p no:cacheprovider
"""

from __future__ import annotations

from typing import Any

import pytest

from drills.mesh import Mesh
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, EU, WEST, connect, long_probe
from tests.redteam.test_backfill_fence import ROWS, Prober, _report, assert_fenced_only_while_held, count_everywhere, race

BASE = 30_000_000

pytestmark = long_probe


@pytest.mark.parametrize("table,same_key", [("items", False), ("items", True), ("tags", True)])
def test_an_insert_backfill_fences_only_the_ends_of_the_held_link(m: Mesh, agents: Any, table: str,
                                                                  same_key: bool) -> None:
    """same_key=False is the control: eu inserts a key the backfill does not have (no fence expected)."""
    base = BASE + (0 if table == "items" else 1_000_000) + (0 if same_key else 2_000_000)
    lo, hi = base + 1, base + ROWS
    if table == "items":
        bulk = ("INSERT INTO items (id, v) SELECT g, 'bulk' FROM generate_series(%s::int, %s::int) g", (lo, hi))
        one = ("INSERT INTO items (id, v) VALUES (%s, 'eu')", (lo if same_key else hi + 1,))
        check = ("SELECT count(*) FROM items WHERE id BETWEEN %s AND %s", (lo, hi))
    else:  # a set table: both regions add the same tag
        bulk = ("INSERT INTO tags (item, tag) SELECT g, 'bulk' FROM generate_series(%s::int, %s::int) g", (lo, hi))
        one = ("INSERT INTO tags (item, tag) VALUES (%s, 'bulk')", (lo,))
        check = ("SELECT count(*) FROM tags WHERE item BETWEEN %s AND %s AND tag = 'bulk'", (lo, hi))
    with Prober(agents) as pr:
        pr.all_writable_for(2.0)
        west = connect(m, WEST, APP_ROLE, autocommit=True)
        t_start, t_commit = race(m, west, bulk, one)  # eu's insert open while west's bulk load commits
        replicated_s = count_everywhere(m, check[0], check[1], ROWS)
        fences = assert_fenced_only_while_held(pr, t_start, {EU, EAST} if same_key else set(), table)
    print(f"\n{table} same_key={same_key}: " + _report(fences, t_commit - t_start, replicated_s))
