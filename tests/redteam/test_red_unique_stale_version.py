"""Red team, the unique-clash claim on a live 3-writer PostgreSQL 18 mesh: "a unique-value clash ends
the same on every writer, whatever the arrival order; the loser waits (parked, FQ004) until its value
is free", and "every writer ends equal after the heal".

Real local writes, real apply workers, single links frozen with the harness's proxies
(``DelayProxy.partition``) so that versions arrive in different orders on different writers; after the
heal every writer retries its parked changes until nothing changes any more, then the writers'
rows (versions included) and the versions that wait (the newest parked version of each key that is
newer than the key's row) are compared.

The finding: a change that moves a key onto a value a newer row holds loses the clash and waits,
but the key's *older* version stayed in the table on that writer. A writer that met the clash the
other way round (the key's new version already in place when the newer holder arrived) parked the
key and removed it. One writer keeps a row the others do not have, forever (the nemesis's
``nemesis_people`` row present on one writer only after the heal). The same happens when the key's
older version arrives after its newer one began to wait. Sections 1 and 2 are the two schedules,
deterministic; section 3 the seeded probe that found them, which also checks that no acknowledged
write is lost and no deleted incarnation comes back. Section 4 is a second finding of the probe,
a race between a merged delete and an uncommitted insert of the same new key.

Run: .venv/bin/python -m pytest -q tests/redteam/test_red_unique_stale_version.py
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA
from replication.model import ConflictPolicy, TablePolicy

EAST, WEST, EU = REGIONS
SCHEMA = APP_SCHEMA + (
    "CREATE TABLE clash_people (id int PRIMARY KEY, email text UNIQUE, v text)",
    # two secondary unique keys
    "CREATE TABLE clash_pairs (id int PRIMARY KEY, a text UNIQUE, b text UNIQUE, v text)",
)
POLICY = ConflictPolicy(tables=(TablePolicy("counters", "counter", ("hits",)),),
                        replicated=("items", "clash_people", "clash_pairs"))
TABLE = "clash_people"


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with mesh(POLICY, SCHEMA, delays=False) as running:
        yield running


@pytest.fixture(autouse=True)
def healed(m: Mesh) -> Iterator[None]:
    yield
    m.heal()


# -- observation -------------------------------------------------------------------------------

def state(m: Mesh, lo: int, hi: int, table: str = TABLE) -> dict[str, tuple[list[str], list[str]]]:
    """Per writer: its rows of keys lo..hi (versions included) and the versions that wait there (for
    every key, the newest parked version, if it is newer than the key's row: an older parked
    version of a key is superseded and merges to nothing)."""
    out = {}
    for r in REGIONS:
        rows = sorted(x for (x,) in m.execute(r, f"SELECT t::text FROM {table} t WHERE id BETWEEN %s AND %s", (lo, hi)))
        waiting = sorted(x for (x,) in m.execute(r, f"""
            SELECT DISTINCT ON (p.pk) p.row_image::text FROM fraiseql_repl.parked p
            WHERE p.tbl = 'public.{table}' AND p.op = 'u' AND (p.pk ->> 'id')::int BETWEEN %s AND %s
              AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.id = (p.pk ->> 'id')::int AND NOT
                              fraiseql_repl.newer_row(p.born, p.ts, p.node, t._repl_born, t._repl_ts, t._repl_node))
            ORDER BY p.pk, p.born DESC, p.ts DESC, p.node COLLATE "C" DESC""", (lo, hi)))
        out[r] = (rows, waiting)
    return out


def heal_and_settle(m: Mesh, lo: int, hi: int, table: str = TABLE, *, rounds: int = 4,
                    limit: int = 200) -> dict[str, tuple[list[str], list[str]]]:
    """Heal every link, wait until every writer has merged every other writer's stream up to now,
    then retry parked changes everywhere until the state stops changing (as the agents do)."""
    m.heal()
    start = {o: m.execute(o, "SELECT clock_timestamp()::text")[0][0] for o in REGIONS}
    # A watermark claims no later than the oldest write transaction open on its writer (an apply
    # worker's, say), so one may fall short: emit them until every writer has merged past the start.
    until(lambda: all(m.execute(o, "SELECT fraiseql_repl.emit_watermark()") is not None for o in REGIONS) and all(
        m.execute(r, "SELECT coalesce(max(at) >= %s::timestamptz, false) FROM fraiseql_repl.applied WHERE origin = %s",
                  (start[o], o))[0][0] for o in REGIONS for r in REGIONS if r != o), "every writer merged every stream", 180, 0.3)
    last, quiet = None, 0
    for _ in range(limit):
        for r in REGIONS:
            m.execute(r, "SELECT * FROM fraiseql_repl.retry_parked()")
        now = state(m, lo, hi, table)
        quiet = quiet + 1 if now == last else 0
        if quiet >= rounds:
            return now
        last = now
    raise AssertionError(f"retrying parked changes never settled: {last}")


def until(cond: Callable[[], bool], what: str, timeout: float = 60, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(every)


def row(m: Mesh, region: str, k: int) -> Any:
    found = m.execute(region, f"SELECT email FROM {TABLE} WHERE id = %s", (k,))
    return found[0][0] if found else None


def parked(m: Mesh, region: str, k: int) -> bool:
    return bool(m.execute(region, "SELECT count(*) FROM fraiseql_repl.parked WHERE tbl = %s AND pk = jsonb_build_object('id', %s)",
                          (f"public.{TABLE}", k))[0][0])


def cut(m: Mesh, subscriber: str, publisher: str) -> None:
    """Freeze what ``subscriber`` receives from ``publisher`` (one direction, one link)."""
    m.links[(subscriber, publisher)].partition()


def heal(m: Mesh, subscriber: str, publisher: str) -> None:
    m.links[(subscriber, publisher)].heal()


def assert_equal(final: dict[str, tuple[list[str], list[str]]]) -> None:
    assert all(final[r] == final[EAST] for r in REGIONS), "\n".join(
        f"{r}: rows {rows}\n    waiting {waiting}" for r, (rows, waiting) in final.items())


# -- 1. schedule A: a key moved onto a value that a newer row took meanwhile ----------------------

def test_a_key_moved_onto_a_value_taken_meanwhile_ends_alike_everywhere(m: Mesh) -> None:
    # us-east-1 inserts row 1 (a@x); everyone has it. us-west-2 stops hearing us-east-1. us-east-1
    # moves row 1 to b@x; us-west-2, which still sees row 1 at a@x, inserts row 2 with b@x, later
    # (newer). us-east-1 and eu-west-1 meet the clash with row 1 at b@x in place: row 2 wins, row 1
    # waits (parked, removed from the table). After the heal us-west-2 meets it the other way round:
    # row 1's move loses the clash and waits there too, but row 1's OLD version (a@x) stayed in
    # us-west-2's table. Reproduced on every run on 61aaf38 (5 of 5).
    k1, k2 = 101, 102
    m.execute(EAST, f"INSERT INTO {TABLE} (id, email, v) VALUES (%s, 'a@x', 'east')", (k1,))
    until(lambda: all(row(m, r, k1) == "a@x" for r in REGIONS), "row 1 everywhere")
    cut(m, WEST, EAST)
    cut(m, EU, WEST)  # eu-west-1 meets the clash as us-east-1 does (row 1's move first)
    m.execute(EAST, f"UPDATE {TABLE} SET email = 'b@x' WHERE id = %s", (k1,))
    until(lambda: row(m, EU, k1) == "b@x", "row 1's move at eu-west-1")
    m.execute(WEST, f"INSERT INTO {TABLE} (id, email, v) VALUES (%s, 'b@x', 'west')", (k2,))
    until(lambda: row(m, EAST, k2) == "b@x" and parked(m, EAST, k1), "row 2 wins at us-east-1")
    final = heal_and_settle(m, 100, 199)
    assert_equal(final)
    rows, waiting = final[EAST]
    assert [r.split(",")[:2] for r in rows] == [["(102", "b@x"]] and len(waiting) == 1 and '"id": 101' in waiting[0]


# -- 2. schedule B: a key's older version arrives after its newer version began to wait ---------

def test_an_older_version_arriving_after_the_newer_one_waits_ends_alike_everywhere(m: Mesh) -> None:
    # us-east-1 hears neither us-west-2 nor eu-west-1. us-west-2 inserts row 1 (c@x); eu-west-1 takes
    # it and moves it to d@x; us-east-1 inserts row 2 with d@x, later. eu-west-1 comes back first:
    # at us-east-1 row 1's move (d@x) loses to row 2 and waits, with no row 1 in the table. Then
    # us-west-2 comes back with row 1's insert (c@x, free): the older version goes into the table
    # while the newer one waits. Reproduced on every run on 61aaf38 (5 of 5).
    k1, k2 = 201, 202
    cut(m, EAST, WEST)
    cut(m, EAST, EU)
    m.execute(WEST, f"INSERT INTO {TABLE} (id, email, v) VALUES (%s, 'c@x', 'west')", (k1,))
    until(lambda: row(m, EU, k1) == "c@x", "row 1 at eu-west-1")
    m.execute(EU, f"UPDATE {TABLE} SET email = 'd@x' WHERE id = %s", (k1,))
    m.execute(EAST, f"INSERT INTO {TABLE} (id, email, v) VALUES (%s, 'd@x', 'east')", (k2,))
    until(lambda: row(m, EU, k2) == "d@x" and parked(m, EU, k1), "row 2 wins at eu-west-1")
    heal(m, EAST, EU)
    until(lambda: parked(m, EAST, k1), "row 1's move waits at us-east-1")
    final = heal_and_settle(m, 200, 299)
    assert_equal(final)
    rows, waiting = final[EAST]
    assert [r.split(",")[:2] for r in rows] == [["(202", "d@x"]] and len(waiting) == 1 and '"id": 201' in waiting[0]


# -- 3. the seeded stress probe that found it -------------------------------------------------------

Ack = tuple[int, str, str, str, str]  # key, 'u' or 'd', born, ts, node (a delete: the incarnation it removed)


def probe(m: Mesh, table: str, seed: int, steps: int = 150, *, home_only: bool = True) -> tuple[list[str], list[Ack]]:
    """Random inserts, moves and deletes of six keys over three values per unique column; single
    links frozen and healed at random; retries, watermarks and tombstone purges (margin 0) on random
    writers at random times. With ``home_only`` each key is written by one region only (two per
    region, as the nemesis's clients write their own rows), otherwise by any region. Returns the
    schedule as it ran (the link timing is real, so a seed is a workload, not a fixed interleaving)
    and every acknowledged write's version."""
    rng = random.Random(seed)
    keys = [1000 * seed + i for i in range(6)]
    values = [f"s{seed}e{i}" for i in range(3)]
    cols = ("email",) if table == "clash_people" else ("a", "b")
    conns = {r: m.connect(r) for r in REGIONS}
    log: list[str] = []
    acks: list[Ack] = []
    try:
        for _ in range(steps):
            roll = rng.random()
            if roll < 0.6:
                r, k, op = rng.choice(REGIONS), rng.choice(keys), rng.random()
                if home_only:
                    r = REGIONS[k % len(REGIONS)]
                vals = tuple(rng.choice(values) for _ in cols)
                names, marks = ", ".join(cols), ", ".join(["%s"] * len(cols))
                if op < 0.5:
                    sql, args, what = (f"INSERT INTO {table} (id, {names}, v) VALUES (%s, {marks}, %s) ON CONFLICT (id) DO UPDATE "
                                       f"SET ({names}, v) = ROW({', '.join('EXCLUDED.' + c for c in cols)}, EXCLUDED.v)",
                                       (k, *vals, r), f"upsert {k} {vals}")
                elif op < 0.8:
                    sql, args, what = f"UPDATE {table} SET ({names}) = ROW({marks}) WHERE id = %s", (*vals, k), f"move {k} {vals}"
                else:
                    sql, args, what = f"DELETE FROM {table} WHERE id = %s", (k,), f"delete {k}"
                try:
                    done = conns[r].execute((sql + " RETURNING id, _repl_born::text, _repl_ts::text, _repl_node").encode(),
                                            args).fetchall()
                    acks += [(i, "d" if what.startswith("delete") else "u", born, ts, node) for i, born, ts, node in done]
                    log.append(f"{r}: {what} ({len(done)} row)")
                except psycopg.Error as exc:
                    log.append(f"{r}: {what} refused ({exc.sqlstate})")
            elif roll < 0.75:
                link = rng.choice(sorted(m.links))
                if m.links[link].partitioned:
                    m.links[link].heal()
                    log.append(f"heal {link}")
                else:
                    m.links[link].partition()
                    log.append(f"cut {link}")
            elif roll < 0.83:
                r = rng.choice(REGIONS)
                m.execute(r, "SELECT * FROM fraiseql_repl.retry_parked()")
                log.append(f"retry {r}")
            elif roll < 0.88:
                r = rng.choice(REGIONS)
                m.execute(r, "SELECT fraiseql_repl.purge_tombstones(interval '0')")
                log.append(f"purge {r}")
            elif roll < 0.93:
                r = rng.choice(REGIONS)
                m.execute(r, "SELECT fraiseql_repl.emit_watermark()")
                log.append(f"watermark {r}")
            else:
                time.sleep(rng.uniform(0, 0.15))
    finally:
        for c in conns.values():
            c.close()
    return log, acks


def lost_or_resurrected(m: Mesh, table: str, acks: list[Ack]) -> list[str]:
    """No deleted incarnation is back (in the table or waiting), and the newest acknowledged version
    of a key that no delete removed is where the key is (in the table, or waiting), or older than it."""
    out = []
    for r in REGIONS:
        for k in sorted({a[0] for a in acks}):
            killed = max((a[2] for a in acks if a[0] == k and a[1] == "d"), default=None, key=_version)
            live = [a for a in acks if a[0] == k and a[1] == "u" and (killed is None or _version(a[2]) > _version(killed))]
            newest = max(live, default=None, key=lambda a: (_version(a[2]), _version(a[3]), a[4]))
            (key_now,) = m.execute(r, f"""
                SELECT (SELECT ARRAY[_repl_born::text, _repl_ts::text, _repl_node] FROM {table} WHERE id = %s)
                     , (SELECT ARRAY[born::text, ts::text, node] FROM fraiseql_repl.parked p WHERE p.tbl = 'public.{table}'
                        AND p.op = 'u' AND p.pk = jsonb_build_object('id', %s)
                        ORDER BY p.born DESC, p.ts DESC, p.node COLLATE "C" DESC LIMIT 1)""", (k, k))
            in_table, waiting = key_now
            for where, v in (("row", in_table), ("waiting version", waiting)):
                if v and killed is not None and _version(v[0]) <= _version(killed):
                    out.append(f"{r}: {k}: deleted incarnation {v} is back as a {where}")
            have = in_table or waiting  # the key's version here: its row, else the version that waits
            if newest and (not have or (_version(have[0]), _version(have[1]), have[2]) <
                           (_version(newest[2]), _version(newest[3]), newest[4])):
                out.append(f"{r}: {k}: acknowledged {newest[1:]} lost (here: {have})")
    return out


def _version(x: str) -> tuple[int, str]:
    return (0, "") if x == "-infinity" else (1, x.replace("T", " "))


# Seeds with which the probe failed on 61aaf38, each table on a mesh of its own, seeds 1 to 40 run
# one after the other (link timing is real: a seed is a workload and reproduces only sometimes).
# Each key written by its home region only (as the nemesis writes nemesis_people): clash_people
# 11 of 40 (1, 8, 9, 14, 15, 18, 19, 21, 26, 35, 40), clash_pairs 9 of 40 (3, 6, 11, 14, 20, 24,
# 25, 26, 40; 24 with every writer alike, all three holding a key's older version while its newest
# acknowledged version waits). Any region writing any key: clash_people 2 of 40 twice (16, 24 and
# 1, 24), clash_pairs 4 of 40. With the fix: 0 of the 80 home-only runs failed; of some 230
# any-region runs, the failures recorded (2; a third's output was not kept) each had a deleted
# incarnation back on one writer: section 4, another cause.
@pytest.mark.parametrize(("table", "seed"), [("clash_people", 1), ("clash_people", 8), ("clash_people", 9),
                                             ("clash_people", 14), ("clash_pairs", 3), ("clash_pairs", 6),
                                             ("clash_pairs", 11), ("clash_pairs", 24)])
def test_the_stress_probe_ends_alike_everywhere_and_loses_no_write(m: Mesh, table: str, seed: int) -> None:
    log, acks = probe(m, table, seed)
    final = heal_and_settle(m, 1000 * seed, 1000 * seed + 999, table)
    problems = lost_or_resurrected(m, table, acks)
    assert all(final[r] == final[EAST] for r in REGIONS) and not problems, "\n".join(
        [f"{r}: rows {rows}\n    waiting {waiting}" for r, (rows, waiting) in final.items()] + problems
        + bookkeeping(m, table, 1000 * seed, 1000 * seed + 999) + ["acknowledged:"] + [str(a) for a in acks]
        + ["schedule:"] + log)


def bookkeeping(m: Mesh, table: str, lo: int, hi: int) -> list[str]:
    """What a failure needs to be diagnosed: every writer's tombstones, purge horizon and parked changes."""
    out = []
    for r in REGIONS:
        out.append(f"{r}: purged {m.execute(r, 'SELECT upto::text FROM fraiseql_repl.purged WHERE table_name = %s', (f'public.{table}',))}")
        out += [f"{r}: tombstone {x}" for x in m.execute(
            r, "SELECT pk::text, ts::text, node, born::text, origin FROM fraiseql_repl.tombstones WHERE table_name = %s "
               "AND (pk ->> 'id')::int BETWEEN %s AND %s ORDER BY 1", (f"public.{table}", lo, hi))]
        out += [f"{r}: parked {x}" for x in m.execute(
            r, "SELECT origin, id, row_image::text, sqlstate FROM fraiseql_repl.parked WHERE tbl = %s "
               "AND (pk ->> 'id')::int BETWEEN %s AND %s ORDER BY parked_at", (f"public.{table}", lo, hi))]
    return out


# -- 4. found by the probe with the fix for 1 and 2 in place (seed 89, any region writing any key) --
# A different cause: two merges (or a merge and a local insert) of one key that no row holds yet
# run at once, and neither sees the other's uncommitted work. Closed by a lock on the key
# (fraiseql_repl.key_bucket) that inserts take shared and a merged delete that found no row takes
# exclusive: the second one waits for the first's commit and sees its work, in either order; an
# insert whose snapshot predates the delete (REPEATABLE READ, SERIALIZABLE) is refused.

_ids = itertools.count(1)


def _merge(conn: psycopg.Connection[Any], origin: str, op: str, ts: str, born: str, image: Optional[dict[str, Any]],
           key: int = 301) -> None:
    """Merge one change image of ``key`` on this connection's writer, as an apply worker does, in
    the transaction the caller opened."""
    conn.execute("SET LOCAL session_replication_role = replica")
    conn.execute("INSERT INTO fraiseql_repl.changes (origin, id, tbl, op, pk, ts, node, born, row_image, origin_at) "
                 "VALUES (%s, %s, %s, %s, jsonb_build_object('id', %s::int), %s, %s, %s, %s::jsonb, %s)",
                 (origin, 3 * 10**9 + next(_ids), f"public.{TABLE}", op, key, ts, origin, born,
                  None if image is None else json.dumps({**image, "_repl_ts": ts, "_repl_node": origin, "_repl_born": born}), ts))


def test_a_delete_merged_while_another_link_merges_the_same_new_key_removes_it(m: Mesh) -> None:
    # Claims "a deleted row never comes back" and "every writer ends equal". us-west-2 inserts key 301;
    # eu-west-1 receives it and deletes it. us-east-1 has neither and receives both at once, on two
    # links: one apply worker merges the insert (no row here to lock, no tombstone yet: it inserts),
    # the other merges the delete before that commits (the tombstone goes in, the row it should
    # remove is not visible yet: nothing removed). Both commit: us-east-1 keeps a row of the deleted
    # incarnation, and the other writers drop every later version of it at their tombstone.
    # Deterministic: the delete's merge commits while the insert's merge is held open.
    born, t_ins, t_del = "2026-12-06 10:00:00+00", "2026-12-06 10:00:01+00", "2026-12-06 10:00:02+00"
    image = {"id": 301, "email": "race@x", "v": "west"}
    with m.connect(EAST) as ins, m.connect(EAST) as dele:
        pid = dele.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        ins.execute("BEGIN")
        _merge(ins, WEST, "u", t_ins, born, image)

        def delete() -> None:
            with dele.transaction():
                _merge(dele, EU, "d", t_del, born, None)

        th = threading.Thread(target=delete)
        th.start()
        # the delete's merge either finishes or waits for the insert's (a fix may make it wait)
        until(lambda: not th.is_alive() or bool(m.execute(
            EAST, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (pid,))[0][0]),
            "the delete's merge finished or waits")
        ins.execute("COMMIT")
        th.join(60)
    tomb = m.execute(EAST, "SELECT born FROM fraiseql_repl.tombstones WHERE table_name = %s AND pk = '{\"id\": 301}'",
                     (f"public.{TABLE}",))
    assert tomb, "the delete left no tombstone"
    assert m.execute(EAST, f"SELECT t::text FROM {TABLE} t WHERE id = 301") == [], \
        "a row of the incarnation the tombstone says was deleted is still here"


def test_a_delete_merged_while_a_local_insert_of_the_same_new_key_is_open_removes_it(m: Mesh) -> None:
    # The same race with a local insert instead of a second link: the insert's check for a peer's
    # delete (the 40001 in the emit trigger) runs before the delete's merge commits, and the merge's
    # DELETE does not see the uncommitted row. The delete removed the incarnation the local row
    # belongs to (same birth: eu-west-1 deleted a row born like this one), so every other writer
    # drops the local row's image at its tombstone while us-east-1 keeps the row.
    with m.connect(EAST) as local, m.connect(EAST) as dele:
        pid = dele.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        local.execute("BEGIN")
        (born,) = local.execute(f"INSERT INTO {TABLE} (id, email, v) VALUES (302, 'race2@x', 'east') "
                                "RETURNING _repl_born::text").fetchone()  # type: ignore[misc]

        def delete() -> None:
            with dele.transaction():
                dele.execute("SET LOCAL session_replication_role = replica")
                dele.execute("INSERT INTO fraiseql_repl.changes (origin, id, tbl, op, pk, ts, node, born, origin_at) "
                             "VALUES (%s, %s, %s, 'd', '{\"id\": 302}', clock_timestamp(), %s, %s, clock_timestamp())",
                             (EU, 3 * 10**9 + next(_ids), f"public.{TABLE}", EU, born))

        th = threading.Thread(target=delete)
        th.start()
        until(lambda: not th.is_alive() or bool(m.execute(
            EAST, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (pid,))[0][0]),
            "the delete's merge finished or waits")
        try:
            local.execute("COMMIT")
        except psycopg.Error:
            pass  # refused (40001): the insert did not happen, which is what the claim allows
        th.join(60)
    assert m.execute(EAST, f"SELECT t::text FROM {TABLE} t WHERE id = 302") == [], \
        "a row of the incarnation the tombstone says was deleted is still here"


def test_an_insert_of_a_new_key_while_a_merged_delete_of_it_is_open_waits_and_is_refused(m: Mesh) -> None:
    # The other order: the delete's merge (the key's lock held, its tombstone uncommitted) comes
    # first. The local insert waits for it, then sees the tombstone: refused (40001), its retry
    # starts a new incarnation, which survives the delete. Before the lock, the insert did not wait,
    # missed the uncommitted tombstone, and its row of the deleted incarnation stayed.
    with m.connect(EAST) as dele, m.connect(EAST) as local:
        pid = local.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        dele.execute("BEGIN")
        dele.execute("SET LOCAL session_replication_role = replica")
        dele.execute("INSERT INTO fraiseql_repl.changes (origin, id, tbl, op, pk, ts, node, born, origin_at) "
                     "VALUES (%s, %s, %s, 'd', '{\"id\": 303}', clock_timestamp() + interval '1 ms', %s, clock_timestamp(), "
                     "clock_timestamp())",
                     (EU, 3 * 10**9 + next(_ids), f"public.{TABLE}", EU))
        outcome: list[str] = []

        def insert() -> None:
            try:
                local.execute(f"INSERT INTO {TABLE} (id, email, v) VALUES (303, 'race3@x', 'east')")
                outcome.append("inserted")
            except psycopg.Error as exc:
                outcome.append(str(exc.sqlstate))

        th = threading.Thread(target=insert)
        th.start()
        until(lambda: not th.is_alive() or bool(m.execute(
            EAST, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (pid,))[0][0]),
            "the insert finished or waits")
        dele.execute("COMMIT")
        th.join(60)
    assert outcome == ["40001"], outcome
    assert m.execute(EAST, f"SELECT t::text FROM {TABLE} t WHERE id = 303") == []
    m.execute(EAST, f"INSERT INTO {TABLE} (id, email, v) VALUES (303, 'race3@x', 'east')")  # the retry
    assert m.execute(EAST, f"SELECT email FROM {TABLE} t WHERE id = 303 AND _repl_born > (SELECT born FROM "
                           "fraiseql_repl.tombstones WHERE table_name = %s AND pk = '{\"id\": 303}')",
                     (f"public.{TABLE}",)) == [("race3@x",)], "the retry is a new incarnation"



def test_two_links_merging_inserts_and_deletes_of_two_new_keys_in_opposite_orders_do_not_stall(m: Mesh) -> None:
    # The key's lock is held until commit, and one apply transaction merges many changes: link A
    # merges the insert of key 304 then the delete of key 305, link B the insert of 305 then the
    # delete of 304, each delete waiting for the other link's insert to commit. A merged delete
    # waits at most 200 ms for its key's bucket (lock_bucket), then retries its change, parks it and
    # moves on, which ends the cycle; the parked delete, merged again (as the agent does), removes
    # its row. Neither link waits forever and the writer ends with neither key. On a loaded machine
    # the second delete can also outwait 200 ms before the first link commits, and park too (a CI
    # rehearsal saw 2): one or both.
    born, t_ins, t_del = "2026-12-06 11:00:00+00", "2026-12-06 11:00:01+00", "2026-12-06 11:00:02+00"
    retried = ("SELECT coalesce(sum(n), 0) FROM fraiseql_repl.resolution_counts "
               "WHERE table_name = %s AND kind = 'delete_applied_after_retry'", (f"public.{TABLE}",))
    before = m.execute(EAST, *retried)[0][0]
    with m.connect(EAST) as a, m.connect(EAST) as b:
        pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        a.execute("BEGIN")
        _merge(a, WEST, "u", t_ins, born, {"id": 304, "email": "dl304@x", "v": "west"}, key=304)
        b.execute("BEGIN")
        _merge(b, EU, "u", t_ins, born, {"id": 305, "email": "dl305@x", "v": "eu"}, key=305)

        def link_a() -> None:
            _merge(a, EU, "d", t_del, born, None, key=305)
            a.execute("COMMIT")

        th = threading.Thread(target=link_a)
        th.start()
        until(lambda: not th.is_alive() or bool(m.execute(
            EAST, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (pid,))[0][0]),
            "link A's delete finished or waits")
        _merge(b, WEST, "d", t_del, born, None, key=304)
        b.execute("COMMIT")
        th.join(120)
        assert not th.is_alive(), "link A never finished"
    m.execute(EAST, "SELECT * FROM fraiseql_repl.retry_parked()")
    assert 1 <= m.execute(EAST, *retried)[0][0] - before <= 2, "a delete that waited for the other link parked, then merged"
    assert m.execute(EAST, f"SELECT id FROM {TABLE} WHERE id IN (304, 305)") == []
    assert m.execute(EAST, "SELECT count(*) FROM fraiseql_repl.parked WHERE tbl = %s AND (pk ->> 'id')::int IN (304, 305)",
                     (f"public.{TABLE}",)) == [(0,)]


@pytest.mark.parametrize(("level", "k"), [("REPEATABLE READ", 306), ("SERIALIZABLE", 307)])
def test_an_insert_whose_snapshot_predates_a_merged_delete_of_its_key_is_refused(m: Mesh, level: str, k: int) -> None:
    # The delete's merge commits after the inserting transaction took its snapshot and before the
    # insert: the key's lock is free by then, and the tombstone is not in the snapshot. Before, the
    # insert went through and its row of the deleted incarnation stayed on this writer only.
    with m.connect(EAST) as local, m.connect(EAST) as dele:
        local.execute(f"BEGIN ISOLATION LEVEL {level}")
        local.execute("SELECT count(*) FROM items").fetchone()  # the snapshot
        with dele.transaction():
            dele.execute("SET LOCAL session_replication_role = replica")
            dele.execute("INSERT INTO fraiseql_repl.changes (origin, id, tbl, op, pk, ts, node, born, origin_at) "
                         "VALUES (%s, %s, %s, 'd', jsonb_build_object('id', %s::int), clock_timestamp() + interval '1 ms', %s, "
                         "clock_timestamp(), clock_timestamp())", (EU, 3 * 10**9 + next(_ids), f"public.{TABLE}", k, EU))
        with pytest.raises(psycopg.errors.SerializationFailure):
            local.execute(f"INSERT INTO {TABLE} (id, email, v) VALUES (%s, %s, 'east')", (k, f"snap{k}@x"))
            local.execute("COMMIT")
        local.execute("ROLLBACK")
    assert m.execute(EAST, f"SELECT t::text FROM {TABLE} t WHERE id = %s", (k,)) == []
    m.execute(EAST, f"INSERT INTO {TABLE} (id, email, v) VALUES (%s, %s, 'east')", (k, f"snap{k}@x"))  # the retry
    assert m.execute(EAST, f"SELECT email FROM {TABLE} WHERE id = %s", (k,)) == [(f"snap{k}@x",)]
