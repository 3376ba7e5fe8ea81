"""Issue 13, item 4: the app and the fence agent connect with roles that can do their job and no
more, proved on three real PostgreSQL 18 writers by running the real code as those roles.

The agent's real ``probe()`` runs as ``fraiseql_agent``: when the agent grows a call its role may
not make, this test fails. The app's DML works on a replicated table, while lifting the fence,
disabling triggers, leaving origin mode and touching subscriptions are refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.agent import Settings, maintain, probe
from replication.bootstrap import apply
from replication.roles import AGENT_ROLE, APP_ROLE, render_roles, secret_options

EAST, WEST, EU = REGIONS
PROBE_S, STALE_S, LEASE_S = 0.25, 1.0, 5.0


def settings(region: str) -> Settings:
    return Settings(region=region, regions=REGIONS, probe_s=PROBE_S, stale_after_s=STALE_S, lease_s=LEASE_S,
                    unfence_after=1, db_host="127.0.0.1", db_port=0, db_name="postgres", db_sslmode="disable",
                    db_secret_arn="unused")


PASSWORDS = {APP_ROLE: "app-password-0123456789", AGENT_ROLE: "agent-password-0123456789"}


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with mesh(POLICY, APP_SCHEMA, delays=False, leases=False) as running:
        for r in REGIONS:
            with psycopg.connect(running.pg[r].dsn, autocommit=True, options=secret_options(PASSWORDS)) as c:
                apply(c, render_roles(POLICY, [APP_ROLE, AGENT_ROLE]))
                apply(c, render_roles(POLICY, [APP_ROLE, AGENT_ROLE]))  # idempotent
        yield running


def as_role(m: Mesh, region: str, role: str) -> psycopg.Connection:
    return psycopg.connect(f"host=127.0.0.1 port={m.pg[region].port} dbname=postgres user={role}", autocommit=True)


@pytest.fixture(scope="module")
def agents(m: Mesh) -> Iterator[dict[str, psycopg.Connection]]:
    conns = {r: as_role(m, r, AGENT_ROLE) for r in REGIONS}
    yield conns
    for c in conns.values():
        c.close()


def rounds(conns, n):
    last = {}
    for _ in range(n):
        for r in REGIONS:
            last[r] = probe(conns[r], settings(r), control_on=True)
        time.sleep(PROBE_S)
    return last


def warm(conns, timeout=30.0):
    """Rounds until every region is writable (a region fenced at the start serves the unfence hold)."""
    deadline = time.monotonic() + timeout
    while True:
        last = rounds(conns, 1)
        if all(res.decision.writable for res in last.values()) or time.monotonic() > deadline:
            return last


def test_the_real_probe_runs_as_the_agent_role_and_grants_leases(m, agents):
    last = warm(agents)
    assert all(res.decision.writable for res in last.values()), {r: res.decision.reason for r, res in last.items()}
    # replay lag of the peers' walsenders is visible to the agent (pg_read_all_stats)
    assert all(v is not None for res in last.values() for v in res.lag_s.values()), {r: res.lag_s for r, res in last.items()}
    assert m.execute(EAST, "SELECT current_user FROM pg_stat_activity WHERE usename = %s LIMIT 1", (AGENT_ROLE,))


def test_the_agent_role_runs_the_real_housekeeping_and_verify_rounds_and_the_app_cannot(m, agents):
    kept = maintain(agents[EAST], full=True)  # watermark, parked retries, purges: what the agent runs
    assert kept.errors == [] and kept.parked == 0
    agents[EAST].execute("SELECT fraiseql_repl.publish_digests(1, clock_timestamp(), 16)")
    agents[EAST].execute("SELECT fraiseql_repl.publish_key_details(1, 16)")
    agents[EAST].execute("SELECT fraiseql_repl.diverged_count(1, clock_timestamp())")
    with as_role(m, EAST, APP_ROLE) as app, pytest.raises(errors.InsufficientPrivilege):
        app.execute("SELECT fraiseql_repl.purge_tombstones()")


@pytest.mark.parametrize("role", [AGENT_ROLE, APP_ROLE])
def test_no_role_but_the_owner_reads_the_keys_that_differ(m, agents, role):
    # The agent reports how many keys differ; the keys themselves are the table's data (red team 14).
    with as_role(m, EAST, role) as c, pytest.raises(errors.InsufficientPrivilege):
        c.execute("SELECT * FROM fraiseql_repl.diverged_keys(1, 'infinity')")


def test_the_roles_take_back_an_earlier_releases_grant_of_the_keys_that_differ(m, agents):
    m.execute(EAST, f"GRANT EXECUTE ON FUNCTION fraiseql_repl.diverged_keys(bigint, timestamptz) TO {AGENT_ROLE}")
    agents[EAST].execute("SELECT * FROM fraiseql_repl.diverged_keys(1, 'infinity')")  # as an earlier release had it
    with psycopg.connect(m.pg[EAST].dsn, autocommit=True, options=secret_options(PASSWORDS)) as c:
        apply(c, render_roles(POLICY, [APP_ROLE, AGENT_ROLE]))
    with pytest.raises(errors.InsufficientPrivilege):
        agents[EAST].execute("SELECT * FROM fraiseql_repl.diverged_keys(1, 'infinity')")


@pytest.mark.parametrize("sql", [
    "INSERT INTO items (id, v) VALUES (-1, 'agent write')",
    "ALTER SUBSCRIPTION fq_us_east_1_from_us_west_2 DISABLE",
    "UPDATE fraiseql_repl.tombstones SET node = 'x'",
])
def test_the_agent_role_cannot_write_data_or_touch_subscriptions(m, agents, sql):
    with pytest.raises(errors.InsufficientPrivilege):
        agents[EAST].execute(sql)


def test_the_app_role_writes_a_replicated_table_and_it_replicates(m, agents):
    warm(agents)
    with as_role(m, EAST, APP_ROLE) as app:
        app.execute("INSERT INTO items (id, v) VALUES (4242, 'from the app role')")
        app.execute("UPDATE items SET v = 'updated by the app role' WHERE id = 4242")
        app.execute("INSERT INTO counters (id, label, hits) VALUES (7, 'c', 1)")
        app.execute("UPDATE counters SET hits = hits + 2 WHERE id = 7")
        app.execute("INSERT INTO tags (item, tag) VALUES (1, 'x')")
        app.execute("DELETE FROM tags WHERE item = 1")
    m.wait_for(EU, "SELECT v FROM items WHERE id = 4242", "updated by the app role", timeout=20)
    m.wait_for(WEST, "SELECT hits FROM counters WHERE id = 7", 3, timeout=20)


@pytest.mark.parametrize("sql", [
    "UPDATE fraiseql_repl.lease SET valid_until = 'infinity'",
    "UPDATE fraiseql_repl.agent_state SET writable = true",
    "INSERT INTO fraiseql_repl.heartbeats (node, seq, sent_at) VALUES ('forged', 1, now())",
    "ALTER TABLE items DISABLE TRIGGER ALL",
    "ALTER TABLE items DISABLE TRIGGER fraiseql_repl_fence",
    "SET session_replication_role = replica",
    "DROP SUBSCRIPTION fq_us_east_1_from_us_west_2",
    "ALTER SUBSCRIPTION fq_us_east_1_from_us_west_2 DISABLE",
    "DROP TABLE fraiseql_repl.lease",
    "CREATE TABLE fraiseql_repl.mine (x int)",
    "SELECT subconninfo FROM pg_subscription",
])
def test_the_app_role_cannot_lift_the_fence_or_leave_replication(m, sql):
    with as_role(m, EAST, APP_ROLE) as app, pytest.raises(errors.InsufficientPrivilege):
        app.execute(sql)


def test_the_app_role_owns_nothing_in_the_replication_schema(m):
    owned = m.execute(EAST, "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
                            "WHERE c.relnamespace = 'fraiseql_repl'::regnamespace AND r.rolname = %s", (APP_ROLE,))
    assert owned == [(0,)]
    attrs = m.execute(EAST, "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles "
                            "WHERE rolname IN (%s, %s)", (APP_ROLE, AGENT_ROLE))
    assert attrs == [(False,) * 5, (False,) * 5]
