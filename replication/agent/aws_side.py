"""The AWS side: routing control, the ALB rule that takes a fenced region out of the traffic path, and
CloudWatch metrics, on a daemon thread with short timeouts. Nothing here can delay the lease."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Optional

from replication.agent.maintenance import Maintenance
from replication.agent.probing import ProbeResult
from replication.agent.settings import Settings

__all__ = ["IN_SERVICE_HEADER", "IN_SERVICE_VALUE", "QUORUM_NAMESPACE", "REPLICATION_NAMESPACE", "AwsSide"]

QUORUM_NAMESPACE = "FraiseQL/Quorum"
REPLICATION_NAMESPACE = "FraiseQL/Replication"
#: The ALB rule that takes a fenced region out of the traffic path matches this header while the
#: region is in service: no request carries it.
IN_SERVICE_HEADER = "x-fraiseql-fence"
IN_SERVICE_VALUE = "region-in-service"


class AwsSide:
    """Routing control, metrics and the traffic path, on a daemon thread with short timeouts.

    The lease loop reads ``control_on()`` (last known state; ``None`` if never known) and hands
    over a metrics snapshot and the wanted traffic state; nothing here can block it.
    """

    def __init__(self, settings: Settings, *, client: Optional[Callable[..., Any]] = None,
                 log: Callable[[Mapping[str, Any]], None] = lambda rec: None) -> None:
        self.settings = settings
        self._client = client or _boto3_client
        self._log = log
        self._lock = threading.Lock()
        self._control: Optional[bool] = None
        #: the newest probe, for the metrics
        self._snapshot: Optional[ProbeResult] = None
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

    def offer_maintenance(self, kept: Maintenance) -> None:
        with self._lock:
            self._parked = kept.parked if kept.parked >= 0 else None

    def offer(self, result: ProbeResult) -> None:
        with self._lock:
            self._apply_errors += result.apply_error_increase
            self._snapshot = result
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
            if self._stop.is_set():  # the invocation is ending, and waits for this thread
                return
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
            r, errors, parked, diverged = self._snapshot, self._apply_errors, self._parked, self._diverged
            self._apply_errors = 0
        region = [{"Name": "Region", "Value": s.region}]
        data: list[dict[str, Any]] = [{"MetricName": "AgentAlive", "Dimensions": region, "Value": 1}]
        lag: list[dict[str, Any]] = []
        if r is not None:
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

