"""Red team, round 15, verify rounds, claim 1 ("no flood"): one verify round makes each writer list
at most about ``max_keys`` keys into digest_keys (the heartbeats' link).

The cap's estimate is each differing bucket's row count in the digests, which count only the rows
whose version is not newer than the horizon. bucket_keys then lists EVERY row of each chosen bucket
as it is at the keys phase (no horizon filter), plus its tombstones. So a bucket that held 8 rows
at the horizon and 200 rows at the keys phase costs 8 in the estimate and lists 200.

Attack (only the application role, ordinary writes): a real 3-writer mesh, real roles, agents probing
(fresh watermarks). 2,000 rows converged. After the round's horizon H:
- an app session on us-west-2 holds one row FOR UPDATE (the ordinary row lock of
  test_red14_verify_caught_up_flood.py), so us-west-2's apply of us-east-1's next transaction waits;
- an app session on us-east-1 commits ONE transaction: 300 old rows updated, 50,000 new rows inserted.
Every transaction began after H, so every watermark passes H: the digests are taken at H itself. The
round is then run by hand through the agent role exactly as VerifySide runs it (publish_digests with
a step, 256 buckets; then publish_key_details with max_keys 1,000; then diverged_count), with
us-west-2 released (and caught up) between the digests and the keys. us-west-2's digests still had
the 300 old versions, its peers' did not: ~177 buckets differ, estimated at ~8 rows each. Those
buckets now hold ~200 rows each (the new rows, newer than the horizon): every writer lists them.

The same happens without the lock whenever a writer is still applying a transaction that began after
the horizon when it takes its digests (a large transaction committed just before the round starts),
and the rows need not be in that transaction: any rows inserted into a differing bucket between the
horizon and the keys phase (60 + 100 s at the defaults) are listed on top of the estimate.

Seen (2 runs of 2, 30,000 new rows): same horizon on all three, no watermark behind; digests 2,000
rows at the horizon on us-west-2, 1,700 on its peers; each writer listed 13,996 keys (112 buckets,
60 skipped), 14 x max_keys, 42,324 rows into digest_keys, none of them different; diverged_count did not
finish within 20 s on any writer; oldest peer heartbeat 0.9-0.98 s after the listing (stale_after 1 s).
A first run with 50,000 new rows: diverged_count hit the agent's own 120 s statement_timeout, so
the flooding round also reports no DivergedRows at all.

Fixed: publish_key_details counts each differing bucket as its listing would send it (its rows and
tombstones at the keys step, rows newer than the horizon too) before choosing the buckets under the
cap. Seen (1 run): 918 keys listed per writer (7 buckets, 170 skipped), max_keys 1,000; oldest peer
heartbeat 0.29 s; diverged_count 0.
"""

from __future__ import annotations

import threading
import time

from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, EU, PASSWORDS, WEST, Probing, agent_conn, connect, healthy, red_mesh, retry_refused

REGIONS3 = (EAST, WEST, EU)
BASE = 15_100_000
N_OLD = 2_000
N_UPD = 300
N_NEW = 30_000
BUCKETS = 256
MAX_KEYS = 1_000
RND = 991


class _Background:
    """The agents probing (fresh watermarks), and the oldest peer heartbeat once ``watching`` is set."""

    def __init__(self, m, agents) -> None:
        self.m = m
        self.probing = Probing(agents)
        self.stop, self.watching = threading.Event(), threading.Event()
        self.hb_age = {r: 0.0 for r in REGIONS3}
        self.threads = [threading.Thread(target=self._watch, daemon=True)]
        for th in self.threads:
            th.start()

    def _watch(self) -> None:
        conns = {r: self.m.connect(r) for r in REGIONS3}
        while not self.stop.is_set():
            if self.watching.is_set():
                for r, c in conns.items():
                    age = c.execute("SELECT extract(epoch FROM max(clock_timestamp() - sent_at))::float8 "
                                    "FROM fraiseql_repl.heartbeats WHERE node <> fraiseql_repl.node_name()").fetchone()[0]
                    self.hb_age[r] = max(self.hb_age[r], age or 0.0)
            time.sleep(0.2)
        for c in conns.values():
            c.close()

    def close(self) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(timeout=10)
        self.probing.close()


def _counts(v, horizon: float) -> dict:
    out = {}
    for r in REGIONS3:
        t = time.monotonic()
        try:
            v[r].execute("SET statement_timeout = '20s'")
            out[r] = v[r].execute("SELECT fraiseql_repl.diverged_count(%s, to_timestamp(%s))",
                                  (RND, horizon)).fetchone()[0]
        except Exception as exc:  # noqa: BLE001
            out[r] = f"{type(exc).__name__} after {time.monotonic() - t:.0f} s"
    return out


def test_rows_newer_than_the_horizon_are_listed_past_the_cap() -> None:
    with red_mesh() as m:
        agents = {r: agent_conn(m, r) for r in REGIONS3}
        healthy(agents)
        bg = _Background(m, agents)
        hb_age = bg.hb_age
        hold = east = None
        try:
            retry_refused(lambda: m.execute(EAST, f"INSERT INTO items (id, v) SELECT {BASE} + g, 'old' "
                                                  f"FROM generate_series(1, {N_OLD}) g"), "the old rows")
            for r in REGIONS3:
                m.wait_for(r, f"SELECT count(*) FROM items WHERE id > {BASE}", N_OLD, timeout=60)
            time.sleep(2)
            horizon = m.execute(EAST, "SELECT extract(epoch FROM clock_timestamp())::float8")[0][0]
            time.sleep(0.3)
            # every transaction below begins after the horizon
            hold = connect(m, WEST, APP_ROLE, password=PASSWORDS[APP_ROLE], autocommit=True)
            hold.execute("BEGIN")
            hold.execute("SELECT v FROM items WHERE id = %s FOR UPDATE", (BASE + 1,))
            east = connect(m, EAST, APP_ROLE, password=PASSWORDS[APP_ROLE], autocommit=True)
            t = time.monotonic()

            def flood() -> None:
                with east.transaction():
                    east.execute(f"UPDATE items SET v = 'upd' WHERE id > {BASE} AND id <= {BASE + N_UPD}")
                    east.execute(f"INSERT INTO items (id, v) SELECT {BASE} + g, 'new' "
                                 f"FROM generate_series({N_OLD + 1}, {N_OLD + N_NEW}) g")
            retry_refused(flood, "the application's transaction")
            print(f"\napp transaction on {EAST} took {time.monotonic() - t:.1f} s")
            m.wait_for(EU, f"SELECT count(*) FROM items WHERE id > {BASE}", N_OLD + N_NEW, timeout=120)
            time.sleep(2)  # watermarks pass the horizon everywhere
            v = {r: agent_conn(m, r) for r in REGIONS3}
            for c in v.values():
                c.execute("SET statement_timeout = '120s'")
            behind_at_digest = {r: m.execute(r, "SELECT fraiseql_repl.applied_everywhere() < to_timestamp(%s)",
                                             (horizon,))[0][0] for r in REGIONS3}
            for r in REGIONS3:  # as VerifySide: step = the round's period
                v[r].execute("SELECT fraiseql_repl.publish_digests(%s, to_timestamp(%s), %s, 6.0)", (RND, horizon, BUCKETS))
            west_at_digest = m.execute(WEST, f"SELECT count(*) FROM items WHERE id > {BASE}")[0][0]
            hold.execute("COMMIT")
            m.wait_for(WEST, f"SELECT count(*) FROM items WHERE id > {BASE}", N_OLD + N_NEW, timeout=120)
            time.sleep(3)
            marks = m.execute(EAST, "SELECT DISTINCT node, digest FROM fraiseql_repl.digests "
                                    "WHERE round = %s AND bucket = -1 ORDER BY 1", (RND,))
            behind = {r: m.execute(r, "SELECT count(*) FROM fraiseql_repl.applied WHERE at < to_timestamp(%s)",
                                   (horizon,))[0][0] for r in REGIONS3}
            bg.watching.set()
            t = time.monotonic()
            listed = {r: tuple(v[r].execute("SELECT * FROM fraiseql_repl.publish_key_details(%s, %s, to_timestamp(%s), %s)",
                                            (RND, BUCKETS, horizon, MAX_KEYS)).fetchone()) for r in REGIONS3}
            took = time.monotonic() - t
            time.sleep(8)
            print(f"\npublish_key_details (keys, buckets listed, skipped) per writer {listed} in {took:.1f} s, "
                  f"max_keys {MAX_KEYS}")
            diverged = _counts(v, horizon)
            arrived = m.execute(EAST, "SELECT node, count(*) FROM fraiseql_repl.digest_keys WHERE round = %s "
                                      "GROUP BY 1 ORDER BY 1", (RND,))
            est = m.execute(EAST, "SELECT node, count(*), sum(nrows) FROM fraiseql_repl.digests WHERE round = %s "
                                  "AND bucket >= 0 GROUP BY 1 ORDER BY 1", (RND,))
            print(f"writers behind the horizon at the digests {behind_at_digest}, at the keys {behind}; "
                  f"marks {marks}")
            print(f"{WEST} held {west_at_digest} rows at its digest; digests (node, buckets, rows at the horizon) {est}")
            print(f"publish_key_details (keys, buckets listed, skipped) per writer {listed} in {took:.1f} s, "
                  f"max_keys {MAX_KEYS}; digest_keys rows on {EAST} by node {arrived}; diverged_count {diverged}")
            print(f"oldest peer heartbeat in the 8 s after the listing {hb_age} (harness stale_after 1 s)")
            assert west_at_digest == N_OLD, "us-west-2 applied the transaction before its digest (inconclusive)"
            assert len({d for _, d in marks}) == 1, "the writers took different horizons (inconclusive)"
            assert all(x == 0 for x in behind.values()), "a watermark was behind at the keys phase (inconclusive)"
            worst = max(k for k, _, _ in listed.values())
            assert worst <= 2 * MAX_KEYS, (
                f"one round listed {worst} keys on one writer ({listed}), {worst / MAX_KEYS:.0f} x max_keys "
                f"{MAX_KEYS}, with nothing different ({diverged}): rows newer than the horizon are not in the estimate")
        finally:
            for c in (hold, east):
                if c is not None:
                    c.close()
            bg.close()
