"""Phase A failover against a moto deployment: assertions are on AWS state and on the requests made."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto.rds.models import rds_backends

from tests.ops.conftest import (
    ACCOUNT,
    PRIMARY,
    PRIMARY_DB,
    REPLICA_DB,
    STANDBY,
    FakeHealth,
    Harness,
    PhaseA,
    aws,
    failover_args,
    run_cli,
)


def throttle(op: str, code: str = "Throttling") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "Rate exceeded"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, op)


def assert_failed_over(env: PhaseA) -> None:
    o = env.outputs
    primary, standby = env.db(PRIMARY, PRIMARY_DB), env.db(STANDBY, REPLICA_DB)
    assert [g["VpcSecurityGroupId"] for g in primary["VpcSecurityGroups"]] == [o["fenceSecurityGroupIds"][PRIMARY]]
    assert "ReadReplicaSourceDBInstanceIdentifier" not in standby
    assert standby["DBInstanceStatus"] == "available"
    assert env.cname() == o["replicaDbAddresses"][STANDBY]


def assert_untouched(env: PhaseA) -> None:
    o = env.outputs
    primary, standby = env.db(PRIMARY, PRIMARY_DB), env.db(STANDBY, REPLICA_DB)
    assert [g["VpcSecurityGroupId"] for g in primary["VpcSecurityGroups"]] == [o["dbSecurityGroupIds"][PRIMARY]]
    assert standby["ReadReplicaSourceDBInstanceIdentifier"] == o["primaryDbArn"]
    assert env.cname() == o["primaryDbAddress"]


def test_happy_path_prints_a_timeline_and_a_second_run_is_a_no_op(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    result = run_cli(["failover", "--outputs", str(deployment.path)], harness.runtime(failing_primary))

    assert result.code == 0, result.text
    assert_failed_over(deployment)
    # The exact requests: fence with the fence group only, promote the standby, UPSERT the writer CNAME (TTL 5).
    (modify,) = harness.ops("rds", "modify_db_instance")
    assert modify.region == PRIMARY
    assert modify.params == {"DBInstanceIdentifier": PRIMARY_DB, "VpcSecurityGroupIds": [deployment.outputs["fenceSecurityGroupIds"][PRIMARY]], "ApplyImmediately": True}
    (promote,) = harness.ops("rds", "promote_read_replica")
    assert (promote.region, promote.params) == (STANDBY, {"DBInstanceIdentifier": REPLICA_DB})
    (change,) = harness.ops("route53", "change_resource_record_sets")
    rrs = change.params["ChangeBatch"]["Changes"][0]
    assert change.params["HostedZoneId"] == deployment.outputs["dbPrivateZoneId"]
    assert rrs["Action"] == "UPSERT" and rrs["ResourceRecordSet"]["TTL"] == 5
    assert not harness.ops("route53", "update_health_check")  # the primary's check was already unhealthy
    assert deployment.hc_config(PRIMARY)["Inverted"] is False
    # The timeline: every step with its elapsed time, and the total against the RTO.
    assert "timeline (runbook clock):" in result.text
    for step in ("preflight", "fence", "promote", "redirect", "verify"):
        assert any(line.strip().startswith(step) and line.rstrip().endswith(" s") for line in result.text.splitlines()), step
    assert "within the RTO of 300 s" in result.text
    assert "/ 300s]" in result.text  # each progress line shows elapsed against the RTO
    # On-call was told, through the standby region's alert topic.
    assert deployment.notifications() == ["FraiseQL failover us-east-1 -> us-west-2 started", "FraiseQL failover to us-west-2 complete"]

    before = deployment.snapshot()
    harness.calls.clear()
    again = run_cli(failover_args(deployment), harness.runtime(failing_primary))
    assert again.code == 0
    assert harness.mutations() == []
    assert deployment.snapshot() == before
    assert again.last("failover")["status"] == "done"
    assert again.last("failover")["detail"].startswith("done: nothing to do")
    assert [e["step"] for e in again.events] == ["detect", "failover"]


def test_json_log_is_one_object_per_line_with_the_required_fields(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    result = run_cli(failover_args(deployment), harness.runtime(failing_primary))
    assert result.code == 0
    lines = result.text.splitlines()
    assert len(lines) == len(result.events) > 5
    for event in result.events:
        assert {"step", "status", "elapsed_s", "detail"} <= event.keys()
    timeline = result.last("timeline")["data"]
    assert [s["step"] for s in timeline["steps"]] == ["preflight", "fence", "promote", "redirect", "verify"]
    assert timeline["rto_s"] == 300 and timeline["detection_s"] == 10 * 3 + 60 and timeline["within_rto"] is True


def test_promotion_is_polled_with_backoff_until_writer_and_elapsed_time_is_reported(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    """Moto promotes at once; RDS goes through `modifying` first. Replay that, then let moto answer."""

    def still_modifying(real: Any, params: dict[str, Any]) -> dict[str, Any]:
        resp = copy.deepcopy(real(**params))
        resp["DBInstances"][0]["DBInstanceStatus"] = "modifying"
        resp["DBInstances"][0]["ReadReplicaSourceDBInstanceIdentifier"] = deployment.outputs["primaryDbArn"]
        return resp

    def promote_then_lag(real: Any, params: dict[str, Any]) -> dict[str, Any]:
        resp = real(**params)
        harness.inject("rds", "describe_db_instances", *[still_modifying] * 4, region=STANDBY)
        return resp

    harness.inject("rds", "promote_read_replica", promote_then_lag, region=STANDBY)
    result = run_cli(failover_args(deployment), harness.runtime(failing_primary))

    assert result.code == 0, result.text
    assert_failed_over(deployment)
    sleeps = harness.clock.sleeps
    assert len(sleeps) == 4
    # Jittered exponential backoff: each wait within [d/2, d] for d = 2, 4, 8, 16.
    for wait, d in zip(sleeps, (2, 4, 8, 16)):
        assert d / 2 <= wait <= d
    waits = [e for e in result.steps("promote") if e["detail"].startswith("waiting")]
    assert waits[0]["data"] == {"status": "modifying", "replica": True}
    promoted_at = result.last("promote")["elapsed_s"]
    assert promoted_at == pytest.approx(sum(sleeps), abs=1e-3)
    assert result.last("timeline")["data"]["runbook_s"] >= promoted_at


def test_promotion_timeout_fails_and_a_rerun_resumes_at_promote(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    def stuck(real: Any, params: dict[str, Any]) -> dict[str, Any]:
        resp = copy.deepcopy(real(**params))
        resp["DBInstances"][0].update(DBInstanceStatus="modifying", ReadReplicaSourceDBInstanceIdentifier=deployment.outputs["primaryDbArn"])
        return resp

    def promote_then_stuck(real: Any, params: dict[str, Any]) -> dict[str, Any]:
        resp = real(**params)
        harness.inject("rds", "describe_db_instances", *[stuck] * 50, region=STANDBY)
        return resp

    harness.inject("rds", "promote_read_replica", promote_then_stuck, region=STANDBY)
    result = run_cli(failover_args(deployment, "--promote-timeout", "60"), harness.runtime(failing_primary))

    assert result.code == 1
    assert "timed out after 60 s" in result.last("result")["detail"]
    assert result.last("result")["data"] == {"exit_code": 1, "step": "promote"}
    assert harness.clock() == pytest.approx(60, abs=1e-6)  # waited exactly up to the deadline
    assert env_cname_is_primary(deployment)

    # Re-run while RDS still reports the promotion under way (detect and the first poll), then done.
    harness.faults.clear()
    harness.calls.clear()
    harness.inject("rds", "describe_db_instances", stuck, stuck, region=STANDBY)
    again = run_cli(failover_args(deployment), harness.runtime(failing_primary))
    assert again.code == 0, again.text
    assert again.last("resume")["data"] == {"done": ["fence"], "start": "promote"}
    assert again.last("preflight")["status"] == "skip"
    assert not harness.ops("rds", "modify_db_instance")  # the fence from the first run is detected, not redone
    assert not harness.ops("rds", "promote_read_replica")  # nor is the promotion restarted
    assert_failed_over(deployment)


def env_cname_is_primary(env: PhaseA) -> bool:
    return env.cname() == env.outputs["primaryDbAddress"]


def test_lag_over_the_rpo_is_refused_and_force_proceeds(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    deployment.put_lag(20.0, 95.0)
    before = deployment.snapshot()

    refused = run_cli(failover_args(deployment), harness.runtime(failing_primary))
    assert refused.code == 3
    assert harness.mutations() == []
    assert deployment.snapshot() == before
    pre = refused.last("preflight")
    assert pre["status"] == "refused"
    assert pre["data"]["lag_s"] == 95.0 and pre["data"]["rpo_s"] == 60
    assert "over the RPO of 60 s" in pre["detail"]

    forced = run_cli(failover_args(deployment, "--force"), harness.runtime(failing_primary))
    assert forced.code == 0, forced.text
    assert forced.last("preflight")["status"] == "warn"
    assert_failed_over(deployment)


def test_no_lag_datapoint_means_unknown_data_loss_and_is_refused(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    from datetime import datetime, timedelta, timezone

    rt = harness.runtime(failing_primary, now=lambda: datetime.now(timezone.utc) + timedelta(hours=2))
    result = run_cli(failover_args(deployment), rt)
    assert result.code == 3
    assert "no ReplicaLag datapoint" in result.last("preflight")["detail"]
    assert harness.mutations() == []
    assert_untouched(deployment)


def test_unhealthy_standby_health_check_is_refused(deployment: PhaseA, harness: Harness) -> None:
    hc = deployment.outputs["healthCheckIds"]
    result = run_cli(failover_args(deployment), harness.runtime(FakeHealth({hc[PRIMARY]: False, hc[STANDBY]: False})))
    assert result.code == 3
    assert "the standby's health check" in result.last("preflight")["detail"]
    assert harness.mutations() == []
    assert_untouched(deployment)


def test_standby_instance_not_available_is_refused(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    rds_backends[ACCOUNT][STANDBY].databases[REPLICA_DB].status = "storage-full"
    result = run_cli(failover_args(deployment), harness.runtime(failing_primary))
    assert result.code == 3
    assert f"the standby {REPLICA_DB} is storage-full, not available" in result.last("preflight")["detail"]
    assert harness.mutations() == []
    assert_untouched(deployment)


def test_healthy_primary_is_refused_without_force(deployment: PhaseA, harness: Harness) -> None:
    hc = deployment.outputs["healthCheckIds"]
    healthy = FakeHealth({hc[PRIMARY]: True, hc[STANDBY]: True})
    before = deployment.snapshot()
    result = run_cli(failover_args(deployment), harness.runtime(healthy))
    assert result.code == 3
    assert "the primary does not look failed" in result.last("preflight")["detail"]
    assert harness.mutations() == []
    assert deployment.snapshot() == before


def test_force_with_a_healthy_primary_waits_for_the_fence_then_inverts_its_health_check(deployment: PhaseA, harness: Harness) -> None:
    hc = deployment.outputs["healthCheckIds"]
    healthy = FakeHealth({hc[PRIMARY]: True, hc[STANDBY]: True})
    result = run_cli(failover_args(deployment, "--force"), harness.runtime(healthy))

    assert result.code == 0, result.text
    assert_failed_over(deployment)
    assert deployment.hc_config(PRIMARY)["Inverted"] is True
    assert deployment.hc_config(STANDBY)["Inverted"] is False
    (update,) = harness.ops("route53", "update_health_check")
    assert update.params == {"HealthCheckId": hc[PRIMARY], "Inverted": True}
    # It first gave the fence 2 × interval × threshold = 60 s to fail the check on its own.
    assert harness.clock() == pytest.approx(60, abs=1e-6)
    inverted = [e for e in result.steps("redirect") if e.get("data", {}).get("inverted")]
    assert inverted and "Inverted=True" in inverted[0]["detail"] and "Revert it at failback" in inverted[0]["detail"]

    harness.calls.clear()
    assert run_cli(failover_args(deployment), harness.runtime(healthy)).code == 0
    assert harness.mutations() == []  # done: the inverted check reads unhealthy


def test_throttling_is_retried_with_backoff_and_succeeds(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    harness.inject("rds", "promote_read_replica", throttle("PromoteReadReplica"), throttle("PromoteReadReplica", "ThrottlingException"), region=STANDBY)
    harness.inject("route53", "change_resource_record_sets", throttle("ChangeResourceRecordSets", "PriorRequestNotComplete"))
    result = run_cli(failover_args(deployment), harness.runtime(failing_primary))

    assert result.code == 0, result.text
    assert len(harness.ops("rds", "promote_read_replica")) == 3
    assert len(harness.ops("route53", "change_resource_record_sets")) == 2
    retries = result.steps("retry")
    assert [r["data"]["error"] for r in retries] == ["Throttling", "ThrottlingException", "PriorRequestNotComplete"]
    # Backoff with jitter: retry n waits within [d/2, d] for d = 0.5 × 2^(n-1).
    assert 0.25 <= harness.clock.sleeps[0] <= 0.5 and 0.5 <= harness.clock.sleeps[1] <= 1.0
    assert_failed_over(deployment)


def test_throttling_is_bounded_then_fails_and_a_rerun_finishes(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    harness.inject("rds", "promote_read_replica", *[throttle("PromoteReadReplica")] * 5, region=STANDBY)
    result = run_cli(failover_args(deployment), harness.runtime(failing_primary))
    assert result.code == 1
    assert len(harness.ops("rds", "promote_read_replica")) == 5  # 5 attempts in all, then give up
    assert result.events[-1]["step"] == "result" and result.events[-1]["data"]["error"] == "Throttling"
    assert env_cname_is_primary(deployment)

    assert run_cli(failover_args(deployment), harness.runtime(failing_primary)).code == 0
    assert_failed_over(deployment)


def test_failure_between_promote_and_dns_then_rerun_resumes_at_redirect(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    boom = ClientError({"Error": {"Code": "InvalidChangeBatch", "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "ChangeResourceRecordSets")
    harness.inject("route53", "change_resource_record_sets", boom)
    first = run_cli(failover_args(deployment), harness.runtime(failing_primary))

    assert first.code == 1
    assert first.events[-1]["step"] == "result"
    assert "ChangeResourceRecordSets failed: InvalidChangeBatch" in first.events[-1]["detail"]
    assert "ReadReplicaSourceDBInstanceIdentifier" not in deployment.db(STANDBY, REPLICA_DB)  # promoted
    assert env_cname_is_primary(deployment)  # but the writer CNAME was not moved

    harness.calls.clear()
    second = run_cli(failover_args(deployment), harness.runtime(failing_primary))
    assert second.code == 0, second.text
    resume = second.last("resume")
    assert resume["data"] == {"done": ["fence", "promote"], "start": "redirect"}
    assert second.last("preflight")["status"] == "skip"
    assert not harness.ops("rds", "modify_db_instance") and not harness.ops("rds", "promote_read_replica")
    assert len(harness.ops("route53", "change_resource_record_sets")) == 1
    assert_failed_over(deployment)


def test_dry_run_changes_nothing_and_prints_the_exact_calls(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    before = deployment.snapshot()
    result = run_cli(failover_args(deployment, "--dry-run"), harness.runtime(failing_primary))

    assert result.code == 0, result.text
    assert deployment.snapshot() == before
    assert harness.mutations() == []
    assert deployment.notifications() == []
    would = {e["step"]: e["data"] for e in result.events if e["status"] == "would" and "call" in e.get("data", {})}
    assert would["fence"]["params"] == {"DBInstanceIdentifier": PRIMARY_DB, "VpcSecurityGroupIds": [deployment.outputs["fenceSecurityGroupIds"][PRIMARY]], "ApplyImmediately": True}
    assert would["promote"]["params"] == {"DBInstanceIdentifier": REPLICA_DB}
    change = would["redirect"]["params"]["ChangeBatch"]["Changes"][0]["ResourceRecordSet"]
    assert change == {"Name": deployment.outputs["dbWriterHostname"], "Type": "CNAME", "TTL": 5, "ResourceRecords": [{"Value": deployment.outputs["replicaDbAddresses"][STANDBY]}]}


def test_dry_run_reports_a_refusal_with_the_same_exit_code(deployment: PhaseA, harness: Harness) -> None:
    hc = deployment.outputs["healthCheckIds"]
    result = run_cli(failover_args(deployment, "--dry-run"), harness.runtime(FakeHealth({hc[PRIMARY]: True, hc[STANDBY]: True})))
    assert result.code == 3
    assert harness.mutations() == []


def test_partition_unreachable_primary_refuses_unfenced_promotion_unless_forced(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    down = [EndpointConnectionError(endpoint_url="https://rds.us-east-1.amazonaws.com/") for _ in range(40)]
    harness.inject("rds", "describe_db_instances", *down, region=PRIMARY)
    refused = run_cli(failover_args(deployment), harness.runtime(failing_primary))
    assert refused.code == 3, refused.text  # issue 13: no promotion without a fence, unless forced
    assert refused.last("fence")["status"] == "refused" and "--force" in refused.last("result")["detail"]
    assert not harness.ops("rds", "promote_read_replica")
    assert_untouched(deployment)

    result = run_cli(failover_args(deployment, "--force"), harness.runtime(failing_primary))
    assert result.code == 0, result.text
    fence = result.last("fence")
    assert fence["status"] == "warn"
    assert "WITHOUT fencing" in fence["detail"] and "SPLIT-BRAIN RISK" in fence["detail"]
    assert not harness.ops("rds", "modify_db_instance")
    primary = deployment.db(PRIMARY, PRIMARY_DB)
    assert [g["VpcSecurityGroupId"] for g in primary["VpcSecurityGroups"]] == [deployment.outputs["dbSecurityGroupIds"][PRIMARY]]
    assert "ReadReplicaSourceDBInstanceIdentifier" not in deployment.db(STANDBY, REPLICA_DB)
    assert deployment.cname() == deployment.outputs["replicaDbAddresses"][STANDBY]

    # The region answers again: a re-run applies the missing fence (and stops the old region's tasks).
    harness.faults.clear()
    harness.calls.clear()
    again = run_cli(failover_args(deployment), harness.runtime(failing_primary))
    assert again.code == 0
    assert [(c.service, c.op) for c in harness.mutations() if c.service != "sns"] == [
        ("rds", "modify_db_instance"), ("rds", "reboot_db_instance"),
        ("application-autoscaling", "register_scalable_target"), ("ecs", "update_service")]
    assert_failed_over(deployment)


def test_the_fence_cuts_open_connections_and_stops_the_old_regions_tasks(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    result = run_cli(failover_args(deployment), harness.runtime(failing_primary))
    assert result.code == 0, result.text
    order = [(c.service, c.op) for c in harness.mutations() if c.service in ("rds", "ecs", "application-autoscaling")]
    assert order[:4] == [("rds", "modify_db_instance"), ("rds", "reboot_db_instance"),
                         ("application-autoscaling", "register_scalable_target"), ("ecs", "update_service")]
    assert order[4] == ("rds", "promote_read_replica")  # promotion only after the fence is in effect
    (reboot,) = harness.ops("rds", "reboot_db_instance")
    assert (reboot.region, reboot.params) == (PRIMARY, {"DBInstanceIdentifier": PRIMARY_DB})
    o = deployment.outputs
    svc = aws("ecs", PRIMARY).describe_services(cluster=o["clusterNames"][PRIMARY], services=[o["serviceNames"][PRIMARY]])["services"][0]
    assert svc["desiredCount"] == 0
    (target,) = aws("application-autoscaling", PRIMARY).describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 0)
    standby = aws("ecs", STANDBY).describe_services(cluster=o["clusterNames"][STANDBY], services=[o["serviceNames"][STANDBY]])
    assert standby["services"][0]["desiredCount"] == 2
    # the fence waited for the group to be active before the reboot and the promotion
    describes = [i for i, c in enumerate(harness.calls) if c.op == "describe_db_instances" and c.region == PRIMARY]
    modify = next(i for i, c in enumerate(harness.calls) if c.op == "modify_db_instance")
    reboot_i = next(i for i, c in enumerate(harness.calls) if c.op == "reboot_db_instance")
    assert any(modify < i < reboot_i for i in describes)


def test_an_old_primary_in_an_unexpected_state_is_refused_unless_forced(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    def storage_full(real, params):
        out = real(**params)
        out["DBInstances"][0]["DBInstanceStatus"] = "storage-full"
        return out

    harness.inject("rds", "describe_db_instances", *[storage_full] * 10, region=PRIMARY)
    refused = run_cli(failover_args(deployment), harness.runtime(failing_primary))
    assert refused.code == 3 and "storage-full" in refused.last("fence")["detail"]
    assert not harness.ops("rds", "promote_read_replica")


def test_verify_url_posts_a_graphql_mutation_probe(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth, loopback) -> None:
    loopback.replies.append((200, {}, {"data": {"__typename": "Mutation"}}))
    result = run_cli(failover_args(deployment, "--verify-url", f"{loopback.url}/graphql"), harness.runtime(failing_primary))
    assert result.code == 0, result.text
    (req,) = loopback.requests
    assert req["path"] == "/graphql"
    assert req["body"]["query"].startswith("mutation")


def test_verify_url_errors_fail_the_verify_step(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth, loopback) -> None:
    loopback.replies.append((200, {}, {"errors": [{"message": "cannot execute INSERT in a read-only transaction"}]}))
    result = run_cli(failover_args(deployment, "--verify-url", f"{loopback.url}/graphql"), harness.runtime(failing_primary))
    assert result.code == 1
    assert "read-only transaction" in result.last("verify")["detail"]


def test_a_fence_the_api_rejects_stops_before_promotion_unless_forced(deployment: PhaseA, harness: Harness, failing_primary: FakeHealth) -> None:
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized to perform rds:ModifyDBInstance"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}, "ModifyDBInstance")
    harness.inject("rds", "modify_db_instance", denied, region=PRIMARY)
    result = run_cli(failover_args(deployment), harness.runtime(failing_primary))
    assert result.code == 1
    assert "Not promoting while the old primary may still accept writes" in result.last("result")["detail"]
    assert not harness.ops("rds", "promote_read_replica")
    assert_untouched(deployment)

    harness.inject("rds", "modify_db_instance", denied, region=PRIMARY)
    forced = run_cli(failover_args(deployment, "--force"), harness.runtime(failing_primary))
    assert forced.code == 0
    assert "SPLIT-BRAIN RISK" in forced.last("fence")["detail"]
    assert "ReadReplicaSourceDBInstanceIdentifier" not in deployment.db(STANDBY, REPLICA_DB)
