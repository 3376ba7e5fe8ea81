"""Claim (ddl.sql, docs/architecture.md): by-hand DDL that would make the merge unable to settle
clashes on a replicated table is refused. The guard refuses a unique index on an expression or with
a WHERE clause and lets a unique index on plain columns through, as one "the merge settles" (its
refusal's hint even points to one).

Attack: the merge settles a secondary unique clash with code generated when the table was installed
(install.sql: one clash block per unique index present then). A uniqueness rule made by hand
afterwards (a superuser on every writer, no fraiseql_repl.schema_apply, no re-install) passes the
guard and is unknown to the merge function:

* CREATE UNIQUE INDEX items_v_uq ON items (v): plain column, exactly what the guard allows;
* ALTER TABLE items ADD CONSTRAINT ... UNIQUE NULLS NOT DISTINCT (v): two NULLs clash;
* ALTER TABLE items ADD CONSTRAINT ... EXCLUDE USING btree (v WITH =): no extension needed, and its
  index is indisexclusion, not indisunique, so even a re-install would not see it.

Two regions then each insert a row with the same v, each legal where it runs. Each peer's merge of
the other's row raises 23505 / 23P01, receive_change retries and parks it, and retry_parked (the
agent's retry) never merges it (the value never frees): every writer keeps a different row for good.

Observed before the fix (exclusion: 3 runs; plain unique and NULLS NOT DISTINCT: 1 run by hand then
this probe, twice; every run failed): us-east-1 keeps 702, us-west-2 keeps 701, eu-west-1 keeps
whichever arrived first; each writer has the other row parked with 23505 "duplicate key value
violates unique constraint items_v_uq" (or 23P01 "conflicting key value violates exclusion
constraint").

Fixed: install_table records the unique keys it built clash blocks for (fraiseql_repl.unique_keys,
in table_shape.uniques), and the DDL guard refuses, with FQ003, a unique key it does not know (or
one it settles, dropped) outside schema apply, which re-installs the merge; an exclusion constraint
always. Every case here is refused on every writer (the guard's FQ003, nothing else, counts).

    .venv/bin/python -m pytest -q -s tests/redteam/test_red7_ddl_unique_later.py
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

CASES = {
    # name: (DDL by hand on every writer after install, the v both regions insert)
    "unique index on a plain column": ("CREATE UNIQUE INDEX items_v_uq ON items (v)", "the same v"),
    "unique nulls not distinct": ("ALTER TABLE items ADD CONSTRAINT items_v_nnd UNIQUE NULLS NOT DISTINCT (v)", None),
    "exclusion constraint": ("ALTER TABLE items ADD CONSTRAINT items_v_excl EXCLUDE USING btree (v WITH =)", "the same v"),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Iterator[tuple[Mesh, list[str], str | None]]:
    """The sample mesh (leases that never end: the merge is attacked) with the case's DDL run by hand."""
    ddl, value = CASES[request.param]
    with mesh(POLICY, APP_SCHEMA, delays=False) as running:
        refused = []
        for r in REGIONS:
            try:
                running.execute(r, ddl)
            except psycopg.Error as exc:
                if exc.sqlstate != "FQ003":  # the DDL guard's refusal, nothing else
                    raise
                refused.append(f"{r}: {exc}")
        yield running, refused, value


def test_uniqueness_rule_added_by_hand_is_refused_or_settled(case: tuple[Mesh, list[str], str | None]) -> None:
    m, refused, value = case
    if refused:
        print(f"\nrefused: {refused}")
        return  # the guard refused it: the claim holds
    with m.connect(WEST, autocommit=False) as west:
        west.execute("INSERT INTO items (id, v) VALUES (701, %s)", (value,))  # legal here, open
        m.execute(EAST, "INSERT INTO items (id, v) VALUES (702, %s)", (value,))  # legal there, committed
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
    assert same, f"writers differ for good after a uniqueness rule added by hand: {rows()}; parked: {parked}"
