"""Red team, claims A, B and C: convergence and remove-wins, driven change by change.

Each test feeds change images to one writer of a real 3-writer PostgreSQL 18 mesh exactly as the
apply worker does (an insert into ``fraiseql_repl.changes`` in a replica session: the ``ENABLE
REPLICA`` trigger merges it), so the arrival order, purge times and retry times are parameters.
Per-origin order is always respected. Every test FAILS while the claim it names is broken.

Run: .venv/bin/python -m pytest -q tests/redteam/test_red_merge.py
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA
from replication.model import ConflictPolicy, TablePolicy

EAST, WEST, EU = REGIONS
SCHEMA = APP_SCHEMA + (
    "CREATE TABLE people (id int PRIMARY KEY, email text UNIQUE, v text)",
    # two secondary unique keys
    "CREATE TABLE pairs (id int PRIMARY KEY, a text UNIQUE, b text UNIQUE)",
)
POLICY = ConflictPolicy(tables=(TablePolicy("counters", "counter", ("hits",)),),
                        replicated=("items", "people", "pairs"))
NEG = "-infinity"


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with mesh(POLICY, SCHEMA, delays=False) as running:
        yield running


@dataclass(frozen=True)
class Change:
    origin: str
    tbl: str
    op: str  # 'u', 'd' or 'w' (watermark)
    pk: dict[str, Any]
    ts: str
    node: str
    born: str
    row: Optional[dict[str, Any]] = None
    origin_at: Optional[str] = None  # the origin's clock when the change was written (default: ts)
    applied: Optional[dict[str, str]] = None  # watermarks: what the origin had applied, per origin


_ids = itertools.count(1)


def feed(conn: psycopg.Connection[Any], changes: Sequence[Change]) -> None:
    """Merge ``changes`` on one writer, in this order, as its apply workers would."""
    for c in changes:
        if c.op == "w":
            image = json.dumps({"applied": c.applied or {}})
        elif c.row is not None:
            image = json.dumps({**c.row, "_repl_ts": c.ts, "_repl_node": c.node, "_repl_born": c.born})
        else:
            image = None
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(
                "INSERT INTO fraiseql_repl.changes (origin, id, tbl, op, pk, ts, node, born, row_image, origin_at) "
                "VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s::jsonb, %s)",
                (c.origin, 2 * 10**9 + next(_ids), c.tbl, c.op, json.dumps(c.pk), c.ts, c.node, c.born, image,
                 c.origin_at or c.ts))


def watermark(origin: str, at: str, applied: dict[str, str]) -> Change:
    return Change(origin, "", "w", {}, at, origin, NEG, origin_at=at, applied=applied)


def rows(conn: psycopg.Connection[Any], table: str, where: str = "true") -> list[str]:
    return [r for (r,) in conn.execute(f"SELECT t::text FROM {table} t WHERE {where} ORDER BY 1").fetchall()]


def reset(conn: psycopg.Connection[Any], table: str) -> None:
    conn.execute("SET session_replication_role = replica")
    conn.execute(f"DELETE FROM {table}")
    conn.execute("DELETE FROM fraiseql_repl.tombstones WHERE table_name = %s", (f"public.{table}",))
    conn.execute("DELETE FROM fraiseql_repl.parked WHERE tbl = %s", (f"public.{table}",))
    conn.execute("DELETE FROM fraiseql_repl.purged WHERE table_name = %s", (f"public.{table}",))
    conn.execute("DELETE FROM fraiseql_repl.peer_applied")
    conn.execute("DELETE FROM fraiseql_repl.applied")
    conn.execute("SET session_replication_role = origin")


def one(conn: psycopg.Connection[Any], sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def T(s: str) -> str:
    return f"2026-12-06 10:00:{s}+00"


# -- 1. (a watermark claiming past a delete still uncommitted: tests/redteam/test_red_mesh.py, live)


# -- 2. a parked change outlives the tombstone that should drop it ----------------------------------

def test_a_parked_clash_loser_comes_back_after_its_tombstone_was_purged(m: Mesh) -> None:
    # Claims A and C. Row 2 (a@x, :01, from eu-west-1) loses a unique clash to row 1 (a@x, :02, from
    # us-west-2) on us-east-1 and waits there (FQ004). eu-west-1, which had not seen row 1, deletes
    # row 2 at :03. Every member applies the delete, us-east-1 purges its tombstone (parked changes
    # are not considered), row 1 moves to b@x, the parked row 2 is retried: it is back on us-east-1
    # only (eu-west-1 deleted it, us-west-2 dropped it at its tombstone).
    r1 = Change(WEST, "public.people", "u", {"id": 1}, T("02"), WEST, NEG, {"id": 1, "email": "a@x", "v": "r1"})
    r2 = Change(EU, "public.people", "u", {"id": 2}, T("01"), EU, NEG, {"id": 2, "email": "a@x", "v": "r2"})
    d2 = Change(EU, "public.people", "d", {"id": 2}, T("03"), EU, NEG)
    west_wm = watermark(WEST, T("08"), {EU: T("05")})  # us-west-2 has applied eu-west-1 past the delete
    r1b = Change(WEST, "public.people", "u", {"id": 1}, T("09"), WEST, NEG, {"id": 1, "email": "b@x", "v": "r1"})
    finals = {}
    with m.connect(EAST) as conn:
        for purge in (False, True):
            reset(conn, "people")
            feed(conn, [r1, r2])
            assert one(conn, "SELECT count(*) FROM fraiseql_repl.parked WHERE sqlstate = 'FQ004'") == 1
            feed(conn, [d2, west_wm])
            purged = one(conn, "SELECT fraiseql_repl.purge_tombstones()") if purge else 0
            conn.execute("SELECT * FROM fraiseql_repl.retry_parked()")
            feed(conn, [r1b])
            conn.execute("SELECT * FROM fraiseql_repl.retry_parked()")
            finals[f"purge={purge} (purged {purged})"] = rows(conn, "people", "id = 2")
    assert all(v == [] for v in finals.values()), finals


# -- 3. two secondary unique keys: no fixed point ---------------------------------------------------

X = Change("w1", "public.pairs", "u", {"id": 1}, T("01"), "w1", NEG, {"id": 1, "a": "A", "b": "P"})
I = Change("w2", "public.pairs", "u", {"id": 2}, T("02"), "w2", NEG, {"id": 2, "a": "A", "b": "Q"})  # noqa: E741
Y = Change("w3", "public.pairs", "u", {"id": 3}, T("03"), "w3", NEG, {"id": 3, "a": "B", "b": "Q"})


def _history(conn: psycopg.Connection[Any], order: Sequence[Change], retries: int) -> list[tuple[int, ...]]:
    reset(conn, "pairs")
    feed(conn, order)
    seen = [tuple(i for (i,) in conn.execute("SELECT id FROM pairs ORDER BY id").fetchall())]
    for _ in range(retries):
        conn.execute("SELECT * FROM fraiseql_repl.retry_parked()")
        seen.append(tuple(i for (i,) in conn.execute("SELECT id FROM pairs ORDER BY id").fetchall()))
    return seen


def test_retrying_parked_changes_reaches_a_fixed_point(m: Mesh) -> None:
    # Claim A ("whenever parked changes are retried"). Three rows from three writers: X (a=A, b=P,
    # :01), I (a=A, b=Q, :02), Y (a=B, b=Q, :03): I is newer than X on a, older than Y on b. Once
    # nothing new arrives, retrying parked changes must stop changing the table; otherwise two
    # writers whose agents have retried a different number of times hold different rows, forever.
    histories = {}
    with m.connect(EAST) as conn:
        for order in ((X, Y, I), (Y, I, X)):
            before = one(conn, "SELECT count(*) FROM fraiseql_repl.conflicts WHERE table_name = 'public.pairs'")
            seen = _history(conn, order, 6)
            after = one(conn, "SELECT count(*) FROM fraiseql_repl.conflicts WHERE table_name = 'public.pairs'")
            histories["".join("XIY"[[X, I, Y].index(c)] for c in order)] = (seen, f"conflict rows +{after - before}")
    assert all(len(set(seen[-3:])) == 1 for seen, _ in histories.values()), histories
