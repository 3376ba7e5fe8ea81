"""What both database components declare the same way (not a component itself).

`StreamingReplication` (phase A) and `MultiMasterReplication` (phases B and C) are two roles of one
data tier: a KMS key and a parameter group per region, encrypted instances built by one function, a
private zone for stable names. Both keep the logical names the single
`PostgresReplication` component used, and both alias that component's type, so no URN of a running
stack changes without an alias (tests/test_golden_urns.py, tests/test_phase_transitions.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Optional, Sequence

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from components._kit import Component, Labels
from core.engine import parameter_group_family
from core.runbook import describe

BOOTSTRAP_HANDLER = "replication.bootstrap.handler"
ROTATION_HANDLER = "replication.rotation.handler"
ROTATION_DAYS = 30
LAG_NAMESPACE = "FraiseQL/Replication"
#: Where scripts/build-lambda-deps.sh puts the RDS CA bundle in the layer (layers unpack under /opt).
RDS_CA_BUNDLE = "/opt/rds-ca/global-bundle.pem"
#: In-VPC functions verify their writer's certificate: the host is the instance endpoint it names.
DB_TLS_ENV = {"FRAISEQL_DB_SSLMODE": "verify-full", "FRAISEQL_DB_SSLROOTCERT": RDS_CA_BUNDLE}
#: The type token of the one component both roles were split from; each role aliases it.
LEGACY_TYPE = "fraiseql:database:PostgresReplication"

CA_CERT = "rds-ca-rsa2048-g1"
#: Secrets holding generated passwords are deleted at once, without a recovery window. Their names
#: are fixed (`fraiseql/<stack>/...`), and a window would keep a name reserved for 7 to 30 days after
#: a destroy, so re-creating the stack would fail ("already scheduled for deletion"). Nothing is lost:
#: the bootstrap generates a missing password on its next run and sets it on its role; the databases
#: the passwords open are protected, so a destroy is deliberate (README: Database changes and deletion).
GENERATED_SECRET_RECOVERY_DAYS = 0
# Parameters every node gets. rds.force_ssl keeps credentials and rows off the wire in clear text.
BASE_PARAMETERS: dict[str, tuple[str, str]] = {
    "rds.force_ssl": ("1", "immediate"),
    "log_min_duration_statement": ("1000", "immediate"),
    # Bind parameters never reach the log (no password is bound as one, but an app's values may be secret).
    "log_parameter_max_length": ("0", "immediate"),
    "log_parameter_max_length_on_error": ("0", "immediate"),
}


@dataclass(frozen=True, kw_only=True)
class DatabaseNode:
    region: str
    role: Literal["primary", "replica", "writer"]
    instance_class: str
    subnet_group_name: Input[str]
    security_group_ids: list[Input[str]]
    alarm_topic_arn: Input[str]
    multi_az: bool
    # Where the region's functions run (private subnets reach Secrets Manager).
    vpc_id: Optional[Input[str]] = None
    app_subnet_ids: tuple[Input[str], ...] = ()
    #: Multi-master: while set, this writer is declared as a cross-region read replica of that region's
    #: writer (`fraiseql:regions[i].seed_from`); the runbook promotes it and joins it to the mesh.
    seed_from: Optional[str] = None
    #: Multi-master: the writer's index (distinct per writer: it decides which identity values it hands out).
    index: int = 0


@dataclass(frozen=True, kw_only=True)
class DatabaseArgs:
    """What every role of the data tier takes."""

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
    # VPC of each region, for the private zone that gives the app stable names.
    vpc_ids: dict[str, Input[str]]
    log_retention_days: int = 30
    #: Class, storage and Multi-AZ changes apply during `pulumi up`, not in the next maintenance window.
    apply_immediately: bool = True


class DataTier(Component):
    """Base of both roles: keys, parameter groups, the instance builder, the private zone."""

    kms_key_arns: dict[str, pulumi.Output[str]]

    def __init__(self, type_token: str, name: str, args: DatabaseArgs, *, parameters: dict[str, tuple[str, str]],
                 mode: str, aliases: Sequence[pulumi.Alias], labels: Labels, opts: Optional[ResourceOptions] = None):
        opts = ResourceOptions.merge(opts, ResourceOptions(aliases=list(aliases)))
        super().__init__(type_token, name, labels=labels, opts=opts)
        self._args = args
        major = int(args.engine_version)  # validated: a major only (core/engine.py)
        self._keys: dict[str, aws.kms.Key] = {}
        self._params: dict[str, aws.rds.ParameterGroup] = {}
        for node in args.nodes:
            r = node.region
            self._keys[r] = aws.kms.Key(
                self.n("kms", r),
                region=r,
                description=f"FraiseQL PostgreSQL storage, secrets and Performance Insights in {r}",
                enable_key_rotation=True,
                deletion_window_in_days=30,
                opts=ResourceOptions(parent=self, protect=True),
            )
            aws.kms.Alias(self.n("kms-alias", r), region=r, name=f"alias/{name}-{labels.stack}-{r}",
                          target_key_id=self._keys[r].key_id, opts=self.child)
            self._params[r] = aws.rds.ParameterGroup(
                self.n("params", r),
                region=r,
                family=parameter_group_family(major),
                description=f"FraiseQL PostgreSQL {major} ({mode})",
                parameters=[
                    aws.rds.ParameterGroupParameterArgs(name=k, value=v, apply_method=m)
                    for k, (v, m) in sorted(parameters.items())
                ],
                opts=self.child,
            )
        self.kms_key_arns = {r: k.arn for r, k in self._keys.items()}

    def _instance(self, node: DatabaseNode, role: str, *, source: Optional[Input[str]] = None,
                  aliases: Sequence[pulumi.Alias] = ()) -> aws.rds.Instance:
        """One protected, encrypted instance in its own region's key: a source database, or (with
        `source`, the ARN of another region's instance) a cross-region read replica of it.

        A replica takes its engine, storage, database and users from its source (RDS refuses them on
        a replica), and is deleted without a final snapshot (RDS refuses one for a replica: its data
        is its source's). Removing `source` later promotes it in place: the instance keeps its
        identity and from then on gets a final snapshot like any source.
        """
        args, r, key = self._args, node.region, self._keys[node.region]
        specific: dict[str, Any]
        if source is None:
            specific = dict(
                engine="postgres",
                engine_version=args.engine_version,
                allocated_storage=args.allocated_storage_gb,
                db_name=args.db_name,
                username=args.username,
                manage_master_user_password=True,
                master_user_secret_kms_key_id=key.arn,
                skip_final_snapshot=False,
                final_snapshot_identifier=key.key_id.apply(partial(final_snapshot_id, self.base_name, self.labels.stack, r)),
            )
        else:
            specific = dict(replicate_source_db=source, skip_final_snapshot=True)
        return aws.rds.Instance(
            self.n(role, r),
            region=r,
            instance_class=node.instance_class,
            kms_key_id=key.arn,
            performance_insights_kms_key_id=key.arn,
            multi_az=node.multi_az,
            db_subnet_group_name=node.subnet_group_name,
            vpc_security_group_ids=node.security_group_ids,
            parameter_group_name=self._params[r].name,
            # A phase change (class, Multi-AZ, storage) takes effect during the `up` that makes it,
            # not up to a week later in the maintenance window (README: Database changes and deletion).
            apply_immediately=args.apply_immediately,
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
            opts=ResourceOptions(parent=self, protect=True, aliases=list(aliases)),
            **specific,
        )

    def _replica_lag_alarm(self, node: DatabaseNode, replica: aws.rds.Instance, source_region: str) -> aws.cloudwatch.MetricAlarm:
        """RDS's own lag metric for a cross-region read replica (the seed's lag-over-RPO case)."""
        args, r = self._args, node.region
        return aws.cloudwatch.MetricAlarm(
            self.n("replica-lag", r),
            region=r,
            alarm_description=describe(
                f"Replication lag from {source_region} to {r} above {args.lag_alarm_seconds:g} s: "
                "a failover now would lose more than that much data", "replica-lag"
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
            opts=self.child,
        )

    def _private_zone(self) -> tuple[aws.route53.Zone, str]:
        # The app connects through these names, so a failover re-points one CNAME instead of
        # redeploying every task definition.
        zone_name = f"db.{self.labels.stack}.fraiseql.internal"
        zone = aws.route53.Zone(
            self.n("private-zone"),
            name=zone_name,
            comment="FraiseQL database endpoints; the failover runbook moves the writer record",
            vpcs=[aws.route53.ZoneVpcArgs(vpc_id=v, vpc_region=r) for r, v in sorted(self._args.vpc_ids.items())],
            opts=self.child,
        )
        return zone, zone_name


def final_snapshot_id(name: str, stack: str, region: str, key_id: str) -> str:
    """The snapshot RDS takes when the instance is deleted: `{name}-{stack}-{region}-final-{key}`.

    `key` is the first block of the region's KMS key id. A fixed id would make the second deletion
    of a re-created stack fail (the first final snapshot already has it); the key is created with
    the stack and never replaced (it is protected), so each incarnation of the stack gets its own id
    while every update of one keeps it.
    """
    return f"{name}-{stack}-{region}-final-{key_id.split('-')[0].lower()}"


def master_secret_arn(instance: aws.rds.Instance) -> pulumi.Output[Optional[str]]:
    """The managed master secret of a source instance (a read replica has none)."""
    return instance.master_user_secrets.apply(lambda s: s[0].secret_arn if s else None)


def _secret_kms(region: str, kms_key_arn: str, actions: list[str]) -> dict:
    return {"Effect": "Allow", "Action": actions, "Resource": kms_key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}}}


def replica_arn(secret_arn: str, region: str) -> str:
    """A replicated secret's ARN in another region: same name and suffix, that region."""
    parts = secret_arn.split(":")
    return ":".join(parts[:3] + [region] + parts[4:])


def bootstrap_policy(region: str, *, master_secret_arn: Optional[str], replication_secret_arn: Optional[str], kms_key_arn: str,
                     role_secret_arns: list[str], writes_replication_secret: bool) -> str:
    """One region's bootstrap: its own writer's secrets in its own region, under its own key.

    A writer still seeding (a read replica) has no master secret yet; its bootstrap reads none until
    promotion gives it one.
    """
    reads = {*role_secret_arns, *([master_secret_arn] if master_secret_arn else [])}
    if replication_secret_arn:
        reads.add(replica_arn(replication_secret_arn, region))
    writes = sorted(role_secret_arns + ([replication_secret_arn] if writes_replication_secret and replication_secret_arn else []))
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadOwnRegionSecrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
             "Resource": sorted(reads)},
            {"Sid": "GenerateOwnPasswords", "Effect": "Allow", "Action": "secretsmanager:PutSecretValue", "Resource": writes},
            {"Sid": "UseOwnKeyThroughSecretsManager", **_secret_kms(region, kms_key_arn, ["kms:Decrypt", "kms:GenerateDataKey"])},
        ],
    }, sort_keys=True)


def rotation_policy(region: str, *, secret_arn: str, kms_key_arn: str, log_group_arn: str, function_arns: list[str]) -> str:
    """The rotation function: the rotation contract on one secret, and each region's bootstrap."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "RotateTheReplicationSecret", "Effect": "Allow",
             "Action": ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue",
                        "secretsmanager:UpdateSecretVersionStage"], "Resource": secret_arn},
            {"Sid": "UseItsKeyThroughSecretsManager", **_secret_kms(region, kms_key_arn, ["kms:Decrypt", "kms:GenerateDataKey"])},
            {"Sid": "RunEachRegionsBootstrap", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": sorted(function_arns)},
            {"Sid": "WriteItsLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": f"{log_group_arn}:*"},
        ],
    }, sort_keys=True)

