"""Issue 20, item 15: removing a region keeps the ACM validation record the other regions share.

ACM gives a domain the same validation CNAME in every region of an account, and each region's stack
writes it. Removing a region deletes that region's resources; if the record went with them, the
other regions' certificates could no longer renew.
"""

from __future__ import annotations

from tests.conftest import synth_variant

RECORD = "aws:route53/record:Record"
EXTRA = [{"name": "eu-central-1", "role": "active", "cidr": "10.40.0.0/16"},
         {"name": "us-east-2", "role": "active", "cidr": "10.50.0.0/16"}]


def validation_records(syn) -> dict[str, object]:
    return {r.urn: r for r in syn.of_type(RECORD) if "-cert-validation-" in r.name}


def test_shrinking_from_five_regions_to_three_keeps_the_shared_validation_records(phase_b):
    five = synth_variant("phase-b", lambda v: v["regions"].extend(EXTRA))
    three = phase_b
    before, after = validation_records(five), validation_records(three)
    still_needed = {r.inputs["name"] for r in after.values()}
    removed = [r for urn, r in before.items() if urn not in after]
    assert removed and still_needed
    for rec in removed:
        if rec.inputs["name"] in still_needed:
            assert rec.retain_on_delete, f"removing {rec.region} would delete {rec.inputs['name']}, which the others use"


def test_every_region_writes_the_same_record(phase_b):
    recs = validation_records(phase_b).values()
    by_name: dict[str, set] = {}
    for r in recs:
        by_name.setdefault(r.inputs["name"], set()).add((r.inputs["type"], tuple(r.inputs["records"])))
    assert by_name and all(len(v) == 1 for v in by_name.values())
    assert all(r.inputs["allowOverwrite"] is True and r.retain_on_delete for r in recs)
