"""Claim (docs/architecture.md, counters; install.sql's counter_set comment): "no pair of legal writes
stalls a link": an integer counter column shows the sum of the per-node shards clamped to its type's
range, so a sum that leaves the range no longer fails the shard's apply (which runs outside
receive_change's exception block) and puts the apply workers in an error loop.

Attack: the clamp covers int2, int4 and int8 only. A counter column whose legal range is narrower
than its type's, or is not one of those types, fails the same way: two regions each make a legal
write, and the refresh of the counter row from the shards (the shard's apply, a replica trigger on
fraiseql_repl.shards) raises. Three such columns, each on a mesh of its own:

* a CHECK constraint (stock that must not go negative: qty = 1, each of two regions sells the last
  one: 1 - 1 - 1 = -1 violates qty >= 0, 23514);
* numeric(6, 0) (each region adds 600000: 1200000 does not fit, 22003);
* double precision (each region adds 1e308: 2e308 is out of float8's range, 22003);
* a bigint counter (clamped) with a stored generated column c * 2 (each region adds 4e18: legal
  where it runs, the sum's double is out of bigint's range, 22003).

Observed (by hand once, then this probe twice: 6 of 6 cases failed): apply_error_count +41 on three
links (each of the two writers' link from the other, and eu-west-1's link from the second one to
arrive) within the 20 s wait, the apply workers retrying the same transaction for ever, and later
unrelated inserts into items from both writers never reaching every writer. The writers then show the
value of the first write only (0, 600000, 1e+308): the other region's write is held in a link
that never moves again.

    .venv/bin/python -m pytest -q tests/redteam/test_red6_counter_stall.py
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA
from replication.model import ConflictPolicy, TablePolicy

EAST, WEST, EU = REGIONS

CASES = {
    # name: (column type, initial value, each region's update)
    "check constraint": ("int NOT NULL CHECK (c >= 0)", 1, "c = c - 1"),
    "numeric(6,0)": ("numeric(6, 0) NOT NULL", 0, "c = c + 600000"),
    "double precision": ("double precision NOT NULL", 0, "c = c + 1e308"),
    # an int8 counter (clamped) with a stored generated column over it: the clamp does not reach it
    "generated column": ("bigint NOT NULL, twice bigint GENERATED ALWAYS AS (c * 2) STORED", 0,
                         "c = c + 4000000000000000000"),
    # found while fixing the above: indexes a sum can break (two rows' sums meet; 100 / 0)
    "unique index": ("int NOT NULL UNIQUE", 0, "c = c + 1"),
    "expression index": ("int NOT NULL", 0, "c = c - 1"),
}
#: what else a case's schema holds
EXTRA = {
    "unique index": ("INSERT INTO tally VALUES (2, 2)",),
    "expression index": ("CREATE INDEX ON tally ((100 / (c + 2)))",),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Iterator[tuple[Mesh | None, int, str]]:
    """A mesh replicating ``tally`` as a counter, or None where the install refuses the column."""
    col, initial, update = CASES[request.param]
    schema = (*APP_SCHEMA, f"CREATE TABLE tally (id int PRIMARY KEY, c {col})", *EXTRA.get(request.param, ()))
    policy = ConflictPolicy(tables=(TablePolicy("counters", "counter", ("hits",)), TablePolicy("tally", "counter", ("c",))),
                            replicated=("items",))
    try:
        with mesh(policy, schema, delays=False) as running:
            yield running, initial, update
    except Exception as exc:  # noqa: BLE001 - the install's refusal, checked below; anything else fails
        if "fraiseql_repl: counter column public.tally.c " not in str(exc):
            raise
        yield None, initial, update


def apply_errors(m: Mesh) -> dict[str, int]:
    out = {}
    for r in REGIONS:
        out.update({str(n): int(c) for n, c in m.execute(
            r, "SELECT s.subname, ss.apply_error_count FROM pg_subscription s "
               "JOIN pg_stat_subscription_stats ss ON ss.subid = s.oid")})
    return out


def until(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return bool(cond())


def two_legal_writes_stall_no_link(m: Mesh, update: str, label: str = "") -> None:
    """Two regions each make ``update`` to row 1 of ``tally``, legal where it runs (one still open
    while the other commits), then each writes an unrelated row: no link may be left in an apply
    error loop, the later writes must reach every writer, and every writer must show one value."""
    before = apply_errors(m)
    with m.connect(WEST, autocommit=False) as west:
        west.execute(f"UPDATE tally SET {update} WHERE id = 1".encode())  # legal here, open
        m.execute(EAST, f"UPDATE tally SET {update} WHERE id = 1")  # legal there, committed
        west.commit()
    # an unrelated write afterwards, from each of the two writers: does it get through?
    m.execute(EAST, "INSERT INTO items (id, v) VALUES (1, 'after')")
    m.execute(WEST, "INSERT INTO items (id, v) VALUES (2, 'after')")
    flowed = until(lambda: all(m.execute(r, "SELECT count(*) FROM items WHERE id IN (1, 2)")[0][0] == 2
                               for r in REGIONS), 20)
    after = apply_errors(m)
    values = {r: m.execute(r, "SELECT c::text FROM tally WHERE id = 1") for r in REGIONS}
    grew = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    print(f"\n{label}apply errors since the writes: {grew}; later writes reached every writer: {flowed}; values: {values}")
    assert not grew, f"links in an apply error loop after two legal writes: {grew}"
    assert flowed, "a later write never reached every writer: a link is stalled"
    assert len({str(v) for v in values.values()}) == 1, values


def test_two_legal_counter_writes_stall_no_link(case: tuple[Mesh | None, int, str]) -> None:
    m, initial, update = case
    if m is None:
        return  # closed at the root: the install refuses a counter column whose sums may not fit it
    m.execute(EAST, "INSERT INTO tally (id, c) VALUES (1, %s)", (initial,))
    assert until(lambda: all(m.execute(r, "SELECT count(*) FROM tally")[0][0] == 1 for r in REGIONS), 30)
    two_legal_writes_stall_no_link(m, update)
