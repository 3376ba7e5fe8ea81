"""Claims (docs/architecture.md; install.sql check_counter_column; ddl.sql): "no pair of legal writes
stalls a link" on a counter table, and by-hand DDL that would make the merge unable to settle, or
change a replicated table's shape, is refused.

Attack: the install refuses a counter column under a CHECK constraint, a unique or expression index,
or that allows NULL -- but only when it installs the table. The same shapes made afterwards by hand
(a superuser, no fraiseql_repl.schema_apply) go through: the DDL guard's shape_drift looks at
columns, types, the primary key, the replication triggers and unique indexes on expressions, not at
CHECK constraints, plain unique indexes, expression indexes that are not unique, or the app's own
triggers. Each case runs its DDL by hand on every writer of a mesh that installed a plain
``tally (id int PRIMARY KEY, c int NOT NULL)`` counter table, then makes red6's two legal writes:

* CHECK (c >= 0) added later: qty 1, two regions each take the last one: the shard apply computes -1;
* CREATE INDEX ON tally ((100 / (c + 2))) later: each region subtracts 1, the sum -2 divides by zero;
* CREATE UNIQUE INDEX ON tally (c) later (plain column: the guard allows it): worse than two rows'
  sums meeting, one writer's two plain inserts (id 1, c 0) and (id 2, c 2) never converge: a peer's
  merge inserts the new counter row at 0 before its shard refresh, clashes with row 1 (23505), and
  parks it for good (the value 0 is never free);
* an app trigger made ENABLE ALWAYS that refuses a negative count: it fires on the merge too.

The shard's apply runs in a replica trigger on fraiseql_repl.shards, outside receive_change's
exception block, so the apply worker errors and retries the same transaction for ever.

Observed (this probe, 2 full runs: 4 of 4 cases failed each time; the unique case twice more alone):
* check / expression index / always trigger: apply_error_count +41 or +42 on three links
  (us-east-1 from us-west-2, us-west-2 from us-east-1, eu-west-1 from us-west-2) within 20 s, and
  later unrelated inserts into items from both writers never reached every writer (values stuck at
  0, 0, -1: the first write only);
* unique index: row 2 present on us-east-1 only; us-west-2 and eu-west-1 park it with
  23505 duplicate key value violates unique constraint "tally_c", no apply error (so no alarm on the
  link, only the parked count).

Fixed: the DDL guard reports, for every counter column of a table a command touched, what the
install's check refuses (fraiseql_repl.counter_column_problems: the one rule, which
check_counter_column raises on), and refuses the command with FQ003, schema apply or not. Every case
here is refused on every writer (the guard's FQ003, nothing else, counts).

    .venv/bin/python -m pytest -q -s tests/redteam/test_red7_counter_ddl_later.py
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA
from replication.model import ConflictPolicy, TablePolicy
from tests.redteam.test_red6_counter_stall import apply_errors, two_legal_writes_stall_no_link, until

EAST, WEST, EU = REGIONS

CASES = {
    # name: (DDL run by hand on every writer after install, initial rows, each region's update)
    "check added later": (("ALTER TABLE tally ADD CONSTRAINT tally_nonneg CHECK (c >= 0)",), 1, "c = c - 1"),
    "expression index later": (("CREATE INDEX tally_ratio ON tally ((100 / (c + 2)))",), 0, "c = c - 1"),
    "unique index later": (("CREATE UNIQUE INDEX tally_c ON tally (c)",), 0, "c = c + 1"),
    "always trigger later": ((
        "CREATE FUNCTION no_negative() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN IF NEW.c < 0 THEN RAISE EXCEPTION 'out of stock'; END IF; RETURN NEW; END$$",
        "CREATE TRIGGER tally_no_negative BEFORE UPDATE ON tally FOR EACH ROW EXECUTE FUNCTION no_negative()",
        "ALTER TABLE tally ENABLE ALWAYS TRIGGER tally_no_negative",
    ), 1, "c = c - 1"),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Iterator[tuple[Mesh, bool, int, str]]:
    """A mesh replicating ``tally`` as a counter, the case's DDL run by hand; whether the guard refused it."""
    ddl, initial, update = CASES[request.param]
    schema = (*APP_SCHEMA, "CREATE TABLE tally (id int PRIMARY KEY, c int NOT NULL DEFAULT 0)")
    policy = ConflictPolicy(tables=(TablePolicy("counters", "counter", ("hits",)), TablePolicy("tally", "counter", ("c",))),
                            replicated=("items",))
    with mesh(policy, schema, delays=False) as running:
        refused = False
        for r in REGIONS:
            try:
                with running.connect(r) as c:
                    for stmt in ddl:
                        c.execute(stmt.encode())
            except psycopg.Error as exc:
                if exc.sqlstate != "FQ003":  # the DDL guard's refusal, nothing else
                    raise
                print(f"\n{r}: refused: {exc}")
                refused = True
        yield running, refused, initial, update


def test_counter_shape_made_by_hand_after_install_stalls_no_link(case: tuple[Mesh, bool, int, str]) -> None:
    m, refused, initial, update = case
    if refused:
        return  # the guard refused the DDL: the claim holds for this shape
    m.execute(EAST, "INSERT INTO tally (id, c) VALUES (1, %s)", (initial,))
    # a second row two steps away: two regions each adding 1 to row 1 make its sum meet row 2's value
    m.execute(EAST, "INSERT INTO tally (id, c) VALUES (2, %s)", (initial + 2,))
    synced = until(lambda: all(m.execute(r, "SELECT count(*) FROM tally")[0][0] == 2 for r in REGIONS), 30)
    assert synced, (f"[{update}, initial {initial}] two plain inserts from one writer never reached every writer: "
                    f"apply errors {apply_errors(m)}, rows {[m.execute(r, 'SELECT id, c FROM tally ORDER BY id') for r in REGIONS]}, "
                    f"parked {[m.execute(r, 'SELECT tbl, pk::text, sqlstate, left(error, 120) FROM fraiseql_repl.parked') for r in REGIONS]}")
    two_legal_writes_stall_no_link(m, update, f"[{update}, initial {initial}] ")
