"""`python -m ops transition join|replace|shrink`: move the writers of a live stack.

The data steps of a phase change that Pulumi cannot order (see README, "Moving between phases"):

- `join [REGION ...] [--from SRC]`: regions that `pulumi up` created as read replicas (`seed_from`)
  become writers of the mesh. Phase A -> B is a join: the primary is the one member, its standby and
  the new regions join it.
- `replace REGION --from SRC`: a writer lost with its slots, rebuilt by Pulumi as a copy of SRC, joins
  again.
- `shrink REGION ...`: writers leave; their last changes reach the others first.

The plan comes from `replication.lifecycle` (checked by `check_plan` before anything runs) and is the
one the lifecycle drills run on local servers. Here the backend is RDS and the stack's writers:
promotion is `PromoteReadReplica`; the fence agents are the stack's Lambda functions, so a membership
change is a `pulumi up` the operator runs. At such a step the runbook prints the exact config
commands and exits 4; run it again after the `pulumi up` and it continues: it checks that every fence
function has the new configuration and that every agent reports it. Progress is kept in `--state`
(default `fraiseql-transition.json`): a re-run after a failure or an interruption resumes at the step
that did not finish (every step can be repeated).

Connections as for `verify`: `--dsn REGION=CONNINFO` per writer, or each writer's address from the
outputs and its master secret (a copy not yet converged by Pulumi has its source's credentials).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from ops import log
from ops.aws import Runtime, describe_db
from ops.errors import EXIT_WAITING, OpsError, Refused, StepFailed, UsageError
from ops.schema import load_policy
from replication.lifecycle import PlanError, Runner, Step, check_plan, plan_join, plan_replace, plan_shrink
from replication.model import ConflictPolicy, Node
from replication.roles import REPL_ROLE, secret_options
from replication.sql import default_conninfo

__all__ = ["OperatorStep", "TransitionOptions", "run_transition"]

STEP = "transition"


class OperatorStep(OpsError):
    """The next step is a `pulumi up` the operator runs; the message holds the commands."""

    exit_code = EXIT_WAITING


@dataclass(frozen=True)
class TransitionOptions:
    action: str                               # join | replace | shrink
    regions: tuple[str, ...] = ()
    source: Optional[str] = None
    policy: str = ""
    dsn: Mapping[str, str] = field(default_factory=dict)
    state_path: str = "fraiseql-transition.json"
    dry_run: bool = False
    timeout_s: float = 1800.0
    settle_s: float = 90.0
    sslmode: str = "verify-full"
    peer_sslmode: str = "require"


# -- the plan ------------------------------------------------------------------------------------


def _plan(outputs: Any, opts: TransitionOptions, members: Sequence[str]) -> tuple[list[Step], list[str]]:
    """The steps, and which regions run agents when the plan starts."""
    seeding: dict[str, str] = dict(outputs.seedingRegions or {})
    order = list(outputs.regions)
    try:
        if opts.action == "join":
            joining = list(opts.regions) or [r for r in order if r in seeding]
            if not joining:
                raise Refused("no region is seeding (`seed_from`): add the regions with `seed_from: <a writer>` and run "
                              "`pulumi up` first, so that each exists as a read replica", step=STEP)
            not_copies = [r for r in joining if r not in seeding]
            if not_copies:
                raise Refused(f"{', '.join(not_copies)} not seeding: set `seed_from: <a writer>` on "
                              f"{'them' if len(not_copies) > 1 else 'it'} and run `pulumi up`, then re-run", step=STEP)
            sources = {seeding[r] for r in joining}
            source = opts.source or (sources.pop() if len(sources) == 1 else None)
            if source is None or any(seeding[r] != source for r in joining):
                raise Refused(f"the joining regions copy different writers ({sorted({seeding[r] for r in joining})}): "
                              "join the copies of one writer at a time, with --from", step=STEP)
            return plan_join(members, joining, source, order), list(members)
        if opts.action == "replace":
            (lost,) = opts.regions
            if not opts.source:
                raise UsageError("replace needs --from SRC, the surviving writer its copy was made from", step=STEP)
            if seeding.get(lost) != opts.source:
                raise Refused(f"{lost} is not a copy of {opts.source}: set `seed_from: {opts.source}` on it and rebuild "
                              "its writer with `pulumi up --replace <its URN>` (see README, Replace a writer), then re-run",
                              step=STEP)
            return plan_replace(members, lost, opts.source), [m for m in members if m != lost]
        if opts.action == "shrink":
            return plan_shrink(members, list(opts.regions)), list(members)
    except PlanError as e:
        raise Refused(str(e), step=STEP) from None
    raise UsageError(f"unknown transition {opts.action}; use join, replace or shrink", step=STEP)


# -- where the writers live ------------------------------------------------------------------------


class AwsBackend:
    """``replication.lifecycle.Backend`` over RDS, Secrets Manager and the stack's fence functions."""

    def __init__(self, outputs: Any, rt: Runtime, opts: TransitionOptions, rep: log.Reporter) -> None:
        self.outputs, self.rt, self.opts, self.rep = outputs, rt, opts, rep
        self.order = list(outputs.regions)
        self._repl_pw: dict[str, str] = {}

    def node(self, region: str) -> Node:
        indexes = self.outputs.writerIndexes or {}
        host = (self.outputs.writerDbAddresses or {}).get(region, "")
        return Node(name=region, region=region, host=host or region, port=self.outputs.dbPort or 5432,
                    dbname=self.outputs.dbName or "fraiseql", user=REPL_ROLE,
                    index=int(indexes.get(region, self.order.index(region) + 1)))

    def _master(self, region: str) -> dict[str, str]:
        arns = self.outputs.writerSecretArns or {}
        owner = region if region in arns else (self.outputs.seedingRegions or {}).get(region)
        if owner is None or owner not in arns:
            raise UsageError(f"the stack outputs name no master secret for {region} (nor for the writer it copies); "
                             "pass --dsn", step=STEP)
        # A copy has its source's users and passwords until Pulumi gives it a managed password of its own.
        secret = self.rt.client("secretsmanager", owner).get_secret_value(SecretId=arns[owner])["SecretString"]
        return dict(json.loads(secret))

    def _replication_password(self, region: str) -> str:
        if region not in self._repl_pw:
            name = self.outputs.replicationSecretName
            if not name:
                raise UsageError("the stack outputs name no replicationSecretName", step=STEP)
            secret = self.rt.client("secretsmanager", region).get_secret_value(SecretId=name)["SecretString"]
            self._repl_pw[region] = str(json.loads(secret)["password"])
        return self._repl_pw[region]

    def connect(self, region: str) -> Any:
        import psycopg

        # The replication role's password is bound to the session (never to SQL text) for the
        # subscriptions this runbook creates; see replication.roles.
        options = secret_options({REPL_ROLE: self._replication_password(region)}, cleartext=[REPL_ROLE])
        try:
            if self.opts.dsn:
                if region not in self.opts.dsn:
                    raise UsageError(f"--dsn has no entry for {region}; give one per writer the transition touches",
                                     step=STEP)
                return psycopg.connect(self.opts.dsn[region], autocommit=True, connect_timeout=10, options=options,
                                       application_name="fraiseql-transition")
            master = self._master(region)
            n = self.node(region)
            return psycopg.connect(host=n.host, port=n.port, dbname=n.dbname, user=master["username"],
                                   password=master["password"], sslmode=self.opts.sslmode, autocommit=True,
                                   connect_timeout=10, options=options, application_name="fraiseql-transition")
        except psycopg.OperationalError as e:
            raise StepFailed(f"cannot reach the writer in {region}: {str(e).strip()}; re-run when it answers",
                             step=STEP) from None

    def conninfo(self, subscriber: str, publisher: str) -> str:
        # What the bootstrap Lambda writes too, so that its later runs leave these subscriptions alone.
        return default_conninfo(sslmode=self.opts.peer_sslmode, channel_binding="require")(self.node(publisher))

    def replay_lsn(self, region: str) -> Optional[str]:
        with self.connect(region) as c:
            row = c.execute("SELECT pg_catalog.pg_last_wal_replay_lsn()::text").fetchone()
        return row[0] if row else None

    def promote(self, region: str) -> None:
        ident = self.outputs.writerDbIdentifiers[region]
        state = describe_db(self.rt, region, ident)
        if state.is_replica:
            self.rep.emit("promote", log.START, f"{ident} ({region}): PromoteReadReplica (a copy of {state.source})")
            self.rt.client("rds", region).promote_read_replica(DBInstanceIdentifier=ident)
        deadline = self.rt.clock() + self.opts.timeout_s
        while True:
            state = describe_db(self.rt, region, ident)
            if state.available and not state.is_replica:
                break
            if self.rt.clock() > deadline:
                raise StepFailed(f"{ident} not promoted after {self.opts.timeout_s:g} s ({state.brief()}); re-run to "
                                 "keep waiting", step=STEP)
            self.rt.sleep(15.0)
        while True:  # RDS reports available a moment before the server accepts writes
            with self.connect(region) as c:
                if not c.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()[0]:
                    return
            if self.rt.clock() > deadline:
                raise StepFailed(f"{ident} still in recovery after {self.opts.timeout_s:g} s", step=STEP)
            self.rt.sleep(2.0)

    def after_identify(self, region: str) -> None:
        return None

    def start_agents(self, regions: Sequence[str], members: Sequence[str], next_members: Sequence[str]) -> None:
        return None  # the stack runs every region's agent; the runner waits for its heartbeat

    def stop_agents(self, regions: Sequence[str]) -> None:
        return None  # not members any more, they stay fenced; removing the regions stops them

    def deployed_membership(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """What each fence function is configured to run (FRAISEQL_REGIONS, FRAISEQL_REGIONS_NEXT)."""
        out = {}
        for region, name in (self.outputs.fenceFunctionNames or {}).items():
            conf = self.rt.client("lambda", region).get_function_configuration(FunctionName=name)
            env = (conf.get("Environment") or {}).get("Variables") or {}
            out[region] = (tuple(x for x in env.get("FRAISEQL_REGIONS", "").split(",") if x),
                           tuple(x for x in env.get("FRAISEQL_REGIONS_NEXT", "").split(",") if x))
        return out

    def set_membership(self, members: Sequence[str], next_members: Sequence[str]) -> None:
        want = (tuple(members), tuple(next_members))
        deployed = self.deployed_membership()
        if not deployed:
            raise UsageError("the stack outputs name no fenceFunctionNames", step=STEP)
        behind = sorted(r for r, got in deployed.items() if got != want)
        if behind:
            raise OperatorStep(membership_commands(self.order, self.outputs.seedingRegions or {}, members,
                                                   next_members, behind), step="membership")


def membership_commands(order: Sequence[str], seeding: Mapping[str, str], members: Sequence[str],
                        next_members: Sequence[str], behind: Sequence[str]) -> str:
    """What the operator runs for a membership step (pulumi config paths of `fraiseql:quorum`)."""
    lines = [f"the fence agents of {', '.join(behind)} do not run this membership yet. Run:"]
    joining = [r for r in next_members if r not in members]
    if joining:
        # Their routing controls were created Off. Turned On now, while the safety rule asserts only
        # the current members; once the joint rule asserts them, one region at a time could not be.
        lines.append(f"  python -m ops region-in {' '.join(joining)} --outputs <outputs.json>")
    if next_members:
        lines += [f"  pulumi config set --path 'fraiseql:quorum.members[{i}]' {r}" for i, r in enumerate(members)]
        lines += [f"  pulumi config set --path 'fraiseql:quorum.next_members[{i}]' {r}"
                  for i, r in enumerate(next_members)]
        lines.append("  pulumi up")
    else:
        lines.append("  pulumi config rm --path 'fraiseql:quorum.next_members'")
        lines += [f"  pulumi config set --path 'fraiseql:quorum.members[{i}]' {r}" for i, r in enumerate(members)]
        promoted = [r for r in members if r in seeding]
        lines += [f"  pulumi config rm --path 'fraiseql:regions[{order.index(r)}].seed_from'" for r in promoted]
        # --refresh first reads the promotions this runbook did, so Pulumi does not promote again.
        lines.append("  pulumi up --refresh" if promoted else "  pulumi up")
    lines.append("then run this command again: it continues once every agent reports the membership")
    return "\n".join(lines)


# -- progress ------------------------------------------------------------------------------------


def _check_state(path: str, saved: Optional[Mapping[str, Any]], plan: Sequence[Step]) -> Optional[dict[str, Any]]:
    """The saved progress (``_read_state``) if it belongs to ``plan``; another transition is refused."""
    if saved is None:
        return None
    if saved.get("plan") != [s.describe() for s in plan]:
        raise Refused(f"{path} holds another transition in progress ({saved.get('action')}, step {saved.get('done', 0)} "
                      f"of {len(saved.get('plan') or [])}): finish it first, or move the file away if it is abandoned",
                      step=STEP)
    return dict(saved)


def _save_state(path: str, record: Mapping[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, sort_keys=True, default=lambda x: sorted(x) if isinstance(x, set) else str(x))
    os.replace(tmp, path)


# -- the command ---------------------------------------------------------------------------------


def run_transition(outputs: Any, rt: Runtime, opts: TransitionOptions, *,
                   backend: Optional[Any] = None, policy: Optional[ConflictPolicy] = None) -> int:
    rep = rt.reporter
    assert rep is not None
    policy = policy or load_policy(opts.policy)
    backend = backend or AwsBackend(outputs, rt, opts, rep)
    saved = _read_state(opts.state_path)
    members = list(saved["members"]) if saved else list(outputs.members)
    if outputs.quorumNextMembers and not saved:
        raise Refused(f"a membership change is in progress (quorum.next_members {outputs.quorumNextMembers}) that "
                      "this runbook did not start: finish or undo it first", step=STEP)
    steps, running = _plan(outputs, opts, members)
    problem = check_plan(members, steps, running)
    if problem:  # pragma: no cover - the planners only produce checked plans
        raise Refused(problem, step=STEP)
    saved = _check_state(opts.state_path, saved, steps)
    start_at = int(saved["done"]) if saved else 0
    rep.emit("plan", log.INFO, f"{opts.action}: {len(steps)} steps, members {', '.join(members)}"
             + (f"; resuming at step {start_at + 1}" if start_at else ""),
             steps=[s.describe() for s in steps], members=members, resume_at=start_at)
    if start_at == 0:
        _preflight(backend, members, rep)
    if opts.dry_run:
        for i, st in enumerate(steps):
            rep.emit(st.kind, log.SKIP if i < start_at else log.WOULD, st.describe())
        rep.emit("result", log.DONE, "dry run: nothing changed")
        return 0
    record: dict[str, Any] = dict(saved or {"action": opts.action, "members": members, "plan": [s.describe() for s in steps],
                                            "done": 0, "state": {}})
    def progress(rec: dict[str, Any]) -> None:
        rep.emit(str(rec["step"]), log.OK, f"{', '.join(rec.get('regions') or [rec.get('region', '')])}: "
                 f"{rec.get('detail', '')} ({rec['seconds']:.1f} s)", **rec)

    runner = Runner(backend, policy, list(outputs.regions), timeout_s=opts.timeout_s,
                    membership_settle_s=opts.settle_s, log=progress)
    restored = dict(record.get("state") or {})
    if "agents" in restored:
        restored["agents"] = set(restored["agents"])
    runner.state.update(restored)

    def done(i: int, state: dict[str, Any]) -> None:
        record["done"] = i + 1
        record["state"] = state
        _save_state(opts.state_path, record)

    try:
        state = runner.run(steps, members, running, start_at=start_at, done=done)
    except PlanError as e:
        raise Refused(str(e), step=STEP) from None
    except TimeoutError as e:
        raise StepFailed(f"{e}; re-run to resume at this step", step=STEP) from None
    os.remove(opts.state_path)
    verified = state.get("verify") or {}
    rep.emit("result", log.DONE, f"{opts.action} done in {len(steps)} steps; {verified.get('diverged_rows', '?')} diverged "
             f"rows across {', '.join(steps[-1].regions)}", verify=verified)
    return 0


def _read_state(path: str) -> Optional[dict[str, Any]]:
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return dict(json.load(f))
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"cannot read the transition state {path}: {e}; move it away to start over", step=STEP) from None


def _preflight(backend: Any, members: Sequence[str], rep: log.Reporter) -> None:
    """Every member decodes WAL logically (the phase B parameter group applies only after a reboot)."""
    for r in members:
        with backend.connect(r) as c:
            level = c.execute("SHOW wal_level").fetchone()[0]
        if level != "logical":
            ident = getattr(backend, "outputs", None)
            name = ident.writerDbIdentifiers.get(r, r) if ident is not None else r
            raise Refused(f"{r}: wal_level is {level}; the phase B parameter group applies at the next reboot: "
                          f"aws rds reboot-db-instance --db-instance-identifier {name} --region {r} "
                          "(a minute of downtime), then re-run", step="preflight")
        rep.emit("preflight", log.OK, f"{r}: wal_level logical")
