"""A local phase-B mesh: three PostgreSQL 18 writers bootstrapped with ``replication.sql``.

Every subscriber reaches every publisher through its own ``DelayProxy``
(one per directed pair), delayed by the fibre floor between the two regions,
so a region can be partitioned by cutting the proxies it appears on.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from drills.pg import PgNode, cluster
from drills.proxy import DelayProxy
from replication.bootstrap import apply, bootstrap_mesh
from replication.model import ConflictPolicy, Node
from replication.sql import REQUIRED_PARAMETERS, SCHEMA, render_lease

__all__ = ["FLOORS_MS", "REGIONS", "Mesh", "mesh", "one_way_ms"]

REGIONS: tuple[str, ...] = ("us-east-1", "us-west-2", "eu-west-1")

#: One-way fibre floors between the regions, in milliseconds (great-circle distance at 5 us/km).
FLOORS_MS: dict[frozenset[str], float] = {
    frozenset({"us-east-1", "us-west-2"}): 17.0,
    frozenset({"us-east-1", "eu-west-1"}): 27.0,
    frozenset({"us-west-2", "eu-west-1"}): 37.0,
    # the two extra regions of the five-writer drills
    frozenset({"us-east-1", "ap-northeast-1"}): 54.0,
    frozenset({"us-west-2", "ap-northeast-1"}): 39.0,
    frozenset({"eu-west-1", "ap-northeast-1"}): 48.0,
    frozenset({"us-east-1", "sa-east-1"}): 38.0,
    frozenset({"us-west-2", "sa-east-1"}): 55.0,
    frozenset({"eu-west-1", "sa-east-1"}): 47.0,
    frozenset({"ap-northeast-1", "sa-east-1"}): 92.0,
}

MESH_SETTINGS: dict[str, str] = {
    **REQUIRED_PARAMETERS,
    "max_slot_wal_keep_size": "8GB",  # room for the long drill's million-row transaction
    "wal_retrieve_retry_interval": "500ms",
    "max_connections": "60",
}


def one_way_ms(a: str, b: str, floors: Mapping[frozenset[str], float] = FLOORS_MS) -> float:
    """Floor between two regions (0 for unknown pairs, e.g. extra test regions)."""
    return floors.get(frozenset({a, b}), 0.0)


@dataclass
class Mesh:
    """The running mesh: servers, model nodes and the directed links."""

    pg: dict[str, PgNode]
    nodes: dict[str, Node]
    policy: ConflictPolicy
    links: dict[tuple[str, str], DelayProxy] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.nodes)

    def connect(self, name: str, **kw: Any) -> psycopg.Connection[Any]:
        """Autocommit connection to one writer."""
        return self.pg[name].connect(**kw)

    def execute(self, name: str, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.pg[name].execute(sql, params)

    def bootstrap(self) -> dict[str, int]:
        """Apply ``render_local_objects`` everywhere, then ``render_subscriptions`` everywhere."""

        def conninfo(subscriber: Node, publisher: Node) -> str:
            link = self.links.get((subscriber.name, publisher.name))
            return self.pg[publisher.name].conninfo(port=link.listen_port if link else None)

        return bootstrap_mesh(lambda n: self.connect(n.name), list(self.nodes.values()), self.policy, conninfo)

    # -- network ------------------------------------------------------------------

    def links_of(self, name: str) -> list[DelayProxy]:
        return [p for (a, b), p in self.links.items() if name in (a, b)]

    def partition(self, name: str, *, reset: bool = False) -> None:
        """Cut every link of one region (both directions)."""
        for p in self.links_of(name):
            p.partition(reset=reset)

    def heal(self, name: str | None = None) -> None:
        """Restore one region's links, or all links."""
        for p in self.links.values() if name is None else self.links_of(name):
            p.heal()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze every link: writes made inside are concurrent across nodes."""
        for p in self.links.values():
            p.partition()
        try:
            yield
        finally:
            self.heal()

    def reachable(self) -> dict[str, set[str]]:
        """Who each region can currently reach over healthy links (itself included)."""
        out: dict[str, set[str]] = {n: {n} for n in self.nodes}
        for (a, b), p in self.links.items():
            if not p.partitioned:
                out[a].add(b)
        return out

    # -- fence ----------------------------------------------------------------------

    def set_fence(self, name: str, fenced: bool, reason: str = "") -> None:
        """Revoke the write lease, or grant one that never runs out (no agent involved)."""
        with self.connect(name) as c:
            apply(c, render_lease(None if fenced else float("inf"), reason or ("fenced by hand" if fenced else "manual"),
                                  "drill"))

    # -- observation ------------------------------------------------------------------

    def digest(self, name: str, tables: Sequence[str]) -> str:
        """Hash of the full contents of ``tables`` on one node (order-independent)."""
        h = hashlib.sha256()
        with self.connect(name) as c:
            for t in tables:
                row = c.execute(
                    f"SELECT coalesce(string_agg(x::text, '|' ORDER BY x::text), '') FROM {t} x".encode()
                ).fetchone()
                h.update(t.encode() + b"=" + (row[0] if row else "").encode() + b";")
        return h.hexdigest()

    def wait_applied(self, *, timeout: float = 60) -> None:
        """Wait until every writer has merged everything each other writer committed before now: each
        origin's watermark, which follows its earlier changes in its ordered stream, has arrived. The
        watermark is emitted again until it does, as the agent does every probe: one emitted while
        some write transaction was still open claims no later than that transaction's start
        (emit_watermark), and would never reach ``now``."""
        for o in self.names:
            at = self.execute(o, "SELECT clock_timestamp()::text")[0][0]
            deadline = time.monotonic() + timeout
            pending = [r for r in self.names if r != o]
            while pending:
                # A fenced writer's agent ends every transaction that writes to the change log, an
                # emission included (end_writes): emitted again at the next turn.
                with contextlib.suppress(psycopg.errors.AdminShutdown):
                    self.execute(o, f"SELECT {SCHEMA}.emit_watermark()")
                time.sleep(0.05)
                pending = [r for r in pending if not self.execute(
                    r, f"SELECT coalesce(max(at) >= %s::timestamptz, false) FROM {SCHEMA}.applied WHERE origin = %s",
                    (at, o))[0][0]]
                if pending and time.monotonic() > deadline:
                    raise TimeoutError(f"{pending} never applied {o}'s changes up to {at}")

    def wait_converged(
        self, tables: Sequence[str], *, timeout: float = 60, names: Sequence[str] | None = None
    ) -> float:
        """Poll until ``tables`` are identical on every node; seconds waited (raises on timeout)."""
        who = list(names or self.nodes)
        t0 = time.monotonic()
        while True:
            digests = {n: self.digest(n, tables) for n in who}
            if len(set(digests.values())) == 1:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"no convergence after {timeout}s: {self.differences(tables, who)}")
            time.sleep(0.01)

    def differences(self, tables: Sequence[str], names: Sequence[str] | None = None) -> dict[str, dict[str, list[str]]]:
        """Rows of ``tables`` that are not on every node, per table and node (for diagnostics)."""
        who = list(names or self.nodes)
        out: dict[str, dict[str, list[str]]] = {}
        for t in tables:
            rows = {n: {r[0] for r in self.execute(n, f"SELECT x::text FROM {t} x")} for n in who}
            common = set.intersection(*rows.values())
            diff = {n: sorted(v - common)[:10] for n, v in rows.items() if v - common}
            if diff:
                out[t] = diff
        return out

    def wait_for(self, name: str, sql: str, expected: Any, *, timeout: float = 30) -> float:
        """Poll ``sql`` on one node until its first column equals ``expected``."""
        t0 = time.monotonic()
        last: Any = None
        while time.monotonic() - t0 < timeout:
            rows = self.execute(name, sql)
            last = rows[0][0] if rows else None
            if last == expected:
                return time.monotonic() - t0
            time.sleep(0.01)
        raise TimeoutError(f"{name}: {sql!r} stayed {last!r}, expected {expected!r}")

    def subscriptions_healthy(self) -> dict[str, bool]:
        """Per node: every subscription has a running apply worker."""
        out = {}
        for n in self.nodes:
            rows = self.execute(
                n,
                "SELECT count(*) FILTER (WHERE st.pid IS NOT NULL), count(*) FROM pg_subscription s "
                "LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL "
                "AND st.leader_pid IS NULL",
            )
            running, total = rows[0]
            out[n] = total == 2 * (len(self.nodes) - 1) and running == total  # data + control per peer
        return out

    def resolutions(self) -> dict[str, int]:
        """Conflict decisions taken by the apply triggers, summed over nodes, by kind."""
        totals: dict[str, int] = {}
        for n in self.nodes:
            for kind, cnt in self.execute(n, f"SELECT kind, sum(n)::bigint FROM {SCHEMA}.resolution_counts GROUP BY kind"):
                totals[kind] = totals.get(kind, 0) + int(cnt)
        return totals

    def native_conflicts(self) -> dict[str, int]:
        """PostgreSQL 18's own conflict counters (pg_stat_subscription_stats), summed."""
        cols = (
            "confl_insert_exists",
            "confl_update_origin_differs",
            "confl_update_exists",
            "confl_update_missing",
            "confl_delete_origin_differs",
            "confl_delete_missing",
            "confl_multiple_unique_conflicts",
        )
        totals = dict.fromkeys(cols, 0)
        for n in self.nodes:
            row = self.execute(n, "SELECT " + ", ".join(f"coalesce(sum({c}),0)::bigint" for c in cols)
                               + " FROM pg_stat_subscription_stats")[0]
            for c, v in zip(cols, row):
                totals[c] += int(v)
        return totals


@contextlib.contextmanager
def mesh(
    policy: ConflictPolicy,
    schema_sql: Sequence[str],
    *,
    regions: Sequence[str] = REGIONS,
    delays: bool = True,
    floors: Mapping[frozenset[str], float] = FLOORS_MS,
    bootstrap: bool = True,
    leases: bool = True,
    env: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[Mesh]:
    """Start one writer per region, create the application schema, link and bootstrap them.

    A bootstrapped writer starts fenced until its agent grants a lease; with ``leases`` (no agents
    in the test) every writer gets a lease that never runs out instead.
    """
    with cluster(list(regions), settings=MESH_SETTINGS, env=env) as pg:
        m = Mesh(
            pg=pg,
            nodes={
                r: Node(name=r, region=r, host="127.0.0.1", port=pg[r].port, dbname="postgres", user="postgres",
                        index=i + 1)
                for i, r in enumerate(regions)
            },
            policy=policy,
        )
        try:
            for sub in regions:
                for pub in regions:
                    if sub != pub:
                        d = one_way_ms(sub, pub, floors) if delays else 0.0
                        m.links[(sub, pub)] = DelayProxy(
                            pg[pub].port, delay_up_ms=d, delay_down_ms=d, name=f"{sub}->{pub}"
                        ).start()
            for r in regions:
                with m.connect(r) as c:
                    for stmt in schema_sql:
                        c.execute(stmt.encode())
            if bootstrap:
                m.bootstrap()
                if leases:
                    for r in regions:
                        m.set_fence(r, False)
            yield m
        finally:
            for p in m.links.values():
                with contextlib.suppress(Exception):
                    p.stop()
