"""Lifecycle drills on real PostgreSQL 18 under continuous writes from every region:

* **A to B**: a streaming primary (with a standby and a third copy) becomes a three-writer mesh;
* **join**: a fourth and fifth writer join a running mesh;
* **replace**: a writer killed with ``kill -9`` stays down until its slots are invalidated, then is
  rebuilt from a copy;
* **shrink**: back from five writers to three.

Every drill runs the same ``replication.lifecycle`` plan the runbook runs, with a ``LocalBackend``
(loopback servers, physical standbys for the copies, ``pg_promote``, the real agents as processes).
Each ends with every table equal (``verify``) and checks that no acknowledged write is missing.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from drills.agents import AgentProcess, AgentTiming, agent_env, wait_writable
from drills.checker import Ack
from drills.localaws import LocalAws, local_aws
from drills.mesh import FLOORS_MS, MESH_SETTINGS, Mesh, mesh, one_way_ms
from drills.nemesis import CHECKED_TABLES, NEMESIS_POLICY, NEMESIS_SCHEMA, REGIONS_3, REGIONS_5, Writers
from drills.pg import PgNode, cluster
from drills.proxy import DelayProxy
from replication.lifecycle import Runner, plan_a_to_b, plan_join, plan_replace, plan_shrink
from replication.model import Node

__all__ = ["LifecycleResult", "LocalBackend", "run_lifecycle"]


class LocalBackend:
    """Writers on loopback: a copy is a physical standby, promotion is ``pg_promote``, agents are processes."""

    def __init__(self, pg: dict[str, PgNode], order: Sequence[str], aws: LocalAws, timing: AgentTiming,
                 log_dir: Path) -> None:
        self.pg = pg
        self.order = list(order)
        self.aws, self.timing, self.log_dir = aws, timing, log_dir
        self.links: dict[tuple[str, str], DelayProxy] = {}
        self.procs: dict[str, AgentProcess] = {}
        self.membership: tuple[list[str], tuple[str, ...]] = (list(order), ())

    def link(self, subscriber: str, publisher: str) -> DelayProxy:
        key = (subscriber, publisher)
        proxy = self.links.get(key)
        if proxy is None or proxy.target_port != self.pg[publisher].port:
            if proxy is not None:
                proxy.stop()
            d = one_way_ms(subscriber, publisher, FLOORS_MS)
            proxy = DelayProxy(self.pg[publisher].port, delay_up_ms=d, delay_down_ms=d,
                               name=f"{subscriber}->{publisher}").start()
            self.links[key] = proxy
        return proxy

    # Backend
    def node(self, region: str) -> Node:
        return Node(name=region, region=region, host="127.0.0.1", port=self.pg[region].port, dbname="postgres",
                    user="postgres", index=self.order.index(region) + 1)

    def connect(self, region: str) -> Any:
        return self.pg[region].connect()

    def conninfo(self, subscriber: str, publisher: str) -> str:
        return self.pg[publisher].conninfo(port=self.link(subscriber, publisher).listen_port)

    def replay_lsn(self, region: str) -> Optional[str]:
        rows = self.pg[region].execute("SELECT pg_last_wal_replay_lsn()::text")
        return rows[0][0] if rows else None

    def promote(self, region: str) -> None:
        self.pg[region].promote(wait=True)
        self.pg[region].wait_ready(writable=True, timeout=60)

    def after_identify(self, region: str) -> None:
        # The copy ran with no logical replication workers so that the subscriptions it copied could
        # not consume its source's slots; they are gone now.
        node = self.pg[region]
        if node.settings.get("max_logical_replication_workers") == "0":
            node.settings["max_logical_replication_workers"] = MESH_SETTINGS["max_logical_replication_workers"]
            node.restart()

    def _start(self, region: str, *, replace: bool = True) -> AgentProcess:
        members, nxt = self.membership
        # A joining writer runs the membership everyone runs; not a member yet, it stays fenced.
        env = agent_env(region, members, self.pg[region].port, self.aws, self.timing, next_regions=nxt)
        old = self.procs.get(region)
        if old is not None and replace:
            old.kill()
        proc = AgentProcess(region, env, self.log_dir / f"agent-{region}.log", self.timing.invocation_s).start()
        self.procs[region] = proc
        return proc

    def start_agents(self, regions: Sequence[str], members: Sequence[str], next_members: Sequence[str]) -> None:
        self.membership = (list(members), tuple(next_members))
        for r in regions:
            self._start(r)

    def stop_agents(self, regions: Sequence[str]) -> None:
        for r in regions:
            p = self.procs.pop(r, None)
            if p is not None:
                p.kill()

    def set_membership(self, members: Sequence[str], next_members: Sequence[str]) -> None:
        """Like a Lambda deploy, one region at a time: an invocation with the new configuration starts
        beside the running one, which hands the loop over at its next probe (``acquire_loop``); the
        old process is stopped once the new one reports the membership."""
        self.membership = (list(members), tuple(next_members))
        want = ",".join(members) + ("|" + ",".join(next_members) if next_members else "")
        for r in list(self.procs):
            old = self.procs[r]
            self._start(r, replace=False)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rows = self.pg[r].execute("SELECT membership FROM fraiseql_repl.heartbeats WHERE node = %s", (r,))
                if rows and rows[0][0] == want:
                    break
                time.sleep(0.1)
            old.kill()

    def diagnostics(self) -> list[str]:
        """Subscriptions, heartbeat ages and the agents' last decisions: what to read when a drill fails."""
        out = []
        for r, node in self.pg.items():
            if not node.running:
                out.append(f"{r}: down")
                continue
            with contextlib.suppress(Exception):
                subs = node.execute(
                    "SELECT s.subname, s.subenabled, st.pid IS NOT NULL, coalesce(ss.apply_error_count, 0) "
                    "FROM pg_subscription s LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL "
                    "LEFT JOIN pg_stat_subscription_stats ss ON ss.subid = s.oid ORDER BY 1")
                beats = node.execute("SELECT node, round(extract(epoch FROM clock_timestamp() - received_at)::numeric, 1), "
                                     "membership FROM fraiseql_repl.heartbeats ORDER BY 1")
                out.append(f"{r}: subscriptions {subs}; heartbeats {beats}")
        for r, p in self.procs.items():
            decisions = [x for x in p.records() if x.get("event") == "decision"]
            out.append(f"{r} agent: {decisions[-1] if decisions else 'no decision'}")
        return out

    def close(self) -> None:
        for p in self.procs.values():
            with contextlib.suppress(Exception):
                p.kill()
        for link in self.links.values():
            with contextlib.suppress(Exception):
                link.stop()


@dataclass
class LifecycleResult:
    drill: str
    regions_before: list[str]
    regions_after: list[str]
    seconds: float
    steps: list[dict[str, Any]]
    acked: int
    lost: int
    diverged_rows: int
    unavailable_s: dict[str, float]          # per region: longest stretch without an acknowledged write
    first_write_s: dict[str, float] = field(default_factory=dict)  # new writers: from the start to their first write
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.diverged_rows == 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gaps(acks: Sequence[Ack], regions: Sequence[str], start: float, end: float) -> dict[str, float]:
    out = {}
    for r in regions:
        times = sorted(a.t for a in acks if a.region == r and a.ok and start <= a.t <= end)
        if not times:
            out[r] = end - start
            continue
        edges = [start, *times, end]
        out[r] = max(b - a for a, b in zip(edges, edges[1:]))
    return out


def _lost(backend: LocalBackend, acks: Sequence[Ack], regions: Sequence[str]) -> int:
    keys = {a.key for a in acks if a.ok}
    lost = 0
    for r in regions:
        present = {int(k) for (k,) in backend.pg[r].execute("SELECT id FROM nemesis_log")}
        lost += len(keys - present)
    return lost


@contextlib.contextmanager
def _environment(regions: Sequence[str]) -> Iterator[tuple[LocalAws, Path]]:
    with tempfile.TemporaryDirectory(prefix="fraiseql-lifecycle-") as logs, local_aws(list(regions)) as aws:
        yield aws, Path(logs)


class _MeshView:
    """What ``Writers`` needs: a ``connect(region)``."""

    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend

    def connect(self, region: str) -> Any:
        return self.backend.connect(region)

    def execute(self, region: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.backend.pg[region].execute(sql, params)


def _finish(result_name: str, backend: LocalBackend, writers: Writers, before: Sequence[str], after: Sequence[str],
            t0: float, t_end: float, state: dict[str, Any], steps: list[dict[str, Any]]) -> LifecycleResult:
    acks = writers.snapshot()
    m = Mesh(pg={r: backend.pg[r] for r in after}, nodes={r: backend.node(r) for r in after}, policy=NEMESIS_POLICY)
    m.wait_converged(list(CHECKED_TABLES), timeout=120)
    return LifecycleResult(
        drill=result_name, regions_before=list(before), regions_after=list(after), seconds=t_end - t0, steps=steps,
        acked=sum(1 for a in acks if a.ok), lost=_lost(backend, acks, after),
        diverged_rows=int(state.get("verify", {}).get("diverged_rows", -1)),
        unavailable_s={r: round(v, 2) for r, v in _gaps(acks, [r for r in before if r in after], t0, t_end).items()},
        first_write_s={r: round(min((a.t for a in acks if a.region == r and a.ok and a.t >= t0), default=t_end) - t0, 2)
                       for r in after if r not in before and any(a.region == r for a in acks)},
    )


def _retry_fenced(write: Any, timeout_s: float = 60.0) -> None:
    """A drill's own bulk write: retried while its region is briefly fenced (agents restarting)."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            write()
            return
        except psycopg.errors.ReadOnlySqlTransaction:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _invalidate_slots_of(backend: LocalBackend, source: str, lost: str, survivors: Sequence[str]) -> int:
    """Write on ``source`` until the slots it keeps for ``lost`` pass max_slot_wal_keep_size and are
    invalidated, letting the live peers keep up between batches (so only the dead writer's go)."""
    node = Node(name=lost, region=lost, host="")
    from replication.sql import control_subscription_name, slot_name  # noqa: PLC0415

    mine = Node(name=source, region=source, host="")
    dead = (slot_name(node, mine), control_subscription_name(node, mine))
    # WAL from a table nobody subscribes to: the live peers' walsenders skip it quickly, so only the
    # dead writer's slots fall behind.
    backend.pg[source].execute("CREATE TABLE IF NOT EXISTS wal_filler (id bigint, pad text)")
    for _ in range(60):
        statuses = dict(backend.pg[source].execute(
            "SELECT slot_name, wal_status FROM pg_replication_slots WHERE slot_name = ANY(%s)", (list(dead),)))
        if statuses and all(v == "lost" for v in statuses.values()):
            break
        backend.pg[source].execute("INSERT INTO wal_filler SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 10000) g")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the live peers catch up before the next batch
            behind = backend.pg[source].execute(
                "SELECT count(*) FROM pg_replication_slots WHERE NOT (slot_name = ANY(%s)) AND wal_status <> 'lost' "
                "AND pg_current_wal_lsn() - confirmed_flush_lsn > 8 * 1024 * 1024", (list(dead),))[0][0]
            if not behind:
                break
            time.sleep(0.2)
        backend.pg[source].execute("CHECKPOINT")
    return int(backend.pg[source].execute("SELECT count(*) FROM pg_replication_slots WHERE wal_status = 'lost'")[0][0])


def run_a_to_b(timing: AgentTiming = AgentTiming(), seed_rows: int = 2000) -> LifecycleResult:
    """us-east-1 streams to us-west-2 (phase A) and to a copy in eu-west-1; the transition makes all
    three writers of one mesh while every region keeps trying to write."""
    primary, standby, third = REGIONS_3
    with _environment(REGIONS_3) as (aws, logs), cluster([primary], settings=MESH_SETTINGS) as pg:
        for stmt in NEMESIS_SCHEMA:
            pg[primary].execute(stmt)
        pg[primary].execute(f"INSERT INTO nemesis_log SELECT g, 'phase-a' FROM generate_series(1, {seed_rows}) g")
        backend = LocalBackend(pg, REGIONS_3, aws, timing, logs)
        try:
            for r in (standby, third):
                pg[r] = pg[primary].make_standby(r, via_port=backend.link(r, primary).listen_port)
                pg[r].start()
            writers = Writers(_MeshView(backend), list(REGIONS_3), pause_s=0.02)
            steps: list[dict[str, Any]] = []
            with writers:
                time.sleep(1.0)
                t0 = time.monotonic()
                runner = Runner(backend, NEMESIS_POLICY, REGIONS_3, log=steps.append)
                state = runner.run(plan_a_to_b(primary, standby, [third], REGIONS_3), [primary], agents_running=[])
                wait_writable(_MeshView(backend), list(REGIONS_3), timeout=60)  # type: ignore[arg-type]
                t_end = time.monotonic()
                time.sleep(1.0)
            return _finish("A to B", backend, writers, [primary], list(REGIONS_3), t0, t_end, state, steps)
        finally:
            backend.close()


def run_grow_replace_shrink(timing: AgentTiming = AgentTiming(), *, replace: bool = True) -> list[LifecycleResult]:
    """A running three-writer mesh: two writers join, one is killed and rebuilt after its slots were
    invalidated, then the two leave again."""
    three, five = list(REGIONS_3), list(REGIONS_5)
    settings = {**MESH_SETTINGS, "max_slot_wal_keep_size": "64MB"}
    results = []
    with _environment(five) as (aws, logs), mesh(NEMESIS_POLICY, NEMESIS_SCHEMA, regions=three, leases=False) as m:
        for r in three:
            for k, v in settings.items():
                m.pg[r].settings[k] = v
            m.pg[r].restart()
        backend = LocalBackend(dict(m.pg), five, aws, timing, logs)
        backend.links.update(m.links)
        try:
            backend.start_agents(three, three, ())
            wait_writable(_MeshView(backend), three, timeout=60)  # type: ignore[arg-type]
            source = three[0]
            # -- join two ------------------------------------------------------------------------
            joining = five[3:]
            for r in joining:
                backend.pg[r] = backend.pg[source].make_standby(
                    r, via_port=backend.link(r, source).listen_port,
                    settings={**settings, "max_logical_replication_workers": "0"})
                backend.pg[r].start()
            steps: list[dict[str, Any]] = []
            with Writers(_MeshView(backend), three, pause_s=0.02, key_base=10**15) as writers:
                t0 = time.monotonic()
                state = Runner(backend, NEMESIS_POLICY, five, log=steps.append).run(
                    plan_join(three, joining, source), three)
                wait_writable(_MeshView(backend), five, timeout=60)  # type: ignore[arg-type]
                t_end = time.monotonic()
            results.append(_finish("join 2 writers", backend, writers, three, five, t0, t_end, state, steps))

            # -- replace a writer killed long enough ago to lose its slots -----------------------
            if replace:
                lost = five[2]
                steps = []
                survivors = [r for r in five if r != lost]
                with Writers(_MeshView(backend), survivors, pause_s=0.02, key_base=2 * 10**15) as writers:
                    backend.stop_agents([lost])
                    backend.pg[lost].kill()
                    t_kill = time.monotonic()
                    lost_slots = _invalidate_slots_of(backend, source, lost, survivors)
                    invalidation_s = time.monotonic() - t_kill
                    t0 = time.monotonic()
                    backend.pg[lost] = backend.pg[source].make_standby(
                        f"{lost}-rebuilt", via_port=backend.link(lost, source).listen_port,
                        settings={**settings, "max_logical_replication_workers": "0"})
                    backend.pg[lost].start()
                    state = Runner(backend, NEMESIS_POLICY, five, log=steps.append).run(
                        plan_replace(five, lost, source), five, agents_running=survivors)
                    wait_writable(_MeshView(backend), five, timeout=60)  # type: ignore[arg-type]
                    t_end = time.monotonic()
                res = _finish("replace a lost writer", backend, writers, survivors, five, t0, t_end, state, steps)
                res.notes.append(f"{lost} killed; its {lost_slots} slots on {source} invalidated after {invalidation_s:.0f} s "
                                 "of writes (max_slot_wal_keep_size 64MB); the rebuild is measured from there")
                results.append(res)

            # -- shrink back to three ---------------------------------------------------------------
            steps = []
            with Writers(_MeshView(backend), five, pause_s=0.02, key_base=3 * 10**15) as writers:
                t0 = time.monotonic()
                state = Runner(backend, NEMESIS_POLICY, five, log=steps.append).run(plan_shrink(five, joining), five)
                t_end = time.monotonic()
            results.append(_finish("shrink to 3", backend, writers, five, three, t0, t_end, state, steps))
        finally:
            backend.close()
    return results


def run_lifecycle() -> list[LifecycleResult]:
    return [run_a_to_b(), *run_grow_replace_shrink()]
