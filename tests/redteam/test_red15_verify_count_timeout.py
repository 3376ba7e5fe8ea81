"""Red team, round 15, verify rounds, claim 2 ("no blindness"): rows that really differ are counted
in DivergedRows within a few rounds, with every agent running.

The agent's count step (diverged_count, under VerifySide's statement_timeout of 120 s) joins the
round's digest_keys with itself. The cap lets each writer list up to max_keys (10,000 by default)
keys a round. Does the count of a round that lists within the cap finish in time?

Here: a real 3-writer mesh, real roles, agents probing. 12,000 rows converged. 1,000 of them are
made to differ on eu-west-1 behind the mesh (superuser, session_replication_role = replica): a real
divergence, what verify exists to report. One round by hand through the agent role, as VerifySide
runs it at its defaults (publish_digests with a step, 256 buckets; publish_key_details with
max_keys 10,000; diverged_count under statement_timeout 120 s, on us-east-1).

Seen (1 run, passes): 9,973 keys listed per writer (214 buckets, 36 skipped); diverged_count 847 in
44.4 s (digest_keys never analyzed: 30,561 rows). It holds at the cap, with 37 % of the timeout used on
this (shared, 2-core) machine; 14,000 keys per writer took over 20 s, 23,000 over 120 s
(test_red15_verify_newer_rows_flood.py).

Held, and faster: diverged_keys is now one hash join over both listings; the same count took 0.7 s
(855 keys; before: 44.4 s). A long probe (FRAISEQL_LONG_PROBES=1).
"""

from __future__ import annotations

import threading
import time

import psycopg

from tests.redteam.harness import EAST, EU, WEST, agent_conn, healthy, long_probe, red_mesh, rounds

REGIONS3 = (EAST, WEST, EU)
BASE = 15_300_000
N = 12_000
BAD = 1_000
BUCKETS, MAX_KEYS = 256, 10_000
RND = 993


@long_probe
def test_the_count_of_a_round_within_the_cap_finishes() -> None:
    with red_mesh() as m:
        agents = {r: agent_conn(m, r) for r in REGIONS3}
        healthy(agents)
        stop = threading.Event()

        def probing() -> None:
            while not stop.is_set():
                rounds(agents, 1)

        th = threading.Thread(target=probing, daemon=True)
        th.start()
        try:
            m.execute(EAST, f"INSERT INTO items (id, v) SELECT {BASE} + g, 'v' FROM generate_series(1, {N}) g")
            for r in REGIONS3:
                m.wait_for(r, f"SELECT count(*) FROM items WHERE id > {BASE}", N, timeout=120)
            with m.connect(EU) as c:
                c.execute("SET session_replication_role = replica")
                c.execute(f"UPDATE items SET v = 'corrupted' WHERE id > {BASE} AND (id - {BASE}) % {N // BAD} = 0")
            time.sleep(2)
            v = {r: agent_conn(m, r) for r in REGIONS3}
            for c in v.values():
                c.execute("SET statement_timeout = '120s'")  # VerifySide's
            horizon = m.execute(EAST, "SELECT extract(epoch FROM clock_timestamp())::float8 - 1")[0][0]
            for r in REGIONS3:
                v[r].execute("SELECT fraiseql_repl.publish_digests(%s, to_timestamp(%s), %s, 6.0)", (RND, horizon, BUCKETS))
            time.sleep(2)
            listed = {r: tuple(v[r].execute("SELECT * FROM fraiseql_repl.publish_key_details(%s, %s, to_timestamp(%s), %s)",
                                            (RND, BUCKETS, horizon, MAX_KEYS)).fetchone()) for r in REGIONS3}
            print(f"\npublish_key_details (keys, buckets listed, skipped) {listed}, max_keys {MAX_KEYS}")
            m.wait_for(EAST, "SELECT count(*) FROM fraiseql_repl.digest_keys WHERE round = %s" % RND,
                       sum(k + b for k, b, _ in listed.values()), timeout=60)
            t = time.monotonic()
            try:
                n = v[EAST].execute("SELECT fraiseql_repl.diverged_count(%s, to_timestamp(%s))",
                                    (RND, horizon)).fetchone()[0]
            except psycopg.errors.QueryCanceled:
                n = None
            took = time.monotonic() - t
            stats = m.execute(EAST, "SELECT n_live_tup, last_analyze, last_autoanalyze FROM pg_stat_user_tables "
                                    "WHERE relid = 'fraiseql_repl.digest_keys'::regclass")
            print(f"diverged_count on {EAST}: {n} in {took:.1f} s (VerifySide's statement_timeout 120 s); "
                  f"{BAD} rows differ on {EU}; digest_keys stats {stats}")
            assert n is not None and n >= BAD * 0.5, (
                f"the agent's count of a round that listed {listed[EAST][0]} keys (within max_keys {MAX_KEYS}) "
                f"{'timed out after %.0f s' % took if n is None else 'returned %s' % n}: DivergedRows is never reported "
                f"while {BAD} rows differ")
        finally:
            stop.set()
            th.join(timeout=10)
