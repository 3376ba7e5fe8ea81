"""Red team, round 14, verify rounds, claim 1: "rows that really differ between writers are counted
in DivergedRows (diverged_keys returns them) within a couple of rounds, whenever every member's
agent runs". Can a real difference be missed for good with every agent running and no watermark
behind?

Attack: a row that stays different and is written often. Digests cover only rows whose version
(_repl_ts) is not newer than the horizon, and diverged_keys drops every key whose version on either
side is newer than the horizon ("in flight"). A row written at least once per (verify_margin_s +
the digest's offset into the round) therefore never counts, and when a write does not repair the
difference it stays different for ever, unseen. A counter row does exactly that: the counter column
is the sum of the shards, so one writer holding a wrong shard of another node shows a different
total after every increment, and every increment (from any writer) renews the row's version.
At the defaults (margin 60 s, period 300 s) any counter incremented once a minute is invisible to
DivergedRows, which then reports 0 (alarm clear).

Here: real 3-writer mesh, real roles, agents probing, the real verify thread (round 6 s, margin
1 s, 64 buckets). One counters row; us-west-2 increments it once so it has a shard; behind the mesh
eu-west-1's copy of us-west-2's shard (and the total) is raised by 1000 (replica role and a
replication origin: the shards are published natively, origin = none keeps it local). The application then
increments the row from us-east-1 twice a second (the margin here is 1 s; in production once a
minute does it). 60 s of rounds; then the increments stop (control: the rounds count the row once it
is quiet).

Seen (2 runs of 2): 120 increments over 60 s; totals 121 / 121 / 1121 (eu-west-1 1000 above)
throughout; DivergedRows 0 in all 8 (run 1) and 9 (run 2) rounds x 3 writers whose horizon
followed the divergence. After the increments stopped: DivergedRows 1 on every writer in the second
round (the control: the row is found as soon as it cools).

Fixed: counter shards carry a version (fraiseql_repl.shards.ts, stamped by their node), and the
rounds compare the shards (fraiseql_repl.shard_versions) as a table of their own: us-west-2's shard
is quiet, so it is older than the horizon and compared. Seen (1 run): 119 increments; DivergedRows 1
on every writer in all 9 rounds x 3 writers while hot. A row of another policy written more often
than once a round is still not compared; its next write replaces it whole on every writer.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from replication.agent.verify_side import VerifySide
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, EU, PASSWORDS, WEST, agent_conn, connect, healthy, long_probe, red_mesh, rounds, settings

REGIONS3 = (EAST, WEST, EU)
K = 14_300_001
PERIOD_S, MARGIN_S = 6.0, 1.0
HOT_S = 60


class _Aws:
    def __init__(self) -> None:
        self.seen: list[tuple[float, int]] = []

    def offer_diverged(self, rows: int) -> None:
        self.seen.append((time.time(), rows))


def _since(aws: dict[str, _Aws], a: float, b: float = float("inf")) -> dict[str, list[int]]:
    return {r: [n for t, n in x.seen if a <= t < b] for r, x in aws.items()}


@long_probe
def test_a_hot_diverged_counter_is_never_counted() -> None:
    with red_mesh() as m:
        agents = {r: agent_conn(m, r) for r in REGIONS3}
        healthy(agents)
        stop = threading.Event()

        def probing() -> None:
            while not stop.is_set():
                rounds(agents, 1)

        threads = [threading.Thread(target=probing, daemon=True)]
        threads[0].start()
        aws = {r: _Aws() for r in REGIONS3}
        sides = [VerifySide(dataclasses.replace(settings(r), verify_every_s=PERIOD_S, verify_margin_s=MARGIN_S,
                                                verify_buckets=64),
                            lambda r=r: agent_conn(m, r), aws[r]).start() for r in REGIONS3]
        hot = threading.Event()
        incs = [0]

        def incrementing() -> None:
            app = connect(m, EAST, APP_ROLE, password=PASSWORDS[APP_ROLE], autocommit=True)
            while not stop.is_set():
                if hot.is_set():
                    app.execute("UPDATE counters SET hits = hits + 1 WHERE id = %s", (K,))
                    incs[0] += 1
                time.sleep(0.5)
            app.close()

        try:
            app_e = connect(m, EAST, APP_ROLE, password=PASSWORDS[APP_ROLE], autocommit=True)
            app_e.execute("INSERT INTO counters (id, label, hits) VALUES (%s, 'hot', 0)", (K,))
            for r in REGIONS3:
                m.wait_for(r, f"SELECT count(*) FROM counters WHERE id = {K}", 1)
            app_w = connect(m, WEST, APP_ROLE, password=PASSWORDS[APP_ROLE], autocommit=True)
            app_w.execute("UPDATE counters SET hits = hits + 1 WHERE id = %s", (K,))
            for r in REGIONS3:
                m.wait_for(r, f"SELECT hits FROM counters WHERE id = {K}", 1)
            west = m.execute(WEST, "SELECT fraiseql_repl.node_name()")[0][0]
            with m.connect(EU) as c:
                c.execute("SET session_replication_role = replica")
                # shards are published natively: a replication origin keeps the change here (origin = none)
                c.execute("SELECT pg_replication_origin_create('red14')")
                c.execute("SELECT pg_replication_origin_session_setup('red14')")
                n = c.execute("UPDATE fraiseql_repl.shards SET amount = amount + 1000 WHERE table_name LIKE '%%counters' "
                              "AND pk = jsonb_build_object('id', %s::int) AND node = %s", (K, west)).rowcount
                c.execute("UPDATE counters SET hits = hits + 1000 WHERE id = %s", (K,))
            assert n == 1, f"no shard of {west} on {EU}"
            hot.set()
            threads.append(threading.Thread(target=incrementing, daemon=True))
            threads[-1].start()
            t1 = time.time()
            time.sleep(HOT_S)
            totals = {r: m.execute(r, f"SELECT hits FROM counters WHERE id = {K}")[0][0] for r in REGIONS3}
            during = _since(aws, t1 + PERIOD_S + MARGIN_S)
            hot.clear()
            t2 = time.time()
            time.sleep(1)
            quiet = {r: m.execute(r, f"SELECT hits FROM counters WHERE id = {K}")[0][0] for r in REGIONS3}
            deadline = time.time() + 5 * PERIOD_S
            while time.time() < deadline and not all(any(v) for v in _since(aws, t2).values()):
                time.sleep(0.5)
            after = _since(aws, t2)
            print(f"\n{incs[0]} increments; totals while hot {totals}, once quiet {quiet}")
            print(f"DivergedRows while hot: {during}\nafter the increments stopped: {after}")
            assert quiet[EU] - quiet[EAST] == 1000 and quiet[WEST] == quiet[EAST], "the difference did not hold"
            assert all(v for v in during.values()), "too few rounds ran (probe inconclusive)"
            assert any(any(v) for v in during.values()), (
                f"a counter row whose total on {EU} is 1000 above its peers', incremented every 0.5 s, was never counted: "
                f"DivergedRows {during} over {HOT_S} s (counted once quiet: {after})")
        finally:
            stop.set()
            for th in threads:
                th.join(timeout=10)
            for s in sides:
                s.stop()
