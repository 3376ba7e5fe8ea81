"""MultiMasterReplication (phases B and C): one writer per region, meshed by logical replication.

Each writer's parameter group turns on logical replication and commit timestamps. A bootstrap
Lambda in each region applies the SQL rendered by `replication.sql` (conflict objects, publication,
subscriptions with `origin = none`) to its local writer. `pulumi up` invokes it, and it re-runs
whenever the policy or the peers change; the SQL is idempotent. The subscriptions authenticate with
a replication password. The first region's bootstrap generates it into a Secrets Manager secret
replicated to every region, so it never passes through Pulumi state.

A region with `seed_from` is joining: its writer is declared as a cross-region read replica of that
region's writer (a physical copy, under its own region's key, with a ReplicaLag alarm). Its secrets,
bootstrap function and fence agent exist, but it is in no bootstrap run, no rotation, no pair-lag
alarm and no quorum until the runbook has promoted it and the operator has removed `seed_from`.

The writers keep the identity of the phase A databases: this component aliases the phase A
component's type, and each writer aliases the names `primary-<region>` and `replica-<region>` it had
there, so the phase A standby becomes its region's writer by promotion, never by replacement.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

import pulumi
import pulumi_aws as aws
from pulumi import ResourceOptions

from components import streaming_replication
from components._database import (
    BASE_PARAMETERS,
    BOOTSTRAP_HANDLER,
    DB_TLS_ENV,
    GENERATED_SECRET_RECOVERY_DAYS,
    LAG_NAMESPACE,
    LEGACY_TYPE,
    ROTATION_DAYS,
    ROTATION_HANDLER,
    DatabaseArgs,
    DatabaseNode,
    DataTier,
    bootstrap_policy,
    master_secret_arn,
    rotation_policy,
)
from components._iam import assume_role_policy
from components._kit import Labels
from components._lambda import LAMBDA_RUNTIME, FunctionSpec, NetworkPlace, SecurityText, function_logs, in_vpc_function
from core.naming import logical_name
from core.runbook import describe
from replication.roles import AGENT_ROLE, APP_ROLE, REPL_ROLE
from replication.sql import RDS_PARAMETERS, schema_digest

TYPE = "fraiseql:database:MultiMasterReplication"
#: A bootstrap step may wait up to 180 s for its region's copy of a secret (replication.bootstrap).
BOOTSTRAP_TIMEOUT_S = 300


@dataclass(frozen=True, kw_only=True)
class MultiMasterSettings:
    conflict_policy: dict                   # {"default", "tables", "replicated"}: replication.bootstrap's event shape
    code: pulumi.Archive                    # the `replication` package
    dependencies_layer: pulumi.Archive      # psycopg for the Lambda runtime


@dataclass(frozen=True, kw_only=True)
class MultiMasterReplicationArgs(DatabaseArgs):
    multi_master: MultiMasterSettings


def _step_event(step: str, base: dict[str, Any]) -> str:
    return json.dumps({**base, "step": step, "create_replication_secret": base["create_replication_secret"] and step == "local"},
                      sort_keys=True)


def earlier_names(name: str, region: str) -> list[pulumi.Alias]:
    """The names a region's database had in phase A: whichever exists in the stack's state is kept."""
    return [pulumi.Alias(name=logical_name(name, role, region)) for role in ("primary", "replica")]


class MultiMasterReplication(DataTier):
    writer_identifiers: dict[str, pulumi.Output[str]]
    writer_addresses: dict[str, pulumi.Output[str]]
    master_secret_arns: dict[str, pulumi.Output[Optional[str]]]
    app_secret_arns: dict[str, pulumi.Output[str]]
    app_secret_fillers: dict[str, pulumi.Resource]
    agent_secret_arns: dict[str, pulumi.Output[str]]
    bootstrap_function_names: dict[str, pulumi.Output[str]]
    dependencies_layer_arns: dict[str, pulumi.Output[str]]
    lag_alarm_arns: dict[str, pulumi.Output[str]]
    replica_lag_alarm_arns: dict[str, pulumi.Output[str]]
    writer_hostnames: dict[str, str]
    reader_hostnames: dict[str, str]
    private_zone_id: pulumi.Output[str]
    replication_secret_name: str
    seeding: dict[str, str]

    def __init__(self, name: str, args: MultiMasterReplicationArgs, *, labels: Labels, opts: Optional[ResourceOptions] = None):
        super().__init__(TYPE, name, args, parameters={**BASE_PARAMETERS, **RDS_PARAMETERS}, mode="multi-master",
                         aliases=[pulumi.Alias(type_=LEGACY_TYPE), pulumi.Alias(type_=streaming_replication.TYPE)],
                         labels=labels, opts=opts)
        self._mm = args.multi_master
        mesh = [nd for nd in args.nodes if nd.seed_from is None]
        self.seeding = {nd.region: nd.seed_from for nd in args.nodes if nd.seed_from is not None}
        assert mesh and not set(self.seeding.values()) - {nd.region for nd in mesh}, \
            "validated: a region seeds from a writer that is not itself seeding"

        writers = self._writers(mesh)
        secret = self._replication_secret()
        role_secrets = self._role_secrets()
        master_secrets = {nd.region: master_secret_arn(writers[nd.region]) for nd in mesh}
        # The mesh's writers only: a seeding region is a read-only copy, neither publisher nor subscriber.
        nodes_event = self._nodes(writers, mesh)
        base_events = self._base_events(writers, mesh, nodes_event, master_secrets, role_secrets)
        functions = self._bootstrap_functions(writers, secret, master_secrets, role_secrets, base_events)

        mesh_regions = [nd.region for nd in mesh]
        policy_digest = hashlib.sha256(json.dumps(self._mm.conflict_policy, sort_keys=True).encode()).hexdigest()
        #: Every bootstrap invocation: what runs the fixed SQL of this release on the writers.
        self.bootstrap_runs: list[aws.lambda_.Invocation] = []
        locals_ = self._bootstrap_runs(mesh_regions, functions, writers, secret, base_events, nodes_event, policy_digest)
        #: The run that gives each writer's role secrets their values (step `local`); a region still
        #: seeding has none until it is promoted and joins the mesh.
        self.app_secret_fillers: dict[str, pulumi.Resource] = dict(zip(mesh_regions, locals_))
        self._rotation(secret, {r: functions[r] for r in mesh_regions}, locals_)
        self._pair_lag_alarms(mesh)
        self._writer_records(writers)
        self.master_secret_arns = master_secrets
        self.app_secret_arns = {r: s[APP_ROLE].arn for r, s in role_secrets.items()}
        self.agent_secret_arns = {r: s[AGENT_ROLE].arn for r, s in role_secrets.items()}
        self.register_outputs(
            {
                "writerIdentifiers": self.writer_identifiers,
                "writerAddresses": self.writer_addresses,
                "lagAlarmArns": self.lag_alarm_arns,
            }
        )

    def _writers(self, mesh: list[DatabaseNode]) -> dict[str, aws.rds.Instance]:
        """One writer per region; a joining region's is a read replica of the writer it seeds from."""
        writers: dict[str, aws.rds.Instance] = {}
        for node in mesh:
            writers[node.region] = self._instance(node, "writer", aliases=earlier_names(self.base_name, node.region))
        self.replica_lag_alarm_arns = {}
        for node in self._args.nodes:
            if node.seed_from is None:
                continue
            writers[node.region] = self._instance(node, "writer", source=writers[node.seed_from].arn,
                                                  aliases=earlier_names(self.base_name, node.region))
            self.replica_lag_alarm_arns[node.region] = self._replica_lag_alarm(node, writers[node.region], node.seed_from).arn
        regions = [nd.region for nd in self._args.nodes]
        self.writer_identifiers = {r: writers[r].identifier for r in regions}
        self.writer_addresses = {r: writers[r].address for r in regions}
        return writers

    def _replication_secret(self) -> aws.secretsmanager.Secret:
        """The shared replication password: created empty here, filled by the first bootstrap run,
        replicated by Secrets Manager to every other region (each replica under its region's key),
        rotated by the rotation function."""
        regions = [nd.region for nd in self._args.nodes]
        first = regions[0]
        self.replication_secret_name = f"fraiseql/{self.labels.stack}/replication"
        return aws.secretsmanager.Secret(
            self.n("replication-secret"),
            region=first,
            name=self.replication_secret_name,
            description="Password of the fraiseql_repl role the subscriptions use; generated by the bootstrap",
            kms_key_id=self._keys[first].arn,
            replicas=[
                aws.secretsmanager.SecretReplicaArgs(region=r, kms_key_id=self._keys[r].arn) for r in regions if r != first
            ],
            recovery_window_in_days=GENERATED_SECRET_RECOVERY_DAYS,
            opts=self.child,
        )

    def _role_secrets(self) -> dict[str, dict[str, aws.secretsmanager.Secret]]:
        """Roles are per writer (logical replication does not copy them), so are their passwords: each
        region's secrets live in that region only, under its key, generated by its bootstrap."""
        return {
            r: {
                role: aws.secretsmanager.Secret(
                    self.n(f"{short}-secret", r),
                    region=r,
                    name=f"fraiseql/{self.labels.stack}/{r}/{short}",
                    description=f"Password of the {role} role on the {r} writer; generated by the bootstrap",
                    kms_key_id=self._keys[r].arn,
                    recovery_window_in_days=GENERATED_SECRET_RECOVERY_DAYS,
                    opts=self.child,
                )
                for role, short in ((APP_ROLE, "app"), (AGENT_ROLE, "agent"))
            }
            for r in (nd.region for nd in self._args.nodes)
        }

    def _nodes(self, writers: dict[str, aws.rds.Instance], members: list[DatabaseNode]) -> pulumi.Output[list]:
        """The bootstrap event's `nodes`: how each member's writer is reached."""
        args = self._args
        return pulumi.Output.all(*[writers[nd.region].address for nd in members]).apply(
            lambda hosts: [
                {"name": nd.region, "region": nd.region, "host": h, "port": args.port, "dbname": args.db_name,
                 "user": REPL_ROLE, "index": nd.index}
                for nd, h in zip(members, hosts)
            ]
        )

    def _base_events(self, writers: dict[str, aws.rds.Instance], mesh: list[DatabaseNode], nodes_event: pulumi.Output[list],
                     master_secrets: dict[str, pulumi.Output[Optional[str]]],
                     role_secrets: dict[str, dict[str, aws.secretsmanager.Secret]]) -> dict[str, pulumi.Output[dict]]:
        """Each region's bootstrap event without its step. A joining region's function describes the
        mesh it joins, itself included."""
        nodes, first = self._args.nodes, self._args.nodes[0].region
        policy = self._mm.conflict_policy

        def base_event(r: str, a: list[Any]) -> dict[str, Any]:
            return {
                "node": r,
                "nodes": a[0],
                "policy": policy,
                "master_secret_arn": a[1],
                # by name: in region r this is r's replica, read under r's key
                "replication_secret": self.replication_secret_name,
                "create_replication_secret": r == first,
                "role_secrets": {APP_ROLE: a[2], AGENT_ROLE: a[3]},
            }

        events: dict[str, pulumi.Output[dict]] = {}
        for node in nodes:
            r = node.region
            members = mesh if node.seed_from is None else [nd for nd in nodes if nd.seed_from is None or nd is node]
            events[r] = pulumi.Output.all(
                nodes_event if node.seed_from is None else self._nodes(writers, members), master_secrets.get(r),
                *[role_secrets[r][role].arn for role in (APP_ROLE, AGENT_ROLE)]
            ).apply(partial(base_event, r))
        return events

    def _bootstrap_functions(self, writers: dict[str, aws.rds.Instance], secret: aws.secretsmanager.Secret,
                             master_secrets: dict[str, pulumi.Output[Optional[str]]],
                             role_secrets: dict[str, dict[str, aws.secretsmanager.Secret]],
                             base_events: dict[str, pulumi.Output[dict]]) -> dict[str, aws.lambda_.Function]:
        """Each region's bootstrap function, in its VPC beside its writer, with its dependencies layer."""
        args, first = self._args, self._args.nodes[0].region

        def region_policy(r: str, a: list[Any]) -> str:
            return bootstrap_policy(r, master_secret_arn=a[0], replication_secret_arn=a[1], kms_key_arn=a[2],
                                    role_secret_arns=[a[3], a[4]], writes_replication_secret=r == first)

        functions: dict[str, aws.lambda_.Function] = {}
        self.dependencies_layer_arns = {}
        self.bootstrap_function_names = {}
        self.bootstrap_role_policies: dict[str, pulumi.Output[str]] = {}
        for node in args.nodes:
            r = node.region
            policy = pulumi.Output.all(master_secrets.get(r), secret.arn, self._keys[r].arn,
                                       role_secrets[r][APP_ROLE].arn, role_secrets[r][AGENT_ROLE].arn).apply(
                partial(region_policy, r))
            self.bootstrap_role_policies[r] = policy
            layer = aws.lambda_.LayerVersion(
                self.n("bootstrap-deps", r),
                region=r,
                # Shared with the fence agent (Quorum), which runs the same package.
                layer_name=f"fraiseql-{self.labels.stack}-replication-deps",
                code=self._mm.dependencies_layer,
                compatible_runtimes=[LAMBDA_RUNTIME],
                opts=self.child,
            )
            assert node.vpc_id is not None, "each bootstrap runs in its region's VPC"
            functions[r] = in_vpc_function(
                self, "bootstrap",
                NetworkPlace(region=r, vpc_id=node.vpc_id, subnet_ids=node.app_subnet_ids,
                             db_security_group_id=node.security_group_ids[0], db_port=args.port),
                FunctionSpec(
                    function="bootstrap", handler=BOOTSTRAP_HANDLER, code=self._mm.code, layers=[layer.arn],
                    timeout=BOOTSTRAP_TIMEOUT_S, memory_size=256, policy=policy, log_retention_days=args.log_retention_days,
                    # The rotation function sends only a step and a version; the rest is this region's.
                    environment=base_events[r].apply(lambda e: {"FRAISEQL_BOOTSTRAP": json.dumps(e, sort_keys=True), **DB_TLS_ENV}),
                ),
                SecurityText(group="FraiseQL replication bootstrap: its own writer and AWS APIs",
                             db_rule="from the replication bootstrap", https="Secrets Manager"),
            )
            self.dependencies_layer_arns[r] = layer.arn
            self.bootstrap_function_names[r] = functions[r].name
        return functions

    def _pair_lag_alarms(self, mesh: list[DatabaseNode]) -> None:
        """Per-pair lag, published by the publisher's fence agent from pg_stat_replication.replay_lag
        (measured on one clock, so no skew). A cut link removes the walsender: no data = breaching."""
        args = self._args
        self.lag_alarm_arns = {}
        for sub in mesh:
            for pub in mesh:
                if sub.region == pub.region:
                    continue
                alarm = aws.cloudwatch.MetricAlarm(
                    self.n("replication-lag", f"{pub.region}-to-{sub.region}"),
                    region=pub.region,
                    alarm_description=describe(
                        f"Replication from {pub.region} to {sub.region} lags by more than {args.lag_alarm_seconds:g} s: "
                        "writes in that window would be lost with the region", "replication-lag"
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
                    opts=self.child,
                )
                self.lag_alarm_arns[f"{pub.region}->{sub.region}"] = alarm.arn

    def _writer_records(self, writers: dict[str, aws.rds.Instance]) -> None:
        """`writer-<region>` in the private zone: the name the app and the runbooks use for each writer."""
        zone, zone_name = self._private_zone()
        self.writer_hostnames, self.reader_hostnames = {}, {}
        for r in (nd.region for nd in self._args.nodes):
            host = f"writer-{r}.{zone_name}"
            aws.route53.Record(self.n("writer-record", r), zone_id=zone.zone_id, name=host, type="CNAME", ttl=5,
                               records=[writers[r].address], opts=self.child)
            self.writer_hostnames[r] = self.reader_hostnames[r] = host
        self.private_zone_id = zone.zone_id

    def _bootstrap_runs(self, regions: list[str], functions: dict[str, aws.lambda_.Function],
                        writers: dict[str, aws.rds.Instance], secret: aws.secretsmanager.Secret,
                        base_events: dict[str, pulumi.Output[dict]], nodes_event: pulumi.Output[list],
                        policy_digest: str) -> list[aws.lambda_.Invocation]:
        """Step `local` in every mesh region (the first creates the shared password), then `subscribe`.

        A subscription made before its publisher's publication exists would replicate nothing, so
        every `subscribe` waits for every `local`.
        """
        locals_: list[aws.lambda_.Invocation] = []
        for step in ("local", "subscribe"):
            for r in regions:
                event = base_events[r].apply(partial(_step_event, step))
                deps: list[pulumi.Resource] = [*writers.values(), secret]
                deps += locals_ if step == "subscribe" else locals_[:1]
                run = aws.lambda_.Invocation(
                    self.n(f"bootstrap-{step}", r),
                    region=r,
                    function_name=functions[r].name,
                    input=event,
                    triggers={"policy": policy_digest, "schema": schema_digest(),
                              "peers": nodes_event.apply(lambda n: json.dumps(n, sort_keys=True))},
                    opts=ResourceOptions(parent=self, depends_on=deps),
                )
                if step == "local":
                    locals_.append(run)
                self.bootstrap_runs.append(run)
        return locals_

    def _rotation(self, secret: aws.secretsmanager.Secret, functions: dict[str, aws.lambda_.Function],
                  locals_: list[aws.lambda_.Invocation]) -> None:
        """The replication password rotates every `ROTATION_DAYS` through `replication.rotation`.

        The function runs beside the secret (the first region) outside any VPC: it only calls
        Secrets Manager and each mesh region's bootstrap function, which does the database work on
        its own writer with its own region's copy of the secret.
        """
        args = self._args
        regions = list(functions)
        first = args.nodes[0].region
        role = aws.iam.Role(self.n("rotation-role"), assume_role_policy=assume_role_policy("lambda.amazonaws.com"),
                            opts=self.child)
        logs = function_logs(self, "rotation-logs", first, "replication-rotation", args.log_retention_days)
        self.rotation_role_policy = pulumi.Output.all(secret.arn, self._keys[first].arn, logs.arn,
                                                      *[functions[r].arn for r in regions]).apply(
            lambda a: rotation_policy(first, secret_arn=a[0], kms_key_arn=a[1], log_group_arn=a[2], function_arns=list(a[3:]))
        )
        aws.iam.RolePolicy(self.n("rotation-policy"), role=role.name, policy=self.rotation_role_policy, opts=self.child)
        fn = aws.lambda_.Function(
            self.n("rotation"),
            region=first,
            runtime=LAMBDA_RUNTIME,
            handler=ROTATION_HANDLER,
            role=role.arn,
            code=self._mm.code,
            # Each region's bootstrap step may wait for its replica and its subscriptions.
            timeout=900,
            memory_size=128,
            environment=aws.lambda_.FunctionEnvironmentArgs(
                variables=pulumi.Output.all(*[functions[r].arn for r in regions]).apply(
                    lambda arns: {"FRAISEQL_BOOTSTRAP_FUNCTIONS": json.dumps(dict(zip(regions, arns))),
                                  # how long to wait for each step (replication.rotation.invoke_config)
                                  "FRAISEQL_BOOTSTRAP_TIMEOUT_SECONDS": str(BOOTSTRAP_TIMEOUT_S)})
            ),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=logs.name),
            opts=self.child,
        )
        allow = aws.lambda_.Permission(
            self.n("rotation-invoke"), region=first, action="lambda:InvokeFunction", function=fn.name,
            principal="secretsmanager.amazonaws.com", source_arn=secret.arn, opts=self.child,
        )
        aws.secretsmanager.SecretRotation(
            self.n("replication-rotation"),
            region=first,
            secret_id=secret.id,
            rotation_lambda_arn=fn.arn,
            rotation_rules=aws.secretsmanager.SecretRotationRotationRulesArgs(automatically_after_days=ROTATION_DAYS),
            # The first bootstrap gives the secret its first value; rotation starts from there.
            rotate_immediately=False,
            opts=ResourceOptions(parent=self, depends_on=[allow, *locals_]),
        )
        self.rotation_function_name = fn.name
