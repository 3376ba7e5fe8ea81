"""Claim A: "No transaction on a replicated table commits after its region's lease was revoked by its
agent (plus the time the agent needs to end open write transactions), whatever SQL the application
role fraiseql_app runs with the grants it has."

Each test FAILS while the claim is broken. Real PostgreSQL 18 mesh, the real roles and grants, the
real agent probe driving the lease (tests/redteam/harness.py).

    .venv/bin/python -m pytest -q tests/redteam/test_claim_a_commit_after_revoke.py
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh
from replication.agent import probe
from replication.roles import APP_ROLE
from replication.sql import FENCE_SQLSTATE
from tests.redteam.harness import (
    EAST,
    EU,
    WEST,
    connect,
    healthy,
    key,
    lease_end,
    present,
    rounds,
    settings,
    temp_tables_refused,
    wait_present,
    writable,
)


def seconds_after_revoke(m: Mesh, region: str, k: int) -> float:
    """How long after the lease's revoke (set_lease stamps changed_at) the row's transaction committed
    (track_commit_timestamp is on in the mesh), both on the server's clock."""
    return float(m.execute(region, "SELECT extract(epoch FROM pg_xact_commit_timestamp(i.xmin) - l.changed_at)::float8 "
                           "FROM items i, fraiseql_repl.lease l WHERE i.id = %s AND l.valid_until = '-infinity'",
                           (k,))[0][0])


def isolate_and_fence(m: Mesh, conns: dict[str, Any], region: str) -> float:
    """Cut ``region`` off and drive every agent until its own agent has revoked its lease; returns when."""
    m.partition(region)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        last = rounds(conns, 1)
        if not writable(last[region]):
            assert lease_end(m, region) == 0.0
            return time.monotonic()
    raise AssertionError(f"{region} was never fenced")


def test_a_fenced_region_commits_writes_to_a_replicated_table_through_its_own_trigger(m: Mesh, agents) -> None:
    """The per-table trigger functions are SECURITY DEFINER and executable by PUBLIC. The application
    role owns its temporary tables, so it can attach ``fraiseql_repl."emit:public.items"`` to one: every
    row it inserts there becomes a change image of ``public.items`` written (as the function's owner)
    into ``fraiseql_repl.changes``, with the version and origin node the application chose. No fence
    trigger fires (the temp table has none), the commit is not checked, and every peer merges the
    image into its ``items`` as soon as it receives it."""
    healthy(agents)
    isolate_and_fence(m, agents, EAST)
    revoked = m.execute(EAST, "SELECT changed_at FROM fraiseql_repl.lease WHERE valid_until = '-infinity'")[0][0]
    k = key()
    app = connect(m, EAST, APP_ROLE, autocommit=True)
    with pytest.raises(psycopg.Error) as plain:  # the fence works for a plain write
        app.execute("INSERT INTO items (id, v) VALUES (%s, 'plain write while fenced')", (k,))
    assert plain.value.sqlstate == FENCE_SQLSTATE
    # refused now: no temporary tables for the application, and the schema's functions are not PUBLIC
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("CREATE TEMP TABLE forged (id int, v text, _repl_ts timestamptz, _repl_node text, _repl_born timestamptz)")
        app.execute('CREATE TRIGGER forge AFTER INSERT ON forged FOR EACH ROW EXECUTE FUNCTION fraiseql_repl."emit:public.items"()')
    app.close()
    logged = m.execute(EAST, "SELECT c.op, c.ts::text, c.node, extract(epoch FROM pg_xact_commit_timestamp(c.xmin) - %s)::float8 "
                       "FROM fraiseql_repl.changes c WHERE c.tbl = 'public.items' AND c.pk = %s::jsonb",
                       (revoked, f'{{"id": {k}}}'))
    # Heal: the change committed while fenced replicates with the rest of the log.
    m.heal()
    healthy(agents)
    landed = {r: wait_present(m, r, k, timeout=10) for r in (WEST, EU)}
    print(f"\nlease revoked by the agent; the app then committed a change image of public.items id={k} on the fenced "
          f"writer (op, version, node, seconds after the revoke): {logged}; merged into items on peers: {landed}")
    assert not logged, f"a change to a replicated table committed on {EAST} after its agent revoked the lease: {logged}"
    assert not any(landed.values()), f"the write made while fenced was merged on {landed}"


def _slow_exiting_decoy(m: Mesh) -> psycopg.Connection[Any]:
    """An application session whose exit takes seconds: 1000 temporary tables and 4 GB of temp_buffers
    (the backend drops each table's local buffers by scanning all of them, at exit). It has written
    a replicated row and sits idle in its transaction, so end_writes picks it as a victim."""
    c = connect(m, EAST, APP_ROLE, autocommit=True)
    c.execute("SET temp_buffers = '4GB'")
    c.execute("DO $$BEGIN FOR i IN 1..1000 LOOP EXECUTE format('CREATE TEMP TABLE t%s (x int)', i); END LOOP; END$$")
    c.execute("INSERT INTO t1 VALUES (1)")  # allocates the local buffer pool
    return c


def _open_write(c: psycopg.Connection[Any], agents: dict[str, Any], k: int, v: str, *then: str) -> None:
    """Open a transaction on ``c`` that has written row ``k`` (and ran ``then``) while the lease was
    valid. Setting up takes long (each decoy makes 1,000 temp tables), and on a loaded machine the
    lease may lapse between the agents' rounds and the write: that is no finding, so the write is
    tried again after the mesh is writable again."""
    deadline = time.monotonic() + 60
    while True:
        healthy(agents)
        try:
            c.execute("BEGIN")
            c.execute("INSERT INTO items (id, v) VALUES (%s, %s)", (k, v))
            for sql in then:
                c.execute(sql.encode())
            return
        except psycopg.errors.ReadOnlySqlTransaction:
            c.execute("ROLLBACK")
            if time.monotonic() > deadline:
                raise


def test_slow_exiting_sessions_ahead_of_a_prechecked_writer_make_end_writes_fail(m: Mesh, agents) -> None:
    """end_writes terminates its victims one by one in pid order, waiting up to 2 s for each to exit,
    inside the agent's 5 s statement timeout. Three application sessions that take longer than 2 s to
    exit, opened before the real writer, use that time up: the probe fails with a statement timeout
    before end_writes signals the writer, which has run its commit check early (SET CONSTRAINTS ALL
    IMMEDIATE, no privilege needed) and commits after the revoke. In the deployed agent the failed probe
    ends the invocation; the next one starts on the per-minute schedule, and three more such sessions
    buy another failed run.

    Closed at the root since: the application role may not create temporary tables (red team round
    6), so the decoys cannot be made. The attack runs again wherever that privilege comes back."""
    with connect(m, EAST, APP_ROLE, autocommit=True) as c:
        if temp_tables_refused(c):
            return
    healthy(agents)
    decoys = []
    for _ in range(4):
        decoys.append(_slow_exiting_decoy(m))
        rounds(agents, 1)  # keep the lease alive while they are set up
    for d in decoys:
        _open_write(d, agents, key(), "decoy")
    k = key()
    writer = connect(m, EAST, APP_ROLE, autocommit=True)
    # the commit check, run now, while the lease is valid
    _open_write(writer, agents, k, "committed after the revoke", "SET CONSTRAINTS ALL IMMEDIATE")
    assert max(d.info.backend_pid for d in decoys) < writer.info.backend_pid, "pids not in connection order"

    m.partition(EAST)
    failure: BaseException | None = None
    deadline = time.monotonic() + 30
    while failure is None and time.monotonic() < deadline:
        for r in REGIONS:
            try:
                probe(agents[r], settings(r), control_on=True)
            except psycopg.errors.QueryCanceled as exc:  # end_writes ran into the statement timeout
                assert r == EAST
                failure = exc
                break
        time.sleep(0.25)
    assert lease_end(m, EAST) == 0.0, "the agent never revoked the lease"
    outcome = "refused"
    try:
        writer.execute("COMMIT")
        outcome = "committed"
    except psycopg.Error as exc:
        outcome = f"refused ({exc.sqlstate})"
    for d in decoys:
        d.close()
    writer.close()
    after = seconds_after_revoke(m, EAST, k) if outcome == "committed" else None
    print(f"\nagent probe after the revoke: {type(failure).__name__ if failure else 'no failure'}; pre-checked writer "
          f"{outcome}" + (f" {after:.2f} s after the revoke (commit timestamps, server clock)" if after is not None else ""))
    assert outcome != "committed", (
        f"a transaction committed {after:.2f} s after {EAST}'s agent revoked its lease: the agent's end_writes "
        f"failed ({failure!r}) before reaching it")


# -- what was tried and holds: each is refused once the agent has revoked the lease ----------------------

ATTEMPTS = {
    "copy": None,  # COPY FROM STDIN, below
    "merge": "MERGE INTO items t USING (SELECT {k} AS id) s ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'm')",
    "writable cte": "WITH w AS (INSERT INTO items VALUES ({k}, 'cte') RETURNING 1) SELECT count(*) FROM w",
    "on conflict": "INSERT INTO items VALUES ({k}, 'oc') ON CONFLICT (id) DO UPDATE SET v = 'oc'",
    "temp view": "CREATE TEMP VIEW tv AS SELECT * FROM items; INSERT INTO tv VALUES ({k}, 'view')",
    "temp rule": "CREATE TEMP TABLE tr (id int, v text); CREATE RULE r AS ON INSERT TO tr DO INSTEAD "
                 "INSERT INTO items VALUES (NEW.id, NEW.v); INSERT INTO tr VALUES ({k}, 'rule')",
    "invoker function": "CREATE FUNCTION pg_temp.w(i int) RETURNS void LANGUAGE sql AS "
                        "$$INSERT INTO items VALUES (i, 'fn')$$; SELECT pg_temp.w({k})",
    "replica role": "SET session_replication_role = replica; INSERT INTO items VALUES ({k}, 'replica')",
    "disable trigger": "ALTER TABLE items DISABLE TRIGGER fraiseql_repl_fence",
    "truncate": "TRUNCATE items",
    "serializable": "BEGIN ISOLATION LEVEL SERIALIZABLE; INSERT INTO items VALUES ({k}, 's'); COMMIT",
    "synchronous_commit off": "SET synchronous_commit = off; INSERT INTO items VALUES ({k}, 'async')",
}


@pytest.mark.parametrize("how", sorted(ATTEMPTS))
def test_holds_these_writes_are_refused_after_the_revoke(m: Mesh, how: str) -> None:
    m.set_fence(EAST, True)
    k = key()
    app = connect(m, EAST, APP_ROLE, autocommit=True)
    with pytest.raises(psycopg.Error):
        if how == "copy":
            with app.cursor().copy("COPY items (id, v) FROM STDIN") as cp:
                cp.write_row((k, "copy"))
        else:
            app.execute(ATTEMPTS[how].format(k=k).encode())
    app.close()
    assert not present(m, EAST, k)
