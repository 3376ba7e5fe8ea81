"""Claim (docs/architecture.md, replication/README.md): "a unique-value clash ends the same on every
writer, whatever the arrival order; the loser waits (parked, FQ004) until its value is free", "every
writer ends with the same rows", and foreign keys: "the merge does their job the same way on every
writer: a child whose parent has not arrived yet waits (parked, FQ005)".

Attack: a parent row that loses a unique clash while its child is in place. A writer that has the
parent and its child when the newer holder of the value arrives evicts the parent (the merge's
local-loser branch: parked 'clash:<node>', then a plain DELETE as a replica, where PostgreSQL's
foreign-key triggers do not fire and fk_on_delete is not called), and the child stays in its table,
an orphan. A writer that met the clash the other way round (the holder first) parks the parent, and
the child, whose parent is not there, waits (FQ005). The value is never freed: the writers differ for
good.

Observed (twice, deterministic): us-west-2 and eu-west-1 hold child 10 (parent 1 parked, not in the
table); us-east-1 holds no child, child 10 waits there (FQ005). Second test: the same DELETE in the
branch where the incoming move loses and the key's older version leaves the table.

    .venv/bin/python -m pytest -q tests/redteam/test_red6_unique_fk.py
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA
from replication.model import ConflictPolicy, TablePolicy

EAST, WEST, EU = REGIONS
SCHEMA = (*APP_SCHEMA,
          "CREATE TABLE fk_parent (id int PRIMARY KEY, email text UNIQUE)",
          "CREATE TABLE fk_child (id int PRIMARY KEY, parent int REFERENCES fk_parent (id) ON DELETE CASCADE)")
POLICY = ConflictPolicy(tables=(TablePolicy("counters", "counter", ("hits",)),),
                        replicated=("items", "fk_parent", "fk_child"))


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with mesh(POLICY, SCHEMA, delays=False) as running:
        yield running


def until(cond: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def has(m: Mesh, r: str, table: str, k: int) -> bool:
    return bool(m.execute(r, f"SELECT count(*) FROM {table} WHERE id = %s", (k,))[0][0])


def state(m: Mesh) -> dict[str, tuple[list[str], list[str], list[str]]]:
    return {r: (sorted(x for (x,) in m.execute(r, "SELECT t::text FROM fk_parent t")),
                sorted(x for (x,) in m.execute(r, "SELECT t::text FROM fk_child t")),
                sorted(x for (x,) in m.execute(r, "SELECT tbl || ' ' || pk::text || ' ' || sqlstate FROM fraiseql_repl.parked")))
            for r in REGIONS}


def settle(m: Mesh) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Heal, let every stream through, retry parked changes (as the agents do) until nothing changes."""
    m.heal()
    start = {o: m.execute(o, "SELECT clock_timestamp()::text")[0][0] for o in REGIONS}

    def merged() -> bool:
        for o in REGIONS:
            m.execute(o, "SELECT fraiseql_repl.emit_watermark()")
        return all(m.execute(r, "SELECT coalesce(max(at) >= %s::timestamptz, false) FROM fraiseql_repl.applied "
                                "WHERE origin = %s", (start[o], o))[0][0] for o in REGIONS for r in REGIONS if r != o)
    until(merged, "every writer merged every stream", 120)
    last, quiet = None, 0
    for _ in range(100):
        for r in REGIONS:
            m.execute(r, "SELECT * FROM fraiseql_repl.retry_parked()")
        now = state(m)
        quiet = quiet + 1 if now == last else 0
        if quiet >= 3:
            return now
        last = now
    raise AssertionError(f"never settled: {last}")


def test_a_parent_that_loses_a_unique_clash_leaves_the_same_children_everywhere(m: Mesh) -> None:
    m.links[(EAST, WEST)].partition()  # us-east-1 stops hearing us-west-2
    m.execute(WEST, "INSERT INTO fk_parent (id, email) VALUES (1, 'v@x')")
    m.execute(WEST, "INSERT INTO fk_child (id, parent) VALUES (10, 1)")
    until(lambda: has(m, EU, "fk_child", 10), "the child at eu-west-1")
    m.execute(EAST, "INSERT INTO fk_parent (id, email) VALUES (2, 'v@x')")  # newer: it keeps the value
    until(lambda: all(has(m, r, "fk_parent", 2) and not has(m, r, "fk_parent", 1) for r in (WEST, EU)),
          "parent 2 won at us-west-2 and eu-west-1")
    final = settle(m)
    print("\n" + "\n".join(f"{r}: parents {p}\n    children {c}\n    parked {k}" for r, (p, c, k) in final.items()))
    assert all(final[r][:2] == final[EAST][:2] for r in REGIONS), "writers hold different rows: " + str(
        {r: final[r][:2] for r in REGIONS})


def test_a_parent_whose_move_loses_a_unique_clash_leaves_no_orphan_child(m: Mesh) -> None:
    """The other branch: a parent's move onto a taken value arrives and loses; the merge removes the
    parent's older version from the table (the key's newest version waits), again with a plain
    DELETE as a replica: its child stays, referencing a parent the table no longer has. The foreign
    key the application declared is broken on every writer that had the parent's older version.
    Observed (twice): child 30 without its parent 3 in every writer's table."""
    m.execute(WEST, "INSERT INTO fk_parent (id, email) VALUES (3, 'a3@x')")
    m.execute(WEST, "INSERT INTO fk_child (id, parent) VALUES (30, 3)")
    until(lambda: all(has(m, r, "fk_child", 30) for r in REGIONS), "the child everywhere")
    m.links[(EAST, WEST)].partition()
    m.execute(WEST, "UPDATE fk_parent SET email = 'w3@x' WHERE id = 3")
    m.execute(EAST, "INSERT INTO fk_parent (id, email) VALUES (4, 'w3@x')")  # newer: it keeps the value
    settle(m)
    orphans = {r: m.execute(r, "SELECT c.id, c.parent FROM fk_child c LEFT JOIN fk_parent p ON p.id = c.parent "
                               "WHERE c.parent IS NOT NULL AND p.id IS NULL AND c.id = 30") for r in REGIONS}
    print(f"\nchildren whose parent is not in the table: {orphans}")
    assert not any(orphans.values()), f"a foreign key of the application is broken on {orphans}"
