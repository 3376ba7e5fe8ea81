"""Red team, round 14, verify rounds, claim 2: "a large transaction no longer makes verify rounds
list keys into the heartbeats' link". The guard (publish_key_details) reads the watermarks when the
KEYS are listed, a third of a round after the digests; the digests were taken earlier. A writer that
was still applying a large transaction when it took its digests, and has caught up by the keys
phase, passes the guard with digests that differ in every bucket the transaction touched: every
key of those buckets (the whole table: old rows too) is listed, by every writer.

At the defaults that is any large transaction whose apply lag at one writer is between the margin
(60 s) and the margin plus a third of a round (160 s): an ordinary slow apply of a backfill.

Here: real 3-writer mesh, real roles, agents probing (watermarks every 0.25 s). 20,000 rows
converged. An app-role session on us-west-2 holds one row FOR UPDATE (the ordinary row lock of
tests/redteam/test_backfill_fence.py), so us-west-2's apply of the next transaction
waits. us-east-1 commits one transaction: that row updated and 20,000 new rows. eu-west-1 applies it.
The round (by hand, agent role, as VerifySide: horizon = now - 1 s, 256 buckets): digests on all
three while us-west-2 is still waiting; then the app session commits, us-west-2 applies, its
watermarks pass the horizon; then the keys, then diverged_keys.

Seen (3 runs of 3): at the keys phase no writer behind the horizon, diverged_keys 0 everywhere,
all 256 buckets listed and every writer listed the whole 40,000-row table (120,000 rows into
digest_keys, each shipped to both peers over the heartbeats' link).

Fixed: publish_digests reads the watermarks itself. A writer that has yet to apply what was written
before the horizon takes its digests at an earlier horizon of the round grid (the horizon minus whole
periods) that every writer has applied, and so do its peers, which see the same watermarks; each
says its horizon, and only digests taken at the same one are compared. A previous release's agent
(no step) publishes nothing while behind. Both pass: 0 keys listed, the three horizons equal.
"""

from __future__ import annotations

import time

import pytest

from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, EU, PASSWORDS, WEST, Probing, agent_conn, connect, healthy, red_mesh, retry_refused

REGIONS3 = (EAST, WEST, EU)
BASE = 14_500_000
N = 20_000
RND = 888


@pytest.mark.parametrize("step", [6.0, None], ids=["this release's agent (a step)", "a previous release's agent (no step)"])
def test_digests_mid_apply_then_keys_after_catch_up_list_every_key(step: float | None) -> None:
    with red_mesh() as m:
        agents = {r: agent_conn(m, r) for r in REGIONS3}
        healthy(agents)
        probing = Probing(agents)
        app = None
        try:
            retry_refused(lambda: m.execute(EAST, f"INSERT INTO items (id, v) SELECT {BASE} + g, 'v' "
                                                  f"FROM generate_series(1, {N}) g"), "the first rows")
            for r in REGIONS3:
                m.wait_for(r, f"SELECT count(*) FROM items WHERE id > {BASE}", N, timeout=120)
            app = connect(m, WEST, APP_ROLE, password=PASSWORDS[APP_ROLE], autocommit=True)
            app.execute("BEGIN")
            app.execute("SELECT v FROM items WHERE id = %s FOR UPDATE", (BASE + 1,))

            def big() -> None:
                with m.connect(EAST) as c, c.transaction():
                    c.execute("UPDATE items SET v = 'big' WHERE id = %s", (BASE + 1,))
                    c.execute(f"INSERT INTO items (id, v) SELECT {BASE} + g, 'new' FROM generate_series({N + 1}, {2 * N}) g")
            retry_refused(big, "the large transaction")
            m.wait_for(EU, f"SELECT count(*) FROM items WHERE id > {BASE}", 2 * N, timeout=120)
            time.sleep(2)
            v = {r: agent_conn(m, r) for r in REGIONS3}
            for c in v.values():
                c.execute("SET statement_timeout = '120s'")
            horizon = m.execute(EAST, "SELECT extract(epoch FROM clock_timestamp())::float8 - 1")[0][0]
            for r in REGIONS3:
                # as VerifySide calls it (its step is the round's period: 6 s at the harness's scale)
                v[r].execute("SELECT fraiseql_repl.publish_digests(%s, to_timestamp(%s), 256, %s)", (RND, horizon, step))
            west_at_digest = m.execute(WEST, f"SELECT count(*) FROM items WHERE id > {BASE}")[0][0]
            app.execute("COMMIT")
            m.wait_for(WEST, f"SELECT count(*) FROM items WHERE id > {BASE}", 2 * N, timeout=120)
            time.sleep(3)
            behind = {r: m.execute(r, "SELECT count(*) FROM fraiseql_repl.applied WHERE at < to_timestamp(%s)",
                                   (horizon,))[0][0] for r in REGIONS3}
            listed = {r: v[r].execute("SELECT fraiseql_repl.publish_key_details(%s, 256, to_timestamp(%s))",
                                      (RND, horizon)).fetchone()[0] for r in REGIONS3}
            time.sleep(8)
            diverged = {r: v[r].execute("SELECT fraiseql_repl.diverged_count(%s, to_timestamp(%s))", (RND, horizon)).fetchone()[0]
                        for r in REGIONS3}
            buckets = m.execute(EAST, "SELECT node, count(DISTINCT bucket) FROM fraiseql_repl.digest_keys "
                                      "WHERE round = %s GROUP BY 1 ORDER BY 1", (RND,))
            marks = m.execute(EAST, "SELECT DISTINCT node, digest FROM fraiseql_repl.digests WHERE round = %s AND bucket = -1 "
                                    "ORDER BY 1", (RND,))
            print(f"\nthe horizon of the round {horizon:.2f}; the writers' digests: {marks}")
            print(f"{WEST} held {west_at_digest} rows at its digest (others {2 * N}); at the keys phase writers "
                  f"behind the horizon {behind}; keys listed {listed}; buckets {buckets}; diverged_keys {diverged}")
            assert west_at_digest == N, "us-west-2 had applied the transaction before its digest (inconclusive)"
            assert all(x == 0 for x in behind.values()), "a watermark was behind at the keys phase (inconclusive)"
            assert sum(listed.values()) < 0.05 * 2 * N, (
                f"a writer that took its digests mid-apply and caught up by the keys phase passed the guard: "
                f"keys listed {listed} of a {2 * N}-row table, with nothing different ({diverged})")
        finally:
            if app is not None:
                app.close()
            probing.close()
