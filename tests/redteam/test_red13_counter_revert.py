"""Red team round 13, counters (claims 1, 2 and 4 of the clamped-counter refresh).

Claim: a counter row shows the (clamped) sum of its live shards on every writer, the shards' sum is
exactly the sum of what the local writes meant (NEW - OLD as the application saw it), and no
application write changes a shown value without its contribution being recorded. The new rule: a
row trigger run at pg_trigger_depth() > 1 whose NEW equals the clamped live sum records no
contribution (that is how the refresh's own nested update is recognised).

Attack: the rule also matches an application's own nested write. The schema (made by the owner,
before the install; an ordinary trigger, which the install accepts) has a cap rule on a bigint
counter: an AFTER UPDATE row trigger, named ``capped_cap`` (it sorts before
``fraiseql_repl_emit_row``, so it runs first), that puts the value back when an update takes it over
the row's cap: ``UPDATE capped SET hits = OLD.hits``. The application role runs
``UPDATE capped SET hits = hits + 5`` over the cap. The nested revert runs at depth 2, before the
outer update's own emit trigger has recorded the +5: the shards still hold OLD.hits, so the revert's
NEW equals the live sum and its -5 is dropped; then the outer +5 is recorded. The writer shows OLD
(what the application meant: +5 - 5 = 0), its shards say OLD + 5, and every peer shows OLD + 5.
No clamping is involved: any integer counter with such a trigger.

Observed (2 runs of 2): the application saw 10 after its update; us-east-1 shows 10, us-west-2 and
eu-west-1 show 15, the shards' sum is 15 on every writer, for good (nothing refreshes the row);
verify reports the row (1 divergence, public.capped id 1). (Before the skip rule the revert's -5
was recorded.) Second test, without any trigger on the counter table (2 runs of 2): the same
numbers, 10 on us-east-1, 15 (shards 15) on the peers.

    .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/redteam/test_red13_counter_revert.py
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drills.mesh import REGIONS, Mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.model import ConflictPolicy, TablePolicy
from replication.roles import APP_ROLE
from replication.verify import verify
from tests.redteam.harness import EAST, connect, red_mesh

SCHEMA = APP_SCHEMA + (
    "CREATE TABLE capped (id int PRIMARY KEY, cap bigint NOT NULL DEFAULT 100, hits bigint NOT NULL DEFAULT 0)",
    """CREATE FUNCTION capped_cap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- the application's rule: an update may not take hits over the cap; put it back
    UPDATE capped SET hits = OLD.hits WHERE id = NEW.id;
    RETURN NULL;
END $$""",
    "CREATE TRIGGER capped_cap AFTER UPDATE ON capped FOR EACH ROW "
    "WHEN (NEW.hits > NEW.cap AND NEW.hits > OLD.hits) EXECUTE FUNCTION capped_cap()",
    # second test: no trigger on the counter table; an order's quantity comes off its counter
    "CREATE TABLE orders (id int PRIMARY KEY, counter_id int NOT NULL, n bigint NOT NULL)",
    """CREATE FUNCTION orders_take() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE capped SET hits = hits - NEW.n WHERE id = NEW.counter_id;
    RETURN NULL;
END $$""",
    "CREATE TRIGGER orders_take AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION orders_take()",
)
R_POLICY = ConflictPolicy(tables=POLICY.tables + (TablePolicy("capped", "counter", ("hits",)),),
                          replicated=POLICY.replicated + ("orders",))


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with red_mesh(SCHEMA, R_POLICY) as running:
        for r in REGIONS:
            running.set_fence(r, False)
        yield running


def _state(m: Mesh, k: int) -> dict[str, tuple[int, int]]:
    return {r: (m.execute(r, "SELECT hits FROM capped WHERE id = %s", (k,))[0][0],
                m.execute(r, "SELECT coalesce(sum(amount), 0) FROM fraiseql_repl.shards "
                             "WHERE table_name = 'public.capped' AND pk = jsonb_build_object('id', %s::int)", (k,))[0][0])
            for r in REGIONS}


def test_an_application_revert_at_depth_2_is_not_recorded(m: Mesh) -> None:
    app = connect(m, EAST, APP_ROLE, autocommit=True)
    app.execute("INSERT INTO capped (id, cap, hits) VALUES (1, 12, 10)")
    app.execute("UPDATE capped SET hits = hits + 5 WHERE id = 1")  # over the cap: the rule puts it back
    shown_here = app.execute("SELECT hits FROM capped WHERE id = 1").fetchone()[0]
    app.close()
    m.wait_applied()
    state = _state(m, 1)
    conns = {r: m.connect(r) for r in REGIONS}
    try:
        report = verify(conns, margin_s=0, tables=["public.capped"])
    finally:
        for c in conns.values():
            c.close()
    print(f"\napplication saw {shown_here} after its update; (shown, shards' sum) per writer: {state}; verify: {report}")
    assert shown_here == 10  # what the application meant: +5, then the rule's -5
    assert all(v == (10, 10) for v in state.values()), state


def test_a_trigger_on_another_table_in_the_same_statement(m: Mesh) -> None:
    """No trigger on the counter table: one statement restocks counter 2 by 5 (a writable CTE) and
    takes an order of 5 from it (orders' AFTER INSERT trigger: hits = hits - 5, at depth 2). The
    CTE's update runs after the main INSERT (its result is not read), so the order's trigger fires
    first and its nested update lands exactly on the shards' sum, before the restock's +5 is
    recorded: its -5 is dropped."""
    app = connect(m, EAST, APP_ROLE, autocommit=True)
    app.execute("INSERT INTO capped (id, cap, hits) VALUES (2, 1000, 10)")
    app.execute("WITH restock AS (UPDATE capped SET hits = hits + 5 WHERE id = 2 RETURNING id) "
                "INSERT INTO orders (id, counter_id, n) VALUES (1, 2, 5)")
    shown_here = app.execute("SELECT hits FROM capped WHERE id = 2").fetchone()[0]
    app.close()
    m.wait_applied()
    state = _state(m, 2)
    print(f"\napplication saw {shown_here} after its statement; (shown, shards' sum) per writer: {state}")
    assert shown_here == 10  # +5 - 5
    assert all(v == (10, 10) for v in state.values()), state
