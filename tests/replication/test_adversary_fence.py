"""The fence against an adversary outside the network fault model (issue 19, claims 1 and 3 to 7),
on three real PostgreSQL 18 writers, with the real agent probe and the application's real grants.

The claim under test: **no transaction on a replicated table commits after its region's lease was
revoked, whatever SQL the application role runs, and no lease outlives the observation it was
granted on by more than ``lease_s``**. Each test is a probe that reproduced a break of that claim
before the fix: a paused agent, ``SET CONSTRAINTS ALL IMMEDIATE``, a placeholder setting,
REPEATABLE READ and SERIALIZABLE snapshots, deferred work that waits after the check, and
prepared transactions.

The agents' probes are driven by the test (round robin), each agent on its own connection with only
its own writer, as ``tests/replication/test_fence_agent.py`` does.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.agent import ProbeResult, Settings, probe
from replication.bootstrap import apply
from replication.roles import AGENT_ROLE, APP_ROLE, render_roles, secret_options
from replication.sql import FENCE_SQLSTATE, REQUIRED_PARAMETERS, render_lease

EAST, WEST, EU = REGIONS
PROBE_S, STALE_S, LEASE_S = 0.25, 1.0, 0.8

SCHEMA = APP_SCHEMA + (
    # an application's own deferred check, on a table that is not replicated
    "CREATE TABLE audit (id bigint PRIMARY KEY)",
    "CREATE FUNCTION audit_wait() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN "
    "PERFORM pg_advisory_xact_lock_shared(42); RETURN NULL; END $f$",
    "CREATE CONSTRAINT TRIGGER audit_wait AFTER INSERT ON audit DEFERRABLE INITIALLY DEFERRED "
    "FOR EACH ROW EXECUTE FUNCTION audit_wait()",
)


def settings(region: str) -> Settings:
    return Settings(region=region, regions=REGIONS, probe_s=PROBE_S, stale_after_s=STALE_S, lease_s=LEASE_S,
                    unfence_after=1, db_host="127.0.0.1", db_port=0, db_name="postgres", db_sslmode="disable",
                    db_secret_arn="unused")


@pytest.fixture(scope="module")
def m() -> Iterator[Mesh]:
    with mesh(POLICY, SCHEMA, delays=False, leases=False) as running:
        passwords = {APP_ROLE: "app-password-0123456789", AGENT_ROLE: "agent-password-0123456789"}
        for r in REGIONS:
            with psycopg.connect(running.pg[r].dsn, autocommit=True, options=secret_options(passwords)) as c:
                apply(c, render_roles(POLICY, [APP_ROLE, AGENT_ROLE]))
                c.execute("GRANT SELECT, INSERT ON audit TO fraiseql_app")
        yield running


def connect(m: Mesh, region: str, role: str, **kw: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(f"host=127.0.0.1 port={m.pg[region].port} dbname=postgres user={role}", **kw)


@pytest.fixture
def agents(m: Mesh) -> Iterator[dict[str, psycopg.Connection[Any]]]:
    conns = {r: connect(m, r, AGENT_ROLE, autocommit=True) for r in REGIONS}
    yield conns
    m.heal()
    for c in conns.values():
        c.close()
    for r in REGIONS:
        m.execute(r, "UPDATE fraiseql_repl.agent_state SET writable = NULL, healthy_streak = 0")


def writable(p: ProbeResult) -> bool:
    """Whether the probe left its region writable (the quorum's verdict, unless the guard says no)."""
    return bool(getattr(p, "writable", p.decision.writable))


def rounds(conns: dict[str, Any], n: int, only: tuple[str, ...] = REGIONS) -> dict[str, ProbeResult]:
    last: dict[str, ProbeResult] = {}
    for _ in range(n):
        for r in only:
            last[r] = probe(conns[r], settings(r), control_on=True)
        time.sleep(PROBE_S)
    return last


# How long the driven agents may take to reach a verdict: a liveness wait, not a bound under test
# (each round runs every agent's probe; on a loaded 2-core machine one round took seconds).
VERDICT_WAIT_S = 60


def healthy(conns: dict[str, Any]) -> None:
    deadline = time.monotonic() + VERDICT_WAIT_S
    while time.monotonic() < deadline:
        if all(writable(p) for p in rounds(conns, 1).values()):
            return
    raise AssertionError("the mesh did not become writable")


def isolate_and_fence(m: Mesh, conns: dict[str, Any], region: str) -> ProbeResult:
    """Cut ``region`` off and drive every agent until its own agent has revoked its lease."""
    m.partition(region)
    deadline = time.monotonic() + VERDICT_WAIT_S
    while time.monotonic() < deadline:
        last = rounds(conns, 1)
        if not writable(last[region]):
            return last[region]
    raise AssertionError(f"{region} was never fenced")


_keys = itertools.count(1)


def key() -> int:
    return 7_000_000 + next(_keys)


def present(m: Mesh, region: str, k: int) -> bool:
    return bool(m.execute(region, "SELECT count(*) FROM items WHERE id = %s", (k,))[0][0])


def test_an_agent_paused_between_looking_and_writing_grants_nothing_past_its_observation(m: Mesh, agents) -> None:
    # Claim 1. The agent reads the heartbeats, then pauses (a GC or VM pause, a frozen Lambda)
    # while its region is cut off; when it resumes, the lease it writes runs from what it saw.
    healthy(agents)
    pause_s = 2.0

    class Paused(psycopg.Connection):  # type: ignore[type-arg]
        def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
            out = super().execute(query, params, **kw)
            text = query.decode() if isinstance(query, bytes) else str(query)
            head = text.lstrip().upper()
            if "FRAISEQL_REPL.HEARTBEATS" in text.upper() and head.startswith(("SELECT", "WITH")) and not self._done:
                self._done = True
                m.partition(EAST)  # the cut happens while the agent is paused
                time.sleep(pause_s)
            return out

    conn = Paused.connect(f"host=127.0.0.1 port={m.pg[EAST].port} dbname=postgres user={AGENT_ROLE}", autocommit=True)
    conn._done = False  # type: ignore[attr-defined]
    try:
        probe(conn, settings(EAST), control_on=True)
        # The observation is pause_s old, the lease lasts LEASE_S < pause_s: no write may succeed now.
        k = key()
        with pytest.raises(psycopg.Error) as refused:
            m.execute(EAST, "INSERT INTO items (id, v) VALUES (%s, 'after the pause')", (k,))
        assert refused.value.sqlstate == FENCE_SQLSTATE
        assert not present(m, EAST, k)
    finally:
        conn.close()


def test_set_constraints_immediate_then_idle_cannot_commit_after_the_revoke(m: Mesh, agents) -> None:
    # Claim 3. SET CONSTRAINTS ALL IMMEDIATE needs no privilege; it runs the commit check early.
    healthy(agents)
    k = key()
    app = connect(m, EAST, APP_ROLE)
    app.execute("INSERT INTO items (id, v) VALUES (%s, 'early check')", (k,))
    app.execute("SET CONSTRAINTS ALL IMMEDIATE")
    isolate_and_fence(m, agents, EAST)
    with pytest.raises(psycopg.Error):
        app.commit()
    app.close()
    m.heal()
    healthy(agents)
    assert not present(m, EAST, k)


def test_a_placeholder_setting_cannot_switch_the_commit_check_off(m: Mesh, agents) -> None:
    # Claim 4. Any role can set a dotted placeholder setting, including one the check used to trust.
    healthy(agents)
    k = key()
    app = connect(m, EAST, APP_ROLE)
    app.execute("SET LOCAL fraiseql_repl.lease_checked = '2999-01-01 00:00:00+00'")
    app.execute("INSERT INTO items (id, v) VALUES (%s, 'claims it was checked')", (k,))
    isolate_and_fence(m, agents, EAST)
    with pytest.raises(psycopg.Error):
        app.commit()
    app.close()
    m.heal()
    healthy(agents)
    assert not present(m, EAST, k)


@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_snapshot_taken_before_the_revoke_does_not_hide_it(m: Mesh, level: str) -> None:
    # Claim 5. The transaction's snapshot predates the revoke of a long lease; the check must see it.
    with m.connect(EAST) as c:
        apply(c, render_lease(60.0, "a long lease"))
    k = key()
    app = connect(m, EAST, APP_ROLE, autocommit=True)
    app.execute(f"BEGIN ISOLATION LEVEL {level}")
    app.execute("SELECT count(*) FROM items")  # the snapshot is taken here
    with m.connect(EAST) as c:
        apply(c, render_lease(None, "revoked"))
    with pytest.raises(psycopg.Error) as refused:
        app.execute("INSERT INTO items (id, v) VALUES (%s, 'old snapshot')", (k,))
        app.execute("COMMIT")
    assert refused.value.sqlstate == FENCE_SQLSTATE
    app.close()
    assert not present(m, EAST, k)


def test_deferred_work_that_waits_after_the_check_does_not_commit_after_the_revoke(m: Mesh, agents) -> None:
    # Claim 6. The lease is checked at commit, then an application deferred trigger waits on a lock
    # (a deferred foreign key on a locked row, a slow synchronous standby behave alike); the region is
    # fenced meanwhile, and the commit must not land when the wait ends.
    healthy(agents)
    k = key()
    holder = m.connect(EAST)
    holder.execute("SELECT pg_advisory_lock(42)")
    app = connect(m, EAST, APP_ROLE)
    app.execute("INSERT INTO items (id, v) VALUES (%s, 'waits at commit')", (k,))
    app.execute("INSERT INTO audit (id) VALUES (%s)", (k,))
    outcome: dict[str, Any] = {}

    def commit() -> None:
        try:
            app.commit()
            outcome["committed_at"] = time.monotonic()
        except psycopg.Error as exc:
            outcome["error"] = exc

    th = threading.Thread(target=commit)
    th.start()
    deadline = time.monotonic() + 10
    while not m.execute(EAST, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")[0][0]:
        assert time.monotonic() < deadline, "the commit never reached its deferred wait"
        time.sleep(0.05)
    isolate_and_fence(m, agents, EAST)
    revoked_at = time.monotonic()
    holder.execute("SELECT pg_advisory_unlock(42)")
    holder.close()
    th.join(10)
    assert "committed_at" not in outcome or outcome["committed_at"] < revoked_at, outcome
    m.heal()
    healthy(agents)
    assert not present(m, EAST, k)


def test_prepared_transactions_make_every_write_refused_and_no_lease_granted() -> None:
    # Claim 7. COMMIT PREPARED runs no check at all; where prepared transactions are enabled the
    # guard cannot hold, so writes are refused and the agent grants no lease, with the reason.
    with mesh(POLICY, APP_SCHEMA, regions=(EAST,), delays=False, leases=False) as one:
        one.execute(EAST, "ALTER SYSTEM SET max_prepared_transactions = 5")
        one.pg[EAST].restart()
        with one.connect(EAST) as c:
            apply(c, render_lease(float("inf"), "by hand"))
        # a transaction prepared while the lease is valid, committed once it has been revoked
        tx = one.connect(EAST, autocommit=True)
        try:
            tx.execute("BEGIN")
            tx.execute("INSERT INTO items (id, v) VALUES (2, 'prepared')")
            tx.execute("PREPARE TRANSACTION 'fq'")
        except psycopg.Error as exc:
            assert exc.sqlstate == FENCE_SQLSTATE and "max_prepared_transactions" in str(exc)
            tx.execute("ROLLBACK")
        with one.connect(EAST) as c:
            apply(c, render_lease(None, "revoked"))
        if one.execute(EAST, "SELECT count(*) FROM pg_prepared_xacts")[0][0]:
            tx.execute("COMMIT PREPARED 'fq'")
        tx.close()
        assert one.execute(EAST, "SELECT count(*) FROM items")[0][0] == 0, "a write committed after the revoke"
        one_region = Settings(region=EAST, regions=(EAST,), probe_s=PROBE_S, stale_after_s=STALE_S, lease_s=LEASE_S,
                              unfence_after=1, db_host="", db_port=0, db_name="postgres", db_sslmode="disable",
                              db_secret_arn="unused")
        with one.connect(EAST) as agent:
            result = probe(agent, one_region, control_on=True)
        assert result.decision.writable and not writable(result)
        assert "max_prepared_transactions" in getattr(result, "guard", "")


def test_a_notify_queue_larger_than_the_guard_bounds_makes_every_write_refused_and_no_lease_granted() -> None:
    # A transaction's notifications are written to the queue after its commit check, serving no
    # interrupt: only the queue's size bounds that work. Above the size the guard allows, writes are
    # refused and the agent grants no lease, both saying which setting and what to set it to.
    allowed = int(REQUIRED_PARAMETERS["max_notify_queue_pages"])
    with mesh(POLICY, APP_SCHEMA, regions=(EAST,), delays=False, leases=False) as one:
        with one.connect(EAST) as c:
            apply(c, render_lease(float("inf"), "by hand"))
        one.execute(EAST, "INSERT INTO items (id, v) VALUES (1, 'the queue is bounded')")
        one.execute(EAST, f"ALTER SYSTEM SET max_notify_queue_pages = {allowed + 1}")
        one.pg[EAST].restart()
        with one.connect(EAST) as c:
            apply(c, render_lease(float("inf"), "by hand"))  # a lease of this server instance
        with pytest.raises(psycopg.Error) as refused:
            one.execute(EAST, "INSERT INTO items (id, v) VALUES (2, 'the queue is not bounded')")
        assert refused.value.sqlstate == FENCE_SQLSTATE and f"set it to {allowed}" in str(refused.value)
        one_region = Settings(region=EAST, regions=(EAST,), probe_s=PROBE_S, stale_after_s=STALE_S, lease_s=LEASE_S,
                              unfence_after=1, db_host="", db_port=0, db_name="postgres", db_sslmode="disable",
                              db_secret_arn="unused")
        with one.connect(EAST) as agent:
            result = probe(agent, one_region, control_on=True)
        assert result.decision.writable and not writable(result)
        assert "max_notify_queue_pages" in result.guard
        assert one.execute(EAST, "SELECT count(*) FROM items")[0][0] == 1


def test_statistics_switched_off_make_every_write_refused() -> None:
    # The check counts a session's large-object opens in its statistics (control.sql,
    # large_object_opens): without them it would count none, so nothing is written.
    with mesh(POLICY, APP_SCHEMA, regions=(EAST,), delays=False, leases=False) as one:
        with one.connect(EAST) as c:
            apply(c, render_lease(float("inf"), "by hand"))
        one.execute(EAST, "INSERT INTO items (id, v) VALUES (1, 'counted')")
        one.execute(EAST, "ALTER SYSTEM SET track_counts = off")
        one.execute(EAST, "SELECT pg_reload_conf()")
        time.sleep(0.5)
        with pytest.raises(psycopg.Error) as refused:
            one.execute(EAST, "INSERT INTO items (id, v) VALUES (2, 'not counted')")
        assert refused.value.sqlstate == FENCE_SQLSTATE and "track_counts" in str(refused.value)
        assert one.execute(EAST, "SELECT count(*) FROM items")[0][0] == 1
