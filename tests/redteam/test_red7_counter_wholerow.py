"""Claim (docs/architecture.md, counters; install.sql check_counter_column): the install refuses a
counter column under a CHECK constraint or an expression index that a sum can break, so "no pair of
legal writes stalls a link".

Attack: check_counter_column finds the constraints and indexes over the column by its attribute
number (pg_constraint.conkey, pg_index.indkey, pg_depend.refobjsubid). A CHECK or index expression
that reads the column through the whole row (a function of the table's row type) records attribute
0 (the whole row), not the column's number: the install accepts it. And the install does not look at
the application's own triggers at all: one made ENABLE ALWAYS fires on the merge too. Each case is
made in the schema, before the install, on a mesh of its own; then red6's two legal writes:

* CHECK (tally_ok(tally)) with tally_ok(t) = t.c >= 0: qty 1, each region takes the last one;
* CREATE INDEX ON tally ((tally_ratio(tally))), tally_ratio(t) = 100 / (t.c + 2): each subtracts 1;
* a BEFORE UPDATE trigger refusing c < 0, ENABLE ALWAYS: qty 1, each region takes the last one.

Observed (this probe, 2 runs: 3 of 3 cases failed each time; the install accepted all three):
apply_error_count +41 or +42 on three links (us-east-1 from us-west-2, us-west-2 from us-east-1,
eu-west-1 from us-west-2) within 20 s, later unrelated inserts into items from both writers never
reached every writer, values stuck at the first write (0, 0, -1).

    .venv/bin/python -m pytest -q -s tests/redteam/test_red7_counter_wholerow.py
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA
from replication.model import ConflictPolicy, TablePolicy
from tests.redteam.test_red6_counter_stall import two_legal_writes_stall_no_link, until

EAST, WEST, EU = REGIONS
TABLE = "CREATE TABLE tally (id int PRIMARY KEY, c int NOT NULL DEFAULT 0)"

CASES = {
    # name: (schema after the table, initial value, each region's update)
    "whole-row check": ((
        "CREATE FUNCTION tally_ok(t tally) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT t.c >= 0'",
        "ALTER TABLE tally ADD CONSTRAINT tally_nonneg CHECK (tally_ok(tally))",
    ), 1, "c = c - 1"),
    "whole-row expression index": ((
        "CREATE FUNCTION tally_ratio(t tally) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 100 / (t.c + 2)'",
        "CREATE INDEX tally_ratio_idx ON tally ((tally_ratio(tally)))",
    ), 0, "c = c - 1"),
    "always trigger": ((
        "CREATE FUNCTION no_negative() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN IF NEW.c < 0 THEN RAISE EXCEPTION 'out of stock'; END IF; RETURN NEW; END$$",
        "CREATE TRIGGER tally_no_negative BEFORE UPDATE ON tally FOR EACH ROW EXECUTE FUNCTION no_negative()",
        "ALTER TABLE tally ENABLE ALWAYS TRIGGER tally_no_negative",
    ), 1, "c = c - 1"),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Iterator[tuple[Mesh | None, int, str]]:
    """A mesh replicating ``tally`` as a counter, or None where the install refuses the column."""
    extra, initial, update = CASES[request.param]
    policy = ConflictPolicy(tables=(TablePolicy("counters", "counter", ("hits",)), TablePolicy("tally", "counter", ("c",))),
                            replicated=("items",))
    try:
        with mesh(policy, (*APP_SCHEMA, TABLE, *extra), delays=False) as running:
            yield running, initial, update
    except Exception as exc:  # noqa: BLE001 - the install's refusal, checked below; anything else fails
        if "fraiseql_repl: counter column public.tally.c " not in str(exc):
            raise
        print(f"\nrefused: {exc}")
        yield None, initial, update


def test_two_legal_counter_writes_stall_no_link(case: tuple[Mesh | None, int, str]) -> None:
    m, initial, update = case
    if m is None:
        return  # the install refused the column: the claim holds for this shape
    m.execute(EAST, "INSERT INTO tally (id, c) VALUES (1, %s)", (initial,))
    assert until(lambda: all(m.execute(r, "SELECT count(*) FROM tally")[0][0] == 1 for r in REGIONS), 30)
    two_legal_writes_stall_no_link(m, update, f"[{update}, initial {initial}] ")
