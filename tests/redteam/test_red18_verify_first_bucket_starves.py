"""Red team, round 18, verify rounds, claim 3 ("verify is not starved: a bucket that differs is
listed within a bounded number of rounds, unless it alone is larger than the cap").

publish_key_details keeps, in each round, the PREFIX of the differing buckets (ordered by
md5(rnd || ' ' || table || ' ' || bucket)) whose cumulative size fits max_keys. Once one bucket does
not fit, every bucket after it in that round's order is skipped too. The order and the bucket
function are public and the round number is the clock divided by the round period, so the
application can, each round, put more than max_keys rows into the FIRST bucket of the round's order
and make that bucket differ; then every writer lists nothing at all, and a real divergence elsewhere
is never compared, round after round.

Attack (only the application role, ordinary reads and writes), each round, after its horizon H:
- compute b0 = the bucket of public.items with the smallest md5(rnd || ' public.items ' || b)
  (the formula of bucket_of, with pg_catalog.hashtextextended, in the app's own SQL);
- on us-west-2 hold ONE old row R of b0 FOR UPDATE (as test_red15_verify_newer_rows_flood.py), and
  on us-east-1 commit one transaction: UPDATE R, and INSERT MAX_KEYS + 50 new rows whose keys fall
  in b0 (rows newer than H: no digest changes; they only make the listing of b0 large);
- release R after the writers took their digests (us-west-2 still had R's old version: b0 differs).
The round is run by hand through the agent role as VerifySide runs it (publish_digests with a step,
publish_key_details, diverged_count). A real divergence X (one old key deleted behind the mesh on
eu-west-1) is in the mesh throughout. A control round without the attack finds X.

Seen (PostgreSQL 18, 256 buckets, max_keys 1,000; two runs, identical): control round (no attack):
(keys, listed, skipped) (13, 1, 0) / (13, 1, 0) / (12, 1, 0), diverged_count 1 on every writer.
Attacked rounds 1-4 (first buckets 124, 14, 135, 199, each stuffed with 1,050 rows): every writer
(0, 0, 2) -- nothing listed, X's bucket skipped (no writer listed it) -- and diverged_count 0 on every
writer; one horizon on all three, no watermark behind. The app's cost is MAX_KEYS + 50 inserts, one
update and one row lock a round (at the defaults: 10,050 rows per 300 s round).

Fixed: each bucket that fits in what is left of the cap is listed, in the round's order; one that does
not is passed over (replication/schema/verify.sql, publish_key_details). The test FAILS while an
attacked round finds X on no writer.

    .venv/bin/python -m pytest -q -s tests/redteam/test_red18_verify_first_bucket_starves.py -p no:cacheprovider
"""

from __future__ import annotations

import time

from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, EU, PASSWORDS, WEST, Probing, agent_conn, connect, healthy, red_mesh, retry_refused

REGIONS3 = (EAST, WEST, EU)
BASE = 18_100_000
N_OLD = 2_000
BUCKETS = 256
MAX_KEYS = 1_000
STUFF = MAX_KEYS + 50
RND0 = 18_000_000
ATTACKED_ROUNDS = 4
TABLE = "public.items"


# The application's own arithmetic: bucket_of(key, buckets, seed) and the round's md5 order.
B_OF = "((pg_catalog.hashtextextended(jsonb_build_object('id', {k})::text, %(rnd)s) %% %(nb)s) + %(nb)s)::int %% %(nb)s"


def _first_bucket(app, rnd: int) -> int:
    return app.execute("SELECT b FROM generate_series(0, %(nb)s - 1) b "
                       "ORDER BY md5(%(rnd)s::text || ' ' || %(t)s || ' ' || b::text), b LIMIT 1",
                       {"rnd": rnd, "nb": BUCKETS, "t": TABLE}).fetchone()[0]


def _one_round(m, v, rnd: int, attack: bool, app_w, app_e, fresh: list[int], x_key: int) -> dict:
    time.sleep(0.5)
    horizon = m.execute(EAST, "SELECT extract(epoch FROM clock_timestamp())::float8")[0][0]
    time.sleep(0.3)  # everything below begins after the horizon
    info: dict = {"rnd": rnd}
    if attack:
        b0 = _first_bucket(app_e, rnd)
        r_old = app_e.execute(f"SELECT id FROM items WHERE id > %(base)s AND id <= %(base)s + %(n)s "
                              f"AND id <> %(x)s AND {B_OF.format(k='id')} = %(b)s ORDER BY id LIMIT 1",
                              {"base": BASE, "n": N_OLD, "x": x_key, "rnd": rnd, "nb": BUCKETS, "b": b0}).fetchone()[0]
        ids = [k for (k,) in app_e.execute(
            f"SELECT g FROM generate_series(%(lo)s::int, %(lo)s::int + 400000) g WHERE {B_OF.format(k='g')} = %(b)s "
            f"LIMIT %(n)s", {"lo": fresh[0], "rnd": rnd, "nb": BUCKETS, "b": b0, "n": STUFF}).fetchall()]
        fresh[0] = max(ids) + 1
        app_w.execute("BEGIN")
        app_w.execute("SELECT v FROM items WHERE id = %s FOR UPDATE", (r_old,))

        def write() -> None:
            with app_e.transaction():
                app_e.execute("UPDATE items SET v = 'touched' WHERE id = %s", (r_old,))
                app_e.execute("INSERT INTO items (id, v) SELECT k, 'stuff' FROM unnest(%s::int[]) k", (ids,))
        retry_refused(write, "the app's write")
        _wait_count(m, EU, ids)
        info.update(b0=b0, r_old=r_old, stuffed=len(ids))
    time.sleep(2)  # watermarks pass the horizon everywhere
    for r in REGIONS3:
        v[r].execute("SELECT fraiseql_repl.publish_digests(%s, to_timestamp(%s), %s, 6.0)", (rnd, horizon, BUCKETS))
    if attack:
        app_w.execute("COMMIT")
        _wait_count(m, WEST, ids)
    time.sleep(2)
    info["listed"] = {r: tuple(v[r].execute("SELECT * FROM fraiseql_repl.publish_key_details(%s, %s, to_timestamp(%s), %s)",
                                            (rnd, BUCKETS, horizon, MAX_KEYS)).fetchone()) for r in REGIONS3}
    time.sleep(2)
    info["diverged"] = {r: v[r].execute("SELECT fraiseql_repl.diverged_count(%s, to_timestamp(%s))",
                                        (rnd, horizon)).fetchone()[0] for r in REGIONS3}
    bx = m.execute(EAST, "SELECT fraiseql_repl.bucket_of(jsonb_build_object('id', %s), %s, %s)", (x_key, BUCKETS, rnd))[0][0]
    info["x_bucket_listed_by"] = sorted(n for (n,) in m.execute(
        EAST, "SELECT node FROM fraiseql_repl.digest_keys WHERE round = %s AND table_name = %s AND bucket = %s "
              "AND pk = '{\"_empty\": true}'", (rnd, TABLE, bx)))
    info["behind_at_keys"] = {r: m.execute(r, "SELECT count(*) FROM fraiseql_repl.applied WHERE at < to_timestamp(%s)",
                                           (horizon,))[0][0] for r in REGIONS3}
    info["marks"] = len({d for (d,) in m.execute(EAST, "SELECT DISTINCT digest FROM fraiseql_repl.digests "
                                                      "WHERE round = %s AND bucket = -1", (rnd,))})
    print(f"\nround {info}")
    return info


def _wait_count(m, region: str, ids: list[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while m.execute(region, "SELECT count(*) FROM items WHERE id = ANY(%s)", (ids,))[0][0] < len(ids):
        assert time.monotonic() < deadline, f"rows did not arrive at {region}"
        time.sleep(0.2)


def test_the_app_keeps_a_real_divergence_from_ever_being_listed() -> None:
    with red_mesh() as m:
        agents = {r: agent_conn(m, r) for r in REGIONS3}
        healthy(agents)
        bg = Probing(agents)
        app_w = app_e = None
        try:
            assert m.execute(EAST, "SELECT count(*) FROM fraiseql_repl.table_meta WHERE table_name = %s", (TABLE,))[0][0] == 1
            retry_refused(lambda: m.execute(EAST, f"INSERT INTO items (id, v) SELECT {BASE} + g, 'old' "
                                           f"FROM generate_series(1, {N_OLD}) g"), "seeding")
            for r in REGIONS3:
                m.wait_for(r, f"SELECT count(*) FROM items WHERE id > {BASE}", N_OLD, timeout=60)
            # A real divergence: one old key lost on eu-west-1 (behind the mesh, superuser set-up).
            x_key = BASE + 777
            with m.connect(EU) as c:
                c.execute("SET session_replication_role = replica")
                c.execute("DELETE FROM items WHERE id = %s", (x_key,))
            time.sleep(1)
            v = {r: agent_conn(m, r) for r in REGIONS3}
            for c in v.values():
                c.execute("SET statement_timeout = '120s'")
            app_w = connect(m, WEST, APP_ROLE, password=PASSWORDS[APP_ROLE], autocommit=True)
            app_e = connect(m, EAST, APP_ROLE, password=PASSWORDS[APP_ROLE], autocommit=True)
            fresh = [BASE + 1_000_000]
            control = _one_round(m, v, RND0, False, app_w, app_e, fresh, x_key)
            attacked = [_one_round(m, v, RND0 + 1 + i, True, app_w, app_e, fresh, x_key) for i in range(ATTACKED_ROUNDS)]
            print(f"\ncontrol round: listed {control['listed']} diverged {control['diverged']}")
            for a in attacked:
                print(f"attacked round {a['rnd']}: first bucket {a['b0']} stuffed with {a['stuffed']} rows; "
                      f"listed (keys, buckets, skipped) {a['listed']}; X's bucket listed by {a['x_bucket_listed_by']}; "
                      f"diverged_count {a['diverged']}; behind at keys {a['behind_at_keys']}; horizons {a['marks']}")
            assert all(n >= 1 for n in control["diverged"].values()), f"control round did not find X (inconclusive): {control}"
            assert all(a["marks"] == 1 and not any(a["behind_at_keys"].values()) for a in attacked), "inconclusive rounds"
            found = [a["rnd"] for a in attacked if any(n >= 1 for n in a["diverged"].values())]
            # every attacked round, but one whose stuffed bucket is X's own (1 in BUCKETS): that one is too large
            x_in_b0 = [a["rnd"] for a in attacked if m.execute(
                EAST, "SELECT fraiseql_repl.bucket_of(jsonb_build_object('id', %s::int), %s, %s)",
                (x_key, BUCKETS, a["rnd"]))[0][0] == a["b0"]]
            assert len(found) == ATTACKED_ROUNDS - len(x_in_b0), (
                f"the real divergence X was never listed nor counted in {ATTACKED_ROUNDS} consecutive rounds: each round "
                f"the app stuffed the first bucket of the round's order with {STUFF} rows (max_keys {MAX_KEYS}); "
                f"listed per round {[a['listed'] for a in attacked]}, diverged_count {[a['diverged'] for a in attacked]}")
        finally:
            for c in (app_w, app_e):
                if c is not None:
                    c.close()
            bg.close()
