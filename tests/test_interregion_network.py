"""InterRegionNetwork under the repo's mocks, with upstream VPC resources standing in for RegionStack.

The VPCs, route tables, subnets and DB security groups are real (mocked) resources created by the
test program, so every id the component receives is another resource's output: the assertions
check which resource each input comes from (ids and dependency URNs), and packets are walked
through the registered route tables, associations and attachments to their destination.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pulumi_aws as aws
import pytest

from components._kit import Labels
from components.interregion_network import InterRegionNetwork, InterRegionNetworkArgs, RegionAttachment
from core.planning import plan_subnets
from infra.mocks import Registration
from infra.synth import Synthesis, synthesize

COMPONENT = "fraiseql:network:InterRegionNetwork"
PCX = "aws:ec2/vpcPeeringConnection:VpcPeeringConnection"
PCX_ACCEPTER = "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter"
ROUTE = "aws:ec2/route:Route"
TGW = "aws:ec2transitgateway/transitGateway:TransitGateway"
TGW_VPC = "aws:ec2transitgateway/vpcAttachment:VpcAttachment"
TGW_RT = "aws:ec2transitgateway/routeTable:RouteTable"
TGW_RTA = "aws:ec2transitgateway/routeTableAssociation:RouteTableAssociation"
TGW_PEERING = "aws:ec2transitgateway/peeringAttachment:PeeringAttachment"
TGW_ACCEPTER = "aws:ec2transitgateway/peeringAttachmentAccepter:PeeringAttachmentAccepter"
TGW_ROUTE = "aws:ec2transitgateway/route:Route"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"

CIDRS = {
    "us-east-1": "10.10.0.0/16",
    "us-west-2": "10.20.0.0/16",
    "eu-west-1": "10.30.0.0/16",
    "eu-central-1": "10.40.0.0/16",
    "ap-northeast-1": "10.50.0.0/16",
}
THREE = ("us-east-1", "us-west-2", "eu-west-1")
AZS = 2
TABLES = ("private-0", "private-1", "database")  # route tables per region, in the order passed
LABELS = Labels(stack="test", phase="b", tags={"owner": "platform"})
#: What the component's taggable children carry (components/_kit.py): the stack's labels and their own name.
TAGGED = (PCX, PCX_ACCEPTER, TGW, TGW_VPC, TGW_RT, TGW_PEERING, TGW_ACCEPTER)


# --- harness ---------------------------------------------------------------------------------

@dataclass
class Run:
    syn: Synthesis
    ids: dict[str, str]

    @property
    def registrations(self) -> list[Registration]:
        return self.syn.registrations

    @property
    def outputs(self) -> dict[str, Any]:
        return self.syn.outputs

    @property
    def dependencies(self) -> dict[str, list[str]]:
        """Each resource's whole dependency list: its inputs' resources and `depends_on`."""
        return {r.urn: r.dependencies for r in self.registrations}

    def of_type(self, typ: str) -> list[Registration]:
        return self.syn.of_type(typ)

    def named(self, name: str) -> Registration:
        found = [r for r in self.registrations if r.name == name]
        assert len(found) == 1, name
        return found[0]

    def id(self, reg: Registration) -> str:
        return self.ids[reg.urn]

    def by_id(self, typ: str, rid: str) -> Registration:
        found = [r for r in self.of_type(typ) if self.id(r) == rid]
        assert len(found) == 1, f"expected one {typ} with id {rid}, found {len(found)}"
        return found[0]

    @property
    def component(self) -> Registration:
        (comp,) = [r for r in self.registrations if r.type == COMPONENT]
        return comp

    @property
    def children(self) -> list[Registration]:
        return [r for r in self.registrations if r.parent == self.component.urn]


def run_program(program: Callable[[], Optional[dict[str, Any]]], monitors: Optional[list] = None) -> Run:
    """Run `program` under the repo's mocks, in place of the stack's program (`infra.synth.synthesize`)."""
    seen: list = [] if monitors is None else monitors
    syn = synthesize("test", config={}, run=lambda: program() or {}, monitors=seen)
    return Run(syn, {urn: reg.id for urn, reg in seen[-1].resources.items()})


def database_cidrs(region: str) -> tuple[str, ...]:
    return tuple(p.cidr for p in plan_subnets(CIDRS[region], AZS) if p.tier == "database")


def upstream(region: str) -> RegionAttachment:
    """What RegionStack would hand over, built from real (mocked) resources named `fx-*`."""
    cidr = CIDRS[region]
    vpc = aws.ec2.Vpc(f"fx-{region}-vpc", region=region, cidr_block=cidr)
    db_subnets = [
        aws.ec2.Subnet(f"fx-{region}-database-{i}", region=region, vpc_id=vpc.id, cidr_block=c)
        for i, c in enumerate(database_cidrs(region))
    ]
    tables = [aws.ec2.RouteTable(f"fx-{region}-rt-{t}", region=region, vpc_id=vpc.id) for t in TABLES]
    sg = aws.ec2.SecurityGroup(f"fx-{region}-sg-db", region=region, vpc_id=vpc.id, description="db")
    return RegionAttachment(
        region=region,
        vpc_id=vpc.id,
        vpc_cidr=cidr,
        database_subnet_cidrs=database_cidrs(region),
        route_table_ids=tuple(t.id for t in tables),
        db_security_group_id=sg.id,
        attachment_subnet_ids=tuple(s.id for s in db_subnets),
    )


def network(regions, topology="mesh", hub=None, port=5432) -> Run:
    def program():
        net = InterRegionNetwork(
            "net",
            InterRegionNetworkArgs(
                topology=topology,
                regions=tuple(upstream(r) for r in regions),
                hub_region=hub,
                db_port=port,
            ),
            labels=LABELS,
        )
        return {
            "links": net.links,
            "pcx": net.peering_connection_ids,
            "attachments": net.peering_attachment_ids,
            "tgws": net.transit_gateway_ids,
        }

    return run_program(program)


def fx(run: Run, region: str, what: str) -> Registration:
    return run.named(f"fx-{region}-{what}")


def table_ids(run: Run, region: str) -> list[str]:
    return [run.id(fx(run, region, f"rt-{t}")) for t in TABLES]


def host_in(region: str) -> ipaddress.IPv4Address:
    """An address of a database subnet of `region` (where replication traffic goes)."""
    return ipaddress.IPv4Network(database_cidrs(region)[0])[10]


def lookup(routes: list[Registration], address: ipaddress.IPv4Address) -> Registration:
    """Longest-prefix match, refusing ambiguity."""
    matches = [r for r in routes if address in ipaddress.IPv4Network(r.inputs["destinationCidrBlock"])]
    assert matches, f"no route for {address}"
    best = max(ipaddress.IPv4Network(r.inputs["destinationCidrBlock"]).prefixlen for r in matches)
    chosen = [r for r in matches if ipaddress.IPv4Network(r.inputs["destinationCidrBlock"]).prefixlen == best]
    assert len(chosen) == 1, f"{len(chosen)} equally specific routes for {address}"
    return chosen[0]


@pytest.fixture(scope="module")
def mesh3() -> Run:
    return network(THREE)


@pytest.fixture(scope="module")
def hub3() -> Run:
    # us-east-1 sorts between eu-west-1 and us-west-2: the hub is `b` of one link and `a` of the other.
    return network(THREE, "hub-and-spoke", hub="us-east-1")


# --- mesh ------------------------------------------------------------------------------------

def test_mesh_has_one_peering_per_pair_requested_from_the_first_region(mesh3):
    pcxs = mesh3.of_type(PCX)
    assert sorted((p.region, p.inputs["peerRegion"]) for p in pcxs) == [
        ("eu-west-1", "us-east-1"),
        ("eu-west-1", "us-west-2"),
        ("us-east-1", "us-west-2"),
    ]
    for p in pcxs:
        a, b = p.region, p.inputs["peerRegion"]
        assert p.inputs["vpcId"] == mesh3.id(fx(mesh3, a, "vpc"))
        assert p.inputs["peerVpcId"] == mesh3.id(fx(mesh3, b, "vpc"))
        assert p.inputs["autoAccept"] is False
        assert fx(mesh3, b, "vpc").urn in p.property_dependencies["peerVpcId"]


def test_mesh_accepters_live_in_the_peer_region_and_accept_their_connection(mesh3):
    accepters = mesh3.of_type(PCX_ACCEPTER)
    assert len(accepters) == 3
    for acc in accepters:
        pcx = mesh3.by_id(PCX, acc.inputs["vpcPeeringConnectionId"])
        assert acc.region == pcx.inputs["peerRegion"] != pcx.region
        assert acc.inputs["autoAccept"] is True
        assert acc.property_dependencies["vpcPeeringConnectionId"] == [pcx.urn]


def test_mesh_routes_both_ways_in_every_table_over_the_accepted_link(mesh3):
    routes = mesh3.of_type(ROUTE)
    assert len(routes) == 3 * 2 * len(TABLES)
    accepter_of = {a.inputs["vpcPeeringConnectionId"]: a for a in mesh3.of_type(PCX_ACCEPTER)}
    for src in THREE:
        for table in table_ids(mesh3, src):
            in_table = [r for r in routes if r.inputs["routeTableId"] == table]
            assert all(r.region == src for r in in_table)
            assert sorted(r.inputs["destinationCidrBlock"] for r in in_table) == sorted(
                CIDRS[d] for d in THREE if d != src
            )
            for route in in_table:
                pcx = mesh3.by_id(PCX, route.inputs["vpcPeeringConnectionId"])
                dst = next(d for d in THREE if CIDRS[d] == route.inputs["destinationCidrBlock"])
                assert {pcx.region, pcx.inputs["peerRegion"]} == {src, dst}
                # routes wait for the acceptance (they read the accepter's output)
                assert accepter_of[mesh3.id(pcx)].urn in route.property_dependencies["vpcPeeringConnectionId"]


def test_mesh_exposes_the_links_and_their_connection_ids(mesh3):
    out = mesh3.outputs
    assert out["links"] == ["eu-west-1--us-east-1", "eu-west-1--us-west-2", "us-east-1--us-west-2"]
    for key, pcx_id in out["pcx"].items():
        a, b = key.split("--")
        pcx = mesh3.by_id(PCX, pcx_id)
        assert (pcx.region, pcx.inputs["peerRegion"]) == (a, b)
    assert set(out["pcx"]) == set(out["links"])
    assert out["attachments"] == {} and out["tgws"] == {}
    assert mesh3.of_type(TGW) == []


def test_five_region_mesh_has_ten_links():
    regions = tuple(CIDRS)
    run = network(regions)
    assert len(run.of_type(PCX)) == len(run.of_type(PCX_ACCEPTER)) == 10
    assert len(run.outputs["links"]) == 10
    assert len(run.of_type(ROUTE)) == 5 * 4 * len(TABLES)
    pairs = {frozenset((p.region, p.inputs["peerRegion"])) for p in run.of_type(PCX)}
    assert len(pairs) == 10


# --- hub-and-spoke ---------------------------------------------------------------------------

def test_hub_has_a_transit_gateway_per_region_with_explicit_routing(hub3):
    tgws = hub3.of_type(TGW)
    assert sorted(t.region for t in tgws) == sorted(THREE)
    for t in tgws:
        assert t.inputs["defaultRouteTableAssociation"] == "disable"
        assert t.inputs["defaultRouteTablePropagation"] == "disable"
    assert hub3.outputs["tgws"] == {t.region: hub3.id(t) for t in tgws}
    for att in hub3.of_type(TGW_VPC):
        r = att.region
        assert hub3.by_id(TGW, att.inputs["transitGatewayId"]).region == r
        assert att.inputs["vpcId"] == hub3.id(fx(hub3, r, "vpc"))
        assert att.inputs["subnetIds"] == [hub3.id(fx(hub3, r, f"database-{i}")) for i in range(AZS)]
        assert att.inputs["transitGatewayDefaultRouteTableAssociation"] is False
    assert sorted(a.region for a in hub3.of_type(TGW_VPC)) == sorted(THREE)


def test_hub_peers_only_hub_to_spoke_requested_from_the_hub(hub3):
    hub_tgw = next(t for t in hub3.of_type(TGW) if t.region == "us-east-1")
    peerings = hub3.of_type(TGW_PEERING)
    assert sorted(p.inputs["peerRegion"] for p in peerings) == ["eu-west-1", "us-west-2"]
    for p in peerings:
        assert p.region == "us-east-1"
        assert p.inputs["transitGatewayId"] == hub3.id(hub_tgw)
        assert hub3.by_id(TGW, p.inputs["peerTransitGatewayId"]).region == p.inputs["peerRegion"]
    accepters = hub3.of_type(TGW_ACCEPTER)
    assert len(accepters) == 2
    for acc in accepters:
        peering = hub3.by_id(TGW_PEERING, acc.inputs["transitGatewayAttachmentId"])
        assert acc.region == peering.inputs["peerRegion"]
        assert acc.property_dependencies["transitGatewayAttachmentId"] == [peering.urn]
    assert set(hub3.outputs["attachments"]) == set(hub3.outputs["links"]) == {
        "eu-west-1--us-east-1",
        "us-east-1--us-west-2",
    }
    assert hub3.outputs["pcx"] == {}
    assert hub3.of_type(PCX) == []


def _tgw_table(run: Run, region: str) -> Registration:
    (table,) = [t for t in run.of_type(TGW_RT) if t.region == region]
    assert run.by_id(TGW, table.inputs["transitGatewayId"]).region == region
    return table


def _tgw_routes(run: Run, region: str) -> list[Registration]:
    table = run.id(_tgw_table(run, region))
    return [r for r in run.of_type(TGW_ROUTE) if r.inputs["transitGatewayRouteTableId"] == table]


def _peering_to(run: Run, spoke: str) -> Registration:
    (p,) = [p for p in run.of_type(TGW_PEERING) if p.inputs["peerRegion"] == spoke]
    return p


def test_spoke_tables_route_other_regions_via_the_hub_attachment(hub3):
    for spoke, other in (("us-west-2", "eu-west-1"), ("eu-west-1", "us-west-2")):
        routes = {r.inputs["destinationCidrBlock"]: r for r in _tgw_routes(hub3, spoke)}
        assert set(routes) == {CIDRS[r] for r in THREE}
        to_hub = hub3.id(_peering_to(hub3, spoke))
        for dst in (other, "us-east-1"):
            route = routes[CIDRS[dst]]
            assert route.region == spoke
            assert route.inputs["transitGatewayAttachmentId"] == to_hub
            # the route waits for the attachment's association with this table
            (assoc_urn,) = route.property_dependencies["transitGatewayAttachmentId"]
            assoc = next(r for r in hub3.of_type(TGW_RTA) if r.urn == assoc_urn)
            assert assoc.inputs["transitGatewayRouteTableId"] == hub3.id(_tgw_table(hub3, spoke))
        own = hub3.by_id(TGW_VPC, routes[CIDRS[spoke]].inputs["transitGatewayAttachmentId"])
        assert own.region == spoke


def test_hub_table_routes_each_spoke_over_its_own_attachment(hub3):
    routes = {r.inputs["destinationCidrBlock"]: r for r in _tgw_routes(hub3, "us-east-1")}
    assert set(routes) == {CIDRS[r] for r in THREE}
    for spoke in ("us-west-2", "eu-west-1"):
        assert routes[CIDRS[spoke]].inputs["transitGatewayAttachmentId"] == hub3.id(_peering_to(hub3, spoke))
    assert hub3.by_id(TGW_VPC, routes[CIDRS["us-east-1"]].inputs["transitGatewayAttachmentId"]).region == "us-east-1"


def test_peering_attachments_are_associated_on_both_sides_after_acceptance(hub3):
    assocs = hub3.of_type(TGW_RTA)
    assert len(assocs) == 3 + 2 * 2
    for peering in hub3.of_type(TGW_PEERING):
        pid = hub3.id(peering)
        sides = [a for a in assocs if a.inputs["transitGatewayAttachmentId"] == pid]
        assert sorted(a.region for a in sides) == sorted(["us-east-1", peering.inputs["peerRegion"]])
        accepter = next(a for a in hub3.of_type(TGW_ACCEPTER) if a.inputs["transitGatewayAttachmentId"] == pid)
        for side in sides:
            assert side.inputs["transitGatewayRouteTableId"] == hub3.id(_tgw_table(hub3, side.region))
            assert accepter.urn in hub3.dependencies[side.urn], f"{side.name} must wait for the acceptance"
    for att in hub3.of_type(TGW_VPC):
        (assoc,) = [a for a in assocs if a.inputs["transitGatewayAttachmentId"] == hub3.id(att)]
        assert assoc.inputs["transitGatewayRouteTableId"] == hub3.id(_tgw_table(hub3, att.region))


def test_vpc_tables_send_other_regions_to_the_local_tgw_once_attached(hub3):
    routes = hub3.of_type(ROUTE)
    assert len(routes) == 3 * 2 * len(TABLES)
    for src in THREE:
        tgw = next(t for t in hub3.of_type(TGW) if t.region == src)
        attachment = next(a for a in hub3.of_type(TGW_VPC) if a.region == src)
        for table in table_ids(hub3, src):
            in_table = [r for r in routes if r.inputs["routeTableId"] == table]
            assert sorted(r.inputs["destinationCidrBlock"] for r in in_table) == sorted(
                CIDRS[d] for d in THREE if d != src
            )
            for r in in_table:
                assert r.region == src and r.inputs["transitGatewayId"] == hub3.id(tgw)
                assert attachment.urn in hub3.dependencies[r.urn]


def test_every_region_reaches_every_other_through_the_registered_hub_network(hub3):
    """Walk packets: VPC table -> local TGW -> table associated with the ingress attachment -> ..."""
    association = {
        (a.region, a.inputs["transitGatewayAttachmentId"]): a.inputs["transitGatewayRouteTableId"]
        for a in hub3.of_type(TGW_RTA)
    }
    peerings = {hub3.id(p): p for p in hub3.of_type(TGW_PEERING)}
    vpc_attachments = {hub3.id(a): a for a in hub3.of_type(TGW_VPC)}
    for src in THREE:
        for dst in THREE:
            if src == dst:
                continue
            address = host_in(dst)
            db_table = hub3.id(fx(hub3, src, "rt-database"))
            first = lookup([r for r in hub3.of_type(ROUTE) if r.inputs["routeTableId"] == db_table], address)
            assert hub3.by_id(TGW, first.inputs["transitGatewayId"]).region == src
            here = src
            ingress = next(a for a_id, a in vpc_attachments.items() if a.region == src)
            ingress_id, path = hub3.id(ingress), [src]
            while True:
                table = association[(here, ingress_id)]
                route = lookup([r for r in hub3.of_type(TGW_ROUTE) if r.inputs["transitGatewayRouteTableId"] == table], address)
                target = route.inputs["transitGatewayAttachmentId"]
                if target in vpc_attachments:
                    assert vpc_attachments[target].region == here == dst, path
                    break
                p = peerings[target]
                here = p.inputs["peerRegion"] if here == p.region else p.region
                assert here not in path, f"loop {path + [here]}"
                path.append(here)
                ingress_id = target
            assert path == ([src, dst] if "us-east-1" in (src, dst) else [src, "us-east-1", dst])


# --- security: replication only between database subnets on the database port --------------

@pytest.mark.parametrize("topology", ["mesh", "hub-and-spoke"])
def test_db_security_groups_open_only_the_db_port_to_peer_database_subnets(topology, mesh3, hub3):
    run = mesh3 if topology == "mesh" else hub3
    vpcs = [ipaddress.IPv4Network(c) for c in CIDRS.values()]
    for typ in (INGRESS, EGRESS):
        rules = run.of_type(typ)
        assert len(rules) == 3 * 2 * AZS
        for region in THREE:
            sg = fx(run, region, "sg-db")
            mine = [r for r in rules if r.inputs["securityGroupId"] == run.id(sg)]
            assert all(r.region == region for r in mine)
            assert all(sg.urn in r.property_dependencies["securityGroupId"] for r in mine)
            assert sorted(r.inputs["cidrIpv4"] for r in mine) == sorted(
                c for peer in THREE if peer != region for c in database_cidrs(peer)
            )
            for r in mine:
                assert (r.inputs["ipProtocol"], r.inputs["fromPort"], r.inputs["toPort"]) == ("tcp", 5432, 5432)
                net = ipaddress.IPv4Network(r.inputs["cidrIpv4"])
                assert net != ipaddress.IPv4Network("0.0.0.0/0")
                assert net not in vpcs and not net.overlaps(ipaddress.IPv4Network(CIDRS[region]))
                assert "referencedSecurityGroupId" not in r.inputs and "cidrIpv6" not in r.inputs


def test_db_port_follows_the_argument():
    run = network(("us-east-1", "us-west-2"), port=6432)
    rules = run.of_type(INGRESS) + run.of_type(EGRESS)
    assert rules and {(r.inputs["fromPort"], r.inputs["toPort"]) for r in rules} == {(6432, 6432)}


# --- the component as a whole ----------------------------------------------------------------

@pytest.mark.parametrize("topology,hub", [("mesh", None), ("hub-and-spoke", "us-west-2")])
def test_logical_names_are_stable_and_independent_of_region_order(topology, hub):
    first = network(THREE, topology, hub)
    again = network(("eu-west-1", "us-west-2", "us-east-1"), topology, hub)
    assert sorted(r.urn for r in first.registrations) == sorted(r.urn for r in again.registrations)


@pytest.mark.parametrize("fixture", ["mesh3", "hub3"])
def test_every_resource_is_a_direct_child_of_the_component(fixture, request):
    run = request.getfixturevalue(fixture)
    mine = [r for r in run.registrations if not r.name.startswith("fx-") and r.type != COMPONENT]
    assert mine and run.children == mine
    assert run.component.name == "net"
    for reg in mine:
        assert reg.name.startswith("net-")
        if reg.type in TAGGED:
            assert reg.inputs["tags"] == {"Name": reg.name, "project": "fraiseql", "phase": "b", "stack": "test",
                                          "component": "InterRegionNetwork", "owner": "platform"}
        else:
            assert "tags" not in reg.inputs, reg.name


def _literal(region: str, subnets=("subnet-a", "subnet-b")) -> RegionAttachment:
    return RegionAttachment(
        region=region,
        vpc_id=f"vpc-{region}",
        vpc_cidr=CIDRS[region],
        database_subnet_cidrs=database_cidrs(region),
        route_table_ids=(f"rtb-{region}",),
        db_security_group_id=f"sg-{region}",
        attachment_subnet_ids=subnets,
    )


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(topology="hub-and-spoke", hub_region="ap-south-1"), "not one of the regions"),
        (dict(topology="hub-and-spoke", hub_region=None), "needs hub_region"),
        (dict(topology="ring"), "topology must be one of"),
        (dict(regions=(_literal("us-east-1"), _literal("us-east-1"))), "duplicate region"),
        (
            dict(
                topology="hub-and-spoke",
                hub_region="us-east-1",
                regions=(_literal("us-east-1"), _literal("us-west-2", subnets=())),
            ),
            "attachment_subnet_ids",
        ),
    ],
)
def test_impossible_arguments_raise_before_anything_is_registered(change, message):
    fields = dict(
        topology="mesh",
        regions=(_literal("us-east-1"), _literal("us-west-2")),
        hub_region=None,
        db_port=5432,
    )
    fields.update(change)
    monitors: list = []
    with pytest.raises(ValueError, match=message):
        run_program(lambda: InterRegionNetwork("net", InterRegionNetworkArgs(**fields), labels=LABELS) and None, monitors)
    assert monitors[0].registrations == []


def test_overlapping_vpc_cidrs_are_refused():
    clash = RegionAttachment(
        region="us-west-2",
        vpc_id="vpc-x",
        vpc_cidr="10.10.128.0/17",
        database_subnet_cidrs=(),
        route_table_ids=(),
        db_security_group_id="sg-x",
    )
    args = InterRegionNetworkArgs(
        topology="mesh", regions=(_literal("us-east-1"), clash), hub_region=None, db_port=5432,
    )
    monitors: list = []
    with pytest.raises(ValueError, match="overlap"):
        run_program(lambda: InterRegionNetwork("net", args, labels=LABELS) and None, monitors)
    assert monitors[0].registrations == []
