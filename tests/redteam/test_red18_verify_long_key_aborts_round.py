"""Red team, round 18, verify rounds, claim 4 ("errors the new listing statement can raise that
abort the whole round") and, through it, claim 3 (verify not starved).

digest_keys has PRIMARY KEY (node, round, table_name, bucket, pk): a btree entry holding the key's
jsonb. The application's own tables index their keys with fewer bytes around them, so a key whose
text is incompressible and a little under btree's 2,704-byte limit for the application's index
(tags: PRIMARY KEY (item, tag)) is accepted, replicated and merged, but its line in digest_keys
("index row size ... exceeds btree version 4 maximum 2704") is not. The listing of every table is
one statement inside publish_key_details, so as soon as that key's bucket is among the chosen ones,
publish_key_details raises and the writer lists NOTHING that round (other tables, other buckets,
real divergences included); VerifySide logs verify_failed and retries the same call, which fails
the same way.

Attack (only the application role): one tags row with a 2,6xx-character random tag (the longest
the app's own index takes). 2,000 short tags rows were written earlier. Each round, after its horizon,
the app computes the long key's bucket for the round (bucket_of's formula) and one short row in the
same bucket, holds that short row FOR UPDATE on us-west-2 and deletes it on us-east-1 (a set's rows
are not updated), so the bucket differs at the digests (the held-apply trick of
test_red15_verify_newer_rows_flood.py); then it releases the row. A real divergence X (one old items key lost on eu-west-1, superuser set-up) is in the mesh; a
control round without the attack finds X.

Seen (PostgreSQL 18, 256 buckets, max_keys 1,000): the app's own index took a 2,688-character tag
(2,696 and longer refused). Control round: (keys, listed, skipped) (11, 1, 0) / (11, 1, 0) /
(10, 1, 0), diverged_count 1 on every writer (X found). Each attacked round (3 of 3, in each of two
runs): publish_key_details on all three writers raised ProgramLimitExceeded "index row size 2776
exceeds btree version 4 maximum 2704 for index digest_keys_pkey", no digest_keys row for the round
on any writer, diverged_count 0 on every writer with X still there. (The INSERT into digest_keys with
this primary key was there before 07a277e too; the new listing statement keeps it.)

Fixed: a key longer than 1,024 bytes of text is listed as its md5 (the same on every writer), so the
keys table's index takes it (replication/schema/verify.sql, publish_key_details). The test FAILS
while an attacked round raises or finds X on no writer.

    .venv/bin/python -m pytest -q -s tests/redteam/test_red18_verify_long_key_aborts_round.py -p no:cacheprovider
"""

from __future__ import annotations

import random
import string
import time

import psycopg

from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, EU, PASSWORDS, WEST, Probing, agent_conn, connect, healthy, red_mesh, retry_refused

REGIONS3 = (EAST, WEST, EU)
BASE = 18_300_000
BUCKETS = 256
MAX_KEYS = 1_000
RND0 = 18_300_000
ROUNDS = 3
ITEM = 4242


def _wait(m, region: str, sql: str, params, want, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while m.execute(region, sql, params)[0][0] != want:
        assert time.monotonic() < deadline, f"{sql} never became {want} on {region}"
        time.sleep(0.2)


def _round(m, v, rnd: int, attack: bool, app_w, app_e, tag: str) -> dict:
    time.sleep(0.5)
    horizon = m.execute(EAST, "SELECT extract(epoch FROM clock_timestamp())::float8")[0][0]
    time.sleep(1.0)  # everything below begins after the horizon, and the watermarks pass it first
    info: dict = {"rnd": rnd}
    if attack:
        # the long key's bucket this round, and an old short row of it (the app's own arithmetic)
        b_of = ("((pg_catalog.hashtextextended(jsonb_build_object('item', item, 'tag', tag)::text, %(rnd)s) %% %(nb)s)"
                " + %(nb)s)::int %% %(nb)s")
        bl = app_e.execute(f"SELECT {b_of} FROM tags WHERE item = %(i)s",
                           {"rnd": rnd, "nb": BUCKETS, "i": ITEM}).fetchone()[0]
        short = app_e.execute(f"SELECT tag FROM tags WHERE item = %(i)s AND {b_of} = %(b)s LIMIT 1",
                              {"rnd": rnd, "nb": BUCKETS, "i": ITEM + 1, "b": bl}).fetchone()[0]
        info.update(long_key_bucket=bl, deleted=short)
        app_w.execute("BEGIN")
        app_w.execute("SELECT 1 FROM tags WHERE item = %s AND tag = %s FOR UPDATE", (ITEM + 1, short))
        retry_refused(lambda: app_e.execute("DELETE FROM tags WHERE item = %s AND tag = %s", (ITEM + 1, short)),
               "the app's delete")
        time.sleep(1)
    time.sleep(2)
    for r in REGIONS3:
        v[r].execute("SELECT fraiseql_repl.publish_digests(%s, to_timestamp(%s), %s, 6.0)", (rnd, horizon, BUCKETS))
    if attack:
        app_w.execute("COMMIT")
    time.sleep(2)
    info["listed"] = {}
    for r in REGIONS3:
        try:
            info["listed"][r] = tuple(v[r].execute(
                "SELECT * FROM fraiseql_repl.publish_key_details(%s, %s, to_timestamp(%s), %s)",
                (rnd, BUCKETS, horizon, MAX_KEYS)).fetchone())
        except psycopg.Error as exc:
            info["listed"][r] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    time.sleep(2)
    info["diverged"] = {r: v[r].execute("SELECT fraiseql_repl.diverged_count(%s, to_timestamp(%s))",
                                        (rnd, horizon)).fetchone()[0] for r in REGIONS3}
    info["keys_rows"] = m.execute(EAST, "SELECT node, count(*) FROM fraiseql_repl.digest_keys WHERE round = %s "
                                        "GROUP BY 1 ORDER BY 1", (rnd,))
    info["behind_at_keys"] = {r: m.execute(r, "SELECT count(*) FROM fraiseql_repl.applied WHERE at < to_timestamp(%s)",
                                           (horizon,))[0][0] for r in REGIONS3}
    info["marks"] = len({d for (d,) in m.execute(EAST, "SELECT DISTINCT digest FROM fraiseql_repl.digests "
                                                      "WHERE round = %s AND bucket = -1", (rnd,))})
    info["mark_by_node"] = m.execute(EAST, "SELECT DISTINCT node, digest, to_timestamp(%s)::text FROM fraiseql_repl.digests "
                                           "WHERE round = %s AND bucket = -1 ORDER BY 1", (horizon, rnd))
    print(f"\nround {info}")
    return info


def test_one_long_key_makes_every_round_list_nothing() -> None:
    with red_mesh() as m:
        agents = {r: agent_conn(m, r) for r in REGIONS3}
        healthy(agents)
        bg = Probing(agents)
        app_w = app_e = None
        try:
            assert m.execute(EAST, "SELECT count(*) FROM fraiseql_repl.table_meta WHERE table_name = 'public.tags'")[0][0] == 1
            app_e = connect(m, EAST, APP_ROLE, password=PASSWORDS[APP_ROLE], autocommit=True)
            app_w = connect(m, WEST, APP_ROLE, password=PASSWORDS[APP_ROLE], autocommit=True)
            rng = random.Random(18)
            tag = None
            accepted = {}
            for n in range(2720, 2560, -8):  # the longest tag the app's own index takes
                t = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))
                try:
                    retry_refused(lambda t=t: app_e.execute("INSERT INTO tags (item, tag) VALUES (%s, %s)", (ITEM, t)), "insert")
                    tag = t
                    accepted[n] = True
                    break
                except psycopg.errors.ProgramLimitExceeded:
                    accepted[n] = False
            print(f"\ntag lengths tried (accepted?) {accepted}")
            assert tag is not None
            for r in REGIONS3:
                _wait(m, r, "SELECT count(*) FROM tags WHERE item = %s", (ITEM,), 1)
            retry_refused(lambda: app_e.execute("INSERT INTO tags (item, tag) SELECT %s, 's' || g FROM generate_series(1, 2000) g",
                                         (ITEM + 1,)), "short tags")
            for r in REGIONS3:
                _wait(m, r, "SELECT count(*) FROM tags WHERE item = %s", (ITEM + 1,), 2000)
            retry_refused(lambda: m.execute(EAST, f"INSERT INTO items (id, v) SELECT {BASE} + g, 'old' "
                                           f"FROM generate_series(1, 2000) g"), "seeding")
            for r in REGIONS3:
                m.wait_for(r, f"SELECT count(*) FROM items WHERE id > {BASE}", 2000, timeout=60)
            x_key = BASE + 777
            with m.connect(EU) as c:
                c.execute("SET session_replication_role = replica")
                c.execute("DELETE FROM items WHERE id = %s", (x_key,))
            time.sleep(1)
            v = {r: agent_conn(m, r) for r in REGIONS3}
            for c in v.values():
                c.execute("SET statement_timeout = '120s'")
            control = _round(m, v, RND0, False, app_w, app_e, tag)
            attacked = [_round(m, v, RND0 + 1 + i, True, app_w, app_e, tag) for i in range(ROUNDS)]
            print(f"\ncontrol: listed {control['listed']} diverged {control['diverged']}")
            for a in attacked:
                print(f"attacked {a['rnd']}: listed {a['listed']}; digest_keys rows by node {a['keys_rows']}; "
                      f"diverged {a['diverged']}; behind {a['behind_at_keys']}; horizons {a['marks']}")
            assert all(n >= 1 for n in control["diverged"].values()), f"control did not find X (inconclusive): {control}"
            conclusive = [a for a in attacked if a["marks"] == 1 and not any(a["behind_at_keys"].values())]
            assert conclusive, "no attacked round took one horizon on every writer (inconclusive)"
            failed = [(a["rnd"], r, x) for a in conclusive for r, x in a["listed"].items() if isinstance(x, str)]
            assert not failed, (f"publish_key_details raised (the whole round's listing lost) {failed}; "
                                f"diverged_count {[a['diverged'] for a in attacked]} with a real divergence X present")
            assert all(n >= 1 for a in conclusive for n in a["diverged"].values()), (
                f"X was not counted on every writer in every round: {[a['diverged'] for a in conclusive]}")
        finally:
            for c in (app_w, app_e):
                if c is not None:
                    c.close()
            bg.close()
