"""Parts of the program that every phase declares the same way: regions, services, budget, manifest."""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from components._kit import Labels
from components.dashboard import Dashboard, DashboardArgs, RegionSignals
from components.fraiseql_service import FraiseqlService, FraiseqlServiceArgs
from components.multi_master_replication import MultiMasterReplication
from components.region_stack import OriginLock, RegionStack, RegionStackArgs
from components.streaming_replication import StreamingReplication
from core.config import StackConfig
from core.manifest import MANIFEST_NAME, build_manifest
from core.naming import merge_tags
from infra.lambda_archive import package_files
from infra.paths import REPO


def lambda_code() -> pulumi.AssetArchive:
    """The functions' code: the `replication` package's source files and nothing else (no bytecode or
    editor leftovers, which differ from machine to machine and would update every function)."""
    return pulumi.AssetArchive({name: pulumi.FileAsset(str(path)) for name, path in package_files(REPO / "replication").items()})


def labels(cfg: StackConfig, stack: str) -> Labels:
    """What every component tags its resources with (components/_kit.py)."""
    return Labels(stack=stack, phase=cfg.phase, tags=cfg.tags)


def manifest(cfg: StackConfig, stack: str) -> aws.ssm.Parameter:
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


def region_stacks(cfg: StackConfig, stack: str, origin_lock: Optional[OriginLock] = None,
                  other_names: Optional[Mapping[str, str]] = None) -> dict[str, RegionStack]:
    """`other_names`: further certificate names, each validated in its own zone (name -> zone id)."""
    extra = dict(other_names or {})
    cert_names = (cfg.dns.record_name, cfg.dns.reads_hostname, *extra) if cfg.dns.https else ()
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
                certificate_names=cert_names,
                zone_id=cfg.dns.zone_id,
                certificate_zone_ids=extra,
                log_retention_days=cfg.app.log_retention_days,
                alert_emails=tuple(cfg.alerts.emails),
                origin_lock=origin_lock,
            ),
            labels=labels(cfg, stack),
        )
        for rc in cfg.regions
    }


def database_common(cfg: StackConfig, regions: dict[str, RegionStack]) -> dict[str, Any]:
    """DatabaseArgs fields that every phase fills the same way."""
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
        apply_immediately=db.apply_immediately,
        vpc_ids={r: rs.vpc_id for r, rs in regions.items()},
    )


def services(cfg: StackConfig, stack: str, regions: dict[str, RegionStack], database: StreamingReplication | MultiMasterReplication,
              secret_arns: dict[str, Any], write_forward_url: Optional[str] = None) -> dict[str, FraiseqlService]:
    """One service per region. Phase A's standby forwards writes to `write_forward_url` (the public
    API, i.e. the primary region) while its writer is remote; phases B and C write locally and verify
    the writer's certificate (they connect to the instance endpoint it names)."""
    multi = isinstance(database, MultiMasterReplication)
    services = {}
    for rc in cfg.regions:
        rs = regions[rc.name]
        writer_host: Input[str]
        reader_host: Input[str]
        if isinstance(database, MultiMasterReplication):
            writer_host = reader_host = database.writer_addresses[rc.name]
        else:
            writer_host, reader_host = database.writer_hostnames[rc.name], database.reader_hostnames[rc.name]
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
                writer_host=writer_host,
                reader_host=reader_host,
                db_sslmode="verify-full" if multi else "verify-ca",
                write_forward_url=write_forward_url if rc.role == "standby" else None,
                db_port=cfg.database.port,
                db_name=cfg.database.db_name,
                db_secret_arn=secret_arns[rc.name],
                secret_filled_by=database.app_secret_fillers.get(rc.name),
                db_secret_kms_key_arn=database.kms_key_arns[rc.name],
            ),
            labels=labels(cfg, stack),
            opts=ResourceOptions(depends_on=[rs]),
        )
    return services


def budget(cfg: StackConfig, stack: str) -> aws.budgets.Budget:
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


def dashboard(cfg: StackConfig, stack: str, regions: Mapping[str, RegionStack], services: Mapping[str, FraiseqlService],
              *, db_identifiers: Mapping[str, list[Input[str]]], health_check_ids: Mapping[str, Input[str]],
              alarm_arns: list[Input[str]], budget_name: Input[str], replicas: tuple[tuple[str, Input[str]], ...] = (),
              lag_pairs: tuple[tuple[str, str], ...] = (), agent_regions: tuple[str, ...] = ()) -> Dashboard:
    """The stack's CloudWatch dashboard (components/dashboard.py), in its first region."""
    return Dashboard(
        "fraiseql-dashboard",
        DashboardArgs(
            home_region=cfg.regions[0].name,
            regions=tuple(
                RegionSignals(
                    region=r,
                    alb_arn_suffix=rs.alb_arn_suffix,
                    target_group_arn_suffix=rs.target_group_arn_suffix,
                    cluster_name=rs.cluster_name,
                    service_name=services[r].service_name,
                    db_identifiers=tuple(db_identifiers.get(r, [])),
                    health_check_id=health_check_ids.get(r),
                )
                for r, rs in regions.items()
            ),
            lag_alarm_seconds=cfg.lag_alarm_seconds,
            replicas=replicas,
            lag_pairs=lag_pairs,
            agent_regions=agent_regions,
            alarm_arns=tuple(alarm_arns),
            budget_usd=cfg.budget.monthly_usd,
            budget_name=budget_name,
        ),
        labels=labels(cfg, stack),
    )
