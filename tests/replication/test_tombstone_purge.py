"""Tombstones are purged only when no change still in flight can need them: a long partition holds
the purge back, so a region that kept editing rows somebody deleted cannot bring them back."""

from __future__ import annotations

import time

from drills.mesh import REGIONS, Mesh

A, B, C = REGIONS
KEYS = (700, 701, 702)


def _watermarks(m: Mesh, nodes: tuple[str, ...], rounds: int = 2) -> None:
    """What each agent does every few seconds: tell the peers what this node has applied."""
    for _ in range(rounds):
        for n in nodes:
            m.execute(n, "SELECT fraiseql_repl.emit_watermark()")
        time.sleep(0.3)


def _purge(m: Mesh, n: str) -> int:
    return int(m.execute(n, "SELECT fraiseql_repl.purge_tombstones(interval '0 seconds')")[0][0])


def _tombstones(m: Mesh, n: str) -> int:
    return int(m.execute(n, "SELECT count(*) FROM fraiseql_repl.tombstones WHERE table_name = 'public.items' "
                            "AND (pk ->> 'id')::int BETWEEN 700 AND 799")[0][0])


def _partition_and_edit(m: Mesh, offset: int) -> None:
    keys = [k + offset for k in KEYS]
    m.execute(A, "INSERT INTO items SELECT g, 'v' FROM unnest(%s::int[]) g", (keys,))
    m.wait_converged(["items"])
    m.partition(C)
    m.execute(A, "DELETE FROM items WHERE id = ANY(%s)", (keys,))
    m.wait_for(B, "SELECT count(*) FROM items WHERE id = ANY(ARRAY[%s])" % ",".join(map(str, keys)), 0)
    for k in keys:  # C has not seen the delete: it keeps editing the same rows
        m.execute(C, "UPDATE items SET v = 'edited during the partition' WHERE id = %s", (k,))
    time.sleep(0.05)


def test_a_partitioned_region_holds_the_purge_back_and_nothing_is_resurrected(m: Mesh) -> None:
    _partition_and_edit(m, 0)
    try:
        _watermarks(m, (A, B))
        assert _purge(m, A) == 0 and _purge(m, B) == 0  # C has not applied the deletes yet
        assert _tombstones(m, A) == _tombstones(m, B) == 3
    finally:
        m.heal()
    m.wait_converged(["items"], timeout=20)
    assert all(m.execute(n, "SELECT count(*) FROM items WHERE id BETWEEN 700 AND 702") == [(0,)] for n in REGIONS)
    _watermarks(m, (A, B, C), rounds=3)
    assert sum(_purge(m, n) for n in REGIONS) >= 3  # once every region has caught up, they go
    assert all(_tombstones(m, n) == 0 for n in REGIONS)


def test_purging_without_that_guard_would_resurrect_the_rows(m: Mesh) -> None:
    # The hazard the guard prevents, shown for real: drop the tombstones while C is away.
    _partition_and_edit(m, 10)
    try:
        for n in (A, B):
            m.execute(n, "DELETE FROM fraiseql_repl.tombstones WHERE (pk ->> 'id')::int BETWEEN 710 AND 712")
    finally:
        m.heal()
    # C's edits reach A and B, which no longer remember the delete: the rows come back there (and
    # only there: C applied the delete after its edits), a resurrection and a divergence.
    m.wait_for(A, "SELECT count(*) FROM items WHERE id BETWEEN 710 AND 712", 3, timeout=20)
    m.wait_for(C, "SELECT count(*) FROM items WHERE id BETWEEN 710 AND 712", 0, timeout=20)
    m.execute(A, "DELETE FROM items WHERE id BETWEEN 710 AND 712")  # leave the shared mesh clean
    m.wait_converged(["items"])
