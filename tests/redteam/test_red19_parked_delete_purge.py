"""Red team 19, claim 1: "a deleted row never comes back ... whenever each writer purges its
tombstones", with FQ006 parking.

An FQ006-parked *delete* is new: before FQ006 no delete of an existing row waited parked. East's
watermark still says it has applied eu past that delete (merge_watermark does not look at parked
changes), so eu and west purge the tombstone (purge_tombstones only spares keys parked on the
purging writer). East's application, which holds the row meanwhile (the agent's retry then keeps
the delete parked, 55P03), updates it: the update reaches eu and west, which no longer have the
tombstone, and the deleted row comes back there; east's retry then deletes it at east.

Driven by hand as the agents would (emit_watermark between probes, maintain(full=True)).

A regression test: FQ006 parking (5db9266, a merge that met a row another link's apply held
parked the change) was withdrawn the same day for this and the other red team 19 findings; it
failed 3 of 3 runs with it and passes without (replication/README.md, "Data links").

    .venv/bin/python -m pytest -q -s tests/redteam/test_red19_parked_delete_purge.py -p no:cacheprovider
"""

from __future__ import annotations

import time

from drills.mesh import REGIONS, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.agent.maintenance import maintain
from tests.redteam.harness import EAST, EU, WEST, wait_until


def test_a_parked_delete_is_not_purged_away() -> None:
    with mesh(POLICY, APP_SCHEMA, delays=False) as pm:  # writable without agents
        r, z = 81, 82
        pm.execute(WEST, "INSERT INTO items (id, v) VALUES (%s, 'r'), (%s, 'z')", (r, z))
        wait_until("seed rows", lambda: all(pm.execute(x, "SELECT count(*) FROM items WHERE id = %s", (z,)) == [(1,)]
                                       for x in REGIONS))
        holder = pm.connect(EAST)
        holder.autocommit = False
        holder.execute("SELECT 1 FROM items WHERE id = %s FOR UPDATE", (z,))
        with pm.connect(WEST) as w:  # east's apply of this holds r
            w.autocommit = False
            w.execute("UPDATE items SET v = 'west' WHERE id = %s", (r,))
            w.execute("UPDATE items SET v = 'west' WHERE id = %s", (z,))
            w.commit()
        wait_until("eu has west's update", lambda: pm.execute(EU, "SELECT v FROM items WHERE id = %s", (r,)) == [("west",)])
        pm.execute(EU, "DELETE FROM items WHERE id = %s", (r,))
        parked = "SELECT count(*) FROM fraiseql_repl.parked WHERE sqlstate = 'FQ006' AND op = 'd'"
        try:  # (a code where it waits in place instead: the scenario goes on, and must end with no row)
            wait_until("eu's delete parks at east", lambda: pm.execute(EAST, parked) == [(1,)], timeout=10)
        except AssertionError:
            print("\neu's delete did not park at east")
        app = pm.connect(EAST)  # east's application: takes r as soon as west's apply lets it go
        app.autocommit = False
        holder.rollback()
        holder.close()
        app.execute("SELECT v FROM items WHERE id = %s FOR UPDATE", (r,))
        time.sleep(1.5)  # past purge_tombstones' 1 s margin
        conns = {x: pm.connect(x) for x in REGIONS}
        for c in conns.values():
            c.autocommit = True
        runs = []
        for _ in range(4):  # the agents: a watermark every probe, a full maintenance run
            for x in REGIONS:
                conns[x].execute("SELECT fraiseql_repl.emit_watermark()")
            time.sleep(1.0)
            for x in REGIONS:
                k = maintain(conns[x], full=True)
                runs.append((x, k.merged_from_parked, k.tombstones_purged, k.parked))
        tombs = {x: pm.execute(x, "SELECT count(*) FROM fraiseql_repl.tombstones WHERE table_name = 'public.items' "
                                  "AND pk = %s::jsonb", (f'{{"id": {r}}}',))[0][0] for x in REGIONS}
        app.execute("UPDATE items SET v = 'east' WHERE id = %s", (r,))  # the application's update of its row
        app.commit()
        app.close()
        time.sleep(2.0)
        for _ in range(2):
            for x in REGIONS:
                maintain(conns[x], full=False)
            time.sleep(1.0)
        rows = {x: pm.execute(x, "SELECT v FROM items WHERE id = %s", (r,)) for x in REGIONS}
        print(f"\nmaintenance runs (region, merged, purged, parked): {runs}\ntombstones of r before east's update {tombs}; "
              f"r at the end {rows}")
        assert rows == {x: [] for x in REGIONS}, f"a deleted row came back: {rows} (tombstones were {tombs})"
