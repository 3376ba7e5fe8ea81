"""Convergence drill: random interleavings over links that reorder causally related changes, judged
against a pure model of the policy; then divergence injected by hand, found by the agents' own
verify rounds, and repaired.

1. **Interleavings.** Three writers whose links are set so that us-east-1's changes reach
   eu-west-1 directly much later than through us-west-2; random inserts, updates and deletes on a
   few keys from every writer, with pauses shorter than that gap. After quiescence every writer's
   table is compared, key by key, with the policy's result computed from the acknowledged
   operations alone (``model``).
2. **Verify.** The real fence agents run verify rounds through the control channel. Rows are changed
   behind the change log on single writers (``session_replication_role = replica``); the drill
   measures how long until an agent reports them, then repairs with ``replication.verify`` and
   checks that a second verify is clean.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import psycopg

from drills.agents import AgentTiming, agents, wait_writable
from drills.localaws import local_aws
from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.verify import repair, verify

__all__ = ["ConvergenceResult", "execute_retrying", "model", "run_convergence"]

EAST, WEST, EU = REGIONS
#: one-way delay per directed link (listener, speaker), ms: east -> eu is slower than east -> west -> eu
DELAYS_MS = {(WEST, EAST): 5, (EU, EAST): 120, (EU, WEST): 10, (EAST, WEST): 5, (EAST, EU): 60, (WEST, EU): 15}


@dataclass
class ConvergenceResult:
    interleavings: int
    operations: int
    keys: int
    diverged_rows: int
    parked: int
    injected: int = 0
    detect_s: Optional[float] = None
    found_by_agents: int = 0
    found_by_verify: int = 0
    repaired_clean: Optional[bool] = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model(images: list[tuple[Any, bytes, float, str]], deleted_borns: list[float]) -> Optional[str]:
    """The policy's result for one key from the acknowledged operations: ``images`` are
    (version ts, node, incarnation, value) of every upsert/update, ``deleted_borns`` the incarnation
    each delete removed. A delete removes incarnations up to the one it saw; among the rest the
    latest incarnation, then the newest version, wins."""
    dead = max(deleted_borns, default=None)
    alive = [i for i in images if dead is None or i[2] > dead]
    return max(alive, key=lambda i: (i[2], i[0], i[1]))[3] if alive else None


def execute_retrying(m: Mesh, node: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Like an application: a serialization failure (a peer's delete raced this insert) is retried."""
    for _ in range(5):
        try:
            return m.execute(node, sql, params)
        except psycopg.errors.SerializationFailure:
            time.sleep(0.01)
    return m.execute(node, sql, params)


def _interleavings(m: Mesh, n: int, rng: random.Random) -> tuple[int, int, int, int]:
    images: dict[int, list[tuple[Any, bytes, float, str]]] = {}
    deleted: dict[int, list[float]] = {}
    ops = 0
    for i in range(n):
        base = 500_000 + i * 10
        for step in range(rng.randint(4, 12)):
            node, key = rng.choice(REGIONS), base + rng.randint(1, 3)
            op = rng.choice(("upsert", "upsert", "update", "delete"))
            v = f"{node}#{i}.{step}"
            ret = "RETURNING _repl_ts, _repl_node, extract(epoch FROM _repl_born)::float8"
            if op == "upsert":
                rows = execute_retrying(m, node, f"INSERT INTO items VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET v = excluded.v {ret}", (key, v))
            elif op == "update":
                rows = execute_retrying(m, node, f"UPDATE items SET v = %s WHERE id = %s {ret}", (v, key))
            else:
                rows = execute_retrying(m, node, "DELETE FROM items WHERE id = %s RETURNING extract(epoch FROM _repl_born)::float8", (key,))
                deleted.setdefault(key, []).extend(r[0] for r in rows)
                rows = []
            images.setdefault(key, []).extend((ts, nd.encode(), born, v) for ts, nd, born in rows)
            ops += 1
            time.sleep(rng.choice((0.0, 0.005, 0.02, 0.05)))
    try:
        m.wait_converged(["items"], timeout=60)
    except TimeoutError:
        pass  # counted below, key by key
    diverged = 0
    keys = images.keys() | deleted.keys()
    for r in REGIONS:
        held = {k: v for k, v in m.execute(r, "SELECT id, v FROM items WHERE id BETWEEN 500000 AND 600000")}
        diverged += sum(1 for k in keys if held.get(k) != model(images.get(k, []), deleted.get(k, [])))
    parked = sum(int(m.execute(r, "SELECT count(*) FROM fraiseql_repl.parked")[0][0]) for r in REGIONS)
    return ops, len(keys), diverged, parked


def _behind_the_mesh(m: Mesh, node: str, sql: str, params: tuple[Any, ...]) -> None:
    with m.connect(node) as c:
        c.execute("SET session_replication_role = replica")
        c.execute(sql, params)


def _verify_drill(result: ConvergenceResult, timeout_s: float) -> None:
    timing = AgentTiming()
    with tempfile.TemporaryDirectory(prefix="fraiseql-convergence-") as logs, \
            mesh(POLICY, APP_SCHEMA, delays=True, leases=False) as m, local_aws(list(REGIONS)) as aws, \
            agents(m, aws, timing, Path(logs)) as procs:
        wait_writable(m, list(REGIONS), timeout=60)
        m.execute(EAST, "INSERT INTO items SELECT g, 'same' FROM generate_series(900000, 900099) g")
        m.wait_converged(["items"], timeout=30)
        time.sleep(3.0)  # older than the agents' horizon
        _behind_the_mesh(m, EU, "UPDATE items SET v = 'corrupted' WHERE id = %s", (900000,))
        _behind_the_mesh(m, WEST, "DELETE FROM items WHERE id = %s", (900001,))
        _behind_the_mesh(m, EAST, "INSERT INTO items VALUES (%s, 'only here')", (900500,))
        result.injected = 3
        t0, wall0 = time.monotonic(), time.time()
        while time.monotonic() - t0 < timeout_s:
            reports = [r for p in procs.values() for r in p.records()
                       if r.get("event") == "diverged_rows" and float(r.get("ts", 0)) >= wall0]
            if reports:
                result.detect_s = time.monotonic() - t0
                result.found_by_agents = max(int(r["rows"]) for r in reports)
                break
            time.sleep(0.2)
        conns = {r: m.connect(r) for r in REGIONS}
        try:
            report = verify(conns, buckets=64, margin_s=0.5)
            result.found_by_verify = report.diverged_rows
            repair(conns, report)
            m.wait_converged(["items"], timeout=30)
            result.repaired_clean = verify(conns, buckets=64, margin_s=0.0).diverged_rows == 0
        finally:
            for c in conns.values():
                c.close()


def run_convergence(*, interleavings: int = 20, seed: int = 3, verify_timeout_s: float = 60.0) -> ConvergenceResult:
    rng = random.Random(seed)
    with mesh(POLICY, APP_SCHEMA, delays=False) as m:
        for (listener, speaker), ms in DELAYS_MS.items():
            m.links[(listener, speaker)].set_delay(up_ms=ms / 2, down_ms=ms)
        ops, keys, diverged, parked = _interleavings(m, interleavings, rng)
    result = ConvergenceResult(interleavings=interleavings, operations=ops, keys=keys, diverged_rows=diverged,
                               parked=parked)
    _verify_drill(result, verify_timeout_s)
    return result
