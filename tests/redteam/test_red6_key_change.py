"""Claim (docs/architecture.md): "no acknowledged write is lost; every writer ends equal after the
heal", and "a key re-inserted after a delete survives".

Attack: an UPDATE that changes a row's primary key onto a key that was deleted earlier. The local
stamp keeps the row's incarnation on an update (``_repl_born := OLD._repl_born``) and only an INSERT
consults the new key's tombstone; the capture's check for a peer's delete (40001) runs for inserts
only. So the moved row carries the birth of its old key, which is no later than the new key's
tombstone: every peer drops its image as a deleted incarnation (``dropped_deleted_incarnation``),
while the writer that made the update keeps the row. No concurrency is needed: one writer, links
healthy, three statements.

Observed (twice, deterministic): us-east-1 keeps row id = 2 ('moved'); us-west-2 and eu-west-1 have no
row 2 after every stream was applied; the resolution log on the peers counts the drop.

Second test, counters ("writers converge"): a key change of a counter row sends a shard of the new
key holding only the update's delta. Observed (twice): us-east-1 shows (11, 7), both peers (11, 0).

    .venv/bin/python -m pytest -q tests/redteam/test_red6_key_change.py
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA
from replication.model import ConflictPolicy, TablePolicy

EAST, WEST, EU = REGIONS
POLICY = ConflictPolicy(tables=(TablePolicy("counters", "counter", ("hits",)),), replicated=("items",))


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with mesh(POLICY, APP_SCHEMA, delays=False) as running:
        yield running


def test_a_row_moved_onto_a_deleted_key_reaches_every_writer(m: Mesh) -> None:
    m.execute(EAST, "INSERT INTO items (id, v) VALUES (1, 'old key'), (2, 'deleted')")
    m.wait_applied()
    m.execute(EAST, "DELETE FROM items WHERE id = 2")
    m.wait_applied()
    moved = m.execute(EAST, "UPDATE items SET id = 2, v = 'moved' WHERE id = 1 RETURNING id, v")
    assert moved == [(2, "moved")]  # acknowledged
    m.wait_applied()
    rows = {r: m.execute(r, "SELECT id, v FROM items ORDER BY id") for r in REGIONS}
    drops = {r: m.execute(r, "SELECT coalesce(sum(n), 0)::int FROM fraiseql_repl.resolution_counts "
                             "WHERE table_name = 'public.items' AND kind = 'dropped_deleted_incarnation'")[0][0]
             for r in REGIONS}
    print(f"\nrows after every stream was merged: {rows}; dropped as a deleted incarnation: {drops}")
    assert all(v == [(2, "moved")] for v in rows.values()), f"writers differ, the acknowledged move is lost: {rows}"


def test_a_counter_row_moved_to_a_new_key_shows_the_same_count_everywhere(m: Mesh) -> None:
    """The same path in a counter table: a key change sends the old key's delete and the new key's
    image, and a shard of the new key holding only the update's delta (NEW - OLD of the column), not
    the count the row carries. The moving writer keeps showing the count, every peer recomputes the
    new key's count from its shards."""
    m.execute(EAST, "INSERT INTO counters (id, label, hits) VALUES (10, 'before', 5)")
    m.wait_applied()
    m.execute(WEST, "UPDATE counters SET hits = hits + 2 WHERE id = 10")
    m.wait_applied()
    assert m.execute(EAST, "UPDATE counters SET id = 11 WHERE id = 10 RETURNING hits") == [(7,)]  # acknowledged
    m.wait_applied()
    rows = {r: m.execute(r, "SELECT id, hits FROM counters WHERE id IN (10, 11) ORDER BY id") for r in REGIONS}
    print(f"\ncounter rows after every stream was merged: {rows}")
    assert all(v == [(11, 7)] for v in rows.values()), f"writers differ on the moved counter: {rows}"
