"""Red team, round 15, verify rounds, claim 2 ("no blindness"): with every agent running, a row that
really differs between writers and is quiet is counted in DivergedRows within a few rounds.

The cap (publish_key_details) lists buckets in a rotating order while the running sum of their
estimated rows stays within max_keys. A bucket whose estimate alone is over max_keys is never listed,
in any round, whatever the order (settings.py says so, as a sizing rule: "keep verify_buckets at
least the largest table's rows over a quarter of it"). But which bucket a key falls in is public
(bucket_of: hashtextextended of the key's jsonb text, mod the bucket count; pg_catalog's
hashtextextended is executable by PUBLIC), and the application picks its own keys. No bucket count
fixes it: the application role puts max_keys + 1 rows with keys it picked in ONE bucket, and from
then on every divergence in that bucket (of any of those rows, or any later row whose key lands
there) is invisible to every agent, forever. A table larger than verify_buckets x max_keys (2.56M
rows at the defaults) is blind everywhere the same way, without any choice of keys.

Here: a real 3-writer mesh, real roles, agents probing; the real VerifySide on every writer at the
DEFAULT bucket count (256) and max_keys (10,000), round 6 s, margin 1 s. The app role finds 10,001
ids of bucket 7 with a query and inserts them, plus 2,000 ordinary rows. Two rows are then made to
differ behind the mesh on eu-west-1 (superuser, session_replication_role = replica): one in the
stuffed bucket, one elsewhere (the control). Expected within ~8 rounds: DivergedRows 2 on some writer.

Seen (2 runs of 2): the app role found 10,001 keys of bucket 7 in 4.3 s. DivergedRows over 8
rounds, identical on the three writers: [0, 1, 1, 1, 0, 0, 0, 1] and [0, 1, 0, 1, 1, 1, 0, 1]:
never 2. verify_capped every round: either (8 keys, 1 bucket listed, 1 skipped) or (0 keys, 0
listed, 2 skipped): the stuffed bucket is never listed, and in the rounds where it comes first in the
rotation it also keeps the control bucket from being listed (DivergedRows 0 while two rows differ).

Fixed: each round seeds the buckets with its number (bucket_of(key, buckets, round)), so keys
crowded into one bucket spread out in other rounds. Seen (1 run): DivergedRows 2 in all 8 rounds on
every writer; no verify_capped. A long probe (FRAISEQL_LONG_PROBES=1); the fast regression is
tests/replication/test_verify.py::test_keys_crowded_into_one_bucket_spread_out_in_the_next_round.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from replication.agent.verify_side import VerifySide
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, EU, PASSWORDS, WEST, agent_conn, connect, healthy, long_probe, red_mesh, rounds, settings

REGIONS3 = (EAST, WEST, EU)
BASE = 15_200_000
PERIOD_S, MARGIN_S = 6.0, 1.0
BUCKETS, MAX_KEYS = 256, 10_000   # the agent's defaults
TARGET = 7
ROUNDS = 8


class _Aws:
    def __init__(self) -> None:
        self.seen: list[tuple[float, int]] = []

    def offer_diverged(self, rows: int) -> None:
        self.seen.append((time.time(), rows))


@long_probe
def test_a_bucket_stuffed_past_max_keys_is_never_compared() -> None:
    with red_mesh() as m:
        agents = {r: agent_conn(m, r) for r in REGIONS3}
        healthy(agents)
        stop = threading.Event()

        def probing() -> None:
            while not stop.is_set():
                rounds(agents, 1)

        prober = threading.Thread(target=probing, daemon=True)
        prober.start()
        aws = {r: _Aws() for r in REGIONS3}
        logs: list[dict] = []
        sides = []
        app = None
        try:
            app = connect(m, EAST, APP_ROLE, password=PASSWORDS[APP_ROLE], autocommit=True)
            bucket = f"((pg_catalog.hashtextextended(jsonb_build_object('id', g)::text, 0) % {BUCKETS}) + {BUCKETS}) % {BUCKETS}"
            t = time.monotonic()
            stuffed = [g for (g,) in app.execute(
                f"SELECT g FROM generate_series({BASE + 1}, {BASE + 4_000_000}) g WHERE {bucket} = {TARGET} "
                f"LIMIT {MAX_KEYS + 1}").fetchall()]
            others = [g for (g,) in app.execute(
                f"SELECT g FROM generate_series({BASE + 5_000_001}, {BASE + 5_002_200}) g WHERE {bucket} <> {TARGET} "
                f"LIMIT 2000").fetchall()]
            print(f"\nthe app role found {len(stuffed)} keys of bucket {TARGET} in {time.monotonic() - t:.1f} s")
            app.execute("INSERT INTO items (id, v) SELECT unnest(%s::int[]), 'stuffed'", (stuffed,))
            app.execute("INSERT INTO items (id, v) SELECT unnest(%s::int[]), 'ordinary'", (others,))
            n = len(stuffed) + len(others)
            for r in REGIONS3:
                m.wait_for(r, f"SELECT count(*) FROM items WHERE id > {BASE}", n, timeout=120)
            assert m.execute(EU, "SELECT fraiseql_repl.bucket_of(jsonb_build_object('id', %s::int), %s)",
                             (stuffed[0], BUCKETS))[0][0] == TARGET
            time.sleep(2 * MARGIN_S)
            with m.connect(EU) as c:
                c.execute("SET session_replication_role = replica")
                c.execute("UPDATE items SET v = 'corrupted on eu' WHERE id = ANY(%s)", ([stuffed[5], others[5]],))
            sides = [VerifySide(dataclasses.replace(settings(r), verify_every_s=PERIOD_S, verify_margin_s=MARGIN_S,
                                                    verify_buckets=BUCKETS, verify_max_keys=MAX_KEYS),
                                lambda r=r: agent_conn(m, r), aws[r], logs.append).start() for r in REGIONS3]
            time.sleep(ROUNDS * PERIOD_S)
            seen = {r: [x for _, x in a.seen] for r, a in aws.items()}
            capped = [(e["region"], e["round"], e["keys"], e["buckets_listed"], e["buckets_skipped"])
                      for e in logs if e.get("event") == "verify_capped"]
            failed = [e for e in logs if e.get("event") == "verify_failed"]
            still = m.execute(EU, "SELECT id, v FROM items WHERE id = ANY(%s) ORDER BY id", ([stuffed[5], others[5]],))
            east = m.execute(EAST, "SELECT id, v FROM items WHERE id = ANY(%s) ORDER BY id", ([stuffed[5], others[5]],))
            print(f"rows on {EU} {still}, on {EAST} {east}")
            print(f"DivergedRows offered per writer over {ROUNDS} rounds: {seen}")
            print(f"verify_capped (region, round, keys, listed, skipped): {capped}; verify_failed {failed}")
            assert all(seen.values()), "the rounds did not run (inconclusive)"
            assert any(x >= 1 for v in seen.values() for x in v), "the control row was never counted (inconclusive)"
            assert any(x >= 2 for v in seen.values() for x in v), (
                f"a row that differs in a bucket the app role stuffed with {MAX_KEYS + 1} rows was never counted in "
                f"{ROUNDS} rounds on any writer (DivergedRows {seen}; the control row in another bucket was)")
        finally:
            if app is not None:
                app.close()
            stop.set()
            prober.join(timeout=10)
            for s in sides:
                s.stop()
