"""Shared pieces of the red-team probes: a real 3-writer mesh with the application's and the agent's
real roles and grants, and the real agent probe driven round robin per region (as
tests/replication/test_adversary_fence.py does). Agent connections get the settings the deployed
agent's ``_connect`` gives them (``statement_timeout = 5s``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

import psycopg
import pytest

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.agent import ProbeResult, Settings, probe
from replication.bootstrap import apply
from replication.model import ConflictPolicy
from replication.roles import AGENT_ROLE, APP_ROLE, render_roles, secret_options

EAST, WEST, EU = REGIONS

#: Probes that take a minute or more each, kept out of CI's run: expected failures that confirm an open
#: limit is still open, and longer forms of a claim whose short form CI runs. FRAISEQL_LONG_PROBES=1
#: runs them (docs/testing.md).
long_probe = pytest.mark.skipif(not os.environ.get("FRAISEQL_LONG_PROBES"),
                                reason="a long probe; FRAISEQL_LONG_PROBES=1 runs it")
PROBE_S, STALE_S, LEASE_S = 0.25, 1.0, 0.8
PASSWORDS = {APP_ROLE: "app-password-0123456789", AGENT_ROLE: "agent-password-0123456789"}


def settings(region: str, *, unfence_after: int = 1, lease_s: float = LEASE_S) -> Settings:
    return Settings(region=region, regions=REGIONS, probe_s=PROBE_S, stale_after_s=STALE_S, lease_s=lease_s,
                    unfence_after=unfence_after, db_host="127.0.0.1", db_port=0, db_name="postgres",
                    db_sslmode="disable", db_secret_arn="unused", verify_every_s=0)


@contextlib.contextmanager
def red_mesh(schema: Sequence[str] = APP_SCHEMA, policy: ConflictPolicy = POLICY,
             extra_grants: Sequence[str] = ()) -> Iterator[Mesh]:
    """Three writers, fenced until their agents grant leases, with the real roles."""
    with mesh(policy, schema, delays=False, leases=False) as running:
        _give_roles(running, policy, extra_grants)
        yield running


@contextlib.contextmanager
def roles_pair() -> Iterator[Mesh]:
    """Two writers (east, west), writable without agents, with the real application and agent roles."""
    with mesh(POLICY, APP_SCHEMA, regions=(EAST, WEST), delays=False) as running:
        _give_roles(running, POLICY)
        yield running


def _give_roles(m: Mesh, policy: ConflictPolicy, extra_grants: Sequence[str] = ()) -> None:
    for r in m.nodes:
        with psycopg.connect(m.pg[r].dsn, autocommit=True, options=secret_options(PASSWORDS)) as c:
            apply(c, render_roles(policy, [APP_ROLE, AGENT_ROLE]))
            for g in extra_grants:
                c.execute(g.encode())


def connect(m: Mesh, region: str, role: str, **kw: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(f"host=127.0.0.1 port={m.pg[region].port} dbname=postgres user={role}", **kw)


def agent_conn(m: Mesh, region: str) -> psycopg.Connection[Any]:
    """An agent connection as replication.agent.entry._connect makes it (autocommit, 5 s statement timeout)."""
    c = connect(m, region, AGENT_ROLE, autocommit=True, application_name=f"fraiseql-agent-{region}")
    c.execute("SET statement_timeout = '5s'")
    return c


def writable(p: ProbeResult) -> bool:
    return bool(getattr(p, "writable", p.decision.writable))


def rounds(conns: dict[str, Any], n: int, only: Sequence[str] = REGIONS, **kw: Any) -> dict[str, ProbeResult]:
    last: dict[str, ProbeResult] = {}
    for _ in range(n):
        for r in only:
            last[r] = probe(conns[r], settings(r, **kw), control_on=True)
        time.sleep(PROBE_S)
    return last


def healthy(conns: dict[str, Any], **kw: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(writable(p) for p in rounds(conns, 1, **kw).values()):
            return
    raise AssertionError("the mesh did not become writable")


def set_up(agents: dict[str, Any], step: Callable[[], object], what: str = "a set-up write") -> None:
    """A write a scenario needs before its fault. The agents are driven by hand and the lease is short
    (``LEASE_S``), so on a loaded machine it can run out before the write commits (CI rehearsals saw
    set-up writes refused in test_claim_d and test_red12_held_link): renew every lease, then run
    ``step`` (a statement, or a whole transaction), again while it is refused, for up to 30 s."""
    deadline = time.monotonic() + 30
    while True:
        healthy(agents)
        try:
            step()
            return
        except psycopg.errors.ReadOnlySqlTransaction:
            assert time.monotonic() < deadline, f"{what} was refused for 30 s"


class Probing:
    """The agents probing on a thread of their own, round after round (leases renewed, watermarks
    fresh), as running agents would, while a probe drives its scenario; ``close()`` stops them."""

    def __init__(self, agents: dict[str, Any]) -> None:
        self.agents = agents
        self.stop = threading.Event()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                rounds(self.agents, 1)
            except Exception:  # noqa: BLE001 - keep probing
                time.sleep(0.2)

    def close(self) -> None:
        self.stop.set()
        self.th.join(timeout=10)


def retry_refused(fn: Callable[[], Any], what: str) -> Any:
    """``fn()``, again while it is refused (for up to 30 s), while ``Probing`` renews the leases."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return fn()
        except psycopg.errors.ReadOnlySqlTransaction:
            assert time.monotonic() < deadline, f"{what} was refused for 30 s"
            time.sleep(0.3)


def jsonb_parse_limit(c: psycopg.Connection[Any]) -> int:
    """The deepest nesting ``c``'s server parses as jsonb (its stack decides: about 16,000 levels here)."""
    def parses(n: int) -> bool:
        try:
            c.execute(f"SELECT (repeat('[', {n}) || repeat(']', {n}))::jsonb IS NOT NULL")
            return True
        except psycopg.Error:
            return False

    lo, hi = 100, 200_000
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if parses(mid) else (lo, mid)
    return lo


#: A subscription's failed applies, by name (the control links' health as a peer sees it).
APPLY_ERRORS = ("SELECT coalesce(ss.apply_error_count, 0) FROM pg_subscription s "
                "JOIN pg_stat_subscription_stats ss ON ss.subid = s.oid WHERE s.subname = %s")


def beat(m: Mesh, region: str, seq: int) -> None:
    """A well-formed heartbeat of ``region``, written by hand as the trusted superuser (DELETE, then
    INSERT, as the agent beats)."""
    with m.connect(region) as c:
        c.execute("DELETE FROM fraiseql_repl.heartbeats WHERE node = fraiseql_repl.node_name()")
        c.execute("INSERT INTO fraiseql_repl.heartbeats (node, seq, sent_at) "
                  "VALUES (fraiseql_repl.node_name(), %s, clock_timestamp())", (seq,))


def lease_end(m: Mesh, region: str) -> float:
    """The lease's end on ``region`` in seconds since the epoch (0: revoked), read as the check reads it."""
    v = m.execute(region, "SELECT last_value FROM fraiseql_repl.lease_until")[0][0]
    return float(v) / 1e6


def db_now(m: Mesh, region: str) -> float:
    return float(m.execute(region, "SELECT extract(epoch FROM clock_timestamp())::float8")[0][0])


def reset_agents(m: Mesh) -> None:
    m.heal()
    for r in REGIONS:
        m.execute(r, "UPDATE fraiseql_repl.agent_state SET writable = NULL, healthy_streak = 0")


_keys = itertools.count(1)


def key(base: int = 8_000_000) -> int:
    return base + next(_keys)


def present(m: Mesh, region: str, k: int, table: str = "items") -> bool:
    return bool(m.execute(region, f"SELECT count(*) FROM {table} WHERE id = %s", (k,))[0][0])


def wait_until(what: str, cond: Callable[[], object], timeout: float = 60) -> None:
    """Until ``cond()`` is true, polled every 0.1 s; fails with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def wait_in_statement(m: Mesh, region: str, pid: int, text: str, timeout: float = 10) -> None:
    """Until backend ``pid`` of ``region`` is running a statement that contains ``text``."""
    wait_until(f"backend {pid} of {region} running {text}", lambda: m.execute(
        region, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active' AND query LIKE %s",
        (pid, f"%{text}%")) == [(1,)], timeout=timeout)


def key_state(m: Mesh, k: int) -> dict[str, tuple[int, int, int]]:
    """Key ``k`` of ``items`` per writer: (rows, tombstones, parked changes)."""
    pk = json.dumps({"id": k})
    return {r: (m.execute(r, "SELECT count(*) FROM items WHERE id = %s", (k,))[0][0],
                m.execute(r, "SELECT count(*) FROM fraiseql_repl.tombstones WHERE pk = %s::jsonb", (pk,))[0][0],
                m.execute(r, "SELECT count(*) FROM fraiseql_repl.parked WHERE pk = %s::jsonb", (pk,))[0][0]) for r in REGIONS}


@contextlib.contextmanager
def probed_mesh() -> Iterator[tuple[Mesh, dict[str, Any]]]:
    """A ``red_mesh`` whose agents are made healthy, then go on probing (``Probing``) until the block
    ends; yields the mesh and the agents' connections."""
    with red_mesh() as m:
        agents = {r: agent_conn(m, r) for r in REGIONS}
        healthy(agents)
        probing = Probing(agents)
        try:
            yield m, agents
        finally:
            probing.close()


def wait_present(m: Mesh, region: str, k: int, timeout: float = 10.0, table: str = "items") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if present(m, region, k, table):
            return True
        time.sleep(0.1)
    return False


class Delivery:
    """A checker over the history of writes that regions acknowledge (rows of items, keyed by
    ``key()``): a write acknowledged on ``region`` is late when one of ``other``'s acknowledged writes
    had not reached ``region`` for longer than ``bound`` by then. Two regions that both keep
    acknowledging late writes cannot replicate to each other and are both taking writes: the split
    the bound rules out."""

    def __init__(self, m: Mesh, bound: float) -> None:
        self.m, self.bound = m, bound
        self.acked: dict[str, dict[int, float]] = {}    # region -> key -> acknowledged at (monotonic)
        self.arrived: dict[str, dict[int, float]] = {}  # region -> another region's key -> first seen at

    def write(self, conn: psycopg.Connection[Any], region: str,
              statement: str = "INSERT INTO items (id, v) VALUES (%s, %s)") -> Optional[float]:
        """One write of a new key on ``region`` (``statement`` takes the key and the region's name):
        when it was acknowledged, or None if it was refused."""
        k = key()
        try:
            conn.execute(statement.encode(), (k, region))
        except psycopg.Error:
            return None
        at = self.acked.setdefault(region, {})[k] = time.monotonic()
        return at

    def writes(self, conn: psycopg.Connection[Any], region: str, n: int) -> int:
        """Up to ``n`` writes on ``region``, stopping at the first refused: how many were acknowledged."""
        done = 0
        while done < n and self.write(conn, region) is not None:
            done += 1
        return done

    def late(self, region: str, other: str, at: float) -> float:
        """How late a write ``region`` acknowledged at ``at`` was: how long before it ``other``
        acknowledged the oldest write ``region`` has not received, if that is longer than the bound
        (0: not late). Looks the pending writes up on ``region`` first."""
        seen = self.arrived.setdefault(region, {})
        pending = [x for x in self.acked.get(other, {}) if x not in seen]
        if pending:
            for (x,) in self.m.execute(region, "SELECT id FROM items WHERE id = ANY(%s)", (pending,)):
                seen[x] = time.monotonic()
        old = [t for x, t in self.acked.get(other, {}).items() if x not in seen and at - t > self.bound]
        return at - min(old) if old else 0.0


def temp_tables_refused(c: psycopg.Connection[Any]) -> bool:
    """Whether ``c`` (autocommit) is refused temporary tables. The bootstrap takes TEMPORARY from the
    application role (replication/roles.py): the probes that need temporary tables for their attack
    check it first, and run the attack only where the privilege is back."""
    try:
        c.execute("CREATE TEMP TABLE _fq_probe (x int)")
    except psycopg.errors.InsufficientPrivilege:
        return True
    c.execute("DROP TABLE _fq_probe")
    return False


def commit_lands_after_revoke(m: Mesh, agents: dict[str, Any], app: psycopg.Connection[Any], k: int,
                              *, fence_within_s: float = 20.0) -> Optional[tuple[float, float]]:
    """Claim A's scenario for a transaction that does its work after the commit check: ``app`` (in
    autocommit mode, inside the ``BEGIN`` it issued, having written key ``k`` to ``items``) commits in
    a thread; 0.2 s later, the check has run, ``EAST`` is isolated and its real agent runs until it
    fences (revoke, then end_writes). If the row is there: the seconds from the revoke and from the
    end of the fencing round to its commit. Closes ``app``."""
    outcome: dict[str, Any] = {}

    def commit() -> None:
        started = time.monotonic()
        try:
            app.execute("COMMIT")
            outcome["result"] = "committed"
        except Exception as exc:  # noqa: BLE001 - any refusal is the claim holding
            outcome["result"] = f"refused: {exc!r}"
        outcome["seconds"] = time.monotonic() - started

    writer = threading.Thread(target=commit)
    writer.start()
    time.sleep(0.2)  # the commit is under way: its lease check ran (the lease was valid)
    m.partition(EAST)
    ended_at = None
    deadline = time.monotonic() + fence_within_s
    while time.monotonic() < deadline:
        last = rounds(agents, 1)  # the real agent: revoke, then end_writes
        if not writable(last[EAST]):
            ended_at = m.execute(EAST, "SELECT clock_timestamp()")[0][0]
            break
    writer.join()
    app.close()
    assert ended_at is not None, "the agent never fenced the isolated region"
    row = m.execute(EAST, "SELECT extract(epoch FROM pg_xact_commit_timestamp(i.xmin) - l.changed_at)::float8, "
                          "extract(epoch FROM pg_xact_commit_timestamp(i.xmin) - %s)::float8 "
                          "FROM items i, fraiseql_repl.lease l WHERE i.id = %s AND l.valid_until = '-infinity'",
                    (ended_at, k))
    print(f"\ncommit: {outcome.get('result')} in {outcome.get('seconds', 0):.2f} s; seconds after the revoke, "
          f"after the agent's probe (end_writes) returned: {row}")
    return (row[0][0], row[0][1]) if row else None


def assert_not_after_revoke(late: Optional[tuple[float, float]]) -> None:
    assert not (late and late[0] > 0), (
        f"a transaction committed {late[0]:.2f} s after {EAST}'s agent revoked the lease "
        f"({late[1]:.2f} s after the agent's end_writes had returned)")
