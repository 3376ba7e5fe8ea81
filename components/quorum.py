"""Quorum: what keeps an isolated region from taking writes (phases b and c).

Two layers, because neither is enough alone:
- Routing: Route 53 Application Recovery Controller. One routing control per region, gated by an
  `ATLEAST quorum` safety rule, so no operator or script can turn traffic off for more regions than
  the quorum allows. Each control backs a RECOVERY_CONTROL health check that the latency records
  combine with the regional endpoint check.
- Data: a fence agent per region (a Lambda on a one-minute schedule that probes every
  `probe_interval_seconds` within its run). It reads which peers its writer still receives
  replication from, plus its own routing control, and calls `replication.quorum.decide`. A writer
  that cannot see a majority gets the write fence (`replication.sql.render_fence`): local writes to
  replicated tables are refused, and replication keeps applying. ARC steers clients; the fence stops
  the database, which is what prevents split brain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from components._iam import assume_role_policy
from components._lambda import writer_client_group
from core.naming import logical_name, merge_tags

LAMBDA_RUNTIME = "python3.12"
AGENT_HANDLER = "replication.agent.handler"
METRIC_NAMESPACE = "FraiseQL/Quorum"


@dataclass(frozen=True, kw_only=True)
class QuorumRegion:
    region: str
    vpc_id: Input[str]
    subnet_ids: list[Input[str]]           # private subnets: the agent needs ARC and CloudWatch
    db_security_group_id: Input[str]
    db_host: Input[str]
    db_port: int
    db_name: str
    db_secret_arn: Input[str]
    db_secret_kms_key_arn: Input[str]
    alarm_topic_arn: Input[str]


@dataclass(frozen=True, kw_only=True)
class QuorumArgs:
    regions: tuple[QuorumRegion, ...]
    quorum: int
    probe_interval_seconds: float
    unfence_after: int
    safety_rule_wait_ms: int
    code: pulumi.Archive                    # the `replication` package
    dependencies_layer_arns: dict[str, Input[str]]   # psycopg layer per region (PostgresReplication's)
    phase: str
    stack: str
    tags: dict[str, str] = field(default_factory=dict)


class Quorum(pulumi.ComponentResource):
    routing_control_arns: dict[str, pulumi.Output[str]]
    recovery_health_check_ids: dict[str, pulumi.Output[str]]
    cluster_endpoints: pulumi.Output[list]
    fence_function_names: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: QuorumArgs, opts: Optional[ResourceOptions] = None):
        super().__init__("fraiseql:quorum:Quorum", name, None, opts)
        child = ResourceOptions(parent=self)
        names = [q.region for q in args.regions]

        def tags(role: str) -> dict[str, str]:
            return merge_tags(args.tags, name=logical_name(name, role), phase=args.phase, stack=args.stack, component="Quorum")

        cluster = aws.route53recoverycontrol.Cluster(logical_name(name, "arc-cluster"), name=f"fraiseql-{args.stack}", opts=child)
        panel = aws.route53recoverycontrol.ControlPanel(
            logical_name(name, "arc-panel"), cluster_arn=cluster.arn, name=f"fraiseql-{args.stack}", opts=child
        )
        controls = {
            r: aws.route53recoverycontrol.RoutingControl(
                logical_name(name, "routing-control", r),
                cluster_arn=cluster.arn,
                control_panel_arn=panel.arn,
                name=f"fraiseql-{args.stack}-{r}",
                opts=child,
            )
            for r in names
        }
        aws.route53recoverycontrol.SafetyRule(
            logical_name(name, "at-least-quorum"),
            control_panel_arn=panel.arn,
            name=f"at-least-{args.quorum}-of-{len(names)}",
            asserted_controls=[controls[r].arn for r in names],
            rule_config=aws.route53recoverycontrol.SafetyRuleRuleConfigArgs(
                type="ATLEAST", threshold=args.quorum, inverted=False
            ),
            wait_period_ms=args.safety_rule_wait_ms,
            opts=child,
        )
        self.recovery_health_check_ids = {}
        for r in names:
            hc = aws.route53.HealthCheck(
                logical_name(name, "control-health", r),
                type="RECOVERY_CONTROL",
                routing_control_arn=controls[r].arn,
                tags=tags(f"control-health-{r}"),
                opts=child,
            )
            self.recovery_health_check_ids[r] = hc.id

        role = aws.iam.Role(
            logical_name(name, "agent-role"),
            assume_role_policy=assume_role_policy("lambda.amazonaws.com"),
            tags=tags("agent-role"),
            opts=child,
        )
        aws.iam.RolePolicyAttachment(
            logical_name(name, "agent-vpc-access"),
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
            opts=child,
        )
        secrets = [q.db_secret_arn for q in args.regions]
        keys = [q.db_secret_kms_key_arn for q in args.regions]
        aws.iam.RolePolicy(
            logical_name(name, "agent-policy"),
            role=role.name,
            policy=pulumi.Output.all(cluster.arn, pulumi.Output.all(*secrets), pulumi.Output.all(*keys)).apply(
                lambda a: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Effect": "Allow", "Action": "route53-recovery-cluster:GetRoutingControlState", "Resource": "*"},
                            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": a[1]},
                            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": a[2]},
                            {
                                "Effect": "Allow",
                                "Action": "cloudwatch:PutMetricData",
                                "Resource": "*",
                                "Condition": {"StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}},
                            },
                        ],
                    }
                )
            ),
            opts=child,
        )

        self.fence_function_names = {}
        for q in args.regions:
            r = q.region
            sg = writer_client_group(
                name, "agent", region=r, vpc_id=q.vpc_id, db_security_group_id=q.db_security_group_id,
                db_port=q.db_port, description="FraiseQL fence agent: its own writer, ARC and CloudWatch",
                db_rule_description="from the fence agent",
                https_description="ARC cluster endpoints, Secrets Manager, CloudWatch",
                tags=tags, opts=child,
            )
            fn = aws.lambda_.Function(
                logical_name(name, "fence-agent", r),
                region=r,
                runtime=LAMBDA_RUNTIME,
                handler=AGENT_HANDLER,
                role=role.arn,
                code=args.code,
                layers=[args.dependencies_layer_arns[r]],
                timeout=60,
                memory_size=128,
                # One run at a time per region: two agents could race on the fence.
                reserved_concurrent_executions=1,
                vpc_config=aws.lambda_.FunctionVpcConfigArgs(subnet_ids=q.subnet_ids, security_group_ids=[sg.id]),
                environment=aws.lambda_.FunctionEnvironmentArgs(
                    variables=pulumi.Output.all(q.db_host, q.db_secret_arn, cluster.cluster_endpoints, *[controls[x].arn for x in names]).apply(
                        lambda a, q=q: {
                            "FRAISEQL_REGION": q.region,
                            "FRAISEQL_REGIONS": ",".join(names),
                            "FRAISEQL_QUORUM": str(args.quorum),
                            "FRAISEQL_DB_HOST": a[0],
                            "FRAISEQL_DB_PORT": str(q.db_port),
                            "FRAISEQL_DB_NAME": q.db_name,
                            "FRAISEQL_DB_SECRET_ARN": a[1],
                            "FRAISEQL_ARC_ENDPOINTS": json.dumps(a[2] or []),
                            "FRAISEQL_ROUTING_CONTROLS": json.dumps(dict(zip(names, a[3:]))),
                            "FRAISEQL_PROBE_INTERVAL_SECONDS": f"{args.probe_interval_seconds:g}",
                            "FRAISEQL_UNFENCE_AFTER": str(args.unfence_after),
                        }
                    )
                ),
                tags=tags(f"fence-agent-{r}"),
                opts=child,
            )
            rule = aws.cloudwatch.EventRule(
                logical_name(name, "agent-schedule", r),
                region=r,
                schedule_expression="rate(1 minute)",
                description="Run the FraiseQL fence agent; each run probes until the next",
                tags=tags(f"agent-schedule-{r}"),
                opts=child,
            )
            aws.cloudwatch.EventTarget(logical_name(name, "agent-target", r), region=r, rule=rule.name, arn=fn.arn, opts=child)
            aws.lambda_.Permission(
                logical_name(name, "agent-invoke", r),
                region=r,
                action="lambda:InvokeFunction",
                function=fn.name,
                principal="events.amazonaws.com",
                source_arn=rule.arn,
                opts=child,
            )
            common = dict(
                region=r,
                namespace=METRIC_NAMESPACE,
                dimensions={"Region": r},
                period=60,
                evaluation_periods=1,
                alarm_actions=[q.alarm_topic_arn],
                ok_actions=[q.alarm_topic_arn],
                opts=child,
            )
            # Seed edge case "cascade failure": one region gone leaves exactly a quorum; say so
            # before a second failure turns it into an outage.
            aws.cloudwatch.MetricAlarm(
                logical_name(name, "quorum-reduced", r),
                alarm_description=f"{r} sees fewer than all {len(names)} regions: quorum reduced, one more failure stops writes",
                metric_name="VisibleRegions",
                statistic="Minimum",
                threshold=len(names),
                comparison_operator="LessThanThreshold",
                treat_missing_data="breaching",
                tags=tags(f"quorum-reduced-{r}"),
                **common,
            )
            aws.cloudwatch.MetricAlarm(
                logical_name(name, "fenced", r),
                alarm_description=f"{r} is fenced: it cannot see a majority and refuses writes",
                metric_name="Fenced",
                statistic="Maximum",
                threshold=0,
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="breaching",
                tags=tags(f"fenced-{r}"),
                **common,
            )
            self.fence_function_names[r] = fn.name

        self.routing_control_arns = {r: c.arn for r, c in controls.items()}
        self.cluster_endpoints = cluster.cluster_endpoints
        self.register_outputs(
            {
                "routingControlArns": self.routing_control_arns,
                "recoveryHealthCheckIds": self.recovery_health_check_ids,
                "clusterEndpoints": self.cluster_endpoints,
            }
        )
