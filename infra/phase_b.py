"""Phases B and C: three or more active regions, multi-master writers, the quorum fence, latency routing.
Phase C adds the Cloudflare edge (infra.phase_c), imported only there."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi import ResourceOptions

from components._database import DatabaseNode
from components.dns_failover import DnsFailover, DnsFailoverArgs, Endpoint
from components.fraiseql_service import FraiseqlService
from components.interregion_network import InterRegionNetwork, InterRegionNetworkArgs, RegionAttachment
from components.multi_master_replication import MultiMasterReplication, MultiMasterReplicationArgs, MultiMasterSettings
from components.quorum import Quorum, QuorumArgs, QuorumRegion
from components.region_stack import RegionStack
from core.config import StackConfig
from core.membership import majority
from core.outputs import PhaseBOutputs, PhaseCOutputs
from core.planning import plan_subnets
from infra import common
from infra.paths import LAMBDA_DEPS


def inter_region_network(cfg: StackConfig, stack: str, regions: dict[str, RegionStack]) -> InterRegionNetwork:
    topology = cfg.network.topology
    assert topology != "none"  # validated: phases b and c replicate over mesh or hub-and-spoke
    return InterRegionNetwork(
        "fraiseql-net",
        InterRegionNetworkArgs(
            topology=topology,
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
            hub_region=cfg.network.hub_region,
            db_port=cfg.database.port,
        ),
        labels=common.labels(cfg, stack),
    )


def build(cfg: StackConfig, stack: str) -> dict[str, Any]:
    """Three (or more, odd) active regions: mesh or hub network, multi-master writers, quorum fence.
    Phase C is the same, behind the Cloudflare edge."""
    lock, public_names = None, {}
    if cfg.phase == "c":
        from infra import phase_c

        lock, public_names = phase_c.origin_lock(cfg), phase_c.public_certificate_names(cfg)
    regions = common.region_stacks(cfg, stack, origin_lock=lock, other_names=public_names)
    network = inter_region_network(cfg, stack, regions)
    code = common.lambda_code()
    database = _database(cfg, stack, regions, network, code)
    fence = _fence(cfg, stack, regions, database, code)
    services = common.services(cfg, stack, regions, database, database.app_secret_arns)
    dns = _routing(cfg, stack, regions, fence)
    budget = common.budget(cfg, stack)
    pairs = tuple((pub, sub) for pub, sub in (k.split("->") for k in database.lag_alarm_arns))
    board = common.dashboard(
        cfg, stack, regions, services,
        db_identifiers={r: [ident] for r, ident in database.writer_identifiers.items()},
        health_check_ids=dns.health_check_ids,
        alarm_arns=[*database.lag_alarm_arns.values(), *database.replica_lag_alarm_arns.values(), *fence.alarm_arns.values()],
        budget_name=budget.name,
        lag_pairs=pairs,
        agent_regions=tuple(rc.name for rc in cfg.regions),
    )
    if cfg.phase == "c":
        from infra import phase_c  # pulumi_cloudflare costs a second of import: only phase c pays it

        edge_outputs, model = phase_c.build(cfg, stack, regions), PhaseCOutputs
    else:
        edge_outputs, model = {}, PhaseBOutputs  # type: ignore[assignment]
    return model.exports(**{
        **edge_outputs,
        **_exports(cfg, regions, network, database, fence, services, dns),
        "budgetName": budget.name,
        "dashboardName": board.name,
    })


def _database(cfg: StackConfig, stack: str, regions: dict[str, RegionStack], network: InterRegionNetwork,
              code: pulumi.AssetArchive) -> MultiMasterReplication:
    """One writer per region, the logical replication mesh between them and its conflict policy."""
    db = cfg.database
    repl = cfg.replication
    assert repl is not None  # validated: phases b and c carry a conflict policy
    return MultiMasterReplication(
        "fraiseql-db",
        MultiMasterReplicationArgs(
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
                    seed_from=rc.seed_from,
                    index=cfg.writer_index(rc.name),
                )
                for rc in cfg.regions
            ),
            lag_alarm_seconds=cfg.lag_alarm_seconds,
            log_retention_days=cfg.app.log_retention_days,
            **common.database_common(cfg, regions),
            multi_master=MultiMasterSettings(
                conflict_policy={
                    "default": repl.default,
                    "tables": [t.model_dump() for t in repl.tables],
                    "replicated": list(repl.replicated),
                },
                code=code,
                dependencies_layer=pulumi.FileArchive(str(LAMBDA_DEPS)),
            ),
        ),
        labels=common.labels(cfg, stack),
        # Subscriptions travel over the inter-region network: it must exist first.
        opts=ResourceOptions(depends_on=[network]),
    )


def _fence(cfg: StackConfig, stack: str, regions: dict[str, RegionStack], database: MultiMasterReplication,
           code: pulumi.AssetArchive) -> Quorum:
    """The quorum fence: one agent per region, ARC routing controls, the writers' leases."""
    db = cfg.database
    repl = cfg.replication
    assert repl is not None  # validated: phases b and c carry a conflict policy
    next_members = cfg.quorum_next_members
    return Quorum(
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
                    db_secret_arn=database.agent_secret_arns[rc.name],
                    db_secret_kms_key_arn=database.kms_key_arns[rc.name],
                    alarm_topic_arn=regions[rc.name].alerts_topic_arn,
                    listener_arn=regions[rc.name].listener_arn,
                )
                for rc in cfg.regions
            ),
            members=tuple(cfg.quorum_members),
            next_members=tuple(next_members) if next_members is not None else None,
            probe_interval_seconds=cfg.quorum.probe_interval_seconds,
            stale_after_seconds=cfg.quorum_stale_after,
            lease_seconds=cfg.quorum.lease,
            unfence_after=cfg.quorum.unfence_after,
            safety_rule_wait_ms=cfg.quorum.safety_rule_wait_ms,
            agent_reserved_concurrency=cfg.quorum.agent_reserved_concurrency,
            health_path=cfg.app.health_path,
            verify_buckets=repl.verify_buckets,
            verify_max_keys=repl.verify_max_keys,
            code=code,
            dependencies_layer_arns=database.dependencies_layer_arns,
            after=tuple(database.bootstrap_runs),
            log_retention_days=cfg.app.log_retention_days,
        ),
        labels=common.labels(cfg, stack),
        opts=ResourceOptions(depends_on=[database]),
    )


def _latency_records(cfg: StackConfig, stack: str, regions: dict[str, RegionStack], fence: Quorum, name: str, *,
                     zone_id: str, record_name: str, endpoint_checks: bool) -> DnsFailover:
    """Route 53 latency records to every region's ALB, each following its region's routing control."""
    return DnsFailover(
        name,
        DnsFailoverArgs(
            mode="latency",
            zone_id=zone_id,
            record_name=record_name,
            read_record_name=f"read.{record_name}",  # no read record in latency mode
            endpoints=tuple(
                Endpoint(region=rc.name, role="active", alb_dns_name=regions[rc.name].alb_dns_name,
                         alb_zone_id=regions[rc.name].alb_zone_id)
                for rc in cfg.regions
            ),
            health_path=cfg.app.health_path,
            https=cfg.dns.https,
            request_interval=cfg.dns.health_check_interval,
            failure_threshold=cfg.dns.failure_threshold,
            control_health_check_ids=fence.recovery_health_check_ids,
            endpoint_checks=endpoint_checks,
        ),
        labels=common.labels(cfg, stack),
    )


def _routing(cfg: StackConfig, stack: str, regions: dict[str, RegionStack], fence: Quorum) -> DnsFailover:
    """The latency records clients (phase B) or Cloudflare (phase C) resolve; returns the origin records."""
    if cfg.phase != "c":
        return _latency_records(cfg, stack, regions, fence, "fraiseql-dns", zone_id=cfg.dns.zone_id,
                                record_name=cfg.dns.record_name, endpoint_checks=True)
    # The origins, in the subzone Cloudflare delegates to Route 53; locked to the edge, so the
    # records follow the ARC routing controls alone (README, Phase C, "DNS authority").
    dns = _latency_records(cfg, stack, regions, fence, "fraiseql-origin-dns", zone_id=cfg.dns.zone_id,
                           record_name=cfg.dns.record_name, endpoint_checks=False)
    edge = cfg.edge
    assert edge is not None  # validated: phase c carries an edge block
    if edge.dns_authority == "route53":
        assert edge.route53_public_zone_id is not None  # validated
        # B -> C: phase b's records for the public name, unchanged (same names, zone and targets),
        # keep answering until the registrar delegates the zone to Cloudflare.
        _latency_records(cfg, stack, regions, fence, "fraiseql-dns", zone_id=edge.route53_public_zone_id,
                         record_name=edge.hostname, endpoint_checks=True)
    return dns


def _exports(cfg: StackConfig, regions: dict[str, RegionStack], network: InterRegionNetwork,
             database: MultiMasterReplication, fence: Quorum, services: dict[str, FraiseqlService],
             dns: DnsFailover) -> dict[str, Any]:
    """The stack outputs phases B and C share (core.outputs.PhaseBOutputs), but the budget and dashboard names."""
    scheme = "https" if cfg.dns.https else "http"
    members, next_members = cfg.quorum_members, cfg.quorum_next_members
    return {
        "phase": cfg.phase,
        "regions": {rc.name: rc.role for rc in cfg.regions},
        "quorum": majority(len(members)),
        "quorumMembers": members,
        "quorumNextMembers": next_members,
        "seedingRegions": cfg.seeding,
        "writerIndexes": {rc.name: cfg.writer_index(rc.name) for rc in cfg.regions},
        "apiUrl": f"{scheme}://{cfg.dns.record_name}",
        "zoneId": cfg.dns.zone_id,
        "recordName": cfg.dns.record_name,
        "topology": cfg.network.topology,
        "networkLinks": network.links,
        "albDnsNames": {r: rs.alb_dns_name for r, rs in regions.items()},
        "writerDbIdentifiers": database.writer_identifiers,
        "writerDbAddresses": database.writer_addresses,
        "writerSecretArns": database.master_secret_arns,
        "dbPort": cfg.database.port,
        "dbName": cfg.database.db_name,
        "dbPrivateZoneId": database.private_zone_id,
        "replicationSecretName": database.replication_secret_name,
        "bootstrapFunctionNames": database.bootstrap_function_names,
        "replicationLagAlarmArns": database.lag_alarm_arns,
        "healthCheckIds": dns.health_check_ids,
        "routingControlArns": fence.routing_control_arns,
        "arcClusterEndpoints": fence.cluster_endpoints,
        "fenceFunctionNames": fence.fence_function_names,
        "fenceRuleArns": fence.fence_rule_arns,
        "alertTopicArns": {r: rs.alerts_topic_arn for r, rs in regions.items()},
        "clusterNames": {r: rs.cluster_name for r, rs in regions.items()},
        "serviceNames": {r: s.service_name for r, s in services.items()},
        "slo": {"rtoSeconds": cfg.slo.rto_seconds, "rpoSeconds": cfg.slo.rpo_seconds,
                "lagAlarmSeconds": cfg.lag_alarm_seconds},
    }
