"""Pure planning functions: no Pulumi, no I/O. Property-tested in tests/test_planning.py."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from itertools import combinations
from typing import Iterable, Sequence

TIERS = ("public", "private", "database")
MAX_AZS = 8
# Each tier owns a quarter of the VPC; inside it every AZ owns an eighth of that quarter.
# Slots are fixed, so raising az_count adds subnets without renumbering existing ones,
# and the fourth quarter stays free for later tiers.
_TIER_BITS = 2
_AZ_BITS = 3
MIN_VPC_PREFIX = 16
MAX_VPC_PREFIX = 28 - _TIER_BITS - _AZ_BITS  # AWS subnets can be no smaller than /28


@dataclass(frozen=True)
class SubnetPlan:
    tier: str
    az_index: int
    cidr: str


def plan_subnets(vpc_cidr: str, az_count: int) -> list[SubnetPlan]:
    """Carve a VPC into public, private and database subnets, one of each per AZ."""
    net = ipaddress.IPv4Network(vpc_cidr, strict=True)
    if not MIN_VPC_PREFIX <= net.prefixlen <= MAX_VPC_PREFIX:
        raise ValueError(
            f"VPC CIDR {vpc_cidr} must have a prefix between /{MIN_VPC_PREFIX} and /{MAX_VPC_PREFIX}"
        )
    if not 1 <= az_count <= MAX_AZS:
        raise ValueError(f"az_count must be between 1 and {MAX_AZS}, got {az_count}")
    tier_blocks = list(net.subnets(prefixlen_diff=_TIER_BITS))
    plan: list[SubnetPlan] = []
    for tier, block in zip(TIERS, tier_blocks):
        slots = list(block.subnets(prefixlen_diff=_AZ_BITS))
        plan.extend(SubnetPlan(tier, i, str(slots[i])) for i in range(az_count))
    return plan


def overlapping_pairs(cidrs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Names of every pair of (name, cidr) entries whose CIDRs overlap."""
    items = [(name, ipaddress.IPv4Network(c, strict=False)) for name, c in cidrs]
    return [(a, b) for (a, na), (b, nb) in combinations(items, 2) if na.overlaps(nb)]


@dataclass(frozen=True)
class Link:
    """One bidirectional inter-region link; `a` is the requester (sorted order)."""

    a: str
    b: str

    @property
    def key(self) -> str:
        return f"{self.a}--{self.b}"


@dataclass(frozen=True)
class Route:
    region: str
    destination_cidr: str
    via: str  # link key (mesh) or "tgw" (hub-and-spoke)


def plan_mesh(regions: Sequence[str]) -> list[Link]:
    """Every unordered pair exactly once, in a stable order independent of input order."""
    if len(set(regions)) != len(regions):
        raise ValueError(f"duplicate region in {list(regions)}")
    return [Link(a, b) for a, b in combinations(sorted(regions), 2)]


def plan_mesh_routes(cidrs: dict[str, str]) -> list[Route]:
    """Routes both ways over each mesh link: every region reaches every other region's VPC."""
    routes = []
    for link in plan_mesh(list(cidrs)):
        routes.append(Route(link.a, cidrs[link.b], link.key))
        routes.append(Route(link.b, cidrs[link.a], link.key))
    return routes


def plan_hub(regions: Sequence[str], hub: str) -> list[Link]:
    """Hub-and-spoke: one peering from the hub to each spoke; spokes reach each other via the hub."""
    if hub not in regions:
        raise ValueError(f"hub {hub} is not one of the regions {list(regions)}")
    if len(set(regions)) != len(regions):
        raise ValueError(f"duplicate region in {list(regions)}")
    return [Link(*sorted((hub, r))) for r in sorted(regions) if r != hub]


# --- Inter-region network: hub-and-spoke routing and replication rules ------------------------

VIA_TGW = "tgw"  # a VPC route table entry that targets the region's own transit gateway
VIA_VPC_ATTACHMENT = "vpc-attachment"  # a TGW route table entry that targets the local VPC attachment


@dataclass(frozen=True)
class HubRoute:
    """One static route of a hub-and-spoke network.

    `table` is "vpc" (every route table of the region's VPC) or "tgw" (the region's transit gateway
    route table). `via` is VIA_TGW for VPC tables; for TGW tables it is VIA_VPC_ATTACHMENT or the key
    of the hub peering link the traffic leaves by.
    """

    region: str
    table: str
    destination_region: str
    destination_cidr: str
    via: str


def plan_hub_routes(cidrs: dict[str, str], hub: str) -> list[HubRoute]:
    """Static routes that let every region reach every other region's VPC through the hub.

    Peering attachments do not propagate routes, so every hop is a static route: each VPC sends
    other regions' CIDRs to its local TGW; a spoke's TGW sends them over its single link to the hub;
    the hub's TGW sends each spoke's CIDR over that spoke's link; each TGW delivers its own VPC's
    CIDR to its VPC attachment. A spoke never routes its own CIDR to a peering link.
    """
    regions = sorted(cidrs)
    link_of = {(l.b if l.a == hub else l.a): l.key for l in plan_hub(regions, hub)}
    routes = []
    for r in regions:
        routes.append(HubRoute(r, "tgw", r, cidrs[r], VIA_VPC_ATTACHMENT))
        for d in regions:
            if d == r:
                continue
            routes.append(HubRoute(r, "vpc", d, cidrs[d], VIA_TGW))
            routes.append(HubRoute(r, "tgw", d, cidrs[d], link_of[d] if r == hub else link_of[r]))
    return routes


@dataclass(frozen=True)
class ReplicationRule:
    """Database-port traffic allowed on `region`'s DB security group to/from one peer DB subnet."""

    region: str
    peer: str
    peer_subnet_index: int
    peer_cidr: str


def plan_replication_rules(database_subnets: dict[str, Sequence[str]]) -> list[ReplicationRule]:
    """For each region, one rule per database subnet of every other region; never its own subnets."""
    return [
        ReplicationRule(r, p, i, cidr)
        for r in sorted(database_subnets)
        for p in sorted(database_subnets)
        if p != r
        for i, cidr in enumerate(database_subnets[p])
    ]
