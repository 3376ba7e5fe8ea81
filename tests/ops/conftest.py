"""Fixtures for the runbook tests: a phase A deployment built in moto, and an injectable runtime.

Moto gaps, and what these fixtures do about them (docs/runbooks.md repeats this):
- `promote_read_replica` in moto 5.2 flips its internal replica flag but keeps
  ReadReplicaSourceDBInstanceIdentifier, which is how RDS (and the runbook) tells a replica from a
  writer. `moto_promotion_clears_source` patches moto's backend to clear it, as RDS does.
- `get_health_check_status` always reports every checker healthy and ignores `Inverted`. The runbook
  takes an injectable raw-status provider (Runtime.health_status); tests use `FakeHealth`. The
  Inverted/Disabled flags still come from moto's real `get_health_check`.
- RDS instances are `available` at once (no `modifying` phase); the polling wait is tested by
  injecting statuses through a client wrapper.
Cross-region read replicas work in moto when the source is given by ARN (as the program does).
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import pytest
from moto import mock_aws

from ops.aws import Runtime, default_client_factory
from ops.cli import main

ACCOUNT = "123456789012"
PRIMARY, STANDBY = "us-east-1", "us-west-2"
PRIMARY_DB, REPLICA_DB = "fraiseql-db-primary-us-east-1-4f2a", "fraiseql-db-replica-us-west-2-9c1d"
WRITER_HOST = "writer.db.phase-a.fraiseql.internal"
MUTATING = {
    ("rds", "modify_db_instance"),
    ("rds", "reboot_db_instance"),
    ("ecs", "update_service"),
    ("application-autoscaling", "register_scalable_target"),
    ("rds", "promote_read_replica"),
    ("route53", "change_resource_record_sets"),
    ("route53", "update_health_check"),
    ("sns", "publish"),
}


# One client per (service, region, endpoint) for the whole session: botocore client creation is the
# slow part of these tests, and a client made after moto is imported is mocked whenever a mock is active.
_CLIENTS: dict[tuple[str, str, Optional[str]], Any] = {}


def aws(service: str, region: str = PRIMARY, endpoint_url: Optional[str] = None) -> Any:
    key = (service, region, endpoint_url)
    if key not in _CLIENTS:
        _CLIENTS[key] = default_client_factory(service, region, endpoint_url)
    return _CLIENTS[key]


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": PRIMARY,
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # The fixtures need VPCs and security groups, not moto's catalogue of public AMIs.
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


@pytest.fixture
def moto_promotion_clears_source(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.rds.models import RDSBackend

    original = RDSBackend.promote_read_replica

    def promote(self: Any, db_kwargs: dict[str, Any]) -> Any:
        db = self.databases[db_kwargs["db_instance_identifier"]]
        source = db.source_db_instance_identifier if db.is_replica else None
        result = original(self, db_kwargs)
        if source:
            db.source_db_instance_identifier = None
            src = self.find_db_from_id(source)
            for ref in (db.db_instance_arn, db.db_instance_identifier):
                if ref in src.replicas:
                    src.replicas.remove(ref)
        return result

    monkeypatch.setattr(RDSBackend, "promote_read_replica", promote)


class FakeClock:
    """monotonic() and sleep() that only move when the code sleeps: waits run instantly."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.t += seconds


class FakeHealth:
    """Raw endpoint health per health-check id (moto cannot set it); None = no observations."""

    def __init__(self, states: dict[str, Optional[bool]]):
        self.states = states

    def __call__(self, health_check_id: str) -> Optional[bool]:
        return self.states[health_check_id]


@dataclass
class Call:
    service: str
    region: str
    op: str
    params: dict[str, Any]


class Recording:
    """Wraps a real (moto-backed) client: records every call, and can inject errors or replies."""

    def __init__(self, client: Any, service: str, region: str, harness: "Harness"):
        self._client, self._service, self._region, self._h = client, service, region, harness

    @property
    def meta(self) -> Any:
        return self._client.meta

    @property
    def exceptions(self) -> Any:
        return self._client.exceptions

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name.startswith("_") or not callable(attr) or name in ("get_waiter", "get_paginator", "can_paginate"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._h.calls.append(Call(self._service, self._region, name, kwargs))
            for key in ((self._service, self._region, name), (self._service, None, name)):
                queue = self._h.faults.get(key)
                if queue:
                    fault = queue.pop(0)
                    if isinstance(fault, BaseException):
                        raise fault
                    if callable(fault):
                        return fault(attr, kwargs)
            return attr(*args, **kwargs)

        return call


@dataclass
class Harness:
    clock: FakeClock = field(default_factory=FakeClock)
    calls: list[Call] = field(default_factory=list)
    # (service, region or None, op) -> errors to raise / callables(real_method, params) to answer, in order
    faults: dict[tuple[str, Optional[str], str], list[Any]] = field(default_factory=dict)
    stubs: dict[tuple[str, str, Optional[str]], Any] = field(default_factory=dict)

    def factory(self, service: str, region: str, endpoint_url: Optional[str] = None) -> Any:
        if (service, region, endpoint_url) in self.stubs:
            return self.stubs[(service, region, endpoint_url)]
        return Recording(aws(service, region, endpoint_url), service, region, self)

    def inject(self, service: str, op: str, *faults: Any, region: Optional[str] = None) -> None:
        self.faults.setdefault((service, region, op), []).extend(faults)

    def mutations(self) -> list[Call]:
        return [c for c in self.calls if (c.service, c.op) in MUTATING]

    def ops(self, service: str, op: str) -> list[Call]:
        return [c for c in self.calls if c.service == service and c.op == op]

    def runtime(self, health: Optional[FakeHealth] = None, environ: Optional[dict[str, str]] = None, **kw: Any) -> Runtime:
        return Runtime(
            out=io.StringIO(),
            client_factory=self.factory,
            sleep=self.clock.sleep,
            clock=self.clock,
            rng=random.Random(7),
            health_status=health,
            environ=environ if environ is not None else {},
            **kw,
        )


@dataclass
class Result:
    code: int
    events: list[dict[str, Any]]
    text: str

    def steps(self, step: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["step"] == step]

    def last(self, step: str) -> dict[str, Any]:
        return self.steps(step)[-1]


def run_cli(args: list[str], rt: Runtime) -> Result:
    code = main(args, rt)
    text = rt.out.getvalue()  # type: ignore[attr-defined]
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")] if "--json" in args else []
    return Result(code, events, text)


@dataclass
class PhaseA:
    outputs: dict[str, Any]
    path: Path
    queue_url: str

    def rds(self, region: str) -> Any:
        return aws("rds", region)

    def db(self, region: str, ident: str) -> dict[str, Any]:
        return self.rds(region).describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]

    def cname(self) -> Optional[str]:
        rrs = aws("route53").list_resource_record_sets(
            HostedZoneId=self.outputs["dbPrivateZoneId"], StartRecordName=WRITER_HOST, StartRecordType="CNAME", MaxItems="1"
        )["ResourceRecordSets"]
        hit = [r for r in rrs if r["Name"].rstrip(".") == WRITER_HOST and r["Type"] == "CNAME"]
        return hit[0]["ResourceRecords"][0]["Value"] if hit else None

    def hc_config(self, region: str) -> dict[str, Any]:
        return aws("route53").get_health_check(HealthCheckId=self.outputs["healthCheckIds"][region])["HealthCheck"]["HealthCheckConfig"]

    def snapshot(self) -> dict[str, Any]:
        """Everything a failover could change, as AWS (moto) reports it."""
        p, s = self.db(PRIMARY, PRIMARY_DB), self.db(STANDBY, REPLICA_DB)
        return {
            "primary": (p["DBInstanceStatus"], p.get("ReadReplicaSourceDBInstanceIdentifier"), [g["VpcSecurityGroupId"] for g in p["VpcSecurityGroups"]]),
            "standby": (s["DBInstanceStatus"], s.get("ReadReplicaSourceDBInstanceIdentifier"), [g["VpcSecurityGroupId"] for g in s["VpcSecurityGroups"]]),
            "cname": self.cname(),
            "hc": {r: (self.hc_config(r).get("Inverted"), self.hc_config(r).get("Disabled")) for r in (PRIMARY, STANDBY)},
            "private_zone": aws("route53").list_resource_record_sets(HostedZoneId=self.outputs["dbPrivateZoneId"])["ResourceRecordSets"],
        }

    def notifications(self) -> list[str]:
        sqs = aws("sqs", STANDBY)
        msgs = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"])["Subject"] for m in msgs]

    def put_lag(self, *values: float, identifier: str = REPLICA_DB) -> None:
        """ReplicaLag datapoints, oldest first, one a minute, the last one now."""
        now = datetime.now(timezone.utc)
        n = len(values)
        aws("cloudwatch", STANDBY).put_metric_data(
            Namespace="AWS/RDS",
            MetricData=[
                {
                    "MetricName": "ReplicaLag",
                    "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": identifier}],
                    "Value": v,
                    "Unit": "Seconds",
                    "Timestamp": now - timedelta(seconds=60 * (n - 1 - i) + 5),
                }
                for i, v in enumerate(values)
            ],
        )

    def write(self, outputs: Optional[dict[str, Any]] = None) -> str:
        self.path.write_text(json.dumps(outputs or self.outputs))
        return str(self.path)


def build_phase_a(tmp_path: Path) -> PhaseA:
    """A phase A deployment in moto, shaped like infra/program.py's, and its stack outputs."""
    vpcs, db_sg, fence_sg = _network()
    secret, primary, replica = _databases(db_sg)
    public, hcs, private = _dns(vpcs, primary["Endpoint"]["Address"])
    clusters, services = _services()
    topics, queue_url, alarm_arn = _alerts()
    outputs = {
        "phase": "a",
        "regions": {PRIMARY: "primary", STANDBY: "standby"},
        "primaryRegion": PRIMARY,
        "standbyRegion": STANDBY,
        "apiUrl": "https://api.example.com",
        "zoneId": public,
        "recordName": "api.example.com",
        "primaryDbIdentifier": PRIMARY_DB,
        "primaryDbArn": primary["DBInstanceArn"],
        "primaryDbAddress": primary["Endpoint"]["Address"],
        "replicaDbIdentifiers": {STANDBY: REPLICA_DB},
        "replicaDbAddresses": {STANDBY: replica["Endpoint"]["Address"]},
        "dbSecretArn": secret,
        "dbPrivateZoneId": private,
        "dbWriterHostname": WRITER_HOST,
        "dbSecurityGroupIds": db_sg,
        "fenceSecurityGroupIds": fence_sg,
        "healthCheckIds": hcs,
        "replicaLagAlarmArns": {STANDBY: alarm_arn},
        "alertTopicArns": topics,
        "clusterNames": clusters,
        "serviceNames": services,
        "slo": {"rtoSeconds": 300, "rpoSeconds": 60, "lagAlarmSeconds": 30},
        "budgetName": "fraiseql-phase-a",
    }
    env = PhaseA(outputs=outputs, path=tmp_path / "outputs.json", queue_url=queue_url)
    env.write()
    env.put_lag(4.0, 3.0, 2.0)
    return env


def _network() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Each region's VPC and its database and fence security groups."""
    ec2 = {r: aws("ec2", r) for r in (PRIMARY, STANDBY)}
    vpcs = {r: ec2[r].create_vpc(CidrBlock=c)["Vpc"]["VpcId"] for r, c in ((PRIMARY, "10.10.0.0/16"), (STANDBY, "10.20.0.0/16"))}
    db_sg = {r: ec2[r].create_security_group(GroupName="fraiseql-sg-db", Description="db", VpcId=vpcs[r])["GroupId"] for r in vpcs}
    fence_sg = {r: ec2[r].create_security_group(GroupName="fraiseql-sg-fence", Description="fence", VpcId=vpcs[r])["GroupId"] for r in vpcs}
    return vpcs, db_sg, fence_sg


def _databases(db_sg: dict[str, str]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The master secret, the primary, and its cross-region read replica (source given by ARN)."""
    secret = aws("secretsmanager", PRIMARY).create_secret(
        Name="rds!db-fraiseql", SecretString=json.dumps({"username": "fraiseql", "password": "not-a-real-one"})
    )["ARN"]
    rds_p, rds_s = aws("rds", PRIMARY), aws("rds", STANDBY)
    primary = rds_p.create_db_instance(
        DBInstanceIdentifier=PRIMARY_DB, Engine="postgres", EngineVersion="18", DBInstanceClass="db.m6g.xlarge",
        AllocatedStorage=100, MasterUsername="fraiseql", MasterUserPassword="not-a-real-one", VpcSecurityGroupIds=[db_sg[PRIMARY]],
        BackupRetentionPeriod=7, MultiAZ=True, StorageEncrypted=True, DBName="fraiseql",
    )["DBInstance"]
    replica = rds_s.create_db_instance_read_replica(
        DBInstanceIdentifier=REPLICA_DB, SourceDBInstanceIdentifier=primary["DBInstanceArn"], DBInstanceClass="db.m6g.large",
        VpcSecurityGroupIds=[db_sg[STANDBY]],
    )["DBInstance"]
    assert replica["ReadReplicaSourceDBInstanceIdentifier"] == primary["DBInstanceArn"]
    return secret, primary, replica


def _dns(vpcs: dict[str, str], primary_address: str) -> tuple[str, dict[str, str], str]:
    """The public zone's failover records and health checks, and the private zone's writer CNAME:
    (public zone id, health check id per region, private zone id)."""
    r53 = aws("route53")
    public = r53.create_hosted_zone(Name="example.com", CallerReference="public")["HostedZone"]["Id"].split("/")[-1]
    hcs = {}
    for r in (PRIMARY, STANDBY):
        hcs[r] = r53.create_health_check(
            CallerReference=f"hc-{r}",
            HealthCheckConfig={
                "Type": "HTTPS", "FullyQualifiedDomainName": f"fraiseql-alb-{r}.{r}.elb.amazonaws.com", "Port": 443,
                "ResourcePath": "/health", "RequestInterval": 10, "FailureThreshold": 3, "EnableSNI": True,
                "Regions": ["us-east-1", "us-west-2", "eu-west-1"],
            },
        )["HealthCheck"]["Id"]
    r53.change_resource_record_sets(
        HostedZoneId=public,
        ChangeBatch={"Changes": [
            {"Action": "CREATE", "ResourceRecordSet": {
                "Name": "api.example.com", "Type": "CNAME", "SetIdentifier": f"{role}-{r}", "Failover": role.upper(), "TTL": 60,
                "HealthCheckId": hcs[r], "ResourceRecords": [{"Value": f"fraiseql-alb-{r}.{r}.elb.amazonaws.com"}]}}
            for role, r in (("primary", PRIMARY), ("secondary", STANDBY))
        ]},
    )
    private = r53.create_hosted_zone(
        Name="db.phase-a.fraiseql.internal", CallerReference="private",
        VPC={"VPCRegion": PRIMARY, "VPCId": vpcs[PRIMARY]}, HostedZoneConfig={"PrivateZone": True, "Comment": "db"},
    )["HostedZone"]["Id"].split("/")[-1]
    r53.change_resource_record_sets(
        HostedZoneId=private,
        ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": {
            "Name": WRITER_HOST, "Type": "CNAME", "TTL": 5, "ResourceRecords": [{"Value": primary_address}]}}]},
    )
    return public, hcs, private


def _services() -> tuple[dict[str, str], dict[str, str]]:
    """Each region's ECS cluster and service, with its scalable target: (clusters, services)."""
    clusters, services = {}, {}
    for r in (PRIMARY, STANDBY):
        ecs = aws("ecs", r)
        clusters[r] = ecs.create_cluster(clusterName=f"fraiseql-{r}")["cluster"]["clusterName"]
        td = ecs.register_task_definition(family=f"fraiseql-{r}", containerDefinitions=[
            {"name": "fraiseql", "image": "ghcr.io/fraiseql/fraiseql:1.0.0", "memory": 512}])["taskDefinition"]["taskDefinitionArn"]
        services[r] = ecs.create_service(cluster=clusters[r], serviceName=f"fraiseql-app-{r}", taskDefinition=td,
                                         desiredCount=2)["service"]["serviceName"]
        aws("application-autoscaling", r).register_scalable_target(
            ServiceNamespace="ecs", ResourceId=f"service/{clusters[r]}/{services[r]}",
            ScalableDimension="ecs:service:DesiredCount", MinCapacity=2, MaxCapacity=6)
    return clusters, services


def _alerts() -> tuple[dict[str, str], str, str]:
    """Each region's alert topic, an on-call queue subscribed to the standby's, and the replica lag alarm:
    (topics, queue URL, alarm ARN)."""
    topics = {}
    for r in (PRIMARY, STANDBY):
        topics[r] = aws("sns", r).create_topic(Name=f"fraiseql-alerts-{r}")["TopicArn"]
    sqs = aws("sqs", STANDBY)
    queue_url = sqs.create_queue(QueueName="oncall")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws("sns", STANDBY).subscribe(TopicArn=topics[STANDBY], Protocol="sqs", Endpoint=queue_arn)

    cw = aws("cloudwatch", STANDBY)
    cw.put_metric_alarm(
        AlarmName="fraiseql-db-replica-lag-us-west-2", Namespace="AWS/RDS", MetricName="ReplicaLag",
        Dimensions=[{"Name": "DBInstanceIdentifier", "Value": REPLICA_DB}], Statistic="Maximum", Period=60,
        EvaluationPeriods=1, Threshold=30, ComparisonOperator="GreaterThanThreshold", TreatMissingData="breaching",
        AlarmActions=[topics[STANDBY]],
    )
    alarm_arn = cw.describe_alarms(AlarmNames=["fraiseql-db-replica-lag-us-west-2"])["MetricAlarms"][0]["AlarmArn"]
    return topics, queue_url, alarm_arn


@pytest.fixture
def deployment(tmp_path: Path, moto_promotion_clears_source: None):
    with mock_aws():
        yield build_phase_a(tmp_path)


@pytest.fixture
def harness() -> Harness:
    return Harness()


@pytest.fixture
def failing_primary(deployment: PhaseA) -> FakeHealth:
    """The usual incident: the primary's endpoint is down, the standby's is up."""
    hc = deployment.outputs["healthCheckIds"]
    return FakeHealth({hc[PRIMARY]: False, hc[STANDBY]: True})


def failover_args(env: PhaseA, *extra: str) -> list[str]:
    return ["failover", "--outputs", str(env.path), "--json", *extra]



class Loopback:
    """An HTTP server on 127.0.0.1 (ephemeral port) that records requests and plays canned replies."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.requests: list[dict[str, Any]] = []
        self.replies: list[tuple[int, dict[str, str], Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(raw or b"null")})
                status, headers, body = outer.replies.pop(0) if outer.replies else (200, {}, {"success": True, "errors": [], "messages": [], "result": {"id": "purge-ok"}})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def loopback():
    server = Loopback()
    try:
        yield server
    finally:
        server.stop()
