"""Red team, round 14, verify rounds, claim 3: the SECURITY DEFINER functions publish_digests,
publish_key_details and diverged_keys (replication/schema/verify.sql) cannot be used by the
application role or the agent role to do harm (flood the control channel, read data they could not
otherwise read, hold locks).

First test (held expected): the application role may call none of them (nor purge_digests).

Second test (broken): the agent role of ONE region makes every writer list every key of every
replicated table into the control channel, with no divergence and every watermark fresh. Digests go
in with ON CONFLICT DO NOTHING, and the round number, the horizon and the bucket count are the
caller's. The agent pre-publishes its digests of a coming round with 512 buckets instead of 256:
its buckets 0..255 now hold other key sets, so when its honest verify thread publishes at that
round it changes nothing (conflict), and every honest peer sees every one of its buckets differ and
lists all its keys (the guard is satisfied: nobody is behind). One call per future round, from one
region's agent credentials, fences the others through their heartbeats' link (the flood of
test_red14_verify_update_flood.py, on demand).

Third test (broken): the agent role, which has no SELECT on the application's tables, reads every
primary key of them: after the peers listed their keys (as above), it lists its own with a bucket
count that matches nothing (only "_empty" markers: it reported every bucket, holding no key) and
calls diverged_keys with horizon 'infinity': every key a peer listed comes back.

Seen (3 runs of 3): test 1 passed (nothing allowed). Test 2: 20,000-row table, no divergence, the
two honest peers listed 20,000 keys each (the full table; honest round without the poison: 0).
Test 3: diverged_keys returned all 20,000 primary keys to the agent role (SELECT on items: denied).

Fixed, test 3: the agent calls diverged_count (the number DivergedRows reports); diverged_keys is
the owner's alone, and the roles take back an earlier release's grant of it. Fixed, test 2: each
writer's digests say their horizon and bucket count (the table's row, bucket -1), and a peer's are
compared only when both match ours and no bucket lies outside the count; whatever digests an agent
role publishes, a round lists at most about max_keys keys (publish_key_details). The agent's role
may still publish a coming round's digests with our horizon and count, and make each peer list up
to that cap in that round.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from drills.mesh import Mesh
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, EU, PASSWORDS, WEST, Probing, agent_conn, connect, healthy, red_mesh, retry_refused

REGIONS3 = (EAST, WEST, EU)
BASE = 14_400_000
N = 20_000


@pytest.fixture(scope="module")
def running() -> Iterator[Mesh]:
    with red_mesh() as m:
        agents = {r: agent_conn(m, r) for r in REGIONS3}
        healthy(agents)
        probing = Probing(agents)
        try:
            retry_refused(lambda: m.execute(EAST, f"INSERT INTO items (id, v) SELECT {BASE} + g, 'v' "
                                                  f"FROM generate_series(1, {N}) g"), "the rows")
            for r in REGIONS3:
                m.wait_for(r, f"SELECT count(*) FROM items WHERE id > {BASE}", N, timeout=120)
            time.sleep(2)
            yield m
        finally:
            probing.close()


def _verify_conns(m: Mesh) -> dict[str, psycopg.Connection]:
    out = {}
    for r in REGIONS3:
        c = agent_conn(m, r)
        c.execute("SET statement_timeout = '120s'")
        out[r] = c
    return out


def _honest_round(m: Mesh, v: dict[str, psycopg.Connection], rnd: int) -> tuple[float, dict[str, int]]:
    """What every agent's verify thread does at round ``rnd``: digests, then keys (256 buckets)."""
    horizon = m.execute(EAST, "SELECT extract(epoch FROM clock_timestamp())::float8 - 1")[0][0]
    for r in REGIONS3:
        v[r].execute("SELECT fraiseql_repl.publish_digests(%s, to_timestamp(%s), 256)", (rnd, horizon))
    time.sleep(2)
    listed = {r: v[r].execute("SELECT fraiseql_repl.publish_key_details(%s, 256, to_timestamp(%s))",
                              (rnd, horizon)).fetchone()[0] for r in REGIONS3}
    return horizon, listed


def test_the_app_role_cannot_call_the_verify_functions(running: Mesh) -> None:
    m = running
    attempts = ["SELECT fraiseql_repl.publish_digests(1, now(), 256)",
                "SELECT fraiseql_repl.publish_key_details(1, 256, now())",
                "SELECT fraiseql_repl.publish_key_details(1, 256)",
                "SELECT * FROM fraiseql_repl.diverged_keys(1, now())",
                "SELECT fraiseql_repl.diverged_count(1, now())",
                "SELECT fraiseql_repl.purge_digests(0)",
                "SELECT * FROM fraiseql_repl.digest_keys",
                "SELECT * FROM fraiseql_repl.table_digest('public.items', 256, now())",
                "SELECT * FROM fraiseql_repl.bucket_keys('public.items', 256, '{1}')"]
    allowed = []
    with connect(m, WEST, APP_ROLE, password=PASSWORDS[APP_ROLE], autocommit=True) as c:
        for sql in attempts:
            try:
                c.execute(sql)
                allowed.append(sql)
            except psycopg.Error:
                pass
    print(f"\nallowed to {APP_ROLE}: {allowed}")
    # table_digest / bucket_keys are not SECURITY DEFINER: they run as the caller, who reads only what it may
    assert not [a for a in allowed if "table_digest" not in a and "bucket_keys" not in a]


def test_one_regions_agent_makes_every_writer_list_every_key(running: Mesh) -> None:
    m = running
    v = _verify_conns(m)
    _, clean = _honest_round(m, v, 900)
    # the attack: EAST's agent role, ahead of round 901, with 512 buckets
    v[EAST].execute("SELECT fraiseql_repl.publish_digests(901, clock_timestamp(), 512)")
    time.sleep(1)
    _, poisoned = _honest_round(m, v, 901)
    print(f"\nhonest round: keys listed {clean}; round the agent of {EAST} published ahead: {poisoned} "
          f"(table: {N} rows, none different)")
    assert clean[WEST] < 0.05 * N, "the honest round listed keys (probe inconclusive)"
    assert poisoned[WEST] + poisoned[EU] < 0.05 * N, (
        f"{EAST}'s agent role, with one publish_digests call ahead of a round, made its peers list "
        f"{poisoned[WEST]} and {poisoned[EU]} keys of a {N}-row table into the control channel")


def test_the_agent_role_reads_no_primary_key_through_the_rounds(running: Mesh) -> None:
    m = running
    v = _verify_conns(m)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        v[EAST].execute("SELECT id FROM items LIMIT 1")
    v[EAST].execute("SELECT fraiseql_repl.publish_digests(902, clock_timestamp(), 512)")
    time.sleep(1)
    horizon = m.execute(EAST, "SELECT extract(epoch FROM clock_timestamp())::float8 - 1")[0][0]
    for r in (WEST, EU):  # the peers' honest rounds
        v[r].execute("SELECT fraiseql_repl.publish_digests(902, to_timestamp(%s), 256)", (horizon,))
    time.sleep(2)
    for r in (WEST, EU):
        v[r].execute("SELECT fraiseql_repl.publish_key_details(902, 256, to_timestamp(%s))", (horizon,))
    time.sleep(5)
    # the agent's own "details": every bucket reported, no key in it
    v[EAST].execute("SELECT fraiseql_repl.publish_key_details(902, 1000000000, NULL::timestamptz)")
    # Seen before the fix (3 runs of 3): diverged_keys(902, 'infinity') gave the agent's role all 20,000
    # primary keys of items. Now the keys are the owner's; the agent gets their number.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        v[EAST].execute("SELECT * FROM fraiseql_repl.diverged_keys(902, 'infinity')")
    (n,) = v[EAST].execute("SELECT fraiseql_repl.diverged_count(902, 'infinity')").fetchone()
    print(f"\nthe agent role of {EAST} may count the keys that differ ({n}), and read none of them")
