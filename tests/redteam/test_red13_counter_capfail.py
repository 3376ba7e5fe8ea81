"""Red team round 13, counters (claim 3: no local write to a counter table fails because of the
refresh, triggers of the application's own included).

Attack: the refresh is an ordinary nested UPDATE of the application's table, so the application's
own (ordinary, install-accepted) BEFORE UPDATE triggers judge it as if the application had written
it. The schema (made by the owner before the install) has a cap rule: a local update may not raise
``hits`` over the row's ``cap`` (decreases are always fine). Merges do not fire it, so the shown
value can be over the cap: us-east-1 sets hits to cap - 100 while us-west-2 concurrently adds 1000
(each legal where it ran); every writer shows the sum clamped to bigint's maximum. The application
then takes 1 off on us-east-1 (a decrease: allowed). The row at the bound is refreshed to the
clamped sum: the refresh raises it from the maximum - 1 back to the maximum, over the cap, and the
application's rule refuses the refresh: the application's decrement fails. The same decrement on a
row that is over its cap but not clamped succeeds (the control).

Observed (3 runs of 3): control decrement fine (..507 -> ..506 everywhere); the decrement of the
clamped row raised 'hits may not go over cap' (context: capped_rule() <- the refresh's UPDATE <-
"fraiseql_repl.refresh:public.capped" <- "emit_row:public.capped"), the row unchanged (max).

    .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/redteam/test_red13_counter_capfail.py
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh
from replication.roles import APP_ROLE
from tests.redteam.capped import CAP, MAX, capped_mesh, push_past
from tests.redteam.harness import EAST, WEST, connect

APP_RULES = (
    """CREATE FUNCTION capped_rule() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.hits > OLD.hits AND NEW.hits > NEW.cap THEN
        RAISE EXCEPTION 'hits may not go over cap';
    END IF;
    RETURN NEW;
END $$""",
    "CREATE TRIGGER capped_rule BEFORE UPDATE ON capped FOR EACH ROW EXECUTE FUNCTION capped_rule()",
)


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with capped_mesh(*APP_RULES) as running:
        yield running


def test_a_decrement_of_a_clamped_counter_is_refused_by_the_applications_rule(m: Mesh) -> None:
    east = connect(m, EAST, APP_ROLE, autocommit=True)
    west = connect(m, WEST, APP_ROLE, autocommit=True)
    east.execute("INSERT INTO capped (id, hits) VALUES (1, 0), (2, 0)")
    m.wait_applied()
    # the control: over the cap (through merges), not clamped
    push_past(m, east, west, 2, CAP - 100, 300)
    # the attack: over the cap and clamped at bigint's maximum
    push_past(m, east, west, 1, CAP - 100, 1000)
    m.wait_applied()
    before = {r: m.execute(r, "SELECT id, hits FROM capped ORDER BY id") for r in REGIONS}
    assert all(v == [(1, MAX), (2, CAP + 200)] for v in before.values()), before
    east.execute("UPDATE capped SET hits = hits - 1 WHERE id = 2")  # the control: fine
    error = None
    try:
        east.execute("UPDATE capped SET hits = hits - 1 WHERE id = 1")
    except psycopg.Error as exc:
        error = f"{type(exc).__name__}: {exc} (context: {exc.diag.context})"
    east.close()
    west.close()
    m.wait_applied()
    after = {r: m.execute(r, "SELECT id, hits FROM capped ORDER BY id") for r in REGIONS}
    print(f"\nbefore: {before}\ndecrement of the clamped row: {error}\nafter: {after}")
    assert error is None, error
