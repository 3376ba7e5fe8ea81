"""One stack name from an adopted database to phase a, b and c: every protected resource keeps its
identity (issues 12 and 22).

Each step synthesizes the program under the same stack name with the next stack file of `examples/`,
then compares it with the previous one with the code of `python -m infra diff` (`infra.diff`): a
resource's own URN first, then its aliases (the mocks resolve aliases as the engine does, parents'
included). A protected resource of the previous step that nothing claims would be deleted, and its
successor created: a replacement.

The steps are the documented path (README, "The journey from an existing deployment"), one file each:
1. `1-adopt.yaml`: phase a with `database.adopt`, while `ops adopt` moves the data in;
2. `2-phase-a.yaml` (Pulumi.phase-a.yaml): phase a after the cutover;
3. `3-b-seed.yaml`: phase b with `seed_from: us-east-1` on us-west-2 (the phase A standby, still a
   replica) and on eu-west-1 (a new copy): the first `pulumi up` of the transition;
4. `4-b-joint.yaml`: the joint membership while the agents move to all three;
5. `5-phase-b.yaml` (Pulumi.phase-b.yaml): phase b without `seed_from`, after the runbook promoted both;
6. `6-c-route53.yaml`: phase c while Route 53 still answers for the public name;
7. `7-phase-c.yaml` (Pulumi.phase-c.yaml): phase c once the registrar delegates the zone to Cloudflare.
"""

from __future__ import annotations

from typing import Any

import pytest

from infra.diff import claims, diff_syntheses, replaced_protected
from infra.paths import REPO
from infra.synth import Synthesis, read_stack_file, synthesize
from tests.conftest import stack_values
from tests.helpers import one

STACK = "live"
RDS = "aws:rds/instance:Instance"
KEY = "aws:kms/key:Key"
EXAMPLES = REPO / "examples"
STEPS = ["1-adopt", "2-phase-a", "3-b-seed", "4-b-joint", "5-phase-b", "6-c-route53", "7-phase-c"]
PUBLIC_ZONE = "Z0EXAMPLE0000000000"  # Pulumi.phase-b.yaml's dns.zone_id


def synth_file(step: str, stack: str = STACK) -> Synthesis:
    values, secret_keys = read_stack_file(EXAMPLES / f"{step}.yaml")
    return synthesize(stack, config=values, secret_keys=secret_keys)


@pytest.fixture(scope="module")
def steps() -> dict[str, Synthesis]:
    return {step: synth_file(step) for step in STEPS}


def pairs(steps: dict[str, Synthesis]) -> list[tuple[str, Synthesis, Synthesis]]:
    return [(f"{a} -> {b}", steps[a], steps[b]) for a, b in zip(STEPS, STEPS[1:])]


def test_no_protected_resource_is_replaced_from_phase_a_to_b_to_c(steps):
    for label, before, after in pairs(steps):
        assert replaced_protected(before, after) == [], label
        assert diff_syntheses(before, after).refused == [], label
        taken = claims(before, after)
        protected_after = {r.urn for r in after.registrations if r.protect}
        assert {taken[r.urn] for r in before.registrations if r.protect} <= protected_after, label


def test_the_phase_a_databases_are_the_phase_b_writers(steps):
    a, start = steps["2-phase-a"], steps["3-b-seed"]
    taken = claims(a, start)
    for old, region in (("fraiseql-db-primary-us-east-1", "us-east-1"), ("fraiseql-db-replica-us-west-2", "us-west-2")):
        assert taken[one(a, RDS, old).urn] == one(start, RDS, f"fraiseql-db-writer-{region}").urn
    # Same region, same key (kms_key_id cannot change in place), still encrypted.
    for region, old in (("us-east-1", "fraiseql-db-primary-us-east-1"), ("us-west-2", "fraiseql-db-replica-us-west-2")):
        before, after = one(a, RDS, old), one(start, RDS, f"fraiseql-db-writer-{region}")
        assert before.region == after.region == region
        assert before.inputs["kmsKeyId"] == after.inputs["kmsKeyId"] == one(start, KEY, f"fraiseql-db-kms-{region}").outputs["arn"]
        assert before.inputs["storageEncrypted"] is after.inputs["storageEncrypted"] is True


def test_the_standby_stays_a_replica_until_the_runbook_then_its_promotion_is_the_removal_of_the_source(steps):
    a, start, b = steps["2-phase-a"], steps["3-b-seed"], steps["5-phase-b"]
    standby = one(a, RDS, "fraiseql-db-replica-us-west-2")
    seeding = one(start, RDS, "fraiseql-db-writer-us-west-2")
    writer = one(b, RDS, "fraiseql-db-writer-us-west-2")
    primary = one(start, RDS, "fraiseql-db-writer-us-east-1")
    # The first `pulumi up` keeps it a replica of the same database (the primary, now the us-east-1 writer).
    assert "replicateSourceDb" in standby.inputs and seeding.inputs["replicateSourceDb"] == primary.outputs["arn"]
    assert primary.urn in seeding.property_dependencies["replicateSourceDb"]
    # The next converges on the promotion the runbook did: same resource, no source.
    assert writer.urn == seeding.urn and "replicateSourceDb" not in writer.inputs
    new = one(start, RDS, "fraiseql-db-writer-eu-west-1")
    assert new.inputs["replicateSourceDb"] == primary.outputs["arn"] and new.urn not in claims(a, start).values()


def test_every_protected_key_and_database_of_phase_a_is_still_declared_in_phase_c(steps):
    chain = {r.urn: r.urn for r in steps[STEPS[0]].registrations if r.protect}
    for _, before, after in pairs(steps):
        taken = claims(before, after)
        chain = {first: taken[last] for first, last in chain.items()}
    final = {r.urn: r for r in steps[STEPS[-1]].registrations}
    assert sorted(final[u].name for u in chain.values()) == [
        "fraiseql-db-kms-us-east-1", "fraiseql-db-kms-us-west-2", "fraiseql-db-writer-us-east-1", "fraiseql-db-writer-us-west-2",
    ]


def test_without_the_writers_aliases_the_primary_would_be_replaced(steps, monkeypatch):
    """The check above can fail: drop the aliases to the phase A names and the databases are lost."""
    from components import multi_master_replication

    monkeypatch.setattr(multi_master_replication, "earlier_names", lambda name, region: [])
    before, after = steps["2-phase-a"], synth_file("3-b-seed")
    lost = replaced_protected(before, after)
    assert sorted(u.rsplit("::", 1)[-1] for u in lost) == ["fraiseql-db-primary-us-east-1", "fraiseql-db-replica-us-west-2"]
    refused = diff_syntheses(before, after).refused
    assert sorted(c.name for c in refused) == ["fraiseql-db-primary-us-east-1", "fraiseql-db-replica-us-west-2"]


def test_the_policy_pack_passes_every_step(steps):
    """`pulumi preview --policy-pack policies` must not block the path halfway."""
    from infra.pack import run_pack

    for label, syn in steps.items():
        violations = [f"{v.policy}: {v.message}" for v in run_pack(syn.registrations).violations if v.mandatory]
        assert violations == [], label


# --- B -> C: the public name never goes dark (issue 20, item 5) -----------------------------------------

RECORD, HEALTH = "aws:route53/record:Record", "aws:route53/healthCheck:HealthCheck"
PUBLIC_NAME = "api.example.com"


def answering(syn: Synthesis) -> dict[str, Any]:
    """What Route 53 answers for the public name with, and the health checks those answers depend on."""
    records = [r for r in syn.of_type(RECORD) if r.inputs["name"] == PUBLIC_NAME]
    checks = {u for r in records for u in r.dependencies if u.split("::")[-2].endswith("healthCheck:HealthCheck")}
    checks |= {u for c in syn.of_type(HEALTH) if c.urn in checks for u in c.dependencies}
    # Tags (the `phase` tag changes) are updated in place; every other input would be a change to the answer.
    return {r.urn: {k: v for k, v in r.inputs.items() if k != "tags"} for r in syn.resources if r.urn in checks or r in records}


def test_the_first_phase_c_up_keeps_phase_b_answering_for_the_public_name(steps):
    b, moving = steps["5-phase-b"], steps["6-c-route53"]
    before, during = answering(b), answering(moving)
    assert len([u for u in before if "record:Record" in u]) == 3, "phase b: one latency record per region"
    assert during == before, "same records, zone, targets and health checks: the B -> C up changes none of them"


def test_the_public_records_go_only_once_cloudflare_answers(steps):
    assert stack_values("phase-c")["edge"]["dns_authority"] == "cloudflare"
    assert answering(steps["7-phase-c"]) == {}


def test_while_route53_answers_the_origins_stay_open_and_name_the_public_host(steps):
    moving = steps["6-c-route53"]
    assert moving.of_type("aws:ec2/managedPrefixList:ManagedPrefixList") == []
    https = [r for r in moving.of_type("aws:lb/listener:Listener") if r.inputs["port"] == 443]
    assert {a["type"] for r in https for a in r.inputs["defaultActions"]} == {"forward"}
    for cert in moving.of_type("aws:acm/certificate:Certificate"):
        assert PUBLIC_NAME in cert.inputs["subjectAlternativeNames"]
    validation = {r.inputs["name"]: r.inputs["zoneId"] for r in moving.of_type(RECORD) if "cert-validation" in r.name}
    assert validation[f"_x1.{PUBLIC_NAME}."] == PUBLIC_ZONE
    assert validation["_x1.origin.api.example.com."] == stack_values("phase-c")["dns"]["zone_id"]
