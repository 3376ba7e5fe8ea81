"""Red team 16, claim 1(c): "ops verify --repair fixes a shard copy that really differs on one
writer, everywhere, and a second verify is clean".

Attack: repair re-sends, for a counter row, every writer's OWN shards (reemit_shards: rows with
node = node_name()). A shard copy that differs on one writer but that no writer owns is never
re-sent:
  * a '_seed' shard (the pseudo node of pre-existing values, seeded alike on every writer),
  * a stray shard under a writer's name that its owner does not hold (its owner has nothing to
    re-send, and nothing removes the stray copy).
Each is injected on C only (superuser, replica role, replication origin session: it does not
replicate), then ops verify finds it (as its counter row) and repairs; after the mesh converged a
second verify must be clean.

Seen before the fix (4 runs): both repaired nothing; the second verify still counted 1, hits
51 / 51 / 1051 (seed) and 2 / 2 / 1002 (stray). Fixed: repair makes the copies no writer re-sends
agree (replication.verify._shard_copies): a copy of a writer's shard its owner does not hold is
removed where it is (drop_shard_copy, the counter row recomputed there as a merge would), and a
'_seed' shard, or a departed writer's, is sent again from a writer holding the amount most hold
(reemit_shard_copy). Both pass: second verify 0, hits equal everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.verify import repair, verify

A, B, C = REGIONS


@pytest.fixture
def m() -> Iterator[Mesh]:  # one mesh per test: each leaves its divergence behind
    with mesh(POLICY, APP_SCHEMA, delays=False) as running:
        yield running


def _behind(m: Mesh, node: str, sqls: list[tuple[str, tuple]]) -> None:
    with m.connect(node) as c:
        c.execute("SET session_replication_role = replica")
        c.execute("SELECT pg_replication_origin_create('red16_shard')")
        try:
            c.execute("SELECT pg_replication_origin_session_setup('red16_shard')")
            for sql, params in sqls:
                c.execute(sql, params)
            c.execute("SELECT pg_replication_origin_session_reset()")
        finally:
            c.execute("SELECT pg_replication_origin_drop('red16_shard')")


def _conns(m: Mesh) -> dict[str, psycopg.Connection]:
    return {n: m.connect(n) for n in REGIONS}


def _verify_repair_verify(m: Mesh, key: int) -> tuple[int, list, int, list, dict]:
    conns = _conns(m)
    try:
        first = verify(conns, buckets=64, margin_s=0.3)
        actions = repair(conns, first)
        m.wait_applied(timeout=30)
        time.sleep(1.5)
        second = verify(conns, buckets=64, margin_s=0.3)
    finally:
        for c in conns.values():
            c.close()
    shards = {n: m.execute(n, "SELECT node, born::text, amount::text FROM fraiseql_repl.shards "
                               "WHERE table_name = 'public.counters' AND pk = jsonb_build_object('id', %s::int) ORDER BY 1, 2",
                           (key,)) for n in REGIONS}
    print("first:", first.diverged_rows, [d.summary() for d in first.divergences])
    print("actions:", actions)
    print("second:", second.diverged_rows, [d.summary() for d in second.divergences])
    print("shards:", shards)
    return first.diverged_rows, actions, second.diverged_rows, [d.summary() for d in second.divergences], shards


def test_a_wrong_seed_shard_on_one_writer_is_repaired(m: Mesh) -> None:
    key = 161001
    # a row that existed before replication: seeded as a '_seed' shard on every writer alike. Each
    # writer's seed is its own: the shards table is published, so a seed written outside a
    # replication origin session reached the next writer, sometimes before its own seed (a
    # duplicate key there; once in a loaded CI rehearsal).
    for n in REGIONS:
        _behind(m, n, [("INSERT INTO counters (id, label, hits, _repl_ts, _repl_node, _repl_born) "
                        "VALUES (%s, 'seeded', 50, '-infinity', '', '-infinity')", (key,)),
                       ("INSERT INTO fraiseql_repl.shards (table_name, pk, col, node, born, amount) "
                        "VALUES ('public.counters', jsonb_build_object('id', %s::int), 'hits', '_seed', '-infinity', 50)",
                        (key,))])
    m.execute(B, "UPDATE counters SET hits = hits + 1 WHERE id = %s", (key,))
    m.wait_converged(["counters"])
    time.sleep(1.0)
    _behind(m, C, [("UPDATE fraiseql_repl.shards SET amount = amount + 1000 WHERE table_name = 'public.counters' "
                    "AND pk = jsonb_build_object('id', %s::int) AND node = '_seed'", (key,)),
                   ("UPDATE counters SET hits = hits + 1000 WHERE id = %s", (key,))])
    time.sleep(1.0)
    n1, actions, n2, left, shards = _verify_repair_verify(m, key)
    hits = {n: m.execute(n, "SELECT hits FROM counters WHERE id = %s", (key,)) for n in REGIONS}
    print("hits:", hits)
    assert n1 >= 1, "the wrong _seed shard was not even found"
    assert n2 == 0 and len({str(v) for v in hits.values()}) == 1, (n2, left, hits, shards)


def test_a_stray_shard_on_one_writer_is_repaired(m: Mesh) -> None:
    key = 161002
    m.execute(A, "INSERT INTO counters (id, label, hits) VALUES (%s, 'x', 1)", (key,))
    m.wait_converged(["counters"])
    m.execute(B, "UPDATE counters SET hits = hits + 1 WHERE id = %s", (key,))
    m.wait_converged(["counters"])
    time.sleep(1.0)
    b_node = m.execute(B, "SELECT fraiseql_repl.node_name()")[0][0]
    # C holds a copy of a B shard of another incarnation, which B never had
    _behind(m, C, [("INSERT INTO fraiseql_repl.shards (table_name, pk, col, node, born, amount, ts) "
                    "VALUES ('public.counters', jsonb_build_object('id', %s::int), 'hits', %s, '2000-01-01', 1000, "
                    "clock_timestamp() - interval '1 minute')", (key, b_node)),
                   ("UPDATE counters SET hits = hits + 1000 WHERE id = %s", (key,))])
    time.sleep(1.0)
    n1, actions, n2, left, shards = _verify_repair_verify(m, key)
    hits = {n: m.execute(n, "SELECT hits FROM counters WHERE id = %s", (key,)) for n in REGIONS}
    print("hits:", hits)
    assert n1 >= 1, "the stray shard was not even found"
    assert n2 == 0 and len({str(v) for v in hits.values()}) == 1, (n2, left, hits, shards)
