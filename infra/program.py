"""The Pulumi program: validated stack config in, components per phase out.

`pulumi up` runs it through the repo's `__main__.py`; `python -m infra plan` runs the very same
`run()` under mocks. There is no second code path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
from pulumi import ResourceOptions
from pulumi.runtime import config as runtime_config

from components.dns_failover import DnsFailover, DnsFailoverArgs, Endpoint
from components.edge import Edge, EdgeArgs, EdgeOrigin, WorkerBundle
from components.fraiseql_service import FraiseqlService, FraiseqlServiceArgs
from components.interregion_network import InterRegionNetwork, InterRegionNetworkArgs, RegionAttachment
from components.postgres_replication import (
    DatabaseNode,
    MultiMasterSettings,
    PostgresReplication,
    PostgresReplicationArgs,
)
from components.quorum import Quorum, QuorumArgs, QuorumRegion
from components.region_stack import RegionStack, RegionStackArgs
from infra.config import KEYS, NAMESPACE, SECRET_KEYS, ConfigError, StackConfig, load_config, namespaced_values
from infra.manifest import MANIFEST_NAME, build_manifest
from infra.naming import merge_tags
from infra.planning import plan_subnets

PROJECT = "fraiseql"
REPO = Path(__file__).resolve().parent.parent
# Built by scripts/build-lambda-deps.sh (psycopg for the Lambda runtime); needed by phases b and c.
LAMBDA_DEPS = REPO / "build" / "lambda-deps.zip"


def _raw_config() -> dict[str, Any]:
    """Every `fraiseql:` key the engine passed in, namespace removed."""
    values = namespaced_values({**runtime_config.get_config_env(), **runtime_config.CONFIG.get()})
    cfg = pulumi.Config(NAMESPACE)
    for key in (*KEYS, *SECRET_KEYS):
        if key not in values and (raw := cfg.get(key)) is not None:
            values[key] = raw
    return values


def read_stack_config() -> StackConfig:
    """Read and validate the stack config, before any resource exists."""
    return load_config(_raw_config(), pulumi.get_stack())


def read_stack_config_unchecked() -> StackConfig:
    """Stack config for benchmarks of parts of the program: fields validated, any region count."""
    return load_config(_raw_config(), pulumi.get_stack(), cross_checks=False)


def run() -> dict[str, Any]:
    try:
        cfg = read_stack_config()
    except ConfigError as e:
        # RunError prints the message alone, without a Python traceback.
        raise pulumi.RunError(str(e)) from None
    stack = pulumi.get_stack()
    if cfg.phase == "a":
        outputs = _phase_a(cfg, stack)
    else:
        outputs = _phase_b(cfg, stack)
    _manifest(cfg, stack)
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs


def _manifest(cfg: StackConfig, stack: str) -> aws.ssm.Parameter:
    """The stack's declared phase, SLOs, budget and usage, readable by the policy pack and operators."""
    return aws.ssm.Parameter(
        MANIFEST_NAME,
        region=cfg.regions[0].name,
        name=f"/fraiseql/{stack}/manifest",
        type="String",
        tier="Standard",
        # insecure_value: the manifest holds no secret, and policies must read it in plain text.
        insecure_value=json.dumps(build_manifest(cfg, stack), sort_keys=True),
        description="FraiseQL stack manifest (read by the policy pack and the runbooks)",
        tags=merge_tags(cfg.tags, name=f"fraiseql-{stack}-manifest", phase=cfg.phase, stack=stack, component="program"),
    )


def _region_stacks(cfg: StackConfig, stack: str) -> dict[str, RegionStack]:
    cert_names = (cfg.dns.record_name, cfg.dns.reads_hostname) if cfg.dns.https else ()
    return {
        rc.name: RegionStack(
            f"fraiseql-{rc.name}",
            RegionStackArgs(
                region=rc.name,
                role=rc.role,
                vpc_cidr=rc.cidr,
                az_count=cfg.network.az_count,
                nat_per_az=cfg.network.nat == "per_az",
                app_port=cfg.app.port,
                health_path=cfg.app.health_path,
                db_port=cfg.database.port,
                phase=cfg.phase,
                stack=stack,
                certificate_names=cert_names,
                zone_id=cfg.dns.zone_id,
                log_retention_days=cfg.app.log_retention_days,
                alert_emails=tuple(cfg.alerts.emails),
                tags=cfg.tags,
            ),
        )
        for rc in cfg.regions
    }


def _network(cfg: StackConfig, stack: str, regions: dict[str, RegionStack]) -> InterRegionNetwork:
    return InterRegionNetwork(
        "fraiseql-net",
        InterRegionNetworkArgs(
            topology=cfg.network.topology,
            regions=tuple(
                RegionAttachment(
                    region=rc.name,
                    vpc_id=regions[rc.name].vpc_id,
                    vpc_cidr=rc.cidr,
                    database_subnet_cidrs=tuple(
                        p.cidr for p in plan_subnets(rc.cidr, cfg.network.az_count) if p.tier == "database"
                    ),
                    route_table_ids=(*regions[rc.name].private_route_table_ids, regions[rc.name].database_route_table_id),
                    db_security_group_id=regions[rc.name].db_security_group_id,
                    attachment_subnet_ids=tuple(regions[rc.name].database_subnet_ids),
                )
                for rc in cfg.regions
            ),
            hub_region=cfg.network.hub_region or cfg.regions[0].name,
            db_port=cfg.database.port,
            phase=cfg.phase,
            stack=stack,
            tags=cfg.tags,
        ),
    )


def _database_common(cfg: StackConfig, stack: str, regions: dict[str, RegionStack]) -> dict[str, Any]:
    """PostgresReplicationArgs fields that every phase fills the same way."""
    db = cfg.database
    return dict(
        engine_version=db.engine_version,
        allocated_storage_gb=db.allocated_storage_gb,
        max_allocated_storage_gb=db.max_allocated_storage_gb,
        storage_type=db.storage_type,
        backup_retention_days=db.backup_retention_days,
        port=db.port,
        db_name=db.db_name,
        username=db.username,
        performance_insights_retention_days=db.performance_insights_retention_days,
        vpc_ids={r: rs.vpc_id for r, rs in regions.items()},
        phase=cfg.phase,
        stack=stack,
        tags=cfg.tags,
    )


def _lag_alarm_seconds(cfg: StackConfig) -> float:
    if cfg.replication is not None and cfg.replication.lag_alarm_seconds is not None:
        return cfg.replication.lag_alarm_seconds
    return cfg.slo.lag_alarm_seconds


def _services(cfg: StackConfig, stack: str, regions: dict[str, RegionStack], database: PostgresReplication,
              secret_arns: dict[str, Any]) -> dict[str, FraiseqlService]:
    services = {}
    for rc in cfg.regions:
        rs = regions[rc.name]
        services[rc.name] = FraiseqlService(
            f"fraiseql-app-{rc.name}",
            FraiseqlServiceArgs(
                region=rc.name,
                role=rc.role,
                image=cfg.app.image,
                cpu=cfg.app.cpu,
                memory=cfg.app.memory,
                arch=cfg.app.arch,
                port=cfg.app.port,
                health_path=cfg.app.health_path,
                desired_count=cfg.app.desired_count,
                max_count=cfg.app.max_count,
                cpu_target_percent=cfg.app.cpu_target_percent,
                cluster_arn=rs.cluster_arn,
                cluster_name=rs.cluster_name,
                subnet_ids=rs.private_subnet_ids,
                security_group_id=rs.app_security_group_id,
                target_group_arn=rs.target_group_arn,
                listener_arn=rs.listener_arn,
                log_group_name=rs.log_group_name,
                execution_role_arn=rs.execution_role_arn,
                execution_role_name=rs.execution_role_name,
                task_role_arn=rs.task_role_arn,
                writer_host=database.writer_hostnames[rc.name],
                reader_host=database.reader_hostnames[rc.name],
                db_port=cfg.database.port,
                db_name=cfg.database.db_name,
                db_secret_arn=secret_arns[rc.name],
                db_secret_kms_key_arn=database.kms_key_arns[rc.name] if cfg.phase != "a" else database.kms_key_arns[cfg.primary.name],
                phase=cfg.phase,
                stack=stack,
                tags=cfg.tags,
            ),
            opts=ResourceOptions(depends_on=[rs]),
        )
    return services


def _edge(cfg: StackConfig, stack: str, regions: dict[str, RegionStack]) -> dict[str, Any]:
    """Phase C: Cloudflare in front of every region's origin."""
    edge_cfg = cfg.edge
    assert edge_cfg is not None  # validated: phase c carries an edge block
    edge = Edge(
        "fraiseql-edge",
        EdgeArgs(
            account_id=edge_cfg.account_id,
            zone_id=edge_cfg.zone_id,
            zone_name=edge_cfg.zone_name,
            hostname=edge_cfg.hostname,
            origin_hostname=cfg.dns.record_name,
            origins=tuple(EdgeOrigin(region=rc.name, address=regions[rc.name].alb_dns_name) for rc in cfg.regions),
            worker=WorkerBundle.load(REPO / "worker"),
            purge_api_token=pulumi.Config(NAMESPACE).require_secret("edge_purge_token"),
            health_path=cfg.app.health_path,
            steering_policy=edge_cfg.steering_policy,
            monitor_interval_seconds=edge_cfg.monitor_interval_seconds,
            check_regions=tuple(edge_cfg.check_regions),
            session_affinity_ttl_seconds=edge_cfg.session_affinity_ttl_seconds,
            rate_limit_requests_per_minute=edge_cfg.rate_limit_requests_per_minute,
            stack=stack,
            phase=cfg.phase,
            tags=cfg.tags,
        ),
    )
    return {
        "apiHostname": edge_cfg.hostname,
        "cloudflareZoneId": edge_cfg.zone_id,
        "edgeLoadBalancerId": edge.load_balancer_id,
        "edgePoolIds": edge.pool_ids,
        "edgeWorkerName": edge.worker_name,
    }


def _phase_b(cfg: StackConfig, stack: str) -> dict[str, Any]:
    """Three (or more, odd) active regions: mesh or hub network, multi-master writers, quorum fence.
    Phase C is the same, behind the Cloudflare edge."""
    regions = _region_stacks(cfg, stack)
    network = _network(cfg, stack, regions)
    db = cfg.database
    repl = cfg.replication
    assert repl is not None  # validated: phases b and c carry a conflict policy
    code = pulumi.AssetArchive({"replication": pulumi.FileArchive(str(REPO / "replication"))})
    deps = pulumi.FileArchive(str(LAMBDA_DEPS))
    database = PostgresReplication(
        "fraiseql-db",
        PostgresReplicationArgs(
            mode="multi-master",
            nodes=tuple(
                DatabaseNode(
                    region=rc.name,
                    role="writer",
                    instance_class=db.instance_class,
                    subnet_group_name=regions[rc.name].db_subnet_group_name,
                    security_group_ids=[regions[rc.name].db_security_group_id],
                    alarm_topic_arn=regions[rc.name].alerts_topic_arn,
                    multi_az=db.multi_az,
                    vpc_id=regions[rc.name].vpc_id,
                    app_subnet_ids=tuple(regions[rc.name].private_subnet_ids),
                )
                for rc in cfg.regions
            ),
            lag_alarm_seconds=_lag_alarm_seconds(cfg),
            **_database_common(cfg, stack, regions),
            multi_master=MultiMasterSettings(
                conflict_policy={
                    "default": repl.default,
                    "tables": [t.model_dump() for t in repl.tables],
                    "replicated": list(repl.replicated),
                },
                code=code,
                dependencies_layer=deps,
            ),
        ),
        # Subscriptions travel over the inter-region network: it must exist first.
        opts=ResourceOptions(depends_on=[network]),
    )
    quorum_size = len(cfg.regions) // 2 + 1
    quorum = Quorum(
        "fraiseql-quorum",
        QuorumArgs(
            regions=tuple(
                QuorumRegion(
                    region=rc.name,
                    vpc_id=regions[rc.name].vpc_id,
                    subnet_ids=regions[rc.name].private_subnet_ids,
                    db_security_group_id=regions[rc.name].db_security_group_id,
                    db_host=database.writer_addresses[rc.name],
                    db_port=db.port,
                    db_name=db.db_name,
                    db_secret_arn=database.master_secret_arns[rc.name],
                    db_secret_kms_key_arn=database.kms_key_arns[rc.name],
                    alarm_topic_arn=regions[rc.name].alerts_topic_arn,
                )
                for rc in cfg.regions
            ),
            quorum=quorum_size,
            probe_interval_seconds=cfg.quorum.probe_interval_seconds,
            unfence_after=cfg.quorum.unfence_after,
            safety_rule_wait_ms=cfg.quorum.safety_rule_wait_ms,
            code=code,
            dependencies_layer_arns=database.dependencies_layer_arns,
            phase=cfg.phase,
            stack=stack,
            tags=cfg.tags,
        ),
        opts=ResourceOptions(depends_on=[database]),
    )
    services = _services(cfg, stack, regions, database, database.master_secret_arns)
    dns = DnsFailover(
        "fraiseql-dns",
        DnsFailoverArgs(
            mode="latency",
            zone_id=cfg.dns.zone_id,
            record_name=cfg.dns.record_name,
            read_record_name=cfg.dns.reads_hostname,
            endpoints=tuple(
                Endpoint(region=rc.name, role="active", alb_dns_name=regions[rc.name].alb_dns_name,
                         alb_zone_id=regions[rc.name].alb_zone_id)
                for rc in cfg.regions
            ),
            health_path=cfg.app.health_path,
            https=cfg.dns.https,
            request_interval=cfg.dns.health_check_interval,
            failure_threshold=cfg.dns.failure_threshold,
            control_health_check_ids=quorum.recovery_health_check_ids,
            phase=cfg.phase,
            stack=stack,
            tags=cfg.tags,
        ),
    )
    budget = _budget(cfg, stack)
    scheme = "https" if cfg.dns.https else "http"
    edge_outputs = _edge(cfg, stack, regions) if cfg.phase == "c" else {}
    return {
        **edge_outputs,
        "phase": cfg.phase,
        "regions": {rc.name: rc.role for rc in cfg.regions},
        "quorum": quorum_size,
        "apiUrl": f"{scheme}://{cfg.dns.record_name}",
        "zoneId": cfg.dns.zone_id,
        "recordName": cfg.dns.record_name,
        "topology": cfg.network.topology,
        "networkLinks": network.links,
        "albDnsNames": {r: rs.alb_dns_name for r, rs in regions.items()},
        "writerDbIdentifiers": database.writer_identifiers,
        "writerDbAddresses": database.writer_addresses,
        "dbPrivateZoneId": database.private_zone_id,
        "replicationSecretName": database.replication_secret_name,
        "bootstrapFunctionNames": database.bootstrap_function_names,
        "replicationLagAlarmArns": database.lag_alarm_arns,
        "healthCheckIds": dns.health_check_ids,
        "routingControlArns": quorum.routing_control_arns,
        "arcClusterEndpoints": quorum.cluster_endpoints,
        "fenceFunctionNames": quorum.fence_function_names,
        "alertTopicArns": {r: rs.alerts_topic_arn for r, rs in regions.items()},
        "clusterNames": {r: rs.cluster_name for r, rs in regions.items()},
        "serviceNames": {r: s.service_name for r, s in services.items()},
        "slo": {"rtoSeconds": cfg.slo.rto_seconds, "rpoSeconds": cfg.slo.rpo_seconds,
                "lagAlarmSeconds": _lag_alarm_seconds(cfg)},
        "budgetName": budget.name,
    }


def _budget(cfg: StackConfig, stack: str) -> aws.budgets.Budget:
    """The stack's monthly budget as an AWS Budgets alert; the policy pack reads the same resource."""
    emails = cfg.budget.alert_emails
    return aws.budgets.Budget(
        "fraiseql-budget",
        name=f"fraiseql-{stack}",
        budget_type="COST",
        limit_amount=f"{cfg.budget.monthly_usd:.2f}",
        limit_unit="USD",
        time_unit="MONTHLY",
        # Requires the `stack` tag to be activated as a cost allocation tag in the billing console.
        cost_filters=[aws.budgets.BudgetCostFilterArgs(name="TagKeyValue", values=[f"user:stack${stack}"])],
        notifications=[
            aws.budgets.BudgetNotificationArgs(
                comparison_operator="GREATER_THAN",
                threshold=round(cfg.budget.advisory_fraction * 100, 2),
                threshold_type="PERCENTAGE",
                notification_type="FORECASTED",
                subscriber_email_addresses=emails,
            ),
            aws.budgets.BudgetNotificationArgs(
                comparison_operator="GREATER_THAN",
                threshold=100,
                threshold_type="PERCENTAGE",
                notification_type="ACTUAL",
                subscriber_email_addresses=emails,
            ),
        ],
        tags=merge_tags(cfg.tags, name=f"fraiseql-{stack}-budget", phase=cfg.phase, stack=stack, component="program"),
    )


def _phase_a(cfg: StackConfig, stack: str) -> dict[str, Any]:
    regions = _region_stacks(cfg, stack)
    primary, standby = cfg.primary.name, cfg.standbys[0].name
    db = cfg.database
    nodes = tuple(
        DatabaseNode(
            region=rc.name,
            role="primary" if rc.role == "primary" else "replica",
            instance_class=db.instance_class if rc.role == "primary" else (db.standby_instance_class or db.instance_class),
            subnet_group_name=regions[rc.name].db_subnet_group_name,
            security_group_ids=[regions[rc.name].db_security_group_id],
            alarm_topic_arn=regions[rc.name].alerts_topic_arn,
            multi_az=db.multi_az if rc.role == "primary" else db.standby_multi_az,
        )
        for rc in cfg.regions
    )
    database = PostgresReplication(
        "fraiseql-db",
        PostgresReplicationArgs(
            mode="streaming",
            nodes=nodes,
            lag_alarm_seconds=cfg.slo.lag_alarm_seconds,
            **_database_common(cfg, stack, regions),
        ),
    )

    services = _services(cfg, stack, regions, database, {rc.name: database.master_secret_arn for rc in cfg.regions})

    dns = DnsFailover(
        "fraiseql-dns",
        DnsFailoverArgs(
            mode="failover",
            zone_id=cfg.dns.zone_id,
            record_name=cfg.dns.record_name,
            read_record_name=cfg.dns.reads_hostname,
            endpoints=tuple(
                Endpoint(
                    region=rc.name,
                    role="primary" if rc.role == "primary" else "secondary",
                    alb_dns_name=regions[rc.name].alb_dns_name,
                    alb_zone_id=regions[rc.name].alb_zone_id,
                )
                for rc in cfg.regions
            ),
            health_path=cfg.app.health_path,
            https=cfg.dns.https,
            request_interval=cfg.dns.health_check_interval,
            failure_threshold=cfg.dns.failure_threshold,
            phase=cfg.phase,
            stack=stack,
            tags=cfg.tags,
        ),
    )
    budget = _budget(cfg, stack)
    scheme = "https" if cfg.dns.https else "http"
    return {
        "phase": cfg.phase,
        "regions": {rc.name: rc.role for rc in cfg.regions},
        "primaryRegion": primary,
        "standbyRegion": standby,
        "apiUrl": f"{scheme}://{cfg.dns.record_name}",
        "readUrl": f"{scheme}://{cfg.dns.reads_hostname}",
        "zoneId": cfg.dns.zone_id,
        "recordName": cfg.dns.record_name,
        "albDnsNames": {r: rs.alb_dns_name for r, rs in regions.items()},
        "primaryDbIdentifier": database.primary_identifier,
        "primaryDbArn": database.primary_arn,
        "primaryDbAddress": database.primary_address,
        "replicaDbIdentifiers": database.replica_identifiers,
        "replicaDbAddresses": database.replica_addresses,
        "dbSecretArn": database.master_secret_arn,
        "dbPrivateZoneId": database.private_zone_id,
        "dbWriterHostname": database.writer_hostname,
        "dbSecurityGroupIds": {r: rs.db_security_group_id for r, rs in regions.items()},
        "fenceSecurityGroupIds": {r: rs.fence_security_group_id for r, rs in regions.items()},
        "healthCheckIds": dns.health_check_ids,
        "replicaLagAlarmArns": database.lag_alarm_arns,
        "alertTopicArns": {r: rs.alerts_topic_arn for r, rs in regions.items()},
        "clusterNames": {r: rs.cluster_name for r, rs in regions.items()},
        "serviceNames": {r: s.service_name for r, s in services.items()},
        "slo": {"rtoSeconds": cfg.slo.rto_seconds, "rpoSeconds": cfg.slo.rpo_seconds, "lagAlarmSeconds": cfg.slo.lag_alarm_seconds},
        "budgetName": budget.name,
    }
