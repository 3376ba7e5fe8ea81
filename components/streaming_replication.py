"""StreamingReplication (phase A): one primary and a cross-region read replica per standby region.

Each instance is encrypted with a KMS key of its own region; each replica has a ReplicaLag alarm (the
seed's lag-over-RPO case). A private zone gives the app a writer name the failover runbook moves and a
reader name per region. The app's own role is created on the primary by a bootstrap function, and
physical streaming carries it to the replica.

Moving to phase B keeps these databases: `MultiMasterReplication` aliases this component's type, and
its writers alias the primary's and the replica's logical names (see `components._database`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Optional

import pulumi
import pulumi_aws as aws
from pulumi import ResourceOptions

from components._database import (
    BASE_PARAMETERS,
    BOOTSTRAP_HANDLER,
    DB_TLS_ENV,
    GENERATED_SECRET_RECOVERY_DAYS,
    LEGACY_TYPE,
    DatabaseArgs,
    DatabaseNode,
    DataTier,
    bootstrap_policy,
    master_secret_arn,
    replica_arn,
)
from components._kit import Labels
from components._lambda import LAMBDA_RUNTIME, FunctionSpec, NetworkPlace, SecurityText, in_vpc_function
from replication.roles import APP_ROLE, REPL_ROLE

TYPE = "fraiseql:database:StreamingReplication"


@dataclass(frozen=True, kw_only=True)
class StreamingSettings:
    """The bootstrap function that creates the app's role on the primary."""

    code: pulumi.Archive                    # the `replication` package
    dependencies_layer: pulumi.Archive      # psycopg and the RDS CA bundle


@dataclass(frozen=True, kw_only=True)
class StreamingReplicationArgs(DatabaseArgs):
    streaming: StreamingSettings


def _in_region(region: str, secret_arn: str) -> str:
    return replica_arn(secret_arn, region)


class StreamingReplication(DataTier):
    primary_region: str
    primary_arn: pulumi.Output[str]
    primary_identifier: pulumi.Output[str]
    primary_address: pulumi.Output[str]
    master_secret_arn: pulumi.Output[Optional[str]]
    replica_identifiers: dict[str, pulumi.Output[str]]
    replica_addresses: dict[str, pulumi.Output[str]]
    lag_alarm_arns: dict[str, pulumi.Output[str]]
    writer_hostname: str
    writer_hostnames: dict[str, str]
    reader_hostnames: dict[str, str]
    private_zone_id: pulumi.Output[str]
    app_secret_arns: dict[str, pulumi.Output[str]]
    app_secret_fillers: dict[str, pulumi.Resource]
    bootstrap_function_names: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: StreamingReplicationArgs, *, labels: Labels, opts: Optional[ResourceOptions] = None):
        super().__init__(TYPE, name, args, parameters=dict(BASE_PARAMETERS), mode="streaming",
                         aliases=[pulumi.Alias(type_=LEGACY_TYPE)], labels=labels, opts=opts)
        primary_node = next(nd for nd in args.nodes if nd.role == "primary")
        pr = primary_node.region
        primary = self._instance(primary_node, "primary")

        self.replica_identifiers, self.replica_addresses, self.lag_alarm_arns = {}, {}, {}
        for node in args.nodes:
            if node.role != "replica":
                continue
            # Referencing the primary's ARN makes Pulumi create the replica only after the primary exists.
            replica = self._instance(node, "replica", source=primary.arn)
            alarm = self._replica_lag_alarm(node, replica, pr)
            self.replica_identifiers[node.region] = replica.identifier
            self.replica_addresses[node.region] = replica.address
            self.lag_alarm_arns[node.region] = alarm.arn

        zone, zone_name = self._private_zone()
        self.writer_hostname = f"writer.{zone_name}"
        aws.route53.Record(
            self.n("writer-record"),
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
                self.n("reader-record", r),
                zone_id=zone.zone_id,
                name=host,
                type="CNAME",
                ttl=5,
                records=[target],
                opts=self.child,
            )
            self.reader_hostnames[r] = host

        self.private_zone_id = zone.zone_id
        self.writer_hostnames = {nd.region: self.writer_hostname for nd in args.nodes}
        self._app_credentials(primary_node, primary)
        self.primary_region = pr
        self.primary_arn = primary.arn
        self.primary_identifier = primary.identifier
        self.primary_address = primary.address
        self.master_secret_arn = master_secret_arn(primary)
        self.register_outputs(
            {
                "primaryArn": self.primary_arn,
                "primaryAddress": self.primary_address,
                "replicaIdentifiers": self.replica_identifiers,
                "lagAlarmArns": self.lag_alarm_arns,
            }
        )

    def _app_credentials(self, node: DatabaseNode, primary: aws.rds.Instance) -> None:
        """The app's own role and a secret every region reads from its own region.

        The secret lives beside the primary and is replicated to each standby region under that
        region's key. The role is created on the primary; physical streaming copies it, password
        included, to the replica, so after a promotion the same credentials open the new writer:
        they follow it with nothing to re-point.
        """
        args = self._args
        assert isinstance(args, StreamingReplicationArgs)
        st = args.streaming
        r = node.region
        standbys = [nd.region for nd in args.nodes if nd.region != r]
        secret = aws.secretsmanager.Secret(
            self.n("app-secret"),
            region=r,
            name=f"fraiseql/{self.labels.stack}/app",
            description="Password of the fraiseql_app role; generated by the bootstrap, read by the app in every region",
            kms_key_id=self._keys[r].arn,
            replicas=[aws.secretsmanager.SecretReplicaArgs(region=s, kms_key_id=self._keys[s].arn) for s in standbys],
            recovery_window_in_days=GENERATED_SECRET_RECOVERY_DAYS,
            opts=self.child,
        )
        master = master_secret_arn(primary)
        event = pulumi.Output.all(primary.address, master, secret.arn).apply(lambda a: {
            "node": r, "policy": {}, "master_secret_arn": a[1], "role_secrets": {APP_ROLE: a[2]},
            "nodes": [{"name": r, "region": r, "host": a[0], "port": args.port, "dbname": args.db_name, "user": REPL_ROLE}],
        })
        layer = aws.lambda_.LayerVersion(self.n("bootstrap-deps", r), region=r,
                                         layer_name=f"fraiseql-{self.labels.stack}-replication-deps", code=st.dependencies_layer,
                                         compatible_runtimes=[LAMBDA_RUNTIME], opts=self.child)
        assert node.vpc_id is not None, "the primary's bootstrap runs in its region's VPC"
        fn = in_vpc_function(
            self, "bootstrap",
            NetworkPlace(region=r, vpc_id=node.vpc_id, subnet_ids=node.app_subnet_ids,
                         db_security_group_id=node.security_group_ids[0], db_port=args.port),
            FunctionSpec(
                function="bootstrap", handler=BOOTSTRAP_HANDLER, code=st.code, layers=[layer.arn], timeout=120, memory_size=256,
                policy=pulumi.Output.all(master, secret.arn, self._keys[r].arn).apply(
                    lambda a: bootstrap_policy(r, master_secret_arn=a[0], replication_secret_arn=None, kms_key_arn=a[2],
                                               role_secret_arns=[a[1]], writes_replication_secret=False)),
                environment=event.apply(lambda e: {"FRAISEQL_BOOTSTRAP": json.dumps(e, sort_keys=True), **DB_TLS_ENV}),
                log_retention_days=args.log_retention_days,
            ),
            SecurityText(group="FraiseQL bootstrap: the primary and Secrets Manager", db_rule="from the bootstrap",
                         https="Secrets Manager"),
        )
        roles_run = aws.lambda_.Invocation(
            self.n("bootstrap-roles", r), region=r, function_name=fn.name,
            input=event.apply(lambda e: json.dumps({**e, "step": "roles"}, sort_keys=True)),
            triggers={"version": "roles-1"},
            opts=ResourceOptions(parent=self, depends_on=[primary, secret]),
        )
        self.bootstrap_function_names = {r: fn.name}
        self.app_secret_arns = {r: secret.arn, **{s: secret.arn.apply(partial(_in_region, s)) for s in standbys}}
        # The run generates the password into the secret; Secrets Manager copies it to each standby
        # region within seconds, before a new service there has started a task.
        self.app_secret_fillers: dict[str, pulumi.Resource] = {nd.region: roles_run for nd in args.nodes}
