"""The dashboard each phase's program creates, and the alarms it shows: every metric on it is one that
exists (the fence agent's, found by running its publisher, or AWS's own), every dimension names a
resource of the stack, every alarm of the stack is on it, and every alarm's description names a runbook
section that exists."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from core.runbook import RUNBOOK_PATH, SECTIONS, anchor, section
from infra.paths import REPO
from infra.synth import Synthesis

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"

#: AWS's own metrics the dashboard may show, with the dimensions each takes (AWS documentation:
#: RDS, Application Load Balancer, ECS, Route 53 health checks, billing).
AWS_METRICS: dict[tuple[str, str], frozenset[str]] = {
    ("AWS/RDS", "ReplicaLag"): frozenset({"DBInstanceIdentifier"}),
    ("AWS/RDS", "CPUUtilization"): frozenset({"DBInstanceIdentifier"}),
    ("AWS/RDS", "FreeStorageSpace"): frozenset({"DBInstanceIdentifier"}),
    ("AWS/RDS", "DatabaseConnections"): frozenset({"DBInstanceIdentifier"}),
    ("AWS/ApplicationELB", "HealthyHostCount"): frozenset({"TargetGroup", "LoadBalancer"}),
    ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"): frozenset({"LoadBalancer"}),
    ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"): frozenset({"LoadBalancer"}),
    ("AWS/ApplicationELB", "TargetResponseTime"): frozenset({"LoadBalancer"}),
    ("AWS/ECS", "CPUUtilization"): frozenset({"ClusterName", "ServiceName"}),
    ("AWS/ECS", "MemoryUtilization"): frozenset({"ClusterName", "ServiceName"}),
    ("AWS/Route53", "HealthCheckStatus"): frozenset({"HealthCheckId"}),
    ("AWS/Billing", "EstimatedCharges"): frozenset({"Currency"}),
}


def agent_metrics() -> dict[tuple[str, str], frozenset[str]]:
    """What the fence agent really publishes: its publisher run against a recording CloudWatch client."""
    from replication.agent import AwsSide, Maintenance, ProbeResult, Settings
    from replication.quorum import Decision

    sent: list[dict[str, Any]] = []

    class CloudWatch:
        def put_metric_data(self, Namespace: str, MetricData: list[dict[str, Any]]) -> None:  # noqa: N803 - boto3's names
            sent.extend({**m, "Namespace": Namespace} for m in MetricData)

    settings = Settings(region="us-east-1", regions=("us-east-1", "us-west-2", "eu-west-1"), probe_s=5, stale_after_s=15,
                        lease_s=15, unfence_after=3, db_host="h", db_port=5432, db_name="d", db_sslmode="require",
                        db_secret_arn="arn")
    side = AwsSide(settings, client=lambda service, **kw: CloudWatch())
    decision = Decision(region="us-east-1", writable=True, reason="ok", quorum=2, majority=frozenset({"us-east-1"}),  # type: ignore[arg-type]
                        sees=frozenset({"us-east-1"}), quorum_reduced=False, healthy_streak=3, alert=None)
    side.offer(ProbeResult(decision=decision, changed=False, hears=frozenset(), links={}, lag_s={"us-west-2": 0.1},
                           slots_lost=0, subscriptions_down=0, apply_error_increase=0, elapsed_s=0.01, writable=True))
    side.offer_maintenance(Maintenance(parked=0))
    side.offer_diverged(0)
    side._publish()
    assert sent, "the agent published nothing: the recording client is not the one it used"
    return {(m["Namespace"], m["MetricName"]): frozenset(d["Name"] for d in m["Dimensions"]) for m in sent}


@pytest.fixture(scope="module")
def stacks(phase_a: Synthesis, phase_b: Synthesis, phase_c: Synthesis) -> dict[str, Synthesis]:
    return {"phase-a": phase_a, "phase-b": phase_b, "phase-c": phase_c}


def board(syn: Synthesis) -> tuple[Any, dict[str, Any]]:
    (dash,) = syn.of_type(DASHBOARD)
    return dash, json.loads(dash.inputs["dashboardBody"])


def metrics(body: dict[str, Any]) -> list[tuple[str, str, dict[str, str], dict[str, Any]]]:
    out = []
    for w in body["widgets"]:
        for row in (w["properties"].get("metrics") or []):
            opts = row[-1] if isinstance(row[-1], dict) else {}
            plain = row[:-1] if opts else row
            out.append((plain[0], plain[1], dict(zip(plain[2::2], plain[3::2])), opts))
    return out


@pytest.mark.parametrize("stack", ["phase-a", "phase-b", "phase-c"])
def test_one_dashboard_per_stack_named_in_the_outputs(stacks, stack):
    syn = stacks[stack]
    dash, body = board(syn)
    assert syn.outputs["dashboardName"] == dash.inputs["dashboardName"] == f"fraiseql-{stack}"
    assert all(0 <= w["x"] and w["x"] + w["width"] <= 24 for w in body["widgets"])


@pytest.mark.parametrize("stack", ["phase-a", "phase-b", "phase-c"])
def test_every_metric_on_the_dashboard_exists_with_its_dimensions(stacks, stack):
    known = {**AWS_METRICS, **agent_metrics()}
    _, body = board(stacks[stack])
    shown = metrics(body)
    assert shown
    for namespace, name, dims, _ in shown:
        assert (namespace, name) in known, f"{namespace} {name} is no metric anyone publishes"
        assert set(dims) == known[(namespace, name)], (namespace, name, dims)


@pytest.mark.parametrize("stack", ["phase-a", "phase-b", "phase-c"])
def test_every_dimension_names_a_resource_of_the_stack(stacks, stack):
    syn = stacks[stack]
    regions = {r for r in syn.outputs["regions"]}
    real = {
        "DBInstanceIdentifier": {r.outputs["identifier"] for r in syn.of_type("aws:rds/instance:Instance")},
        "LoadBalancer": {r.outputs["arnSuffix"] for r in syn.of_type("aws:lb/loadBalancer:LoadBalancer")},
        "TargetGroup": {r.outputs["arnSuffix"] for r in syn.of_type("aws:lb/targetGroup:TargetGroup")},
        "ClusterName": {r.outputs["name"] for r in syn.of_type("aws:ecs/cluster:Cluster")},
        "ServiceName": {r.outputs["name"] for r in syn.of_type("aws:ecs/service:Service")},
        "HealthCheckId": set(syn.outputs["healthCheckIds"].values()),
        "Region": regions, "Publisher": regions, "Subscriber": regions, "Currency": {"USD"},
    }
    _, body = board(syn)
    for namespace, name, dims, opts in metrics(body):
        for key, value in dims.items():
            assert value in real[key], f"{namespace} {name}: {key}={value} is not in the stack"
        if namespace.startswith("FraiseQL/") or namespace in ("AWS/RDS", "AWS/ApplicationELB", "AWS/ECS"):
            assert opts["region"] in regions  # read where it is published
    lb_regions = {r.outputs["arnSuffix"]: r.region for r in syn.of_type("aws:lb/loadBalancer:LoadBalancer")}
    for _, _, dims, opts in metrics(body):
        if "LoadBalancer" in dims:
            assert opts["region"] == lb_regions[dims["LoadBalancer"]]


def test_phase_a_shows_the_standby_lag_against_its_alarm(stacks):
    syn = stacks["phase-a"]
    _, body = board(syn)
    (alarm,) = syn.of_type(ALARM)
    lag = next(w for w in body["widgets"] if any(m[1] == "ReplicaLag" for m in w["properties"].get("metrics", [])))
    assert lag["properties"]["annotations"]["horizontal"][0]["value"] == alarm.inputs["threshold"]
    assert [m[3] for m in lag["properties"]["metrics"]] == [alarm.inputs["dimensions"]["DBInstanceIdentifier"]]


@pytest.mark.parametrize("stack", ["phase-b", "phase-c"])
def test_phases_b_and_c_show_every_pair_the_alarms_watch_and_every_agent(stacks, stack):
    syn = stacks[stack]
    _, body = board(syn)
    shown = metrics(body)
    pairs = {(d["Publisher"], d["Subscriber"]) for ns, n, d, _ in shown if n == "LagSeconds"}
    alarmed = {(a.inputs["dimensions"]["Publisher"], a.inputs["dimensions"]["Subscriber"])
               for a in syn.of_type(ALARM) if a.inputs["metricName"] == "LagSeconds"}
    assert pairs == alarmed and len(pairs) == 6
    for name in ("Fenced", "VisibleRegions", "AgentAlive", "ApplyErrors", "ParkedChanges", "DivergedRows",
                 "SubscriptionsDown", "SlotsLost"):
        assert {d["Region"] for _, n, d, _ in shown if n == name} == set(syn.outputs["regions"]), name


@pytest.mark.parametrize("stack", ["phase-a", "phase-b", "phase-c"])
def test_the_budget_is_on_the_dashboard(stacks, stack):
    syn = stacks[stack]
    (budget,) = syn.of_type("aws:budgets/budget:Budget")
    _, body = board(syn)
    billing = next(w for w in body["widgets"] if any(m[1] == "EstimatedCharges" for m in w["properties"].get("metrics", [])))
    assert billing["properties"]["annotations"]["horizontal"][0]["value"] == float(budget.inputs["limitAmount"])


@pytest.mark.parametrize("stack", ["phase-a", "phase-b", "phase-c"])
def test_every_alarm_of_the_stack_is_on_the_dashboard(stacks, stack):
    syn = stacks[stack]
    _, body = board(syn)
    shown = {a for w in body["widgets"] if w["type"] == "alarm" for a in w["properties"]["alarms"]}
    assert shown == {a.outputs["arn"] for a in syn.of_type(ALARM)}
    assert all(re.fullmatch(r"arn:aws:cloudwatch:[a-z0-9-]+:\d{12}:alarm:.+", a) for a in shown)


def _runbook_anchors() -> set[str]:
    return {anchor(h) for h in re.findall(r"^#+ (.+)$", (REPO / RUNBOOK_PATH).read_text(), flags=re.M)}


@pytest.mark.parametrize("stack", ["phase-a", "phase-b", "phase-c"])
def test_every_alarm_names_the_runbook_section_to_follow(stacks, stack):
    anchors = _runbook_anchors()
    for alarm in stacks[stack].of_type(ALARM):
        m = re.search(rf"Runbook: {re.escape(RUNBOOK_PATH)}#([\w-]+)$", alarm.inputs["alarmDescription"])
        assert m, f"{alarm.name}: {alarm.inputs['alarmDescription']}"
        assert m.group(1) in anchors, f"{alarm.name}: no section #{m.group(1)} in {RUNBOOK_PATH}"


def test_every_runbook_section_an_alarm_can_name_exists():
    anchors = _runbook_anchors()
    assert {section(role).split("#")[1] for role in SECTIONS} <= anchors
