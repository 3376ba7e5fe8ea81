"""Claim (ddl.sql, docs/architecture.md): by-hand DDL that would make the merge unable to settle
clashes on a replicated table is refused (the guard refuses a unique index on an expression or with a
WHERE clause; a unique index on plain columns is one the merge settles).

Attack: an exclusion constraint is a uniqueness rule the merge knows nothing of, and its index is
not ``indisunique`` (it is ``indisexclusion``), so neither shape_drift's 'unique' rule nor the
install's unique-index handling sees it. ``EXCLUDE USING btree (v WITH =)`` needs no extension: it
is "v unique" under another name. A superuser adds it by hand on every writer (no
fraiseql_repl.schema_apply), then two regions each insert a row with the same v, each legal where it
runs. Each peer's merge of the other's row violates the constraint (23P01), receive_change parks it,
and the parked row never merges (the value never frees): the writers keep different rows for good.

Observed (this probe, 3 runs, all failed): us-east-1 keeps 702, us-west-2 keeps 701, eu-west-1
keeps whichever arrived first (702 in run 1, 701 in run 2); each writer parks the other row with
23P01 "conflicting key value violates exclusion constraint items_v_excl", and retry_parked (the
agent's retry) leaves them parked.

    .venv/bin/python -m pytest -q -s tests/redteam/test_red7_ddl_exclusion.py
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from tests.redteam.test_red6_counter_stall import until

EAST, WEST, EU = REGIONS


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    """The sample mesh, every writer with a lease that never ends (no agents: the merge is attacked)."""
    with mesh(POLICY, APP_SCHEMA, delays=False) as running:
        yield running


def test_exclusion_constraint_added_by_hand_is_refused_or_settled(m: Mesh) -> None:
    refused = []
    for r in REGIONS:
        try:
            m.execute(r, "ALTER TABLE items ADD CONSTRAINT items_v_excl EXCLUDE USING btree (v WITH =)")
        except psycopg.Error as exc:
            refused.append(f"{r}: {exc}")
    if refused:
        print(f"\nrefused: {refused}")
        return  # the guard refused it: the claim holds
    with m.connect(WEST, autocommit=False) as west:
        west.execute("INSERT INTO items (id, v) VALUES (701, 'the same v')")  # legal here, open
        m.execute(EAST, "INSERT INTO items (id, v) VALUES (702, 'the same v')")  # legal there, committed
        west.commit()
    time.sleep(1)

    def rows() -> dict[str, list[tuple[int, str]]]:
        return {r: [tuple(x) for x in m.execute(r, "SELECT id, v FROM items WHERE id IN (701, 702) ORDER BY id")]
                for r in REGIONS}

    same = until(lambda: len({str(v) for v in rows().values()}) == 1, 20)
    if not same:  # what the agent does with parked changes: retry them (the value never frees)
        for r in REGIONS:
            m.execute(r, "SELECT * FROM fraiseql_repl.retry_parked()")
        same = until(lambda: len({str(v) for v in rows().values()}) == 1, 5)
    parked = {r: m.execute(r, "SELECT pk::text, sqlstate, left(error, 100) FROM fraiseql_repl.parked") for r in REGIONS}
    print(f"\nrows: {rows()}; parked: {parked}")
    assert same, f"writers differ for good after an exclusion constraint added by hand: {rows()}; parked: {parked}"
