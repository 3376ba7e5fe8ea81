"""AdoptionLink: the private path from a new phase A primary to the database a team runs today.

While `python -m ops adopt` moves the data in, the new primary subscribes to the existing database
(logical replication: the subscriber connects to the publisher). The stack's database subnets have no
route out and its database security group no egress, so this component adds exactly that path and
nothing wider:

- a VPC peering from the stack's VPC in the primary region to the existing database's VPC (same
  account and region, accepted by the requester);
- a route to the existing VPC's CIDR in the database route table;
- one egress rule from the database security group to that CIDR on the existing database's port.

The other half belongs to the existing VPC and is the operator's (`ops adopt` checks it and names
it): a route back to the stack's CIDR through the same peering, and an ingress rule on the existing
database's security group. Removing `database.adopt` after the cutover deletes all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from components._kit import Component, Labels

TYPE = "fraiseql:database:AdoptionLink"


@dataclass(frozen=True, kw_only=True)
class AdoptionLinkArgs:
    region: str
    vpc_id: Input[str]
    database_route_table_id: Input[str]
    db_security_group_id: Input[str]
    source_vpc_id: str
    source_cidr: str
    source_port: int


class AdoptionLink(Component):
    peering_connection_id: pulumi.Output[str]

    def __init__(self, name: str, args: AdoptionLinkArgs, *, labels: Labels, opts: Optional[ResourceOptions] = None):
        super().__init__(TYPE, name, labels=labels, opts=opts)
        r = args.region
        peering = aws.ec2.VpcPeeringConnection(
            self.n("peering", r),
            region=r,
            vpc_id=args.vpc_id,
            peer_vpc_id=args.source_vpc_id,
            auto_accept=True,  # same account, same region: the requester may accept
            opts=self.child,
        )
        aws.ec2.Route(
            self.n("route-database", r),
            region=r,
            route_table_id=args.database_route_table_id,
            destination_cidr_block=args.source_cidr,
            vpc_peering_connection_id=peering.id,
            opts=self.child,
        )
        aws.vpc.SecurityGroupEgressRule(
            self.n("db-out-source", r),
            region=r,
            security_group_id=args.db_security_group_id,
            ip_protocol="tcp",
            from_port=args.source_port,
            to_port=args.source_port,
            cidr_ipv4=args.source_cidr,
            description="the new primary subscribes to the database it adopts (ops adopt)",
            opts=self.child,
        )
        self.peering_connection_id = peering.id
        self.register_outputs({"peering_connection_id": peering.id})
