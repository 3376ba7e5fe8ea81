"""The fence agent: one per region, the only process that lets its writer take writes.

Every ``probe_s`` seconds, on one autocommit connection to its own writer, it

1. observes, in one statement and at one moment of its writer's clock, the heartbeat rows its writer
   has received on the control channel; then the health of its data subscriptions (apply worker
   running, no new apply error);
2. merges every region's newest report into its own view and decides (``replication.quorum.assess``)
   with its routing control and the hysteresis state kept in the database
   (``fraiseql_repl.agent_state``);
3. in one message (one implicit transaction): records its state, publishes its own heartbeat (whom
   it hears, and what it knows of everyone else, for the relays, stamped with the moment of
   observation) and renews the write lease until ``lease_s`` after that moment, or revokes it;
4. when fenced, ends every transaction that has written to a replicated table and not committed
   (``fraiseql_repl.end_writes``): the guard that needs no cooperation from the writer.

Writes are allowed only while the lease is valid (``fraiseql_repl.check_lease``, at statement start
and again at commit), so an agent that stops for any reason fences its region within ``lease_s``:
the fence fails closed. Everything that talks to AWS (routing control, metrics, taking the region
out of the traffic path) runs on a side thread with short timeouts and never delays the lease.

``handler`` is the Lambda entry. Invocations hand over through a PostgreSQL advisory lock: one loop
at a time per writer, the next invocation waits for the current one only near its deadline.
``python -m replication.agent`` runs the same handler in a loop, as the scheduler would (drills).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from replication import failpoints
from replication.model import Node
from replication.quorum import Decision, HeartbeatRow, RelayEntry, assess, timing_problems, unfence_hold
from replication.sql import AGENT_STATE_TABLE, HEARTBEAT_TABLE, SCHEMA, control_subscription_name, subscription_name

__all__ = ["AwsSide", "ProbeResult", "Settings", "handler", "main", "probe", "run_loop"]

QUORUM_NAMESPACE = "FraiseQL/Quorum"
REPLICATION_NAMESPACE = "FraiseQL/Replication"
#: pg_advisory_lock key: "one agent loop per writer" (hashtext('fraiseql_repl.agent')).
LOCK_SQL = "hashtext('fraiseql_repl.agent')"
#: The ALB rule that takes a fenced region out of the traffic path matches this header while the
#: region is in service: no request carries it.
IN_SERVICE_HEADER = "x-fraiseql-fence"
IN_SERVICE_VALUE = "region-in-service"


@dataclass(frozen=True)
class Settings:
    """Everything the agent reads from its environment (the stack sets it; see components/quorum)."""

    region: str
    regions: tuple[str, ...]
    probe_s: float
    stale_after_s: float
    lease_s: float
    unfence_after: int
    db_host: str
    db_port: int
    db_name: str
    db_sslmode: str
    db_secret_arn: str
    routing_control_arn: str = ""
    arc_endpoints: tuple[Mapping[str, str], ...] = ()
    fence_rule_arn: str = ""
    health_path: str = "/health"
    metrics_every_s: float = 10.0
    handoff_wait_s: float = 75.0
    stop_margin_s: float = 15.0
    watermark_every_s: float = 10.0
    maintenance_every_s: float = 60.0
    verify_every_s: float = 300.0
    verify_margin_s: float = 60.0
    verify_buckets: int = 256
    #: During a membership change (joint consensus): the members after it.
    regions_next: tuple[str, ...] = ()

    @property
    def everyone(self) -> tuple[str, ...]:
        """Current and next members, in order: whom to hear from and relay about."""
        return self.regions + tuple(r for r in self.regions_next if r not in self.regions)

    @property
    def membership(self) -> str:
        """What the heartbeat says this agent runs, so a runbook can wait for every agent to adopt it."""
        return ",".join(self.regions) + ("|" + ",".join(self.regions_next) if self.regions_next else "")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        probe = float(env["FRAISEQL_PROBE_INTERVAL_SECONDS"])
        return cls(
            region=env["FRAISEQL_REGION"],
            regions=tuple(env["FRAISEQL_REGIONS"].split(",")),
            probe_s=probe,
            stale_after_s=float(env.get("FRAISEQL_STALE_AFTER_SECONDS") or 3 * probe),
            lease_s=float(env.get("FRAISEQL_LEASE_SECONDS") or 3 * probe),
            unfence_after=int(env["FRAISEQL_UNFENCE_AFTER"]),
            db_host=env["FRAISEQL_DB_HOST"],
            db_port=int(env["FRAISEQL_DB_PORT"]),
            db_name=env["FRAISEQL_DB_NAME"],
            db_sslmode=env.get("FRAISEQL_DB_SSLMODE", "require"),
            db_secret_arn=env["FRAISEQL_DB_SECRET_ARN"],
            routing_control_arn=env.get("FRAISEQL_ROUTING_CONTROL_ARN", ""),
            arc_endpoints=tuple(json.loads(env.get("FRAISEQL_ARC_ENDPOINTS") or "[]")),
            fence_rule_arn=env.get("FRAISEQL_FENCE_RULE_ARN", ""),
            health_path=env.get("FRAISEQL_HEALTH_PATH", "/health"),
            metrics_every_s=float(env.get("FRAISEQL_METRICS_EVERY_SECONDS") or 10),
            handoff_wait_s=float(env.get("FRAISEQL_HANDOFF_WAIT_SECONDS") or 75),
            stop_margin_s=float(env.get("FRAISEQL_STOP_MARGIN_SECONDS") or 15),
            watermark_every_s=float(env.get("FRAISEQL_WATERMARK_EVERY_SECONDS") or 10),
            maintenance_every_s=float(env.get("FRAISEQL_MAINTENANCE_EVERY_SECONDS") or 60),
            verify_every_s=float(env.get("FRAISEQL_VERIFY_EVERY_SECONDS") or 300),
            verify_margin_s=float(env.get("FRAISEQL_VERIFY_MARGIN_SECONDS") or 60),
            verify_buckets=int(env.get("FRAISEQL_VERIFY_BUCKETS") or 256),
            regions_next=tuple(r for r in (env.get("FRAISEQL_REGIONS_NEXT") or "").split(",") if r),
        )

    def __post_init__(self) -> None:
        # A region in neither list is not a member (a copy being seeded, or a writer that left): its
        # agent runs, reports and keeps it fenced ("not_member").
        problems = timing_problems(len(self.everyone), probe_s=self.probe_s, stale_after_s=self.stale_after_s,
                                   lease_s=self.lease_s)
        if problems:
            raise ValueError("; ".join(problems))


# -- the database side ---------------------------------------------------------------------------


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


def _node(settings: Settings, name: str) -> Node:
    """A model node for naming subscriptions and slots (only the name matters)."""
    return Node(name=name, region=name, host="")


def _data_links(conn: Any, settings: Settings, memory: dict[str, Any], now: float) -> tuple[dict[str, LinkHealth], int, int]:
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
        verdicts = []
        for sub in (subscription_name(me, p), control_subscription_name(me, p)):
            row = by_name.get(sub)
            mem = memory.setdefault(sub, {"errors": 0, "error_at": None, "down_since": None})
            if row is None:
                verdicts.append((False, False, 0))
                down += 1
                continue
            _, enabled, running, errors, silent_s = row
            silent = sub == subscription_name(me, p) and (silent_s is None or silent_s > settings.stale_after_s)
            if errors > mem["errors"]:
                increase += errors - mem["errors"]
                mem["error_at"] = now
            mem["errors"] = int(errors)
            up = bool(enabled and running)
            if up:
                mem["down_since"] = None
            elif mem["down_since"] is None:
                mem["down_since"] = now
            if not enabled or not running:
                down += 1
            recently_failed = mem["error_at"] is not None and now - mem["error_at"] <= settings.stale_after_s
            long_down = not enabled or (mem["down_since"] is not None and now - mem["down_since"] > settings.stale_after_s)
            verdicts.append((not recently_failed and not long_down and not silent, up, int(errors)))
        data_ok, data_running, data_errors = verdicts[0]
        out[peer] = LinkHealth(healthy=data_ok and verdicts[1][0], running=data_running, apply_errors=data_errors)
    return out, down, increase


def _observe(conn: Any, settings: Settings) -> tuple[float, bool, list[HeartbeatRow]]:
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
    return observed, leased, out


def _selections(raw: Any) -> dict[str, frozenset[str]]:
    """A report's selections, as published ({signature: [members]}); anything malformed says nothing."""
    if not isinstance(raw, dict):
        return {}
    return {str(k): frozenset(str(x) for x in v) for k, v in raw.items() if isinstance(v, list)}


def _replay_lag(conn: Any, settings: Settings) -> dict[str, Optional[float]]:
    """Seconds each peer trails this publisher (data slot); None when its walsender is gone."""
    rows = dict(conn.execute(f"SELECT subscriber, lag_s FROM {SCHEMA}.replication_lag()").fetchall())
    me = _node(settings, settings.region)
    return {p: rows.get(subscription_name(_node(settings, p), me)) for p in settings.everyone if p != settings.region}


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
    observed, leased, rows = _observe(conn, settings)
    state = conn.execute(
        f"SELECT seq, writable, healthy_streak, apply_errors, traffic_out FROM {AGENT_STATE_TABLE} WHERE singleton"
    ).fetchone()
    prev_seq, prev_writable, prev_streak, memory, prev_traffic_out = state
    memory = dict(memory or {})
    if prev_writable and not leased:
        # Its last decision was to write, but the lease has run out since (the agent was dead, paused
        # or frozen for longer than a lease): the region is fenced, and unfences like any fenced region.
        prev_writable, prev_streak = False, 0
    eligible_since = memory.pop("eligible_since", None)
    own = conn.execute(f"SELECT selected FROM {HEARTBEAT_TABLE} WHERE node = %s", (settings.region,)).fetchone()
    prev_selected = _selections(own[0]) if own else {}
    # Observed after the heartbeats: at worst fresher than the moment the lease is anchored to.
    links, down, increase = _data_links(conn, settings, memory, observed)
    guard = _guard_problem(conn)
    seq = max(int(prev_seq) + 1, int(observed * 1_000_000))
    a = assess(
        settings.region, settings.regions, rows=rows, links_healthy=[p for p, h in links.items() if h.healthy],
        seq=seq, stale_after_s=settings.stale_after_s, control_on=control_on, previous_writable=prev_writable,
        previous_streak=int(prev_streak), unfence_after=settings.unfence_after, next_regions=settings.regions_next or None,
        previous_selected=prev_selected, observed_s=observed,
        previous_eligible_since=float(eligible_since) if isinstance(eligible_since, (int, float)) else None,
        unfence_hold_s=unfence_hold(probe_s=settings.probe_s, stale_after_s=settings.stale_after_s,
                                    lease_s=settings.lease_s))
    decision = a.decision
    if decision.eligible_since is not None:
        memory["eligible_since"] = decision.eligible_since
    writable = decision.writable and not guard
    failpoints.pause("agent.after_observe")
    relay = {o: {"seq": e.seq, "hears": sorted(e.hears), "age_ms": round(e.age_s * 1000, 1),
                 "selected": {k: sorted(v) for k, v in e.selected.items()}} for o, e in a.relay.items()}
    reason = guard or f"quorum: {decision.reason}; majority {sorted(decision.majority)}"
    params = {
        "until": observed + settings.lease_s if writable else None,
        "observed": observed,
        "reason": reason,
        "holder": holder,
        "me": settings.region,
        "seq": seq,
        "writable": writable,
        "state_reason": decision.reason if not guard else "guard_unsafe",
        "streak": decision.healthy_streak,
        "majority": sorted(decision.majority),
        "memory": json.dumps(memory),
        "traffic_out": prev_traffic_out if traffic_out is None else traffic_out,
        "hold_s": holder_until_s if holder_until_s is not None else 0.0,
        "hears": sorted(a.hears | {settings.region}),
        "relay": json.dumps(relay),
        "selected": json.dumps({k: sorted(v) for k, v in decision.selected.items()}),
        "membership": settings.membership,
        "warming": warming,
    }
    # Delete and insert, not upsert: a peer whose subscription started after this row was first
    # inserted (a copy promoted and subscribed while its agent already beat) would skip every
    # later UPDATE as update_missing and never hear this node. Deletes are not published; the
    # peers' apply trigger turns the INSERT into an update of the row they have (control.sql).
    # The lease comes last: if anything before it fails, nothing was granted.
    statements = (
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
    with psycopg_client_cursor(conn) as cur:
        cur.execute(statements, params)
    ended = 0 if writable else int(conn.execute(f"SELECT {SCHEMA}.end_writes()").fetchone()[0])
    return ProbeResult(
        decision=decision,
        changed=prev_writable is None or bool(prev_writable) != writable,
        hears=a.hears,
        links=links,
        lag_s=_replay_lag(conn, settings),
        slots_lost=int(conn.execute("SELECT count(*) FROM pg_catalog.pg_replication_slots "
                                    "WHERE wal_status = 'lost'").fetchone()[0]),
        subscriptions_down=down,
        apply_error_increase=increase,
        elapsed_s=time.monotonic() - t0,
        evidence={p: {"heartbeat_age_s": round(r.age_s, 3), "link_healthy": links[p].healthy if p in links else False}
                  for p in settings.everyone if p != settings.region for r in rows if r.node == p},
        view={r: sorted(v) for r, v in a.view.items()},
        writable=writable,
        guard=guard,
        writes_ended=ended,
    )


def _guard_problem(conn: Any) -> str:
    """Why the write guard cannot hold on this server, or ''. A writer with such a problem is never
    granted a lease (the check refuses its writes anyway; this says why, in the agent's reason)."""
    prepared, = conn.execute("SELECT current_setting('max_prepared_transactions')::integer").fetchone()
    if prepared:
        return ("guard: max_prepared_transactions is not 0: COMMIT PREPARED commits without any lease check; "
                "set it to 0 in the parameter group")
    return ""


def psycopg_client_cursor(conn: Any) -> Any:
    """A cursor that binds parameters client-side, so several statements travel in one message and
    run as one implicit transaction (server-side binding allows one statement per message)."""
    import psycopg

    return psycopg.ClientCursor(conn)


@dataclass
class Maintenance:
    """What the agent's periodic housekeeping did (see ``maintain``)."""

    parked: int
    merged_from_parked: int = 0
    tombstones_purged: int = 0
    changes_purged: int = 0
    errors: list[str] = field(default_factory=list)


def maintain(conn: Any, *, full: bool) -> Maintenance:
    """Housekeeping between probes (the watermark, what this writer has applied so peers can purge
    tombstones safely, goes out with every probe): with ``full``, retry parked changes and purge
    what is safe to purge.

    A failure here is logged and retried next time; it never stops the lease loop.
    """
    errors: list[str] = []

    def run(sql: str) -> Any:
        try:
            return conn.execute(sql).fetchone()
        except Exception as exc:  # noqa: BLE001 - housekeeping must not take the fence down
            errors.append(f"{sql.split('(')[0]}: {type(exc).__name__}")
            return None

    out = Maintenance(parked=0, errors=errors)  # the watermark goes out with every probe
    if full:
        retried = run("SELECT merged, still_parked FROM fraiseql_repl.retry_parked()")
        if retried:
            out.merged_from_parked = int(retried[0])
        out.tombstones_purged = int((run("SELECT fraiseql_repl.purge_tombstones()") or (0,))[0])
        out.changes_purged = int((run("SELECT fraiseql_repl.purge_changes()") or (0,))[0])
        run("SELECT fraiseql_repl.compact_resolutions()")
    parked = run("SELECT count(*) FROM fraiseql_repl.parked WHERE sqlstate <> 'FQ004'")
    out.parked = int(parked[0]) if parked else -1
    return out


class VerifySide:
    """Verify rounds through the control channel, on their own connection and thread, so that hashing
    a large table never delays the lease. Each round (every ``verify_every_s``): publish this writer's
    bucket digests at the round's horizon; a third of a round later, the keys of buckets that differ
    from a peer's; two thirds later, count the keys that really differ (``DivergedRows``)."""

    def __init__(self, settings: Settings, connect: Callable[[], Any], aws: "AwsSide",
                 log: Callable[[Mapping[str, Any]], None] = lambda rec: None) -> None:
        self.settings, self._connect, self._aws, self._log = settings, connect, aws, log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fraiseql-agent-verify", daemon=True)

    def start(self) -> "VerifySide":
        if self.settings.verify_every_s > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        s = self.settings
        period = s.verify_every_s
        conn = None
        done: set[tuple[int, str]] = set()
        while not self._stop.wait(max(period / 6, 0.2)):
            try:
                if conn is None:
                    conn = self._connect()
                    conn.execute("SET statement_timeout = '120s'")
                now, = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
                rnd = int(now // period)
                phase = (now - rnd * period) / period
                horizon = rnd * period - s.verify_margin_s
                if (rnd, "digests") not in done:
                    conn.execute("SELECT fraiseql_repl.publish_digests(%s, to_timestamp(%s), %s)",
                                 (rnd, horizon, s.verify_buckets))
                    done.add((rnd, "digests"))
                elif phase >= 1 / 3 and (rnd, "keys") not in done:
                    conn.execute("SELECT fraiseql_repl.publish_key_details(%s, %s)", (rnd, s.verify_buckets))
                    done.add((rnd, "keys"))
                elif phase >= 2 / 3 and (rnd, "count") not in done:
                    n, = conn.execute("SELECT count(DISTINCT (table_name, pk)) FROM fraiseql_repl.diverged_keys(%s, "
                                      "to_timestamp(%s))", (rnd, horizon)).fetchone()
                    self._aws.offer_diverged(int(n))
                    if n:
                        self._log({"event": "diverged_rows", "region": s.region, "round": rnd, "rows": int(n)})
                    conn.execute("SELECT fraiseql_repl.purge_digests()")
                    done = {d for d in done if d[0] >= rnd}
                    done.add((rnd, "count"))
            except Exception as exc:  # noqa: BLE001 - verify is best effort; retried next time
                self._log({"event": "verify_failed", "region": s.region, "error": type(exc).__name__})
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


# -- the AWS side -------------------------------------------------------------------------------


class AwsSide:
    """Routing control, metrics and the traffic path, on a daemon thread with short timeouts.

    The lease loop reads ``control_on()`` (last known state; ``None`` if never known) and hands
    over a metrics snapshot and the wanted traffic state; nothing here can block it.
    """

    def __init__(self, settings: Settings, *, client: Optional[Callable[..., Any]] = None,
                 log: Callable[[dict[str, Any]], None] = lambda rec: None) -> None:
        self.settings = settings
        self._client = client or _boto3_client
        self._log = log
        self._lock = threading.Lock()
        self._control: Optional[bool] = None
        self._snapshot: Optional[dict[str, Any]] = None
        self._apply_errors = 0
        self._want_out: Optional[bool] = None
        self._parked: Optional[int] = None
        self._diverged: Optional[int] = None
        self._is_out: Optional[bool] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fraiseql-agent-aws", daemon=True)

    # called from the lease loop
    def start(self, traffic_out: bool) -> "AwsSide":
        self._is_out = traffic_out
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def control_on(self) -> Optional[bool]:
        with self._lock:
            return self._control

    def traffic_out(self) -> Optional[bool]:
        with self._lock:
            return self._is_out

    def offer_diverged(self, rows: int) -> None:
        with self._lock:
            self._diverged = rows

    def offer_maintenance(self, kept: "Maintenance") -> None:
        with self._lock:
            self._parked = kept.parked if kept.parked >= 0 else None

    def offer(self, result: ProbeResult) -> None:
        with self._lock:
            self._apply_errors += result.apply_error_increase
            self._snapshot = {"result": result}
            self._want_out = not result.writable

    # the thread
    def _run(self) -> None:
        next_metrics = 0.0
        while not self._stop.is_set():
            t = time.monotonic()
            self._poll_control()
            self._steer_traffic()
            if t >= next_metrics:
                self._publish()
                next_metrics = t + self.settings.metrics_every_s
            self._stop.wait(max(0.05, self.settings.probe_s - (time.monotonic() - t)))

    def _poll_control(self) -> None:
        s = self.settings
        if not s.routing_control_arn:
            return
        for ep in s.arc_endpoints:  # every cluster endpoint in turn, as AWS recommends
            try:
                client = self._client("route53-recovery-cluster", region_name=ep["region"], endpoint_url=ep["endpoint"])
                state = client.get_routing_control_state(RoutingControlArn=s.routing_control_arn)["RoutingControlState"]
            except Exception as exc:  # noqa: BLE001 - the next endpoint may answer
                self._log({"event": "arc_endpoint_failed", "endpoint": ep.get("endpoint"), "error": type(exc).__name__})
                continue
            with self._lock:
                self._control = state == "On"
            return
        # No endpoint answered: keep the last known state (the operator's last intent).

    def _steer_traffic(self) -> None:
        s = self.settings
        with self._lock:
            want, have = self._want_out, self._is_out
        if not s.fence_rule_arn or want is None or want == have:
            return
        condition = (
            {"Field": "path-pattern", "PathPatternConfig": {"Values": [s.health_path]}}
            if want
            else {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": IN_SERVICE_HEADER, "Values": [IN_SERVICE_VALUE]}}
        )
        try:
            self._client("elbv2", region_name=s.region).modify_rule(RuleArn=s.fence_rule_arn, Conditions=[condition])
        except Exception as exc:  # noqa: BLE001 - retried on the next round
            self._log({"event": "traffic_steer_failed", "out": want, "error": type(exc).__name__})
            return
        with self._lock:
            self._is_out = want
        self._log({"event": "traffic_out" if want else "traffic_in", "region": s.region})

    def _publish(self) -> None:
        s = self.settings
        with self._lock:
            snap, errors, parked, diverged = self._snapshot, self._apply_errors, self._parked, self._diverged
            self._apply_errors = 0
        region = [{"Name": "Region", "Value": s.region}]
        data: list[dict[str, Any]] = [{"MetricName": "AgentAlive", "Dimensions": region, "Value": 1}]
        lag: list[dict[str, Any]] = []
        if snap is not None:
            r: ProbeResult = snap["result"]
            d = r.decision
            data += [
                {"MetricName": "Fenced", "Dimensions": region, "Value": 0 if r.writable else 1},
                {"MetricName": "VisibleRegions", "Dimensions": region, "Value": len(d.sees)},
                {"MetricName": "QuorumReduced", "Dimensions": region, "Value": 1 if d.quorum_reduced or not d.majority else 0},
            ]
            lag = [
                {"MetricName": "ApplyErrors", "Dimensions": region, "Value": errors},
                {"MetricName": "SubscriptionsDown", "Dimensions": region, "Value": r.subscriptions_down},
                {"MetricName": "SlotsLost", "Dimensions": region, "Value": r.slots_lost},
            ] + ([{"MetricName": "ParkedChanges", "Dimensions": region, "Value": parked}] if parked is not None else []) + (
                [{"MetricName": "DivergedRows", "Dimensions": region, "Value": diverged}] if diverged is not None else []) + [
                {"MetricName": "LagSeconds", "Dimensions": [{"Name": "Publisher", "Value": s.region},
                                                            {"Name": "Subscriber", "Value": sub}], "Value": v}
                for sub, v in r.lag_s.items()
                if v is not None  # no walsender: publish nothing, the alarm treats missing as breaching
            ]
        try:
            cw = self._client("cloudwatch", region_name=s.region)
            cw.put_metric_data(Namespace=QUORUM_NAMESPACE, MetricData=data)
            if lag:
                cw.put_metric_data(Namespace=REPLICATION_NAMESPACE, MetricData=lag)
        except Exception as exc:  # noqa: BLE001 - metrics are best effort; the lease is not
            with self._lock:
                self._apply_errors += errors
            self._log({"event": "metrics_failed", "error": type(exc).__name__})


def _boto3_client(service: str, **kw: Any) -> Any:
    import boto3
    from botocore.config import Config

    cfg = Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1, "mode": "standard"})
    return boto3.client(service, config=cfg, **kw)


# -- the loop and the entry points -------------------------------------------------------------


def _log_stdout(record: Mapping[str, Any]) -> None:
    print(json.dumps({"ts": round(time.time(), 3), **record}, default=str), flush=True)


def run_loop(conn: Any, settings: Settings, aws: AwsSide, *, remaining_s: Callable[[], float], holder: str,
             sleep: Callable[[float], None] = time.sleep, log: Callable[[Mapping[str, Any]], None] = _log_stdout) -> Optional[ProbeResult]:
    """Probe every ``probe_s`` until less than ``stop_margin_s`` of the invocation is left."""
    last: Optional[ProbeResult] = None
    next_watermark = next_full = 0.0
    started = time.monotonic()
    while remaining_s() > settings.stop_margin_s:
        t = time.monotonic()
        waiting = newer_configuration_waiting(conn, settings)
        if waiting:
            log({"event": "handover", "region": settings.region, "membership": settings.membership, "to": waiting})
            hand_over(conn, settings)
            break
        result = probe(conn, settings, control_on=aws.control_on(), holder=holder,
                       holder_until_s=max(remaining_s() - settings.stop_margin_s, 0.0), traffic_out=aws.traffic_out(),
                       warming=t - started < settings.stale_after_s + settings.probe_s)
        aws.offer(result)
        if t >= next_watermark:
            full = t >= next_full
            kept = maintain(conn, full=full)
            aws.offer_maintenance(kept)
            if kept.errors or kept.merged_from_parked or kept.tombstones_purged:
                log({"event": "maintenance", "region": settings.region, **asdict(kept)})
            next_watermark = t + settings.watermark_every_s
            if full:
                next_full = t + settings.maintenance_every_s
        d = result.decision
        if result.changed or last is None or (d.reason, d.sees, d.majority, result.guard) != (
                last.decision.reason, last.decision.sees, last.decision.majority, last.guard):
            log({"event": "decision", "region": settings.region, "writable": result.writable,
                 "reason": "guard_unsafe" if result.guard else d.reason, "majority": sorted(d.majority),
                 "sees": sorted(d.sees), "alert": result.guard or d.alert, "hears": sorted(result.hears),
                 "evidence": result.evidence, "view": result.view})
        if result.writes_ended:
            log({"event": "writes_ended", "region": settings.region, "transactions": result.writes_ended})
        last = result
        sleep(max(0.0, settings.probe_s - (time.monotonic() - t)))
    return last


def newer_configuration_waiting(conn: Any, settings: Settings) -> str:
    """The membership of a newer invocation waiting for the loop, or ''."""
    row = conn.execute(
        f"SELECT waiting_membership FROM {AGENT_STATE_TABLE} WHERE singleton AND waiting_membership <> '' "
        "AND waiting_membership <> %s AND waiting_membership <> retired_membership AND waiting_since > holder_since",
        (settings.membership,)).fetchone()
    return str(row[0]) if row else ""


def hand_over(conn: Any, settings: Settings) -> None:
    """Give the loop to the newer configuration waiting for it, now rather than after this
    invocation's teardown; this membership is retired and is not handed the loop back."""
    conn.execute(f"UPDATE {AGENT_STATE_TABLE} SET retired_membership = %s WHERE singleton", (settings.membership,))
    conn.execute(f"SELECT pg_advisory_unlock({LOCK_SQL})")


def acquire_loop(conn: Any, settings: Settings) -> Optional[str]:
    """Take the agent loop (the advisory lock), or say why not. A holder running another membership
    that started before this invocation is asked to hand over: after a deploy the new configuration
    runs within a probe or two, not when the old invocation reaches its deadline. The configuration
    a holder handed over from never displaces it (an old invocation started after the handover, while
    the deploy was still rolling out): it waits for the holder's invocation to end."""
    started, = conn.execute("SELECT clock_timestamp()").fetchone()
    got = bool(conn.execute(f"SELECT pg_try_advisory_lock({LOCK_SQL})").fetchone()[0])
    # Only an agent run may hold it: a session of another role is ended (any role can take an
    # advisory lock, and one that sat on it would keep every agent run from starting).
    if not got and conn.execute(f"SELECT {SCHEMA}.evict_loop_squatters()").fetchone()[0]:
        time.sleep(0.2)
        got = bool(conn.execute(f"SELECT pg_try_advisory_lock({LOCK_SQL})").fetchone()[0])
    if not got:
        left, since, retired, running = conn.execute(
            f"SELECT extract(epoch FROM holder_until - clock_timestamp())::float8, holder_since, retired_membership, "
            f"(SELECT membership FROM {HEARTBEAT_TABLE} WHERE node = %s) FROM {AGENT_STATE_TABLE}",
            (settings.region,)).fetchone()
        newer = (running is not None and running != settings.membership and settings.membership != retired
                 and started > since)
        if newer:
            conn.execute(f"UPDATE {AGENT_STATE_TABLE} SET waiting_membership = %s, waiting_since = %s WHERE singleton",
                         (settings.membership, started))
        elif left is not None and left > settings.handoff_wait_s:
            return "another invocation holds the agent loop"
        # The connection's statement timeout (5 s) would end the wait long before the hand-over window.
        wait_ms = int((settings.handoff_wait_s + 10) * 1000)
        conn.execute(f"SET lock_timeout = '{wait_ms}ms'; SET statement_timeout = '{wait_ms + 1000}ms'")
        try:
            conn.execute(f"SELECT pg_advisory_lock({LOCK_SQL})")
        except Exception:  # noqa: BLE001 - lock_timeout: the holder is still busy; the next run retries
            return "timed out waiting for the holder to hand over"
        finally:
            conn.execute("SET lock_timeout = 0; SET statement_timeout = '5s'")
    conn.execute(f"UPDATE {AGENT_STATE_TABLE} SET holder_since = %s, waiting_membership = CASE WHEN waiting_membership = %s "
                 "THEN '' ELSE waiting_membership END WHERE singleton", (started, settings.membership))
    return None


def _connect(settings: Settings, user: str, password: str) -> Any:
    import psycopg

    # verify-full against the RDS CA bundle the layer ships: the writer proves it is the writer.
    rootcert = os.environ.get("FRAISEQL_DB_SSLROOTCERT")
    tls = {"sslrootcert": rootcert} if rootcert and settings.db_sslmode.startswith("verify") else {}
    conn = psycopg.connect(
        host=settings.db_host, port=settings.db_port, dbname=settings.db_name, user=user, password=password,
        sslmode=settings.db_sslmode, autocommit=True, connect_timeout=5, **tls,
        # A frozen or vanished agent must release the advisory lock quickly.
        keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
        application_name=f"fraiseql-agent-{settings.region}",
    )
    conn.execute("SET statement_timeout = '5s'; SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; "
                 "SET tcp_keepalives_count = 3")
    return conn


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """AWS Lambda entry (also what ``main`` runs locally): hold the agent loop until near the deadline."""
    settings = Settings.from_env(os.environ)
    remaining = lambda: context.get_remaining_time_in_millis() / 1000.0  # noqa: E731
    holder = getattr(context, "aws_request_id", "") or f"pid-{os.getpid()}"
    secret = json.loads(_boto3_client("secretsmanager", region_name=settings.region)
                        .get_secret_value(SecretId=settings.db_secret_arn)["SecretString"])
    conn = _connect(settings, secret["username"], secret["password"])
    try:
        skipped = acquire_loop(conn, settings)
        if skipped:
            return {"region": settings.region, "skipped": skipped}
        state = conn.execute(f"SELECT traffic_out FROM {AGENT_STATE_TABLE} WHERE singleton").fetchone()
        aws = AwsSide(settings, log=_log_stdout).start(traffic_out=bool(state and state[0]))
        checker = VerifySide(settings, lambda: _connect(settings, secret["username"], secret["password"]), aws,
                             log=_log_stdout).start()
        try:
            last = run_loop(conn, settings, aws, remaining_s=remaining, holder=holder)
        finally:
            checker.stop()
            aws.stop()
        d = last.decision if last else None
        return {"region": settings.region, "fenced": not (last and last.writable), "reason": d.reason if d else None}
    finally:
        conn.close()  # also releases the advisory lock


@dataclass
class LocalContext:
    """What the Lambda runtime passes as ``context``, for local runs."""

    deadline: float
    aws_request_id: str = field(default_factory=lambda: f"local-{os.getpid()}-{time.monotonic_ns()}")

    def get_remaining_time_in_millis(self) -> int:
        return int(max(0.0, self.deadline - time.monotonic()) * 1000)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m replication.agent [--run-seconds N]``: invoke ``handler`` back to back, as the
    scheduler does, until interrupted. Configuration comes from the same environment as the Lambda."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m replication.agent", description=main.__doc__)
    parser.add_argument("--run-seconds", type=float, default=900.0, help="length of one invocation (Lambda timeout)")
    args = parser.parse_args(argv)
    while True:
        try:
            out = handler({}, LocalContext(deadline=time.monotonic() + args.run_seconds))
            _log_stdout({"event": "invocation_done", **out})
        except KeyboardInterrupt:
            return 0
        except Exception as exc:  # noqa: BLE001 - like a failed invocation: the next one starts over
            _log_stdout({"event": "invocation_failed", "error": f"{type(exc).__name__}: {exc}"[:300]})
            time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
