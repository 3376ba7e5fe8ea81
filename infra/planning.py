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
    plan = []
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
