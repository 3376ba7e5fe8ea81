"""`status` is read-only and reports what AWS says: lag vs RPO, health, writer, routing controls, alarms."""

from __future__ import annotations

import json
from pathlib import Path

from moto import mock_aws

from tests.ops.conftest import PRIMARY, PRIMARY_DB, REPLICA_DB, STANDBY, FakeHealth, Harness, PhaseA, aws, failover_args, run_cli
from tests.ops.test_ops_arc import ARNS, Arc, phase_b_outputs


def test_phase_a_status_before_and_after_a_failover(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    deployment.put_lag(12.0, 45.0, 70.0)
    aws("cloudwatch", STANDBY).set_alarm_state(AlarmName="fraiseql-db-replica-lag-us-west-2", StateValue="ALARM", StateReason="lag 70 s > 30 s")
    before = deployment.snapshot()
    result = run_cli(["status", "--outputs", str(deployment.path), "--json"], harness.runtime(failing_primary))

    assert result.code == 0
    assert harness.mutations() == [] and deployment.snapshot() == before
    lag = result.last("lag")
    assert lag["status"] == "warn" and lag["data"]["lag_s"] == 70.0 and lag["data"]["peak_s"] == 70.0 and lag["data"]["rpo_s"] == 60
    assert result.last("writer")["data"] == {"writer": PRIMARY_DB, "region": PRIMARY, "fenced": False}
    health = {e["data"]["region"]: e["data"]["healthy"] for e in result.steps("health")}
    assert health == {PRIMARY: False, STANDBY: True}
    assert result.last("cname")["data"]["instance"] == PRIMARY_DB
    assert result.last("alarms")["data"]["alarms"] == {STANDBY: ["fraiseql-db-replica-lag-us-west-2"]}
    dbs = {e["data"]["role"]: e["data"] for e in result.steps("db")}
    assert dbs["standby"]["replica_of"] == deployment.outputs["primaryDbArn"] and dbs["primary"]["replica_of"] is None

    assert run_cli(failover_args(deployment, "--force"), harness.runtime(failing_primary)).code == 0
    after = run_cli(["status", "--outputs", str(deployment.path), "--json"], harness.runtime(failing_primary))
    assert after.last("writer")["data"] == {"writer": REPLICA_DB, "region": STANDBY, "fenced": True}
    assert after.last("cname")["data"]["instance"] == REPLICA_DB


def test_phase_a_status_flags_two_unfenced_writers(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    aws("rds", STANDBY).promote_read_replica(DBInstanceIdentifier=REPLICA_DB)  # someone promoted by hand
    result = run_cli(["status", "--outputs", str(deployment.path), "--json"], harness.runtime(failing_primary))
    assert result.code == 0
    writer = result.last("writer")
    assert writer["status"] == "warn" and "TWO WRITERS" in writer["detail"]


def test_phase_b_status_reports_quorum_and_replication_alarms(tmp_path: Path, harness: Harness) -> None:
    arc = Arc(harness)
    arc.get("us-west-2", {"eu-west-1": "On", "us-east-1": "Off", "us-west-2": "On"})
    with mock_aws():
        outputs = phase_b_outputs()
        hcs = {}
        for region, ident in outputs["writerDbIdentifiers"].items():
            aws("rds", region).create_db_instance(
                DBInstanceIdentifier=ident, Engine="postgres", DBInstanceClass="db.m6g.large", AllocatedStorage=20,
                MasterUsername="fraiseql", MasterUserPassword="not-a-real-one",
            )
            hcs[region] = aws("route53").create_health_check(
                CallerReference=f"b-{region}",
                HealthCheckConfig={"Type": "HTTPS", "FullyQualifiedDomainName": f"alb.{region}.example.com", "Port": 443, "ResourcePath": "/health"},
            )["HealthCheck"]["Id"]
        outputs["healthCheckIds"] = hcs
        cw = aws("cloudwatch", "us-west-2")
        cw.put_metric_alarm(AlarmName="fraiseql-lag-us-east-1-us-west-2", Namespace="FraiseQL", MetricName="ReplicationLag",
                            Statistic="Maximum", Period=60, EvaluationPeriods=1, Threshold=0.1, ComparisonOperator="GreaterThanThreshold")
        cw.set_alarm_state(AlarmName="fraiseql-lag-us-east-1-us-west-2", StateValue="ALARM", StateReason="test")
        path = tmp_path / "b.json"
        path.write_text(json.dumps(outputs))
        health = FakeHealth({hcs["us-east-1"]: False, hcs["us-west-2"]: True, hcs["eu-west-1"]: True})
        result = run_cli(["status", "--outputs", str(path), "--json"], harness.runtime(health))

    assert result.code == 0, result.text
    routing = result.last("routing")
    assert routing["data"] == {"states": {"eu-west-1": "On", "us-east-1": "Off", "us-west-2": "On"}, "on": 2, "quorum": 2}
    assert routing["status"] == "ok" and "quorum 2 met" in routing["detail"]
    assert result.last("lag")["data"]["alarms"] == {"us-east-1->us-west-2": "ALARM"}
    assert {e["data"]["region"] for e in result.steps("db")} == set(ARNS)
    arc.verify()


def _observations(*statuses: str) -> dict:
    return {"HealthCheckObservations": [
        {"Region": r, "IPAddress": "192.0.2.1", "StatusReport": {"Status": s}} for r, s in zip(("us-east-1", "us-west-2", "eu-west-1"), statuses)
    ]}


def test_default_health_provider_reads_checker_observations() -> None:
    """Without an injected provider, health comes from GetHealthCheckStatus: healthy above 18% of checkers."""
    from botocore.stub import Stubber

    from ops.aws import Runtime, api_health_status, default_client_factory

    client = default_client_factory("route53", "us-east-1")
    stub = Stubber(client)
    ok, bad = "Success: HTTP Status Code 200, OK", "Failure: HTTP Status Code 503, Service Unavailable"
    for resp in (_observations(ok, bad, bad), _observations(bad, bad, bad), {"HealthCheckObservations": []}):
        stub.add_response("get_health_check_status", resp, {"HealthCheckId": "hc-1"})
    stub.activate()
    provider = api_health_status(Runtime(client_factory=lambda *a: client))
    assert provider("hc-1") is True  # 1 of 3 checkers (33%) is over Route 53's 18%
    assert provider("hc-1") is False
    assert provider("hc-1") is None
    stub.assert_no_pending_responses()


# --- slot health (issue 12) ----------------------------------------------------------------------

def _lose_a_slot(node) -> None:
    """A peer away past max_slot_wal_keep_size: its slot falls behind, and the next checkpoint drops its WAL."""
    node.execute("SELECT pg_create_logical_replication_slot('fq_eu_west_1_from_us_east_1', 'pgoutput')")
    node.execute("CREATE TABLE churn (v text)")
    for _ in range(4):
        node.execute("INSERT INTO churn SELECT repeat('x', 1000) FROM generate_series(1, 2000)")
        node.execute("SELECT pg_switch_wal()")
    node.execute("CHECKPOINT")
    node.execute("SELECT pg_create_logical_replication_slot('fq_us_west_2_from_us_east_1', 'pgoutput')")


def test_phase_b_status_reads_slots_from_the_writer_it_can_reach_and_the_metric_otherwise(tmp_path: Path, harness: Harness) -> None:
    from drills.pg import cluster

    arc = Arc(harness)
    arc.get("us-west-2", {"eu-west-1": "On", "us-east-1": "On", "us-west-2": "On"})
    settings = {"wal_level": "logical", "max_slot_wal_keep_size": "1MB", "max_wal_size": "32MB", "min_wal_size": "32MB"}
    with cluster(["us-east-1"], settings=settings) as pg, mock_aws():
        _lose_a_slot(pg["us-east-1"])
        outputs = phase_b_outputs()
        for region, ident in outputs["writerDbIdentifiers"].items():
            aws("rds", region).create_db_instance(DBInstanceIdentifier=ident, Engine="postgres", DBInstanceClass="db.m6g.large",
                                                  AllocatedStorage=20, MasterUsername="fraiseql", MasterUserPassword="not-a-real-one")
            outputs["healthCheckIds"][region] = aws("route53").create_health_check(
                CallerReference=f"slots-{region}",
                HealthCheckConfig={"Type": "HTTPS", "FullyQualifiedDomainName": f"alb.{region}.example.com", "Port": 443},
            )["HealthCheck"]["Id"]
        for region, lost in (("us-west-2", 0.0), ("eu-west-1", 1.0)):
            aws("cloudwatch", region).put_metric_data(Namespace="FraiseQL/Replication", MetricData=[
                {"MetricName": "SlotsLost", "Dimensions": [{"Name": "Region", "Value": region}], "Value": lost}])
        path = tmp_path / "b.json"
        path.write_text(json.dumps(outputs))
        result = run_cli(["status", "--outputs", str(path), "--json", "--dsn", f"us-east-1={pg['us-east-1'].dsn}"],
                         harness.runtime(FakeHealth({hc: True for hc in outputs["healthCheckIds"].values()})))

    assert result.code == 0, result.text
    slots = {e["data"]["region"]: e for e in result.steps("slots")}
    east = slots["us-east-1"]
    assert east["status"] == "warn" and east["data"]["source"] == "database"
    assert east["data"]["lost"] == ["fq_eu_west_1_from_us_east_1"] and east["data"]["unreserved"] == []
    assert "wal_removed" in east["detail"] and "reseed" in east["detail"]
    assert (slots["eu-west-1"]["status"], slots["eu-west-1"]["data"]) == ("warn", {"region": "eu-west-1", "source": "metric", "lost": 1})
    assert (slots["us-west-2"]["status"], slots["us-west-2"]["data"]["lost"]) == ("ok", 0)
    assert harness.mutations() == []


def test_a_region_still_seeding_has_no_slots_to_report(harness: Harness) -> None:
    from ops.outputs import parse_outputs
    from ops.status import slot_health

    outputs = parse_outputs({**phase_b_outputs(), "seedingRegions": {"eu-west-1": "us-east-1"}})
    rt = harness.runtime()
    rt.start(True)
    with mock_aws():
        slot_health(outputs, rt, {}, 300)  # type: ignore[arg-type]
    reported = {e["data"]["region"]: e["status"] for e in rt.reporter.events if e["step"] == "slots"}  # type: ignore[union-attr]
    assert reported == {"us-east-1": "info", "us-west-2": "info"}
