"""Dashboard: one CloudWatch dashboard per stack, the place an operator looks first.

It shows, for the stack's phase, every signal its alarms watch and the ones around them:

- replication lag (phase A: the standby's `AWS/RDS ReplicaLag`; phases B/C: every directed pair's
  `FraiseQL/Replication LagSeconds`, published by the publisher's fence agent), against the alarm;
- phases B/C: fence and quorum state (`FraiseQL/Quorum` Fenced, VisibleRegions, AgentAlive), conflicts
  and their traces (ApplyErrors, ParkedChanges, DivergedRows), subscriptions and slot retention
  (SubscriptionsDown, SlotsLost);
- each region's ALB (healthy targets, 5xx, response time) and app (ECS CPU and memory, the Route 53
  health check of its endpoint), and each database instance (CPU, free storage, connections);
- the budget: the account's `AWS/Billing EstimatedCharges` against `budget.monthly_usd`;
- every alarm of the stack, each linking the runbook section its description names.

The metric names come from the agent (`replication/agent/aws_side.py`) and AWS; `tests/test_dashboards.py`
checks each against them and each dimension against a resource of the stack.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from components._kit import Component, Labels
from core.runbook import RUNBOOK_PATH, SECTIONS, anchor

TYPE = "fraiseql:observability:Dashboard"
QUORUM, REPLICATION = "FraiseQL/Quorum", "FraiseQL/Replication"
#: AWS publishes the account's estimated charges in us-east-1 only (with billing alerts on).
BILLING_REGION = "us-east-1"
#: Route 53 health check metrics live in us-east-1.
ROUTE53_REGION = "us-east-1"
WIDTH = 24


@dataclass(frozen=True, kw_only=True)
class RegionSignals:
    """What one region shows: its ALB and target group, its service, its database instances, its check."""

    region: str
    alb_arn_suffix: Input[str]
    target_group_arn_suffix: Input[str]
    cluster_name: Input[str]
    service_name: Input[str]
    db_identifiers: tuple[Input[str], ...]
    health_check_id: Optional[Input[str]] = None


@dataclass(frozen=True, kw_only=True)
class DashboardArgs:
    home_region: str
    regions: tuple[RegionSignals, ...]
    lag_alarm_seconds: float
    #: Phase A: (region, replica identifier) of each standby.
    replicas: tuple[tuple[str, Input[str]], ...] = ()
    #: Phases B/C: (publisher, subscriber) of each directed pair, and the regions whose agents publish.
    lag_pairs: tuple[tuple[str, str], ...] = ()
    agent_regions: tuple[str, ...] = ()
    alarm_arns: tuple[Input[str], ...] = ()
    budget_usd: float
    budget_name: Input[str]


def dashboard_name(stack: str) -> str:
    """CloudWatch takes letters, digits, `-` and `_` in a dashboard name."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"fraiseql-{stack}")


class _Grid:
    """Widgets laid out in rows of WIDTH columns."""

    def __init__(self) -> None:
        self.widgets: list[dict[str, Any]] = []
        self.x = self.y = self.row_height = 0

    def add(self, kind: str, width: int, height: int, properties: dict[str, Any]) -> None:
        if self.x + width > WIDTH:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        self.widgets.append({"type": kind, "x": self.x, "y": self.y, "width": width, "height": height, "properties": properties})
        self.x += width
        self.row_height = max(self.row_height, height)

    def newline(self) -> None:
        if self.x:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0


def _metric(namespace: str, name: str, dims: dict[str, Any], region: str, label: str, stat: Optional[str] = None) -> list[Any]:
    row: list[Any] = [namespace, name]
    for k, v in dims.items():
        row += [k, v]
    options: dict[str, Any] = {"region": region, "label": label}
    if stat:
        options["stat"] = stat
    return row + [options]


def _graph(title: str, region: str, metrics: list[list[Any]], *, stat: str = "Maximum", period: int = 60,
           threshold: Optional[float] = None, label: str = "alarm") -> dict[str, Any]:
    props: dict[str, Any] = {"title": title, "region": region, "view": "timeSeries", "stacked": False, "stat": stat,
                             "period": period, "metrics": metrics}
    if threshold is not None:
        props["annotations"] = {"horizontal": [{"label": label, "value": threshold}]}
    return props


def body(args: DashboardArgs, labels: Labels, resolved: dict[str, Any]) -> dict[str, Any]:
    """The dashboard body (CloudWatch's JSON structure) from the arguments with their outputs resolved."""
    g = _Grid()
    sections = ", ".join(f"[{title.removeprefix('Alarm: ')}]({RUNBOOK_PATH}#{anchor(title)})" for title in SECTIONS.values())
    g.add("text", WIDTH, 3, {"markdown": (
        f"# FraiseQL {labels.stack}: phase {labels.phase.upper()}\n"
        f"Budget {args.budget_usd:,.0f} USD a month (AWS Budgets `{resolved['budget_name']}`; estimate: "
        f"`python -m infra plan`). Each alarm's description names its runbook section: {sections}.")})
    home = args.home_region
    if args.replicas:
        g.add("metric", 12, 6, _graph("Replication lag of the standby (s): AWS/RDS ReplicaLag", home, [
            _metric("AWS/RDS", "ReplicaLag", {"DBInstanceIdentifier": resolved["replicas"][i]}, region, f"{region} replica")
            for i, (region, _) in enumerate(args.replicas)], threshold=args.lag_alarm_seconds))
    if args.lag_pairs:
        g.add("metric", 12, 6, _graph("Replication lag by pair (s): FraiseQL/Replication LagSeconds", home, [
            _metric(REPLICATION, "LagSeconds", {"Publisher": pub, "Subscriber": sub}, pub, f"{pub} -> {sub}")
            for pub, sub in args.lag_pairs], threshold=args.lag_alarm_seconds))
    if args.agent_regions:
        rs = args.agent_regions
        g.add("metric", 12, 6, _graph("Fence and quorum: fenced (1), regions each agent sees, agent alive", home, [
            *[_metric(QUORUM, "Fenced", {"Region": r}, r, f"{r} fenced") for r in rs],
            *[_metric(QUORUM, "VisibleRegions", {"Region": r}, r, f"{r} sees", stat="Minimum") for r in rs],
            *[_metric(QUORUM, "AgentAlive", {"Region": r}, r, f"{r} agent reports", stat="SampleCount") for r in rs],
        ]))
        g.add("metric", 12, 6, _graph("Conflicts: apply errors, parked changes (unique clashes wait), diverged rows", home, [
            *[_metric(REPLICATION, "ApplyErrors", {"Region": r}, r, f"{r} apply errors", stat="Sum") for r in rs],
            *[_metric(REPLICATION, "ParkedChanges", {"Region": r}, r, f"{r} parked") for r in rs],
            *[_metric(REPLICATION, "DivergedRows", {"Region": r}, r, f"{r} diverged rows") for r in rs],
        ]))
        g.add("metric", 12, 6, _graph("Subscriptions and slot retention: subscriptions down, slots lost", home, [
            *[_metric(REPLICATION, "SubscriptionsDown", {"Region": r}, r, f"{r} subscriptions down") for r in rs],
            *[_metric(REPLICATION, "SlotsLost", {"Region": r}, r, f"{r} slots lost") for r in rs],
        ]))
    g.newline()
    regions = resolved["regions"]
    g.add("metric", 8, 6, _graph("ALB: healthy targets", home, [
        _metric("AWS/ApplicationELB", "HealthyHostCount", {"TargetGroup": rr["tg"], "LoadBalancer": rr["alb"]}, rr["region"],
                rr["region"], stat="Minimum") for rr in regions]))
    g.add("metric", 8, 6, _graph("ALB: 5xx (target and ALB)", home, [
        m for rr in regions for m in (
            _metric("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", {"LoadBalancer": rr["alb"]}, rr["region"],
                    f"{rr['region']} target 5xx", stat="Sum"),
            _metric("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", {"LoadBalancer": rr["alb"]}, rr["region"],
                    f"{rr['region']} ALB 5xx", stat="Sum"))]))
    g.add("metric", 8, 6, _graph("ALB: response time p95 (s)", home, [
        _metric("AWS/ApplicationELB", "TargetResponseTime", {"LoadBalancer": rr["alb"]}, rr["region"], rr["region"], stat="p95")
        for rr in regions]))
    g.add("metric", 8, 6, _graph("App: ECS CPU and memory (%)", home, [
        m for rr in regions for m in (
            _metric("AWS/ECS", "CPUUtilization", {"ClusterName": rr["cluster"], "ServiceName": rr["service"]}, rr["region"],
                    f"{rr['region']} CPU", stat="Average"),
            _metric("AWS/ECS", "MemoryUtilization", {"ClusterName": rr["cluster"], "ServiceName": rr["service"]}, rr["region"],
                    f"{rr['region']} memory", stat="Average"))]))
    checks = [rr for rr in regions if rr["check"]]
    if checks:
        g.add("metric", 8, 6, _graph("App: Route 53 health check of each endpoint (1 healthy)", ROUTE53_REGION, [
            _metric("AWS/Route53", "HealthCheckStatus", {"HealthCheckId": rr["check"]}, ROUTE53_REGION, rr["region"],
                    stat="Minimum") for rr in checks]))
    g.add("metric", 8, 6, _graph("Budget: estimated charges this month (USD, whole account)", BILLING_REGION, [
        _metric("AWS/Billing", "EstimatedCharges", {"Currency": "USD"}, BILLING_REGION, "estimated charges")],
        period=21600, threshold=args.budget_usd, label="budget"))
    g.newline()
    for title, name, stat in (("Database: CPU (%)", "CPUUtilization", "Average"),
                              ("Database: free storage (bytes)", "FreeStorageSpace", "Minimum"),
                              ("Database: connections", "DatabaseConnections", "Maximum")):
        g.add("metric", 8, 6, _graph(title, home, [
            _metric("AWS/RDS", name, {"DBInstanceIdentifier": ident}, rr["region"], ident, stat=stat)
            for rr in regions for ident in rr["db"]]))
    g.newline()
    if resolved["alarms"]:
        g.add("alarm", WIDTH, 6, {"title": "Alarms (each description names its runbook section)",
                                  "alarms": sorted(resolved["alarms"]), "sortBy": "stateUpdatedTimestamp"})
    return {"widgets": g.widgets}


class Dashboard(Component):
    name: pulumi.Output[str]

    def __init__(self, name: str, args: DashboardArgs, *, labels: Labels, opts: Optional[ResourceOptions] = None):
        super().__init__(TYPE, name, labels=labels, opts=opts)
        inputs = {
            "budget_name": args.budget_name,
            "replicas": [ident for _, ident in args.replicas],
            "alarms": list(args.alarm_arns),
            "regions": [{"region": r.region, "alb": r.alb_arn_suffix, "tg": r.target_group_arn_suffix,
                         "cluster": r.cluster_name, "service": r.service_name, "db": list(r.db_identifiers),
                         "check": r.health_check_id} for r in args.regions],
        }
        dashboard = aws.cloudwatch.Dashboard(
            self.n("main"),
            region=args.home_region,
            dashboard_name=dashboard_name(labels.stack),
            dashboard_body=pulumi.Output.from_input(inputs).apply(
                lambda resolved: json.dumps(body(args, labels, resolved), sort_keys=True)),
            opts=self.child,
        )
        self.name = dashboard.dashboard_name
        self.register_outputs({"name": self.name})
