"""One stack name from phase a to b to c: every protected resource keeps its identity (issue 12).

Each step synthesizes the program under the same stack name with the next config, then matches the
new registrations to the previous ones the way the engine does: a resource's own URN first, then its
aliases (the mocks resolve aliases as the engine does, parents' included). A protected resource of
the previous step that nothing claims would be deleted, and its successor created: a replacement.

The steps are the documented path (README, "Moving between phases"):
1. phase a (Pulumi.phase-a.yaml);
2. phase b with `seed_from: us-east-1` on us-west-2 (the phase A standby, still a replica) and on
   eu-west-1 (a new copy): the first `pulumi up` of the transition;
3. phase b without `seed_from`, after the runbook promoted both (Pulumi.phase-b.yaml);
4. phase c while Route 53 still answers for the public name (`edge.dns_authority: route53`);
5. phase c once the registrar delegates the zone to Cloudflare (Pulumi.phase-c.yaml).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import pytest

from infra.synth import Synthesis, read_stack_file, stack_file, synthesize
from tests.conftest import flatten, stack_values
from tests.helpers import one

STACK = "live"
RDS = "aws:rds/instance:Instance"
KEY = "aws:kms/key:Key"


def transition_start(v: dict[str, Any]) -> None:
    """The phase b config of the first `pulumi up`: both other regions are copies of us-east-1."""
    v["regions"][1]["seed_from"] = "us-east-1"
    v["regions"][2]["seed_from"] = "us-east-1"


PUBLIC_ZONE = "Z0EXAMPLE0000000000"  # Pulumi.phase-b.yaml's dns.zone_id


def route53_answers(v: dict[str, Any]) -> None:
    """Phase c before the registrar points at Cloudflare: phase b's zone still answers for the API."""
    v["edge"].update(dns_authority="route53", route53_public_zone_id=PUBLIC_ZONE)


STEPS: list[tuple[str, Optional[Callable[[dict[str, Any]], None]]]] = [
    ("phase-a", None), ("phase-b", transition_start), ("phase-b", None), ("phase-c", route53_answers), ("phase-c", None),
]


def synth_as(stack: str, change: Optional[Callable[[dict[str, Any]], None]] = None) -> Synthesis:
    values = stack_values(stack)
    if change is not None:
        change(values)
    _, secret_keys = read_stack_file(stack_file(stack))
    return synthesize(STACK, config=flatten(stack, values), secret_keys=secret_keys)


def claims(before: Synthesis, after: Synthesis) -> dict[str, str]:
    """Old URN -> the new URN that takes it over, refusing what the engine refuses: one old resource
    claimed twice, or an alias that is another new resource's own URN."""
    old = {r.urn for r in before.registrations}
    new = {r.urn for r in after.registrations}
    taken: dict[str, str] = {}
    for reg in after.registrations:
        assert not (set(reg.aliases) - {reg.urn}) & new, f"{reg.urn} aliases a URN another resource has"
        match = reg.urn if reg.urn in old else next((a for a in reg.aliases if a in old), None)
        if match is not None:
            assert match not in taken, f"{match} is claimed by {taken[match]} and {reg.urn}"
            taken[match] = reg.urn
    return taken


def replaced_protected(before: Synthesis, after: Synthesis) -> list[str]:
    taken = claims(before, after)
    return [r.urn for r in before.registrations if r.protect and r.urn not in taken]


@pytest.fixture(scope="module")
def steps() -> list[Synthesis]:
    return [synth_as(stack, change) for stack, change in STEPS]


def test_no_protected_resource_is_replaced_from_phase_a_to_b_to_c(steps):
    for (label, _), before, after in zip(STEPS[1:], steps, steps[1:]):
        assert replaced_protected(before, after) == [], label
        taken = claims(before, after)
        protected_after = {r.urn for r in after.registrations if r.protect}
        assert {taken[r.urn] for r in before.registrations if r.protect} <= protected_after, label


def test_the_phase_a_databases_are_the_phase_b_writers(steps):
    a, start, b, *_ = steps
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
    a, start, b, *_ = steps
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
    chain = {r.urn: r.urn for r in steps[0].registrations if r.protect}
    for before, after in zip(steps, steps[1:]):
        taken = claims(before, after)
        chain = {first: taken[last] for first, last in chain.items()}
    final = {r.urn: r for r in steps[-1].registrations}
    assert sorted(final[u].name for u in chain.values()) == [
        "fraiseql-db-kms-us-east-1", "fraiseql-db-kms-us-west-2", "fraiseql-db-writer-us-east-1", "fraiseql-db-writer-us-west-2",
    ]


def test_without_the_writers_aliases_the_primary_would_be_replaced(steps, monkeypatch):
    """The check above can fail: drop the aliases to the phase A names and the databases are lost."""
    from components import multi_master_replication

    monkeypatch.setattr(multi_master_replication, "earlier_names", lambda name, region: [])
    lost = replaced_protected(steps[0], synth_as("phase-b", transition_start))
    assert sorted(u.rsplit("::", 1)[-1] for u in lost) == ["fraiseql-db-primary-us-east-1", "fraiseql-db-replica-us-west-2"]


def test_the_policy_pack_passes_every_step(steps):
    """`pulumi preview --policy-pack policies` must not block the path halfway."""
    from infra.pack import run_pack

    for (label, change), syn in zip(STEPS, steps):
        violations = [f"{v.policy}: {v.message}" for v in run_pack(syn.registrations).violations if v.mandatory]
        assert violations == [], (label, change)


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
    b, moving = steps[2], steps[3]
    before, during = answering(b), answering(moving)
    assert len([u for u in before if "record:Record" in u]) == 3, "phase b: one latency record per region"
    assert during == before, "same records, zone, targets and health checks: the B -> C up changes none of them"


def test_the_public_records_go_only_once_cloudflare_answers(steps):
    (_, last_change), after = STEPS[-1], steps[-1]
    assert last_change is None and stack_values("phase-c")["edge"]["dns_authority"] == "cloudflare"
    assert answering(after) == {}


def test_while_route53_answers_the_origins_stay_open_and_name_the_public_host(steps):
    moving = steps[3]
    assert moving.of_type("aws:ec2/managedPrefixList:ManagedPrefixList") == []
    https = [r for r in moving.of_type("aws:lb/listener:Listener") if r.inputs["port"] == 443]
    assert {a["type"] for r in https for a in r.inputs["defaultActions"]} == {"forward"}
    for cert in moving.of_type("aws:acm/certificate:Certificate"):
        assert PUBLIC_NAME in cert.inputs["subjectAlternativeNames"]
    validation = {r.inputs["name"]: r.inputs["zoneId"] for r in moving.of_type(RECORD) if "cert-validation" in r.name}
    assert validation[f"_x1.{PUBLIC_NAME}."] == PUBLIC_ZONE
    assert validation["_x1.origin.api.example.com."] == stack_values("phase-c")["dns"]["zone_id"]
