"""AWS reads and writes shared by the runbooks, and the injectable runtime they run in.

`Runtime` bundles everything a test replaces: the client factory (moto, Stubber or fault injection),
sleep and clocks, the jitter source, the environment, stdout, the HTTP opener and the health-check
status provider.
"""

from __future__ import annotations

import os
import random
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Optional, TextIO

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from ops import log
from ops.retry import RetryingClient, RetryPolicy, error_code, is_connection_error

# Route 53 is a global service whose control plane is in us-east-1.
ROUTE53_REGION = "us-east-1"
# Route 53 calls an endpoint healthy when more than 18% of its checkers report it healthy.
HEALTHY_CHECKER_FRACTION = 0.18

ClientFactory = Callable[[str, str, Optional[str]], Any]
# Raw endpoint health of a Route 53 health check (before Inverted/Disabled): True, False or None (unknown).
HealthStatusProvider = Callable[[str], Optional[bool]]


def default_client_factory(service: str, region: str, endpoint_url: Optional[str] = None) -> Any:
    config = Config(
        # The runbook's RetryPolicy is the only retry layer (bounded, reported, injectable).
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=5,
        read_timeout=30,
    )
    return boto3.client(service, region_name=region, endpoint_url=endpoint_url, config=config)


@dataclass
class Runtime:
    out: TextIO = field(default_factory=lambda: sys.stdout)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    client_factory: ClientFactory = default_client_factory
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    rng: random.Random = field(default_factory=random.Random)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    urlopen: Callable[..., Any] = urllib.request.urlopen
    health_status: Optional[HealthStatusProvider] = None
    retry_attempts: int = 5

    def __post_init__(self) -> None:
        self._clients: dict[tuple[str, str, Optional[str]], RetryingClient] = {}
        self.reporter: Optional[log.Reporter] = None

    def start(self, json_mode: bool, rto_s: Optional[float] = None) -> log.Reporter:
        self.reporter = log.Reporter(self.out, json_mode, self.clock, rto_s)
        return self.reporter

    def policy(self, connection_attempts: int = 3) -> RetryPolicy:
        def on_retry(op: str, n: int, of: int, exc: BaseException, wait: float) -> None:
            if self.reporter:
                why = error_code(exc) or type(exc).__name__
                self.reporter.emit("retry", log.RETRY, f"{op}: {why}; retry {n}/{of} in {wait:.2f} s", op=op, error=why, wait_s=round(wait, 3))

        return RetryPolicy(sleep=self.sleep, rng=self.rng, attempts=self.retry_attempts,
                           connection_attempts=connection_attempts, on_retry=on_retry)

    def client(self, service: str, region: str, endpoint_url: Optional[str] = None, connection_attempts: int = 3) -> Any:
        """A client for `service` in `region` (or at `endpoint_url`) whose calls retry per RetryPolicy."""
        key = (service, region, endpoint_url)
        if key not in self._clients:
            self._clients[key] = RetryingClient(self.client_factory(service, region, endpoint_url), self.policy(connection_attempts))
        return self._clients[key]

    def route53(self) -> Any:
        return self.client("route53", ROUTE53_REGION)


# --- RDS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DbState:
    identifier: str
    region: str
    reachable: bool = True
    exists: bool = True
    status: Optional[str] = None
    source: Optional[str] = None  # ReadReplicaSourceDBInstanceIdentifier: set while it is a replica
    address: Optional[str] = None
    security_groups: tuple[str, ...] = ()
    error: Optional[str] = None

    @property
    def is_replica(self) -> bool:
        return self.source is not None

    @property
    def available(self) -> bool:
        return self.status == "available"

    def brief(self) -> str:
        if not self.reachable:
            return f"{self.identifier} ({self.region}): RDS API unreachable ({self.error})"
        if not self.exists:
            return f"{self.identifier} ({self.region}): not found"
        role = f"replica of {self.source}" if self.is_replica else "writer (not a replica)"
        return f"{self.identifier} ({self.region}): {self.status}, {role}, security groups {', '.join(self.security_groups) or 'none'}"


def describe_db(rt: Runtime, region: str, identifier: str) -> DbState:
    """The instance as RDS sees it; an unreachable API or a missing instance is a state, not an error."""
    try:
        resp = rt.client("rds", region).describe_db_instances(DBInstanceIdentifier=identifier)
    except ClientError as e:
        if error_code(e) == "DBInstanceNotFound":
            return DbState(identifier, region, exists=False)
        raise
    except Exception as e:  # noqa: BLE001
        if is_connection_error(e):
            return DbState(identifier, region, reachable=False, error=str(e))
        raise
    db = resp["DBInstances"][0]
    return DbState(
        identifier=identifier,
        region=region,
        status=db.get("DBInstanceStatus"),
        source=db.get("ReadReplicaSourceDBInstanceIdentifier") or None,
        address=(db.get("Endpoint") or {}).get("Address"),
        security_groups=tuple(g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups", [])),
    )


# --- Route 53 ----------------------------------------------------------------------------------


def _fqdn(name: str) -> str:
    return name.rstrip(".").lower() + "."


def read_cname(rt: Runtime, zone_id: str, name: str) -> Optional[str]:
    resp = rt.route53().list_resource_record_sets(
        HostedZoneId=zone_id, StartRecordName=name, StartRecordType="CNAME", MaxItems="1"
    )
    for rrs in resp.get("ResourceRecordSets", []):
        if _fqdn(rrs["Name"]) == _fqdn(name) and rrs["Type"] == "CNAME":
            values = [r["Value"] for r in rrs.get("ResourceRecords", [])]
            return values[0].rstrip(".") if values else None
    return None


def same_host(a: Optional[str], b: Optional[str]) -> bool:
    return a is not None and b is not None and _fqdn(a) == _fqdn(b)


def upsert_cname_change(zone_id: str, name: str, target: str, ttl: int, comment: str) -> dict[str, Any]:
    return {
        "HostedZoneId": zone_id,
        "ChangeBatch": {
            "Comment": comment,
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {"Name": name, "Type": "CNAME", "TTL": ttl, "ResourceRecords": [{"Value": target}]},
                }
            ],
        },
    }


@dataclass(frozen=True)
class HealthState:
    health_check_id: str
    raw: Optional[bool]  # what the checkers see at the endpoint
    inverted: bool
    disabled: bool
    interval_s: Optional[int] = None
    failure_threshold: Optional[int] = None

    @property
    def healthy(self) -> Optional[bool]:
        """What Route 53 routes on: a disabled check counts as healthy, an inverted one flips."""
        if self.disabled:
            return True
        if self.raw is None:
            return None
        return self.raw != self.inverted

    def brief(self) -> str:
        word = {True: "healthy", False: "unhealthy", None: "unknown"}[self.healthy]
        notes = [n for n, on in (("inverted", self.inverted), ("disabled", self.disabled)) if on]
        return f"{word}" + (f" ({', '.join(notes)}; endpoint itself {'up' if self.raw else 'down' if self.raw is False else 'unknown'})" if notes else "")


def api_health_status(rt: Runtime) -> HealthStatusProvider:
    """Raw endpoint health from GetHealthCheckStatus: the checkers' observations, before inversion."""

    def provider(health_check_id: str) -> Optional[bool]:
        obs = rt.route53().get_health_check_status(HealthCheckId=health_check_id).get("HealthCheckObservations", [])
        if not obs:
            return None
        ok = sum(1 for o in obs if str(o.get("StatusReport", {}).get("Status", "")).startswith("Success"))
        return ok / len(obs) > HEALTHY_CHECKER_FRACTION

    return provider


def health(rt: Runtime, health_check_id: str) -> HealthState:
    cfg = rt.route53().get_health_check(HealthCheckId=health_check_id)["HealthCheck"]["HealthCheckConfig"]
    provider = rt.health_status or api_health_status(rt)
    return HealthState(
        health_check_id=health_check_id,
        raw=provider(health_check_id),
        inverted=bool(cfg.get("Inverted", False)),
        disabled=bool(cfg.get("Disabled", False)),
        interval_s=cfg.get("RequestInterval"),
        failure_threshold=cfg.get("FailureThreshold"),
    )


# --- CloudWatch --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LagReading:
    seconds: Optional[float]
    at: Optional[datetime]
    peak: Optional[float]  # the highest datapoint in the look-back window


def replica_lag(rt: Runtime, region: str, identifier: str, lookback_s: float = 300) -> LagReading:
    """The latest `AWS/RDS ReplicaLag` (Maximum per minute) of a replica within the look-back window."""
    now = rt.now()
    resp = rt.client("cloudwatch", region).get_metric_statistics(
        Namespace="AWS/RDS",
        MetricName="ReplicaLag",
        Dimensions=[{"Name": "DBInstanceIdentifier", "Value": identifier}],
        StartTime=now - timedelta(seconds=lookback_s),
        EndTime=now + timedelta(seconds=60),
        Period=60,
        Statistics=["Maximum"],
    )
    points = sorted(resp.get("Datapoints", []), key=lambda d: d["Timestamp"])
    if not points:
        return LagReading(None, None, None)
    return LagReading(float(points[-1]["Maximum"]), points[-1]["Timestamp"], max(float(p["Maximum"]) for p in points))


def alarms_in_alarm(rt: Runtime, region: str) -> list[str]:
    names: list[str] = []
    token: Optional[str] = None
    while True:
        kwargs: dict[str, Any] = {"StateValue": "ALARM"}
        if token:
            kwargs["NextToken"] = token
        resp = rt.client("cloudwatch", region).describe_alarms(**kwargs)
        names += [a["AlarmName"] for a in resp.get("MetricAlarms", []) + resp.get("CompositeAlarms", [])]
        token = resp.get("NextToken")
        if not token:
            return names


def alarm_arn_parts(arn: str) -> tuple[str, str]:
    """(region, alarm name) of `arn:aws:cloudwatch:REGION:ACCOUNT:alarm:NAME`."""
    parts = arn.split(":", 6)
    if len(parts) != 7 or parts[2] != "cloudwatch" or parts[5] != "alarm":
        raise ValueError(f"not a CloudWatch alarm ARN: {arn}")
    return parts[3], parts[6]
