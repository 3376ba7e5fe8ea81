"""PostgresReplication: the RDS PostgreSQL tier across regions.

`streaming` (phase A): one primary and a cross-region read replica per standby region, each encrypted
with a KMS key of its own region, plus a ReplicaLag alarm per replica (the seed's lag-over-RPO case).

`multi-master` (phases B and C): one writer per region, with logical replication and commit timestamps
in its parameter group. A bootstrap Lambda in each region applies the SQL rendered by
`replication.sql` (conflict objects, publication, subscriptions with `origin = none`) to its local
writer. `pulumi up` invokes it, and it re-runs whenever the policy or the peers change; the SQL is
idempotent. The subscriptions authenticate with a replication password. The first region's bootstrap
generates it into a Secrets Manager secret replicated to every region, so it never passes through
Pulumi state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal, Optional

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from components._iam import assume_role_policy
from components._lambda import writer_client_group
from core.naming import logical_name, merge_tags
from replication.sql import RDS_PARAMETERS

LAMBDA_RUNTIME = "python3.12"
BOOTSTRAP_HANDLER = "replication.bootstrap.handler"
LAG_NAMESPACE = "FraiseQL/Replication"

CA_CERT = "rds-ca-rsa2048-g1"
# Parameters every node gets. rds.force_ssl keeps credentials and rows off the wire in clear text.
BASE_PARAMETERS: dict[str, tuple[str, str]] = {
    "rds.force_ssl": ("1", "immediate"),
    "log_min_duration_statement": ("1000", "immediate"),
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
    # multi-master only: where the bootstrap function runs (private subnets reach Secrets Manager).
    vpc_id: Optional[Input[str]] = None
    app_subnet_ids: tuple[Input[str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class MultiMasterSettings:
    conflict_policy: dict                   # {"default", "tables", "replicated"}: replication.bootstrap's event shape
    code: pulumi.Archive                    # the `replication` package
    dependencies_layer: pulumi.Archive      # psycopg for the Lambda runtime


@dataclass(frozen=True, kw_only=True)
class PostgresReplicationArgs:
    mode: Literal["streaming", "multi-master"]
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
    multi_master: Optional[MultiMasterSettings] = None
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

        parameters = dict(BASE_PARAMETERS)
        if args.mode == "multi-master":
            parameters.update(RDS_PARAMETERS)
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
                    for k, (v, m) in sorted(parameters.items())
                ],
                tags=tags(f"params-{r}"),
                opts=child,
            )

        self._common = dict(
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
        self._name, self._args, self._keys, self._params, self._tags = name, args, keys, params, tags
        if args.mode == "multi-master":
            self._multi_master()
            return
        common = self._common
        primary_node = next(nd for nd in args.nodes if nd.role == "primary")
        pr = primary_node.region
        primary = self._writer(primary_node, "primary")

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

        zone, zone_name = self._private_zone()
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
        self.writer_hostnames = {nd.region: self.writer_hostname for nd in args.nodes}
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

    def _writer(self, node: DatabaseNode, role: str) -> aws.rds.Instance:
        """A source database: the phase A primary or one multi-master writer."""
        args, r, key = self._args, node.region, self._keys[node.region]
        return aws.rds.Instance(
            logical_name(self._name, role, r),
            region=r,
            engine="postgres",
            engine_version=args.engine_version,
            instance_class=node.instance_class,
            allocated_storage=args.allocated_storage_gb,
            db_name=args.db_name,
            username=args.username,
            manage_master_user_password=True,
            master_user_secret_kms_key_id=key.arn,
            kms_key_id=key.arn,
            performance_insights_kms_key_id=key.arn,
            multi_az=node.multi_az,
            db_subnet_group_name=node.subnet_group_name,
            vpc_security_group_ids=node.security_group_ids,
            parameter_group_name=self._params[r].name,
            final_snapshot_identifier=f"{self._name}-{args.stack}-{r}-final",
            tags=self._tags(f"{role}-{r}"),
            opts=ResourceOptions(parent=self, protect=True),
            **self._common,
        )

    def _private_zone(self) -> tuple[aws.route53.Zone, str]:
        # The app connects through these names, so a failover re-points one CNAME instead of
        # redeploying every task definition.
        args = self._args
        zone_name = f"db.{args.stack}.fraiseql.internal"
        zone = aws.route53.Zone(
            logical_name(self._name, "private-zone"),
            name=zone_name,
            comment="FraiseQL database endpoints; the failover runbook moves the writer record",
            vpcs=[aws.route53.ZoneVpcArgs(vpc_id=v, vpc_region=r) for r, v in sorted(args.vpc_ids.items())],
            tags=self._tags("private-zone"),
            opts=ResourceOptions(parent=self),
        )
        return zone, zone_name

    def _multi_master(self) -> None:
        args, name, tags = self._args, self._name, self._tags
        child = ResourceOptions(parent=self)
        mm = args.multi_master
        assert mm is not None, "multi-master mode needs MultiMasterSettings"
        writers = {nd.region: self._writer(nd, "writer") for nd in args.nodes}
        regions = [nd.region for nd in args.nodes]
        first = regions[0]

        # The shared replication password: created empty here, filled by the first bootstrap run,
        # replicated by Secrets Manager to every other region.
        secret_name = f"fraiseql/{args.stack}/replication"
        self.replication_secret_name = secret_name
        secret = aws.secretsmanager.Secret(
            logical_name(name, "replication-secret"),
            region=first,
            name=secret_name,
            description="Password of the fraiseql_repl role the subscriptions use; generated by the bootstrap",
            kms_key_id=self._keys[first].arn,
            replicas=[
                aws.secretsmanager.SecretReplicaArgs(region=r, kms_key_id=self._keys[r].arn) for r in regions if r != first
            ],
            recovery_window_in_days=30,
            tags=tags("replication-secret"),
            opts=child,
        )

        assume = assume_role_policy("lambda.amazonaws.com")
        role = aws.iam.Role(logical_name(name, "bootstrap-role"), assume_role_policy=assume, tags=tags("bootstrap-role"), opts=child)
        aws.iam.RolePolicyAttachment(
            logical_name(name, "bootstrap-vpc-access"),
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
            opts=child,
        )
        master_secrets = [w.master_user_secrets.apply(lambda s: s[0].secret_arn if s else None) for w in writers.values()]
        aws.iam.RolePolicy(
            logical_name(name, "bootstrap-policy"),
            role=role.name,
            policy=pulumi.Output.all(
                pulumi.Output.all(*master_secrets), pulumi.Output.all(*[k.arn for k in self._keys.values()])
            ).apply(
                lambda a: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": a[0]},
                            {
                                "Effect": "Allow",
                                "Action": ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue",
                                           "secretsmanager:DescribeSecret"],
                                "Resource": f"arn:aws:secretsmanager:*:*:secret:{secret_name}-*",
                            },
                            {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"], "Resource": a[1]},
                        ],
                    }
                )
            ),
            opts=child,
        )

        nodes_event = pulumi.Output.all(*[writers[r].address for r in regions]).apply(
            lambda hosts: [
                {"name": r, "region": r, "host": h, "port": args.port, "dbname": args.db_name, "user": "fraiseql_repl",
                 "index": i + 1}
                for i, (r, h) in enumerate(zip(regions, hosts))
            ]
        )
        policy_digest = hashlib.sha256(json.dumps(mm.conflict_policy, sort_keys=True).encode()).hexdigest()
        functions: dict[str, aws.lambda_.Function] = {}
        self.dependencies_layer_arns: dict[str, pulumi.Output[str]] = {}
        self.writer_identifiers, self.writer_addresses, self.bootstrap_function_names = {}, {}, {}
        for node in args.nodes:
            r = node.region
            layer = aws.lambda_.LayerVersion(
                logical_name(name, "bootstrap-deps", r),
                region=r,
                # Shared with the fence agent (Quorum), which runs the same package.
                layer_name=f"fraiseql-{args.stack}-replication-deps",
                code=mm.dependencies_layer,
                compatible_runtimes=[LAMBDA_RUNTIME],
                opts=child,
            )
            sg = writer_client_group(
                name, "bootstrap", region=r, vpc_id=node.vpc_id, db_security_group_id=node.security_group_ids[0],
                db_port=args.port, description="FraiseQL replication bootstrap: its own writer and AWS APIs",
                db_rule_description="from the replication bootstrap", https_description="Secrets Manager",
                tags=tags, opts=child,
            )
            fn = aws.lambda_.Function(
                logical_name(name, "bootstrap", r),
                region=r,
                runtime=LAMBDA_RUNTIME,
                handler=BOOTSTRAP_HANDLER,
                role=role.arn,
                code=mm.code,
                layers=[layer.arn],
                timeout=300,
                memory_size=256,
                vpc_config=aws.lambda_.FunctionVpcConfigArgs(subnet_ids=list(node.app_subnet_ids), security_group_ids=[sg.id]),
                tags=tags(f"bootstrap-{r}"),
                opts=child,
            )
            functions[r] = fn
            self.dependencies_layer_arns[r] = layer.arn
            self.writer_identifiers[r] = writers[r].identifier
            self.writer_addresses[r] = writers[r].address
            self.bootstrap_function_names[r] = fn.name

        self._bootstrap_runs(functions, writers, secret, nodes_event, policy_digest)

        # Per-pair lag, published by the publisher's fence agent from pg_stat_replication.replay_lag
        # (measured on one clock, so no skew). A cut link removes the walsender: no data = breaching.
        self.lag_alarm_arns = {}
        for sub in args.nodes:
            for pub in args.nodes:
                if sub.region == pub.region:
                    continue
                alarm = aws.cloudwatch.MetricAlarm(
                    logical_name(name, "replication-lag", f"{pub.region}-to-{sub.region}"),
                    region=pub.region,
                    alarm_description=(
                        f"Replication from {pub.region} to {sub.region} lags by more than {args.lag_alarm_seconds:g} s: "
                        "writes in that window would be lost with the region"
                    ),
                    namespace=LAG_NAMESPACE,
                    metric_name="LagSeconds",
                    dimensions={"Subscriber": sub.region, "Publisher": pub.region},
                    statistic="Maximum",
                    period=60,
                    evaluation_periods=1,
                    threshold=args.lag_alarm_seconds,
                    comparison_operator="GreaterThanThreshold",
                    treat_missing_data="breaching",
                    alarm_actions=[pub.alarm_topic_arn],
                    ok_actions=[pub.alarm_topic_arn],
                    tags=tags(f"replication-lag-{pub.region}-to-{sub.region}"),
                    opts=child,
                )
                self.lag_alarm_arns[f"{pub.region}->{sub.region}"] = alarm.arn

        zone, zone_name = self._private_zone()
        self.writer_hostnames, self.reader_hostnames = {}, {}
        for r in regions:
            host = f"writer-{r}.{zone_name}"
            aws.route53.Record(
                logical_name(name, "writer-record", r), zone_id=zone.zone_id, name=host, type="CNAME", ttl=5,
                records=[writers[r].address], opts=child,
            )
            self.writer_hostnames[r] = self.reader_hostnames[r] = host
        self.private_zone_id = zone.zone_id
        self.master_secret_arns = {r: s for r, s in zip(regions, master_secrets)}
        self.kms_key_arns = {r: k.arn for r, k in self._keys.items()}
        self.replica_identifiers, self.replica_addresses = {}, {}
        self.register_outputs(
            {
                "writerIdentifiers": self.writer_identifiers,
                "writerAddresses": self.writer_addresses,
                "lagAlarmArns": self.lag_alarm_arns,
            }
        )

    def _bootstrap_runs(self, functions, writers, secret, nodes_event, policy_digest) -> None:
        """Step `local` in every region (the first creates the shared password), then `subscribe`.

        A subscription made before its publisher's publication exists would replicate nothing, so
        every `subscribe` waits for every `local`.
        """
        args, name = self._args, self._name
        mm = args.multi_master
        regions = [nd.region for nd in args.nodes]
        first = regions[0]
        locals_: list[aws.lambda_.Invocation] = []
        for step in ("local", "subscribe"):
            for r in regions:
                event = pulumi.Output.all(nodes_event, writers[r].master_user_secrets).apply(
                    lambda a, r=r, step=step: json.dumps(
                        {
                            "step": step,
                            "node": r,
                            "nodes": a[0],
                            "policy": mm.conflict_policy,
                            "master_secret_arn": a[1][0]["secret_arn"] if isinstance(a[1][0], dict) else a[1][0].secret_arn,
                            "replication_secret": self.replication_secret_name,
                            "create_replication_secret": step == "local" and r == first,
                        },
                        sort_keys=True,
                    )
                )
                deps: list[pulumi.Resource] = [*writers.values(), secret]
                deps += locals_ if step == "subscribe" else locals_[:1]
                run = aws.lambda_.Invocation(
                    logical_name(name, f"bootstrap-{step}", r),
                    region=r,
                    function_name=functions[r].name,
                    input=event,
                    triggers={"policy": policy_digest, "peers": nodes_event.apply(lambda n: json.dumps(n, sort_keys=True))},
                    opts=ResourceOptions(parent=self, depends_on=deps),
                )
                if step == "local":
                    locals_.append(run)
