"""Phase C: the Cloudflare edge in front of every region's origin (the only phase importing pulumi_cloudflare)."""

from __future__ import annotations

from typing import Any, Optional

import pulumi

from components.edge import Edge, EdgeArgs, EdgeOrigin, WorkerBundle
from components.region_stack import OriginLock, RegionStack
from core.config import NAMESPACE, StackConfig
from infra import cloudflare_ips, common
from infra.paths import REPO

#: The header the worker and the edge monitor send (components/edge.py, worker/).
ORIGIN_AUTH_HEADER = "x-fraiseql-origin-auth"


def origin_auth_token() -> pulumi.Output[str]:
    """`fraiseql:origin_auth_token` (secret; plain text is refused by config validation)."""
    return pulumi.Config(NAMESPACE).require_secret("origin_auth_token")


def origin_lock(cfg: StackConfig) -> Optional[OriginLock]:
    """What every region's ALB admits in phase C: Cloudflare's ranges, carrying the origin token. None
    while Route 53 still answers for the public hostname (`edge.dns_authority: route53`): clients whose
    resolvers still ask Route 53 reach the ALBs directly until Cloudflare answers."""
    assert cfg.edge is not None  # validated: phase c carries an edge block
    if cfg.edge.dns_authority != "cloudflare":
        return None
    return OriginLock(ipv4_cidrs=cloudflare_ips.load().ipv4, header_name=ORIGIN_AUTH_HEADER, token=origin_auth_token())


def public_certificate_names(cfg: StackConfig) -> dict[str, str]:
    """Names the ALB certificates keep, with their zone, while Route 53 answers for the public hostname:
    the clients it sends to the ALBs ask for that name."""
    edge = cfg.edge
    assert edge is not None
    if edge.dns_authority != "route53" or edge.route53_public_zone_id is None:
        return {}
    return {edge.hostname: edge.route53_public_zone_id}


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
            owned_entry_points=tuple(edge_cfg.owns_entry_points or ()),
            owasp_action=edge_cfg.waf.owasp_action,
            owasp_paranoia_level=edge_cfg.waf.owasp_paranoia_level,
            owasp_score_threshold=edge_cfg.waf.owasp_score_threshold,
        ),
        labels=common.labels(cfg, stack),
    )
    return {
        "apiHostname": edge_cfg.hostname,
        "cloudflareZoneId": edge_cfg.zone_id,
        "edgeLoadBalancerId": edge.load_balancer_id,
        "edgePoolIds": edge.pool_ids,
        "edgeWorkerName": edge.worker_name,
    }
