"""The Pulumi program: validated stack config in, components per phase out.

`pulumi up` runs it through the repo's `__main__.py`; `python -m infra plan` runs the very same
`run()` under mocks. There is no second code path.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws
from pulumi import ResourceOptions
from pulumi.runtime import config as runtime_config

from components.dns_failover import DnsFailover, DnsFailoverArgs, Endpoint
from components.fraiseql_service import FraiseqlService, FraiseqlServiceArgs
from components.postgres_replication import DatabaseNode, PostgresReplication, PostgresReplicationArgs
from components.region_stack import RegionStack, RegionStackArgs
from infra.config import KEYS, NAMESPACE, ConfigError, StackConfig, load_config, namespaced_values
from infra.manifest import MANIFEST_NAME, build_manifest
from infra.naming import merge_tags

PROJECT = "fraiseql"


def read_stack_config() -> StackConfig:
    """Read every `fraiseql:` key the engine passed in and validate it, before any resource exists."""
    values = namespaced_values({**runtime_config.get_config_env(), **runtime_config.CONFIG.get()})
    cfg = pulumi.Config(NAMESPACE)
    for key in KEYS:
        if key not in values and (raw := cfg.get(key)) is not None:
            values[key] = raw
    return load_config(values, pulumi.get_stack())


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
        raise pulumi.RunError(f"phase {cfg.phase} is not built yet; this release deploys phase a")
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
            engine_version=db.engine_version,
            allocated_storage_gb=db.allocated_storage_gb,
            max_allocated_storage_gb=db.max_allocated_storage_gb,
            storage_type=db.storage_type,
            backup_retention_days=db.backup_retention_days,
            port=db.port,
            db_name=db.db_name,
            username=db.username,
            performance_insights_retention_days=db.performance_insights_retention_days,
            lag_alarm_seconds=cfg.slo.lag_alarm_seconds,
            vpc_ids={r: rs.vpc_id for r, rs in regions.items()},
            phase=cfg.phase,
            stack=stack,
            tags=cfg.tags,
        ),
    )

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
                writer_host=database.writer_hostname,
                reader_host=database.reader_hostnames[rc.name],
                db_port=db.port,
                db_name=db.db_name,
                db_secret_arn=database.master_secret_arn,
                db_secret_kms_key_arn=database.kms_key_arns[primary],
                phase=cfg.phase,
                stack=stack,
                tags=cfg.tags,
            ),
            opts=ResourceOptions(depends_on=[rs]),
        )

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
