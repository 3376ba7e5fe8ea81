"""Phase A: a primary region and a warm standby, streaming replication, DNS failover."""

from __future__ import annotations

from typing import Any, Optional

import pulumi

from components._database import DatabaseNode
from components.adoption_link import AdoptionLink, AdoptionLinkArgs
from components.dns_failover import DnsFailover, DnsFailoverArgs, Endpoint
from components.fraiseql_service import FraiseqlService
from components.region_stack import RegionStack
from components.streaming_replication import StreamingReplication, StreamingReplicationArgs, StreamingSettings
from core.config import StackConfig
from core.outputs import PhaseAOutputs
from infra import common
from infra.paths import LAMBDA_DEPS


def build(cfg: StackConfig, stack: str) -> dict[str, Any]:
    regions = common.region_stacks(cfg, stack)
    database = _database(cfg, stack, regions)
    # Each region's tasks read the app's own credentials from their own region (issue 13).
    services = common.services(cfg, stack, regions, database, database.app_secret_arns,
                               write_forward_url=f"{'https' if cfg.dns.https else 'http'}://{cfg.dns.record_name}")
    dns = _failover_records(cfg, stack, regions)
    link = _adoption_link(cfg, stack, regions)
    budget = common.budget(cfg, stack)
    board = common.dashboard(
        cfg, stack, regions, services,
        db_identifiers={cfg.primary.name: [database.primary_identifier],
                        **{r: [ident] for r, ident in database.replica_identifiers.items()}},
        health_check_ids=dns.health_check_ids,
        alarm_arns=list(database.lag_alarm_arns.values()),
        budget_name=budget.name,
        replicas=tuple(database.replica_identifiers.items()),
    )
    return _exports(cfg, regions, database, services, dns, link, budget_name=budget.name, dashboard_name=board.name)


def _database(cfg: StackConfig, stack: str, regions: dict[str, RegionStack]) -> StreamingReplication:
    """The primary and its standbys, the streaming replication between them and the lag alarms."""
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
            vpc_id=regions[rc.name].vpc_id,
            app_subnet_ids=tuple(regions[rc.name].private_subnet_ids),
        )
        for rc in cfg.regions
    )
    return StreamingReplication(
        "fraiseql-db",
        StreamingReplicationArgs(
            nodes=nodes,
            lag_alarm_seconds=cfg.lag_alarm_seconds,
            log_retention_days=cfg.app.log_retention_days,
            streaming=StreamingSettings(
                code=common.lambda_code(),
                dependencies_layer=pulumi.FileArchive(str(LAMBDA_DEPS)),
            ),
            **common.database_common(cfg, regions),
        ),
        labels=common.labels(cfg, stack),
    )


def _failover_records(cfg: StackConfig, stack: str, regions: dict[str, RegionStack]) -> DnsFailover:
    """Route 53 failover records: the primary's ALB while its health check passes, then the standby's."""
    return DnsFailover(
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
        ),
        labels=common.labels(cfg, stack),
    )


def _adoption_link(cfg: StackConfig, stack: str, regions: dict[str, RegionStack]) -> Optional[AdoptionLink]:
    """`python -m ops adopt`: the new primary subscribes to the database run today (only with `database.adopt`)."""
    adopt = cfg.database.adopt
    if adopt is None:
        return None
    primary = cfg.primary.name
    return AdoptionLink(
        "fraiseql-adopt",
        AdoptionLinkArgs(
            region=primary,
            vpc_id=regions[primary].vpc_id,
            database_route_table_id=regions[primary].database_route_table_id,
            db_security_group_id=regions[primary].db_security_group_id,
            source_vpc_id=adopt.source_vpc_id,
            source_cidr=adopt.source_cidr,
            source_port=adopt.source_port,
        ),
        labels=common.labels(cfg, stack),
    )


def _exports(cfg: StackConfig, regions: dict[str, RegionStack], database: StreamingReplication,
             services: dict[str, FraiseqlService], dns: DnsFailover, link: Optional[AdoptionLink], *,
             budget_name: pulumi.Input[str], dashboard_name: pulumi.Input[str]) -> dict[str, Any]:
    """The stack outputs (core.outputs.PhaseAOutputs): what the runbooks and the operators read."""
    scheme = "https" if cfg.dns.https else "http"
    return PhaseAOutputs.exports(
        phase=cfg.phase,
        regions={rc.name: rc.role for rc in cfg.regions},
        primaryRegion=cfg.primary.name,
        standbyRegion=cfg.standbys[0].name,
        apiUrl=f"{scheme}://{cfg.dns.record_name}",
        readUrl=f"{scheme}://{cfg.dns.reads_hostname}",
        zoneId=cfg.dns.zone_id,
        recordName=cfg.dns.record_name,
        albDnsNames={r: rs.alb_dns_name for r, rs in regions.items()},
        primaryDbIdentifier=database.primary_identifier,
        primaryDbArn=database.primary_arn,
        primaryDbAddress=database.primary_address,
        replicaDbIdentifiers=database.replica_identifiers,
        replicaDbAddresses=database.replica_addresses,
        dbSecretArn=database.master_secret_arn,
        dbPrivateZoneId=database.private_zone_id,
        dbWriterHostname=database.writer_hostname,
        dbSecurityGroupIds={r: rs.db_security_group_id for r, rs in regions.items()},
        fenceSecurityGroupIds={r: rs.fence_security_group_id for r, rs in regions.items()},
        healthCheckIds=dns.health_check_ids,
        replicaLagAlarmArns=database.lag_alarm_arns,
        alertTopicArns={r: rs.alerts_topic_arn for r, rs in regions.items()},
        clusterNames={r: rs.cluster_name for r, rs in regions.items()},
        serviceNames={r: s.service_name for r, s in services.items()},
        slo={"rtoSeconds": cfg.slo.rto_seconds, "rpoSeconds": cfg.slo.rpo_seconds, "lagAlarmSeconds": cfg.lag_alarm_seconds},
        budgetName=budget_name,
        dbPort=cfg.database.port,
        dbName=cfg.database.db_name,
        adoptPeeringConnectionId=link.peering_connection_id if link is not None else None,
        adoptStackCidr=cfg.primary.cidr if link is not None else None,
        dashboardName=dashboard_name,
    )
