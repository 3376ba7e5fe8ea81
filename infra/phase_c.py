"""Phase C: the Cloudflare edge in front of every region's origin (the only phase importing pulumi_cloudflare)."""

from __future__ import annotations

from typing import Any

import pulumi

from components.edge import Edge, EdgeArgs, EdgeOrigin, WorkerBundle
from components.region_stack import OriginLock, RegionStack
from core.config import NAMESPACE, StackConfig
from infra import cloudflare_ips
from infra.paths import REPO

#: The header the worker and the edge monitor send (components/edge.py, worker/).
ORIGIN_AUTH_HEADER = "x-fraiseql-origin-auth"


def origin_auth_token() -> pulumi.Output[str]:
    """`fraiseql:origin_auth_token` (secret; plain text is refused by config validation)."""
    return pulumi.Config(NAMESPACE).require_secret("origin_auth_token")


def origin_lock() -> OriginLock:
    """What every region's ALB admits in phase C: Cloudflare's ranges, carrying the origin token."""
    return OriginLock(ipv4_cidrs=cloudflare_ips.load().ipv4, header_name=ORIGIN_AUTH_HEADER, token=origin_auth_token())


def build(cfg: StackConfig, stack: str, regions: dict[str, RegionStack]) -> dict[str, Any]:
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
            origin_auth_token=origin_auth_token(),
            origin_auth_header=ORIGIN_AUTH_HEADER,
            plan=edge_cfg.plan,
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
