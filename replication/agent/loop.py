"""The lease loop, and how invocations hand it over (one loop per writer, through an advisory lock)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Optional

from replication.agent.aws_side import AwsSide
from replication.agent.maintenance import evict_bucket_squatters
from replication.agent.probing import ProbeResult, probe
from replication.agent.settings import Settings
from replication.sql import AGENT_STATE_TABLE, HEARTBEAT_TABLE, SCHEMA

__all__ = ["LOCK_SQL", "acquire_loop", "hand_over", "newer_configuration_waiting", "run_loop"]

#: pg_advisory_lock key: "one agent loop per writer" (hashtext('fraiseql_repl.agent')).
LOCK_SQL = "hashtext('fraiseql_repl.agent')"


def _log_stdout(record: Mapping[str, Any]) -> None:
    print(json.dumps({"ts": round(time.time(), 3), **record}, default=str), flush=True)


def run_loop(conn: Any, settings: Settings, aws: AwsSide, *, remaining_s: Callable[[], float], holder: str,
             sleep: Callable[[float], None] = time.sleep, log: Callable[[Mapping[str, Any]], None] = _log_stdout) -> Optional[ProbeResult]:
    """Probe every ``probe_s`` until less than ``stop_margin_s`` of the invocation is left. Nothing
    else runs between two beats but the squatter eviction (the housekeeping and the verify rounds
    have threads of their own): peers tell a late beat from a cut link only by its age."""
    last: Optional[ProbeResult] = None
    eviction_failed = False
    started = time.monotonic()
    while remaining_s() > settings.stop_margin_s:
        t = time.monotonic()
        waiting = newer_configuration_waiting(conn, settings)
        if waiting:
            log({"event": "handover", "region": settings.region, "membership": settings.membership, "to": waiting})
            hand_over(conn, settings)
            break
        spent: dict[str, float] = {}
        result = probe(conn, settings, control_on=aws.control_on(), holder=holder,
                       holder_until_s=max(remaining_s() - settings.stop_margin_s, 0.0), traffic_out=aws.traffic_out(),
                       warming=t - started < settings.stale_after_s + settings.probe_s)
        aws.offer(result)
        spent["probe"] = time.monotonic() - t
        evicted = evict_bucket_squatters(conn)
        spent["evict"] = time.monotonic() - t - sum(spent.values())
        if evicted > 0:
            log({"event": "bucket_squatters", "region": settings.region, "ended": evicted})
        elif evicted < 0 and not eviction_failed:
            log({"event": "bucket_squatters_failed", "region": settings.region})
        eviction_failed = evicted < 0
        if time.monotonic() - t > settings.probe_s:
            # the next beat is late by this much: where the time went
            log({"event": "late_beat", "region": settings.region,
                 "spent": {k: round(v, 3) for k, v in spent.items()}})
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
