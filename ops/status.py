"""`status`: what an operator needs before deciding anything. Read-only.

Phase A: which instance is the writer (a replica has ReadReplicaSourceDBInstanceIdentifier), the
standby's replica lag against the RPO, both health checks, where the writer CNAME points, whether the
old primary is fenced, and every alarm in ALARM. Phase B/C: each writer, health checks, routing
control states against the quorum, replication-lag alarms, slot health, and alarms in ALARM.

Slot health: a peer that stays away past `max_slot_wal_keep_size` loses its slot on each publisher
(`pg_replication_slots.wal_status = 'lost'`) and can never resume from it. With `--dsn REGION=CONNINFO`
status reads the slots of that writer; otherwise the `SlotsLost` metric its fence agent publishes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Optional

from ops import log
from ops.arc import ON, ArcCluster
from ops.aws import DbState, Runtime, alarm_arn_parts, alarms_in_alarm, describe_db, health, read_cname, replica_lag, same_host
from ops.errors import StepFailed
from ops.outputs import Outputs, PhaseAOutputs, PhaseBOutputs
from ops.retry import is_connection_error

#: What `status` could not read in this run (an API that did not answer): it reports the rest, then fails.
_UNREAD = "unread"


def _unread(rt: Runtime, step: str, what: str, exc: BaseException) -> None:
    """An API that does not answer is unknown, never a state: say so, and remember it for the exit code."""
    r = rt.reporter
    assert r is not None
    r.emit(step, log.WARN, f"{what}: cannot be read ({type(exc).__name__}: {exc}); unknown, not a state", unread=True)
    setattr(rt, _UNREAD, [*getattr(rt, _UNREAD, []), what])


def _finish(rt: Runtime) -> int:
    r = rt.reporter
    assert r is not None
    missed = getattr(rt, _UNREAD, [])
    if missed:
        r.emit("result", log.FAILED, f"could not read {', '.join(missed)}: nothing was changed; run status again when the "
               "APIs answer (check the network, proxy and region)", exit_code=1, unread=missed)
        return 1
    r.emit("status", log.DONE, "status read")
    return 0


def _standby_lag_unknown(standby: DbState) -> str:
    if not standby.reachable:
        return (f"{standby.identifier}: the RDS API in {standby.region} cannot be reached, so whether it still replicates "
                "and how far behind it is are unknown")
    return f"{standby.identifier} is not found in {standby.region}: no replication to measure"


def _alarms(rt: Runtime, regions: list[str]) -> None:
    r = rt.reporter
    assert r is not None
    firing: dict[str, list[str]] = {}
    read: list[str] = []
    for region in regions:
        try:
            names = alarms_in_alarm(rt, region)
        except Exception as e:  # noqa: BLE001 - status reports what it can read
            if is_connection_error(e):
                _unread(rt, "alarms", f"the alarms in {region}", e)
            else:
                r.emit("alarms", log.WARN, f"{region}: cannot read alarms ({e})")
            continue
        read.append(region)
        if names:
            firing[region] = names
    if firing:
        r.emit("alarms", log.WARN, "in ALARM: " + "; ".join(f"{g}: {', '.join(n)}" for g, n in firing.items()), alarms=firing)
    elif read:
        r.emit("alarms", log.OK, f"no alarm in ALARM in {', '.join(read)}", alarms={})


def status_a(o: PhaseAOutputs, rt: Runtime, lookback_s: float = 300) -> int:
    r = rt.reporter
    assert r is not None
    primary = describe_db(rt, o.primaryRegion, o.primaryDbIdentifier)
    standby = describe_db(rt, o.standbyRegion, o.standby_db_identifier)
    writers = [d for d in (primary, standby) if d.reachable and d.exists and not d.is_replica]
    for role, d in (("primary", primary), ("standby", standby)):
        r.emit("db", log.INFO if d.reachable else log.WARN, f"{role} {d.brief()}", role=role, identifier=d.identifier,
               region=d.region, status=d.status, replica_of=d.source, reachable=d.reachable,
               security_groups=list(d.security_groups))
        if not d.reachable:
            setattr(rt, _UNREAD, [*getattr(rt, _UNREAD, []), f"the {role} in {d.region}"])
    unreachable = [d for d in (primary, standby) if not d.reachable]
    fence = o.fenceSecurityGroupIds[o.primaryRegion]
    fenced = primary.reachable and primary.exists and set(primary.security_groups) == {fence}
    if len(writers) == 2 and not fenced:
        r.emit("writer", log.WARN, f"TWO WRITERS: {primary.identifier} and {standby.identifier} are both not replicas and the old primary is not fenced "
               "(split brain): run `failover` to fence it", writers=[w.identifier for w in writers])
    elif writers:
        w = writers[-1] if len(writers) == 2 else writers[0]
        r.emit("writer", log.OK, f"writer: {w.identifier} in {w.region}" + (" (old primary fenced)" if fenced else ""),
               writer=w.identifier, region=w.region, fenced=fenced)
    elif unreachable:
        r.emit("writer", log.WARN, "writer unknown: the RDS API cannot be reached in "
               f"{', '.join(d.region for d in unreachable)}", writers=[])
    else:
        r.emit("writer", log.WARN, "no writer visible (every instance is a replica or missing)", writers=[])
    if not (standby.reachable and standby.exists):
        r.emit("lag", log.WARN, _standby_lag_unknown(standby), lag_s=None, rpo_s=o.slo.rpoSeconds, reachable=standby.reachable)
    elif standby.is_replica:
        try:
            lag = replica_lag(rt, o.standbyRegion, standby.identifier, lookback_s)
        except Exception as e:  # noqa: BLE001 - status reports what it can read
            if not is_connection_error(e):
                raise
            _unread(rt, "lag", f"ReplicaLag of {standby.identifier}", e)
            lag = None
        rpo = o.slo.rpoSeconds
        if lag is not None and lag.seconds is None:
            r.emit("lag", log.WARN, f"{standby.identifier}: no ReplicaLag datapoint in the last {lookback_s:g} s (replication not reporting)", lag_s=None, rpo_s=rpo)
        elif lag is not None and lag.seconds is not None:
            ok = lag.seconds <= rpo
            r.emit("lag", log.OK if ok else log.WARN, f"{standby.identifier}: lag {lag.seconds:g} s (peak {lag.peak:g} s in {lookback_s:g} s) "
                   f"{'≤' if ok else '>'} RPO {rpo:g} s", lag_s=lag.seconds, peak_s=lag.peak, rpo_s=rpo, at=lag.at)
    else:
        r.emit("lag", log.INFO, f"{standby.identifier} is not a replica (promoted): no replication to measure")
    _health(rt, o.healthCheckIds, o.regions)
    try:
        cname = read_cname(rt, o.dbPrivateZoneId, o.dbWriterHostname)
    except Exception as e:  # noqa: BLE001 - status reports what it can read
        if not is_connection_error(e):
            raise
        _unread(rt, "cname", f"the writer CNAME {o.dbWriterHostname}", e)
    else:
        points_to = next((d.identifier for d in (primary, standby) if same_host(cname, d.address)), None)
        if points_to is None:
            points_to = next((i for i, a in ((o.primaryDbIdentifier, o.primaryDbAddress), (o.standby_db_identifier, o.replicaDbAddresses[o.standbyRegion])) if same_host(cname, a)), None)
        r.emit("cname", log.OK if points_to else log.WARN, f"{o.dbWriterHostname} → {cname} ({points_to or 'matches no instance'})", target=cname, instance=points_to)
    _alarms(rt, sorted(o.regions))
    return _finish(rt)


def _health(rt: Runtime, checks: Mapping[str, str], roles: Mapping[str, str]) -> None:
    r = rt.reporter
    assert r is not None
    for region, hc_id in sorted(checks.items()):
        try:
            hc = health(rt, hc_id)
        except Exception as e:  # noqa: BLE001 - status reports what it can read
            if not is_connection_error(e):
                raise
            _unread(rt, "health", f"health check {hc_id} ({region})", e)
            continue
        r.emit("health", log.OK if hc.healthy else log.WARN, f"{region} ({roles.get(region, '?')}): {hc_id} {hc.brief()}",
               region=region, healthy=hc.healthy, inverted=hc.inverted, disabled=hc.disabled)


SLOT_NAMESPACE, SLOT_METRIC = "FraiseQL/Replication", "SlotsLost"
RESEED = ("its subscriber can never resume from it: reseed that region (seed_from a writer, promote, join: "
          "README, Moving between phases), never recreate the slot in place")


def read_slots(conninfo: str) -> list[dict[str, Any]]:
    """Every replication slot of one server, with whatever columns its version has
    (`invalidation_reason` from PostgreSQL 17)."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute("SELECT to_jsonb(s) FROM pg_replication_slots s ORDER BY slot_name").fetchall()
    return [row[0] for row in rows]


def _slots_from_database(rt: Runtime, region: str, conninfo: str) -> None:
    r = rt.reporter
    assert r is not None
    try:
        slots = read_slots(conninfo)
    except Exception as e:  # noqa: BLE001 - status reports what it can read
        r.emit("slots", log.WARN, f"{region}: cannot read pg_replication_slots ({type(e).__name__}: {e})", region=region, source="database")
        return
    lost = [sl for sl in slots if sl.get("wal_status") == "lost"]
    risky = [sl for sl in slots if sl.get("wal_status") == "unreserved"]
    brief = [{k: sl.get(k) for k in ("slot_name", "slot_type", "active", "wal_status", "safe_wal_size", "invalidation_reason")}
             for sl in slots]
    data = dict(region=region, source="database", lost=[sl["slot_name"] for sl in lost],
                unreserved=[sl["slot_name"] for sl in risky], slots=brief)
    if lost:
        names = ", ".join(f"{sl['slot_name']} ({sl.get('invalidation_reason') or 'wal_status lost'})" for sl in lost)
        r.emit("slots", log.WARN, f"{region}: LOST slot(s) {names}: {RESEED}", **data)
    elif risky:
        names = ", ".join(f"{sl['slot_name']} ({sl.get('safe_wal_size')} bytes left)" for sl in risky)
        r.emit("slots", log.WARN, f"{region}: slot(s) past max_slot_wal_keep_size, lost at the next checkpoint "
               f"unless their subscriber catches up: {names}", **data)
    else:
        r.emit("slots", log.OK, f"{region}: {len(slots)} slot(s), none lost", **data)


def _slots_from_metric(rt: Runtime, region: str, lookback_s: float) -> None:
    r = rt.reporter
    assert r is not None
    now = rt.now()
    try:
        resp = rt.client("cloudwatch", region).get_metric_statistics(
            Namespace=SLOT_NAMESPACE, MetricName=SLOT_METRIC, Dimensions=[{"Name": "Region", "Value": region}],
            StartTime=now - timedelta(seconds=lookback_s), EndTime=now + timedelta(seconds=60), Period=60,
            Statistics=["Maximum"],
        )
    except Exception as e:  # noqa: BLE001 - status reports what it can read
        r.emit("slots", log.WARN, f"{region}: cannot read {SLOT_NAMESPACE} {SLOT_METRIC} ({e})", region=region, source="metric")
        return
    points = resp.get("Datapoints", [])
    if not points:
        r.emit("slots", log.INFO, f"{region}: no {SLOT_METRIC} datapoint in the last {lookback_s:g} s (is its fence agent "
               "running?); pass --dsn to read the slots", region=region, source="metric", lost=None)
        return
    worst = int(max(float(p["Maximum"]) for p in points))
    if worst:
        r.emit("slots", log.WARN, f"{region}: {worst} slot(s) lost in the last {lookback_s:g} s ({SLOT_METRIC}): {RESEED}; "
               "--dsn names them", region=region, source="metric", lost=worst)
    else:
        r.emit("slots", log.OK, f"{region}: no slot lost ({SLOT_METRIC} 0 over {lookback_s:g} s)", region=region, source="metric", lost=0)


def slot_health(o: PhaseBOutputs, rt: Runtime, dsn: Mapping[str, str], lookback_s: float) -> None:
    """Each writer's slots (a region still seeding is a read replica: it has none)."""
    seeding = o.seedingRegions or {}
    for region in sorted(o.writerDbIdentifiers):
        if region in seeding:
            continue
        if region in dsn:
            _slots_from_database(rt, region, dsn[region])
        else:
            _slots_from_metric(rt, region, lookback_s)


def status_b(o: PhaseBOutputs, rt: Runtime, dsn: Optional[Mapping[str, str]] = None, lookback_s: float = 300) -> int:
    r = rt.reporter
    assert r is not None
    for region, ident in sorted(o.writerDbIdentifiers.items()):
        d = describe_db(rt, region, ident)
        r.emit("db", log.OK if d.available else log.WARN, d.brief(), region=region, identifier=ident, status=d.status, reachable=d.reachable)
        if not d.reachable:
            setattr(rt, _UNREAD, [*getattr(rt, _UNREAD, []), f"the writer in {region}"])
    _health(rt, o.healthCheckIds, o.regions)
    arc = ArcCluster(rt, o.arcClusterEndpoints)
    try:
        states = {g: arc.state(arn) for g, arn in sorted(o.routingControlArns.items())}
    except StepFailed as e:
        r.emit("routing", log.WARN, str(e))
        states = {}
    if states:
        on = sorted(g for g, s in states.items() if s == ON)
        ok = len(on) >= o.quorum
        r.emit("routing", log.OK if ok else log.WARN, f"{', '.join(f'{g} {s}' for g, s in states.items())}: {len(on)} On, quorum {o.quorum} "
               f"{'met' if ok else 'NOT met'}", states=states, on=len(on), quorum=o.quorum)
    by_region: dict[str, list[tuple[str, str]]] = {}
    for pair, arn in sorted(o.replicationLagAlarmArns.items()):
        region, name = alarm_arn_parts(arn)
        by_region.setdefault(region, []).append((pair, name))
    lag_states: dict[str, Any] = {}
    for region, items in by_region.items():
        resp = rt.client("cloudwatch", region).describe_alarms(AlarmNames=[n for _, n in items])
        found = {a["AlarmName"]: a["StateValue"] for a in resp.get("MetricAlarms", [])}
        for pair, name in items:
            lag_states[pair] = found.get(name, "MISSING")
    if lag_states:
        bad = {p: s for p, s in lag_states.items() if s != "OK"}
        r.emit("lag", log.WARN if bad else log.OK, ", ".join(f"{p} {s}" for p, s in lag_states.items()), alarms=lag_states)
    slot_health(o, rt, dsn or {}, lookback_s)
    _alarms(rt, sorted(o.regions))
    return _finish(rt)


def run_status(o: Outputs, rt: Runtime, lookback_s: float = 300, dsn: Optional[Mapping[str, str]] = None) -> int:
    setattr(rt, _UNREAD, [])
    if isinstance(o, PhaseAOutputs):
        return status_a(o, rt, lookback_s)
    return status_b(o, rt, dsn, lookback_s)
