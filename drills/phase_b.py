"""Phase B drill: three active writers, full-mesh logical replication, partition and heal.

Runs the exact SQL ``replication.sql.render_bootstrap`` produces on three
PostgreSQL 18 servers whose links go through delay proxies set to the fibre
floors, then:

1. measures replication delay for every ordered pair of regions (commit on X
   → visible on Y): the window of acknowledged writes a region loss can take
   with it, i.e. phase B's real RPO;
2. writes conflicting changes on all three nodes at once and measures how long
   the mesh needs to converge, checking the result against the policy (LWW:
   highest version everywhere; counters: all increments summed; sets: union;
   app table: local value kept and the conflict logged, then resolved);
3. partitions one region while every region's real fence agent (one process
   each, seeing only its own writer) decides; counts refused and accepted
   writes on each side;
4. heals, waits for the agents to un-fence it (hysteresis), and checks that
   every acknowledged write the policy keeps is present on every node.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from drills.agents import AgentTiming, agents, wait_writable
from drills.localaws import local_aws
from drills.mesh import REGIONS, Mesh, mesh, one_way_ms
from drills.phase_a import percentile
from drills.sample import APP_SCHEMA, CONVERGENT_TABLES, POLICY
from replication.sql import ENDED_SQLSTATE

__all__ = ["PhaseBResult", "run_phase_b"]


@dataclass
class PhaseBResult:
    """Everything measured by one phase-B run (ms unless named ``_s``)."""

    floors_ms: dict[str, float]
    pair_delay_p50_ms: dict[str, float]
    pair_delay_p99_ms: dict[str, float]
    delay_p50_ms: float
    delay_p99_ms: float
    delay_max_ms: float
    conflict_writes: int
    convergence_s: float
    converged: bool
    lww_ok: bool
    counter_expected: int
    counter_observed: list[int]
    set_ok: bool
    app_conflicts_logged: int
    app_local_kept: bool
    app_resolved_converged: bool
    conflicts_resolved: int
    resolutions: dict[str, int]
    native_conflicts: dict[str, int]
    partitioned: str
    fenced_by_quorum: bool
    refused_while_partitioned: int
    refused_sqlstates: list[str]
    ended_by_fence_while_partitioned: int  # writes in flight when the agent fenced: outcome unknown
    accepted_majority_while_partitioned: int
    accepted_window_before_fence: int
    unfence_after_observations: int
    detection_s: float
    unfence_s: float
    heal_convergence_s: float
    healed_converged: bool
    missing_after_heal: int
    apply_workers_healthy: bool
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pair_delays(m: Mesh, probes: int) -> dict[tuple[str, str], list[float]]:
    """Commit-to-visible delay per ordered pair, probed concurrently (one thread per pair)."""
    out: dict[tuple[str, str], list[float]] = {}
    seq = itertools.count(1_000_000)
    lock = threading.Lock()

    def probe(src: str, dst: str) -> None:
        samples: list[float] = []
        with m.connect(src) as w, m.connect(dst) as r:
            for _ in range(probes):
                with lock:
                    k = next(seq)
                w.execute("INSERT INTO items VALUES (%s, %s)", (k, f"probe {src}->{dst}"))
                t0 = time.monotonic()
                while r.execute("SELECT 1 FROM items WHERE id = %s", (k,)).fetchone() is None:
                    if time.monotonic() - t0 > 30:
                        raise TimeoutError(f"probe {src}->{dst} not replicated")
                    time.sleep(0.0005)
                samples.append((time.monotonic() - t0) * 1000)
        out[(src, dst)] = samples

    threads = [threading.Thread(target=probe, args=(a, b)) for a in m.names for b in m.names if a != b]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _conflicting_writes(m: Mesh, rounds: int, keys: int) -> tuple[dict[int, tuple[Any, str, str]], int, set[str], int]:
    """All nodes hammer the same rows at once. Returns (max version per item, increments, tags, writes)."""
    versions: dict[int, list[tuple[Any, str, str]]] = {k: [] for k in range(1, keys + 1)}
    increments = [0]
    tags: set[str] = set()
    writes = [0]
    lock = threading.Lock()
    start = threading.Barrier(len(m.names))

    def work(node: str) -> None:
        with m.connect(node) as c:
            start.wait()
            for r in range(rounds):
                for k in range(1, keys + 1):
                    v = f"{node}:{r}:{k}"
                    row = c.execute(
                        "UPDATE items SET v = %s WHERE id = %s RETURNING _repl_ts, _repl_node", (v, k)
                    ).fetchone()
                    assert row is not None
                    c.execute("UPDATE counters SET hits = hits + 1 WHERE id = 1")
                    tag = f"{node}-{r}-{k}" if k % 2 else f"shared-{r}"
                    c.execute("INSERT INTO tags VALUES (1, %s) ON CONFLICT DO NOTHING", (tag,))
                    with lock:
                        versions[k].append((row[0], row[1], v))
                        increments[0] += 1
                        tags.add(tag)
                        writes[0] += 3
                c.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
                with lock:
                    writes[0] += 1

    threads = [threading.Thread(target=work, args=(n,)) for n in m.names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The policy's winner: highest (ts, node) in C collation.
    winners = {k: max(vs, key=lambda x: (x[0], x[1].encode())) for k, vs in versions.items()}
    return winners, increments[0], tags, writes[0]


def _fenced(m: Mesh, region: str) -> bool:
    return not m.execute(region, "SELECT clock_timestamp() + interval '100 ms' < valid_until FROM fraiseql_repl.lease")[0][0]


@dataclass
class _Conflicts:
    """Step 2: concurrent conflicting writes on every node, and what the mesh converged to."""

    writes: int
    convergence_s: float
    converged: bool
    lww_ok: bool
    counter_expected: int
    counter_observed: list[int]
    set_ok: bool
    app_logged: int
    app_local_kept: bool
    app_resolved: bool


@dataclass
class _Partition:
    """Step 3: one region cut off while every region's agent decides."""

    fenced_by_quorum: bool
    refused: int
    sqlstates: set[str]
    ended: int  # in flight when its agent fenced it and ended them: neither acknowledged nor refused
    accepted: list[int]  # keys the majority side acknowledged
    window_keys: list[int]  # keys the isolated region acknowledged before its agent fenced it
    detection_s: float


@dataclass
class _Heal:
    """Step 4: the partition healed, the region un-fenced, every acknowledged write everywhere."""

    unfence_s: float
    heal_s: float
    healed: bool
    missing: int
    resolutions: dict[str, int]
    native_conflicts: dict[str, int]
    healthy: bool


def run_phase_b(
    *,
    probes: int = 20,
    rounds: int = 5,
    keys: int = 6,
    partition_s: float = 3.0,
    isolate: str = "eu-west-1",
    unfence_after: int = 3,
    regions: Sequence[str] = REGIONS,
) -> PhaseBResult:
    """Run the whole drill on a throw-away mesh and return the measurements."""
    notes: list[str] = []
    timing = AgentTiming(unfence_after=unfence_after)
    with tempfile.TemporaryDirectory(prefix="fraiseql-phase-b-") as logs, \
            mesh(POLICY, APP_SCHEMA, regions=regions, delays=True, leases=False) as m, \
            local_aws(regions) as aws, agents(m, aws, timing, Path(logs)):
        wait_writable(m, list(regions), timeout=60)
        _seed(m, regions[0], keys)
        # 1. replication delay per pair
        delays = _pair_delays(m, probes)
        # 2. concurrent conflicting writes -> convergence
        conflicts = _conflicts(m, regions[0], rounds, keys, notes)
        # 3. partition one region; every region's own agent decides from what its writer receives
        cut = _partition(m, regions, isolate, partition_s, notes)
        # 4. heal; the agents un-fence it after consecutive healthy probes
        healed = _heal(m, regions, cut.accepted + cut.window_keys, notes)
    return _result(delays, conflicts, cut, healed, isolate=isolate, unfence_after=unfence_after, notes=notes)


def _seed(m: Mesh, a: str, keys: int) -> None:
    m.execute(a, "INSERT INTO items SELECT g, 'seed' FROM generate_series(1, %s) g", (keys,))
    m.execute(a, "INSERT INTO counters VALUES (1, 'hits', 0)")
    m.execute(a, "INSERT INTO accounts VALUES (1, 0)")
    m.wait_converged(["items", "counters", "accounts"], timeout=60)


def _conflicts(m: Mesh, a: str, rounds: int, keys: int, notes: list[str]) -> _Conflicts:
    """Every node writes the same rows at once; checks what the mesh converges to against the policy."""
    winners, increments, tags, nwrites = _conflicting_writes(m, rounds, keys)
    t0 = time.monotonic()
    converged = True
    try:
        m.wait_converged(list(CONVERGENT_TABLES), timeout=120)
    except TimeoutError as exc:
        converged = False
        notes.append(str(exc)[:300])
    convergence_s = time.monotonic() - t0
    lww_ok = all(
        m.execute(n, "SELECT v FROM items WHERE id = %s", (k,)) == [(w[2],)]
        for n in m.names
        for k, w in winners.items()
    )
    counter_observed = [int(m.execute(n, "SELECT hits FROM counters WHERE id = 1")[0][0]) for n in m.names]
    set_ok = all(
        {r[0] for r in m.execute(n, "SELECT tag FROM tags WHERE item = 1")} == tags for n in m.names
    )
    app_logged, app_local_kept = _app_conflicts(m)
    app_resolved = _app_resolves(m, a, rounds * len(m.names))
    return _Conflicts(writes=nwrites, convergence_s=convergence_s, converged=converged, lww_ok=lww_ok,
                      counter_expected=increments, counter_observed=counter_observed, set_ok=set_ok,
                      app_logged=app_logged, app_local_kept=app_local_kept, app_resolved=app_resolved)


def _app_conflicts(m: Mesh) -> tuple[int, bool]:
    """The app-resolved table: (conflicts logged, every node kept its local version)."""
    # wait until the in-flight updates have arrived everywhere
    time.sleep(0.5)
    app_logged = sum(
        int(m.execute(n, "SELECT count(*) FROM fraiseql_repl.conflicts WHERE resolved_at IS NULL")[0][0])
        for n in m.names
    )
    # "local kept": no node holds a remote version it logged as conflicting
    remote_applied = sum(
        int(m.execute(
            n,
            "SELECT count(*) FROM fraiseql_repl.conflicts c JOIN accounts a ON a.id = 1 "
            "WHERE c.resolved_at IS NULL AND (c.remote_row ->> '_repl_ts')::timestamptz = a._repl_ts "
            "AND c.remote_row ->> '_repl_node' = a._repl_node",
        )[0][0])
        for n in m.names
    )
    return app_logged, app_logged > 0 and remote_applied == 0


def _app_resolves(m: Mesh, a: str, balance: int) -> bool:
    """The application resolves: the sum of all nodes' increments, written on one node, reaches every node."""
    with m.connect(a) as c, c.transaction():
        c.execute("SET LOCAL fraiseql_repl.resolving = 'on'")
        c.execute("UPDATE accounts SET balance = %s WHERE id = 1", (balance,))
    try:
        m.wait_converged(["accounts"], timeout=30)
        return all(m.execute(n, "SELECT balance FROM accounts WHERE id = 1") == [(balance,)] for n in m.names)
    except TimeoutError:
        return False


def _partition(m: Mesh, regions: Sequence[str], isolate: str, partition_s: float, notes: list[str]) -> _Partition:
    """Cut `isolate` off and write on every node for `partition_s`: the majority must accept, the
    isolated region refuse once its agent fenced it."""
    others = [r for r in regions if r != isolate]
    m.partition(isolate)
    t_cut = time.monotonic()
    refused, ended, sqlstates, accepted, window_keys = 0, 0, set(), [], []
    last_window_ack = t_cut
    key = itertools.count(3_000_000)
    t_end = time.monotonic() + partition_s
    while time.monotonic() < t_end:
        for n in m.names:
            k = next(key)
            try:
                m.execute(n, "INSERT INTO items VALUES (%s, %s)", (k, f"partition {n}"))
                if n == isolate:
                    window_keys.append(k)  # before its agent noticed: the detection window
                    last_window_ack = time.monotonic()
                else:
                    accepted.append(k)
            except psycopg.Error as exc:
                if n == isolate and exc.sqlstate in (ENDED_SQLSTATE, None):
                    ended += 1  # the fence ended it mid-write (end_writes), or the session was lost: it may have committed
                elif n == isolate:
                    refused += 1
                    sqlstates.add(exc.sqlstate or "?")
                else:
                    notes.append(f"majority write failed on {n}: {exc}")
        time.sleep(0.02)
    fenced_by_quorum = _fenced(m, isolate) and not any(_fenced(m, r) for r in others)
    return _Partition(fenced_by_quorum=fenced_by_quorum, refused=refused, sqlstates=sqlstates, ended=ended,
                      accepted=accepted,
                      window_keys=window_keys, detection_s=last_window_ack - t_cut)


def _heal(m: Mesh, regions: Sequence[str], must_exist: list[int], notes: list[str]) -> _Heal:
    """Heal, wait for the agents to un-fence, converge, and count acknowledged writes missing anywhere."""
    m.heal()
    t_heal = time.monotonic()
    wait_writable(m, list(regions), timeout=60)
    unfence_s = time.monotonic() - t_heal
    t0 = time.monotonic()
    healed = True
    try:
        m.wait_converged(list(CONVERGENT_TABLES) + ["accounts"], timeout=120)
    except TimeoutError as exc:
        healed = False
        notes.append(str(exc)[:300])
    heal_s = time.monotonic() - t0
    missing = 0
    for n in m.names:
        present = {
            int(r[0]) for r in m.execute(n, "SELECT id FROM items WHERE id = ANY(%s)", (must_exist,))
        }
        missing += len(set(must_exist) - present)
    return _Heal(unfence_s=unfence_s, heal_s=heal_s, healed=healed, missing=missing, resolutions=m.resolutions(),
                 native_conflicts=m.native_conflicts(), healthy=all(m.subscriptions_healthy().values()))


def _result(delays: dict[tuple[str, str], list[float]], conflicts: _Conflicts, cut: _Partition, healed: _Heal, *,
            isolate: str, unfence_after: int, notes: list[str]) -> PhaseBResult:
    all_delays = [x for v in delays.values() for x in v]
    return PhaseBResult(
        floors_ms={f"{x}->{y}": one_way_ms(x, y) for x, y in delays},
        pair_delay_p50_ms={f"{x}->{y}": statistics.median(v) for (x, y), v in delays.items()},
        pair_delay_p99_ms={f"{x}->{y}": percentile(v, 99) for (x, y), v in delays.items()},
        delay_p50_ms=statistics.median(all_delays),
        delay_p99_ms=percentile(all_delays, 99),
        delay_max_ms=max(all_delays),
        conflict_writes=conflicts.writes,
        convergence_s=conflicts.convergence_s,
        converged=conflicts.converged,
        lww_ok=conflicts.lww_ok,
        counter_expected=conflicts.counter_expected,
        counter_observed=conflicts.counter_observed,
        set_ok=conflicts.set_ok,
        app_conflicts_logged=conflicts.app_logged,
        app_local_kept=conflicts.app_local_kept,
        app_resolved_converged=conflicts.app_resolved,
        conflicts_resolved=sum(healed.resolutions.values()),
        resolutions=healed.resolutions,
        native_conflicts=healed.native_conflicts,
        partitioned=isolate,
        fenced_by_quorum=cut.fenced_by_quorum,
        refused_while_partitioned=cut.refused,
        refused_sqlstates=sorted(cut.sqlstates),
        ended_by_fence_while_partitioned=cut.ended,
        accepted_majority_while_partitioned=len(cut.accepted),
        accepted_window_before_fence=len(cut.window_keys),
        unfence_after_observations=unfence_after,
        detection_s=cut.detection_s,
        unfence_s=healed.unfence_s,
        heal_convergence_s=healed.heal_s,
        healed_converged=healed.healed,
        missing_after_heal=healed.missing,
        apply_workers_healthy=healed.healthy,
        notes=notes,
    )


if __name__ == "__main__":
    import json

    print(json.dumps(run_phase_b().as_dict(), indent=2, default=str))
