"""Red team round 13, counters (claim 3: no local write to a counter table fails or loops because
of the refresh, triggers of the application's own included).

Attack: the application's cap rule of test_red13_counter_revert.py (an ordinary AFTER UPDATE
trigger, accepted by the install: an update that raises hits over the row's cap is put back,
``UPDATE capped SET hits = OLD.hits``). Merges do not fire it, so hits can be shown over the cap:
clamped at bigint's maximum (us-east-1 sets it to cap - 100 while us-west-2 concurrently adds 1000).
The application takes 1 off on us-east-1 (a decrease: the rule lets it be). The refresh raises the
row back to the maximum, the rule puts the refresh back (max - 1), that nested write records -1 and
starts from the bound, so it is refreshed again, put back again, ...: one more -1 and two more
nesting levels per round until PostgreSQL's stack runs out.

Observed (2 runs of 2): shown 9223372036854775807, shards' sum 9223372036854776207 (max + 400);
the application's ``hits = hits - 1`` failed after ~10 s with 54001 'stack depth limit exceeded'
(the refresh / put-back recursion); nothing changed (the decrement is lost to the application).
Without the refresh the decrement commits (-1).

    .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/redteam/test_red13_counter_loop.py
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh
from replication.roles import APP_ROLE
from tests.redteam.capped import CAP, capped_mesh, push_past
from tests.redteam.harness import EAST, WEST, connect

APP_RULES = (
    """CREATE FUNCTION capped_cap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE public.capped SET hits = OLD.hits WHERE id = NEW.id;
    RETURN NULL;
END $$""",
    "CREATE TRIGGER capped_cap AFTER UPDATE ON capped FOR EACH ROW "
    "WHEN (NEW.hits > NEW.cap AND NEW.hits > OLD.hits) EXECUTE FUNCTION capped_cap()",
)


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with capped_mesh(*APP_RULES) as running:
        yield running


def _sum(m: Mesh) -> int:
    return m.execute(EAST, "SELECT sum(amount) FROM fraiseql_repl.shards WHERE table_name = 'public.capped' "
                           "AND pk = '{\"id\": 1}'")[0][0]


def test_a_decrement_of_a_clamped_counter_under_the_cap_rule(m: Mesh) -> None:
    east = connect(m, EAST, APP_ROLE, autocommit=True)
    west = connect(m, WEST, APP_ROLE, autocommit=True)
    east.execute("INSERT INTO capped (id, hits) VALUES (1, 0)")
    m.wait_applied()
    push_past(m, east, west, 1, CAP - 100, 1000)
    m.wait_applied()
    before = (m.execute(EAST, "SELECT hits FROM capped WHERE id = 1")[0][0], _sum(m))
    error = None
    try:
        east.execute("UPDATE capped SET hits = hits - 1 WHERE id = 1")
    except psycopg.Error as exc:
        error = f"{type(exc).__name__} {exc.sqlstate}: {str(exc).splitlines()[0]}"
    east.close()
    west.close()
    m.wait_applied()
    after = {r: (m.execute(r, "SELECT hits FROM capped WHERE id = 1")[0][0],
                 m.execute(r, "SELECT sum(amount) FROM fraiseql_repl.shards WHERE table_name = 'public.capped' "
                              "AND pk = '{\"id\": 1}'")[0][0]) for r in REGIONS}
    print(f"\n(shown, shards' sum) before: {before}; decrement: {error}; after: {after}; "
          f"true sum moved by {after[EAST][1] - before[1]}")
    assert error is None, error
    assert after[EAST][1] - before[1] == -1, after  # the application took 1 off
