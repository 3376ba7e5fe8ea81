"""Each policy: one compliant baseline (the shipped phase A stack), then one change per failing case."""

from __future__ import annotations

import copy
import json

import pytest
from pulumi_policy import PolicyResource, PolicyResourceOptions
from pulumi_policy.policy import PolicyCustomTimeouts

from core.manifest import MANIFEST_NAME
from infra.pack import evaluate, policy_resources

RDS = "aws:rds/instance:Instance"


@pytest.fixture(scope="module")
def baseline_regs(phase_a):
    return phase_a.registrations


@pytest.fixture
def resources(baseline_regs):
    """A fresh, mutable copy of the compliant phase A stack as the engine would show it."""
    return policy_resources(copy.deepcopy(baseline_regs))


def named(resources, name):
    return next(r for r in resources if r.name == name)


def by_policy(violations, policy):
    return [v for v in violations if v.policy == policy]


def add(resources, typ, name, props, region="us-east-1", deps=None):
    r = PolicyResource(
        resource_type=typ, props={"region": region, **props}, urn=f"urn:pulumi:test::fraiseql::{typ}::{name}", name=name,
        opts=PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None),
        provider=None, parent=None, dependencies=[], property_dependencies=deps or {},
    )
    resources.append(r)
    return r


def set_manifest(resources, **changes):
    m = named(resources, MANIFEST_NAME)
    doc = json.loads(m.props["insecureValue"])
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key].update(value)
        else:
            doc[key] = value
    m.props["insecureValue"] = json.dumps(doc)


def test_baseline_phase_a_violates_nothing(resources):
    assert evaluate(resources) == []


# --- database-protection ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "prop, value, expected",
    [
        ("publiclyAccessible", True, "is publicly accessible"),
        ("storageEncrypted", False, "storage is not encrypted"),
        ("deletionProtection", False, "has no deletion protection"),
        ("backupRetentionPeriod", 3, "keeps backups for 3 days; at least 7"),
    ],
)
def test_database_protection_single_changes(resources, prop, value, expected):
    named(resources, "fraiseql-db-primary-us-east-1").props[prop] = value
    found = by_policy(evaluate(resources), "database-protection")
    assert [v.message for v in found] == [f"database fraiseql-db-primary-us-east-1 {expected}" + found[0].message.split(expected, 1)[1]]
    assert found[0].mandatory and found[0].urn.endswith("fraiseql-db-primary-us-east-1")


def test_database_must_be_pulumi_protected(resources):
    named(resources, "fraiseql-db-replica-us-west-2").opts.protect = False
    found = by_policy(evaluate(resources), "database-protection")
    assert len(found) == 1 and "fraiseql-db-replica-us-west-2 is not marked protect" in found[0].message


# --- replica-lag-alarm -----------------------------------------------------------------------

def test_replica_without_lag_alarm(resources):
    resources.remove(named(resources, "fraiseql-db-replica-lag-us-west-2"))
    found = by_policy(evaluate(resources), "replica-lag-alarm")
    assert [v.message for v in found] == ["replica fraiseql-db-replica-us-west-2 has no ReplicaLag alarm; add one at <= 30 s"]


def test_lag_alarm_above_thirty_seconds(resources):
    named(resources, "fraiseql-db-replica-lag-us-west-2").props["threshold"] = 45
    found = by_policy(evaluate(resources), "replica-lag-alarm")
    assert len(found) == 1 and "fires at 45 s" in found[0].message and "= 30 s" in found[0].message


def test_lag_alarm_above_thirty_seconds_in_a_stack_without_a_manifest(resources):
    resources.remove(named(resources, MANIFEST_NAME))  # no RPO to derive the ceiling from
    named(resources, "fraiseql-db-replica-lag-us-west-2").props["threshold"] = 45
    found = by_policy(evaluate(resources), "replica-lag-alarm")
    assert [v.message for v in found] == ["ReplicaLag alarm fraiseql-db-replica-lag-us-west-2 on fraiseql-db-replica-us-west-2 "
                                          "fires at 45 s; it must be <= 30 s (no RPO declared)"]


def test_lag_alarm_must_be_at_most_half_the_rpo(resources):
    set_manifest(resources, slo={"rpo_seconds": 40})
    found = by_policy(evaluate(resources), "replica-lag-alarm")
    assert len(found) == 1 and "min(30 s, RPO 40 s / 2) = 20 s" in found[0].message


# --- endpoint-health-check -------------------------------------------------------------------

def test_public_endpoint_without_health_check(resources):
    resources.remove(named(resources, "fraiseql-dns-health-us-west-2"))
    found = by_policy(evaluate(resources), "endpoint-health-check")
    assert [v.message for v in found] == [
        "public endpoint fraiseql-alb-usw2 (us-west-2) has no health check (Route 53 or an edge pool monitor)"
    ]


# --- database-port-private -------------------------------------------------------------------

def test_database_port_open_to_the_internet(resources):
    add(resources, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "debug-psql",
        {"fromPort": 5432, "toPort": 5432, "ipProtocol": "tcp", "cidrIpv4": "0.0.0.0/0", "securityGroupId": "sg-db"})
    found = by_policy(evaluate(resources), "database-port-private")
    assert len(found) == 1 and "debug-psql opens database port 5432 to 0.0.0.0/0" in found[0].message


def test_all_ports_rule_counts_as_opening_the_database(resources):
    add(resources, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "office",
        {"fromPort": 0, "toPort": 65535, "ipProtocol": "tcp", "cidrIpv4": "203.0.113.0/24"})
    assert len(by_policy(evaluate(resources), "database-port-private")) == 1


def test_database_port_from_inside_a_stack_vpc_is_allowed(resources):
    add(resources, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "peer-db",
        {"fromPort": 5432, "toPort": 5432, "ipProtocol": "tcp", "cidrIpv4": "10.20.128.0/21"})
    assert by_policy(evaluate(resources), "database-port-private") == []


# --- disjoint-vpc-cidrs / known-unique-regions -----------------------------------------------

def test_overlapping_vpcs(resources):
    named(resources, "fraiseql-us-west-2-vpc").props["cidrBlock"] = "10.10.0.0/17"
    found = by_policy(evaluate(resources), "disjoint-vpc-cidrs")
    assert len(found) == 1
    assert "fraiseql-us-west-2-vpc (10.10.0.0/17)" in found[0].message and "fraiseql-us-east-1-vpc (10.10.0.0/16)" in found[0].message


def test_resource_in_an_unknown_region(resources):
    named(resources, "fraiseql-us-west-2-vpc").props["region"] = "us-moon-1"
    found = by_policy(evaluate(resources), "known-unique-regions")
    assert [v.message for v in found] == ["fraiseql-us-west-2-vpc is in unknown region 'us-moon-1'"]


# --- monthly-budget --------------------------------------------------------------------------

def test_budget_of_100_dollars_is_a_mandatory_violation(resources):
    named(resources, "fraiseql-budget").props["limitAmount"] = "100.00"
    found = by_policy(evaluate(resources), "monthly-budget")
    assert len(found) == 1 and found[0].mandatory
    assert "exceeds the $100.00 budget" in found[0].message and "largest items: fraiseql-db-primary-us-east-1" in found[0].message


def test_budget_near_the_estimate_is_an_advisory_warning(resources):
    named(resources, "fraiseql-budget").props["limitAmount"] = "1150.00"
    found = evaluate(resources)
    assert by_policy(found, "monthly-budget") == []
    warning = by_policy(found, "monthly-budget-warning")
    assert len(warning) == 1 and not warning[0].mandatory and "of the $1,150.00 budget" in warning[0].message


def test_policy_config_can_override_the_budget(resources):
    found = by_policy(evaluate(resources, {"budgetUsd": 500}), "monthly-budget")
    assert len(found) == 1 and "$500.00 budget" in found[0].message


def test_unknown_resource_types_are_listed_unpriced_not_zero(resources):
    add(resources, "aws:opensearch/domain:Domain", "search", {"clusterConfig": {"instanceType": "r6g.large.search"}})
    found = by_policy(evaluate(resources), "unpriced-resources")
    assert [v.message.split(" has no price")[0] for v in found] == ["search (aws:opensearch/domain:Domain)"]


def test_malformed_price_book_is_a_clear_mandatory_violation(resources, tmp_path):
    bad = tmp_path / "prices.json"
    bad.write_text('{"schema_version": 1}')
    found = by_policy(evaluate(resources, {"priceBook": str(bad)}), "monthly-budget")
    assert len(found) == 1 and "cannot estimate cost" in found[0].message and str(bad) in found[0].message


# --- active-active-quorum, mesh-complete, edge-never-caches-mutations ------------------------

FOUR = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1"]


def test_even_number_of_writers_is_refused(resources):
    set_manifest(resources, phase="b", write_regions=FOUR, quorum=3)
    found = by_policy(evaluate(resources), "active-active-quorum")
    assert "quorum members (us-east-1, us-west-2, eu-west-1, eu-central-1): has 4 regions; an even count" in found[0].message


def test_two_writers_are_too_few(resources):
    set_manifest(resources, phase="b", write_regions=FOUR[:2], quorum=2)
    found = by_policy(evaluate(resources), "active-active-quorum")
    assert "has 2 regions; a write quorum needs at least 3" in found[0].message


def test_a_membership_change_may_pass_through_an_even_list(resources):
    set_manifest(resources, phase="b", write_regions=FOUR, quorum_members=FOUR[:3], quorum_next_members=FOUR, quorum=2)
    messages = [v.message for v in by_policy(evaluate(resources), "active-active-quorum")]
    assert [m for m in messages if "quorum" in m] == []
    set_manifest(resources, quorum_next_members=FOUR[:2])
    messages = [v.message for v in by_policy(evaluate(resources), "active-active-quorum")]
    assert any("quorum next members (us-east-1, us-west-2): has 2 regions" in m for m in messages)


def test_quorum_must_be_a_majority(resources):
    set_manifest(resources, phase="b", write_regions=["us-east-1", "us-west-2", "eu-west-1"], quorum=1)
    messages = [v.message for v in by_policy(evaluate(resources), "active-active-quorum")]
    assert "quorum is 1 but a majority of 3 members is 2" in messages


def _mesh(resources, links):
    set_manifest(resources, topology="mesh", regions=[
        {"name": "us-east-1", "role": "active", "cidr": "10.10.0.0/16"},
        {"name": "us-west-2", "role": "active", "cidr": "10.20.0.0/16"},
        {"name": "eu-west-1", "role": "active", "cidr": "10.30.0.0/16"},
    ])
    cidr = {"us-east-1": "10.10.0.0/16", "us-west-2": "10.20.0.0/16", "eu-west-1": "10.30.0.0/16"}
    for a, b in links:
        pcx = add(resources, "aws:ec2/vpcPeeringConnection:VpcPeeringConnection", f"pcx-{a}-{b}", {"peerRegion": b}, region=a)
        for src, dst in ((a, b), (b, a)):
            add(resources, "aws:ec2/route:Route", f"rt-{src}-{dst}",
                {"destinationCidrBlock": cidr[dst], "vpcPeeringConnectionId": f"{pcx.name}-id"}, region=src)


def test_complete_mesh_passes(resources):
    _mesh(resources, [("us-east-1", "us-west-2"), ("us-east-1", "eu-west-1"), ("eu-west-1", "us-west-2")])
    assert by_policy(evaluate(resources), "mesh-complete") == []


def test_mesh_missing_a_pair(resources):
    _mesh(resources, [("us-east-1", "us-west-2"), ("us-east-1", "eu-west-1")])
    messages = [v.message for v in by_policy(evaluate(resources), "mesh-complete")]
    assert "a mesh of 3 regions needs 3 peering links; found 2" in messages
    assert "no peering between eu-west-1 and us-west-2" in messages
    assert "us-west-2 has no route to eu-west-1 (10.30.0.0/16) over the mesh" in messages


def test_mesh_with_a_duplicate_link(resources):
    _mesh(resources, [("us-east-1", "us-west-2"), ("us-west-2", "us-east-1"), ("us-east-1", "eu-west-1"), ("eu-west-1", "us-west-2")])
    messages = [v.message for v in by_policy(evaluate(resources), "mesh-complete")]
    assert "us-east-1 and us-west-2 are peered 2 times; exactly once" in messages


def _cache_rule(resources, expression):
    add(resources, "cloudflare:index/ruleset:Ruleset", "cache-rules", {
        "kind": "zone", "phase": "http_request_cache_settings",
        "rules": [{"ref": "graphql", "description": "cache graphql", "expression": expression,
                   "action": "set_cache_settings", "actionParameters": {"cache": True}}],
    }, region=None)


def test_cache_rule_limited_to_get_passes(resources):
    _cache_rule(resources, '(http.request.uri.path eq "/graphql" and http.request.method eq "GET")')
    assert by_policy(evaluate(resources), "edge-never-caches-mutations") == []


def test_cache_rule_that_can_cache_post_is_refused(resources):
    _cache_rule(resources, '(http.request.uri.path eq "/graphql")')
    found = by_policy(evaluate(resources), "edge-never-caches-mutations")
    assert len(found) == 1 and "can cache non-GET requests" in found[0].message


def test_worker_switch_that_caches_mutations_is_refused(resources):
    add(resources, "cloudflare:index/workersScript:WorkersScript", "edge",
        {"bindings": [{"name": "CACHE_MUTATIONS", "type": "plain_text", "text": "true"}]}, region=None)
    assert len(by_policy(evaluate(resources), "edge-never-caches-mutations")) == 1


# --- slo-feasible ----------------------------------------------------------------------------

def test_seed_phase_b_claims_are_flagged_with_the_arithmetic(resources):
    set_manifest(
        resources, phase="b", write_regions=["us-east-1", "us-west-2", "eu-west-1"], quorum=2,
        regions=[{"name": r, "role": "active", "cidr": c} for r, c in
                 (("us-east-1", "10.10.0.0/16"), ("us-west-2", "10.20.0.0/16"), ("eu-west-1", "10.30.0.0/16"))],
        slo={"rto_seconds": 1, "rpo_seconds": 0.1, "replication_lag_ms": 200},
    )
    messages = [v.message for v in by_policy(evaluate(resources), "slo-feasible")]
    assert any(m.startswith("RTO target 1 s is below what this topology can reach: 90 s = DNS failover: health check 10 s x 3 + TTL 60 s") for m in messages)
    assert any(m.startswith("RPO target 0.1 s is below what this topology can reach: 0.2 s = declared replication lag 200 ms") for m in messages)


def test_rpo_below_physics_is_flagged_even_without_a_declared_lag(resources):
    set_manifest(resources, slo={"rpo_seconds": 0.01})
    messages = [v.message for v in by_policy(evaluate(resources), "slo-feasible")]
    assert any("one-way fiber us-east-1->us-west-2 17.6 ms + apply 10 ms" in m for m in messages)


def test_stack_without_manifest_cannot_be_checked(resources):
    resources.remove(named(resources, MANIFEST_NAME))
    assert "has no manifest" in by_policy(evaluate(resources), "slo-feasible")[0].message
