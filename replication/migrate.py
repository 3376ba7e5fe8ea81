"""Apply one migration to every writer of the mesh, in an order that never lets a writer send a
column or a table that a peer cannot merge (``python -m ops schema apply``).

Per writer the history lives in ``fraiseql_repl.migrations`` (``schema/ddl.sql``). The steps:

1. **rehearse** (every writer that lacks the migration): run it in a transaction that is rolled
   back, so a statement PostgreSQL or the DDL guard refuses fails before any writer changed;
2. **additive** (the same writers, one transaction each): the statements, then every column they
   added to a replicated table is *held* (left out of this writer's change images; local writes that
   set it are refused), new tables of the policy are installed and held whole, and the history row
   is written. Until every writer is past this step, no image carries anything new;
3. **install** (every writer): the conflict objects of the changed tables are re-rendered, so every
   merge function knows the new columns (and, until step 4, keeps its own value for a column an
   image lacks);
4. **release** (every writer): the held columns and tables are let go: images carry them now, and
   every peer can merge them. The history row is completed;
5. **retry** (every writer): ``retry_parked()``; then the publications are checked (only the change
   log and the shards are published, so a schema change normally leaves them alone).

Each step is idempotent and the history says where a run stopped, so running the same command again
resumes it. ``plan`` is the pure order; ``Applier`` runs it on live connections.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
from psycopg import errors

from replication.ddl_rules import Analysis, Catalog, Migration
from replication.model import ConflictPolicy
from replication.sql import DATA_TABLES, SCHEMA, _ident, _schema_file, _split, render_publication, render_upgrades

__all__ = ["GUC", "Applier", "ApplyFailed", "ApplyRefused", "HistoryRow", "Step", "WriterState", "catalog_of",
           "history_problems", "mesh_problems", "plan", "read_writer", "render_ddl_objects"]

#: Set (transaction-locally) by schema apply only: lets the DDL guard accept additions to replicated tables.
GUC = f"{SCHEMA}.schema_apply"
PHASES = ("rehearse", "additive", "install", "release", "retry")

Emit = Callable[..., Any]


class ApplyRefused(Exception):
    """A precondition does not hold; nothing was changed by the refused step."""


class ApplyFailed(Exception):
    """A step failed part-way; running the command again resumes."""


def render_ddl_objects() -> list[str]:
    """The objects of ``schema/ddl.sql`` (history, holds, shapes, the DDL guard): for writers
    bootstrapped before they existed, after the schema upgrades they may lack (as the bootstrap
    runs them). Also part of ``render_conflict_objects``."""
    return [*render_upgrades(), *_split(_schema_file("ddl.sql"))]


@dataclass(frozen=True)
class HistoryRow:
    checksum: str
    applied_at: datetime
    applied_by: str
    completed_at: datetime | None


@dataclass
class WriterState:
    name: str
    installed: bool = False
    ddl_objects: bool = False
    guard: bool = False
    history: dict[str, HistoryRow] = field(default_factory=dict)
    replicated: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # table -> (strategy, counter cols)
    pk_constraints: dict[str, str] = field(default_factory=dict)
    held: list[tuple[str, str, str]] = field(default_factory=list)  # (table, column or '', migration)
    parked: dict[str, int] = field(default_factory=dict)            # sqlstate -> count
    published: list[str] = field(default_factory=list)

    def status_of(self, migration: str) -> str | None:
        row = self.history.get(migration)
        return None if row is None else ("completed" if row.completed_at else "applied")


def _rows(conn: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    return list(conn.execute(sql, params).fetchall())


def read_writer(conn: Any, name: str) -> WriterState:
    """Everything schema apply needs to know about one writer (read-only)."""
    st = WriterState(name)
    st.installed = bool(_rows(conn, "SELECT to_regclass('fraiseql_repl.table_meta') IS NOT NULL")[0][0])
    if not st.installed:
        return st
    st.ddl_objects = bool(_rows(conn, "SELECT to_regclass('fraiseql_repl.migrations') IS NOT NULL "
                                      "AND to_regclass('fraiseql_repl.held') IS NOT NULL "
                                      "AND to_regprocedure('fraiseql_repl.settled_by_install(text)') IS NOT NULL")[0][0])
    st.guard = _rows(conn, "SELECT count(*) FROM pg_catalog.pg_event_trigger WHERE evtname IN "
                           "('fraiseql_repl_ddl_guard', 'fraiseql_repl_ddl_guard_drop', 'fraiseql_repl_ddl_guard_rewrite') "
                           "AND evtenabled <> 'D'")[0][0] == 3
    for t, strategy, cols in _rows(conn, "SELECT table_name, strategy, counter_cols FROM fraiseql_repl.table_meta ORDER BY 1"):
        st.replicated[t] = (strategy, list(cols or ()))
    st.pk_constraints = dict(_rows(conn, "SELECT m.table_name, c.conname::text FROM fraiseql_repl.table_meta m "
                                         "JOIN pg_catalog.pg_constraint c ON c.conrelid = to_regclass(m.table_name) "
                                         "AND c.contype = 'p'"))
    if st.ddl_objects:
        for n, checksum, at, by, done in _rows(conn, "SELECT name, checksum, applied_at, applied_by, completed_at "
                                                     "FROM fraiseql_repl.migrations ORDER BY name"):
            st.history[n] = HistoryRow(checksum, at, by, done)
        st.held = [tuple(r) for r in _rows(conn, "SELECT table_name, col, migration FROM fraiseql_repl.held ORDER BY 1, 2")]
    st.parked = {s: int(n) for s, n in _rows(conn, "SELECT sqlstate, count(*) FROM fraiseql_repl.parked GROUP BY 1 ORDER BY 1")}
    st.published = [r[0] for r in _rows(
        conn, "SELECT format('%%s.%%s', n.nspname, c.relname) FROM pg_catalog.pg_publication_rel pr "
              "JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid "
              "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = %s ORDER BY 1", (SCHEMA,))]
    return st


def catalog_of(states: Mapping[str, WriterState]) -> Catalog:
    """The union of what the writers replicate (a writer that lacks a table shows up in the plan)."""
    replicated: dict[str, str] = {}
    pks: dict[str, str] = {}
    counters: dict[str, list[str]] = {}
    for st in states.values():
        for t, (strategy, cols) in st.replicated.items():
            replicated.setdefault(t, strategy)
            if strategy == "counter":
                counters.setdefault(t, cols)
        for t, c in st.pk_constraints.items():
            pks.setdefault(t, c)
    return Catalog(replicated, pks, counters)


def history_problems(states: Mapping[str, WriterState], migration: Migration) -> list[str]:
    """Reasons to refuse before anything runs: this file changed since a writer ran it, or a writer
    missed (or did not finish) another migration. Empty when it is safe to go on."""
    problems = []
    for w, st in states.items():
        row = st.history.get(migration.name)
        if row is not None and row.checksum != migration.checksum:
            problems.append(f"{migration.name} was applied on {w} on {row.applied_at:%Y-%m-%d %H:%M} by {row.applied_by} with "
                            f"checksum {row.checksum[:12]}, and this file's is {migration.checksum[:12]}: an applied migration "
                            "must never change. Put the change in a new migration file")
    return problems + mesh_problems(states, exclude=migration.name)


def mesh_problems(states: Mapping[str, WriterState], exclude: str | None = None) -> list[str]:
    """Migrations some writer missed, did not finish, or ran from a different file."""
    problems = []
    names = sorted({n for st in states.values() for n in st.history} - {exclude})
    for n in names:
        have = sorted(w for w, st in states.items() if n in st.history)
        lack = sorted(w for w in states if w not in have)
        if lack:
            problems.append(f"{', '.join(lack)} missed migration {n} (applied on {', '.join(have)}): apply it first, with "
                            f"the same command and {n}; it runs only where it is missing")
            continue
        sums = {st.history[n].checksum for st in states.values()}
        if len(sums) > 1:
            problems.append(f"migration {n} was applied from different files: " + ", ".join(
                f"{w} {st.history[n].checksum[:12]}" for w, st in states.items()) + "; find out which one is right before "
                "going on (python -m ops verify compares the tables)")
        open_on = sorted(w for w, st in states.items() if st.history[n].completed_at is None)
        if open_on:
            problems.append(f"migration {n} did not finish on {', '.join(open_on)}: run schema apply with {n} again to "
                            "finish it first")
    return problems


@dataclass(frozen=True)
class Step:
    phase: str
    writer: str


def plan(status: Mapping[str, str | None], transactional: bool = True) -> list[Step]:
    """The order of the steps, given each writer's status of this migration (``None``: not run,
    ``"applied"``: its statements ran, ``"completed"``). Every writer has the additive changes
    before any writer is re-installed, and every writer is re-installed before any releases."""
    writers = list(status)
    if writers and all(s == "completed" for s in status.values()):
        return []
    missing = [w for w in writers if status[w] is None]
    steps = [Step("rehearse", w) for w in missing] if transactional else []
    steps += [Step("additive", w) for w in missing]
    steps += [Step(p, w) for p in ("install", "release", "retry") for w in writers]
    return steps


def _pg_error(e: psycopg.Error) -> str:
    d = e.diag
    text = d.message_primary or str(e)
    if d.message_detail:
        text += f" ({d.message_detail})"
    if d.message_hint:
        text += f". {d.message_hint}"
    return text


@dataclass
class Outcome:
    steps: list[Step] = field(default_factory=list)
    parked_after: dict[str, dict[str, int]] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)
    held: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    nothing_to_do: bool = False


class Applier:
    """Runs ``plan`` on autocommit connections (writer name -> psycopg connection)."""

    def __init__(self, conns: Mapping[str, Any], migration: Migration, analysis: Analysis, policy: ConflictPolicy,
                 emit: Emit, *, dry_run: bool = False, lock_timeout_s: float = 5.0, attempts: int = 5,
                 sleep: Callable[[float], None] = time.sleep, states: Mapping[str, WriterState] | None = None):
        self.conns = conns
        self.m = migration
        self.a = analysis
        self.policy = policy
        self.emit = emit
        self.dry_run = dry_run
        self.lock_timeout_ms = max(1, int(lock_timeout_s * 1000))
        self.attempts = attempts
        self.sleep = sleep
        self.states = dict(states) if states is not None else {w: read_writer(c, w) for w, c in conns.items()}

    # -- one transaction, retried when it waits too long for a lock ----------------------------------

    def _txn(self, writer: str, step: str, body: Callable[[Any], Any], *, commit: bool = True) -> Any:
        conn = self.conns[writer]
        result: list[Any] = []
        for attempt in range(1, self.attempts + 1):
            try:
                with conn.transaction():
                    conn.execute(f"SET LOCAL {GUC} = 'on'")
                    conn.execute(f"SET LOCAL lock_timeout = '{self.lock_timeout_ms}ms'")
                    result.append(body(conn))
                    if not commit:
                        raise psycopg.Rollback()
                return result[0] if result else None
            except (errors.LockNotAvailable, errors.DeadlockDetected) as e:
                if attempt == self.attempts:
                    raise ApplyFailed(f"{step} on {writer}: {_pg_error(e)} after {attempt} attempts; the application holds "
                                      "long transactions on the table: run the same command again when it is quieter") from None
                wait = min(0.5 * 2 ** (attempt - 1), 10.0)
                self.emit(step, "retry", f"{writer}: {_pg_error(e)}; retry {attempt}/{self.attempts - 1} in {wait:g} s",
                          writer=writer)
                result.clear()
                self.sleep(wait)
        raise AssertionError("unreachable")

    def _statements(self, conn: Any, writer: str, step: str) -> None:
        for s in self.m.statements:
            try:
                conn.execute(s.sql.encode())
            except (errors.LockNotAvailable, errors.DeadlockDetected):
                raise
            except psycopg.Error as e:
                raise ApplyRefused(f"{step} on {writer}: {self.m.name} line {s.line}, statement {s.index} ({s.brief()}) "
                                   f"failed: {_pg_error(e)}. Nothing was changed on {writer}; fix the migration "
                                   "(an applied migration must not change: if another writer already has it, write a "
                                   "new one)") from None

    # -- steps --------------------------------------------------------------------------------------------

    def _additive(self, writer: str, *, commit: bool) -> list[tuple[str, str]]:
        step = "additive" if commit else "rehearse"
        st = self.states[writer]

        def body(conn: Any) -> list[tuple[str, str]]:
            if not st.ddl_objects:  # a dry run on a writer bootstrapped before them; a real run prepared them
                for stmt in render_ddl_objects():
                    conn.execute(stmt.encode())
            self._statements(conn, writer, step)
            drift = _rows(conn, "SELECT table_name, kind, coalesce(col, ''), coalesce(detail, '') "
                                "FROM fraiseql_repl.shape_drift() WHERE NOT fraiseql_repl.settled_by_install(kind)")
            if drift:
                raise ApplyRefused(f"{step} on {writer}: {self.m.name} leaves replicated tables changed in a way peers "
                                   f"cannot merge: " + "; ".join(f"{t} {k} {c} {d}".strip() for t, k, c, d in drift))
            held = [(t, c) for t, c in _rows(conn, "SELECT * FROM fraiseql_repl.hold_new_columns(%s)", (self.m.name,))]
            for tp in self.a.install:
                try:
                    conn.execute("SELECT fraiseql_repl.install_new_table(%s::regclass, %s, %s::text[], %s)",
                                 (_qualified(tp.qualified), tp.strategy, list(tp.columns), self.m.name))
                except psycopg.Error as e:
                    raise ApplyRefused(f"{step} on {writer}: cannot replicate new table {tp.qualified}: {_pg_error(e)}") from None
                held.append((tp.qualified, ""))
            if self.a.install:
                conn.execute("SELECT fraiseql_repl.install_dispatcher()")
            conn.execute("INSERT INTO fraiseql_repl.migrations (name, checksum, statements) VALUES (%s, %s, %s) "
                         "ON CONFLICT (name) DO NOTHING", (self.m.name, self.m.checksum, len(self.m.statements)))
            return held

        if not self.a.transactional:
            return self._non_transactional(writer) if commit else []
        held = self._txn(writer, step, body, commit=commit)
        if commit:
            st.history[self.m.name] = HistoryRow(self.m.checksum, datetime.now(), "", None)
        return list(held or [])

    def _prepare(self, writer: str) -> None:
        """Writers bootstrapped before the history and the guard existed get them first (autocommit,
        outside the migration's transaction: it never locks the change log while holding a table)."""
        st = self.states[writer]
        if st.ddl_objects and st.guard:
            return
        for stmt in render_ddl_objects():
            self.conns[writer].execute(stmt.encode())
        fresh = read_writer(self.conns[writer], writer)
        st.ddl_objects, st.guard = fresh.ddl_objects, fresh.guard
        self.emit("prepare", "ok" if st.guard else "warn",
                  f"{writer}: migration history and hold-back installed; DDL guard "
                  + ("installed" if st.guard else "NOT installed (event triggers need a superuser: on RDS the master user)"),
                  writer=writer, guard=st.guard)

    def _non_transactional(self, writer: str) -> list[tuple[str, str]]:
        conn = self.conns[writer]
        conn.execute(f"SET {GUC} = 'on'")
        conn.execute(f"SET lock_timeout = '{self.lock_timeout_ms}ms'")
        try:
            self._statements(conn, writer, "additive")
        finally:
            conn.execute(f"RESET {GUC}")
            conn.execute("RESET lock_timeout")
        conn.execute("INSERT INTO fraiseql_repl.migrations (name, checksum, statements) VALUES (%s, %s, %s) "
                     "ON CONFLICT (name) DO NOTHING", (self.m.name, self.m.checksum, len(self.m.statements)))
        return []

    def _install_targets(self, writer: str) -> list[str]:
        conn = self.conns[writer]
        meta = {t: (s, list(c or ())) for t, s, c in _rows(conn, "SELECT table_name, strategy, counter_cols FROM fraiseql_repl.table_meta")}
        pending = {t for t, c in _rows(conn, "SELECT table_name, col FROM fraiseql_repl.held WHERE migration = %s",
                                       (self.m.name,)) if c != ""}
        wanted = set(meta) if self.a.reinstall_all else (set(self.a.reinstall) | pending)
        return sorted(t for t in wanted if t in meta)

    def _install(self, writer: str) -> list[str]:
        tables = self._install_targets(writer)
        conn = self.conns[writer]
        meta = {t: (s, list(c or ())) for t, s, c in _rows(conn, "SELECT table_name, strategy, counter_cols FROM fraiseql_repl.table_meta")}
        for t in tables:
            strategy, cols = meta[t]
            self._txn(writer, "install", partial(_install_table, table=t, strategy=strategy, cols=cols))
        self._txn(writer, "install", lambda c: c.execute("SELECT fraiseql_repl.install_dispatcher()"))
        return tables

    def _release(self, writer: str) -> int:
        def body(conn: Any) -> int:
            n = int(_rows(conn, "SELECT fraiseql_repl.release_held(%s)", (self.m.name,))[0][0])
            conn.execute("UPDATE fraiseql_repl.migrations SET completed_at = clock_timestamp() "
                         "WHERE name = %s AND completed_at IS NULL", (self.m.name,))
            return n
        return int(self._txn(writer, "release", body))

    def _retry(self, writer: str) -> tuple[int, int]:
        merged, still = _rows(self.conns[writer], "SELECT merged, still_parked FROM fraiseql_repl.retry_parked()")[0]
        return int(merged), int(still)

    def _publications(self) -> None:
        want = sorted(DATA_TABLES)
        stale = [w for w, st in self.states.items() if sorted(read_writer(self.conns[w], w).published) != want]
        if not stale:
            self.emit("publication", "ok", f"unchanged: only {', '.join(want)} are published, and a schema change "
                                           "travels inside them", published=want)
            return
        if self.dry_run:
            self.emit("publication", "would", f"re-render publication {SCHEMA} on {', '.join(stale)} and refresh every "
                                              "data subscription")
            return
        for w in stale:
            for stmt in render_publication(self.policy):
                self.conns[w].execute(stmt.encode())
        for conn in self.conns.values():
            for (sub,) in _rows(conn, "SELECT s.subname FROM pg_catalog.pg_subscription s JOIN pg_catalog.pg_database d "
                                      "ON d.oid = s.subdbid AND d.datname = current_database() "
                                      "WHERE %s = ANY (s.subpublications)", (SCHEMA,)):
                conn.execute(f"ALTER SUBSCRIPTION {_ident(sub)} REFRESH PUBLICATION WITH (copy_data = false)".encode())
        self.emit("publication", "ok", f"publication re-rendered on {', '.join(stale)}; data subscriptions refreshed")

    # -- the run ------------------------------------------------------------------------------------------

    def run(self) -> Outcome:
        out = Outcome()
        status = {w: st.status_of(self.m.name) for w, st in self.states.items()}
        out.steps = plan(status, self.a.transactional)
        if not out.steps:
            out.nothing_to_do = True
            return out
        missing = [w for w, s in status.items() if s is None]
        if not self.dry_run:
            for w in status:
                self._prepare(w)
        for w in missing:
            if not self.a.transactional:
                break
            self._additive(w, commit=False)
            self.emit("rehearse", "ok", f"{w}: {len(self.m.statements)} statements ran and were rolled back", writer=w)
        if self.dry_run:
            for s in out.steps:
                if s.phase != "rehearse":
                    self.emit(s.phase, "would", f"{s.writer}: {_WOULD[s.phase]}", writer=s.writer)
            self._publications()
            return out
        for w in missing:
            held = self._additive(w, commit=True)
            out.held[w] = held
            what = ", ".join(f"{t}.{c}" if c else f"{t} (new table)" for t, c in held) or "nothing to hold"
            self.emit("additive", "ok", f"{w}: {len(self.m.statements)} statements committed; held until every writer "
                                        f"merges them: {what}", writer=w, held=[list(h) for h in held])
        for w in status:
            if w not in missing:
                self.emit("additive", "skip", f"{w}: already has {self.m.name}", writer=w)
        for w in status:
            tables = self._install(w)
            self.emit("install", "ok", f"{w}: conflict objects re-rendered for {', '.join(tables) or 'no changed table'}; "
                                       "dispatcher regenerated", writer=w, tables=tables)
        for w in status:
            n = self._release(w)
            self.emit("release", "ok", f"{w}: {n} held column(s)/table(s) released; {self.m.name} completed here",
                      writer=w, released=n)
        for w in status:
            merged, still = self._retry(w)
            out.retried[w] = merged
            out.parked_after[w] = read_writer(self.conns[w], w).parked
            self.emit("retry", "ok" if not still else "warn",
                      f"{w}: {merged} parked change(s) merged, {still} still parked"
                      + (f" ({', '.join(f'{k}: {v}' for k, v in out.parked_after[w].items())})" if still else ""),
                      writer=w, merged=merged, still_parked=still)
        self._publications()
        return out


_WOULD = {
    "additive": "run the statements, hold the new columns and tables, record the history row (one transaction)",
    "install": "re-render the conflict objects of the changed tables and the dispatcher",
    "release": "release the held columns and tables; mark the migration completed",
    "retry": "retry parked changes",
}


def _install_table(c: Any, *, table: str, strategy: str, cols: list[str]) -> Any:
    """Install the replication triggers on one table (in the caller's transaction)."""
    return c.execute("SELECT fraiseql_repl.install_table(%s::regclass, %s, %s::text[])", (_qualified(table), strategy, cols))


def _qualified(table: str) -> str:
    schema, name = table.split(".", 1)
    return f"{_ident(schema)}.{_ident(name)}"

