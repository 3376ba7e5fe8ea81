"""PostgresReplication: the RDS PostgreSQL tier across regions.

`streaming` (phase A): one primary and a cross-region read replica per standby region, each encrypted
with a KMS key of its own region, plus a ReplicaLag alarm per replica (the seed's lag-over-RPO case).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from infra.naming import logical_name, merge_tags

CA_CERT = "rds-ca-rsa2048-g1"
# Parameters every node gets. rds.force_ssl keeps credentials and rows off the wire in clear text.
BASE_PARAMETERS: dict[str, tuple[str, str]] = {
    "rds.force_ssl": ("1", "immediate"),
    "log_min_duration_statement": ("1000", "immediate"),
}


@dataclass(frozen=True, kw_only=True)
class DatabaseNode:
    region: str
    role: Literal["primary", "replica"]
    instance_class: str
    subnet_group_name: Input[str]
    security_group_ids: list[Input[str]]
    alarm_topic_arn: Input[str]
    multi_az: bool


@dataclass(frozen=True, kw_only=True)
class PostgresReplicationArgs:
    mode: Literal["streaming"]
    nodes: tuple[DatabaseNode, ...]
    engine_version: str
    allocated_storage_gb: int
    max_allocated_storage_gb: Optional[int]
    storage_type: str
    backup_retention_days: int
    port: int
    db_name: str
    username: str
    performance_insights_retention_days: int
    lag_alarm_seconds: float
    # VPC of each region, for the private zone that gives the app stable writer/reader names.
    vpc_ids: dict[str, Input[str]]
    phase: str
    stack: str
    tags: dict[str, str] = field(default_factory=dict)


class PostgresReplication(pulumi.ComponentResource):
    primary_arn: pulumi.Output[str]
    primary_identifier: pulumi.Output[str]
    primary_address: pulumi.Output[str]
    master_secret_arn: pulumi.Output[str]
    replica_identifiers: dict[str, pulumi.Output[str]]
    replica_addresses: dict[str, pulumi.Output[str]]
    lag_alarm_arns: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: PostgresReplicationArgs, opts: Optional[ResourceOptions] = None):
        super().__init__("fraiseql:database:PostgresReplication", name, None, opts)
        self.args = args
        child = ResourceOptions(parent=self)
        major = args.engine_version.split(".")[0]

        def tags(role: str) -> dict[str, str]:
            return merge_tags(args.tags, name=logical_name(name, role), phase=args.phase, stack=args.stack, component="PostgresReplication")

        keys: dict[str, aws.kms.Key] = {}
        params: dict[str, aws.rds.ParameterGroup] = {}
        for node in args.nodes:
            r = node.region
            keys[r] = aws.kms.Key(
                logical_name(name, "kms", r),
                region=r,
                description=f"FraiseQL PostgreSQL storage, secrets and Performance Insights in {r}",
                enable_key_rotation=True,
                deletion_window_in_days=30,
                tags=tags(f"kms-{r}"),
                opts=ResourceOptions(parent=self, protect=True),
            )
            aws.kms.Alias(logical_name(name, "kms-alias", r), region=r, name=f"alias/{name}-{args.stack}-{r}", target_key_id=keys[r].key_id, opts=child)
            params[r] = aws.rds.ParameterGroup(
                logical_name(name, "params", r),
                region=r,
                family=f"postgres{major}",
                description=f"FraiseQL PostgreSQL {major} ({args.mode})",
                parameters=[
                    aws.rds.ParameterGroupParameterArgs(name=k, value=v, apply_method=m)
                    for k, (v, m) in sorted(BASE_PARAMETERS.items())
                ],
                tags=tags(f"params-{r}"),
                opts=child,
            )

        primary_node = next(nd for nd in args.nodes if nd.role == "primary")
        pr = primary_node.region
        common = dict(
            storage_encrypted=True,
            publicly_accessible=False,
            deletion_protection=True,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            ca_cert_identifier=CA_CERT,
            performance_insights_enabled=True,
            performance_insights_retention_period=args.performance_insights_retention_days,
            backup_retention_period=args.backup_retention_days,
            enabled_cloudwatch_logs_exports=["postgresql", "upgrade"],
            storage_type=args.storage_type,
            max_allocated_storage=args.max_allocated_storage_gb,
            port=args.port,
            skip_final_snapshot=False,
        )
        primary = aws.rds.Instance(
            logical_name(name, "primary", pr),
            region=pr,
            engine="postgres",
            engine_version=args.engine_version,
            instance_class=primary_node.instance_class,
            allocated_storage=args.allocated_storage_gb,
            db_name=args.db_name,
            username=args.username,
            manage_master_user_password=True,
            master_user_secret_kms_key_id=keys[pr].arn,
            kms_key_id=keys[pr].arn,
            performance_insights_kms_key_id=keys[pr].arn,
            multi_az=primary_node.multi_az,
            db_subnet_group_name=primary_node.subnet_group_name,
            vpc_security_group_ids=primary_node.security_group_ids,
            parameter_group_name=params[pr].name,
            final_snapshot_identifier=f"{name}-{args.stack}-{pr}-final",
            tags=tags(f"primary-{pr}"),
            opts=ResourceOptions(parent=self, protect=True),
            **common,
        )

        self.replica_identifiers = {}
        self.replica_addresses = {}
        self.lag_alarm_arns = {}
        for node in args.nodes:
            if node.role != "replica":
                continue
            r = node.region
            # A cross-region replica of an encrypted source must name a key in its own region;
            # referencing the primary's ARN makes Pulumi create it only after the primary exists.
            replica = aws.rds.Instance(
                logical_name(name, "replica", r),
                region=r,
                replicate_source_db=primary.arn,
                instance_class=node.instance_class,
                kms_key_id=keys[r].arn,
                performance_insights_kms_key_id=keys[r].arn,
                multi_az=node.multi_az,
                db_subnet_group_name=node.subnet_group_name,
                vpc_security_group_ids=node.security_group_ids,
                parameter_group_name=params[r].name,
                final_snapshot_identifier=f"{name}-{args.stack}-{r}-final",
                tags=tags(f"replica-{r}"),
                opts=ResourceOptions(parent=self, protect=True),
                **common,
            )
            alarm = aws.cloudwatch.MetricAlarm(
                logical_name(name, "replica-lag", r),
                region=r,
                alarm_description=(
                    f"Replication lag from {pr} to {r} above {args.lag_alarm_seconds:g} s: "
                    "a failover now would lose more than that much data"
                ),
                namespace="AWS/RDS",
                metric_name="ReplicaLag",
                dimensions={"DBInstanceIdentifier": replica.identifier},
                statistic="Maximum",
                period=60,
                evaluation_periods=1,
                datapoints_to_alarm=1,
                threshold=args.lag_alarm_seconds,
                comparison_operator="GreaterThanThreshold",
                # No lag datapoints means replication is not reporting at all: treat it as broken.
                treat_missing_data="breaching",
                alarm_actions=[node.alarm_topic_arn],
                ok_actions=[node.alarm_topic_arn],
                tags=tags(f"replica-lag-{r}"),
                opts=child,
            )
            self.replica_identifiers[r] = replica.identifier
            self.replica_addresses[r] = replica.address
            self.lag_alarm_arns[r] = alarm.arn

        # The app connects through these names, so a failover re-points one CNAME instead of
        # redeploying every task definition.
        zone_name = f"db.{args.stack}.fraiseql.internal"
        zone = aws.route53.Zone(
            logical_name(name, "private-zone"),
            name=zone_name,
            comment="FraiseQL database endpoints; the failover runbook moves the writer record",
            vpcs=[aws.route53.ZoneVpcArgs(vpc_id=v, vpc_region=r) for r, v in sorted(args.vpc_ids.items())],
            tags=tags("private-zone"),
            opts=child,
        )
        self.writer_hostname = f"writer.{zone_name}"
        aws.route53.Record(
            logical_name(name, "writer-record"),
            zone_id=zone.zone_id,
            name=self.writer_hostname,
            type="CNAME",
            ttl=5,
            records=[primary.address],
            # After a failover the runbook owns this record; `pulumi up` must not point it back.
            opts=ResourceOptions(parent=self, ignore_changes=["records"]),
        )
        self.reader_hostnames = {}
        for node in args.nodes:
            r = node.region
            host = f"reader-{r}.{zone_name}"
            target = primary.address if node.role == "primary" else self.replica_addresses[r]
            aws.route53.Record(
                logical_name(name, "reader-record", r),
                zone_id=zone.zone_id,
                name=host,
                type="CNAME",
                ttl=5,
                records=[target],
                opts=child,
            )
            self.reader_hostnames[r] = host

        self.private_zone_id = zone.zone_id
        self.primary_region = pr
        self.primary_arn = primary.arn
        self.primary_identifier = primary.identifier
        self.primary_address = primary.address
        self.master_secret_arn = primary.master_user_secrets.apply(lambda s: s[0].secret_arn if s else None)
        self.kms_key_arns = {r: k.arn for r, k in keys.items()}
        self.register_outputs(
            {
                "primaryArn": self.primary_arn,
                "primaryAddress": self.primary_address,
                "replicaIdentifiers": self.replica_identifiers,
                "lagAlarmArns": self.lag_alarm_arns,
            }
        )
