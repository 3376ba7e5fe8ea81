"""The per-region fence agent: turns what this writer can see into a fence decision.

Every `FRAISEQL_PROBE_INTERVAL_SECONDS` the agent:
1. reads the heartbeat rows its writer has received from peers through replication. A fresh row from
   peer P means P -> me works, and P's row lists whom P receives from, so the replicated table
   carries every region's view to every other region;
2. writes its own heartbeat (who I receive from). Heartbeats are replicated but never fenced;
3. calls `replication.quorum.decide` with those views and this region's ARC routing control;
4. fences or unfences its writer (`render_fence`) when the decision changes;
5. publishes VisibleRegions, Fenced and per-subscriber LagSeconds (from pg_stat_replication.replay_lag,
   measured on this publisher's own clock) to CloudWatch.

The Lambda runs once a minute and probes until its next run, so detection takes at most
`probe_interval + stale_after` seconds, not a minute.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from replication.model import Node
from replication.quorum import Decision, decide
from replication.sql import HEARTBEAT_TABLE, SCHEMA, render_fence, subscription_name

METRIC_NAMESPACE = "FraiseQL/Quorum"
LAG_NAMESPACE = "FraiseQL/Replication"


def stale_after(probe_interval_s: float) -> float:
    """A peer is gone when three heartbeats in a row are missing."""
    return 3 * probe_interval_s


def observe(conn: Any, me: str, regions: Sequence[str], stale_after_s: float) -> dict[str, set[str]]:
    """Each region's view (itself included), as far as this writer can tell right now."""
    rows = conn.execute(
        f"SELECT node, extract(epoch FROM clock_timestamp() - ts)::float8, sees FROM {HEARTBEAT_TABLE}"
    ).fetchall()
    fresh = {node: set(sees or ()) for node, age, sees in rows if node != me and node in regions and age <= stale_after_s}
    reachable: dict[str, set[str]] = {me: {me, *fresh}}
    for peer, sees in fresh.items():
        reachable[peer] = {peer, *(s for s in sees if s in regions)}
    return reachable


def beat(conn: Any, me: str, sees: Sequence[str]) -> None:
    conn.execute(
        f"INSERT INTO {HEARTBEAT_TABLE} (node, ts, sees) VALUES (%s, clock_timestamp(), %s) "
        "ON CONFLICT (node) DO UPDATE SET ts = EXCLUDED.ts, sees = EXCLUDED.sees",
        (me, list(sees)),
    )


def is_fenced(conn: Any) -> bool:
    return bool(conn.execute(f"SELECT fenced FROM {SCHEMA}.fence WHERE singleton").fetchone()[0])


def replay_lag(conn: Any, me: Node, peers: Sequence[Node]) -> dict[str, Optional[float]]:
    """Seconds each subscriber trails this publisher; None when its walsender is gone (link down)."""
    rows = dict(
        conn.execute(
            "SELECT application_name, coalesce(extract(epoch FROM replay_lag), 0)::float8 FROM pg_stat_replication"
        ).fetchall()
    )
    return {p.name: rows.get(subscription_name(p, me)) for p in peers if p.name != me.name}


@dataclass
class StepResult:
    decisions: dict[str, Decision]
    fenced: bool
    changed: bool
    lag: dict[str, Optional[float]]


def step(conn: Any, me: Node, nodes: Sequence[Node], *, control_on: Optional[bool],
         previous: Optional[Mapping[str, Decision]], unfence_after: int, probe_interval_s: float) -> StepResult:
    """One probe: observe, beat, decide, fence or unfence. `conn` is an autocommit connection."""
    regions = [n.name for n in nodes]
    reachable = observe(conn, me.name, regions, stale_after(probe_interval_s))
    beat(conn, me.name, sorted(reachable[me.name]))
    controls = None if control_on is None else {me.name: control_on}
    decisions = decide(regions, reachable, controls, previous, unfence_after=unfence_after)
    mine = decisions[me.name]
    was = is_fenced(conn)
    if mine.fenced != was:
        for stmt in render_fence(mine.fenced, mine.reason if mine.fenced else ""):
            conn.execute(stmt)
    return StepResult(decisions, mine.fenced, mine.fenced != was, replay_lag(conn, me, nodes))


def _routing_control_state(arn: str, endpoints: Sequence[Mapping[str, str]]) -> Optional[bool]:
    """This region's ARC control, trying each cluster endpoint; None if none answers.

    An unreachable control plane must not fence a healthy majority by itself: the data-plane
    quorum still holds, so None means "no opinion".
    """
    import boto3  # the Lambda runtime has it

    for ep in endpoints:
        try:
            client = boto3.client("route53-recovery-cluster", region_name=ep["region"], endpoint_url=ep["endpoint"])
            state = client.get_routing_control_state(RoutingControlArn=arn)["RoutingControlState"]
            return state == "On"
        except Exception:  # noqa: BLE001 - try the next endpoint, as AWS recommends
            continue
    return None


def _metrics(region: str, result: StepResult) -> list[dict[str, Any]]:
    mine = result.decisions[region]
    data = [
        {"MetricName": "VisibleRegions", "Dimensions": [{"Name": "Region", "Value": region}], "Value": len(mine.sees)},
        {"MetricName": "Fenced", "Dimensions": [{"Name": "Region", "Value": region}], "Value": 1 if result.fenced else 0},
    ]
    return data


def _lag_metrics(region: str, lag: Mapping[str, Optional[float]]) -> list[dict[str, Any]]:
    return [
        {
            "MetricName": "LagSeconds",
            "Dimensions": [{"Name": "Publisher", "Value": region}, {"Name": "Subscriber", "Value": sub}],
            "Value": seconds,
        }
        for sub, seconds in lag.items()
        if seconds is not None  # no walsender: publish nothing, the alarm treats missing as breaching
    ]


def handler(event: Mapping[str, Any], context: Any, *, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    import boto3
    import psycopg

    env = os.environ
    region = env["FRAISEQL_REGION"]
    regions = env["FRAISEQL_REGIONS"].split(",")
    interval = float(env["FRAISEQL_PROBE_INTERVAL_SECONDS"])
    controls = json.loads(env["FRAISEQL_ROUTING_CONTROLS"])
    endpoints = json.loads(env["FRAISEQL_ARC_ENDPOINTS"])
    port, dbname = int(env["FRAISEQL_DB_PORT"]), env["FRAISEQL_DB_NAME"]
    nodes = [Node(name=r, region=r, host="", port=port, dbname=dbname) for r in regions]
    me = next(n for n in nodes if n.name == region)
    secret = json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=env["FRAISEQL_DB_SECRET_ARN"])["SecretString"])
    cloudwatch = boto3.client("cloudwatch")
    previous: Optional[dict[str, Decision]] = None
    steps = 0
    with psycopg.connect(host=env["FRAISEQL_DB_HOST"], port=port, dbname=dbname, user=secret["username"],
                         password=secret["password"], sslmode="require", autocommit=True, connect_timeout=5) as conn:
        while True:
            result = step(conn, me, nodes, control_on=_routing_control_state(controls[region], endpoints),
                          previous=previous, unfence_after=int(env["FRAISEQL_UNFENCE_AFTER"]), probe_interval_s=interval)
            previous = result.decisions
            steps += 1
            cloudwatch.put_metric_data(Namespace=METRIC_NAMESPACE, MetricData=_metrics(region, result))
            lag = _lag_metrics(region, result.lag)
            if lag:
                cloudwatch.put_metric_data(Namespace=LAG_NAMESPACE, MetricData=lag)
            if context.get_remaining_time_in_millis() < (interval + 10) * 1000:
                break
            sleep(interval)
    mine = previous[region] if previous else None
    return {"region": region, "steps": steps, "fenced": bool(mine and mine.fenced), "reason": mine.reason if mine else None}
