"""`python -m ops verify [--repair] [--dry-run]`: are the writers' tables the same? Repair what is not.

Connections: `--dsn REGION=CONNINFO` for every writer (for example through a bastion's port
forwards; the password comes from the environment or a .pgpass file, never from the command line),
or, by default, each writer's address from the stack outputs and its credentials from its own
region's Secrets Manager. Hashes are computed inside PostgreSQL (see `replication.verify`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ops import log
from ops.aws import Runtime
from ops.errors import EXIT_FAILED, UsageError
from replication.verify import VerifyReport, repair, verify


@dataclass(frozen=True)
class VerifyOptions:
    dsn: Mapping[str, str]
    repair: bool = False
    dry_run: bool = False
    buckets: int = 1024
    margin_s: float = 30.0
    settle_s: float = 60.0
    tables: tuple[str, ...] = ()
    sslmode: str = "verify-full"


def _connect_all(outputs: Any, rt: Runtime, opts: VerifyOptions) -> dict[str, Any]:
    import psycopg

    regions = list(outputs.regions)
    missing = [r for r in regions if r not in opts.dsn] if opts.dsn else []
    if opts.dsn and missing:
        raise UsageError(f"--dsn has no entry for {', '.join(missing)}; give one per writer", step="verify")
    conns = {}
    for r in regions:
        if opts.dsn:
            conns[r] = psycopg.connect(opts.dsn[r], autocommit=True, connect_timeout=10)
            continue
        secret_arn = (outputs.writerSecretArns or {}).get(r)
        host = (outputs.writerDbAddresses or {}).get(r)
        if not secret_arn or not host:
            raise UsageError(f"the stack outputs name no writer address or secret for {r}; pass --dsn", step="verify")
        secret = json.loads(rt.client("secretsmanager", r).get_secret_value(SecretId=secret_arn)["SecretString"])
        conns[r] = psycopg.connect(host=host, port=outputs.dbPort or 5432, dbname=outputs.dbName or "fraiseql",
                                   user=secret["username"], password=secret["password"], sslmode=opts.sslmode,
                                   autocommit=True, connect_timeout=10)
    return conns


def run_verify(outputs: Any, rt: Runtime, opts: VerifyOptions) -> int:
    rep = rt.reporter
    assert rep is not None
    conns = _connect_all(outputs, rt, opts)
    try:
        report = verify(conns, buckets=opts.buckets, margin_s=opts.margin_s, tables=opts.tables or None)
        _report(rep, report, "verify")
        if report.orphans:
            # Not something a repair can choose a winner for: the foreign keys were bypassed.
            rep.emit("result", log.FAILED, f"{report.orphaned_rows} rows reference a parent that is not there: "
                     + "; ".join(f"{w}: " + ", ".join(f"{k} {v}" for k, v in per.items())
                                 for w, per in sorted(report.orphans.items())),
                     exit_code=EXIT_FAILED, orphaned_rows=report.orphaned_rows)
            return EXIT_FAILED
        if not report.divergences:
            rep.emit("result", log.DONE, f"{sum(report.tables.values())} rows in {len(report.tables)} tables are the "
                     f"same on {len(conns)} writers ({report.in_flight} in flight)", diverged_rows=0)
            return 0
        if not opts.repair:
            rep.emit("result", log.FAILED, f"{report.diverged_rows} diverged rows; re-run with --repair "
                     "(--dry-run first to see what it would do)", exit_code=EXIT_FAILED,
                     diverged_rows=report.diverged_rows)
            return EXIT_FAILED
        actions = repair(conns, report, dry_run=opts.dry_run,
                         log=lambda a: rep.emit("repair", log.WOULD if opts.dry_run else log.OK,
                                                f"{a['table']} {json.dumps(a['pk'])}: on {a['on']}, {a['do']}"))
        if opts.dry_run:
            rep.emit("result", log.DONE, f"dry run: {len(actions)} repairs would be sent", repairs=len(actions))
            return 0
        deadline = rt.clock() + opts.settle_s
        while True:  # the repairs travel like any change; wait for them
            rt.sleep(1.0)
            again = verify(conns, buckets=opts.buckets, margin_s=0.0, tables=opts.tables or None)
            if not again.divergences or rt.clock() > deadline:
                break
        _report(rep, again, "re-verify")
        if again.divergences:
            rep.emit("result", log.FAILED, f"{again.diverged_rows} rows still differ after the repair; re-run",
                     exit_code=EXIT_FAILED, diverged_rows=again.diverged_rows)
            return EXIT_FAILED
        rep.emit("result", log.DONE, f"repaired {report.diverged_rows} rows; a second verify is clean",
                 repaired=report.diverged_rows, diverged_rows=0)
        return 0
    finally:
        for c in conns.values():
            c.close()


def _report(rep: Any, report: VerifyReport, step: str) -> None:
    for table, rows in report.tables.items():
        n = sum(1 for d in report.divergences if d.table == table)
        rep.emit(step, log.WARN if n else log.OK,
                 f"{table}: {rows} rows, {report.buckets_differing.get(table, 0)} buckets differ, {n} diverged keys",
                 table=table, diverged=[d.summary() for d in report.divergences if d.table == table])

