"""The nemesis drill: random faults against real writers and real fence agents, judged by a checker.

Fault model (what may fail, and how; one small function per fault in ``FAULT_KINDS``):

* **links**, per direction: a link stops delivering (frozen TCP, like dropped packets) in one
  direction, both, for one pair (the non-transitive case), for every link of a region (clean
  minority split), across a minority/majority split (5 regions), or flaps;
* **agent processes**: killed (crash, expired Lambda), stalled (SIGSTOP: frozen, still connected),
  or paused at the worst moment: right after it looked at its peers, while its region is cut off
  (``replication.failpoints``);
* **the routing-control plane**: every ARC endpoint refuses connections, or hangs;
* **clocks**: a writer's clock steps by up to ``skew_max_s`` in either direction (libfaketime);
* **load**: one large transaction on one writer, replicated to all;
* **garbage collection**: a writer purges its tombstones at a random moment, others later.

Clients (``drills.workload``) run meanwhile: writers inserting unique keys in every region; keys only
their own region sets and deletes (registers); rows competing for a few unique values; parents and
children across regions with parents deleted; and the application role trying every way around the
fence its grants allow (checks run early and the commit held back, a setting the check once
trusted, old snapshots, savepoints). The checker (``drills.checker``) then asserts: no two regions
that could not replicate to each other both acknowledged writes for longer than the detection bound
(``replication.quorum.detection_bound``); after the final heal all nodes are equal; no acknowledged
write is missing anywhere; every register ends as its history allows (no resurrected delete, no lost
re-insert); no child is left without its parent.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

import psycopg

from drills.agents import AgentProcess, AgentTiming, agents, wait_writable
from drills.checker import Ack, Cut, Verdict, check
from drills.localaws import LocalAws, local_aws
from drills.mesh import FLOORS_MS, Mesh, mesh
from drills.workload import WORKLOAD_SCHEMA, WORKLOAD_TABLES, Adversary, Clashes, Client, Family, Registers
from replication.bootstrap import apply
from replication.model import ConflictPolicy
from replication.quorum import detection_bound
from replication.roles import APP_ROLE, render_roles, secret_options

__all__ = ["NEMESIS_POLICY", "NEMESIS_SCHEMA", "NemesisConfig", "NemesisResult", "REGIONS_5", "run_nemesis"]

REGIONS_3 = ("us-east-1", "us-west-2", "eu-west-1")
REGIONS_5 = REGIONS_3 + ("ap-northeast-1", "sa-east-1")

NEMESIS_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE nemesis_log (id bigint PRIMARY KEY, region text NOT NULL)",
    "CREATE TABLE nemesis_reg (k int PRIMARY KEY, v text)",
    "CREATE TABLE ballast (id bigint PRIMARY KEY, pad text)",
)
NEMESIS_POLICY = ConflictPolicy(replicated=("nemesis_log", "nemesis_reg", "ballast"))
CHECKED_TABLES = ("nemesis_log", "nemesis_reg", "ballast")

FAULTS = ("link", "one_way", "isolate", "split", "flap", "kill_agent", "stall_agent", "pause_agent", "arc_down",
          "arc_hang", "skew", "big_txn", "control_off", "tombstone_gc")


@dataclass(frozen=True)
class NemesisConfig:
    regions: tuple[str, ...] = REGIONS_3
    schedules: int = 6
    seed: int = 1
    timing: AgentTiming = AgentTiming()
    fault_s: tuple[float, float] = (2.0, 4.0)
    settle_s: float = 3.0
    skew_max_s: float = 0.5
    big_rows: int = 100_000
    measure_specials: bool = True
    faults: tuple[str, ...] = FAULTS
    #: Quick runs apply every fault kind once (in a random order) so CI covers each; long runs draw at random.
    each_once: bool = False
    #: Rows of one more large transaction, with the agents restarted at the default (production) timing.
    production_big_rows: int = 0


#: The stack's default fence timing (core/config.py QuorumConfig with 3 regions).
PRODUCTION_TIMING = AgentTiming(probe_s=5.0, stale_after_s=15.0, lease_s=15.0, unfence_after=3, invocation_s=900.0)


@dataclass
class NemesisResult:
    regions: list[str]
    schedules_run: int
    wall_s: float
    faults_applied: dict[str, int]
    bound_s: float
    worst_window_s: float
    worst_window_pair: str
    violations: list[str]
    acked: int
    refused: int
    lost: int
    converged: bool
    diverged_nodes: list[str]
    agent_death_fence_s: Optional[float] = None
    lease_s: float = 0.0
    stale_after_s: float = 0.0
    writers12_fence_s: Optional[float] = None
    writers12_commits: int = 0
    writers12_commits_after_revoke: int = 0
    big_txn_rows: int = 0
    big_txn_false_fences: Optional[int] = None
    big_txn_replicated_s: Optional[float] = None
    #: the oldest peer heartbeat any node held while the big transaction replicated (stale after: timing)
    big_txn_heartbeat_age_s: Optional[float] = None
    traffic_steered: Optional[bool] = None
    #: the large transaction at the default timing: rows, false fences, seconds to reach every writer,
    #: the oldest peer heartbeat meanwhile
    production_big_rows: int = 0
    production_big_false_fences: Optional[int] = None
    production_big_replicated_s: Optional[float] = None
    production_big_heartbeat_age_s: Optional[float] = None
    #: registers (keys one region sets and deletes): deletes that came back, writes that did not stay
    resurrected: int = 0
    lost_registers: int = 0
    register_faults: list[str] = field(default_factory=list)
    register_ops: int = 0
    #: children whose parent is gone, summed over writers
    orphans: int = 0
    #: the application role's attempts around the fence, by trick, and how many commits returned
    adversary_tried: dict[str, int] = field(default_factory=dict)
    adversary_acked: int = 0
    schedule_log: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (not self.violations and self.lost == 0 and self.converged and self.resurrected == 0
                and self.lost_registers == 0 and self.orphans == 0 and (self.big_txn_false_fences in (None, 0)))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- load ------------------------------------------------------------------------------------------


class _Connects(Protocol):
    """What ``Writers`` needs of a mesh: a connection to a region's writer."""

    def connect(self, region: str, /) -> psycopg.Connection[Any]: ...


class Writers:
    """One writer per region on its own writer, inserting unique keys; every attempt recorded."""

    def __init__(self, m: _Connects, regions: Sequence[str], *, pause_s: float = 0.01, key_base: int = 0) -> None:
        self.m = m
        self.key_base = key_base  # several Writers on one mesh must not reuse each other's keys
        self.regions = list(regions)
        self.pause_s = pause_s
        self.acks: list[Ack] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(r, i), daemon=True, name=f"writer-{r}")
                         for i, r in enumerate(self.regions)]

    def __enter__(self) -> "Writers":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, region: str, index: int) -> None:
        keys = itertools.count(self.key_base + (index + 1) * 10**12)
        rng = random.Random(index)
        conn: Optional[psycopg.Connection[Any]] = None
        while not self._stop.is_set():
            key = next(keys)
            try:
                if conn is None:
                    conn = self.m.connect(region)
                    conn.execute("SET statement_timeout = '5s'")
                conn.execute("INSERT INTO nemesis_log (id, region) VALUES (%s, %s)", (key, region))
                ack = Ack(region, key, time.monotonic(), True)
            except psycopg.Error as exc:
                ack = Ack(region, key, time.monotonic(), False, getattr(exc, "sqlstate", None))
                if conn is not None and conn.broken:
                    conn = None
            if ack.ok and key % 5 == 0 and conn is not None:
                try:  # its own statement: a refusal here does not undo the acknowledged insert above
                    conn.execute("INSERT INTO nemesis_reg VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                                 (rng.randint(1, 5), f"{region}:{key}"))
                except psycopg.Error:
                    if conn.broken:
                        conn = None
            with self._lock:
                self.acks.append(ack)
            self._stop.wait(self.pause_s)
        if conn is not None:
            conn.close()

    def snapshot(self) -> list[Ack]:
        with self._lock:
            return list(self.acks)


RUN_POLICY = ConflictPolicy(replicated=NEMESIS_POLICY.replicated + WORKLOAD_TABLES)
#: The application role the adversarial client runs as (the drill's servers trust loopback).
APP_ROLE_PASSWORD = "drill-app-password-0123456789"


def _app_role(m: Mesh) -> None:
    for r in m.nodes:
        with psycopg.connect(m.pg[r].dsn, autocommit=True, options=secret_options({APP_ROLE: APP_ROLE_PASSWORD})) as c:
            apply(c, render_roles(RUN_POLICY, [APP_ROLE]))


class _Clients:
    """The other clients of a run (``drills.workload``), started and stopped together."""

    def __init__(self, m: Mesh, regions: Sequence[str], cfg: NemesisConfig, timing: AgentTiming) -> None:
        self.registers = Registers(m, regions, seed=cfg.seed)
        self.clashes = Clashes(m, regions, seed=cfg.seed, pause_s=0.05)
        self.family = Family(m, regions, seed=cfg.seed, pause_s=0.05)
        self.adversary = Adversary(m, regions, seed=cfg.seed, hold_s=2 * timing.lease_s, role=APP_ROLE)
        self._all: list[Client] = [self.registers, self.clashes, self.family, self.adversary]

    def __enter__(self) -> "_Clients":
        for c in self._all:
            c.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for c in self._all:
            c.__exit__(*exc)


# -- the nemesis -------------------------------------------------------------------------------------


class Nemesis:
    """Applies faults and remembers, per directed link, when it could not deliver."""

    def __init__(self, m: Mesh, aws: LocalAws, procs: dict[str, AgentProcess], skew_files: dict[str, Path],
                 rng: random.Random, cfg: NemesisConfig) -> None:
        self.m, self.aws, self.procs, self.skew_files, self.rng, self.cfg = m, aws, procs, skew_files, rng, cfg
        self.failpoints = {r: p.failpoints for r, p in procs.items() if p.failpoints is not None}
        self.cuts: list[Cut] = []
        self._down: dict[tuple[str, str], tuple[int, float]] = {}
        # cut/restore run on the schedule's thread and on a flap's: one at a time
        self._links_lock = threading.RLock()
        self.applied: dict[str, int] = {}
        self.log: list[str] = []
        self.t0 = time.monotonic()

    def arm(self, region: str, point: str, seconds: float) -> None:
        """Make ``region``'s agent pause ``seconds`` once, at ``point`` (``replication.failpoints``)."""
        path = self.failpoints[region]
        path.write_text(json.dumps({point: {"token": f"{time.monotonic_ns()}", "seconds": seconds}}))

    # links: (listener, speaker); the proxy on that key carries speaker -> listener
    def cut(self, listener: str, speaker: str) -> None:
        with self._links_lock:
            n, since = self._down.get((listener, speaker), (0, 0.0))
            if n == 0:
                self.m.links[(listener, speaker)].partition()
                since = time.monotonic()
            self._down[(listener, speaker)] = (n + 1, since)

    def restore(self, listener: str, speaker: str) -> None:
        with self._links_lock:
            n, since = self._down[(listener, speaker)]
            if n == 1:
                self.m.links[(listener, speaker)].heal()
                self.cuts.append(Cut(listener, speaker, since, time.monotonic()))
                del self._down[(listener, speaker)]
            else:
                self._down[(listener, speaker)] = (n - 1, since)

    def _cut_all(self, pairs: list[tuple[str, str]]) -> Callable[[], None]:
        for a, b in pairs:
            self.cut(a, b)
        def heal() -> None:
            for a, b in pairs:
                self.restore(a, b)

        return heal

    def apply(self, kind: str) -> tuple[str, Callable[[], None]]:
        """Start one fault; returns its description and how to end it."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind}")
        return FAULT_KINDS[kind](self)

    def kinds(self) -> list[str]:
        return [k for k in self.cfg.faults if k != "split" or len(self.m.nodes) >= 5]

    def schedule(self, first: Optional[str] = None) -> None:
        kinds = self.kinds()
        chosen = [first or self.rng.choice(kinds)]
        if self.rng.random() < 0.35:
            chosen.append(self.rng.choice([k for k in kinds if k != chosen[0]]))
        undo = []
        names = []
        for kind in chosen:
            name, end = self.apply(kind)
            self.applied[kind] = self.applied.get(kind, 0) + 1
            names.append(name)
            undo.append(end)
        hold = self.rng.uniform(*self.cfg.fault_s)
        self.log.append(f"t={time.monotonic() - self.t0:6.1f}s  {' + '.join(names)} for {hold:.1f} s")
        time.sleep(hold)
        for end in reversed(undo):
            end()

    def heal_everything(self) -> None:
        for (listener, speaker), (n, _) in list(self._down.items()):
            for _ in range(n):
                self.restore(listener, speaker)
        for e in self.aws.arc:
            e.set_mode("up")
        for r, f in self.skew_files.items():
            f.write_text("+0s\n")
            self.aws.set_control(r, True)
        for p in self.procs.values():
            p.resume()
            p.start()


# -- the faults: small pieces, each starts one fault and returns how to end it -------------------------

Fault = Callable[["Nemesis"], tuple[str, Callable[[], None]]]


def _pair(nem: Nemesis) -> tuple[str, str]:
    a, b = nem.rng.sample(list(nem.m.nodes), 2)
    return a, b


def _one(nem: Nemesis) -> str:
    return str(nem.rng.choice(list(nem.m.nodes)))


def _isolation(regions: Sequence[str], x: str) -> list[tuple[str, str]]:
    return [(x, y) for y in regions if y != x] + [(y, x) for y in regions if y != x]


def link(nem: Nemesis) -> tuple[str, Callable[[], None]]:
    a, b = _pair(nem)
    return f"cut {a}<->{b}", nem._cut_all([(a, b), (b, a)])


def one_way(nem: Nemesis) -> tuple[str, Callable[[], None]]:
    a, b = _pair(nem)
    return f"{a} stops hearing {b}", nem._cut_all([(a, b)])


def isolate(nem: Nemesis) -> tuple[str, Callable[[], None]]:
    x = _one(nem)
    return f"isolate {x}", nem._cut_all(_isolation(list(nem.m.nodes), x))


def split(nem: Nemesis) -> tuple[str, Callable[[], None]]:
    regions = list(nem.m.nodes)
    minority = set(nem.rng.sample(regions, (len(regions) - 1) // 2))
    pairs = [(a, b) for a in regions for b in regions if (a in minority) != (b in minority)]
    return f"split {sorted(minority)} | {sorted(set(regions) - minority)}", nem._cut_all(pairs)


def flap(nem: Nemesis) -> tuple[str, Callable[[], None]]:
    a, b = _pair(nem)
    stop = threading.Event()
    rng = random.Random(nem.rng.random())  # its own stream: the schedule's draws stay those of its seed

    def run() -> None:
        down = False
        while not stop.is_set():
            if down:
                nem.restore(a, b)
                nem.restore(b, a)
            else:
                nem.cut(a, b)
                nem.cut(b, a)
            down = not down
            stop.wait(rng.uniform(0.2, 0.5))
        if down:
            nem.restore(a, b)
            nem.restore(b, a)

    th = threading.Thread(target=run, daemon=True)
    th.start()

    def end() -> None:
        # The fault ends when the flapping has: a thread still cutting after its end (a proxy call slow
        # on a loaded machine) would race the next fault's cuts of the same link.
        stop.set()
        th.join(60)
        if th.is_alive():
            raise RuntimeError(f"flap {a}<->{b} did not stop within 60 s")

    return f"flap {a}<->{b}", end


def kill_agent(nem: Nemesis) -> tuple[str, Callable[[], None]]:
    x = _one(nem)
    nem.procs[x].kill()
    return f"kill agent {x}", lambda: None if nem.procs[x].start() else None


def stall_agent(nem: Nemesis) -> tuple[str, Callable[[], None]]:
    x = _one(nem)
    nem.procs[x].stall()
    return f"stall agent {x}", nem.procs[x].resume


def pause_agent(nem: Nemesis) -> tuple[str, Callable[[], None]]:
    """The worst moment for a pause: right after the agent looked, while its region is cut off."""
    x = _one(nem)
    seconds = nem.rng.uniform(2, 6) * nem.cfg.timing.lease_s
    nem.arm(x, "agent.after_observe", seconds)
    heal = nem._cut_all(_isolation(list(nem.m.nodes), x))

    def undo() -> None:
        heal()
        # A token pauses each process once: one that was not armed yet (a restarted agent) would
        # pause at its first look, long after this fault ended.
        nem.failpoints[x].write_text("{}")

    return f"pause agent {x} after it looks ({seconds:.1f} s), and isolate it", undo


def arc(mode: str) -> Fault:
    def fault(nem: Nemesis) -> tuple[str, Callable[[], None]]:
        for e in nem.aws.arc:
            e.set_mode(mode)  # type: ignore[arg-type]

        def end() -> None:
            for e in nem.aws.arc:
                e.set_mode("up")

        return f"ARC endpoints {mode}", end
    return fault


def skew(nem: Nemesis) -> tuple[str, Callable[[], None]]:
    x = _one(nem)
    step = nem.rng.uniform(-nem.cfg.skew_max_s, nem.cfg.skew_max_s)
    nem.skew_files[x].write_text(f"{step:+.3f}s\n")
    return f"clock of {x} steps {step:+.2f} s", lambda: None if nem.skew_files[x].write_text("+0s\n") else None


def big_txn(nem: Nemesis) -> tuple[str, Callable[[], None]]:
    x = _one(nem)
    th = threading.Thread(target=big_transaction, args=(nem.m, x, nem.cfg.big_rows // 3), daemon=True)
    th.start()
    return f"big transaction on {x}", lambda: th.join(120)


def control_off(nem: Nemesis) -> tuple[str, Callable[[], None]]:
    x = _one(nem)
    nem.aws.set_control(x, False)
    return f"routing control {x} off", lambda: nem.aws.set_control(x, True)


def tombstone_gc(nem: Nemesis) -> tuple[str, Callable[[], None]]:
    """Writers purge tombstones at different times: one purges everything it may, now."""
    x = _one(nem)
    try:
        n = nem.m.execute(x, "SELECT fraiseql_repl.purge_tombstones(interval '0')")[0][0]
    except psycopg.Error as exc:
        n = f"failed ({type(exc).__name__})"
    return f"tombstone purge on {x} ({n} purged)", lambda: None


FAULT_KINDS: dict[str, Fault] = {
    "link": link, "one_way": one_way, "isolate": isolate, "split": split, "flap": flap,
    "kill_agent": kill_agent, "stall_agent": stall_agent, "pause_agent": pause_agent,
    "arc_down": arc("down"), "arc_hang": arc("hang"), "skew": skew, "big_txn": big_txn,
    "control_off": control_off, "tombstone_gc": tombstone_gc,
}


def big_transaction(m: Mesh, region: str, rows: int, errors: Optional[list[str]] = None) -> tuple[bool, float]:
    """One transaction inserting ``rows`` rows; returns (committed, seconds). Why it failed goes to ``errors``."""
    base = int(time.time() * 1000) * 10**6
    t0 = time.monotonic()
    try:
        with m.connect(region) as c:
            c.execute("INSERT INTO ballast SELECT %s + g, repeat('x', 200) FROM generate_series(1, %s) g", (base, rows))
        return True, time.monotonic() - t0
    except psycopg.Error as exc:
        if errors is not None:
            errors.append(f"{exc.sqlstate}: {str(exc).splitlines()[0][:200]} after {time.monotonic() - t0:.1f} s")
        return False, time.monotonic() - t0


# -- special measurements -----------------------------------------------------------------------


def _decisions(procs: dict[str, AgentProcess], since_wall: float) -> list[dict[str, Any]]:
    out = []
    for p in procs.values():
        out += [r for r in p.records() if r.get("event") == "decision" and float(r.get("ts", 0)) >= since_wall]
    return sorted(out, key=lambda r: r["ts"])


def _agent_death(m: Mesh, procs: dict[str, AgentProcess], region: str, writers: Writers, lease_s: float) -> float:
    """Kill one agent on a healthy mesh; seconds until its region's last acknowledged write."""
    t0 = time.monotonic()
    procs[region].kill()
    time.sleep(lease_s * 2 + 1.0)
    last = max((a.t for a in writers.snapshot() if a.region == region and a.ok and a.t >= t0), default=t0)
    procs[region].start()
    return last - t0


@dataclass
class TwelveWriters:
    fence_s: float
    commits: int
    commits_after_revoke: int
    traffic_out_while_cut: bool
    acks: list[Ack]


@dataclass(frozen=True)
class BigTxn:
    """One large transaction on a healthy mesh: its rows, the fence decisions taken anywhere until
    every writer had it (-1: it did not commit), the seconds until then, and the oldest peer heartbeat
    any writer held meanwhile."""
    rows: int
    false_fences: int
    replicated_s: float
    heartbeat_age_s: float


@dataclass
class Experiments:
    """What the experiments after the fault schedules measured (None: not run), and their notes."""
    agent_death_s: Optional[float] = None
    writers12: Optional[TwelveWriters] = None
    traffic_steered: Optional[bool] = None
    big: Optional[BigTxn] = None
    production: Optional[BigTxn] = None
    notes: list[str] = field(default_factory=list)

    @property
    def acks(self) -> list[Ack]:
        return self.writers12.acks if self.writers12 else []


def _twelve_writers(m: Mesh, nem: Nemesis, region: str, hold_s: float) -> TwelveWriters:
    """12 writers in ``region`` run 100 ms transactions; the region is cut off from every peer.

    Returns the seconds from the cut to its last commit, the commits, and how many were
    acknowledged after its agent revoked the lease (the fence must not wait for them, and none may
    commit after it). Every commit is also an acknowledged write for the checker.
    """
    stop = threading.Event()
    acks: list[Ack] = []
    walls: list[float] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        keys = itertools.count(9 * 10**12 + i * 10**9)
        while not stop.is_set():
            try:
                with m.connect(region, autocommit=False) as c:
                    while not stop.is_set():
                        key = next(keys)
                        c.execute("INSERT INTO nemesis_log (id, region) VALUES (%s, %s)", (key, region))
                        c.execute("SELECT pg_sleep(0.1)")
                        c.commit()
                        with lock:
                            acks.append(Ack(region, key, time.monotonic(), True))
                            walls.append(time.time())
            except psycopg.Error:
                time.sleep(0.05)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(12)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    # Cut while the region commits: a region that had stopped (a lease not yet renewed) would read as
    # fenced at once, and the experiment would measure nothing.
    committing = _eventually(lambda: bool(acks) and time.monotonic() - acks[-1].t < 0.3, timeout=30, every=0.02)
    t_cut, wall_cut = time.monotonic(), time.time()
    others = [r for r in m.nodes if r != region]
    undo = nem._cut_all([(region, o) for o in others] + [(o, region) for o in others])
    time.sleep(hold_s)
    # Taking the region out of the traffic path is an AWS call on the agent's side thread: wait for
    # it (it has no deadline of its own to meet), while the region is still cut off.
    traffic_out = _eventually(lambda: nem.aws.fence_rule_path_matches(region), timeout=30)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    undo()
    revoked = [r for r in _decisions(nem.procs, wall_cut) if r["region"] == region and not r["writable"]]
    revoke_wall = float(revoked[0]["ts"]) if revoked else None
    after = [a for a in acks if a.t >= t_cut]
    last = max((a.t for a in after), default=t_cut)
    late = sum(1 for a, w in zip(acks, walls) if a.t >= t_cut and revoke_wall is not None and w > revoke_wall + 0.05)
    # not committing at the cut: nothing was measured, which must not pass for an instant fence
    return TwelveWriters(last - t_cut if committing else math.inf, len(acks), late, traffic_out, acks)


def _eventually(condition: Callable[[], bool], *, timeout: float, every: float = 0.1) -> bool:
    """Whether ``condition`` holds within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(every)


def _big_txn_false_fences(m: Mesh, procs: dict[str, AgentProcess], region: str, rows: int,
                          notes: list[str], *, timeout: float = 300.0) -> BigTxn:
    """One big transaction on a healthy mesh; fence decisions taken anywhere until it replicated."""
    wall0 = time.time()
    before = {r: m.execute(r, "SELECT count(*) FROM ballast")[0][0] for r in m.nodes}
    worst_age = [0.0]
    stop = threading.Event()

    sent: dict[tuple[str, int], float] = {}
    arrived: dict[tuple[str, str, int], float] = {}

    def sample() -> None:
        # The oldest peer heartbeat any node holds: how close the transaction brought a link to "silent";
        # and each beat's send and arrival times (one machine, one clock), to tell a late sender from a
        # slow link.
        while not stop.is_set():
            for r in m.nodes:
                try:
                    for node, seq, sent_at, recv, age in m.execute(
                            r, "SELECT node, seq, extract(epoch FROM sent_at)::float8, extract(epoch FROM received_at)::float8, "
                               "extract(epoch FROM clock_timestamp() - received_at)::float8 FROM fraiseql_repl.heartbeats"):
                        if node == r:
                            sent[(node, seq)] = sent_at
                        else:
                            arrived.setdefault((r, node, seq), recv)
                            worst_age[0] = max(worst_age[0], float(age))
                except psycopg.Error:
                    pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    errors: list[str] = []
    ok, _ = big_transaction(m, region, rows, errors)
    t_commit = time.monotonic()
    if not ok:
        # Say why, and which decisions fenced whom meanwhile. A fence while it ran is what is measured
        # (the transaction failing is its cost: the healthy region's agent ended it, or its commit
        # check refused it); failing without one is no measurement (-1).
        stop.set()
        notes.append(f"big transaction on {region} failed: {errors[0] if errors else '?'}")
        fenced = [f for f in _decisions(procs, wall0) if not f["writable"]]
        for f in fenced:
            notes.append(f"fence while the big transaction ran: {f['region']} {f['reason']} sees {f['sees']}")
        return BigTxn(rows, len(fenced) if fenced else -1, 0.0, worst_age[0])
    want = before[region] + rows
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(m.execute(r, "SELECT count(*) FROM ballast")[0][0] >= want for r in m.nodes):
            break
        time.sleep(0.2)
    replicated_s = time.monotonic() - t_commit
    time.sleep(2.0)
    stop.set()
    sampler.join(5)
    for origin in m.nodes:
        times = sorted(v for (n, _), v in sent.items() if n == origin)
        gap = max((b - a for a, b in zip(times, times[1:])), default=0.0)
        transit = max((t - sent[(n, q)] for (_, n, q), t in arrived.items() if n == origin and (n, q) in sent), default=0.0)
        notes.append(f"big transaction: heartbeats of {origin}: longest gap between beats {gap:.2f} s, "
                     f"slowest delivery {transit:.2f} s")
    fences = [r for r in _decisions(procs, wall0) if not r["writable"]]
    for f in fences:
        notes.append(f"false fence during the big transaction: {f['region']} {f['reason']} sees {f['sees']} "
                     f"majority {f['majority']}")
    return BigTxn(rows, len(fences), replicated_s, worst_age[0])


def _at_production_timing(m: Mesh, aws: LocalAws, procs: dict[str, AgentProcess], log_dir: Path, rows: int,
                          notes: list[str], progress: Callable[[str], None]) -> BigTxn:
    """The drill's agents replaced by agents at the stack's default timing, then one large transaction."""
    for p in procs.values():
        p.kill()
    sub = log_dir / "production"
    sub.mkdir(exist_ok=True)
    regions = list(m.nodes)
    with agents(m, aws, PRODUCTION_TIMING, sub) as prod:
        wait_writable(m, regions, timeout=180)
        time.sleep(PRODUCTION_TIMING.stale_after_s)  # every agent's view is warm
        progress(f"agents at the default timing; a transaction of {rows} rows on {regions[0]}")
        out = _big_txn_false_fences(m, prod, regions[0], rows, notes, timeout=1800)
    for p in procs.values():
        p.start()
    wait_writable(m, regions, timeout=120)
    progress(f"default timing: {out.false_fences} false fences, every writer had it after {out.replicated_s:.0f} s, "
             f"oldest heartbeat {out.heartbeat_age_s:.1f} s (silent after {PRODUCTION_TIMING.stale_after_s:g} s)")
    if out.false_fences < 0:  # the transaction failed: why, and who fenced whom meanwhile
        for note in notes[-6:]:
            progress(note)
    return out


# -- the run -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _skewable_clocks(regions: Sequence[str]) -> Iterator[tuple[dict[str, dict[str, str]], dict[str, Path]]]:
    """libfaketime for every server, each with a file holding its clock offset (``+0s`` to start)."""
    import libfaketime

    lib = Path(libfaketime._get_shared_lib("libfaketime.so.1"))
    d = Path(tempfile.mkdtemp(prefix="fraiseql-skew-"))
    os.chmod(d, 0o755)
    try:
        shared = d / lib.name
        shutil.copy(lib, shared)  # the server user must be able to read it, wherever the venv lives
        os.chmod(shared, 0o755)
        files, env = {}, {}
        for r in regions:
            f = d / f"offset-{r}"
            f.write_text("+0s\n")
            os.chmod(f, 0o644)
            files[r] = f
            env[r] = {"LD_PRELOAD": str(shared), "FAKETIME_TIMESTAMP_FILE": str(f), "FAKETIME_CACHE_DURATION": "1",
                      "DONT_FAKE_MONOTONIC": "1"}
        yield env, files
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _timing_and_bound(cfg: NemesisConfig) -> tuple[AgentTiming, float]:
    """The agents' timing for this many voters, and the both-writable bound the checker judges by."""
    timing = cfg.timing.for_voters(len(cfg.regions))
    floors = [v for k, v in FLOORS_MS.items() if k <= set(cfg.regions)]
    max_delay = (max(floors, default=0.0) / 1000.0) + 0.25  # the floor plus apply and scheduling on 2 cores
    bound = detection_bound(len(cfg.regions), probe_s=timing.probe_s, stale_after_s=timing.stale_after_s,
                            lease_s=timing.lease_s, max_link_delay_s=max_delay, clock_step_s=cfg.skew_max_s)
    return timing, bound


def _fence_experiments(m: Mesh, nem: Nemesis, writers: Writers, regions: list[str], timing: AgentTiming, bound: float,
                       ex: Experiments, progress: Callable[[str], None]) -> None:
    """On a healed mesh, the last region: its agent killed, then 12 writers in it cut off from every peer."""
    x = regions[-1]
    ex.agent_death_s = _agent_death(m, nem.procs, x, writers, timing.lease_s)
    progress(f"agent death: fenced after {ex.agent_death_s:.2f} s")
    wait_writable(m, regions, timeout=60)
    w12 = ex.writers12 = _twelve_writers(m, nem, x, hold_s=bound + 2)
    progress(f"12 writers: fenced after {w12.fence_s:.2f} s, {w12.commits_after_revoke} commits after the revoke")
    wait_writable(m, regions, timeout=60)
    restored = _eventually(lambda: not nem.aws.fence_rule_path_matches(x), timeout=30)
    ex.traffic_steered = w12.traffic_out_while_cut and restored
    if not ex.traffic_steered:
        ex.notes.append(f"traffic not steered: away from {x} while it was cut: {w12.traffic_out_while_cut}; "
                        f"back within 30 s of the heal: {restored}")


def _converged(m: Mesh, notes: list[str], progress: Callable[[str], None]) -> bool:
    """Whether every writer ends with the same checked tables; what each writer holds back if not."""
    try:
        # Every writer merged everything each origin committed first: equal tables alone may be a moment
        # while changes are still in flight (tests/drills/test_interleavings.py met one).
        m.wait_applied(timeout=180)
        m.wait_converged(list(CHECKED_TABLES + WORKLOAD_TABLES), timeout=180)
        return True
    except TimeoutError as exc:
        progress(str(exc)[:300])
        notes.append(f"not converged: {str(exc)[:1500]}")
        for r in m.nodes:
            parked = m.execute(r, "SELECT sqlstate, error, count(*) FROM fraiseql_repl.parked GROUP BY 1, 2")
            subs = m.execute(r, "SELECT s.subname, s.subenabled, st.pid IS NOT NULL, ss.apply_error_count "
                                "FROM pg_subscription s LEFT JOIN pg_stat_subscription st ON st.subid = s.oid "
                                "AND st.relid IS NULL LEFT JOIN pg_stat_subscription_stats ss ON ss.subid = s.oid")
            progress(f"{r}: parked {parked}; subscriptions {subs}")
            progress(m.pg[r].log_tail(15))
        return False


def _result(cfg: NemesisConfig, nem: Nemesis, clients: "_Clients", acks: list[Ack], verdict: Verdict, orphans: int,
            converged: bool, timing: AgentTiming, bound: float, ex: Experiments) -> NemesisResult:
    worst, w12 = verdict.worst, ex.writers12
    big, prod = ex.big, ex.production
    return NemesisResult(
        regions=list(cfg.regions),
        schedules_run=cfg.schedules,
        wall_s=0.0,
        faults_applied=dict(sorted(nem.applied.items())),
        bound_s=bound,
        worst_window_s=worst.window_s if worst else 0.0,
        worst_window_pair=f"{worst.a}/{worst.b}" if worst else "-",
        violations=[f"{v.a}/{v.b} both writable {v.window_s:.2f} s after a cut at "
                    f"{v.cut_start - nem.t0:.1f} s" for v in verdict.violations],
        acked=sum(1 for a in acks if a.ok),
        refused=sum(1 for a in acks if not a.ok),
        lost=len(verdict.lost),
        resurrected=sum(1 for f in verdict.registers if f.kind == "resurrected delete"),
        lost_registers=sum(1 for f in verdict.registers if f.kind != "resurrected delete"),
        register_faults=[f"{f.kind}: key {f.key} on {f.node} is {f.found!r}, allowed {list(f.allowed)}"
                         for f in verdict.registers[:20]],
        register_ops=len(clients.registers.history()),
        orphans=orphans,
        adversary_tried=dict(sorted(clients.adversary.tried.items())),
        adversary_acked=sum(1 for a in clients.adversary.snapshot() if a.ok),
        converged=converged and not verdict.diverged_nodes,
        diverged_nodes=verdict.diverged_nodes,
        agent_death_fence_s=ex.agent_death_s,
        lease_s=timing.lease_s,
        stale_after_s=timing.stale_after_s,
        writers12_fence_s=w12.fence_s if w12 else None,
        writers12_commits=w12.commits if w12 else 0,
        writers12_commits_after_revoke=w12.commits_after_revoke if w12 else 0,
        big_txn_rows=big.rows if big else 0,
        big_txn_false_fences=big.false_fences if big else None,
        big_txn_replicated_s=big.replicated_s if big else None,
        big_txn_heartbeat_age_s=big.heartbeat_age_s if big else None,
        traffic_steered=ex.traffic_steered,
        production_big_rows=cfg.production_big_rows,
        production_big_false_fences=prod.false_fences if prod else None,
        production_big_replicated_s=prod.replicated_s if prod else None,
        production_big_heartbeat_age_s=prod.heartbeat_age_s if prod else None,
        schedule_log=nem.log,
        notes=ex.notes,
    )


def run_nemesis(cfg: NemesisConfig = NemesisConfig(), *, progress: Callable[[str], None] = lambda s: None) -> NemesisResult:
    """The fault schedules under load, then the experiments, then the checker over the whole history."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    t_start = time.monotonic()
    rng = random.Random(cfg.seed)
    regions = list(cfg.regions)
    timing, bound = _timing_and_bound(cfg)
    log_dir = Path(tempfile.mkdtemp(prefix="fraiseql-nemesis-"))
    result: Optional[NemesisResult] = None
    try:
        with _skewable_clocks(regions) as (clock_env, skew_files), \
                mesh(RUN_POLICY, NEMESIS_SCHEMA + WORKLOAD_SCHEMA, regions=regions, leases=False, env=clock_env) as m, \
                local_aws(regions) as aws, agents(m, aws, timing, log_dir) as procs:
            progress(f"mesh of {len(regions)} up; waiting for the agents to grant leases")
            _app_role(m)
            wait_writable(m, regions, timeout=60)
            nem = Nemesis(m, aws, procs, skew_files, rng, cfg)
            ex = Experiments()
            with Writers(m, regions) as writers, _Clients(m, regions, cfg, timing) as clients:
                order = nem.kinds()
                rng.shuffle(order)
                for i in range(cfg.schedules):
                    nem.schedule(order[i % len(order)] if cfg.each_once else None)
                    progress(nem.log[-1])
                    time.sleep(cfg.settle_s)
                nem.heal_everything()
                wait_writable(m, regions, timeout=60)
                if cfg.measure_specials:
                    _fence_experiments(m, nem, writers, regions, timing, bound, ex, progress)
            acks = writers.snapshot() + clients.adversary.snapshot() + ex.acks
            if cfg.measure_specials:
                wait_writable(m, regions, timeout=60)
                ex.big = _big_txn_false_fences(m, procs, regions[0], cfg.big_rows, ex.notes)
                progress(f"big transaction of {cfg.big_rows} rows: {ex.big.false_fences} false fences")
            if cfg.production_big_rows:
                ex.production = _at_production_timing(m, aws, procs, log_dir, cfg.production_big_rows, ex.notes, progress)
            converged = _converged(m, ex.notes, progress)
            present = {r: {int(k) for (k,) in m.execute(r, "SELECT id FROM nemesis_log")} for r in regions}
            digests = {r: m.digest(r, list(CHECKED_TABLES + WORKLOAD_TABLES)) for r in regions}
            verdict: Verdict = check(acks, nem.cuts, bound, present, digests, ops=clients.registers.history(),
                                     registers=clients.registers.final())
            orphans = sum(int(m.execute(r, "SELECT coalesce(sum(orphans), 0) FROM fraiseql_repl.orphans()")[0][0])
                          for r in regions)
            result = _result(cfg, nem, clients, acks, verdict, orphans, converged, timing, bound, ex)
    finally:
        if result is None or not result.ok:
            keep = Path(tempfile.gettempdir()) / "fraiseql-nemesis-last"
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(log_dir, keep, dirs_exist_ok=True)
        shutil.rmtree(log_dir, ignore_errors=True)
    result.wall_s = time.monotonic() - t_start
    return result


def summarize(results: Sequence[NemesisResult]) -> dict[str, Any]:
    """Across several runs (3 and 5 regions): totals and worst cases."""
    return {
        "schedules_run": sum(r.schedules_run for r in results),
        "wall_s": sum(r.wall_s for r in results),
        "worst_window_s": max(r.worst_window_s for r in results),
        "bounds_s": sorted({round(r.bound_s, 2) for r in results}),
        "ok": all(r.ok for r in results),
        "median_wall_per_schedule_s": statistics.median(r.wall_s / max(r.schedules_run, 1) for r in results),
    }
