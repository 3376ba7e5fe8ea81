"""Quorum: what keeps an isolated region from taking writes (phases b and c).

- Data: a fence agent per region (`replication.agent`, a Lambda that holds its loop for a whole
  invocation and hands over to the next one). It merges the heartbeats its writer receives on the
  control channel into one view, selects the single majority clique every agent selects from the
  same view, and renews its writer's write lease only while its region is in that clique. The
  lease is checked by the database on every write and at commit, so an agent that stops for any
  reason fences its region within one lease: the fence fails closed.
- Traffic: a fenced region answers its health path with 503 (an ALB rule the agent switches), so
  Route 53 and the Cloudflare monitors steer users to writable regions.
- Routing: Route 53 Application Recovery Controller, one routing control per region under an
  `ATLEAST quorum` safety rule: no operator or script can take more regions out than the quorum
  allows. The agent reads its control; a control turned off fences the region.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from components._database import RDS_CA_BUNDLE
from components._kit import Component, Labels
from components._lambda import FunctionSpec, NetworkPlace, SecurityText, in_vpc_function
from core import agent_schedule as schedule
from core.membership import routing_rule
from core.runbook import describe
from replication.agent.settings import Settings

AGENT_HANDLER = "replication.agent.handler"
METRIC_NAMESPACE = "FraiseQL/Quorum"
REPLICATION_NAMESPACE = "FraiseQL/Replication"
#: One invocation holds the agent loop for up to 15 minutes; the per-minute schedule starts the next
#: one, which takes over near the deadline (or at once after a crash): core/agent_schedule.py.
AGENT_TIMEOUT_S = schedule.INVOCATION_S
#: The ALB rule that takes a fenced region out of the traffic path never matches while the region is
#: in service (replication.agent switches it to the health path).
IN_SERVICE_HEADER = "x-fraiseql-fence"
IN_SERVICE_VALUE = "region-in-service"


@dataclass(frozen=True, kw_only=True)
class QuorumRegion:
    region: str
    vpc_id: Input[str]
    subnet_ids: Sequence[Input[str]]        # private subnets: the agent needs ARC and CloudWatch
    db_security_group_id: Input[str]
    db_host: Input[str]
    db_port: int
    db_name: str
    db_secret_arn: Input[str]               # the fraiseql_agent role's secret in this region
    db_secret_kms_key_arn: Input[str]
    alarm_topic_arn: Input[str]
    listener_arn: Input[str]                # the region's public listener: the fence rule goes on it


@dataclass(frozen=True, kw_only=True)
class QuorumArgs:
    regions: tuple[QuorumRegion, ...]
    #: The regions whose agents vote (`fraiseql:quorum.members`), in config order (each agent computes
    #: their majority itself).
    members: tuple[str, ...]
    #: Set only during a membership change (joint consensus): writes need a majority of both lists.
    next_members: Optional[tuple[str, ...]] = None
    probe_interval_seconds: float
    stale_after_seconds: float
    lease_seconds: float
    unfence_after: int
    safety_rule_wait_ms: int
    health_path: str
    #: The agents' verify rounds (`fraiseql:replication.verify_buckets`, `.verify_max_keys`).
    verify_buckets: int
    verify_max_keys: int
    #: Lambda concurrency reserved per agent (`fraiseql:quorum.agent_reserved_concurrency`); None reserves
    #: none, which accounts whose concurrency quota is 10 require.
    agent_reserved_concurrency: Optional[int] = None
    # The agent connects to its writer's instance endpoint, which the RDS certificate names.
    db_sslmode: str = "verify-full"
    db_sslrootcert: str = RDS_CA_BUNDLE     # shipped in the dependencies layer
    log_retention_days: int = 30
    code: pulumi.Archive                    # the `replication` package
    dependencies_layer_arns: Mapping[str, Input[str]]   # psycopg layer per region (MultiMasterReplication's)
    #: The bootstrap runs (MultiMasterReplication's): a release's agents use the objects its SQL
    #: installs, so they are deployed only after it ran on every writer.
    after: tuple[pulumi.Resource, ...] = ()


class Quorum(Component):
    routing_control_arns: dict[str, pulumi.Output[str]]
    recovery_health_check_ids: dict[str, pulumi.Output[str]]
    cluster_endpoints: pulumi.Output[Sequence[aws.route53recoverycontrol.outputs.ClusterClusterEndpoint]]
    fence_function_names: dict[str, pulumi.Output[str]]
    fence_rule_arns: dict[str, pulumi.Output[str]]
    agent_role_policies: dict[str, pulumi.Output[str]]
    #: "<role> <region>" -> alarm ARN, for the dashboard.
    alarm_arns: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: QuorumArgs, *, labels: Labels, opts: Optional[ResourceOptions] = None):
        super().__init__("fraiseql:quorum:Quorum", name, labels=labels, opts=opts)
        self._args = args
        cluster, controls = self._routing_controls()
        self.fence_function_names, self.fence_rule_arns, self.agent_role_policies, self.alarm_arns = {}, {}, {}, {}
        for q in args.regions:
            fence_rule = self._fence_rule(q)
            fn = self._agent(q, cluster, controls[q.region], fence_rule)
            self._agent_schedule(q.region, fn)
            self.alarm_arns.update(self._alarms(q, len(args.members)))
            self.fence_function_names[q.region] = fn.name
            self.fence_rule_arns[q.region] = fence_rule.arn
        self.routing_control_arns = {r: c.arn for r, c in controls.items()}
        self.cluster_endpoints = cluster.cluster_endpoints
        self.register_outputs(
            {
                "fenceRuleArns": self.fence_rule_arns,
                "routingControlArns": self.routing_control_arns,
                "recoveryHealthCheckIds": self.recovery_health_check_ids,
                "clusterEndpoints": self.cluster_endpoints,
            }
        )

    def _routing_controls(self) -> tuple[aws.route53recoverycontrol.Cluster, dict[str, aws.route53recoverycontrol.RoutingControl]]:
        """ARC: one routing control per region under the `ATLEAST quorum` safety rule, and the
        RECOVERY_CONTROL health check of each control that the DNS records follow."""
        args, stack = self._args, self.labels.stack
        names = [q.region for q in args.regions]
        cluster = aws.route53recoverycontrol.Cluster(self.n("arc-cluster"), name=f"fraiseql-{stack}", opts=self.child)
        panel = aws.route53recoverycontrol.ControlPanel(
            self.n("arc-panel"), cluster_arn=cluster.arn, name=f"fraiseql-{stack}", opts=self.child
        )
        # One at a time: ARC answers 409 ConflictException to a routing control created while another
        # change on the same control panel is in progress (hashicorp/terraform-provider-aws#48311).
        controls: dict[str, aws.route53recoverycontrol.RoutingControl] = {}
        previous: list[pulumi.Resource] = []
        for r in names:
            controls[r] = aws.route53recoverycontrol.RoutingControl(
                self.n("routing-control", r),
                cluster_arn=cluster.arn,
                control_panel_arn=panel.arn,
                name=f"fraiseql-{stack}-{r}",
                opts=ResourceOptions(parent=self, depends_on=previous),
            )
            previous = [controls[r]]
        # Members' controls only: a region that is not a member (seeding, or leaving) writes nothing.
        asserted, threshold = routing_rule(names, args.members, args.next_members)
        aws.route53recoverycontrol.SafetyRule(
            self.n("at-least-quorum"),
            control_panel_arn=panel.arn,
            name=f"at-least-{threshold}-of-{len(asserted)}",
            asserted_controls=[controls[r].arn for r in asserted],
            rule_config=aws.route53recoverycontrol.SafetyRuleRuleConfigArgs(
                type="ATLEAST", threshold=threshold, inverted=False
            ),
            wait_period_ms=args.safety_rule_wait_ms,
            opts=self.child,
        )
        self.recovery_health_check_ids = {}
        for r in names:
            hc = aws.route53.HealthCheck(
                self.n("control-health", r), type="RECOVERY_CONTROL", routing_control_arn=controls[r].arn, opts=self.child,
            )
            self.recovery_health_check_ids[r] = hc.id
        return cluster, controls

    def _fence_rule(self, q: QuorumRegion) -> aws.lb.ListenerRule:
        """The listener rule that answers 503 for a fenced region; it never matches while the region is in service."""
        r = q.region
        return aws.lb.ListenerRule(
            self.n("fence-rule", r),
            region=r,
            listener_arn=q.listener_arn,
            priority=1,
            actions=[aws.lb.ListenerRuleActionArgs(
                type="fixed-response",
                fixed_response=aws.lb.ListenerRuleActionFixedResponseArgs(
                    content_type="application/json",
                    status_code="503",
                    message_body=json.dumps({"errors": [{"message": f"{r} is fenced: no write quorum",
                                                         "extensions": {"code": "REGION_FENCED"}}]}),
                ),
            )],
            conditions=[aws.lb.ListenerRuleConditionArgs(
                http_header=aws.lb.ListenerRuleConditionHttpHeaderArgs(
                    http_header_name=IN_SERVICE_HEADER, values=[IN_SERVICE_VALUE]),
            )],
            # The agent owns the condition at run time; `pulumi up` must not put a fenced region back.
            opts=ResourceOptions(parent=self, ignore_changes=["conditions"]),
        )

    def _agent(self, q: QuorumRegion, cluster: aws.route53recoverycontrol.Cluster,
               control: aws.route53recoverycontrol.RoutingControl, fence_rule: aws.lb.ListenerRule) -> aws.lambda_.Function:
        """The region's fence agent, in its VPC beside its writer."""
        args, r = self._args, q.region
        policy = pulumi.Output.all(q.db_secret_arn, q.db_secret_kms_key_arn, control.arn, fence_rule.arn).apply(
            lambda a: agent_policy(r, secret_arn=a[0], kms_key_arn=a[1], routing_control_arn=a[2], fence_rule_arn=a[3])
        )
        self.agent_role_policies[r] = policy
        environment = pulumi.Output.all(q.db_host, q.db_secret_arn, cluster.cluster_endpoints, control.arn,
                                        fence_rule.arn).apply(lambda a: agent_environment(args, q, *a))
        return in_vpc_function(
            self, "agent",
            NetworkPlace(region=r, vpc_id=q.vpc_id, subnet_ids=q.subnet_ids, db_security_group_id=q.db_security_group_id,
                         db_port=q.db_port),
            FunctionSpec(
                function="fence-agent", handler=AGENT_HANDLER, code=args.code, layers=[args.dependencies_layer_arns[r]],
                timeout=AGENT_TIMEOUT_S, memory_size=128, policy=policy, environment=environment,
                log_retention_days=args.log_retention_days,
                # Unreserved by default: a reservation must leave the account 100 unreserved (10 on
                # accounts whose quota is 10). The database lock keeps one loop whatever runs.
                reserved_concurrency=args.agent_reserved_concurrency,
                depends_on=args.after,
            ),
            SecurityText(group="FraiseQL fence agent: its own writer, ARC and CloudWatch", db_rule="from the fence agent",
                         https="ARC cluster endpoints, Secrets Manager, CloudWatch, ELB"),
        )

    def _agent_schedule(self, r: str, fn: aws.lambda_.Function) -> None:
        """A start every minute (core/agent_schedule.py); a start that finds the loop held exits at once.

        A start that failed or was throttled is not retried, and one that waited longer than a period
        is dropped: the next tick is due by then, and Lambda would otherwise retry an asynchronous
        invocation twice and keep it for up to 6 hours.
        """
        aws.lambda_.FunctionEventInvokeConfig(
            self.n("agent-starts", r),
            region=r,
            function_name=fn.name,
            maximum_retry_attempts=0,
            maximum_event_age_in_seconds=schedule.MAX_EVENT_AGE_S,
            opts=self.child,
        )
        rule = aws.cloudwatch.EventRule(
            self.n("agent-schedule", r),
            region=r,
            schedule_expression=schedule.SCHEDULE_EXPRESSION,
            description="Start the FraiseQL fence agent; a run that finds the loop held exits at once",
            opts=self.child,
        )
        aws.cloudwatch.EventTarget(
            self.n("agent-target", r), region=r, rule=rule.name, arn=fn.arn,
            retry_policy=aws.cloudwatch.EventTargetRetryPolicyArgs(
                maximum_retry_attempts=0, maximum_event_age_in_seconds=schedule.MAX_EVENT_AGE_S),
            opts=self.child,
        )
        aws.lambda_.Permission(
            self.n("agent-invoke", r),
            region=r,
            action="lambda:InvokeFunction",
            function=fn.name,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
            opts=self.child,
        )

    def _alarms(self, q: QuorumRegion, n: int) -> dict[str, pulumi.Output[str]]:
        """One alarm per thing that can go wrong, each saying what happened and which runbook section to follow."""
        r = q.region
        arns: dict[str, pulumi.Output[str]] = {}
        for role, namespace, metric, stat, op, threshold, missing, periods, text in (
            ("agent-down", METRIC_NAMESPACE, "AgentAlive", "SampleCount", "LessThanThreshold", 1, "breaching", 2,
             f"The fence agent in {r} is not running: its writer's lease runs out and {r} refuses writes"),
            ("fenced", METRIC_NAMESPACE, "Fenced", "Maximum", "GreaterThanThreshold", 0, "notBreaching", 1,
             f"{r} is fenced: it is not in the write majority (or its routing control is off) and refuses writes"),
            # The seed's cascade case: with exactly a quorum left, one more failure stops all writes.
            ("quorum-reduced", METRIC_NAMESPACE, "VisibleRegions", "Minimum", "LessThanThreshold", n, "notBreaching", 1,
             f"{r} sees fewer than all {n} regions: quorum reduced, one more failure stops writes"),
            ("apply-errors", REPLICATION_NAMESPACE, "ApplyErrors", "Sum", "GreaterThanThreshold", 0, "notBreaching", 1,
             f"Replication apply errors on the writer in {r} (pg_stat_subscription_stats): see the runbook"),
            ("subscriptions-down", REPLICATION_NAMESPACE, "SubscriptionsDown", "Maximum", "GreaterThanThreshold", 0,
             "notBreaching", 2, f"A subscription of the writer in {r} has no running apply worker or is disabled"),
            ("diverged-rows", REPLICATION_NAMESPACE, "DivergedRows", "Maximum", "GreaterThanThreshold", 0,
             "notBreaching", 1, f"The writer in {r} holds rows that differ from a peer's (verify round through the "
             "control channel): run python -m ops verify, then --repair"),
            ("parked-changes", REPLICATION_NAMESPACE, "ParkedChanges", "Maximum", "GreaterThanThreshold", 0,
             "notBreaching", 2, f"Changes from peers that the writer in {r} could not merge are parked and retried "
             "(a column it lacks, a unique clash): run the schema apply or see the runbook"),
            # pg_replication_slots.wal_status = 'lost': the subscriber fell more than max_slot_wal_keep_size
            # behind and can never resume from this slot.
            ("slots-lost", REPLICATION_NAMESPACE, "SlotsLost", "Maximum", "GreaterThanThreshold", 0, "notBreaching", 1,
             f"A replication slot on the writer in {r} is lost (its subscriber fell behind by more than "
             "max_slot_wal_keep_size): that subscriber can never catch up from it. Rejoin it by a reseed "
             "(replace a writer); never recreate the slot in place"),
        ):
            alarm = aws.cloudwatch.MetricAlarm(
                self.n(role, r),
                region=r,
                alarm_description=describe(text, role),
                namespace=namespace,
                metric_name=metric,
                dimensions={"Region": r},
                statistic=stat,
                period=60,
                evaluation_periods=periods,
                threshold=threshold,
                comparison_operator=op,
                treat_missing_data=missing,
                alarm_actions=[q.alarm_topic_arn],
                ok_actions=[q.alarm_topic_arn],
                opts=self.child,
            )
            arns[f"{role} {r}"] = alarm.arn
        return arns


def agent_settings(args: QuorumArgs, q: QuorumRegion, db_host: str, db_secret_arn: str,
                   cluster_endpoints: Optional[Sequence[Mapping[str, str]]], routing_control_arn: str,
                   fence_rule_arn: str) -> Settings:
    """What the fence agent in region `q` runs with."""
    return Settings(
        region=q.region,
        regions=tuple(args.members),
        regions_next=tuple(args.next_members or ()),
        probe_s=args.probe_interval_seconds,
        stale_after_s=args.stale_after_seconds,
        lease_s=args.lease_seconds,
        unfence_after=args.unfence_after,
        db_host=db_host,
        db_port=q.db_port,
        db_name=q.db_name,
        db_sslmode=args.db_sslmode,
        db_sslrootcert=args.db_sslrootcert,
        db_secret_arn=db_secret_arn,
        arc_endpoints=tuple({"region": e["region"], "endpoint": e["endpoint"]} for e in (cluster_endpoints or [])),
        routing_control_arn=routing_control_arn,
        fence_rule_arn=fence_rule_arn,
        health_path=args.health_path,
        verify_buckets=args.verify_buckets,
        verify_max_keys=args.verify_max_keys,
        # Wide enough that a tick lost or late still starts the next holder in time.
        handoff_wait_s=schedule.HANDOFF_WAIT_S,
        stop_margin_s=schedule.STOP_MARGIN_S,
    )


def agent_environment(args: QuorumArgs, q: QuorumRegion, db_host: str, db_secret_arn: str,
                      cluster_endpoints: Optional[Sequence[Mapping[str, str]]], routing_control_arn: str,
                      fence_rule_arn: str) -> dict[str, str]:
    """The fence agent's Lambda environment in region `q`: ``Settings.to_env()``, which the agent reads
    back with ``Settings.from_env`` (`replication/agent/settings.py` holds the variable names)."""
    return agent_settings(args, q, db_host, db_secret_arn, cluster_endpoints, routing_control_arn, fence_rule_arn).to_env()


def agent_policy(region: str, *, secret_arn: str, kms_key_arn: str, routing_control_arn: str, fence_rule_arn: str) -> str:
    """The fence agent's permissions in one region: exactly the calls `replication.agent` makes.

    `tests/test_iam_against_code.py` runs the agent and checks every call it makes against this.
    """
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadOwnWriterCredentials", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
             "Resource": secret_arn},
            {"Sid": "DecryptThemThroughSecretsManager", "Effect": "Allow", "Action": "kms:Decrypt",
             "Resource": kms_key_arn,
             "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}}},
            {"Sid": "ReadOwnRoutingControl", "Effect": "Allow", "Action": "route53-recovery-cluster:GetRoutingControlState",
             "Resource": routing_control_arn},
            {"Sid": "SteerTrafficAwayWhenFenced", "Effect": "Allow", "Action": "elasticloadbalancing:ModifyRule",
             "Resource": fence_rule_arn},
            {"Sid": "PublishQuorumAndReplicationMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData",
             "Resource": "*",
             "Condition": {"StringEquals": {"cloudwatch:namespace": [METRIC_NAMESPACE, REPLICATION_NAMESPACE]}}},
        ],
    }, sort_keys=True)
