"""Property tests of the inter-region network planners: mesh and hub-and-spoke routes, DB rules.

Routes are checked by walking them: a packet for another region's CIDR is followed hop by hop
through the planned tables until it is delivered, so a missing, duplicated or looping route fails.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.planning import (
    VIA_TGW,
    VIA_VPC_ATTACHMENT,
    overlapping_pairs,
    plan_hub,
    plan_hub_routes,
    plan_mesh,
    plan_mesh_routes,
    plan_replication_rules,
    plan_subnets,
)
from core.regions import REGIONS


@st.composite
def networks(draw, min_size=2, max_size=10) -> dict[str, str]:
    """2 to 10 catalog regions, each with its own /16 (distinct second octets, so never overlapping)."""
    regions = draw(st.lists(st.sampled_from(sorted(REGIONS)), min_size=min_size, max_size=max_size, unique=True))
    octets = draw(st.lists(st.integers(0, 255), min_size=len(regions), max_size=len(regions), unique=True))
    return {r: f"10.{o}.0.0/16" for r, o in zip(regions, octets)}


@st.composite
def hub_networks(draw) -> tuple[dict[str, str], str]:
    cidrs = draw(networks())
    return cidrs, draw(st.sampled_from(sorted(cidrs)))


def _unique_table(entries) -> dict:
    """(region, destination) -> via, refusing two routes for the same destination in one table."""
    counts = Counter(k for k, _ in entries)
    assert all(c == 1 for c in counts.values()), [k for k, c in counts.items() if c > 1]
    return dict(entries)


# --- mesh ------------------------------------------------------------------------------------

@given(cidrs=networks())
def test_mesh_links_every_pair_once_and_routes_both_ways(cidrs):
    regions = list(cidrs)
    n = len(regions)
    links = plan_mesh(regions)
    assert len(links) == n * (n - 1) // 2
    assert Counter(frozenset((l.a, l.b)) for l in links) == Counter(
        frozenset(p) for p in permutations(regions, 2) if p[0] < p[1]
    )
    assert all(l.a < l.b for l in links)
    assert not overlapping_pairs(cidrs.items())

    routes = plan_mesh_routes(cidrs)
    table = _unique_table([((r.region, r.destination_cidr), r.via) for r in routes])
    assert len(table) == n * (n - 1)
    by_key = {l.key: l for l in links}
    for src in regions:
        assert (src, cidrs[src]) not in table, "a region never routes its own CIDR away"
        for dst in regions:
            if dst == src:
                continue
            link = by_key[table[(src, cidrs[dst])]]
            # peering is not transitive: the link taken must end exactly at the destination
            assert {link.a, link.b} == {src, dst}


@given(cidrs=networks(), data=st.data())
def test_mesh_routes_do_not_depend_on_region_order(cidrs, data):
    shuffled = dict(data.draw(st.permutations(list(cidrs.items()))))
    assert sorted(plan_mesh_routes(cidrs), key=repr) == sorted(plan_mesh_routes(shuffled), key=repr)


# --- hub-and-spoke ---------------------------------------------------------------------------

def _walker(cidrs: dict[str, str], hub: str):
    """walk(src, dst): regions a packet from src's VPC to dst's CIDR visits, following planned routes."""
    routes = plan_hub_routes(cidrs, hub)
    links = {l.key: l for l in plan_hub(list(cidrs), hub)}
    vpc = _unique_table([((r.region, r.destination_cidr), r.via) for r in routes if r.table == "vpc"])
    tgw = _unique_table([((r.region, r.destination_cidr), r.via) for r in routes if r.table == "tgw"])
    return lambda src, dst: _walk(cidrs, links, vpc, tgw, src, dst)


def _walk(cidrs, links, vpc, tgw, src: str, dst: str) -> list[str]:
    dest = cidrs[dst]
    assert vpc[(src, dest)] == VIA_TGW
    path = [src]
    while True:
        via = tgw[(path[-1], dest)]
        if via == VIA_VPC_ATTACHMENT:
            return path
        link = links[via]
        here = path[-1]
        assert here in (link.a, link.b), f"{here} routes over {via}, a link it is not on"
        nxt = link.b if here == link.a else link.a
        assert nxt not in path, f"loop: {path + [nxt]}"
        path.append(nxt)


@given(net=hub_networks())
@settings(max_examples=60, deadline=None)
def test_hub_every_region_reaches_every_other_through_the_hub_without_loops(net):
    cidrs, hub = net
    walk = _walker(cidrs, hub)
    for src in cidrs:
        for dst in cidrs:
            if src == dst:
                continue
            path = walk(src, dst)
            assert path[-1] == dst
            if hub in (src, dst):
                assert path == [src, dst]
            else:
                assert path == [src, hub, dst]


@given(net=hub_networks())
def test_hub_links_and_route_counts(net):
    cidrs, hub = net
    n = len(cidrs)
    links = plan_hub(list(cidrs), hub)
    assert len(links) == n - 1
    assert all(hub in (l.a, l.b) for l in links)
    routes = plan_hub_routes(cidrs, hub)
    vpc = [r for r in routes if r.table == "vpc"]
    tgw = [r for r in routes if r.table == "tgw"]
    assert {r.table for r in routes} == {"vpc", "tgw"}
    assert len(vpc) == n * (n - 1) and all(r.via == VIA_TGW for r in vpc)
    assert len(tgw) == n * n
    for r in routes:
        assert r.destination_cidr == cidrs[r.destination_region]
        if r.table == "vpc":
            assert r.destination_region != r.region, "a VPC never sends its own CIDR to the TGW"
        # a TGW delivers its own CIDR locally and every other CIDR over a peering link
        assert (r.via == VIA_VPC_ATTACHMENT) == (r.table == "tgw" and r.destination_region == r.region)


@given(net=hub_networks())
def test_spokes_use_only_their_hub_link_and_the_hub_each_spokes_own(net):
    cidrs, hub = net
    link_of = {(l.b if l.a == hub else l.a): l.key for l in plan_hub(list(cidrs), hub)}
    for r in plan_hub_routes(cidrs, hub):
        if r.table != "tgw" or r.via == VIA_VPC_ATTACHMENT:
            continue
        expected = link_of[r.destination_region] if r.region == hub else link_of[r.region]
        assert r.via == expected


@given(net=hub_networks(), data=st.data())
def test_hub_routes_do_not_depend_on_region_order(net, data):
    cidrs, hub = net
    shuffled = dict(data.draw(st.permutations(list(cidrs.items()))))
    assert plan_hub_routes(cidrs, hub) == plan_hub_routes(shuffled, hub)


def test_hub_routes_refuse_a_hub_outside_the_regions():
    with pytest.raises(ValueError, match="not one of the regions"):
        plan_hub_routes({"us-east-1": "10.0.0.0/16", "us-west-2": "10.1.0.0/16"}, "eu-west-1")


# --- replication security rules --------------------------------------------------------------

@given(cidrs=networks(), azs=st.integers(1, 4))
@settings(deadline=None)
def test_replication_rules_cover_only_peer_database_subnets(cidrs, azs):
    db = {r: [p.cidr for p in plan_subnets(c, azs) if p.tier == "database"] for r, c in cidrs.items()}
    rules = plan_replication_rules(db)
    n = len(cidrs)
    assert len(rules) == n * (n - 1) * azs
    assert len(set(rules)) == len(rules)
    for rule in rules:
        assert rule.peer != rule.region
        assert rule.peer_cidr == db[rule.peer][rule.peer_subnet_index]
        net = ipaddress.IPv4Network(rule.peer_cidr)
        assert net.subnet_of(ipaddress.IPv4Network(cidrs[rule.peer]))
        assert net.prefixlen > ipaddress.IPv4Network(cidrs[rule.peer]).prefixlen
        assert not net.overlaps(ipaddress.IPv4Network(cidrs[rule.region]))
    for r in cidrs:
        allowed = {rule.peer_cidr for rule in rules if rule.region == r}
        assert allowed == {c for p, cs in db.items() if p != r for c in cs}
