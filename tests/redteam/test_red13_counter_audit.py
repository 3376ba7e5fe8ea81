"""Red team round 13, counters (claim 3: no local write to a counter table fails because of the
refresh, triggers of the application's own included).

Attack: the refresh is a nested UPDATE run from ``emit_row:<table>``, a SECURITY DEFINER function
with ``SET search_path = pg_catalog, pg_temp``; the refresh function inherits that setting, so the
application's own ordinary triggers that the refresh's UPDATE fires run with the application's
schema off the search path (and as the replication objects' owner, not the application role). The
schema (made by the owner before the install; an ordinary AFTER UPDATE trigger, which the install
accepts) has the most ordinary trigger there is: an audit log, ``INSERT INTO counter_audit ...``,
written unqualified as application code is. The application role updates counters all day without
trouble (the control: a decrement of a counter that is not clamped). Then a counter is shown clamped
at bigint's maximum (us-east-1 sets it near the maximum while us-west-2 concurrently adds 1000) and
the application takes 1 off it on us-east-1: the refresh fires the audit trigger, which fails with
'relation "counter_audit" does not exist', and the application's decrement fails with it.

Observed (3 runs of 3): control fine; the clamped row's decrement raised UndefinedTable 'relation
"counter_audit" does not exist' (context: counters_audit() <- the refresh's UPDATE <-
refresh:public.counters <- emit_row:public.counters); the write is lost to the application.
Second test, the same trigger schema-qualified on counters2 (2 runs of 2): the audit rows of the
application's decrement read (..806, 'fraiseql_app') then (..807, 'postgres'): the application's
SECURITY INVOKER trigger ran as the superuser that owns the replication objects, with the
application's row data, for the refresh's update.

    .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/redteam/test_red13_counter_audit.py
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.model import ConflictPolicy, TablePolicy
from replication.roles import APP_ROLE
from tests.redteam.harness import EAST, WEST, connect, red_mesh

MAX = 9_223_372_036_854_775_807
SCHEMA = APP_SCHEMA + (
    "CREATE TABLE counter_audit (n bigserial PRIMARY KEY, id int, hits bigint, who text)",  # not replicated
    """CREATE FUNCTION counters_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO counter_audit (id, hits, who) VALUES (NEW.id, NEW.hits, current_user);
    RETURN NULL;
END $$""",
    "CREATE TRIGGER counters_audit AFTER UPDATE ON counters FOR EACH ROW EXECUTE FUNCTION counters_audit()",
    # the same audit, schema-qualified, on a second counter table: it works, as whom?
    "CREATE TABLE counters2 (id int PRIMARY KEY, hits bigint NOT NULL DEFAULT 0)",
    """CREATE FUNCTION counters2_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.counter_audit (id, hits, who) VALUES (-NEW.id, NEW.hits, current_user);
    RETURN NULL;
END $$""",
    "CREATE TRIGGER counters2_audit AFTER UPDATE ON counters2 FOR EACH ROW EXECUTE FUNCTION counters2_audit()",
)
A_POLICY = ConflictPolicy(tables=POLICY.tables + (TablePolicy("counters2", "counter", ("hits",)),),
                          replicated=POLICY.replicated)


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with red_mesh(SCHEMA, A_POLICY) as running:
        for r in REGIONS:
            running.set_fence(r, False)
        yield running


def test_a_decrement_of_a_clamped_counter_fails_in_the_applications_audit_trigger(m: Mesh) -> None:
    east = connect(m, EAST, APP_ROLE, autocommit=True)
    west = connect(m, WEST, APP_ROLE, autocommit=True)
    east.execute("INSERT INTO counters (id, label, hits) VALUES (1, 'clamped', 0), (2, 'control', 0)")
    m.wait_applied()
    with m.paused():
        east.execute("UPDATE counters SET hits = %s WHERE id IN (1, 2)", (MAX - 600,))
        west.execute("UPDATE counters SET hits = hits + 1000 WHERE id = 1")
        west.execute("UPDATE counters SET hits = hits + 10 WHERE id = 2")
    m.wait_applied()
    shown = m.execute(EAST, "SELECT id, hits FROM counters WHERE id IN (1, 2) ORDER BY id")
    assert shown == [(1, MAX), (2, MAX - 590)], shown
    east.execute("UPDATE counters SET hits = hits - 1 WHERE id = 2")  # the control
    error = None
    try:
        east.execute("UPDATE counters SET hits = hits - 1 WHERE id = 1")
    except psycopg.Error as exc:
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0]} (context: {' / '.join((exc.diag.context or '').splitlines()[:4])})"
    east.close()
    west.close()
    audit = m.execute(EAST, "SELECT id, hits, who FROM counter_audit ORDER BY n")
    print(f"\ndecrement of the clamped row: {error}\naudit rows on {EAST}: {audit}")
    assert error is None, error


def test_the_applications_trigger_runs_as_the_application_role(m: Mesh) -> None:
    """The same, schema-qualified: the refresh's audit row is written as the replication objects'
    owner (current_user inside the application's trigger), not as the application role that made
    the write; an application trigger (SECURITY INVOKER) gets the owner's rights for that call."""
    east = connect(m, EAST, APP_ROLE, autocommit=True)
    west = connect(m, WEST, APP_ROLE, autocommit=True)
    east.execute("INSERT INTO counters2 (id, hits) VALUES (1, 0)")
    m.wait_applied()
    with m.paused():
        east.execute("UPDATE counters2 SET hits = %s WHERE id = 1", (MAX - 600,))
        west.execute("UPDATE counters2 SET hits = hits + 1000 WHERE id = 1")
    m.wait_applied()
    east.execute("UPDATE counters2 SET hits = hits - 1 WHERE id = 1")
    east.close()
    west.close()
    audit = m.execute(EAST, "SELECT id, hits, who FROM counter_audit WHERE id < 0 ORDER BY n")
    print(f"\naudit rows of counters2 on {EAST}: {audit}")
    assert {w for _, _, w in audit} == {APP_ROLE}, audit
