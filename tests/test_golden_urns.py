"""Golden URNs per stack: a refactor that would replace resources fails here, listing what moved.

Regenerate after an intended change: `.venv/bin/python -m tests.golden --write` (see tests/golden.py).
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi
import pulumi_aws as aws
import pytest

from infra.synth import REPO, synthesize
from tests.conftest import synthesized
from tests.golden import REGENERATE, Entry, compare, entries, golden_path, read_golden, render, stacks

STACKS = stacks(REPO)


def test_every_stack_has_a_golden_file():
    assert STACKS and [s for s in STACKS if not golden_path(s).exists()] == [], f"run {REGENERATE}"


@pytest.mark.parametrize("stack", STACKS)
def test_stack_synthesizes_its_golden_urns(stack, request):
    current = entries(synthesized(request, stack).registrations)
    diff = compare(read_golden(golden_path(stack)), current)
    assert not diff.unaliased_protected and diff.same, "\n" + diff.report(stack)


@pytest.mark.parametrize("stack", STACKS)
def test_golden_pins_the_protected_databases_and_keys(stack):
    protected = [e.urn for e in read_golden(golden_path(stack)).values() if e.protect]
    assert any("aws:rds/instance:Instance::" in u for u in protected)
    assert any("aws:kms/key:Key::" in u for u in protected)


# --- the comparison itself, on a small program under the same mocks -------------------------------

class _Db(pulumi.ComponentResource):
    def __init__(self, typ: str, aliases: Optional[list] = None):
        super().__init__(typ, "db", None, pulumi.ResourceOptions(aliases=aliases))
        aws.kms.Key("db-kms", region="us-east-1", opts=pulumi.ResourceOptions(parent=self, protect=True))
        aws.sns.Topic("db-topic", region="us-east-1", opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({})


def _synth(typ: str, aliases: Optional[list] = None) -> dict[str, Entry]:
    def program() -> dict[str, Any]:
        _Db(typ, aliases)
        return {}

    return entries(synthesize("phase-a", config={}, run=program).registrations)


def test_a_moved_protected_resource_without_alias_is_reported_as_replaced():
    before, after = _synth("fraiseql:db:Old"), _synth("fraiseql:db:New")
    diff = compare(before, after)
    kms = [u for u in before if u.endswith("::db-kms")]
    assert diff.unaliased_protected == kms
    assert len(diff.removed) == len(diff.added) == 3
    assert "REPLACED" in diff.report("phase-a") and REGENERATE in diff.report("phase-a")


def test_an_alias_on_the_parent_covers_its_protected_children():
    before = _synth("fraiseql:db:Old")
    after = _synth("fraiseql:db:New", aliases=[pulumi.Alias(type_="fraiseql:db:Old")])
    diff = compare(before, after)
    assert diff.unaliased_protected == []
    assert not diff.same  # the URNs still changed: the goldens must be regenerated on purpose
    kms_after = next(e for e in after.values() if e.urn.endswith("::db-kms"))
    assert kms_after.aliases == tuple(u for u in before if u.endswith("::db-kms"))


def test_protect_flag_and_aliases_are_part_of_the_golden(tmp_path):
    current = _synth("fraiseql:db:New", aliases=[pulumi.Alias(type_="fraiseql:db:Old")])
    path = tmp_path / "x.urns"
    path.write_text(render("x", current))
    assert read_golden(path) == current
    unprotected = {u: Entry(u, False, e.aliases) for u, e in current.items()}
    assert compare(unprotected, current).changed == sorted(u for u, e in current.items() if e.protect)
