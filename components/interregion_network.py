"""InterRegionNetwork: private connectivity between the regions' VPCs, for database replication.

Two topologies, both planned by pure functions in `core.planning`:

- `mesh`: one inter-region VPC peering per pair of regions (`plan_mesh`), requested from the region
  that sorts first and accepted in the other, with routes both ways in every given route table of
  each VPC (`plan_mesh_routes`).
- `hub-and-spoke`: a transit gateway per region, each VPC attached to its own TGW, and one TGW
  peering attachment from the hub to each spoke (`plan_hub`), requested from the hub and accepted
  in the spoke. Routing is fully static (`plan_hub_routes`): the TGWs are created with default
  route table association and propagation disabled, each has one route table that its VPC
  attachment and its peering attachments are associated with. AWS documents that traffic over a
  TGW peering attachment needs static routes (peering attachments do not propagate routes), and
  that a peering attachment must be associated with the route table before routes can point at
  it. A spoke routes every other region's CIDR to its hub link; the hub routes each spoke's CIDR
  to that spoke's link, so spoke-to-spoke traffic crosses the hub's TGW. The hub forwarding from
  one peering attachment to another follows from TGW route lookup (by the route table associated
  with the ingress attachment); the AWS docs consulted describe the static-route requirement but
  do not spell out the multi-hop case.

In both topologies the regions' database security groups gain, for every database subnet of every
other region, one ingress and one egress rule on the database port, and nothing wider.

Config validation happens upstream; the component only refuses arguments it cannot build at all,
before it registers anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from components._kit import Component, Labels
from core.planning import (
    VIA_TGW,
    VIA_VPC_ATTACHMENT,
    overlapping_pairs,
    plan_hub,
    plan_hub_routes,
    plan_mesh,
    plan_mesh_routes,
    plan_replication_rules,
)

TOPOLOGIES = ("mesh", "hub-and-spoke")


@dataclass(frozen=True, kw_only=True)
class RegionAttachment:
    """One region's VPC as the network component needs it.

    `database_subnet_cidrs` are plain values (from `core.planning.plan_subnets`): the security
    rules are planned from them. `route_table_ids` are the VPC's private and database route tables;
    each gets a route to every other region. `attachment_subnet_ids` are only used by
    `hub-and-spoke`: the subnets the TGW VPC attachment places its interfaces in, exactly one per
    AZ that must reach the TGW (the database subnets are a fine choice: they are in every AZ the
    database uses).
    """

    region: str
    vpc_id: Input[str]
    vpc_cidr: str
    database_subnet_cidrs: tuple[str, ...]
    route_table_ids: tuple[Input[str], ...]
    db_security_group_id: Input[str]
    attachment_subnet_ids: tuple[Input[str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class InterRegionNetworkArgs:
    topology: Literal["mesh", "hub-and-spoke"]
    regions: tuple[RegionAttachment, ...]
    hub_region: Optional[str]  # required for hub-and-spoke, ignored by mesh
    db_port: int


def _check(args: InterRegionNetworkArgs) -> None:
    """Refuse arguments no network can be built from. Everything else is config validation's job."""
    if args.topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {TOPOLOGIES}, got {args.topology!r}")
    names = [r.region for r in args.regions]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate region in {names}")
    if overlap := overlapping_pairs((r.region, r.vpc_cidr) for r in args.regions):
        raise ValueError(f"VPC CIDRs overlap, routes between them are impossible: {overlap}")
    if args.topology == "hub-and-spoke":
        if args.hub_region is None:
            raise ValueError("hub-and-spoke needs hub_region")
        if args.hub_region not in names:
            raise ValueError(f"hub_region {args.hub_region!r} is not one of the regions {names}")
        if missing := [r.region for r in args.regions if not r.attachment_subnet_ids]:
            raise ValueError(f"hub-and-spoke needs attachment_subnet_ids for {missing}")


class InterRegionNetwork(Component):
    topology: str
    links: list[str]
    # mesh: link key -> VPC peering connection id (empty in hub-and-spoke)
    peering_connection_ids: dict[str, pulumi.Output[str]]
    # hub-and-spoke: link key -> TGW peering attachment id, region -> TGW id (empty in mesh)
    peering_attachment_ids: dict[str, pulumi.Output[str]]
    transit_gateway_ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: InterRegionNetworkArgs, *, labels: Labels, opts: Optional[ResourceOptions] = None):
        _check(args)
        super().__init__("fraiseql:network:InterRegionNetwork", name, labels=labels, opts=opts)
        self.args = args
        self._by_region = {r.region: r for r in args.regions}
        self._cidrs = {r.region: r.vpc_cidr for r in args.regions}

        self.topology = args.topology
        self.peering_connection_ids = {}
        self.peering_attachment_ids = {}
        self.transit_gateway_ids = {}
        if args.topology == "mesh":
            self.links = [link.key for link in plan_mesh(list(self._cidrs))]
            self._mesh()
        else:
            hub = args.hub_region
            assert hub is not None  # _check refused hub-and-spoke without one
            self.links = [link.key for link in plan_hub(list(self._cidrs), hub)]
            self._hub_and_spoke(hub)
        self._replication_rules()

        outputs: dict[str, Any] = {"topology": self.topology, "links": self.links}
        if self.peering_connection_ids:
            outputs["peeringConnectionIds"] = self.peering_connection_ids
        if self.peering_attachment_ids:
            outputs["peeringAttachmentIds"] = self.peering_attachment_ids
        if self.transit_gateway_ids:
            outputs["transitGatewayIds"] = self.transit_gateway_ids
        self.register_outputs(outputs)

    # --- helpers ---------------------------------------------------------------------------------

    def _opts(self, *depends_on: pulumi.Resource) -> ResourceOptions:
        return ResourceOptions(parent=self, depends_on=list(depends_on) or None)

    # --- mesh ------------------------------------------------------------------------------------

    def _mesh(self) -> None:
        # The accepter's vpc_peering_connection_id is the connection id once accepted: routes that
        # read it wait for the acceptance, in both regions.
        accepted: dict[str, pulumi.Output[str]] = {}
        for link in plan_mesh(list(self._cidrs)):
            requester, accepter = self._by_region[link.a], self._by_region[link.b]
            role = f"peering-{link.key}"
            pcx = aws.ec2.VpcPeeringConnection(
                self.n(role),
                region=link.a,
                vpc_id=requester.vpc_id,
                peer_vpc_id=accepter.vpc_id,
                peer_region=link.b,
                auto_accept=False,  # inter-region peerings cannot be auto-accepted by the requester
                opts=self._opts(),
            )
            acc = aws.ec2.VpcPeeringConnectionAccepter(
                self.n(f"{role}-accepter"),
                region=link.b,
                vpc_peering_connection_id=pcx.id,
                auto_accept=True,
                opts=self._opts(),
            )
            self.peering_connection_ids[link.key] = pcx.id
            accepted[link.key] = acc.vpc_peering_connection_id

        peer_of = {cidr: region for region, cidr in self._cidrs.items()}
        for route in plan_mesh_routes(self._cidrs):
            peer = peer_of[route.destination_cidr]
            for i, table_id in enumerate(self._by_region[route.region].route_table_ids):
                aws.ec2.Route(
                    self.n(f"route-{route.region}-{i}-to-{peer}"),
                    region=route.region,
                    route_table_id=table_id,
                    destination_cidr_block=route.destination_cidr,
                    vpc_peering_connection_id=accepted[route.via],
                    opts=self._opts(),
                )

    # --- hub-and-spoke ---------------------------------------------------------------------------

    def _hub_and_spoke(self, hub: str) -> None:
        regions = sorted(self._cidrs)
        tgws: dict[str, aws.ec2transitgateway.TransitGateway] = {}
        vpc_attachments: dict[str, aws.ec2transitgateway.VpcAttachment] = {}
        tables: dict[str, aws.ec2transitgateway.RouteTable] = {}
        for r in regions:
            att = self._by_region[r]
            tgws[r] = aws.ec2transitgateway.TransitGateway(
                self.n(f"tgw-{r}"),
                region=r,
                description=f"FraiseQL inter-region network, {r}",
                default_route_table_association="disable",
                default_route_table_propagation="disable",
                opts=self._opts(),
            )
            vpc_attachments[r] = aws.ec2transitgateway.VpcAttachment(
                self.n(f"tgw-vpc-{r}"),
                region=r,
                transit_gateway_id=tgws[r].id,
                vpc_id=att.vpc_id,
                subnet_ids=list(att.attachment_subnet_ids),
                transit_gateway_default_route_table_association=False,
                transit_gateway_default_route_table_propagation=False,
                opts=self._opts(),
            )
            tables[r] = aws.ec2transitgateway.RouteTable(
                self.n(f"tgw-rt-{r}"),
                region=r,
                transit_gateway_id=tgws[r].id,
                opts=self._opts(),
            )
            aws.ec2transitgateway.RouteTableAssociation(
                self.n(f"tgw-rta-{r}-vpc"),
                region=r,
                transit_gateway_attachment_id=vpc_attachments[r].id,
                transit_gateway_route_table_id=tables[r].id,
                opts=self._opts(),
            )
            self.transit_gateway_ids[r] = tgws[r].id

        # Per region and link: the association a static route over that link must wait for.
        associated: dict[tuple[str, str], aws.ec2transitgateway.RouteTableAssociation] = {}
        for link in plan_hub(regions, hub):
            spoke = link.b if link.a == hub else link.a
            role = f"tgw-peering-{link.key}"
            peering = aws.ec2transitgateway.PeeringAttachment(
                self.n(role),
                region=hub,
                transit_gateway_id=tgws[hub].id,
                peer_region=spoke,
                peer_transit_gateway_id=tgws[spoke].id,
                opts=self._opts(),
            )
            accepter = aws.ec2transitgateway.PeeringAttachmentAccepter(
                self.n(f"{role}-accepter"),
                region=spoke,
                transit_gateway_attachment_id=peering.id,
                opts=self._opts(),
            )
            # An attachment can only be associated once it is available, i.e. accepted.
            associated[(hub, link.key)] = aws.ec2transitgateway.RouteTableAssociation(
                self.n(f"tgw-rta-{hub}-{link.key}"),
                region=hub,
                transit_gateway_attachment_id=peering.id,
                transit_gateway_route_table_id=tables[hub].id,
                opts=self._opts(accepter),
            )
            associated[(spoke, link.key)] = aws.ec2transitgateway.RouteTableAssociation(
                self.n(f"tgw-rta-{spoke}-{link.key}"),
                region=spoke,
                transit_gateway_attachment_id=accepter.id,
                transit_gateway_route_table_id=tables[spoke].id,
                opts=self._opts(),
            )
            self.peering_attachment_ids[link.key] = peering.id

        self._hub_routes(hub, tgws, vpc_attachments, tables, associated)

    def _hub_routes(self, hub: str, tgws: dict[str, aws.ec2transitgateway.TransitGateway],
                    vpc_attachments: dict[str, aws.ec2transitgateway.VpcAttachment],
                    tables: dict[str, aws.ec2transitgateway.RouteTable],
                    associated: dict[tuple[str, str], aws.ec2transitgateway.RouteTableAssociation]) -> None:
        """`plan_hub_routes`: each TGW's static routes, and each VPC table's route to its own TGW."""
        for route in plan_hub_routes(self._cidrs, hub):
            r, d = route.region, route.destination_region
            if route.table == "tgw" and route.via == VIA_VPC_ATTACHMENT:
                aws.ec2transitgateway.Route(
                    self.n(f"tgw-route-{r}-to-{d}"),
                    region=r,
                    transit_gateway_route_table_id=tables[r].id,
                    destination_cidr_block=route.destination_cidr,
                    transit_gateway_attachment_id=vpc_attachments[r].id,
                    opts=self._opts(),
                )
            elif route.table == "tgw":
                association = associated[(r, route.via)]
                aws.ec2transitgateway.Route(
                    self.n(f"tgw-route-{r}-to-{d}"),
                    region=r,
                    transit_gateway_route_table_id=tables[r].id,
                    destination_cidr_block=route.destination_cidr,
                    transit_gateway_attachment_id=association.transit_gateway_attachment_id,
                    opts=self._opts(association),
                )
            else:
                assert route.via == VIA_TGW, route
                # A VPC route to a TGW is refused until the VPC is attached to it.
                for i, table_id in enumerate(self._by_region[r].route_table_ids):
                    aws.ec2.Route(
                        self.n(f"route-{r}-{i}-to-{d}"),
                        region=r,
                        route_table_id=table_id,
                        destination_cidr_block=route.destination_cidr,
                        transit_gateway_id=tgws[r].id,
                        opts=self._opts(vpc_attachments[r]),
                    )

    # --- security --------------------------------------------------------------------------------

    def _replication_rules(self) -> None:
        port = self.args.db_port
        plan = plan_replication_rules({r.region: r.database_subnet_cidrs for r in self.args.regions})
        for rule in plan:
            sg = self._by_region[rule.region].db_security_group_id
            aws.vpc.SecurityGroupIngressRule(
                self.n(f"db-in-{rule.region}-from-{rule.peer}-{rule.peer_subnet_index}"),
                region=rule.region,
                security_group_id=sg,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                cidr_ipv4=rule.peer_cidr,
                description=f"PostgreSQL replication from {rule.peer} database subnet {rule.peer_subnet_index}",
                opts=self._opts(),
            )
            aws.vpc.SecurityGroupEgressRule(
                self.n(f"db-out-{rule.region}-to-{rule.peer}-{rule.peer_subnet_index}"),
                region=rule.region,
                security_group_id=sg,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                cidr_ipv4=rule.peer_cidr,
                description=f"PostgreSQL replication to {rule.peer} database subnet {rule.peer_subnet_index}",
                opts=self._opts(),
            )
