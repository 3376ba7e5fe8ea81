"""Schema change under load: ``python -m ops schema apply`` adds a table and a column while every
region keeps writing.

A mesh of writers (fibre-floor delays on every link) takes a continuous load in every region:
inserts and updates of ``items`` (the table that gains a column) and increments of ``counters``.
While it runs, the real command (``python -m ops schema apply``, in its own process, connections by
``--dsn``, the policy from a stack config file) applies a migration that creates ``likes`` (a counter table in the policy) and adds
``items.note``. Then the load switches to the new schema: it fills ``note`` and increments ``likes``
in every region at once. Measured and checked:

* every acknowledged write is on every writer once the mesh is quiet, and the tables are equal;
* no change was parked and no apply worker failed at any time (sampled every 100 ms): no writer sent
  a column or a table that a peer could not merge; no image carried the new column before every
  writer had re-installed ``items``;
* ``likes`` follows its policy (concurrent increments from every region sum), and ``note`` values
  written in each region reach every writer;
* how long the command took, and the longest a write waited (table locks).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from drills.mesh import REGIONS, Mesh, mesh
from drills.sample import APP_SCHEMA, POLICY
from replication.quorum import quorum_size

__all__ = ["MIGRATION", "SchemaChangeResult", "run_schema_change"]

MIGRATION = """-- 0042: likes per item (a counter: increments from every region add up), and a note on items.
CREATE TABLE likes (
    id    int PRIMARY KEY,
    n     bigint NOT NULL DEFAULT 0,
    label text
);
ALTER TABLE items ADD COLUMN note text NOT NULL DEFAULT 'none';
"""
MIGRATION_NAME = "0042_likes_and_notes.sql"

POLICY_CONFIG = """config:
  fraiseql:replication:
    default: lww
    tables:
      - {table: counters, strategy: counter, columns: [hits]}
      - {table: tags, strategy: set}
      - {table: accounts, strategy: app}
      - {table: likes, strategy: counter, columns: [n]}
    replicated: [items]
"""
KEYS = 5  # counter rows incremented by every region
REPO = Path(__file__).resolve().parents[1]


@dataclass
class SchemaChangeResult:
    writers: list[str]
    exit_code: int
    apply_s: float
    steps: list[dict[str, Any]]
    acked: int
    acked_during_apply: int
    lost: int
    write_errors: dict[str, int]
    longest_write_ms: float
    parked_max: int
    parked_left: int
    apply_errors: int
    subscriptions_healthy: bool
    images_with_note_before_install: int
    likes_expected: int
    likes_observed: list[int]
    counters_expected: int
    counters_observed: list[int]
    notes_written: int
    notes_everywhere: bool
    converged: bool
    convergence_s: float
    output: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.exit_code == 0 and self.lost == 0 and self.parked_max == 0 and self.parked_left == 0
                and self.apply_errors == 0 and self.images_with_note_before_install == 0 and self.converged
                and self.notes_everywhere and self.likes_observed == [self.likes_expected] * len(self.writers)
                and self.counters_observed == [self.counters_expected] * len(self.writers) and not self.write_errors)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("output")  # the command's own JSON lines; `steps` keeps its timeline
        d["ok"] = self.ok
        return d


class _Writer(threading.Thread):
    """One region's application: writes as fast as it can until stopped."""

    def __init__(self, m: Mesh, region: str, index: int, phase: dict[str, str]):
        super().__init__(daemon=True, name=f"load-{region}")
        self.m, self.region, self.phase = m, region, phase
        self.base = (index + 1) * 10_000_000
        self.stop = threading.Event()
        self.acked: list[int] = []
        self.acked_during: int = 0
        self.noted: list[tuple[int, str]] = []
        self.counter_incs = 0
        self.like_incs = 0
        self.errors: dict[str, int] = {}
        self.longest_ms = 0.0

    def run(self) -> None:
        n = 0
        with self.m.connect(self.region) as c:
            while not self.stop.is_set():
                n += 1
                key = self.base + n
                phase = self.phase["now"]
                t0 = time.monotonic()
                try:
                    with c.transaction():
                        if phase == "after":
                            note = f"{self.region}-{n}"
                            c.execute("INSERT INTO items (id, v, note) VALUES (%s, %s, %s)", (key, f"v{n}", note))
                            c.execute("UPDATE likes SET n = n + 1 WHERE id = %s", (n % KEYS + 1,))
                        else:
                            c.execute("INSERT INTO items (id, v) VALUES (%s, %s)", (key, f"v{n}"))
                            if n > 1:
                                c.execute("UPDATE items SET v = %s WHERE id = %s", (f"u{n}", key - 1))
                            c.execute("UPDATE counters SET hits = hits + 1 WHERE id = %s", (n % KEYS + 1,))
                except psycopg.Error as e:
                    self.errors[e.sqlstate or type(e).__name__] = self.errors.get(e.sqlstate or type(e).__name__, 0) + 1
                    time.sleep(0.05)
                    continue
                self.longest_ms = max(self.longest_ms, (time.monotonic() - t0) * 1000)
                self.acked.append(key)
                if phase == "after":
                    self.noted.append((key, note))
                    self.like_incs += 1
                else:
                    self.counter_incs += 1
                    if phase == "during":
                        self.acked_during += 1
                time.sleep(0.005)


class _ParkedProbe(threading.Thread):
    """Largest number of parked changes any writer held, sampled every 100 ms."""

    def __init__(self, m: Mesh):
        super().__init__(daemon=True, name="parked-probe")
        self.m = m
        self.stop = threading.Event()
        self.max = 0
        self.unhealthy: list[str] = []

    def run(self) -> None:
        conns = {r: self.m.connect(r) for r in self.m.names}
        try:
            while not self.stop.is_set():
                for c in conns.values():
                    row = c.execute("SELECT count(*) FROM fraiseql_repl.parked").fetchone()
                    self.max = max(self.max, int(row[0]) if row else 0)
                self.stop.wait(0.1)
        finally:
            for c in conns.values():
                c.close()


def _apply_errors(m: Mesh) -> int:
    return sum(int(m.execute(r, "SELECT coalesce(sum(apply_error_count), 0) FROM pg_stat_subscription_stats")[0][0])
               for r in m.names)


def run_schema_change(*, regions: Sequence[str] = REGIONS, warmup_s: float = 2.0, after_s: float = 2.0,
                      delays: bool = True) -> SchemaChangeResult:
    with mesh(POLICY, APP_SCHEMA, regions=regions, delays=delays) as m, tempfile.TemporaryDirectory() as tmp:
        first = m.names[0]
        m.execute(first, "INSERT INTO counters (id, label, hits) SELECT g, 'c' || g, 0 FROM generate_series(1, %s) g", (KEYS,))
        m.wait_converged(["counters"], timeout=30)
        errors_before = _apply_errors(m)
        phase = {"now": "before"}
        writers = [_Writer(m, r, i, phase) for i, r in enumerate(m.names)]
        probe = _ParkedProbe(m)
        probe.start()
        for w in writers:
            w.start()
        time.sleep(warmup_s)

        d = Path(tmp)
        (d / MIGRATION_NAME).write_text(MIGRATION, encoding="utf-8")
        (d / "Pulumi.drill.yaml").write_text(POLICY_CONFIG, encoding="utf-8")
        (d / "outputs.json").write_text(json.dumps({
            "phase": "b", "regions": {r: "active" for r in m.names}, "writerDbIdentifiers": {r: r for r in m.names},
            "healthCheckIds": {}, "routingControlArns": {r: "arn" for r in m.names},
            "arcClusterEndpoints": [{"region": first, "endpoint": "https://arc.invalid"}], "quorum": quorum_size(len(m.names)),
            "replicationLagAlarmArns": {}, "slo": {"rtoSeconds": 90, "rpoSeconds": 1, "lagAlarmSeconds": 0.5}}))
        phase["now"] = "during"
        t0 = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "ops", "schema", "apply", str(d / MIGRATION_NAME), "--outputs", str(d / "outputs.json"),
             "--json", "--policy", str(d / "Pulumi.drill.yaml"), *(f"--dsn={r}={m.pg[r].dsn}" for r in m.names)],
            cwd=REPO, capture_output=True, text=True, timeout=600)
        apply_s = time.monotonic() - t0
        code = run.returncode
        records = [json.loads(x) for x in run.stdout.splitlines() if x.startswith("{")]
        steps: list[dict[str, Any]] = next((r["data"]["steps"] for r in records if r["step"] == "timeline"), [])
        if code == 0:
            m.execute(first, "INSERT INTO likes (id, label) SELECT g, 'item ' || g FROM generate_series(1, %s) g", (KEYS,))
            m.wait_converged(["likes"], timeout=30)
            phase["now"] = "after"
            time.sleep(after_s)
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(timeout=30)
        tables = ["items", "counters", "likes", "fraiseql_repl.shards"] if code == 0 else ["items", "counters"]
        t1 = time.monotonic()
        try:
            m.wait_converged(tables, timeout=60)
            converged = True
        except TimeoutError:
            converged = False
        convergence_s = time.monotonic() - t1
        probe.stop.set()
        probe.join(timeout=10)

        acked = [k for w in writers for k in w.acked]
        lost = 0
        for r in m.names:
            present = {row[0] for row in m.execute(r, "SELECT id FROM items WHERE id = ANY (%s)", (acked,))}
            lost += len(set(acked) - present)
        noted = [kn for w in writers for kn in w.noted]
        notes_everywhere = all(
            dict(m.execute(r, "SELECT id, note FROM items WHERE id = ANY (%s)", ([k for k, _ in noted],))) == dict(noted)
            for r in m.names)
        # Order: an image carrying the new column only after every writer had re-installed items.
        installed = max(m.execute(r, "SELECT installed_at FROM fraiseql_repl.table_meta WHERE table_name = 'public.items'")[0][0]
                        for r in m.names)
        early = sum(int(m.execute(r, "SELECT count(*) FROM fraiseql_repl.changes WHERE origin = fraiseql_repl.node_name() "
                                     "AND tbl = 'public.items' AND row_image ? 'note' AND origin_at < %s", (installed,))[0][0])
                    for r in m.names)
        likes = [int(m.execute(r, "SELECT coalesce(sum(n), 0) FROM likes")[0][0]) for r in m.names] if code == 0 else []
        counters = [int(m.execute(r, "SELECT coalesce(sum(hits), 0) FROM counters")[0][0]) for r in m.names]
        parked_left = sum(int(m.execute(r, "SELECT count(*) FROM fraiseql_repl.parked")[0][0]) for r in m.names)
        write_errors: dict[str, int] = {}
        for w in writers:
            for k, v in w.errors.items():
                write_errors[k] = write_errors.get(k, 0) + v
        result = SchemaChangeResult(
            writers=list(m.names), exit_code=code, apply_s=apply_s, steps=steps, acked=len(acked),
            acked_during_apply=sum(w.acked_during for w in writers), lost=lost, write_errors=write_errors,
            longest_write_ms=max(w.longest_ms for w in writers), parked_max=probe.max, parked_left=parked_left,
            apply_errors=_apply_errors(m) - errors_before, subscriptions_healthy=all(m.subscriptions_healthy().values()),
            images_with_note_before_install=early, likes_expected=sum(w.like_incs for w in writers), likes_observed=likes,
            counters_expected=sum(w.counter_incs for w in writers), counters_observed=counters, notes_written=len(noted),
            notes_everywhere=notes_everywhere and bool(noted), converged=converged, convergence_s=convergence_s,
            output=run.stdout)
        if code != 0:
            result.notes.append(f"schema apply exited {code}: {records[-1]['detail'] if records else run.stderr[-500:]}")
        if not converged:
            result.notes.append(f"not converged: {m.differences(tables)}")
        return result
