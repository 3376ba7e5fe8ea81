"""Red team 19, claim 1: convergence for a counter table ("every writer ends equal ... nothing
acknowledged is lost") with FQ006 parking.

Seen first in tests/redteam/test_red19_backfill_variants.py (counters: east ended at 60,000, west and
eu at 60,001, nothing parked). Here, deterministic and small: eu increments counter c in a
transaction that began before west's increment of c; east's apply of west's transaction holds c
(its next row is held by east's application). At east, eu's row image parks (FQ006, row held by an
apply) but eu's shard merges at once, and the shard's refresh (``UPDATE counters SET hits = (SELECT
sum(...) FROM shards ...)``) waits on c. When west's apply commits, the refresh's re-check
(READ COMMITTED) recomputes the row with the subquery as of its own snapshot, which does not have
west's shard: hits loses west's increment. The parked image, merged later by the agent's retry, is
older than the row (west's), so it returns 'lww_kept_local' before the counter is recomputed. Before
FQ006 the row image waited in place and the shard's refresh ran after west's commit.

A regression test: FQ006 parking (5db9266, a merge that met a row another link's apply held
parked the change) was withdrawn the same day for this and the other red team 19 findings; it
failed 3 of 3 runs with it and passes without (replication/README.md, "Data links").

    .venv/bin/python -m pytest -q -s tests/redteam/test_red19_counter_parked_lost.py -p no:cacheprovider
"""

from __future__ import annotations

import time

from drills.mesh import REGIONS, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.agent.maintenance import maintain
from tests.redteam.harness import EAST, EU, WEST, wait_until


def test_a_counter_increment_survives_an_fq006_park() -> None:
    with mesh(POLICY, APP_SCHEMA, delays=False) as pm:  # writable without agents
        c, z = 71, 72
        pm.execute(WEST, "INSERT INTO counters (id, label) VALUES (%s, 'c')", (c,))
        pm.execute(WEST, "INSERT INTO items (id, v) VALUES (%s, 'z')", (z,))
        wait_until("seed rows", lambda: all(pm.execute(r, "SELECT count(*) FROM items WHERE id = %s", (z,)) == [(1,)]
                                       and pm.execute(r, "SELECT count(*) FROM counters WHERE id = %s", (c,)) == [(1,)]
                                       for r in REGIONS))
        holder = pm.connect(EAST)
        holder.autocommit = False
        holder.execute("SELECT 1 FROM items WHERE id = %s FOR UPDATE", (z,))
        eu = pm.connect(EU)
        eu.autocommit = False
        eu.execute("UPDATE counters SET hits = hits + 1 WHERE id = %s", (c,))  # eu's increment, first
        with pm.connect(WEST) as w:
            w.autocommit = False
            w.execute("UPDATE counters SET hits = hits + 1 WHERE id = %s", (c,))
            w.execute("UPDATE items SET v = 'west' WHERE id = %s", (z,))
            w.commit()
        time.sleep(1.0)  # at east, west's apply holds c and waits on z
        eu.commit()
        eu.close()
        time.sleep(2.0)  # at east, eu's row image parks; its shard's refresh waits on c
        holder.rollback()
        holder.close()
        wait_until("west's transaction applied at east", lambda: pm.execute(EAST, "SELECT v FROM items WHERE id = %s", (z,)) == [("west",)])
        time.sleep(1.0)
        runs = []
        with pm.connect(EAST) as conn:
            conn.autocommit = True
            for _ in range(3):
                k = maintain(conn, full=False)
                runs.append((k.merged_from_parked, k.parked, k.errors))
        time.sleep(2.0)
        hits = {r: pm.execute(r, "SELECT hits FROM counters WHERE id = %s", (c,)) for r in REGIONS}
        shards = {r: pm.execute(r, "SELECT node, amount FROM fraiseql_repl.shards WHERE table_name = 'public.counters' "
                                   "AND pk = %s::jsonb ORDER BY node", (f'{{"id": {c}}}',)) for r in REGIONS}
        print(f"\nmaintain at east (merged, parked, errors): {runs}; hits {hits}; shards {shards}")
        assert hits == {r: [(2,)] for r in REGIONS}, f"a counter increment lost: hits {hits}, shards {shards}"
