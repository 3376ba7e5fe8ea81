"""Red team 19, claim 1: "a key's changes merge in the order they came (an app table must not log a
spurious conflict or keep an older version)".

Attack: the FQ006 park of a key's first change A is itself uncommitted (A's apply transaction goes on,
here it waits on a row east's application holds), so the next change B of the key, arriving on
another link, does not see it in ``fraiseql_repl.parked``, finds the row free and merges ahead of A.
At east, ``accounts`` (app) then logs a conflict for B (its base, A, is not there), and A, merged
later by the agent's retry, is a fast-forward of the old version: east keeps A's older balance while
west and eu have B's, with a spurious conflict logged. Before FQ006 A waited in place and merged first.

1. East's application holds z; west's transaction (a = 1, then z) stops at east holding a.
2. East's application holds z2; eu's transaction (a = 2 after west's, then z2): at east A parks
   (a held by west's apply) inside eu's apply transaction, which then waits on z2.
3. West's transaction commits at east (z let go). West, which has eu's transaction, sets a = 3 (B, a
   fast-forward of A). At east B sees no parked change of a (A's park is uncommitted) and merges.
4. z2 let go: A's park commits; the agent's maintenance merges A.

A regression test: FQ006 parking (5db9266, a merge that met a row another link's apply held
parked the change) was withdrawn the same day for this and the other red team 19 findings; it
failed 3 of 3 runs with it and passes without (replication/README.md, "Data links").

    .venv/bin/python -m pytest -q -s tests/redteam/test_red19_park_uncommitted_order.py -p no:cacheprovider
"""

from __future__ import annotations

import time

from drills.mesh import REGIONS, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.agent.maintenance import maintain
from tests.redteam.harness import EAST, EU, WEST, wait_until


def test_a_change_behind_an_uncommitted_park_merges_first() -> None:
    with mesh(POLICY, APP_SCHEMA, delays=False) as pm:  # writable without agents
        a, z, z2 = 91, 92, 93
        pm.execute(WEST, "INSERT INTO accounts (id, balance) VALUES (%s, 0)", (a,))
        pm.execute(WEST, "INSERT INTO items (id, v) VALUES (%s, 'z'), (%s, 'z2')", (z, z2))
        wait_until("seed rows", lambda: all(pm.execute(r, "SELECT count(*) FROM items WHERE id = %s", (z2,)) == [(1,)]
                                       and pm.execute(r, "SELECT count(*) FROM accounts WHERE id = %s", (a,)) == [(1,)]
                                       for r in REGIONS))
        holder = pm.connect(EAST)
        holder.autocommit = False
        holder.execute("SELECT 1 FROM items WHERE id = %s FOR UPDATE", (z,))
        holder2 = pm.connect(EAST)
        holder2.autocommit = False
        holder2.execute("SELECT 1 FROM items WHERE id = %s FOR UPDATE", (z2,))
        with pm.connect(WEST) as w:
            w.autocommit = False
            w.execute("UPDATE accounts SET balance = 1 WHERE id = %s", (a,))
            w.execute("UPDATE items SET v = 'west' WHERE id = %s", (z,))
            w.commit()
        wait_until("eu has west's version", lambda: pm.execute(EU, "SELECT balance FROM accounts WHERE id = %s", (a,)) == [(1,)])
        with pm.connect(EU) as e:  # A, then z2
            e.autocommit = False
            e.execute("UPDATE accounts SET balance = 2 WHERE id = %s", (a,))
            e.execute("UPDATE items SET v = 'eu' WHERE id = %s", (z2,))
            e.commit()
        time.sleep(2.0)  # at east, A parks (its 200 ms) inside eu's apply, which then waits on z2
        holder.rollback()  # west's transaction commits at east
        holder.close()
        wait_until("west's transaction applied at east", lambda: pm.execute(EAST, "SELECT v FROM items WHERE id = %s", (z,)) == [("west",)])
        wait_until("west has eu's version", lambda: pm.execute(WEST, "SELECT balance FROM accounts WHERE id = %s", (a,)) == [(2,)])
        pm.execute(WEST, "UPDATE accounts SET balance = 3 WHERE id = %s", (a,))  # B: based on A
        time.sleep(2.0)  # B reaches east
        holder2.rollback()  # eu's apply at east commits, with A parked
        holder2.close()
        wait_until("eu's transaction applied at east", lambda: pm.execute(EAST, "SELECT v FROM items WHERE id = %s", (z2,)) == [("eu",)])
        runs = []
        with pm.connect(EAST) as c:
            c.autocommit = True
            for _ in range(3):
                k = maintain(c, full=False)
                runs.append((k.merged_from_parked, k.parked, k.errors))
        time.sleep(1.0)
        bal = {r: pm.execute(r, "SELECT balance FROM accounts WHERE id = %s", (a,)) for r in REGIONS}
        conflicts = {r: pm.execute(r, "SELECT count(*) FROM fraiseql_repl.conflicts WHERE table_name = 'public.accounts'")[0][0]
                     for r in REGIONS}
        print(f"\nmaintain at east (merged, parked, errors): {runs}; balance {bal}; conflicts logged {conflicts}")
        assert bal == {r: [(3,)] for r in REGIONS} and not any(conflicts.values()), (
            f"a's changes merged out of order at east: balance {bal}, conflicts {conflicts}")
