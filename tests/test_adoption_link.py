"""Phase A with `database.adopt` (examples/1-adopt.yaml): the new primary gets exactly one path to the
database it adopts (a peering, a route from the database subnets, one egress rule on the database
port), and nothing else changes; the block is refused outside phase A and with overlapping ranges."""

from __future__ import annotations

import pytest

from core.config import ConfigError
from infra.paths import REPO
from infra.synth import read_stack_file, synthesize
from tests.conftest import config_variant
from tests.helpers import one

SOURCE_VPC, SOURCE_CIDR = "vpc-0123456789abcdef0", "172.31.0.0/16"


@pytest.fixture(scope="module")
def adopting():
    values, secrets = read_stack_file(REPO / "examples" / "1-adopt.yaml")
    return synthesize("prod", config=values, secret_keys=secrets)


def test_the_new_primary_reaches_the_source_vpc_through_one_peering(adopting):
    peering = one(adopting, "aws:ec2/vpcPeeringConnection:VpcPeeringConnection", "fraiseql-adopt-peering-us-east-1")
    vpc = one(adopting, "aws:ec2/vpc:Vpc", "fraiseql-us-east-1-vpc")
    assert peering.inputs["peerVpcId"] == SOURCE_VPC and peering.inputs["autoAccept"] is True
    assert peering.inputs["region"] == "us-east-1" and peering.property_dependencies["vpcId"] == [vpc.urn]
    assert "peerRegion" not in peering.inputs  # same region: no cross-region accepter needed


def test_only_the_database_subnets_route_to_it_and_only_the_database_port_leaves(adopting):
    routes = [r for r in adopting.of_type("aws:ec2/route:Route") if r.inputs.get("destinationCidrBlock") == SOURCE_CIDR]
    db_rt = one(adopting, "aws:ec2/routeTable:RouteTable", "fraiseql-us-east-1-rt-database")
    assert [r.property_dependencies["routeTableId"] for r in routes] == [[db_rt.urn]]
    out = [r for r in adopting.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
           if r.inputs.get("cidrIpv4") == SOURCE_CIDR]
    db_sg = one(adopting, "aws:ec2/securityGroup:SecurityGroup", "fraiseql-us-east-1-sg-db")
    assert len(out) == 1 and out[0].property_dependencies["securityGroupId"] == [db_sg.urn]
    assert (out[0].inputs["fromPort"], out[0].inputs["toPort"], out[0].inputs["ipProtocol"]) == (5432, 5432, "tcp")
    ingress = [r for r in adopting.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
               if r.inputs.get("cidrIpv4") == SOURCE_CIDR]
    assert ingress == [], "nothing from the old VPC may reach into the stack"


def test_the_outputs_tell_the_operator_what_the_other_side_needs(adopting, phase_a):
    assert adopting.outputs["adoptPeeringConnectionId"] == "fraiseql-adopt-peering-us-east-1-id"
    assert adopting.outputs["adoptStackCidr"] == "10.10.0.0/16"
    assert phase_a.outputs["adoptPeeringConnectionId"] is None and phase_a.outputs["adoptStackCidr"] is None
    assert not [r for r in phase_a.resources if r.name.startswith("fraiseql-adopt")]


ADOPT = {"source_vpc_id": SOURCE_VPC, "source_cidr": SOURCE_CIDR}


def test_adoption_is_refused_outside_phase_a():
    with pytest.raises(ConfigError) as info:
        config_variant("phase-b", lambda v: v["database"].update(adopt=ADOPT))
    assert "fraiseql:database.adopt" in str(info.value) and "examples/2-phase-a.yaml" in str(info.value)


def test_a_source_range_that_overlaps_a_region_names_the_region_and_a_free_range():
    with pytest.raises(ConfigError) as info:
        config_variant("phase-a", lambda v: v["database"].update(adopt={**ADOPT, "source_cidr": "10.10.0.0/16"}))
    problems = dict(info.value.problems)
    assert "fraiseql:regions[0].cidr" in problems and "e.g. cidr: 10.30.0.0/16" in problems["fraiseql:regions[0].cidr"]


@pytest.mark.parametrize("field, value, expected", [
    ("source_vpc_id", "sg-0123", "source_vpc_id"),
    ("source_cidr", "8.8.0.0/16", "not a private VPC range"),
])
def test_bad_adopt_values_name_the_key(field, value, expected):
    with pytest.raises(ConfigError) as info:
        config_variant("phase-a", lambda v: v["database"].update(adopt={**ADOPT, field: value}))
    assert f"fraiseql:database.adopt.{field}" in str(info.value) and expected in str(info.value)
