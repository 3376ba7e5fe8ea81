"""One probe on the agent's own writer: observe, judge the data links, decide, commit.

Every step reads or writes through one autocommit connection, in this order (the red-team probes
pause the agent before and after each statement): the observation, the agent's state and its own
last heartbeat, the subscriptions with their apply workers, the write guard; then one message that records
the decision, beats and renews or revokes the lease; then, when fenced, ``end_writes``; then the
numbers the metrics report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from replication import failpoints
from replication.agent.memory import AgentMemory
from replication.agent.settings import Settings
from replication.model import Node
from replication.quorum import Assessment, Decision, HeartbeatRow, RelayEntry, assess, unfence_hold
from replication.sql import AGENT_STATE_TABLE, HEARTBEAT_TABLE, SCHEMA, control_subscription_name, subscription_name

__all__ = ["LinkHealth", "ProbeResult", "probe", "psycopg_client_cursor"]


@dataclass
class LinkHealth:
    """One peer's data subscription as this writer sees it."""

    healthy: bool
    running: bool
    apply_errors: int


@dataclass
class ProbeResult:
    decision: Decision
    changed: bool
    hears: frozenset[str]
    links: dict[str, LinkHealth]
    lag_s: dict[str, Optional[float]]
    slots_lost: int
    subscriptions_down: int
    apply_error_increase: int
    elapsed_s: float
    #: per peer: seconds since its heartbeat arrived, and whether its subscriptions are healthy
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: who each region hears, as this agent's merged view has it (fresh reports only)
    view: dict[str, list[str]] = field(default_factory=dict)
    #: whether the lease was granted (the quorum's verdict, unless the write guard cannot hold here)
    writable: bool = False
    guard: str = ""
    #: transactions a fenced writer ended because they had written and not committed
    writes_ended: int = 0


@dataclass(frozen=True)
class Observation:
    """What ``_observe`` saw, all of it at one moment of this writer's clock."""

    #: the moment (epoch seconds): every age below is measured at it, and a lease runs from it
    observed: float
    #: whether the lease was still running then
    leased: bool
    rows: list[HeartbeatRow]


@dataclass(frozen=True)
class SubscriptionVerdict:
    """One subscription (data or control) to one peer."""

    ok: bool
    running: bool
    errors: int


@dataclass(frozen=True)
class LinkReport:
    """Every peer's links, and the counts the metrics publish."""

    health: dict[str, LinkHealth]
    #: subscriptions missing or without an apply worker
    down: int
    #: apply errors counted since the previous probe
    error_increase: int


@dataclass
class Previous:
    """What the last probe left: its row in ``agent_state`` and this writer's own last heartbeat."""

    seq: int
    #: ``None``: a cold start (no decision yet)
    writable: Optional[bool]
    streak: int
    #: carried forward: this probe updates it and writes it back
    memory: AgentMemory
    traffic_out: bool
    selected: dict[str, frozenset[str]]


def _node(settings: Settings, name: str) -> Node:
    """A model node for naming subscriptions and slots (only the name matters)."""
    return Node(name=name, region=name, host="")


def _data_links(conn: Any, settings: Settings, memory: AgentMemory, now: float) -> LinkReport:
    """Health of every data and control subscription, with memory of errors and downtime.

    A subscription is unhealthy while its apply worker has been missing for longer than
    ``stale_after`` or while an apply error happened in the last ``stale_after`` seconds. A data
    subscription is unhealthy too while it has received nothing for ``stale_after``: every probe of
    the peer's agent writes to the data stream (its watermark), so a silent data link is a stalled
    one (its apply worker waiting on a lock an application holds, say), whatever its heartbeats say.
    An apply worker busy with a large transaction reads it as it applies it, so it is not silent.
    """
    rows = conn.execute(
        "SELECT s.subname, s.subenabled, st.pid IS NOT NULL, coalesce(ss.apply_error_count, 0)::bigint, "
        "extract(epoch FROM clock_timestamp() - st.last_msg_receipt_time)::float8 "
        "FROM pg_catalog.pg_subscription s "
        "JOIN pg_catalog.pg_database d ON d.oid = s.subdbid AND d.datname = current_database() "
        # The leader apply worker: no table (not a table sync worker), no leader (not a parallel apply
        # worker). pg_stat_subscription.worker_type would say so too, but only from PostgreSQL 17.
        "LEFT JOIN pg_catalog.pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL "
        "  AND st.leader_pid IS NULL "
        "LEFT JOIN pg_catalog.pg_stat_subscription_stats ss ON ss.subid = s.oid"
    ).fetchall()
    by_name = {r[0]: r for r in rows}
    me = _node(settings, settings.region)
    out: dict[str, LinkHealth] = {}
    down = 0
    increase = 0
    for peer in settings.everyone:
        if peer == settings.region:
            continue
        p = _node(settings, peer)
        verdicts: list[SubscriptionVerdict] = []
        for sub in (subscription_name(me, p), control_subscription_name(me, p)):
            row = by_name.get(sub)
            mem = memory.link(sub)
            if row is None:
                verdicts.append(SubscriptionVerdict(ok=False, running=False, errors=0))
                down += 1
                continue
            _, enabled, running, errors, silent_s = row
            silent = sub == subscription_name(me, p) and (silent_s is None or silent_s > settings.stale_after_s)
            if errors > mem.errors:
                increase += errors - mem.errors
                mem.error_at = now
            mem.errors = int(errors)
            up = bool(enabled and running)
            if up:
                mem.down_since = None
            elif mem.down_since is None:
                mem.down_since = now
            if not enabled or not running:
                down += 1
            recently_failed = mem.error_at is not None and now - mem.error_at <= settings.stale_after_s
            long_down = not enabled or (mem.down_since is not None and now - mem.down_since > settings.stale_after_s)
            verdicts.append(SubscriptionVerdict(ok=not recently_failed and not long_down and not silent, running=up,
                                                errors=int(errors)))
        data, control = verdicts
        out[peer] = LinkHealth(healthy=data.ok and control.ok, running=data.running, apply_errors=data.errors)
    return LinkReport(health=out, down=down, error_increase=increase)


def _observe(conn: Any, settings: Settings) -> Observation:
    """The moment of observation (this writer's clock), whether the lease is still running then, and
    the peers' heartbeat rows as of then.

    One statement, one clock reading: every age is measured at that moment, and the lease granted on
    what was seen runs from it, however long the agent takes to act afterwards.
    """
    rows = conn.execute(
        f"WITH n AS (SELECT clock_timestamp() AS t, {SCHEMA}.lease_valid_until() AS u) "
        f"SELECT extract(epoch FROM n.t)::float8, n.u > n.t, h.node, h.seq, h.hears, h.relay, "
        f"extract(epoch FROM n.t - h.received_at)::float8, "
        f"coalesce(extract(epoch FROM h.sent_at - h.observed_at), 0)::float8, h.selected "
        f"FROM n LEFT JOIN {HEARTBEAT_TABLE} h ON h.node <> %s",
        (settings.region,),
    ).fetchall()
    observed, leased = float(rows[0][0]), bool(rows[0][1])
    out = []
    for _, _, node, seq, hears, relay, age, lag, selected in rows:
        if node is None:
            continue
        entries = {}
        for origin, e in (relay or {}).items():
            try:
                entries[origin] = RelayEntry(int(e["seq"]), frozenset(e.get("hears") or ()), float(e["age_ms"]) / 1000,
                                             _selections(e.get("selected")))
            except (KeyError, TypeError, ValueError):
                continue  # a malformed relay entry is ignored, never trusted
        out.append(HeartbeatRow(node=node, seq=int(seq), hears=frozenset(hears or ()), since_received_s=max(float(age), 0.0),
                                relay=entries, lag_s=max(float(lag), 0.0), selected=_selections(selected)))
    return Observation(observed=observed, leased=leased, rows=out)


def _selections(raw: Any) -> dict[str, frozenset[str]]:
    """A report's selections, as published ({signature: [members]}); anything malformed says nothing."""
    if not isinstance(raw, dict):
        return {}
    return {str(k): frozenset(str(x) for x in v) for k, v in raw.items() if isinstance(v, list)}


def _previous(conn: Any, settings: Settings, *, leased: bool) -> Previous:
    """The agent's state as the last probe left it, and the selections of its own last heartbeat."""
    prev_seq, prev_writable, prev_streak, memory, prev_traffic_out = conn.execute(
        f"SELECT seq, writable, healthy_streak, apply_errors, traffic_out FROM {AGENT_STATE_TABLE} WHERE singleton"
    ).fetchone()
    if prev_writable and not leased:
        # Its last decision was to write, but the lease has run out since (the agent was dead, paused
        # or frozen for longer than a lease): the region is fenced, and unfences like any fenced region.
        prev_writable, prev_streak = False, 0
    own = conn.execute(f"SELECT selected FROM {HEARTBEAT_TABLE} WHERE node = %s", (settings.region,)).fetchone()
    return Previous(seq=int(prev_seq), writable=prev_writable, streak=int(prev_streak), memory=AgentMemory.load(memory),
                    traffic_out=prev_traffic_out, selected=_selections(own[0]) if own else {})


def _replay_lag(conn: Any, settings: Settings) -> dict[str, Optional[float]]:
    """Seconds each peer trails this publisher (data slot); None when its walsender is gone."""
    rows = dict(conn.execute(f"SELECT subscriber, lag_s FROM {SCHEMA}.replication_lag()").fetchall())
    me = _node(settings, settings.region)
    return {p: rows.get(subscription_name(_node(settings, p), me)) for p in settings.everyone if p != settings.region}


# Delete and insert, not upsert: a peer whose subscription started after this row was first
# inserted (a copy promoted and subscribed while its agent already beat) would skip every
# later UPDATE as update_missing and never hear this node. Deletes are not published; the
# peers' apply trigger turns the INSERT into an update of the row they have (control.sql).
# The lease comes last: if anything before it fails, nothing was granted.
COMMIT_SQL = (
    f"UPDATE {AGENT_STATE_TABLE} SET seq = %(seq)s, writable = %(writable)s, reason = %(state_reason)s, "
    "healthy_streak = %(streak)s, majority = %(majority)s, apply_errors = %(memory)s::jsonb, "
    "traffic_out = %(traffic_out)s, holder = %(holder)s, "
    "holder_until = clock_timestamp() + make_interval(secs => %(hold_s)s), decided_at = clock_timestamp() "
    "WHERE singleton; "
    f"DELETE FROM {HEARTBEAT_TABLE} WHERE node = %(me)s; "
    f"INSERT INTO {HEARTBEAT_TABLE} (node, seq, sent_at, observed_at, hears, relay, selected, writable, membership, "
    "received_at) VALUES (%(me)s, %(seq)s, clock_timestamp(), to_timestamp(%(observed)s), %(hears)s, %(relay)s::jsonb, "
    "%(selected)s::jsonb, %(writable)s, %(membership)s, clock_timestamp()); "
    # on the data stream too: the peers' data links stay busy, so a silent one is a stalled one
    f"SELECT {SCHEMA}.emit_watermark(); "
    f"SELECT {SCHEMA}.set_lease(to_timestamp(%(until)s), %(reason)s, %(holder)s, %(warming)s)"
)


def _commit_params(settings: Settings, a: Assessment, *, seen: Observation, prev: Previous, seq: int, writable: bool,
                   guard: str, holder: str, holder_until_s: Optional[float], traffic_out: Optional[bool],
                   warming: bool) -> dict[str, Any]:
    """What ``COMMIT_SQL`` records: the decision, the heartbeat, and the lease (or its revocation)."""
    decision = a.decision
    relay = {o: {"seq": e.seq, "hears": sorted(e.hears), "age_ms": round(e.age_s * 1000, 1),
                 "selected": {k: sorted(v) for k, v in e.selected.items()}} for o, e in a.relay.items()}
    reason = guard or f"quorum: {decision.reason}; majority {sorted(decision.majority)}"
    return {
        "until": seen.observed + settings.lease_s if writable else None,
        "observed": seen.observed,
        "reason": reason,
        "holder": holder,
        "me": settings.region,
        "seq": seq,
        "writable": writable,
        "state_reason": decision.reason if not guard else "guard_unsafe",
        "streak": decision.healthy_streak,
        "majority": sorted(decision.majority),
        "memory": json.dumps(prev.memory.dump()),
        "traffic_out": prev.traffic_out if traffic_out is None else traffic_out,
        "hold_s": holder_until_s if holder_until_s is not None else 0.0,
        "hears": sorted(a.hears | {settings.region}),
        "relay": json.dumps(relay),
        "selected": json.dumps({k: sorted(v) for k, v in decision.selected.items()}),
        "membership": settings.membership,
        "warming": warming,
    }


def _evidence(settings: Settings, seen: Observation, links: Mapping[str, LinkHealth]) -> dict[str, dict[str, Any]]:
    """Per peer with a heartbeat row: what the decision log shows of it."""
    return {p: {"heartbeat_age_s": round(r.age_s, 3), "link_healthy": links[p].healthy if p in links else False}
            for p in settings.everyone if p != settings.region for r in seen.rows if r.node == p}


def probe(conn: Any, settings: Settings, *, control_on: Optional[bool], holder: str = "",
          holder_until_s: Optional[float] = None, traffic_out: Optional[bool] = None,
          warming: bool = False) -> ProbeResult:
    """One probe: observe, decide, renew or revoke the lease, beat. ``conn`` is autocommit.

    The lease runs ``lease_s`` from the moment of observation, not from when it is written: an agent
    that pauses between the two (a GC or VM pause, a frozen Lambda, a slow round trip) grants
    nothing past what it saw. Its heartbeat carries the observation time too, so peers age what it
    reports from then. Everything it writes goes in one message, one implicit transaction: no pause
    of the agent can fall between its parts.
    """
    t0 = time.monotonic()
    if len(settings.regions) == 1 and not settings.regions_next:
        # The start of A -> B: the one writer, every other region a read-only copy of it. Its ARC
        # routing control was just created (controls start Off) and guards against no split: it
        # keeps writing as in phase A until the membership grows.
        control_on = None
    seen = _observe(conn, settings)
    prev = _previous(conn, settings, leased=seen.leased)
    # Observed after the heartbeats: at worst fresher than the moment the lease is anchored to.
    links = _data_links(conn, settings, prev.memory, seen.observed)
    guard = _guard_problem(conn)
    seq = max(prev.seq + 1, int(seen.observed * 1_000_000))
    a = assess(
        settings.region, settings.regions, rows=seen.rows, links_healthy=[p for p, h in links.health.items() if h.healthy],
        seq=seq, stale_after_s=settings.stale_after_s, control_on=control_on, previous_writable=prev.writable,
        previous_streak=prev.streak, unfence_after=settings.unfence_after, next_regions=settings.regions_next or None,
        previous_selected=prev.selected, observed_s=seen.observed, previous_eligible_since=prev.memory.eligible_since,
        unfence_hold_s=unfence_hold(probe_s=settings.probe_s, stale_after_s=settings.stale_after_s,
                                    lease_s=settings.lease_s))
    decision = a.decision
    prev.memory.eligible_since = decision.eligible_since
    writable = decision.writable and not guard
    failpoints.pause("agent.after_observe")
    params = _commit_params(settings, a, seen=seen, prev=prev, seq=seq, writable=writable, guard=guard, holder=holder,
                            holder_until_s=holder_until_s, traffic_out=traffic_out, warming=warming)
    with psycopg_client_cursor(conn) as cur:
        cur.execute(COMMIT_SQL, params)
    ended = 0 if writable else int(conn.execute(f"SELECT {SCHEMA}.end_writes()").fetchone()[0])
    return ProbeResult(
        decision=decision,
        changed=prev.writable is None or bool(prev.writable) != writable,
        hears=a.hears,
        links=links.health,
        lag_s=_replay_lag(conn, settings),
        slots_lost=int(conn.execute("SELECT count(*) FROM pg_catalog.pg_replication_slots "
                                    "WHERE wal_status = 'lost'").fetchone()[0]),
        subscriptions_down=links.down,
        apply_error_increase=links.error_increase,
        elapsed_s=time.monotonic() - t0,
        evidence=_evidence(settings, seen, links.health),
        view={r: sorted(v) for r, v in a.view.items()},
        writable=writable,
        guard=guard,
        writes_ended=ended,
    )


def _guard_problem(conn: Any) -> str:
    """Why the write guard cannot hold on this server, or ''. A writer with such a problem is never
    granted a lease (the check refuses its writes anyway; this says why, in the agent's reason). The
    rule is the database's own (``fraiseql_repl.guard_problem``, control.sql), the one the check uses."""
    problem, = conn.execute("SELECT fraiseql_repl.guard_problem()").fetchone()
    return f"guard: {problem}" if problem else ""


def psycopg_client_cursor(conn: Any) -> Any:
    """A cursor that binds parameters client-side, so several statements travel in one message and
    run as one implicit transaction (server-side binding allows one statement per message)."""
    import psycopg

    return psycopg.ClientCursor(conn)
