"""`python -m ops COMMAND --outputs FILE|- [options]`: the operations runbooks, and
`python -m ops preflight --stack S`, the read-only check of an account before the first `pulumi up`.

Exit codes: 0 done (or nothing to do), 1 failed (re-run resumes), 2 usage or bad stack outputs,
3 refused for safety (nothing changed), 130 interrupted (re-run resumes). See docs/runbooks.md.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, TypeAlias

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
)

from ops import log
from ops.adopt import AdoptOptions, run_adopt
from ops.arc import OFF, ON, RegionChangeOptions, set_regions
from ops.aws import Runtime
from ops.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_REFUSED, EXIT_USAGE, EXIT_WAITING, OpsError, UsageError
from ops.failover import FailoverOptions, run_failover
from ops.outputs import load_outputs, require_phase
from ops.preflight import PreflightOptions, run_preflight
from ops.purge import MAX_TAGS_PER_REQUEST, PurgeOptions, parse_tags, run_purge
from ops.retry import error_code, is_connection_error
from ops.schema import SchemaOptions, run_schema
from ops.status import run_status
from ops.transition import TransitionOptions, run_transition
from ops.verify import VerifyOptions, run_verify

#: AWS refused who we are, not what we asked: a setup problem (exit 2), not a failed step.
CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError, ProfileNotFound, SSOError, TokenRetrievalError, NoRegionError)
CREDENTIAL_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException",
                              "InvalidSignatureException", "SignatureDoesNotMatch", "AuthFailure"})
CREDENTIALS_FIX = ("set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or run `aws sso login`, then run the "
                   "same command again; nothing was changed")

EPILOG = ("exit codes: 0 done, 1 failed (re-run resumes), 2 usage/bad outputs, 3 refused for safety, "
          "4 waiting for an operator step (re-run continues), 130 interrupted")


def parse_dsn(items: Sequence[str], step: str) -> dict[str, str]:
    """`--dsn REGION=CONNINFO` (repeatable), as `status`, `verify`, `schema` and `transition` take it."""
    out = {}
    for item in items:
        region, sep, conninfo = item.partition("=")
        if not sep or not region or not conninfo:
            raise UsageError(f"--dsn {item.split('=')[0]}=...: write it as REGION=CONNINFO, e.g. "
                             "us-east-1='host=localhost port=15432 dbname=fraiseql user=fraiseql_admin'", step=step)
        if "password" in conninfo.lower():
            raise UsageError("--dsn must not carry a password (it would land in shell history and process lists); "
                             "use PGPASSWORD or a .pgpass file", step=step)
        out[region] = conninfo
    return out


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


@dataclass(frozen=True)
class _Parents:
    """The option sets several commands share (argparse parents)."""

    common: argparse.ArgumentParser  # --outputs, --json: every command that reads stack outputs
    mutating: argparse.ArgumentParser  # --dry-run: every command that may change something


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--outputs", required=True, metavar="FILE",
                        help="stack outputs: a file from `pulumi stack output --json --show-secrets`, or - for stdin")
    common.add_argument("--json", action="store_true", help="one JSON object per line: step, status, elapsed_s, detail[, data]")
    mutating = argparse.ArgumentParser(add_help=False)
    mutating.add_argument("--dry-run", action="store_true", help="print exactly what would be done; change nothing")
    parents = _Parents(common=common, mutating=mutating)

    parser = argparse.ArgumentParser(prog="python -m ops", description="FraiseQL operations runbooks.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in _COMMANDS:
        add_command(sub, parents)
    return parser


def _add_preflight(sub: Subparsers, parents: _Parents) -> None:
    p = sub.add_parser("preflight", help="before the first `pulumi up`: what the account, DNS and Cloudflare zone must have "
                                         "(read only)", epilog=EPILOG)
    p.add_argument("--stack", required=True, metavar="S", help="the stack: reads Pulumi.<S>.yaml from the current folder")
    p.add_argument("--config-file", metavar="FILE", help="read this stack file instead of Pulumi.<S>.yaml")
    p.add_argument("--json", action="store_true", help="one JSON object per line: step, status, elapsed_s, detail[, data]")


def _add_status(sub: Subparsers, parents: _Parents) -> None:
    p = sub.add_parser("status", parents=[parents.common], help="lag vs RPO, health checks, writer, routing controls, alarms",
                       epilog=EPILOG)
    p.add_argument("--lag-lookback", type=_positive, default=300.0, metavar="S", help="ReplicaLag window in seconds (default 300)")
    p.add_argument("--dsn", action="append", default=[], metavar="REGION=CONNINFO",
                   help="phase B/C: read that writer's replication slots (repeatable; no password); default: its SlotsLost metric")


def _add_failover(sub: Subparsers, parents: _Parents) -> None:
    p = sub.add_parser("failover", parents=[parents.common, parents.mutating],
                       help="phase A: fence the primary, promote the standby, move the writer", epilog=EPILOG)
    p.add_argument("--force", action="store_true", help="proceed although a preflight check fails (and past a failed fence)")
    p.add_argument("--promote-timeout", type=_positive, default=1200.0, metavar="S", help="give up waiting for promotion after S seconds (default 1200)")
    p.add_argument("--lag-lookback", type=_positive, default=300.0, metavar="S", help="ReplicaLag window in seconds (default 300)")
    p.add_argument("--dns-grace", type=float, default=None, metavar="S",
                   help="how long to wait for a fenced primary's health check to fail before inverting it (default 2 × interval × threshold)")
    p.add_argument("--verify-url", metavar="URL", help="POST a GraphQL mutation probe to this URL in the verify step (optional)")


def _add_region_moves(sub: Subparsers, parents: _Parents) -> None:
    for name, help_text in (("region-out", "phase B/C: set a region's routing control Off"), ("region-in", "phase B/C: set a region's routing control On")):
        p = sub.add_parser(name, parents=[parents.common, parents.mutating], help=help_text, epilog=EPILOG)
        p.add_argument("regions", nargs="+", metavar="REGION")
        p.add_argument("--override-safety", action="append", default=[], metavar="RULE_ARN",
                       help="break glass: send SafetyRulesToOverride with this ARC safety rule (repeatable)")
        if name == "region-out":
            p.add_argument("--force", action="store_true", help="allow leaving fewer than `quorum` regions On")


def _add_purge(sub: Subparsers, parents: _Parents) -> None:
    p = sub.add_parser("purge", parents=[parents.common, parents.mutating], help="phase C: purge Cloudflare's cache by tag or everything",
                       epilog=EPILOG)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--tags", action="append", metavar="T1,T2", help="cache tags, comma-separated (repeatable)")
    what.add_argument("--everything", action="store_true", help="purge the whole zone (requires --yes)")
    p.add_argument("--yes", action="store_true", help="confirm --everything")
    p.add_argument("--batch-size", type=int, default=MAX_TAGS_PER_REQUEST, metavar="N",
                   help=f"tags per request, at most {MAX_TAGS_PER_REQUEST} (Cloudflare's limit)")


def _add_verify(sub: Subparsers, parents: _Parents) -> None:
    p = sub.add_parser("verify", parents=[parents.common, parents.mutating],
                       help="phase B/C: compare every replicated table across writers; --repair rewrites what differs",
                       epilog=EPILOG)
    p.add_argument("--repair", action="store_true", help="send the policy's winner of every diverged row to every writer")
    p.add_argument("--dsn", action="append", default=[], metavar="REGION=CONNINFO",
                   help="how to reach one writer (repeat for each; no password: use PGPASSWORD or .pgpass); "
                        "default: the outputs' writer addresses and each region's master secret")
    p.add_argument("--table", action="append", default=[], metavar="SCHEMA.TABLE", help="only these tables (repeatable)")
    p.add_argument("--buckets", type=int, default=1024, metavar="N", help="key buckets per table (default 1024)")
    p.add_argument("--in-flight-margin", type=float, default=30.0, metavar="S",
                   help="rows changed in the last S seconds (plus twice the replication lag) count as in flight (default 30)")
    p.add_argument("--sslmode", default="verify-full", help="libpq sslmode without --dsn (default verify-full)")


def _add_schema(sub: Subparsers, parents: _Parents) -> None:
    p = sub.add_parser("schema", help="phase B/C: apply a migration to every writer in a safe order; migration history",
                       epilog=EPILOG)
    actions = p.add_subparsers(dest="schema_action", required=True, metavar="ACTION")
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--dsn", action="append", default=[], metavar="REGION=CONNINFO",
                            help="how to reach one writer as the master user (repeat for each; no password: use PGPASSWORD "
                                 "or .pgpass); default: the outputs' writer addresses and each region's master secret")
    connection.add_argument("--sslmode", default="verify-full", help="libpq sslmode without --dsn (default verify-full)")
    a = actions.add_parser("apply", parents=[parents.common, parents.mutating, connection], epilog=EPILOG,
                           help="refuse unsafe DDL, then: additive changes everywhere, conflict objects re-rendered, release, "
                                "retry parked changes")
    a.add_argument("migration", metavar="MIGRATION.sql", help="the migration file; its name is its key in the history")
    a.add_argument("--policy", required=True, metavar="FILE",
                   help="the conflict policy: the stack config (Pulumi.<stack>.yaml, fraiseql:replication) or a YAML/JSON "
                        "file with the replication block")
    a.add_argument("--local-table", action="append", default=[], metavar="SCHEMA.TABLE",
                   help="a table the migration creates that stays on each writer alone, on purpose (repeatable)")
    a.add_argument("--lock-timeout", type=_positive, default=5.0, metavar="S",
                   help="give up waiting for a table lock after S seconds, then retry (default 5)")
    actions.add_parser("status", parents=[parents.common, connection], epilog=EPILOG,
                       help="each writer's migration history, held columns, parked changes, DDL guard; missed migrations")


def _add_transition(sub: Subparsers, parents: _Parents) -> None:
    p = sub.add_parser("transition", help="phase B/C: copies become writers (A -> B, grow), a lost writer rejoins, "
                                          "writers leave; resumable", epilog=EPILOG)
    moves = p.add_subparsers(dest="transition_action", required=True, metavar="ACTION")
    moving = argparse.ArgumentParser(add_help=False)
    moving.add_argument("--policy", required=True, metavar="FILE",
                        help="the conflict policy: the stack config (Pulumi.<stack>.yaml) or a file with the replication block")
    moving.add_argument("--state", default="fraiseql-transition.json", metavar="FILE",
                        help="progress, for resuming (default ./fraiseql-transition.json; removed when done)")
    moving.add_argument("--timeout", type=_positive, default=1800.0, metavar="S",
                        help="give up one wait (a promotion, a catch-up, agents adopting a membership) after S seconds")
    moving.add_argument("--settle", type=float, default=90.0, metavar="S",
                        help="how long every agent must keep reporting a new membership before the next step (default 90)")
    moving.add_argument("--dsn", action="append", default=[], metavar="REGION=CONNINFO",
                        help="how to reach one writer as the master user (no password); default: outputs and master secrets")
    moving.add_argument("--sslmode", default="verify-full", help="libpq sslmode without --dsn (default verify-full)")
    both = [parents.common, parents.mutating, moving]
    j = moves.add_parser("join", parents=both, epilog=EPILOG,
                         help="the seeding regions (seed_from) become writers: phase A -> B, or growing the mesh")
    j.add_argument("regions", nargs="*", metavar="REGION", help="default: every seeding region")
    j.add_argument("--from", dest="source", metavar="SRC", help="the writer they copy (default: their seed_from)")
    r = moves.add_parser("replace", parents=both, epilog=EPILOG,
                         help="a writer lost with its slots, rebuilt by Pulumi as a copy of SRC, rejoins")
    r.add_argument("regions", nargs=1, metavar="REGION")
    r.add_argument("--from", dest="source", required=True, metavar="SRC")
    s = moves.add_parser("shrink", parents=both, epilog=EPILOG,
                         help="writers leave the mesh; their last changes reach the others first")
    s.add_argument("regions", nargs="+", metavar="REGION")


def _adopt_options() -> argparse.ArgumentParser:
    """What every `adopt` action takes: the source database, the new primary, the progress file."""
    adopting = argparse.ArgumentParser(add_help=False)
    adopting.add_argument("--source", required=True, metavar="CONNINFO",
                          help="the existing database as libpq conninfo, no password (e.g. 'host=old.xxxx.rds.amazonaws.com "
                               "dbname=fraiseql user=fraiseql_admin sslmode=require'); the new primary connects to it too")
    adopting.add_argument("--source-secret", metavar="ARN",
                          help="Secrets Manager secret with its username and password (an RDS master secret); without it "
                               "the libpq environment (PGPASSWORD, .pgpass) and a subscription without password")
    adopting.add_argument("--target-dsn", metavar="CONNINFO",
                          help="the new primary (e.g. through a bastion), no password; default: the outputs and its master secret")
    adopting.add_argument("--sslmode", default="verify-full", help="libpq sslmode to the new primary without --target-dsn")
    adopting.add_argument("--state", default="fraiseql-adopt.json", metavar="FILE",
                          help="progress, for resuming (default ./fraiseql-adopt.json; removed when done)")
    adopting.add_argument("--timeout", type=_positive, default=3600.0, metavar="S",
                          help="give up one wait (the copy, the catch-up) after S seconds; a re-run keeps waiting")
    adopting.add_argument("--pg-bin", metavar="DIR", help="where pg_dump and psql are (default: PATH)")
    adopting.add_argument("--app-role", default="fraiseql_app", help="the application's role on the new primary")
    return adopting


def _add_adopt(sub: Subparsers, parents: _Parents) -> None:
    p = sub.add_parser("adopt", help="phase A: move the database you run today into the stack's new primary "
                                     "(logical replication, then a cutover with a write pause of seconds); resumable",
                       epilog=EPILOG)
    steps = p.add_subparsers(dest="adopt_action", required=True, metavar="ACTION")
    adopting = _adopt_options()
    changing = [parents.common, parents.mutating, adopting]
    steps.add_parser("sync", parents=changing, epilog=EPILOG,
                     help="preflight, copy the schema, subscribe the new primary to the source, wait until it follows")
    c = steps.add_parser("cutover", parents=changing, epilog=EPILOG,
                         help="fence the source, drain, sequences, ready (the pause ends), verify, detach")
    c.add_argument("--max-lag", type=_positive, default=5.0, metavar="S",
                   help="refuse to start while a write takes longer than S seconds to reach the new primary (default 5)")
    c.add_argument("--max-pause", type=_positive, default=60.0, metavar="S",
                   help="release the fence and fail if the new primary is not ready S seconds after it (default 60)")
    c.add_argument("--verify-first", action="store_true",
                   help="compare every table before `ready` (a longer pause) instead of against a snapshot after it")
    steps.add_parser("status", parents=[parents.common, adopting], epilog=EPILOG, help="both sides and the subscription (read only)")
    a = steps.add_parser("abort", parents=changing, epilog=EPILOG,
                         help="remove what sync created and release the fence (refused after ready without --force)")
    a.add_argument("--force", action="store_true", help="abort although the cutover reached ready")


#: The subcommands, in the order `python -m ops --help` lists them.
_COMMANDS: tuple[Callable[[Subparsers, _Parents], None], ...] = (
    _add_preflight, _add_status, _add_failover, _add_region_moves, _add_purge, _add_verify, _add_schema,
    _add_transition, _add_adopt,
)


def _dispatch(args: argparse.Namespace, rt: Runtime) -> int:
    cmd = args.command
    if cmd == "preflight":  # before the first `up`: there are no stack outputs yet
        rt.start(args.json)
        return run_preflight(rt, PreflightOptions(stack=args.stack, config_file=args.config_file))
    outputs = load_outputs(args.outputs, rt.stdin)
    if cmd == "status":
        rt.start(args.json, outputs.slo.rtoSeconds)
        return run_status(outputs, rt, args.lag_lookback, parse_dsn(args.dsn, "status"))
    if cmd == "failover":
        require_phase(outputs, cmd, ("a",))
        rt.start(args.json, outputs.slo.rtoSeconds)
        opts = FailoverOptions(force=args.force, dry_run=args.dry_run, promote_timeout_s=args.promote_timeout,
                               lag_lookback_s=args.lag_lookback, dns_grace_s=args.dns_grace, verify_url=args.verify_url)
        return run_failover(outputs, rt, opts)  # type: ignore[arg-type]
    if cmd in ("region-out", "region-in"):
        require_phase(outputs, cmd, ("b", "c"))
        rt.start(args.json, outputs.slo.rtoSeconds)
        opts_r = RegionChangeOptions(dry_run=args.dry_run, force=getattr(args, "force", False), override_safety=tuple(args.override_safety))
        return set_regions(outputs, rt, args.regions, OFF if cmd == "region-out" else ON, opts_r)  # type: ignore[arg-type]
    if cmd == "purge":
        require_phase(outputs, cmd, ("c",))
        rt.start(args.json)
        tags = parse_tags(args.tags or [])
        if args.tags is not None and not tags:
            raise UsageError("--tags named no tag", step="purge")
        opts_p = PurgeOptions(tags=tags, everything=args.everything, yes=args.yes, batch_size=args.batch_size, dry_run=args.dry_run)
        return run_purge(outputs, rt, opts_p)  # type: ignore[arg-type]
    if cmd == "verify":
        require_phase(outputs, cmd, ("b", "c"))
        rt.start(args.json)
        opts_v = VerifyOptions(dsn=parse_dsn(args.dsn, "verify"), repair=args.repair, dry_run=args.dry_run, buckets=args.buckets,
                               margin_s=args.in_flight_margin, tables=tuple(args.table), sslmode=args.sslmode)
        return run_verify(outputs, rt, opts_v)
    if cmd == "schema":
        require_phase(outputs, cmd, ("b", "c"))
        rt.start(args.json)
        action = args.schema_action
        opts_s = SchemaOptions(action=action, dsn=parse_dsn(args.dsn, "schema"), sslmode=args.sslmode,
                               migration=getattr(args, "migration", None), policy=getattr(args, "policy", None),
                               dry_run=getattr(args, "dry_run", False), local_tables=tuple(getattr(args, "local_table", ())),
                               lock_timeout_s=getattr(args, "lock_timeout", 5.0))
        return run_schema(outputs, rt, opts_s)
    if cmd == "transition":
        require_phase(outputs, cmd, ("b", "c"))
        rt.start(args.json)
        opts_t = TransitionOptions(action=args.transition_action, regions=tuple(args.regions),
                                   source=getattr(args, "source", None), policy=args.policy,
                                   dsn=parse_dsn(args.dsn, "transition"), state_path=args.state, dry_run=args.dry_run,
                                   timeout_s=args.timeout, settle_s=args.settle, sslmode=args.sslmode)
        return run_transition(outputs, rt, opts_t)
    if cmd == "adopt":
        require_phase(outputs, cmd, ("a",))
        rt.start(args.json)
        opts_a = AdoptOptions(action=args.adopt_action, source=args.source, source_secret=args.source_secret,
                              target_dsn=args.target_dsn, sslmode=args.sslmode, state_path=args.state,
                              dry_run=getattr(args, "dry_run", False), timeout_s=args.timeout,
                              max_lag_s=getattr(args, "max_lag", 5.0), max_pause_s=getattr(args, "max_pause", 60.0),
                              verify_first=getattr(args, "verify_first", False), force=getattr(args, "force", False),
                              pg_bin=args.pg_bin, app_role=args.app_role)
        return run_adopt(outputs, rt, opts_a)
    raise UsageError(f"unknown command {cmd}")


def changes_things(args: argparse.Namespace) -> bool:
    """Whether this run may change anything (only then is there something to resume)."""
    if getattr(args, "dry_run", False) or args.command in ("preflight", "status"):
        return False
    if args.command == "verify":
        return bool(args.repair)
    if args.command == "schema":
        return args.schema_action == "apply"
    if args.command == "adopt":
        return args.adopt_action != "status"
    return True


def _again(args: argparse.Namespace) -> str:
    return ("re-run the same command to resume from the detected state" if changes_things(args)
            else "nothing was changed; run it again")


def main(argv: Optional[Sequence[str]] = None, rt: Optional[Runtime] = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on bad usage
    rt = rt or Runtime()
    try:
        return _dispatch(args, rt)
    except OpsError as e:
        status = {EXIT_REFUSED: log.REFUSED, EXIT_WAITING: log.WAITING}.get(e.exit_code, log.FAILED)
        return _result(rt, args, status, str(e), e.exit_code, step=e.step)
    except CREDENTIAL_ERRORS as e:
        return _result(rt, args, log.FAILED, f"no usable AWS credentials ({type(e).__name__}: {e}): {CREDENTIALS_FIX}",
                       EXIT_USAGE, error=type(e).__name__)
    except ClientError as e:
        op = getattr(e, "operation_name", "?")
        code = error_code(e)
        said = f"{op} failed: {code}: {e.response.get('Error', {}).get('Message', '')}"
        if code in CREDENTIAL_CODES:
            return _result(rt, args, log.FAILED, f"{said}; the AWS credentials were refused: {CREDENTIALS_FIX}", EXIT_USAGE,
                           operation=op, error=code)
        return _result(rt, args, log.FAILED, f"{said}. {_again(args).capitalize()}", EXIT_FAILED, operation=op, error=code)
    except BotoCoreError as e:
        where = " (AWS cannot be reached: check the network, proxy and region)" if is_connection_error(e) else ""
        return _result(rt, args, log.FAILED, f"{type(e).__name__}: {e}{where}. {_again(args).capitalize()}", EXIT_FAILED)
    except KeyboardInterrupt:
        return _result(rt, args, log.FAILED, f"interrupted: {_again(args)}", EXIT_INTERRUPTED)


def _result(rt: Runtime, args: argparse.Namespace, status: str, message: str, code: int, **data: object) -> int:
    """The closing record of a run that did not finish: why, and the exit code."""
    reporter = rt.reporter or rt.start(args.json)
    reporter.emit("result", status, message, exit_code=code, **data)
    return code

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
