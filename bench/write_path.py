"""Benchmark: what multi-master replication costs on the write path (issue 24).

One run on a three-writer mesh of real PostgreSQL 18 (``drills.mesh``), on the first writer, the same
table four ways, measured in interleaved blocks (the order rotates from block to block):

- ``bench_repl``: replicated (lww), the mechanism under test;
- ``bench_local``: left local (not in the policy), the reference every ratio is taken against;
- ``bench_floor``: local, with the cheapest change log there can be: one statement trigger that appends
  each written row's JSON image (or a deleted row's key) to an unindexed table. No version, no fence,
  no tombstone, no commit check: not a mechanism, but what any design that captures changes into a
  table costs at least;
- ``bench_native``: the writer's side of the other design, publishing the application table itself
  with native logical replication (no change log) and merging on the subscriber. The version columns
  in the row (``_repl_ts``, ``_repl_node``, ``_repl_born``), set on INSERT by column defaults (no
  trigger) and on UPDATE by a BEFORE row trigger; a tombstone per deleted key (``bench_native_tomb``,
  from the statement's transition table, published with the table); the mechanism's own fence
  (``fraiseql_repl.fence_guard`` before each statement, ``fraiseql_repl.arm_commit_check`` after it).
  The subscriber side is not built (below).

1. per row, for single-row INSERT, UPDATE and DELETE in autocommit, and for 10,000-row transactions
   (10,000 single-row statements in one transaction; one statement of 10,000 rows):
   - wall time of the client (what an application waits for),
   - CPU time of the server backend (``/proc/<pid>/schedstat``: what the write path itself costs,
     less disturbed by other processes on a shared machine),
   - WAL bytes (``pg_current_wal_insert_lsn`` before and after a block), and for the last block of
     each operation where they went (``pg_walinspect``: the table and its indexes, the change log,
     the tombstones, commit records, the rest);
   the peers' data subscriptions to the writer are disabled while it is measured, so their apply
   workers do not compete for the same cores (they are on other machines in production), then
   enabled again and waited for;
2. the apply rate of every link (rows a second merged on the subscriber) while all three writers
   write at once, beside the rate each writer wrote at, and the rate the same writers reach on the
   local table;
3. the time ``replication.verify.verify`` (what ``python -m ops verify`` runs) takes for the same
   number of rows on every writer (1,000,000 by default).

The native design. Tombstones rather than ``REPLICA IDENTITY FULL``: the apply worker finds the row
to delete by the subscriber's primary key, and a subscriber trigger sees only the local row, never
the old row the publisher logged, so a full identity would add the whole old row to the WAL of every
UPDATE and DELETE and still not tell the merge which version was deleted; and a delete of a key the
subscriber does not hold fires no trigger at all (``delete_missing``), so nothing would remember it.
What the subscriber would need: on each published table a BEFORE INSERT OR UPDATE OR DELETE trigger
enabled REPLICA (or ALWAYS) that (a) turns an arriving insert of a key it holds into an update of it,
or drops it, by (born, ts, node) (a plain insert would fail on the key and stall the link; the
heartbeats' ``heartbeat_upsert`` does this); (b) drops an arriving update older than the local row
(``RETURN NULL``); (c) drops the table's own DELETE, the arriving tombstone doing the delete (kill the
row if its born is not newer than the tombstone's) and being kept, so a later-arriving older insert
is dropped too, until every member has applied it (the purge problem is unchanged); (d) settles
clashes on secondary unique keys before the heap insert (PostgreSQL 18 detects ``insert_exists`` and
``update_exists`` but only errors, retrying for ever). Subscriptions with ``origin = none``, as now.
What it gives up or must still solve: counters merge as deltas, and a published row carries only
its new value, so counter tables keep a per-node contribution table written by a row trigger (the
change log's cost again, for them); ``app`` tables need the previous version in the row (two more
columns); an insert's version comes from defaults the application can override (column privileges
must keep it from writing ``_repl_*``) and from ``clock_timestamp()`` rather than ``next_ts`` (a
clock stepping back can make a re-insert older than its own tombstone); each insert is a new
incarnation (born = its own time: concurrent creations of a key do not share one); a schema change
reaching one writer before another stops the apply of the table's changes (the change log's
hold-back of held columns has no counterpart); and ``fraiseql_repl.end_writes`` finds open writers by
their lock on the change log, which a native writer never takes (it would look for the lock on
``fraiseql_repl.writing``, which ``arm_commit_check`` takes).

Each figure is a median over blocks; ratios are against the local table, from the same run. Prints
the tables and the raw numbers as JSON on the last line; ``--record`` writes the tables into the
results page (docs/results.md, section ``bench-write-path``, or ``bench-write-path-durable``). Asserts
nothing: timings are noisy.

    .venv/bin/python bench/write_path.py [--rows 2000] [--block 200] [--big 10000] [--big-reps 3]
        [--apply-s 10] [--verify-rows 1000000] [--durable] [--record]

``--durable`` runs the servers with ``fsync`` and ``full_page_writes`` on (every commit flushes
the WAL, as on RDS); by default they run as the drills run them (off: the strictest view of the
mechanism's own cost, since a flush would dilute it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from drills.mesh import REGIONS, Mesh, mesh  # noqa: E402
from drills.pg import DEFAULT_SETTINGS  # noqa: E402
from replication.model import ConflictPolicy, Node  # noqa: E402
from replication.sql import subscription_name  # noqa: E402
from replication.verify import verify  # noqa: E402

#: A FraiseQL-shaped write table: a bigint key, a label, a number and a timestamp.
COLUMNS = "(id bigint PRIMARY KEY, name text NOT NULL, qty integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
REPL, LOCAL, FLOOR, NATIVE, BIG = "bench_repl", "bench_local", "bench_floor", "bench_native", "bench_verify"
TABLES = (LOCAL, REPL, FLOOR, NATIVE)
SCHEMA: tuple[str, ...] = (
    f"CREATE TABLE {REPL} {COLUMNS}",
    f"CREATE TABLE {LOCAL} {COLUMNS}",
    f"CREATE TABLE {FLOOR} {COLUMNS}",
    f"CREATE TABLE {BIG} {COLUMNS}",
    # The floor: each statement appends its rows' images to an unindexed log, and nothing else.
    f"CREATE TABLE {FLOOR}_log (tbl text NOT NULL, op \"char\" NOT NULL, image jsonb NOT NULL)",
    f"CREATE FUNCTION {FLOOR}_capture() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
    "BEGIN\n"
    "  IF TG_OP = 'DELETE' THEN\n"
    f"    INSERT INTO {FLOOR}_log SELECT 'public.{FLOOR}', 'd', jsonb_build_object('id', o.id) FROM old_rows o;\n"
    "  ELSE\n"
    f"    INSERT INTO {FLOOR}_log SELECT 'public.{FLOOR}', 'u', to_jsonb(n.*) FROM new_rows n;\n"
    "  END IF;\n"
    "  RETURN NULL;\n"
    "END $f$",
    *(f"CREATE TRIGGER capture_{op.lower()} AFTER {op} ON {FLOOR} REFERENCING {'OLD' if op == 'DELETE' else 'NEW'} "
      f"TABLE AS {'old' if op == 'DELETE' else 'new'}_rows FOR EACH STATEMENT EXECUTE FUNCTION {FLOOR}_capture()"
      for op in ("INSERT", "UPDATE", "DELETE")),
    # Writes for N seconds in batches of `batch` rows, one transaction each, keys from `first` up.
    "CREATE PROCEDURE bench_load(tbl regclass, first bigint, batch int, seconds float8) LANGUAGE plpgsql AS $p$\n"
    "DECLARE n bigint := first; stop timestamptz := clock_timestamp() + make_interval(secs => seconds);\n"
    "BEGIN\n"
    "  WHILE clock_timestamp() < stop LOOP\n"
    "    EXECUTE format('INSERT INTO %s (id, name, qty) SELECT g, ''load-'' || g, 1 FROM generate_series($1, $2) g', tbl)\n"
    "      USING n, n + batch - 1;\n"
    "    n := n + batch;\n"
    "    COMMIT;\n"
    "  END LOOP;\n"
    "END $p$",
)
#: The native-publication design's writer side (on the measured writer, once the mesh is bootstrapped:
#: it calls the mechanism's own fence functions). The version in the row, set by column defaults on
#: INSERT and by a row trigger on UPDATE; a typed tombstone per deleted key; the fence and the commit
#: check of ``bench_repl``, from statement triggers. Every name is schema-qualified (no SET clause on
#: the row trigger: a per-row cost), the statement-level functions are SECURITY DEFINER as the
#: mechanism's capture is (the application may neither arm the check nor write tombstones itself).
NATIVE_SCHEMA: tuple[str, ...] = (
    f"CREATE TABLE {NATIVE} (id bigint PRIMARY KEY, name text NOT NULL, qty integer NOT NULL, "
    "updated_at timestamptz NOT NULL DEFAULT now(), "
    "_repl_ts timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(), "
    "_repl_node text NOT NULL DEFAULT fraiseql_repl.node_name(), "
    "_repl_born timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp())",
    f"CREATE TABLE {NATIVE}_tomb (id bigint PRIMARY KEY, ts timestamptz NOT NULL, node text NOT NULL, "
    "born timestamptz NOT NULL)",
    # An update is a new version of the same incarnation; a key change is a delete of the old key
    # (its tombstone) and a new incarnation of the new one.
    f"CREATE FUNCTION {NATIVE}_stamp() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
    "BEGIN\n"
    "  IF NEW.id IS DISTINCT FROM OLD.id THEN\n"
    f"    INSERT INTO public.{NATIVE}_tomb AS x (id, ts, node, born) VALUES (OLD.id, fraiseql_repl.next_ts(OLD._repl_ts), "
    "fraiseql_repl.node_name(), OLD._repl_born) ON CONFLICT (id) DO UPDATE SET ts = excluded.ts, node = excluded.node, "
    "born = excluded.born;\n"
    "    NEW._repl_born := pg_catalog.clock_timestamp();\n"
    "    NEW._repl_ts := NEW._repl_born;\n"
    "  ELSE\n"
    "    NEW._repl_ts := fraiseql_repl.next_ts(OLD._repl_ts);\n"
    "    NEW._repl_born := OLD._repl_born;\n"
    "  END IF;\n"
    "  NEW._repl_node := fraiseql_repl.node_name();\n"
    "  RETURN NEW;\n"
    "END $f$",
    # Once per statement, after it: the commit check (and a delete's tombstones, from its rows).
    f"CREATE FUNCTION {NATIVE}_after() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
    "SET search_path = pg_catalog, pg_temp AS $f$\n"
    "BEGIN\n"
    "  PERFORM fraiseql_repl.arm_commit_check();\n"
    "  RETURN NULL;\n"
    "END $f$",
    f"CREATE FUNCTION {NATIVE}_deleted() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
    "SET search_path = pg_catalog, pg_temp AS $f$\n"
    "BEGIN\n"
    "  PERFORM fraiseql_repl.arm_commit_check();\n"
    f"  INSERT INTO public.{NATIVE}_tomb AS x (id, ts, node, born)\n"
    "  SELECT o.id, fraiseql_repl.next_ts(o._repl_ts), fraiseql_repl.node_name(), o._repl_born FROM old_rows o\n"
    "  ON CONFLICT (id) DO UPDATE SET ts = excluded.ts, node = excluded.node, born = excluded.born;\n"
    "  RETURN NULL;\n"
    "END $f$",
    f"CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {NATIVE} "
    "FOR EACH STATEMENT EXECUTE FUNCTION fraiseql_repl.fence_guard()",
    f"CREATE TRIGGER stamp BEFORE UPDATE ON {NATIVE} FOR EACH ROW EXECUTE FUNCTION {NATIVE}_stamp()",
    f"CREATE TRIGGER written AFTER INSERT OR UPDATE ON {NATIVE} FOR EACH STATEMENT EXECUTE FUNCTION {NATIVE}_after()",
    f"CREATE TRIGGER deleted AFTER DELETE ON {NATIVE} REFERENCING OLD TABLE AS old_rows "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {NATIVE}_deleted()",
    # What the peers would subscribe to (no subscription here: only the writer's side is measured).
    f"CREATE PUBLICATION {NATIVE}_pub FOR TABLE {NATIVE}, {NATIVE}_tomb",
)
POLICY = ConflictPolicy(replicated=(REPL, BIG))
WRITER = REGIONS[0]
TARGET_TIME, TARGET_WAL, TARGET_VERIFY_S = 1.3, 2.0, 60.0
#: The ratios to the local table in the JSON line.
RATIOS = ("time_x", "cpu_x", "wal_x", "floor_time_x", "floor_wal_x", "native_time_x", "native_cpu_x", "native_wal_x")


# -- measuring ---------------------------------------------------------------------

#: Where a block's WAL went: the written table (heap, indexes, TOAST), the change log, the tombstones,
#: commit records, and the rest (sequences, counter shards, catalog pruning, other sessions).
PARTS = ("table", "change log", "tombstones", "commit", "other")
_PART_OF = {REPL: "table", LOCAL: "table", FLOOR: "table", NATIVE: "table", "fraiseql_repl.changes": "change log",
            f"{FLOOR}_log": "change log", "fraiseql_repl.tombstones": "tombstones", f"{NATIVE}_tomb": "tombstones"}


@dataclass
class Sample:
    """One block of one operation on one table."""

    rows: int
    wall_s: float
    cpu_ns: int
    wal_bytes: int
    wal_parts: dict[str, int] = field(default_factory=dict)


@dataclass
class OpResult:
    """Medians per row over the blocks of one operation: replicated, local, the floor and native."""

    op: str
    rows: int
    repl_ms: float
    local_ms: float
    floor_ms: float
    native_ms: float
    repl_cpu_us: float
    local_cpu_us: float
    floor_cpu_us: float
    native_cpu_us: float
    repl_wal: float
    local_wal: float
    floor_wal: float
    native_wal: float
    #: table -> part -> bytes per row, from the last block
    wal_parts: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def time_x(self) -> float:
        return self.repl_ms / self.local_ms

    @property
    def cpu_x(self) -> float:
        return self.repl_cpu_us / self.local_cpu_us

    @property
    def wal_x(self) -> float:
        return self.repl_wal / self.local_wal

    @property
    def floor_time_x(self) -> float:
        return self.floor_ms / self.local_ms

    @property
    def floor_wal_x(self) -> float:
        return self.floor_wal / self.local_wal

    @property
    def native_time_x(self) -> float:
        return self.native_ms / self.local_ms

    @property
    def native_cpu_x(self) -> float:
        return self.native_cpu_us / self.local_cpu_us

    @property
    def native_wal_x(self) -> float:
        return self.native_wal / self.local_wal

    @property
    def met(self) -> bool:
        return self.time_x <= TARGET_TIME and self.wal_x <= TARGET_WAL

    @property
    def native_met(self) -> bool:
        return self.native_time_x <= TARGET_TIME and self.native_wal_x <= TARGET_WAL


class Meter:
    """Measures blocks run on one connection: client wall time, that backend's CPU, WAL written."""

    def __init__(self, conn: psycopg.Connection[Any], monitor: psycopg.Connection[Any]) -> None:
        self.conn, self.monitor = conn, monitor
        self.pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        self.walinspect = bool(monitor.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pg_walinspect'").fetchone()[0])  # type: ignore[index]

    def cpu_ns(self) -> int:
        """CPU time the backend has run, in ns (0 where /proc is not readable: only wall time then)."""
        try:
            return int(Path(f"/proc/{self.pid}/schedstat").read_text().split()[0])
        except OSError:
            return 0

    def lsn(self) -> str:
        return str(self.monitor.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])  # type: ignore[index]

    def parts(self, start: str, end: str) -> dict[str, int]:
        """WAL bytes between two positions by what they were written for (pg_walinspect)."""
        if not self.walinspect:
            return {}
        rows = self.monitor.execute(
            "WITH r AS (SELECT resource_manager AS rm, record_length AS len, "
            "  pg_filenode_relation(0, (regexp_match(block_ref, 'rel \\d+/\\d+/(\\d+)'))[1]::oid) AS rel "
            "  FROM pg_get_wal_records_info(%s, %s)) "
            "SELECT CASE WHEN r.rel IS NULL THEN CASE WHEN r.rm = 'Transaction' THEN 'commit' ELSE '' END "
            "            ELSE coalesce((SELECT i.indrelid FROM pg_index i WHERE i.indexrelid = r.rel), "
            "                          (SELECT c.oid FROM pg_class c WHERE c.reltoastrelid = r.rel), r.rel)::regclass::text END, "
            "       sum(r.len)::bigint FROM r GROUP BY 1", (start, end)).fetchall()
        out = dict.fromkeys(PARTS, 0)
        for name, n in rows:
            part = "commit" if name == "commit" else _PART_OF.get(name, "other")
            out[part] += int(n)
        return out

    def block(self, rows: int, work: Callable[[psycopg.Connection[Any]], None], *, parts: bool = False) -> Sample:
        a, c0, t0 = self.lsn(), self.cpu_ns(), time.perf_counter()
        work(self.conn)
        wall, c1, b = time.perf_counter() - t0, self.cpu_ns(), self.lsn()
        wal = int(self.monitor.execute("SELECT %s::pg_lsn - %s::pg_lsn", (b, a)).fetchone()[0])  # type: ignore[index]
        return Sample(rows, wall, c1 - c0, wal, self.parts(a, b) if parts else {})


def summarize(op: str, samples: dict[str, list[Sample]]) -> OpResult:
    def med(table: str, f: Callable[[Sample], float]) -> float:
        return statistics.median(f(s) / s.rows for s in samples[table])

    rows = sum(s.rows for s in samples[REPL])
    parts = {t: {k: v / samples[t][-1].rows for k, v in samples[t][-1].wal_parts.items()} for t in TABLES}

    def ms(t: str) -> float:
        return med(t, lambda s: s.wall_s * 1e3)

    def cpu(t: str) -> float:
        return med(t, lambda s: s.cpu_ns / 1e3)

    def wal(t: str) -> float:
        return med(t, lambda s: s.wal_bytes)

    return OpResult(op, rows, ms(REPL), ms(LOCAL), ms(FLOOR), ms(NATIVE), cpu(REPL), cpu(LOCAL), cpu(FLOOR), cpu(NATIVE),
                    wal(REPL), wal(LOCAL), wal(FLOOR), wal(NATIVE), parts)


def interleaved(meter: Meter, blocks: Sequence[Sequence[int]],
                work: Callable[[str, Sequence[int]], Callable[[psycopg.Connection[Any]], None]]) -> dict[str, list[Sample]]:
    """Run every block on every table, rotating which goes first; WAL parts of the last block."""
    out: dict[str, list[Sample]] = {t: [] for t in TABLES}
    n = len(TABLES)
    for i, ids in enumerate(blocks):
        for table in TABLES[i % n:] + TABLES[:i % n]:
            out[table].append(meter.block(len(ids), work(table, ids), parts=i == len(blocks) - 1))
    return out


def _row(i: int) -> tuple[int, str, int]:
    return i, f"name-{i:012d}", i % 100


def single_row_ops(meter: Meter, rows: int, block: int, start: int) -> list[OpResult]:
    blocks = [range(s, min(s + block, start + rows)) for s in range(start, start + rows, block)]

    def insert(table: str, ids: Sequence[int]) -> Callable[[psycopg.Connection[Any]], None]:
        def run(c: psycopg.Connection[Any]) -> None:
            for i in ids:
                c.execute(f"INSERT INTO {table} (id, name, qty) VALUES (%s, %s, %s)", _row(i))
        return run

    def update(table: str, ids: Sequence[int]) -> Callable[[psycopg.Connection[Any]], None]:
        def run(c: psycopg.Connection[Any]) -> None:
            for i in ids:
                c.execute(f"UPDATE {table} SET qty = qty + 1, updated_at = now() WHERE id = %s", (i,))
        return run

    def delete(table: str, ids: Sequence[int]) -> Callable[[psycopg.Connection[Any]], None]:
        def run(c: psycopg.Connection[Any]) -> None:
            for i in ids:
                c.execute(f"DELETE FROM {table} WHERE id = %s", (i,))
        return run

    return [summarize("single-row INSERT, autocommit", interleaved(meter, blocks, insert)),
            summarize("single-row UPDATE, autocommit", interleaved(meter, blocks, update)),
            summarize("single-row DELETE, autocommit", interleaved(meter, blocks, delete))]


def big_transactions(meter: Meter, rows: int, reps: int, start: int) -> list[OpResult]:
    """10,000-row transactions: as single-row statements, and as one statement."""
    ranges = [range(start + r * 2 * rows, start + r * 2 * rows + rows) for r in range(reps)]
    selects = [range(r.start + rows, r.stop + rows) for r in ranges]

    def in_txn(sql: str, params: Callable[[int], Sequence[Any]]) -> Callable[[str, Sequence[int]], Callable[[psycopg.Connection[Any]], None]]:
        def work(table: str, ids: Sequence[int]) -> Callable[[psycopg.Connection[Any]], None]:
            def run(c: psycopg.Connection[Any]) -> None:
                with c.transaction():
                    for i in ids:
                        c.execute(sql.format(t=table), params(i))
            return run
        return work

    def one(sql: str) -> Callable[[str, Sequence[int]], Callable[[psycopg.Connection[Any]], None]]:
        def work(table: str, ids: Sequence[int]) -> Callable[[psycopg.Connection[Any]], None]:
            def run(c: psycopg.Connection[Any]) -> None:
                c.execute(sql.format(t=table), (ids[0], ids[-1]))
            return run
        return work

    n = f"{rows:,}"
    return [
        summarize(f"{n} single-row INSERTs, one transaction",
                  interleaved(meter, ranges, in_txn("INSERT INTO {t} (id, name, qty) VALUES (%s, %s, %s)", _row))),
        summarize(f"{n} single-row UPDATEs, one transaction",
                  interleaved(meter, ranges, in_txn("UPDATE {t} SET qty = qty + 1, updated_at = now() WHERE id = %s",
                                                    lambda i: (i,)))),
        summarize(f"UPDATE of {n} rows, one statement",
                  interleaved(meter, ranges, one("UPDATE {t} SET qty = qty + 1, updated_at = now() WHERE id BETWEEN %s AND %s"))),
        summarize(f"DELETE of {n} rows, one statement",
                  interleaved(meter, ranges, one("DELETE FROM {t} WHERE id BETWEEN %s AND %s"))),
        summarize(f"INSERT ... SELECT of {n} rows, one statement",
                  interleaved(meter, selects, one("INSERT INTO {t} (id, name, qty) SELECT g, 'name-' || g, g %% 100 "
                                                  "FROM generate_series(%s::bigint, %s::bigint) g"))),
    ]


# -- the mesh around the writer -------------------------------------------------------


def _node(m: Mesh, name: str) -> Node:
    return m.nodes[name]


@contextlib.contextmanager
def peers_paused(m: Mesh, writer: str) -> Iterator[None]:
    """Disable the peers' data subscriptions to ``writer`` (its changes wait in their slots)."""
    subs = {p: subscription_name(_node(m, p), _node(m, writer)) for p in m.names if p != writer}
    for p, sub in subs.items():
        m.execute(p, f"ALTER SUBSCRIPTION {sub} DISABLE")
    try:
        yield
    finally:
        for p, sub in subs.items():
            m.execute(p, f"ALTER SUBSCRIPTION {sub} ENABLE")


def wait_same(m: Mesh, table: str, timeout: float = 600) -> float:
    """Seconds until every writer holds the same rows of ``table`` (count and key sum)."""
    t0 = time.monotonic()
    while True:
        seen = {tuple(m.execute(n, f"SELECT count(*), coalesce(sum(id), 0), coalesce(sum(qty), 0) FROM {table}")[0])
                for n in m.names}
        if len(seen) == 1:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{table} differs after {timeout} s: {seen}")
        time.sleep(0.2)


@dataclass
class ApplyResult:
    seconds: float
    local_rows_s: dict[str, float]
    written_rows_s: dict[str, float]
    #: "subscriber<-publisher" -> rows a second merged while every writer wrote
    applied_rows_s: dict[str, float]
    #: rows each link was behind when the writers stopped, and the seconds it took to catch up
    behind_rows: dict[str, int]
    drain_s: dict[str, float]


def _range(i: int) -> tuple[int, int]:
    return (i + 1) * 1_000_000_000, (i + 2) * 1_000_000_000 - 1


def _load(m: Mesh, table: str, seconds: float, batch: int) -> dict[str, int]:
    """Every writer writes its own key range for ``seconds``, all at once; rows each wrote."""
    def one(i: int, name: str) -> None:
        with m.connect(name) as c:
            c.execute("CALL bench_load(%s, %s, %s, %s)", (table, _range(i)[0], batch, seconds))

    threads = [threading.Thread(target=one, args=(i, n)) for i, n in enumerate(m.names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {n: _count(m, n, table, i) for i, n in enumerate(m.names)}


def _count(m: Mesh, on: str, table: str, origin_index: int) -> int:
    lo, hi = _range(origin_index)
    return int(m.execute(on, f"SELECT count(*) FROM {table} WHERE id BETWEEN %s AND %s", (lo, hi))[0][0])


def apply_rates(m: Mesh, seconds: float, batch: int = 100) -> ApplyResult:
    names = m.names
    local = _load(m, LOCAL, seconds, batch)
    t0 = time.monotonic()
    written = _load(m, REPL, seconds, batch)
    stopped = time.monotonic()
    window = stopped - t0
    applied: dict[str, float] = {}
    behind: dict[str, int] = {}
    drain: dict[str, float] = {}
    for i, pub in enumerate(names):
        for sub in names:
            if sub != pub:
                have = _count(m, sub, REPL, i)
                key = f"{sub}<-{pub}"
                applied[key] = have / window
                behind[key] = written[pub] - have
    pending = {(sub, i, pub) for i, pub in enumerate(names) for sub in names if sub != pub}
    deadline = stopped + 900
    while pending and time.monotonic() < deadline:
        for sub, i, pub in sorted(pending):
            if _count(m, sub, REPL, i) >= written[pub]:
                drain[f"{sub}<-{pub}"] = time.monotonic() - stopped
                pending.discard((sub, i, pub))
        time.sleep(0.25)
    return ApplyResult(window, {n: v / seconds for n, v in local.items()}, {n: v / window for n, v in written.items()},
                       applied, behind, drain)


@dataclass
class VerifyResult:
    rows: int
    load_s: float
    verify_s: float
    diverged: int
    scan_s: float  # one plain hash of the table on one writer, for scale


def verify_time(m: Mesh, rows: int) -> VerifyResult:
    """The same ``rows`` on every writer (loaded without the triggers, as a seeded copy), then verify."""
    t0 = time.monotonic()

    def load(name: str) -> None:
        with m.connect(name) as c:
            c.execute("SET session_replication_role = replica")
            c.execute(f"INSERT INTO {BIG} (id, name, qty, updated_at, _repl_ts, _repl_node, _repl_born) "
                      "SELECT g, 'name-' || g, g %% 100, '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 ms', "
                      "'2026-01-01 00:00:00+00'::timestamptz + g * interval '1 ms', %s, '-infinity' "
                      "FROM generate_series(1, %s) g", (WRITER, rows))
            c.execute(f"VACUUM ANALYZE {BIG}")

    threads = [threading.Thread(target=load, args=(n,)) for n in m.names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    load_s = time.monotonic() - t0
    conns = {n: m.connect(n) for n in m.names}
    try:
        report = verify(conns, tables=[f"public.{BIG}"])
        s0 = time.monotonic()
        conns[WRITER].execute(f"SELECT md5(string_agg(md5(t::text), '')) FROM {BIG} t")
        scan = time.monotonic() - s0
    finally:
        for c in conns.values():
            c.close()
    return VerifyResult(report.tables[f"public.{BIG}"], load_s, report.seconds, report.diverged_rows, scan)


# -- report ---------------------------------------------------------------------------


@dataclass
class Result:
    settings: dict[str, str]
    ops: list[OpResult] = field(default_factory=list)
    apply: ApplyResult | None = None
    verify: VerifyResult | None = None
    converged_s: float = 0.0


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _ops_tables(ops: list[OpResult], markdown: bool) -> list[str]:
    """The write path per operation: the mechanism against the local table, the floor and native beside."""
    lines = [f"Targets (time ≤ {TARGET_TIME}×, WAL ≤ {TARGET_WAL}× the local table): met by {sum(o.met for o in ops)} "
             f"of {len(ops)} operations (native publication, writer side only: {sum(o.native_met for o in ops)} "
             f"of {len(ops)}).", ""]
    head = ["operation (per row)", "time, replicated vs local", "server CPU", "WAL bytes", "target met",
            "floor: time, WAL", "native: time, CPU, WAL"]
    rows = [[o.op, f"{o.repl_ms:.3f} vs {o.local_ms:.3f} ms (×{o.time_x:.2f})",
             f"{o.repl_cpu_us:.1f} vs {o.local_cpu_us:.1f} µs (×{o.cpu_x:.2f})",
             f"{o.repl_wal:.0f} vs {o.local_wal:.0f} (×{o.wal_x:.2f})",
             f"time {_met(o.time_x <= TARGET_TIME)}, WAL {_met(o.wal_x <= TARGET_WAL)}",
             f"×{o.floor_time_x:.2f}, ×{o.floor_wal_x:.2f}",
             f"×{o.native_time_x:.2f}, ×{o.native_cpu_x:.2f}, ×{o.native_wal_x:.2f}"] for o in ops]
    lines += _table(head, rows, markdown)
    if any(o.wal_parts.get(REPL) for o in ops):
        shown = (REPL, LOCAL, FLOOR, NATIVE)
        lines += ["", "Where the WAL of a row goes (bytes per row, last block): replicated | local | floor | native.", ""]
        rows = [[o.op, *(" \\| ".join(f"{o.wal_parts.get(t, {}).get(k, 0):.0f}" for t in shown) for k in PARTS)]
                for o in ops]
        lines += _table(["operation", *PARTS], rows, markdown)
    return lines


def render(res: Result, markdown: bool) -> str:
    lines: list[str] = []
    if res.ops:
        lines += _ops_tables(res.ops, markdown)
    if res.apply:
        a = res.apply
        lines.append("")
        head = ["link (subscriber <- publisher)", "merged while all write", "its writer wrote (replicated)",
                "the writer on a local table", "behind when writes stopped", "caught up after"]
        rows = []
        for key, rate in a.applied_rows_s.items():
            pub = key.split("<-")[1]
            rows.append([key, f"{rate:,.0f} rows/s ({rate / a.written_rows_s[pub]:.2f} of written)",
                         f"{a.written_rows_s[pub]:,.0f} rows/s", f"{a.local_rows_s[pub]:,.0f} rows/s "
                         f"(replicated: ×{a.written_rows_s[pub] / a.local_rows_s[pub]:.2f})",
                         f"{a.behind_rows[key]:,} rows", f"{a.drain_s.get(key, float('nan')):.1f} s"])
        lines += _table(head, rows, markdown)
    if res.verify:
        v = res.verify
        lines.append("")
        lines += _table(["verify", "rows per writer", "seconds", "target", "met"],
                        [["replication.verify.verify, 3 writers", f"{v.rows:,}", f"{v.verify_s:.1f} s "
                          f"(one plain hash of the table on one writer: {v.scan_s:.1f} s)",
                          f"≤ {TARGET_VERIFY_S:.0f} s", _met(v.verify_s <= TARGET_VERIFY_S)]], markdown)
    return "\n".join(lines)


def _table(head: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    rows = [[c.replace("\\|", "|") for c in r] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    return ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in [head, *rows]]


def header(res: Result) -> str:
    return (f"Write path on {WRITER} of a {len(REGIONS)}-writer mesh (PostgreSQL 18, fsync={res.settings['fsync']}, "
            f"full_page_writes={res.settings['full_page_writes']}). Per row, medians over blocks interleaved across "
            f"the replicated table, the same table left local (every ratio is against it), the floor (the local "
            f"table with the cheapest change log: each statement appends its rows' JSON images to an unindexed "
            f"table, nothing else) and native (the writer's side of publishing the table itself with native "
            f"logical replication: the version in the row, a tombstone per deleted key, the same fence and "
            f"commit check; the merge on the subscriber not built). The peers' apply was paused while the writer was measured; they caught up in "
            f"{res.converged_s:.1f} s after.")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2000, help="single-row operations per table (default 2000)")
    ap.add_argument("--block", type=int, default=200, help="rows per measured block (default 200)")
    ap.add_argument("--big", type=int, default=10_000, help="rows of a large transaction (default 10000)")
    ap.add_argument("--big-reps", type=int, default=3, help="large transactions per table and kind (default 3)")
    ap.add_argument("--apply-s", type=float, default=10.0, help="seconds every writer writes for the apply rate (0: skip)")
    ap.add_argument("--verify-rows", type=int, default=1_000_000, help="rows per writer for verify (0: skip)")
    ap.add_argument("--durable", action="store_true", help="fsync and full_page_writes on")
    ap.add_argument("--record", action="store_true", help="write the figures into docs/results.md")
    args = ap.parse_args()

    env_settings = {"fsync": "on", "full_page_writes": "on"} if args.durable else {}
    settings = {k: v for k, v in {**DEFAULT_SETTINGS, **env_settings}.items() if k in ("fsync", "full_page_writes")}
    res = Result(settings=settings)
    with _mesh(env_settings) as m:
        with m.connect(WRITER) as conn, m.connect(WRITER) as monitor:
            meter = Meter(conn, monitor)
            with peers_paused(m, WRITER):
                res.ops += single_row_ops(meter, args.rows, args.block, 1)
                res.ops += big_transactions(meter, args.big, args.big_reps, 10_000_000)
        res.converged_s = wait_same(m, REPL)
        if args.apply_s > 0:
            res.apply = apply_rates(m, args.apply_s)
        if args.verify_rows > 0:
            res.verify = verify_time(m, args.verify_rows)
    print(header(res))
    print()
    print(render(res, markdown=False))
    if args.record:
        from drills.results import record_section

        key = "bench-write-path" + ("-durable" if args.durable else "")
        title = "The write path of a replicated table against a local one" + (" (fsync on)" if args.durable else "")
        record_section(key, title, "python bench/write_path.py " + " ".join(sys.argv[1:]),
                       text=header(res) + "\n\n" + render(res, markdown=True))
    out = asdict(res)
    out["ops"] = [{**asdict(o), **{k: round(getattr(o, k), 3) for k in RATIOS}} for o in res.ops]
    print(json.dumps(out, default=str))
    return 0


@contextlib.contextmanager
def _mesh(settings: dict[str, str]) -> Iterator[Mesh]:
    with mesh(POLICY, SCHEMA, delays=False) as m:
        for n in m.names:
            for k, v in settings.items():  # both take effect on reload
                m.execute(n, f"ALTER SYSTEM SET {k} = {v}")
            m.execute(n, "SELECT pg_reload_conf()")
        m.execute(WRITER, "CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        for stmt in NATIVE_SCHEMA:
            m.execute(WRITER, stmt)
        yield m


if __name__ == "__main__":
    sys.exit(main())
