"""Property tests of the pure planners: subnets, mesh links and routes, hub links."""

from __future__ import annotations

import ipaddress
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.planning import (
    MAX_AZS,
    MAX_VPC_PREFIX,
    MIN_VPC_PREFIX,
    TIERS,
    overlapping_pairs,
    plan_hub,
    plan_mesh,
    plan_mesh_routes,
    plan_subnets,
)
from core.regions import REGIONS

vpcs = st.builds(
    lambda second, prefix: str(ipaddress.IPv4Network(f"10.{second}.0.0/{prefix}", strict=False)),
    st.integers(0, 255),
    st.integers(MIN_VPC_PREFIX, MAX_VPC_PREFIX),
)
region_sets = st.lists(st.sampled_from(sorted(REGIONS)), min_size=2, max_size=10, unique=True)


@given(vpc=vpcs, azs=st.integers(1, MAX_AZS))
def test_subnets_lie_inside_the_vpc_and_never_overlap(vpc, azs):
    plan = plan_subnets(vpc, azs)
    net = ipaddress.IPv4Network(vpc)
    nets = [ipaddress.IPv4Network(p.cidr) for p in plan]
    assert all(n.subnet_of(net) for n in nets)
    assert not overlapping_pairs((p.cidr, p.cidr) for p in plan)
    assert len(plan) == len(TIERS) * azs
    assert all(n.prefixlen <= 28 for n in nets)


@given(vpc=vpcs, azs=st.integers(1, MAX_AZS - 1))
def test_adding_an_az_never_renumbers_existing_subnets(vpc, azs):
    before = set(plan_subnets(vpc, azs))
    after = set(plan_subnets(vpc, azs + 1))
    assert before < after


def test_subnet_plan_for_a_16_is_the_documented_layout():
    plan = plan_subnets("10.10.0.0/16", 2)
    assert [(p.tier, p.cidr) for p in plan] == [
        ("public", "10.10.0.0/21"),
        ("public", "10.10.8.0/21"),
        ("private", "10.10.64.0/21"),
        ("private", "10.10.72.0/21"),
        ("database", "10.10.128.0/21"),
        ("database", "10.10.136.0/21"),
    ]


@pytest.mark.parametrize("vpc", ["10.0.0.0/8", "10.0.0.0/24"])
def test_vpc_sizes_outside_the_supported_range_are_refused(vpc):
    with pytest.raises(ValueError, match="prefix between"):
        plan_subnets(vpc, 2)


@given(regions=region_sets)
def test_mesh_connects_every_pair_exactly_once(regions):
    links = plan_mesh(regions)
    n = len(regions)
    assert len(links) == n * (n - 1) // 2
    pairs = [frozenset((l.a, l.b)) for l in links]
    assert len(set(pairs)) == len(pairs)
    assert set(pairs) == {frozenset(p) for p in combinations(regions, 2)}


@given(regions=region_sets, data=st.data())
def test_mesh_is_independent_of_input_order(regions, data):
    shuffled = data.draw(st.permutations(regions))
    assert plan_mesh(regions) == plan_mesh(shuffled)


@given(regions=region_sets)
@settings(max_examples=50)
def test_mesh_routes_go_both_ways_and_reach_every_other_vpc(regions):
    cidrs = {r: f"10.{i * 16}.0.0/16" for i, r in enumerate(regions)}
    routes = plan_mesh_routes(cidrs)
    assert len(routes) == len(regions) * (len(regions) - 1)
    for r in regions:
        reached = {rt.destination_cidr for rt in routes if rt.region == r}
        assert reached == {c for other, c in cidrs.items() if other != r}
    assert not overlapping_pairs(cidrs.items())


@given(regions=region_sets, data=st.data())
def test_hub_links_every_spoke_to_the_hub_once(regions, data):
    hub = data.draw(st.sampled_from(regions))
    links = plan_hub(regions, hub)
    assert len(links) == len(regions) - 1
    assert all(hub in (l.a, l.b) for l in links)


def test_duplicate_regions_are_refused_by_the_planners():
    with pytest.raises(ValueError, match="duplicate"):
        plan_mesh(["us-east-1", "us-east-1"])
