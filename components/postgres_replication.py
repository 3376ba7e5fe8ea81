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
from replication.roles import AGENT_ROLE, APP_ROLE, REPL_ROLE
from replication.sql import RDS_PARAMETERS

LAMBDA_RUNTIME = "python3.12"
BOOTSTRAP_HANDLER = "replication.bootstrap.handler"
ROTATION_HANDLER = "replication.rotation.handler"
ROTATION_DAYS = 30
LAG_NAMESPACE = "FraiseQL/Replication"
#: Where scripts/build-lambda-deps.sh puts the RDS CA bundle in the layer (layers unpack under /opt).
RDS_CA_BUNDLE = "/opt/rds-ca/global-bundle.pem"
#: In-VPC functions verify their writer's certificate: the host is the instance endpoint it names.
DB_TLS_ENV = {"FRAISEQL_DB_SSLMODE": "verify-full", "FRAISEQL_DB_SSLROOTCERT": RDS_CA_BUNDLE}

CA_CERT = "rds-ca-rsa2048-g1"
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
    # multi-master only: where the bootstrap function runs (private subnets reach Secrets Manager).
    vpc_id: Optional[Input[str]] = None
    app_subnet_ids: tuple[Input[str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class MultiMasterSettings:
    conflict_policy: dict                   # {"default", "tables", "replicated"}: replication.bootstrap's event shape
    code: pulumi.Archive                    # the `replication` package
    dependencies_layer: pulumi.Archive      # psycopg for the Lambda runtime


@dataclass(frozen=True, kw_only=True)
class StreamingSettings:
    """Phase A: the bootstrap function that creates the app's role on the primary."""

    code: pulumi.Archive                    # the `replication` package
    dependencies_layer: pulumi.Archive      # psycopg and the RDS CA bundle


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
    streaming: Optional[StreamingSettings] = None
    log_retention_days: int = 30
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
        self.app_secret_arns: dict[str, pulumi.Output[str]] = {}
        if args.streaming is not None:
            self._app_credentials(primary_node, primary)
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
        keys = self._keys

        # The shared replication password: created empty here, filled by the first bootstrap run,
        # replicated by Secrets Manager to every other region (each replica under its region's key),
        # rotated by the rotation function below.
        secret_name = f"fraiseql/{args.stack}/replication"
        self.replication_secret_name = secret_name
        secret = aws.secretsmanager.Secret(
            logical_name(name, "replication-secret"),
            region=first,
            name=secret_name,
            description="Password of the fraiseql_repl role the subscriptions use; generated by the bootstrap",
            kms_key_id=keys[first].arn,
            replicas=[
                aws.secretsmanager.SecretReplicaArgs(region=r, kms_key_id=keys[r].arn) for r in regions if r != first
            ],
            recovery_window_in_days=30,
            tags=tags("replication-secret"),
            opts=child,
        )
        # Roles are per writer (logical replication does not copy them), so are their passwords:
        # each region's secrets live in that region only, under its key, generated by its bootstrap.
        role_secrets: dict[str, dict[str, aws.secretsmanager.Secret]] = {}
        for r in regions:
            role_secrets[r] = {
                role: aws.secretsmanager.Secret(
                    logical_name(name, f"{short}-secret", r),
                    region=r,
                    name=f"fraiseql/{args.stack}/{r}/{short}",
                    description=f"Password of the {role} role on the {r} writer; generated by the bootstrap",
                    kms_key_id=keys[r].arn,
                    recovery_window_in_days=7,
                    tags=tags(f"{short}-secret-{r}"),
                    opts=child,
                )
                for role, short in ((APP_ROLE, "app"), (AGENT_ROLE, "agent"))
            }

        nodes_event = pulumi.Output.all(*[writers[r].address for r in regions]).apply(
            lambda hosts: [
                {"name": r, "region": r, "host": h, "port": args.port, "dbname": args.db_name, "user": REPL_ROLE,
                 "index": i + 1}
                for i, (r, h) in enumerate(zip(regions, hosts))
            ]
        )
        master_secrets = {r: w.master_user_secrets.apply(lambda s: s[0].secret_arn if s else None) for r, w in writers.items()}
        base_events: dict[str, pulumi.Output[dict]] = {}
        for r in regions:
            base_events[r] = pulumi.Output.all(
                nodes_event, master_secrets[r], *[role_secrets[r][role].arn for role in (APP_ROLE, AGENT_ROLE)]
            ).apply(lambda a, r=r: {
                "node": r,
                "nodes": a[0],
                "policy": mm.conflict_policy,
                "master_secret_arn": a[1],
                # by name: in region r this is r's replica, read under r's key
                "replication_secret": secret_name,
                "create_replication_secret": r == first,
                "role_secrets": {APP_ROLE: a[2], AGENT_ROLE: a[3]},
            })

        policy_digest = hashlib.sha256(json.dumps(mm.conflict_policy, sort_keys=True).encode()).hexdigest()
        functions: dict[str, aws.lambda_.Function] = {}
        self.dependencies_layer_arns: dict[str, pulumi.Output[str]] = {}
        self.writer_identifiers, self.writer_addresses, self.bootstrap_function_names = {}, {}, {}
        self.bootstrap_role_policies: dict[str, pulumi.Output[str]] = {}
        for node in args.nodes:
            r = node.region
            role = aws.iam.Role(logical_name(name, "bootstrap-role", r), assume_role_policy=assume_role_policy("lambda.amazonaws.com"),
                                tags=tags(f"bootstrap-role-{r}"), opts=child)
            aws.iam.RolePolicyAttachment(
                logical_name(name, "bootstrap-vpc-access", r),
                role=role.name,
                policy_arn="arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
                opts=child,
            )
            policy = pulumi.Output.all(master_secrets[r], secret.arn, keys[r].arn,
                                       role_secrets[r][APP_ROLE].arn, role_secrets[r][AGENT_ROLE].arn).apply(
                lambda a, r=r: bootstrap_policy(r, master_secret_arn=a[0], replication_secret_arn=a[1], kms_key_arn=a[2],
                                                role_secret_arns=[a[3], a[4]], writes_replication_secret=r == first)
            )
            aws.iam.RolePolicy(logical_name(name, "bootstrap-policy", r), role=role.name, policy=policy, opts=child)
            self.bootstrap_role_policies[r] = policy
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
            logs = self._function_logs(f"bootstrap-logs-{r}", r, f"/aws/lambda/fraiseql-{args.stack}-bootstrap-{r}")
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
                environment=aws.lambda_.FunctionEnvironmentArgs(variables=base_events[r].apply(lambda e: {
                    # The rotation function sends only a step and a version; the rest is this region's.
                    "FRAISEQL_BOOTSTRAP": json.dumps(e, sort_keys=True),
                    **DB_TLS_ENV,
                })),
                logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=logs.name),
                tags=tags(f"bootstrap-{r}"),
                opts=child,
            )
            functions[r] = fn
            self.dependencies_layer_arns[r] = layer.arn
            self.writer_identifiers[r] = writers[r].identifier
            self.writer_addresses[r] = writers[r].address
            self.bootstrap_function_names[r] = fn.name

        locals_ = self._bootstrap_runs(functions, writers, secret, base_events, nodes_event, policy_digest)
        self._rotation(secret, functions, locals_)

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
        self.master_secret_arns = master_secrets
        self.app_secret_arns = {r: role_secrets[r][APP_ROLE].arn for r in regions}
        self.agent_secret_arns = {r: role_secrets[r][AGENT_ROLE].arn for r in regions}
        self.kms_key_arns = {r: k.arn for r, k in self._keys.items()}
        self.replica_identifiers, self.replica_addresses = {}, {}
        self.register_outputs(
            {
                "writerIdentifiers": self.writer_identifiers,
                "writerAddresses": self.writer_addresses,
                "lagAlarmArns": self.lag_alarm_arns,
            }
        )

    def _app_credentials(self, node: DatabaseNode, primary: aws.rds.Instance) -> None:
        """Phase A: the app's own role and a secret every region reads from its own region.

        The secret lives beside the primary and is replicated to each standby region under that
        region's key. The role is created on the primary; physical streaming copies it, password
        included, to the replica, so after a promotion the same credentials open the new writer:
        they follow it with nothing to re-point.
        """
        args, name, tags = self._args, self._name, self._tags
        st = args.streaming
        assert st is not None
        r = node.region
        child = ResourceOptions(parent=self)
        standbys = [nd.region for nd in args.nodes if nd.region != r]
        secret = aws.secretsmanager.Secret(
            logical_name(name, "app-secret"),
            region=r,
            name=f"fraiseql/{args.stack}/app",
            description="Password of the fraiseql_app role; generated by the bootstrap, read by the app in every region",
            kms_key_id=self._keys[r].arn,
            replicas=[aws.secretsmanager.SecretReplicaArgs(region=s, kms_key_id=self._keys[s].arn) for s in standbys],
            recovery_window_in_days=7,
            tags=tags("app-secret"),
            opts=child,
        )
        master = primary.master_user_secrets.apply(lambda s: s[0].secret_arn if s else None)
        event = pulumi.Output.all(primary.address, master, secret.arn).apply(lambda a: {
            "node": r, "policy": {}, "master_secret_arn": a[1], "role_secrets": {APP_ROLE: a[2]},
            "nodes": [{"name": r, "region": r, "host": a[0], "port": args.port, "dbname": args.db_name, "user": REPL_ROLE}],
        })
        role = aws.iam.Role(logical_name(name, "bootstrap-role", r), assume_role_policy=assume_role_policy("lambda.amazonaws.com"),
                            tags=tags(f"bootstrap-role-{r}"), opts=child)
        aws.iam.RolePolicyAttachment(logical_name(name, "bootstrap-vpc-access", r), role=role.name,
                                     policy_arn="arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole", opts=child)
        aws.iam.RolePolicy(logical_name(name, "bootstrap-policy", r), role=role.name, opts=child,
                           policy=pulumi.Output.all(master, secret.arn, self._keys[r].arn).apply(
                               lambda a: bootstrap_policy(r, master_secret_arn=a[0], replication_secret_arn=None,
                                                          kms_key_arn=a[2], role_secret_arns=[a[1]],
                                                          writes_replication_secret=False)))
        layer = aws.lambda_.LayerVersion(logical_name(name, "bootstrap-deps", r), region=r,
                                         layer_name=f"fraiseql-{args.stack}-replication-deps", code=st.dependencies_layer,
                                         compatible_runtimes=[LAMBDA_RUNTIME], opts=child)
        sg = writer_client_group(
            name, "bootstrap", region=r, vpc_id=node.vpc_id, db_security_group_id=node.security_group_ids[0],
            db_port=args.port, description="FraiseQL bootstrap: the primary and Secrets Manager",
            db_rule_description="from the bootstrap", https_description="Secrets Manager", tags=tags, opts=child,
        )
        logs = self._function_logs(f"bootstrap-logs-{r}", r, f"/aws/lambda/fraiseql-{args.stack}-bootstrap-{r}")
        fn = aws.lambda_.Function(
            logical_name(name, "bootstrap", r), region=r, runtime=LAMBDA_RUNTIME, handler=BOOTSTRAP_HANDLER,
            role=role.arn, code=st.code, layers=[layer.arn], timeout=120, memory_size=256,
            vpc_config=aws.lambda_.FunctionVpcConfigArgs(subnet_ids=list(node.app_subnet_ids), security_group_ids=[sg.id]),
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=event.apply(
                lambda e: {"FRAISEQL_BOOTSTRAP": json.dumps(e, sort_keys=True), **DB_TLS_ENV})),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=logs.name),
            tags=tags(f"bootstrap-{r}"), opts=child,
        )
        aws.lambda_.Invocation(
            logical_name(name, "bootstrap-roles", r), region=r, function_name=fn.name,
            input=event.apply(lambda e: json.dumps({**e, "step": "roles"}, sort_keys=True)),
            triggers={"version": "roles-1"},
            opts=ResourceOptions(parent=self, depends_on=[primary, secret]),
        )
        self.bootstrap_function_names = {r: fn.name}
        self.app_secret_arns = {r: secret.arn, **{s: secret.arn.apply(lambda a, s=s: replica_arn(a, s)) for s in standbys}}

    def _function_logs(self, role: str, region: str, log_name: str) -> aws.cloudwatch.LogGroup:
        """A function's log group, declared so that it has a retention (Lambda's own never expires)."""
        return aws.cloudwatch.LogGroup(
            logical_name(self._name, role), region=region, name=log_name,
            retention_in_days=self._args.log_retention_days, tags=self._tags(role), opts=ResourceOptions(parent=self),
        )

    def _bootstrap_runs(self, functions, writers, secret, base_events, nodes_event, policy_digest) -> list[aws.lambda_.Invocation]:
        """Step `local` in every region (the first creates the shared password), then `subscribe`.

        A subscription made before its publisher's publication exists would replicate nothing, so
        every `subscribe` waits for every `local`.
        """
        name = self._name
        regions = [nd.region for nd in self._args.nodes]
        locals_: list[aws.lambda_.Invocation] = []
        for step in ("local", "subscribe"):
            for r in regions:
                event = base_events[r].apply(lambda e, step=step: json.dumps(
                    {**e, "step": step, "create_replication_secret": e["create_replication_secret"] and step == "local"},
                    sort_keys=True))
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
        return locals_

    def _rotation(self, secret: aws.secretsmanager.Secret, functions: dict[str, aws.lambda_.Function],
                  locals_: list[aws.lambda_.Invocation]) -> None:
        """The replication password rotates every `ROTATION_DAYS` through `replication.rotation`.

        The function runs beside the secret (the first region) outside any VPC: it only calls
        Secrets Manager and each region's bootstrap function, which does the database work on its
        own writer with its own region's copy of the secret.
        """
        args, name, tags = self._args, self._name, self._tags
        mm = args.multi_master
        assert mm is not None
        regions = [nd.region for nd in args.nodes]
        first = regions[0]
        child = ResourceOptions(parent=self)
        role = aws.iam.Role(logical_name(name, "rotation-role"), assume_role_policy=assume_role_policy("lambda.amazonaws.com"),
                            tags=tags("rotation-role"), opts=child)
        logs = self._function_logs("rotation-logs", first, f"/aws/lambda/fraiseql-{args.stack}-replication-rotation")
        self.rotation_role_policy = pulumi.Output.all(secret.arn, self._keys[first].arn, logs.arn,
                                                      *[functions[r].arn for r in regions]).apply(
            lambda a: rotation_policy(first, secret_arn=a[0], kms_key_arn=a[1], log_group_arn=a[2], function_arns=list(a[3:]))
        )
        aws.iam.RolePolicy(logical_name(name, "rotation-policy"), role=role.name, policy=self.rotation_role_policy, opts=child)
        fn = aws.lambda_.Function(
            logical_name(name, "rotation"),
            region=first,
            runtime=LAMBDA_RUNTIME,
            handler=ROTATION_HANDLER,
            role=role.arn,
            code=mm.code,
            # Each region's bootstrap step may wait for its replica and its subscriptions.
            timeout=900,
            memory_size=128,
            environment=aws.lambda_.FunctionEnvironmentArgs(
                variables=pulumi.Output.all(*[functions[r].arn for r in regions]).apply(
                    lambda arns: {"FRAISEQL_BOOTSTRAP_FUNCTIONS": json.dumps(dict(zip(regions, arns)))})
            ),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=logs.name),
            tags=tags("rotation"),
            opts=child,
        )
        allow = aws.lambda_.Permission(
            logical_name(name, "rotation-invoke"), region=first, action="lambda:InvokeFunction", function=fn.name,
            principal="secretsmanager.amazonaws.com", source_arn=secret.arn, opts=child,
        )
        aws.secretsmanager.SecretRotation(
            logical_name(name, "replication-rotation"),
            region=first,
            secret_id=secret.id,
            rotation_lambda_arn=fn.arn,
            rotation_rules=aws.secretsmanager.SecretRotationRotationRulesArgs(automatically_after_days=ROTATION_DAYS),
            # The first bootstrap gives the secret its first value; rotation starts from there.
            rotate_immediately=False,
            opts=ResourceOptions(parent=self, depends_on=[allow, *locals_]),
        )
        self.rotation_function_name = fn.name


def _secret_kms(region: str, kms_key_arn: str, actions: list[str]) -> dict:
    return {"Effect": "Allow", "Action": actions, "Resource": kms_key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}}}


def replica_arn(secret_arn: str, region: str) -> str:
    """A replicated secret's ARN in another region: same name and suffix, that region."""
    parts = secret_arn.split(":")
    return ":".join(parts[:3] + [region] + parts[4:])


def bootstrap_policy(region: str, *, master_secret_arn: str, replication_secret_arn: Optional[str], kms_key_arn: str,
                     role_secret_arns: list[str], writes_replication_secret: bool) -> str:
    """One region's bootstrap: its own writer's secrets in its own region, under its own key."""
    reads = {master_secret_arn, *role_secret_arns}
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
