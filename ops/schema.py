"""`python -m ops schema apply MIGRATION.sql` and `python -m ops schema status`: schema changes
across the phase B/C writers.

`apply` parses the migration with PostgreSQL's own grammar (`replication.ddl_rules`), refuses what
would break replication before anything runs, then applies it to every writer in the order of
`replication.migrate`: rehearse, additive changes everywhere (new columns held back), conflict
objects re-rendered everywhere, release, retry parked changes. The conflict policy comes from the
stack config (`--policy Pulumi.<stack>.yaml`, or a file holding only the `replication` block).

Connections as for `verify`: `--dsn REGION=CONNINFO` per writer (password from PGPASSWORD or
.pgpass, never the command line), or each writer's address from the stack outputs and its master
secret from its own region's Secrets Manager. The master user is needed: it owns the tables, and on
RDS it is the member of rds_superuser that may create the DDL guard's event triggers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from core.config import ReplicationConfig
from core.problems import pydantic_problems
from ops import log
from ops.aws import Runtime
from ops.errors import EXIT_FAILED, Refused, StepFailed, UsageError
from replication.ddl_rules import MigrationError, analyse, load_migration
from replication.migrate import (
    PHASES,
    Applier,
    ApplyFailed,
    ApplyRefused,
    WriterState,
    catalog_of,
    history_problems,
    mesh_problems,
    read_writer,
)
from replication.model import ConflictPolicy, TablePolicy

__all__ = ["SchemaOptions", "load_policy", "run_schema"]

STEP = "schema"


@dataclass(frozen=True)
class SchemaOptions:
    action: str                       # "apply" or "status"
    dsn: Mapping[str, str]
    migration: str | None = None
    policy: str | None = None
    dry_run: bool = False
    local_tables: tuple[str, ...] = ()
    lock_timeout_s: float = 5.0
    sslmode: str = "verify-full"


def load_policy(path: str) -> ConflictPolicy:
    """The conflict policy from a stack config file (`config: fraiseql:replication: ...`) or from a
    YAML/JSON file that holds the `replication` block itself."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read --policy {path}: {e.strerror or e}", step=STEP) from None
    except yaml.YAMLError as e:
        raise UsageError(f"--policy {path} is not YAML or JSON: {e}", step=STEP) from None
    block: Any = None
    where = ""  # the block's key in the file, for the keys the problems name
    if isinstance(data, dict):
        config: dict[str, Any] = data["config"] if isinstance(data.get("config"), dict) else data
        for key in ("fraiseql:replication", "replication"):
            if key in config:
                block, where = config[key], key
                break
        else:
            if set(data) <= {"default", "tables", "replicated", "lag_alarm_seconds"} and data:
                block = data
    if not isinstance(block, dict):
        raise UsageError(f"--policy {path} has no replication block: pass the stack config (Pulumi.<stack>.yaml, with "
                         "config: fraiseql:replication) or a file holding {default, tables, replicated}", step=STEP)
    try:
        cfg = ReplicationConfig.model_validate(block)
    except ValidationError as e:
        bad = "; ".join(f"{key}: {text}" for key, text in pydantic_problems(e.errors(), ReplicationConfig, prefix=where))
        raise UsageError(f"--policy {path}: the replication block is invalid: {bad}", step=STEP) from None
    try:
        return ConflictPolicy(default=cfg.default, replicated=tuple(cfg.replicated),
                              tables=tuple(TablePolicy(t.table, t.strategy, tuple(t.columns)) for t in cfg.tables))
    except ValueError as e:
        raise UsageError(f"--policy {path}: {e}", step=STEP) from None


def _connect(outputs: Any, rt: Runtime, opts: SchemaOptions) -> dict[str, Any]:
    import psycopg

    regions = list(outputs.regions)
    if opts.dsn:
        unknown = sorted(set(opts.dsn) - set(regions))
        missing = [r for r in regions if r not in opts.dsn]
        if unknown or missing:
            raise UsageError(f"--dsn must name every writer of the stack ({', '.join(regions)}): "
                             + "; ".join(x for x in (f"missing {', '.join(missing)}" if missing else "",
                                                     f"unknown {', '.join(unknown)}" if unknown else "") if x), step=STEP)
    conns: dict[str, Any] = {}
    try:
        for r in regions:
            try:
                if opts.dsn:
                    conns[r] = psycopg.connect(opts.dsn[r], autocommit=True, connect_timeout=10,
                                               application_name="fraiseql-schema")
                    continue
                secret_arn = (outputs.writerSecretArns or {}).get(r)
                host = (outputs.writerDbAddresses or {}).get(r)
                if not secret_arn or not host:
                    raise UsageError(f"the stack outputs name no writer address or secret for {r}; pass --dsn", step=STEP)
                secret = json.loads(rt.client("secretsmanager", r).get_secret_value(SecretId=secret_arn)["SecretString"])
                conns[r] = psycopg.connect(host=host, port=outputs.dbPort or 5432, dbname=outputs.dbName or "fraiseql",
                                           user=secret["username"], password=secret["password"], sslmode=opts.sslmode,
                                           autocommit=True, connect_timeout=10, application_name="fraiseql-schema")
            except psycopg.OperationalError as e:
                # libpq's message names host and port, never the password.
                raise StepFailed(f"cannot reach the writer in {r}: {str(e).strip()}. Every writer must be reachable: a "
                                 "migration goes to all of them or to none; re-run when it answers", step=STEP) from None
    except BaseException:
        for c in conns.values():
            c.close()
        raise
    return conns


class _Timeline:
    """The reporter's emit, also recording the run's steps for the closing timeline."""

    def __init__(self, rep: log.Reporter):
        self.rep = rep
        self.steps: list[tuple[str, str, str, float]] = []

    def __call__(self, step: str, status: str, detail: str, /, **data: Any) -> None:
        self.rep.emit(step, status, detail, **data)
        if step in (*PHASES, "prepare", "publication"):
            self.steps.append((step, str(data.get("writer", "")), status, self.rep.elapsed()))

    def close(self, dry_run: bool) -> None:
        self.rep.text("timeline:")
        for step, writer, status, at in self.steps:
            self.rep.text(f"  {at:8.2f} s  {step:<11} {writer:<16} {status}")
        self.rep.emit("timeline", log.WOULD if dry_run else log.DONE, f"{len(self.steps)} steps in {self.rep.elapsed():.2f} s",
                      steps=[{"step": s, "writer": w, "status": st, "elapsed_s": round(t, 3)} for s, w, st, t in self.steps])


def _states(conns: Mapping[str, Any]) -> dict[str, WriterState]:
    states = {w: read_writer(c, w) for w, c in conns.items()}
    bare = sorted(w for w, st in states.items() if not st.installed)
    if bare:
        raise Refused(f"{', '.join(bare)} has no replication objects (schema fraiseql_repl): bootstrap the mesh first "
                      "(pulumi up runs it), then apply migrations", step=STEP)
    return states


def _apply(conns: Mapping[str, Any], rep: log.Reporter, opts: SchemaOptions) -> int:
    assert opts.migration is not None and opts.policy is not None
    try:
        migration = load_migration(opts.migration)
    except MigrationError as e:
        raise UsageError(str(e), step=STEP) from None
    policy = load_policy(opts.policy)
    rep.text(f"schema apply {migration.name} to {', '.join(conns)}" + ("  [DRY RUN: nothing will be changed]" if opts.dry_run else ""))
    rep.emit("migration", log.INFO, f"{migration.name}: {len(migration.statements)} statements, sha256 {migration.checksum[:12]}",
             name=migration.name, checksum=migration.checksum, statements=len(migration.statements))
    states = _states(conns)
    for w, st in states.items():
        here = st.status_of(migration.name)
        rep.emit("history", log.INFO if st.guard else log.WARN,
                 f"{w}: {migration.name} {here or 'not applied'}; {len(st.history)} migrations recorded; DDL guard "
                 + ("on" if st.guard else "missing (installed by this run if the user may create event triggers)"),
                 writer=w, status=here, migrations=sorted(st.history), guard=st.guard)
    problems = history_problems(states, migration)
    if problems:
        for p in problems:
            rep.emit("history", log.REFUSED, p)
        raise Refused(problems[0] + (f" ({len(problems) - 1} more problems above)" if len(problems) > 1 else ""), step="history")
    if all(st.status_of(migration.name) == "completed" for st in states.values()):
        rep.emit("result", log.DONE, f"{migration.name} is already applied on every writer: nothing to do")
        return 0
    # The statements run only where the migration is missing: judge them against those writers.
    lacking = {w: st for w, st in states.items() if st.status_of(migration.name) is None}
    analysis = analyse(migration, catalog_of(lacking or states), policy, opts.local_tables)
    if not lacking:
        rep.emit("check", log.SKIP, f"{migration.name} already ran on every writer; finishing it (install, release, retry)")
        analysis.refusals.clear()
    if analysis.refusals:
        messages = [r.message(migration.name) for r in analysis.refusals]
        for msg in messages:
            rep.emit("check", log.REFUSED, msg)
        raise Refused(f"{len(messages)} unsafe statement(s), nothing was run: " + messages[0]
                      + (" (the others are listed above)" if len(messages) > 1 else ""), step="check")
    for note in analysis.notes:
        rep.emit("check", log.WARN, note)
    rep.emit("check", log.OK,
             f"every statement is safe on a mesh: new replicated tables {', '.join(f'{t.qualified} ({t.strategy})' for t in analysis.install) or 'none'}; "
             f"new columns {', '.join(f'{t}.{c}' for t, cs in analysis.new_columns.items() for c in cs) or 'none'}; "
             f"conflict objects re-rendered for {', '.join(sorted(analysis.reinstall)) or 'no table'}"
             + ("" if analysis.transactional else "; CONCURRENTLY: runs statement by statement, without a transaction"),
             install=[t.qualified for t in analysis.install], new_columns=analysis.new_columns,
             reinstall=sorted(analysis.reinstall))
    timeline = _Timeline(rep)
    applier = Applier(conns, migration, analysis, policy, timeline, dry_run=opts.dry_run,
                      lock_timeout_s=opts.lock_timeout_s, states=states)
    try:
        out = applier.run()
    except ApplyRefused as e:
        raise Refused(str(e), step="rehearse") from None
    except ApplyFailed as e:
        raise StepFailed(str(e), step="apply") from None
    if out.nothing_to_do:
        rep.emit("result", log.DONE, f"{migration.name} is already applied on every writer: nothing to do")
        return 0
    timeline.close(opts.dry_run)
    if opts.dry_run:
        rep.emit("result", log.DONE, f"dry run: {migration.name} rehearsed on every writer that lacks it and rolled back; "
                 "nothing was changed")
        return 0
    stuck = {w: {k: v for k, v in p.items() if k in ("FQ001", "FQ002")} for w, p in out.parked_after.items()}
    stuck = {w: p for w, p in stuck.items() if p}
    if stuck:
        rep.emit("result", log.FAILED, f"{migration.name} applied, but changes for columns or tables a writer lacks are "
                 f"still parked: {stuck}; run `python -m ops schema status` and apply the migrations it lists",
                 exit_code=EXIT_FAILED, parked=stuck)
        return EXIT_FAILED
    rep.emit("result", log.DONE, f"{migration.name} applied on {len(conns)} writers; its columns and tables replicate from "
             "now on", parked_after=out.parked_after, retried=out.retried)
    return 0


def _status(conns: Mapping[str, Any], rep: log.Reporter) -> int:
    states = _states(conns)
    for w, st in states.items():
        last = max(st.history, default=None)
        open_ = sorted(n for n, r in st.history.items() if r.completed_at is None)
        rep.emit("history", log.OK if st.guard and not open_ else log.WARN,
                 f"{w}: {len(st.history)} migrations, last {last or '-'}"
                 + (f"; not finished: {', '.join(open_)}" if open_ else "")
                 + (f"; held: {', '.join(f'{t}.{c}' if c else t for t, c, _ in st.held)}" if st.held else "")
                 + f"; DDL guard {'on' if st.guard else 'MISSING'}"
                 + (f"; parked: {', '.join(f'{k} {v}' for k, v in st.parked.items())}" if st.parked else ""),
                 writer=w, migrations={n: {"checksum": r.checksum, "applied_at": r.applied_at, "completed_at": r.completed_at}
                                       for n, r in st.history.items()},
                 guard=st.guard, held=[list(h) for h in st.held], parked=st.parked)
    problems = mesh_problems(states)
    for p in problems:
        rep.emit("history", log.WARN, p)
    if problems:
        rep.emit("result", log.FAILED, f"{len(problems)} writer(s) out of step: " + problems[0], exit_code=EXIT_FAILED,
                 problems=problems)
        return EXIT_FAILED
    rep.emit("result", log.DONE, f"every writer has the same {len(next(iter(states.values())).history)} migrations")
    return 0


def run_schema(outputs: Any, rt: Runtime, opts: SchemaOptions) -> int:
    rep = rt.reporter
    assert rep is not None
    if opts.action == "apply":
        # Fail on bad input before connecting anywhere.
        if opts.migration is None or opts.policy is None:
            raise UsageError("schema apply needs MIGRATION.sql and --policy", step=STEP)
        try:
            load_migration(opts.migration)
        except MigrationError as e:
            raise UsageError(str(e), step=STEP) from None
        load_policy(opts.policy)
    import psycopg

    conns = _connect(outputs, rt, opts)
    try:
        return _apply(conns, rep, opts) if opts.action == "apply" else _status(conns, rep)
    except psycopg.Error as e:
        raise StepFailed(f"{type(e).__name__}: {str(e).strip()}. Re-run the same command: every step resumes from the "
                         "writers' history", step=STEP) from None
    finally:
        for c in conns.values():
            c.close()
